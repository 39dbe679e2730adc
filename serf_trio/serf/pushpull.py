"""``StateExchange``: Serf's push/pull state (message type 2; serf delegate.go LocalState and
MergeRemoteState).

memberlist asks for it on every push/pull and join, and hands over the peer's: the three
Lamport clocks, every member's status LTime (left members listed apart) and the whole
user-event ring.  Merging witnesses the clocks, replays the statuses as intents (not
rebroadcast) and runs every remembered event through the ordinary user-event path, where
duplicates die.  What would only witness a clock - a status time not newer than the member's,
a ring slot whose events we all hold - is recognised first and costs a lookup, since an
anti-entropy push/pull in a settled cluster brings almost nothing new.  It owns no state of
its own: it reads and feeds the node's components.
"""

from __future__ import annotations

from collections.abc import Callable

from ..wire.codec import DecodeError
from .context import NodeContext
from .events import UserEvents
from .lamport import LamportClock
from .membership import Membership
from .messages import Join, Leave, PushPullState, UserEvent, decode, encode


class StateExchange:
    """Encodes our push/pull state and merges a peer's; see the module docstring."""

    def __init__(
        self,
        ctx: NodeContext,
        clocks: tuple[LamportClock, LamportClock, LamportClock],
        membership: Membership,
        events: UserEvents,
        *,
        joining_without_replay: Callable[[], bool],
    ) -> None:
        self._members = ctx.members
        self._out = ctx.out
        self._clock, self._event_clock, self._query_clock = clocks  # member, event, query
        self._membership = membership
        self._events = events
        self._joining_without_replay = joining_without_replay  # a join without replay runs

    def local_state(self, join: bool) -> bytes:
        members = self._members.values()
        state = PushPullState(
            ltime=self._clock.time(),
            status_ltimes={m.name: m.status_ltime for m in members},
            left_members=tuple(m.name for m in members if m.status == "left"),
            event_ltime=self._event_clock.time(),
            events=self._events.buffer.slots(),
            query_ltime=self._query_clock.time(),
        )
        return encode(state)

    def merge_remote_state(self, now: float, buf: bytes, join: bool) -> None:
        try:
            pp = decode(buf)
        except DecodeError as exc:
            self._out.violation(f"push/pull state: {exc}")
            return
        if not isinstance(pp, PushPullState):
            self._out.violation("push/pull state: not a push/pull message")
            return
        # serf MergeRemoteState: witness the three clocks (minus one: they are "next" times).
        if pp.ltime > 0:
            self._clock.witness(pp.ltime - 1)
        if pp.event_ltime > 0:
            self._event_clock.witness(pp.event_ltime - 1)
        if pp.query_ltime > 0:
            self._query_clock.witness(pp.query_ltime - 1)
        # Left members first, as leaves one past their status time (they must have been
        # accepted after it); then every other status time as a join.  Not rebroadcast.
        left = set(pp.left_members)
        for name in pp.left_members:
            self._membership.handle_leave_intent(
                now, Leave(pp.status_ltimes.get(name, 0) + 1, name)
            )
        members = self._members
        clock = self._clock
        for name, t in pp.status_ltimes.items():
            if name in left:
                continue
            m = members.get(name)
            if m is not None and t <= m.status_ltime:
                # handleNodeJoinIntent of a known member at a time not newer than its status
                # time only witnesses the clock: skip building the intent (nearly every
                # member of an anti-entropy push/pull).
                clock.witness(t)
                continue
            self._membership.handle_join_intent(now, Join(t, name))
        if join and self._joining_without_replay():
            # serf eventJoinIgnore: nothing the cluster already had is delivered.
            buffer = self._events.buffer
            buffer.min_time = max(buffer.min_time, pp.event_ltime)
        buffer = self._events.buffer
        for slot in pp.events:
            if slot is None or not slot.events:
                continue
            if buffer.holds(slot):
                # Every event of the slot is a duplicate: handleUserEvent would witness the
                # event clock and drop each one.
                self._event_clock.witness(slot.ltime)
                continue
            for e in slot.events:
                self._events.handle(UserEvent(slot.ltime, e.name, e.payload, False))


__all__ = ["StateExchange"]
