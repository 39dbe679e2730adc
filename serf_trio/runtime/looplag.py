"""Event-loop lag: how late a task that sleeps a fixed interval wakes up.

Everything a node does runs on one trio thread.  A handler parse, a big push/pull merge or a
blocking call that should not be there delays every timer, and a probe answered late looks
like a dead node to the rest of the cluster.  ``LoopLag.run`` sleeps ``interval`` seconds over
and over and records how much longer than that the sleep really took, measured on the real
monotonic clock (``time.perf_counter``), not trio's: under a ``MockClock`` the loop jumps over
sleeps in no real time, so the measured lag is 0, and a busy wait inside the loop shows up as
lag in every clock alike.

Numbers (``statistics()``, the node's ``runtime_lag`` stats section): ``lag_seconds`` (the
last wake), ``max_lag_seconds`` (over the last ``window`` seconds), ``late_wakes`` (wakes more
than ``threshold`` late, since start) and ``wakes``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

# One wake a second: a stall long enough to matter to failure detection (hundreds of ms) is
# still seen whole, since it delays the next wake; four wakes a second cost an idle agent
# 0.15 % of a core more (0.60 % against 0.45 % per agent, bench/capacity.py --n 16).
INTERVAL = 1.0
WINDOW = 60.0
LATE = 0.1


@dataclass(frozen=True, slots=True)
class LoopLagStats:
    lag_seconds: float
    max_lag_seconds: float  # over the last ``window`` seconds
    late_wakes: int  # wakes later than ``threshold``
    wakes: int


class LoopLag:
    """The measuring half is ``observe`` (pure, injectable clock); ``run`` is the trio task."""

    def __init__(
        self,
        interval: float = INTERVAL,
        *,
        window: float = WINDOW,
        threshold: float = LATE,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.interval = interval
        self.window = window
        self.threshold = threshold
        self._clock = clock
        self._recent: deque[tuple[float, float]] = deque()  # (woke at, lag), oldest first
        self._lag = 0.0
        self._late = 0
        self._wakes = 0

    def observe(self, slept_from: float, woke_at: float) -> float:
        """Record one wake of a sleep of ``interval`` started at ``slept_from``; the lag."""
        lag = max(0.0, woke_at - slept_from - self.interval)
        self._lag = lag
        self._wakes += 1
        if lag > self.threshold:
            self._late += 1
        recent = self._recent
        recent.append((woke_at, lag))
        while recent and recent[0][0] < woke_at - self.window:
            recent.popleft()
        return lag

    def statistics(self) -> LoopLagStats:
        now = self._clock()
        peak = max((lag for at, lag in self._recent if at >= now - self.window), default=0.0)
        return LoopLagStats(round(self._lag, 6), round(peak, 6), self._late, self._wakes)

    async def run(self) -> None:
        """Measure until cancelled."""
        clock = self._clock
        while True:
            start = clock()
            await trio.sleep(self.interval)
            self.observe(start, clock())


__all__ = ["LoopLag", "LoopLagStats"]
