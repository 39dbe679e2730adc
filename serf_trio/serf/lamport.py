"""Serf's Lamport clock (serf lamport.go).

A Serf node keeps three independent clocks: the member clock (join/leave intents), the event
clock (user events) and the query clock.  Each starts at 1 (a fresh Serf increments its zero
clock once at creation), or at a value restored from a snapshot.  ``witness(v)`` moves the
clock to ``v + 1`` when ``v`` is not older than it, so the next message sent carries a time
greater than every time seen.
"""

from __future__ import annotations


class LamportClock:
    __slots__ = ("_counter",)

    def __init__(self, start: int = 1) -> None:
        self._counter = start

    def time(self) -> int:
        return self._counter

    def increment(self) -> int:
        """Advance by one and return the new time."""
        self._counter += 1
        return self._counter

    def witness(self, v: int) -> None:
        """serf: a time at or past ours moves the clock to ``v + 1``."""
        if v >= self._counter:
            self._counter = v + 1

    def __repr__(self) -> str:
        return f"LamportClock({self._counter})"
