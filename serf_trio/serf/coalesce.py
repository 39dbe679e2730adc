"""Event coalescing: Serf's member-event and user-event coalescers, with time as input.

Rule (serf ``coalesce.go``): a coalescer opens a window with the first event it handles; the
window is flushed ``period`` seconds after its first event or ``quiescent`` seconds after its
latest one, whichever comes first.  Events it does not handle pass through at once.  A period or
quiescent time of 0 disables the coalescer (everything passes through), as in Serf.

Member events (``coalesce_member.go``, agent: 3 s / 1 s): per member name only the latest event
type in the window counts; at flush a member whose type equals the type last delivered for it is
skipped (except ``member-update``), and one event per type is delivered carrying all its
members.  Improvement: Serf never forgets a name's last type; here a delivered ``member-reap``
forgets it, so the table does not grow with every member ever seen.

User events (``coalesce_user.go``, agent: 3 s / 1 s): only events sent with ``coalesce=true``;
per event name only the events with the highest LTime in the window are delivered (all of them
if several share that LTime).

Queries are never coalesced.  The agent chains the two as Serf does (user coalescer first,
member coalescer second); ``EventCoalescer`` is that chain.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, cast

from serf_trio.record import record
from serf_trio.serf.filters import MemberEventLike, MemberLike, UserEventLike

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@record
class CoalesceConfig:
    """Coalescing windows in seconds (Serf's agent defaults; the Serf library default is off).

    ``coalesce_period`` / ``quiescent_period``: member events; a handler sees one event per
    type at most every 3 s during a join storm, at the price of up to 3 s of latency.
    ``user_coalesce_period`` / ``user_quiescent_period``: user events sent with coalesce.
    """

    coalesce_period: float = 3.0
    quiescent_period: float = 1.0
    user_coalesce_period: float = 3.0
    user_quiescent_period: float = 1.0


class _Window:
    """The two timers of ``coalesceLoop``: a quantum from the first event, a quiescent reset."""

    __slots__ = ("_quantum_at", "_quiet_at", "period", "quiescent")

    def __init__(self, period: float, quiescent: float) -> None:
        self.period = period
        self.quiescent = quiescent
        self._quantum_at: float | None = None
        self._quiet_at: float | None = None

    @property
    def enabled(self) -> bool:
        return self.period > 0 and self.quiescent > 0

    def touch(self, now: float) -> None:
        if self._quantum_at is None:
            self._quantum_at = now + self.period
        self._quiet_at = now + self.quiescent

    def deadline(self) -> float | None:
        if self._quantum_at is None or self._quiet_at is None:
            return None
        return min(self._quantum_at, self._quiet_at)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def reset(self) -> None:
        self._quantum_at = None
        self._quiet_at = None


class MemberEventCoalescer:
    """Coalesces ``SerfMemberEvent``-like records; everything else passes through."""

    def __init__(self, period: float = 3.0, quiescent: float = 1.0) -> None:
        self._window = _Window(period, quiescent)
        self._latest: dict[str, tuple[MemberEventLike, MemberLike]] = {}
        self._last_delivered: dict[str, str] = {}

    def add(self, now: float, event: object) -> list[object]:
        """Take one event; returns what must be delivered now (pass-through or nothing)."""
        if not self._window.enabled or not isinstance(event, MemberEventLike):
            return [event]
        self._window.touch(now)
        for member in event.members:
            # Latest event type per member wins (re-inserting keeps first-seen order).
            self._latest[member.name] = (event, member)
        return []

    def next_deadline(self) -> float | None:
        return self._window.deadline()

    def flush(self, now: float) -> list[object]:
        """The coalesced events if the window is due at ``now``, else nothing."""
        return self.drain() if self._window.due(now) else []

    def drain(self) -> list[object]:
        """Flush unconditionally (shutdown): one event per type, in first-seen order."""
        grouped: dict[str, tuple[MemberEventLike, list[MemberLike]]] = {}
        for name, (event, member) in self._latest.items():
            previous = self._last_delivered.get(name)
            if previous == event.kind and event.kind != "member-update":
                continue
            if event.kind == "member-reap":
                self._last_delivered.pop(name, None)
            else:
                self._last_delivered[name] = event.kind
            slot = grouped.setdefault(event.kind, (event, []))
            slot[1].append(member)
        self._latest.clear()
        self._window.reset()
        return [_with_members(template, tuple(members)) for template, members in grouped.values()]

    @property
    def pending(self) -> int:
        """Members waiting in the current window."""
        return len(self._latest)


def _with_members(template: MemberEventLike, members: tuple[MemberLike, ...]) -> object:
    """A copy of ``template`` (the core's events are frozen dataclasses) carrying ``members``."""
    return dataclasses.replace(cast("DataclassInstance", template), members=members)


class UserEventCoalescer:
    """Coalesces user events sent with ``coalesce=true``; everything else passes through."""

    def __init__(self, period: float = 3.0, quiescent: float = 1.0) -> None:
        self._window = _Window(period, quiescent)
        self._latest: dict[str, tuple[int, list[UserEventLike]]] = {}

    def add(self, now: float, event: object) -> list[object]:
        if not self._window.enabled or not isinstance(event, UserEventLike) or not event.coalesce:
            return [event]
        self._window.touch(now)
        current = self._latest.get(event.name)
        if current is None or current[0] < event.ltime:
            self._latest[event.name] = (event.ltime, [event])
        elif current[0] == event.ltime:
            current[1].append(event)
        # An older LTime than the window's latest for this name is dropped.
        return []

    def next_deadline(self) -> float | None:
        return self._window.deadline()

    def flush(self, now: float) -> list[object]:
        return self.drain() if self._window.due(now) else []

    def drain(self) -> list[object]:
        out: list[object] = [e for _, events in self._latest.values() for e in events]
        self._latest.clear()
        self._window.reset()
        return out

    @property
    def pending(self) -> int:
        return sum(len(events) for _, events in self._latest.values())


class EventCoalescer:
    """Serf's agent chain: user-event coalescer, then member-event coalescer.

    Driving it: call ``add(now, event)`` for every Serf event effect and deliver what it
    returns; wake up at ``next_deadline()`` and deliver ``flush(now)``; on shutdown deliver
    ``drain()``.
    """

    def __init__(self, config: CoalesceConfig | None = None) -> None:
        cfg = config or CoalesceConfig()
        self.user = UserEventCoalescer(cfg.user_coalesce_period, cfg.user_quiescent_period)
        self.member = MemberEventCoalescer(cfg.coalesce_period, cfg.quiescent_period)

    def add(self, now: float, event: object) -> list[object]:
        out: list[object] = []
        for passed in self.user.add(now, event):
            out.extend(self.member.add(now, passed))
        return out

    def next_deadline(self) -> float | None:
        deadlines = [
            d for d in (self.user.next_deadline(), self.member.next_deadline()) if d is not None
        ]
        return min(deadlines) if deadlines else None

    def flush(self, now: float) -> list[object]:
        # Flushed user events go through the member coalescer, which passes them on.
        return self.user.flush(now) + self.member.flush(now)

    def drain(self) -> list[object]:
        return self.user.drain() + self.member.drain()
