"""The simulator's traffic counters and per-observer dead times (used by ``serf-trio simulate``)."""

from __future__ import annotations

from serf_trio.testing.sim import Simulator


def test_byte_counters_grow_with_traffic_and_dead_seen_by_lists_every_survivor() -> None:
    sim = Simulator(3, record_trace=False)
    sim.bootstrap_converged(8)
    before = sim.statistics()
    assert (before.bytes_sent, before.stream_bytes_sent) == (0, 0)
    sim.run_for(40.0)  # probes (datagrams) and a push/pull round (streams)
    sim.crash("n5")
    sim.run_for(30.0)
    after = sim.statistics()
    assert after.bytes_sent > after.packets_sent > 0  # every datagram has bytes
    assert after.stream_bytes_sent > 0
    seen = sim.dead_seen_by("n5")
    assert sorted(seen) == sorted(n for n in sim.nodes if n != "n5")
    assert all(40.0 < t <= 70.0 for t in seen.values())
    assert sim.dead_seen_at("n5") == max(seen.values())
    assert sim.dead_seen_by("n1") == {}
