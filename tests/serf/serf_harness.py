"""The Serf tests' packet pump: ``serf_trio.testing.pump.SerfPump`` under its old name.

Zero-latency FIFO delivery, seeded stagger, periodic rounds and timers, per-node logs of Serf
effects, ``auto_respond`` to queries, ``down`` nodes (see ``serf_trio.testing.pump``).
"""

from __future__ import annotations

from serf_trio.testing.pump import SERF, SWIM, Log
from serf_trio.testing.pump import SerfPump as Pump

__all__ = ["SERF", "SWIM", "Log", "Pump"]
