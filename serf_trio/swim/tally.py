"""Bounded counters by name (``messages_in`` by type, user events by name, ...).

Some of the names counted come from the network: a user event's or query's name is chosen by
whichever member (or forger) sent it.  A plain ``dict`` keyed by them would grow without bound,
in memory and in the number of metric series an exporter publishes, so each tally keeps at
most ``MAX_NAMES`` distinct names and counts everything after that under ``OTHER``.  Counting
never draws randomness or reads a clock: the cores behave exactly the same with or without
anyone reading the numbers.
"""

from __future__ import annotations

MAX_NAMES = 256
OTHER = "_other"


def tally(counts: dict[str, int], name: str, n: int = 1) -> None:
    """Add ``n`` to ``counts[name]``, or to ``counts[OTHER]`` once ``MAX_NAMES`` names are
    taken (``OTHER`` itself is the 257th key at most)."""
    seen = counts.get(name)
    if seen is not None:
        counts[name] = seen + n
    elif len(counts) < MAX_NAMES:
        counts[name] = n
    else:
        counts[OTHER] = counts.get(OTHER, 0) + n


__all__ = ["MAX_NAMES", "OTHER", "tally"]
