"""The user-event buffer: dedupe of user events by Lamport time, and push/pull replay.

serf handleUserEvent: a ring of ``event_buffer`` (512) slots indexed by ``LTime % 512``; each
slot holds the events seen at one LTime.  An event is new unless its slot holds the same LTime
and an event with the same name and payload.  Events older than ``min_time`` (a snapshot floor,
or the remote event clock on a join without replay) or older than the window (clock > 512 and
``LTime < clock - 512``) are dropped.  The ring is sent whole in every push/pull, and the
receiver runs each entry through the same path, so duplicates die here.
"""

from __future__ import annotations

from .messages import EventEntry, EventSlot


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

    def slots(self) -> tuple[EventSlot | None, ...]:
        """The ring in slot order, as Serf's push/pull ``Events`` array."""
        return tuple(self._slots)
