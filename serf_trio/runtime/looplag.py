"""Event-loop lag: how late the node's timers fire.

Everything a node does runs on one trio thread.  A handler parse, a big push/pull merge or a
blocking call that should not be there delays every timer, and a probe answered late looks
like a dead node to the rest of the cluster.  The core driver (``runtime.driver``) already
wakes for its own timers (the periodic rounds and the core's deadlines), so it reports each
such wake here with how long after its deadline it ran (``record``); no task of its own wakes
just to measure, which an idle agent would pay for.  A stall shows whole: it delays the next
timer.  The lag is on trio's clock, so under a ``MockClock`` (tests, the in-memory network) it
is 0.

Numbers (``statistics()``, the node's ``runtime_lag`` stats section): ``lag_seconds`` (the
last timer wake), ``max_lag_seconds`` (over the last ``window`` seconds of ``clock``),
``late_wakes`` (wakes more than ``threshold`` late, since start) and ``wakes``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from serf_trio.record import record

WINDOW = 60.0
LATE = 0.1


@record
class LoopLagStats:
    lag_seconds: float
    max_lag_seconds: float  # over the last ``window`` seconds
    late_wakes: int  # wakes later than ``threshold``
    wakes: int


class LoopLag:
    """Timer lateness as the driver reports it (``record``); the clock only dates entries."""

    def __init__(
        self,
        *,
        window: float = WINDOW,
        threshold: float = LATE,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.window = window
        self.threshold = threshold
        self._clock = clock
        self._recent: deque[tuple[float, float]] = deque()  # (woke at, lag), oldest first
        self._lag = 0.0
        self._late = 0
        self._wakes = 0

    def record(self, lag: float) -> float:
        """Record one timer that ran ``lag`` seconds after its deadline; the lag recorded."""
        lag = max(0.0, lag)
        woke_at = self._clock()
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


__all__ = ["LoopLag", "LoopLagStats"]
