"""The user-event buffer: dedupe of user events by Lamport time, and push/pull replay.

serf handleUserEvent: a ring of ``event_buffer`` (512) slots indexed by ``LTime % 512``; each
slot holds the events seen at one LTime.  An event is new unless its slot holds the same LTime
and an event with the same name and payload.  Events older than ``min_time`` (a snapshot floor,
or the remote event clock on a join without replay) or older than the window (clock > 512 and
``LTime < clock - 512``) are dropped.  The ring is sent whole in every push/pull, and the
receiver runs each entry through the same path, so duplicates die here.

``UserEvents`` is the node's user-event component (SERF.md 7; serf serf.go UserEvent and
handleUserEvent): the size limits of a new event, the event clock, delivery of each new event
exactly once (``SerfUserEvent``) and the event broadcast queue.
"""

from __future__ import annotations

from ..swim.broadcast import TransmitLimitedQueue
from .context import NodeContext
from .effects import SerfUserEvent
from .errors import SerfError
from .lamport import LamportClock
from .messages import EventEntry, EventSlot, UserEvent, encode


class EventBuffer:
    def __init__(self, size: int) -> None:
        self.size = size
        self.min_time = 0  # serf eventMinTime
        self._slots: list[EventSlot | None] = [None] * size

    def accept(self, clock_time: int, ltime: int, name: str, payload: bytes) -> tuple[bool, str]:
        """Record the event if it is new; ``(True, "")`` means deliver and rebroadcast it."""
        if ltime < self.min_time:
            return False, "older than the event floor"
        if clock_time > self.size and ltime < clock_time - self.size:
            return False, "received old event"
        idx = ltime % self.size
        slot = self._slots[idx]
        entry = EventEntry(name, payload)
        if slot is not None and slot.ltime == ltime:
            if entry in slot.events:
                return False, "duplicate"
            self._slots[idx] = EventSlot(ltime, (*slot.events, entry))
        else:
            self._slots[idx] = EventSlot(ltime, (entry,))
        return True, ""

    def holds(self, slot: EventSlot) -> bool:
        """Whether our slot for ``slot.ltime`` holds that LTime and every event of ``slot``,
        so that ``accept`` would call each of them a duplicate (a push/pull brings the whole
        ring every time)."""
        ours = self._slots[slot.ltime % self.size]
        if ours is None or ours.ltime != slot.ltime:
            return False
        return ours == slot or all(e in ours.events for e in slot.events)

    def slots(self) -> tuple[EventSlot | None, ...]:
        """The ring in slot order, as Serf's push/pull ``Events`` array."""
        return tuple(self._slots)


class UserEvents:
    """Sending, receiving and delivering user events; see the module docstring."""

    def __init__(
        self,
        ctx: NodeContext,
        clock: LamportClock,
        buffer: EventBuffer,
        queue: TransmitLimitedQueue,
    ) -> None:
        self._config = ctx.config
        self._out = ctx.out
        self._counters = ctx.counters
        self._clock = clock  # the event clock
        self.buffer = buffer  # also the push/pull Events array
        self.queue = queue  # serf event broadcasts

    def prepare(self, name: str, payload: bytes, coalesce: bool) -> tuple[UserEvent, bytes]:
        """A new event at the event clock (which moves on); ``SerfError`` (Serf's text) past
        ``user_event_size_limit``, with the clock untouched."""
        limit = self._config.user_event_size_limit
        if len(name.encode()) + len(payload) > limit:
            raise SerfError(f"user event exceeds configured limit of {limit} bytes before encoding")
        msg = UserEvent(self._clock.time(), name, payload, coalesce)
        raw = encode(msg)
        if len(raw) > limit:
            # Wording of the real agent (serf.go UserEvent), checked against it.
            raise SerfError(
                f"encoded user event exceeds configured limit of {limit} bytes after encoding"
            )
        self._clock.increment()
        return msg, raw

    def send(self, msg: UserEvent, raw: bytes) -> None:
        """The originator delivers its own event, then gossips it."""
        if self.handle(msg):
            self.queue.queue(None, raw)

    def handle(self, msg: UserEvent) -> bool:
        """serf handleUserEvent: deliver a new event; True if it was new (to rebroadcast)."""
        self._clock.witness(msg.ltime)
        ok, why = self.buffer.accept(self._clock.time(), msg.ltime, msg.name, msg.payload)
        if ok:
            self._out.emit(SerfUserEvent(msg.name, msg.payload, msg.ltime, msg.cc))
        elif why != "duplicate":
            self._counters.user_events_too_old += 1
        return ok
