"""The records on the core driver's bus: its inputs, reply slots, sizes, counters and errors.

Kept apart from ``driver`` (which owns the tasks that move them) so that the layers above the
driver (the Serf runtime, the library API, the agent) can name them without the driver's
internals.  Every record is immutable; a ``Reply`` is set once by the driver, never waited on
by it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import trio

from serf_trio.record import record
from serf_trio.serf.effects import SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from serf_trio.swim.api import (
    Address,
    DrivenCore,
    JoinDone,
    LeaveDone,
    MemberEvent,
    Notice,
    Violation,
)
from serf_trio.swim.node import Memberlist, SwimStats

from .delivery import DeliveryStats
from .transport import Datagram, TransportStats

T = TypeVar("T")

NodeEvent = (
    MemberEvent
    | Notice
    | Violation
    | JoinDone
    | LeaveDone
    | SerfMemberEvent
    | SerfUserEvent
    | SerfQueryEvent
)


class Core(DrivenCore, Protocol):
    """What the driver needs of a core beyond driving it: join/leave, views and counters
    (``Memberlist`` and ``SerfNode`` both have them; ``memberlist`` is the core itself or the
    memberlist a Serf core owns)."""

    @property
    def memberlist(self) -> Memberlist: ...
    def join(self, now: float, seeds: Sequence[Address]) -> tuple[int, Sequence[object]]: ...
    def leave(self, now: float, timeout: float) -> Sequence[object]: ...
    def statistics(self) -> SwimStats: ...


C = TypeVar("C", bound=Core)


class JoinError(Exception):
    """No seed could be synced with; ``errors`` holds one text per seed."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors) or "no seeds given")
        self.errors = tuple(errors)


class NotRunningError(RuntimeError):
    """An API call that needs the driver was made before ``run`` started (or after it ended)."""


class Reply(Generic[T]):
    """A one-shot reply slot: the driver sets it without ever waiting."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: T | None = None

    def set(self, value: T) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    async def wait(self) -> T:
        await self._event.wait()
        return self._value  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Inputs of the core driver


@record
class StreamRequest:
    """An inbound stream's request message, and where the driver puts the reply."""

    data: bytes
    reply: Reply[bytes | None]


@record
class StreamOutcome:
    """Result of one ``OpenStream`` effect (reply bytes, or ``None`` + error)."""

    stream_id: int
    reply: bytes | None
    error: str


@record
class Flush:
    """A marker in the outgoing channel: answer ``waiters`` once the sender reaches it."""

    waiters: tuple[Reply[LeaveDone], ...]
    done: LeaveDone


@record
class Outcome:
    """The answer of a ``Call``: ``error`` is the core's text when it refused."""

    error: str = ""
    value: int = 0


@record
class Call:
    """Run ``call(core, now)`` in the driver and execute its effects.

    ``refusals`` are the exception types by which the core refuses a command (their text
    becomes ``Outcome.error``); ``on_value`` sees the returned value before the effects run
    (to register a waiter keyed by it, e.g. a join request or a query id).
    """

    call: Callable[[Any, float], tuple[int, Sequence[object]]]
    reply: Reply[Outcome]
    refusals: tuple[type[Exception], ...] = ()
    on_value: Callable[[int], None] | None = None


@record
class LeaveCommand:
    timeout: float
    reply: Reply[LeaveDone]


CoreInput = Datagram | StreamRequest | StreamOutcome | Call | LeaveCommand


@record
class BusSizes:
    """Buffer sizes of the bus channels (see the module docstring for their policies)."""

    input: int = 1024
    outgoing: int = 1024
    events: int = 1024  # per subscriber: non-member events buffered before drops
    # Concurrent outbound streams; beyond this an OpenStream fails at once ("too many streams").
    max_streams: int = 128


DEFAULT_SIZES = BusSizes()


@record
class DriverStats:
    """A snapshot of the runtime's counters (the core's own are in ``core``)."""

    core: SwimStats | None  # the core's own counters (None before run)
    transport: TransportStats
    delivery: DeliveryStats
    outgoing_dropped: int
    violations: int
    streams_active: int
    streams_failed: int

    @property
    def events_dropped(self) -> int:
        return self.delivery.dropped


def classify(ev: object) -> tuple[str, Hashable | None]:
    """The delivery contract's view of an event: member events coalesce per member."""
    if isinstance(ev, SerfMemberEvent):
        return "member", ev.members[0].name if ev.members else None
    if isinstance(ev, MemberEvent):
        return "member", ev.member.name
    if isinstance(ev, SerfUserEvent):
        return "user_event", None
    if isinstance(ev, SerfQueryEvent):
        return "query", None
    return "other", None
