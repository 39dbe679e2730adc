"""``Reaper``: how failed and left members end (SERF.md 6, 10; serf serf.go handleReap,
handleReconnect, handlePrune).

It owns three kinds of timer in one ``TimerHeap``, and is the only place members are erased:

* ``prune`` (per member): a force-leave with ``prune`` for a member that is still "leaving"
  erases it only once its own leave has had time to finish;
* ``reap`` (every ``reap_interval``): failed members past ``reconnect_timeout`` and left
  members past ``tombstone_timeout`` are erased, and old recent intents expire;
* ``reconnect`` (every ``reconnect_interval``): maybe rejoin one random failed member.

Timers due in one call fire in the order the core always used: prunes (in the order they were
first armed), then the reap, then the reconnect.  Erasing a member raises ``member-reap`` and
drops its network coordinate (``forget``).  The rejoin itself (a memberlist join whose
``JoinDone`` is reported as ``reconnect_done``) is the node's: ``rejoin(now, addr)``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..swim.api import Address, Notice
from .context import NodeContext
from .effects import SerfMemberEvent
from .members import MemberState, RecentIntents
from .timers import TimerHeap

_PRUNE, _REAP, _RECONNECT = "prune", "reap", "reconnect"
_RANK = {_PRUNE: 0, _REAP: 1, _RECONNECT: 2}  # firing order within one call


class Reaper:
    """Prune, reap and reconnect timers over the shared member table."""

    def __init__(
        self,
        ctx: NodeContext,
        intents: RecentIntents,
        *,
        now: float,
        rejoin: Callable[[float, Address], None],
        forget: Callable[[str], None],
    ) -> None:
        self._config = ctx.config
        self._name = ctx.name
        self._members = ctx.members
        self._down = ctx.down
        self._out = ctx.out
        self._rng = ctx.rng
        self._is_alive = ctx.is_alive
        self._intents = intents
        self._rejoin = rejoin  # a memberlist join of a failed member (the node's)
        self._forget = forget  # drop a member's network coordinate
        self._timers: TimerHeap[tuple[str, str]] = TimerHeap()
        self._timers.set((_REAP, ""), now + self._config.reap_interval)
        self._timers.set((_RECONNECT, ""), now + self._config.reconnect_interval)

    def next_deadline(self) -> float | None:
        return self._timers.peek()

    # ------------------------------------------------------------------ prune

    def prune(self, now: float, m: MemberState) -> None:
        """A leave intent with ``prune`` was accepted about ``m``."""
        if m.status == "leaving":
            # serf handlePrune waits out the member's own leave before erasing it.
            delay = self._config.broadcast_timeout + self._config.leave_propagate_delay
            self._timers.set((_PRUNE, m.name), now + delay)
        elif m.name != self._name:
            self.erase(m.name)

    def cancel_prune(self, name: str) -> None:
        """serf: a member that joins again is not pruned by an older force-leave."""
        self._timers.cancel((_PRUNE, name))

    def erase(self, name: str) -> None:
        """Forget a member for good (``member-reap``).  A prune still armed for the name is
        left to fire on nothing, as it always did."""
        m = self._members.pop(name, None)
        self._down.pop(name, None)
        if m is None:
            return
        self._forget(name)
        self._out.emit(SerfMemberEvent("member-reap", (m.view(),)))

    # ------------------------------------------------------------------ firing

    def run_due(self, now: float) -> None:
        due = self._timers.pop_due(now)
        due.sort(key=lambda key: _RANK[key[0]])  # stable: prunes stay in arming order
        for kind, name in due:
            if kind == _PRUNE:
                self.erase(name)
            elif kind == _REAP:
                self._timers.set((_REAP, ""), now + self._config.reap_interval)
                self._reap(now)
            else:
                self._timers.set((_RECONNECT, ""), now + self._config.reconnect_interval)
                self._reconnect(now)

    def _reap(self, now: float) -> None:
        """serf reaper: failed past reconnect_timeout, left past tombstone_timeout."""
        self._intents.expire(now)
        cfg = self._config
        for m in self._down_members():
            if (m.status == "failed" and now - m.leave_time > cfg.reconnect_timeout) or (
                m.status == "left" and now - m.leave_time > cfg.tombstone_timeout
            ):
                self.erase(m.name)

    def _down_members(self) -> list[MemberState]:
        """The failed and left members (not ourselves), oldest first: O(down), not O(N)."""
        out: list[MemberState] = []
        for name in list(self._down):
            m = self._members.get(name)
            if m is None or m.status not in ("failed", "left"):
                del self._down[name]  # erased, or back (membership keeps this tidy anyway)
            elif name != self._name:
                out.append(m)
        return out

    def _reconnect(self, now: float) -> None:
        """serf reconnect: with probability failed/alive, rejoin one random failed member."""
        if not self._is_alive():
            return
        down = self._down_members()
        failed = [m for m in down if m.status == "failed"]
        if not failed:
            return
        left = len(down) - len(failed)
        alive = len(self._members) - len(failed) - left
        prob = len(failed) / (alive or 1)
        if self._rng.random() > prob:
            return
        target = failed[self._rng.randrange(len(failed))]
        self._out.emit(Notice("reconnect", {"node": target.name, "addr": str(target.addr)}))
        self._rejoin(now, target.addr)


__all__ = ["Reaper"]
