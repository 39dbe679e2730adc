"""Dissemination without a tail: every user event reaches every node by gossip alone.

Seeded simulator runs (``testing.sim``) of Serf clusters with periodic push/pull *disabled*
(joins still push/pull), so an event that gossip leaves out never arrives at all.  With
memberlist's independent random targets ~2-3 % of events miss a node at N = 64 and wait for the
next push/pull (30-60 s); the cycle plus ring backstop (``swim.targets``) reaches everyone, and
the spread time's p99 stays within 3x its median.
"""

from __future__ import annotations

import dataclasses
import statistics

import pytest

from serf_trio.serf.config import SerfConfig
from serf_trio.testing.netmodel import LinkProfile
from serf_trio.testing.sim import SIM_CONFIG, Simulator

EVENTS = 120
GAP = 1.0  # seconds between events (each from a different node)
GRACE = 20.0  # after the last event; gossip needs ~1 s


def spread_times(n: int, loss: float, seed: int) -> tuple[list[float], int]:
    """Issue -> last delivery of each of ``EVENTS`` user events; and how many never reached
    every node."""
    cfg = dataclasses.replace(SIM_CONFIG, push_pull_interval=0.0)
    sim = Simulator(
        seed, config=cfg, serf=SerfConfig(), link=LinkProfile(loss=loss), record_trace=False
    )
    sim.add_nodes(n)
    for i in range(1, n):
        sim.join(f"n{i}", ["n0"])
    assert sim.run_until_condition(Simulator.all_serf_alive_converged, 120.0, step=0.5)
    sim.run_for(5.0)
    t0 = sim.now
    issued = {f"ev{i}": t0 + i * GAP for i in range(EVENTS)}
    for i, (name, at) in enumerate(issued.items()):
        sim.user_event(f"n{(i * 7) % n}", name, b"x", at=at)
    sim.run_until(t0 + EVENTS * GAP + GRACE)
    first: dict[str, dict[str, float]] = {}
    for r in sim.user_events:
        first.setdefault(r.name, {}).setdefault(r.node, r.time)
    spreads: list[float] = []
    missed = 0
    for name, at in issued.items():
        got = first.get(name, {})
        if len(got) < n:
            missed += 1
        else:
            spreads.append(max(got.values()) - at)
    return sorted(spreads), missed


@pytest.mark.slow
@pytest.mark.parametrize(
    ("n", "loss", "seed"), [(16, 0.01, 1), (16, 0.05, 2), (64, 0.01, 3), (64, 0.05, 4)]
)
def test_every_event_reaches_every_node_without_push_pull(n: int, loss: float, seed: int) -> None:
    spreads, missed = spread_times(n, loss, seed)
    median = statistics.median(spreads)
    p99 = spreads[int(0.99 * (len(spreads) - 1))]
    print(f"\nN={n} loss={loss}: median {median:.3f}s p99 {p99:.3f}s max {spreads[-1]:.3f}s")
    assert missed == 0
    assert p99 <= 3 * median
