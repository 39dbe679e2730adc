"""The memberlist tests' packet pump: ``serf_trio.testing.pump.SwimPump`` under its old name.

Zero-latency FIFO delivery, seeded stagger, periodic rounds and timers; faults ``down``,
``udp_blackhole`` and ``udp_cut`` (see ``serf_trio.testing.pump``).
"""

from __future__ import annotations

from serf_trio.testing.pump import TEST_CONFIG, Log
from serf_trio.testing.pump import SwimPump as Pump

__all__ = ["TEST_CONFIG", "Log", "Pump"]
