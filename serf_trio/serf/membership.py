"""``Membership``: Serf member status from memberlist events and join/leave intents (SERF.md
5, 6; serf serf.go handleNodeJoin/handleNodeLeave/handleNodeJoinIntent/handleNodeLeaveIntent).

It owns the rules that move a member between alive, leaving, left and failed, the recent
intents about members not known yet, the intent broadcast queue, and the watch over *other*
members in status "leaving".  The table itself (``dict`` name -> ``members.MemberState``) is
shared with the node's other components; erasing members is the ``Reaper``'s job, and so is
the prune timer a force-leave with ``prune`` starts.

Deliberate improvements over Serf 0.9.4 (the restart-with-the-same-name problem):

* a member that memberlist reports alive with an incarnation above the one it had when a leave
  intent made it "leaving" has come back (restart or refutation): it is alive again;
* a member cannot stay "leaving" while memberlist keeps it alive longer than
  ``SerfConfig.leaving_timeout`` (a real leave ends in memberlist left/dead long before);
* a memberlist *graceful* leave (dead with From == node) makes a member "left" even if we
  missed its leave intent (Serf would call it failed);
* a restarted node's join intent is sent after the join push/pull has witnessed the cluster's
  member clock (``SerfNode``), and any leave intent about itself it learns while alive is
  refuted with a join intent at its (now larger) clock, as Serf does.

The first two are the "leaving" watch.  memberlist raises no event for an incarnation bump, so
``check_leaving`` looks at each watched member once per entry point (a leave normally ends in a
memberlist left/dead within a broadcast timeout, so the watch is short).  The timeouts are also
kept in a ``TimerHeap`` so ``next_deadline`` peeks instead of walking the watch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..swim.api import MemberEvent, MemberEventKind, MemberInfo, Notice, State
from ..swim.broadcast import TransmitLimitedQueue
from .context import NodeContext
from .effects import SerfMemberEvent
from .lamport import LamportClock
from .members import MemberState, RecentIntents
from .messages import Join, Leave, encode
from .reaper import Reaper
from .tags import decode_tags
from .timers import TimerHeap


class Membership:
    """Status and intents of every member; see the module docstring."""

    def __init__(
        self,
        ctx: NodeContext,
        clock: LamportClock,
        intents: RecentIntents,
        queue: TransmitLimitedQueue,
        reaper: Reaper,
        *,
        member_info: Callable[[str], MemberInfo | None],
    ) -> None:
        self._config = ctx.config
        self._name = ctx.name
        self._members = ctx.members
        self._down = ctx.down
        self._out = ctx.out
        self._is_alive = ctx.is_alive
        self._counters = ctx.counters
        self._clock = clock  # the member clock
        self._intents = intents
        self.queue = queue  # serf intent broadcasts (join/leave)
        self._reaper = reaper
        self._member_info = member_info  # memberlist's view of a member
        # Other members in status leaving, in the order they became leaving, and when each
        # one's leaving_timeout runs out.
        self._leaving: dict[str, None] = {}
        self._leaving_timers: TimerHeap[str] = TimerHeap()

    def has_alive_peers(self) -> bool:
        return any(m.status == "alive" and n != self._name for n, m in self._members.items())

    def next_deadline(self) -> float | None:
        return self._leaving_timers.peek(self._still_leaving)

    def _own(self, m: MemberState) -> MemberState:
        """``m`` itself, or this node's private copy if it is shared (copy-on-write: every
        write to a member goes through a record this returned)."""
        if not m.shared:
            return m
        mine = dataclasses.replace(m, shared=False)
        self._members[m.name] = mine
        return mine

    def _emit(self, kind: str, m: MemberState) -> None:
        self._out.emit(SerfMemberEvent(kind, (m.view(),)))

    # ------------------------------------------------------------------ intents (5)

    def broadcast_join(self, now: float) -> None:
        """Send our join intent at the member clock."""
        msg = Join(self._clock.time(), self._name)
        self.handle_join_intent(now, msg)  # witnesses msg.ltime: our clock moves past it
        self.queue.queue(None, encode(msg))

    def handle_join_intent(self, now: float, msg: Join) -> bool:
        """Apply a join intent; True if it was news (to rebroadcast)."""
        self._clock.witness(msg.ltime)
        m = self._members.get(msg.node)
        if m is None:
            # serf: an intent for a member we do not know yet is kept in recent intents.
            return self._intents.upsert(msg.node, "join", msg.ltime, now)
        if msg.ltime <= m.status_ltime:
            return False
        m = self._own(m)
        m.status_ltime = msg.ltime
        if m.status == "leaving":
            m.status = "alive"  # the leave must have been older than this join
        return True

    def handle_leave_intent(self, now: float, msg: Leave) -> bool:
        """Apply a leave intent; True if it was news (to rebroadcast)."""
        self._clock.witness(msg.ltime)
        m = self._members.get(msg.node)
        if m is None:
            # serf: a leave intent for a member we do not know yet is kept in recent intents.
            return self._intents.upsert(msg.node, "leave", msg.ltime, now)
        if msg.ltime <= m.status_ltime:
            return False
        if msg.node == self._name and self._is_alive():
            # serf: refute a leave intent about us with a join intent at our clock, which
            # has just witnessed the leave's time and so beats it everywhere.
            self.broadcast_join(now)
            return False
        m = self._own(m)
        m.status_ltime = msg.ltime
        if m.status == "alive":
            info = self._member_info(msg.node)
            self._mark_leaving(m, now, info.incarnation if info is not None else 0)
        elif m.status == "failed":
            m.status = "left"
            self._emit("member-leave", m)
        if msg.prune:
            self._reaper.prune(now, m)
        return True

    # ------------------------------------------------------------------ member events (6)

    def on_member_event(self, now: float, ev: MemberEvent) -> None:
        info = ev.member
        if ev.kind is MemberEventKind.JOIN:
            self._node_join(now, info)
        elif ev.kind is MemberEventKind.LEAVE:
            self._node_leave(now, info)
        else:
            m = self._members.get(info.name)
            if m is None:
                return
            m = self._own(m)
            m.addr, m.tags, m.vsn = info.addr, decode_tags(info.meta), info.vsn or m.vsn
            self._emit("member-update", m)

    def _node_join(self, now: float, info: MemberInfo) -> None:
        m = self._members.get(info.name)
        tags = decode_tags(info.meta)
        if m is None:
            m = MemberState(info.name, info.addr, tags, "alive", info.vsn)
            # serf handleNodeJoin: a remembered intent supplies the status time; a remembered
            # leave makes the member start as leaving.
            join_t = self._intents.get(info.name, "join")
            if join_t is not None:
                m.status_ltime = join_t
            leave_t = self._intents.get(info.name, "leave")
            if leave_t is not None:
                m.status_ltime = leave_t
                self._mark_leaving(m, now, info.incarnation)
            self._members[info.name] = m
        else:
            m = self._own(m)
            if m.status == "failed" and now - m.leave_time < self._config.flap_timeout:
                self._counters.flaps += 1  # serf handleNodeJoin: serf.member.flap
            m.status = "alive"
            m.leave_time = 0.0
            m.addr, m.tags, m.vsn = info.addr, tags, info.vsn or m.vsn
            self._down.pop(info.name, None)
        self._reaper.cancel_prune(info.name)
        self._emit("member-join", m)

    def _node_leave(self, now: float, info: MemberInfo) -> None:
        m = self._members.get(info.name)
        if m is None:
            return
        graceful = info.state is State.LEFT
        if m.status not in ("leaving", "alive"):
            return
        m = self._own(m)
        if m.status == "leaving" or (graceful and m.status == "alive"):
            # Improvement: memberlist's own graceful leave is a leave even if we missed the
            # intent (Serf would call the member failed).
            m.status = "left"
        else:
            m.status = "failed"
        m.leave_time = now
        self._down[m.name] = None
        self._emit("member-leave" if m.status == "left" else "member-failed", m)

    # ------------------------------------------------------------------ the leaving watch

    def _mark_leaving(self, m: MemberState, now: float, incarnation: int) -> None:
        m.status = "leaving"
        m.leaving_since = now
        m.leaving_incarnation = incarnation
        if m.name != self._name:
            self._leaving[m.name] = None
            self._leaving_timers.set(m.name, now + self._config.leaving_timeout)

    def _still_leaving(self, name: str) -> bool:
        """Whether a watched member's timeout still counts (it may have become alive, left
        or been erased since; then only ``_mark_leaving`` brings it back)."""
        m = self._members.get(name)
        return m is not None and m.status == "leaving"

    def _unwatch(self, name: str) -> None:
        del self._leaving[name]
        self._leaving_timers.cancel(name)

    def check_leaving(self, now: float) -> None:
        """Undo a stale "leaving" (``leaving_cleared``): run at the end of every entry point."""
        if not self._leaving:
            return
        for name in list(self._leaving):
            m = self._members.get(name)
            if m is None or m.status != "leaving":
                self._unwatch(name)
                continue
            info = self._member_info(m.name)
            if info is None or info.state not in (State.ALIVE, State.SUSPECT):
                # memberlist's left/dead event settles it; nothing to time out here.
                self._unwatch(name)
                continue
            reason = ""
            timeout = self._config.leaving_timeout
            if info.incarnation > m.leaving_incarnation:
                reason = "incarnation"  # it restarted or refuted: it has come back
            elif now >= m.leaving_since + timeout or now - m.leaving_since >= timeout:
                # A real leave ends in memberlist left/dead long before.  The first test is
                # the deadline ``next_deadline`` reports, so a tick at it always clears
                # (``now - since`` can round below the timeout there, and the node would be
                # woken at the same instant forever); the second is the original test.
                reason = "timeout"
            if reason:
                m = self._own(m)
                m.status = "alive"
                self._unwatch(name)
                self._out.emit(Notice("leaving_cleared", {"node": m.name, "reason": reason}))


__all__ = ["Membership"]
