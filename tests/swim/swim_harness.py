"""The memberlist tests' packet pump: ``serf_trio.testing.pump.SwimPump`` under its old name.

Zero-latency FIFO delivery, seeded stagger, periodic rounds and timers; faults ``down``,
``udp_blackhole`` and ``udp_cut`` (see ``serf_trio.testing.pump``).
"""

from __future__ import annotations

from serf_trio.swim.config import SwimConfig
from serf_trio.testing.pump import TEST_CONFIG, Log
from serf_trio.testing.pump import SwimPump as Pump

__all__ = ["TEST_CONFIG", "Log", "Pump", "cluster"]


def cluster(n: int, seed: int = 1, config: SwimConfig = TEST_CONFIG) -> Pump:
    """``n1`` .. ``nN`` on one pump, each joining ``n1``."""
    p = Pump(seed, config)
    names = [f"n{i}" for i in range(1, n + 1)]
    for name in names:
        p.add(name)
    for name in names[1:]:
        p.join(name, "n1")
    return p
