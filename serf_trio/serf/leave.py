"""``GracefulLeave``: this node's own graceful leave (SERF.md 6; serf serf.go Leave).

Serf leaves in two steps: it broadcasts a leave intent about itself and waits until the intent
queue reports it fully transmitted (at most ``broadcast_timeout``; with no alive peer there is
nobody to tell), then runs the memberlist leave, whose ``LeaveDone`` ends it.  A second
``leave`` while one runs does nothing; after the end it reports ``LeaveDone(False)``.

The wait is one deadline (``deadline``) checked at the end of every entry point (``step``),
because the intent can finish being sent in any gossip round.  Setting the node's lifecycle
(leaving, then left) is the node's: ``begin`` is called as the leave starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..swim.api import Effect, LeaveDone, Notice
from .context import NodeContext
from .lamport import LamportClock
from .membership import Membership
from .messages import Leave, encode


@dataclass(slots=True)
class _LeaveOp:
    phase: str  # "intent" (waiting for the leave intent to go out) | "memberlist" | "done"
    deadline: float
    bcast_id: int
    timeout: float


class GracefulLeave:
    """Our leave intent, then the memberlist leave; see the module docstring."""

    def __init__(
        self,
        ctx: NodeContext,
        clock: LamportClock,
        membership: Membership,
        *,
        begin: Callable[[], None],
        memberlist_leave: Callable[[float, float], list[Effect]],
    ) -> None:
        self._config = ctx.config
        self._name = ctx.name
        self._out = ctx.out
        self._clock = clock  # the member clock
        self._membership = membership
        self._begin = begin  # the node's lifecycle becomes "leaving"
        self._memberlist_leave = memberlist_leave
        self._op: _LeaveOp | None = None
        self._finished: set[int] = set()  # intent broadcasts fully transmitted

    def deadline(self) -> float | None:
        """When we stop waiting for our leave intent to be sent."""
        op = self._op
        return op.deadline if op is not None and op.phase == "intent" else None

    def start(self, now: float, timeout: float) -> list[Effect]:
        """Begin the leave; memberlist effects (its leave, if it starts at once) returned."""
        if self._op is not None:
            if self._op.phase == "done":
                return [LeaveDone(False)]
            return []
        self._begin()
        msg = Leave(self._clock.time(), self._name)
        self._clock.increment()
        self._membership.handle_leave_intent(now, msg)
        queue = self._membership.queue
        bid = queue.queue(None, encode(msg), notify=True)
        self._op = _LeaveOp("intent", now + self._config.broadcast_timeout, bid, timeout)
        if not self._membership.has_alive_peers():
            return self._leave_memberlist(now)
        return []

    def step(self, now: float) -> list[Effect]:
        """At the end of every entry point: once the intent is sent (or the wait is over, or
        nobody is left to tell) start the memberlist leave; its effects are returned."""
        self._finished.update(self._membership.queue.pop_finished())
        op = self._op
        if op is None or op.phase != "intent":
            return []
        done = op.bcast_id in self._finished
        if done or now >= op.deadline or not self._membership.has_alive_peers():
            if not done and now >= op.deadline:
                self._out.emit(Notice("leave_intent_timeout", {"node": self._name}))
            self._finished.discard(op.bcast_id)
            return self._leave_memberlist(now)
        return []

    def memberlist_done(self) -> None:
        """memberlist reported ``LeaveDone``."""
        if self._op is not None:
            self._op.phase = "done"

    def _leave_memberlist(self, now: float) -> list[Effect]:
        op = self._op
        assert op is not None
        op.phase = "memberlist"
        return self._memberlist_leave(now, op.timeout)


__all__ = ["GracefulLeave"]
