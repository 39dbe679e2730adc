"""Unit tests of the seeded network model (pure decisions, no simulator)."""

from __future__ import annotations

import pytest

from serf_trio.swim.api import Address
from serf_trio.testing.netmodel import (
    CONNECTION_REFUSED,
    LinkProfile,
    NetModel,
    Starvation,
)

A = Address("127.0.0.1", 7946)
B = Address("127.0.0.2", 7946)
C = Address("127.0.0.3", 7946)


def test_latency_is_base_plus_capped_jitter() -> None:
    net = NetModel(1, LinkProfile(base_latency=0.01, jitter=0.005, max_jitter=0.02))
    samples = [net.latency(A, B) for _ in range(2000)]
    assert min(samples) >= 0.01
    assert max(samples) <= 0.03 + 1e-12
    mean = sum(samples) / len(samples)
    assert 0.0135 < mean < 0.0165  # exponential mean 5 ms (slightly less: the cap)


def test_zero_jitter_is_exact() -> None:
    net = NetModel(1, LinkProfile(base_latency=0.002, jitter=0.0))
    assert net.packet(10.0, A, B) == [10.002]


def test_loss_and_duplication_rates() -> None:
    net = NetModel(7, LinkProfile(loss=0.1, duplicate=0.05, jitter=0.0))
    outcomes = [len(net.packet(0.0, A, B)) for _ in range(20_000)]
    lost = outcomes.count(0) / len(outcomes)
    dup = outcomes.count(2) / len(outcomes)
    assert 0.09 < lost < 0.11
    assert 0.04 < dup / (1 - lost) < 0.06


def test_same_seed_same_decisions_different_seed_differs() -> None:
    link = LinkProfile(loss=0.2, jitter=0.001)
    a, b, c = NetModel(3, link), NetModel(3, link), NetModel(4, link)
    ra = [a.packet(float(i), A, B) for i in range(200)]
    assert ra == [b.packet(float(i), A, B) for i in range(200)]
    assert ra != [c.packet(float(i), A, B) for i in range(200)]


def test_per_link_override_is_symmetric() -> None:
    net = NetModel(1, LinkProfile(jitter=0.0, base_latency=0.001))
    net.set_link(A, B, LinkProfile(jitter=0.0, base_latency=0.1))
    assert net.packet(0.0, A, B) == [0.1]
    assert net.packet(0.0, B, A) == [0.1]
    assert net.packet(0.0, A, C) == [0.001]


def test_partition_blocks_both_ways_and_heals() -> None:
    net = NetModel(1)
    cut = net.partition([A], [B, C])
    assert net.packet(0.0, A, B) == []
    assert net.packet(0.0, C, A) == []
    assert net.packet(0.0, B, C) != []  # same side
    other = net.partition([B], [C])
    assert net.packet(0.0, B, C) == []
    net.heal(cut)
    assert net.packet(0.0, A, B) != []
    assert net.packet(0.0, B, C) == []
    net.heal(other)
    assert net.packet(0.0, B, C) != []


def test_partition_sides_must_be_disjoint() -> None:
    with pytest.raises(ValueError):
        NetModel(1).partition([A, B], [B])


def test_dead_host_drops_packets_and_refuses_streams() -> None:
    net = NetModel(1, LinkProfile(jitter=0.0, base_latency=0.001))
    net.kill(B)
    assert net.packet(5.0, A, B) == []
    outcome = net.stream_connect(5.0, A, B)
    assert outcome.handle_at is None
    assert outcome.error == CONNECTION_REFUSED
    assert outcome.fail_at == pytest.approx(5.002)
    net.revive(B)
    ok = net.stream_connect(5.0, A, B)
    assert ok.fail_at is None and ok.handle_at == pytest.approx(5.003)


def test_stream_across_cut_gets_no_answer() -> None:
    net = NetModel(1)
    net.partition([A], [B])
    outcome = net.stream_connect(0.0, A, B)
    assert (outcome.handle_at, outcome.fail_at) == (None, None)
    assert net.stream_reply(0.0, B, A) is None


def test_starved_node_handles_input_late() -> None:
    net = NetModel(2, LinkProfile(jitter=0.0, base_latency=0.001))
    net.starve(B)
    delays = [net.packet(0.0, A, B)[0] - 0.001 for _ in range(2000)]
    assert min(delays) >= 0.5 and max(delays) <= 2.5
    assert max(delays) - min(delays) > 1.5  # spread over the range
    # Its own outbound traffic is not slowed; stream replies to it are.
    assert net.packet(0.0, B, A) == [0.001]
    reply = net.stream_reply(0.0, A, B)
    assert reply is not None and reply >= 0.501
    net.starve(C, Starvation(0.1, 0.2))
    assert 0.1 <= net.processing_delay(C) <= 0.2
    net.unstarve(B)
    assert net.packet(0.0, A, B) == [0.001]


def test_link_profile_validation() -> None:
    with pytest.raises(ValueError):
        LinkProfile(loss=1.5)
    with pytest.raises(ValueError):
        LinkProfile(base_latency=-1.0)


def test_lossy_stream_is_late_not_lost() -> None:
    net = NetModel(5, LinkProfile(jitter=0.0, base_latency=0.001, loss=0.3))
    arrivals = [net.stream_connect(0.0, A, B).handle_at for _ in range(3000)]
    assert all(a is not None for a in arrivals)
    late = [a for a in arrivals if a is not None and a > 0.01]
    # P(no segment of three lost) = 0.7^3 = 0.343
    assert 0.6 < len(late) / len(arrivals) < 0.72
    assert any(a is not None and a >= 1.003 for a in arrivals)  # a SYN retransmission
    dead_link = NetModel(5, LinkProfile(loss=1.0))
    outcome = dead_link.stream_connect(0.0, A, B)
    assert (outcome.handle_at, outcome.fail_at) == (None, None)
