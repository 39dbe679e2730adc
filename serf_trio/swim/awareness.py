"""Lifeguard local-health awareness (memberlist ``awareness.go``).

Rule: a node that fails to get answers, or has to refute accusations, is probably the slow one
itself; it raises its own score and stretches its probe deadlines by ``score + 1`` so it stops
accusing healthy peers.  The score is clamped to ``[0, max_multiplier - 1]``.  With Lifeguard
disabled (plain SWIM) the score is pinned at 0.
"""

from __future__ import annotations

from .formulas import awareness_scaled


class Awareness:
    __slots__ = ("_enabled", "_max", "_score")

    def __init__(self, max_multiplier: int, *, enabled: bool = True) -> None:
        self._max = max(1, max_multiplier)
        self._score = 0
        self._enabled = enabled

    def apply_delta(self, delta: int) -> None:
        """Add ``delta`` (probe success -1, missed nack +1, refutation +1), clamped."""
        if not self._enabled:
            return
        self._score = min(max(self._score + delta, 0), self._max - 1)

    @property
    def score(self) -> int:
        return self._score

    def scale(self, timeout: float) -> float:
        """``timeout x (score + 1)``."""
        return awareness_scaled(timeout, self._score)
