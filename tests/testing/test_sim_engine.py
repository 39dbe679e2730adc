"""Tests of the discrete-event engine itself, driving the small fake core of ``sim_fakecore``."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Sequence
from typing import Any

import pytest
from sim_fakecore import SUSPICION, FakeCore

from serf_trio.swim.api import Address, Effect, MemberInfo, OpenStream, SendPacket, State
from serf_trio.swim.config import SwimConfig
from serf_trio.testing.netmodel import LinkProfile
from serf_trio.testing.sim import (
    SIM_CONFIG,
    CoreProtocol,
    NodeStatus,
    Simulator,
    sim_address,
)

EXACT = LinkProfile(base_latency=0.001, jitter=0.0)


def fake_factory(
    config: SwimConfig, name: str, addr: Address, rng: random.Random, now: float
) -> CoreProtocol:
    return FakeCore(config, name, addr, rng, now)


def fake(sim: Simulator, name: str) -> FakeCore:
    core = sim.nodes[name].core
    assert isinstance(core, FakeCore)
    return core


def make(seed: int = 1, link: LinkProfile = EXACT, n: int = 0, **cfg: Any) -> Simulator:
    config = dataclasses.replace(SIM_CONFIG, **cfg)
    sim = Simulator(seed, config=config, link=link, core_factory=fake_factory)
    sim.add_nodes(n)
    return sim


def joined(n: int, seed: int = 1, **kw: Any) -> Simulator:
    sim = make(seed, n=n, **kw)
    for i in range(1, n):
        sim.join(f"n{i}", ["n0"])
    assert sim.run_until_condition(Simulator.all_alive_converged, 30.0) is not None
    return sim


def test_addresses_are_loopback_labels() -> None:
    assert sim_address(0) == Address("127.0.0.1", 7946)
    assert sim_address(253) == Address("127.0.0.254", 7946)
    assert sim_address(254) == Address("127.0.1.1", 7946)
    with pytest.raises(ValueError):
        sim_address(256 * 254)


def test_rounds_are_staggered_then_periodic() -> None:
    sim = make(n=3, push_pull_interval=5.0)
    sim.run_until(20.0)
    for name in ("n0", "n1", "n2"):
        calls = fake(sim, name).calls
        for kind, interval in (("probe", 1.0), ("gossip", 0.2), ("push_pull", 5.0)):
            times = [t for k, t in calls if k == kind]
            assert 0.0 <= times[0] < interval
            gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
            assert gaps == {interval}
    firsts = {next(t for k, t in fake(sim, n).calls if k == "probe") for n in ("n0", "n1", "n2")}
    assert len(firsts) == 3  # each node has its own random stagger


def test_push_pull_disabled_when_period_zero() -> None:
    sim = make(n=1, push_pull_interval=0.0)
    sim.run_until(100.0)
    assert not [c for c in fake(sim, "n0").calls if c[0] == "push_pull"]


def test_join_converges_and_join_done_reported() -> None:
    sim = joined(20)
    assert sim.all_alive_converged()
    assert all(len(sim.view(n)) == 20 for n in sim.nodes)
    assert [d.joined for d in sim.join_results["n5"]] == [1]
    assert sim.statistics().streams_opened >= 19


def test_timer_fires_exactly_at_deadline_and_stale_entries_skipped() -> None:
    sim = joined(2)
    sim.crash("n1")
    sim.run_for(10.0)
    core = fake(sim, "n0")
    ticks = [t for k, t in core.calls if k == "tick"]
    probe_times = [t for k, t in core.calls if k == "probe"]
    # Every probe after the crash times out: a tick exactly probe_timeout later.
    dead_at = sim.dead_declarations[0].time
    after = [t for t in probe_times if 0.1 < t < dead_at - 1.0]
    assert after
    for t in after:
        assert any(abs(x - (t + 0.5)) < 1e-9 for x in ticks)
    # Every pre-crash probe was acked before its deadline: those timers became stale entries.
    assert sim.statistics().stale_timer_entries > 0
    # Suspected, then declared dead SUSPICION seconds later.
    dead = sim.dead_declarations
    assert len(dead) == 1 and dead[0].node == "n1" and not dead[0].false
    assert sim.dead_seen_at("n1") == pytest.approx(dead[0].time)
    suspected_at = next(t for t, n, s in sim.trace if s.startswith("notice suspected"))
    assert dead[0].time == pytest.approx(suspected_at + SUSPICION)


def test_packet_latency_applied() -> None:
    sim = joined(2)
    sim.run_for(5.0)
    core = fake(sim, "n1")
    pings = [t for t, d in core.inputs if d.startswith("ping")]
    probes_of_n0 = [t for k, t in fake(sim, "n0").calls if k == "probe"]
    assert pings
    for t in pings:
        assert any(abs(t - p - 0.001) < 1e-9 for p in probes_of_n0)


def test_loss_causes_false_dead_counted() -> None:
    sim = joined(3, link=EXACT)
    sim.net.default = LinkProfile(base_latency=0.001, jitter=0.0, loss=1.0)
    sim.run_for(10.0)
    assert sim.false_dead()  # nobody crashed, yet the fake core declared peers dead
    assert all(d.false for d in sim.dead_declarations)
    assert sim.notices["declared_dead"] == len(sim.dead_declarations)


def test_partition_then_heal() -> None:
    sim = joined(6)
    left, right = ["n0", "n1", "n2"], ["n3", "n4", "n5"]
    cut = sim.net.partition([sim.nodes[n].addr for n in left], [sim.nodes[n].addr for n in right])
    sim.run_for(30.0)
    for a in left:
        assert all(sim.view(a)[b] is State.DEAD for b in right)
    assert len(sim.false_dead()) > 0
    sim.net.heal(cut)
    # The fake core heals through push/pull (every 30 s).
    assert sim.run_until_condition(Simulator.all_alive_converged, sim.now + 120.0) is not None


class StreamProbe:
    """A core that opens one stream on join and records the outcome."""

    def __init__(self, expect_reply: bool = True, timeout: float = 3.0) -> None:
        self.expect_reply = expect_reply
        self.timeout = timeout
        self.results: list[tuple[float, bytes | None, str]] = []
        self.requests: list[tuple[float, bytes]] = []

    def __call__(
        self, config: SwimConfig, name: str, addr: Address, rng: random.Random, now: float
    ) -> CoreProtocol:
        outer = self

        class Core(FakeCore):
            def join(self, now: float, seeds: Sequence[Address]) -> tuple[int, list[Effect]]:
                return 1, [OpenStream(7, seeds[0], b"hello", outer.expect_reply, outer.timeout)]

            def handle_stream(self, now: float, data: bytes) -> tuple[bytes | None, list[Effect]]:
                outer.requests.append((now, data))
                return (None if data == b"noreply" else b"world"), []

            def stream_result(
                self, now: float, stream_id: int, reply: bytes | None, error: str = ""
            ) -> list[Effect]:
                outer.results.append((now, reply, error))
                return []

            def probe(self, now: float) -> list[Effect]:
                return []

            def gossip(self, now: float) -> list[Effect]:
                return []

        return Core(config, name, addr, rng, now)


def rounded(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(round(r[0], 9), *r[1:]) for r in rows]


def stream_sim(probe: StreamProbe) -> Simulator:
    sim = Simulator(1, config=SIM_CONFIG, link=EXACT, core_factory=probe)
    sim.add_nodes(2)
    return sim


def test_stream_reply_roundtrip() -> None:
    probe = StreamProbe()
    sim = stream_sim(probe)
    sim.join("n1", ["n0"])
    sim.run_for(5.0)
    # connect (1 RTT) + request one way, then reply one way: 4 x 1 ms.
    assert rounded(probe.requests) == [(0.003, b"hello")]
    assert rounded(probe.results) == [(0.004, b"world", "")]


def test_stream_without_reply_completes_with_empty_bytes() -> None:
    probe = StreamProbe(expect_reply=False)
    sim = stream_sim(probe)
    sim.join("n1", ["n0"])
    sim.run_for(5.0)
    assert rounded(probe.results) == [(0.003, b"", "")]


def test_stream_to_crashed_node_refused() -> None:
    probe = StreamProbe()
    sim = stream_sim(probe)
    sim.crash("n0")
    sim.join("n1", ["n0"])
    sim.run_for(5.0)
    assert rounded(probe.results) == [(0.002, None, "connection refused")]


def test_stream_across_partition_times_out() -> None:
    probe = StreamProbe(timeout=3.0)
    sim = stream_sim(probe)
    sim.net.partition([sim.nodes["n0"].addr], [sim.nodes["n1"].addr])
    sim.join("n1", ["n0"])
    sim.run_for(5.0)
    assert rounded(probe.results) == [(3.0, None, "i/o timeout")]


def test_stream_to_starved_node_times_out_when_slow() -> None:
    probe = StreamProbe(timeout=0.1)
    sim = stream_sim(probe)
    sim.net.starve(sim.nodes["n0"].addr)
    sim.join("n1", ["n0"])
    sim.run_for(5.0)
    assert rounded(probe.results) == [(0.1, None, "i/o timeout")]
    assert probe.requests and probe.requests[0][0] >= 0.5  # handled late, reply ignored


def test_leave_stops_node_and_restart_gives_fresh_core() -> None:
    sim = joined(3)
    old = sim.nodes["n2"].core
    sim.leave("n2")
    sim.run_for(1.0)
    assert sim.nodes["n2"].status is NodeStatus.LEFT
    assert sim.net.is_dead(sim.nodes["n2"].addr)
    before = sim.statistics().events
    sim.run_for(1.0)
    assert not [c for c in fake(sim, "n2").calls if c[1] > sim.now - 1.0]
    sim.restart("n2", seeds=["n0"])
    assert sim.nodes["n2"].core is not old
    assert sim.nodes["n2"].status.up
    sim.run_for(5.0)
    assert sim.statistics().events > before
    assert len(sim.view("n2")) == 3


def test_same_seed_same_trace_other_seed_differs() -> None:
    def run(seed: int) -> list[tuple[float, str, str]]:
        sim = joined(10, seed=seed, link=LinkProfile(loss=0.05))
        sim.crash("n3")
        sim.run_for(20.0)
        return sim.trace

    a, b, c = run(5), run(5), run(6)
    assert a == b
    assert a != c


def test_at_schedules_calls_in_order() -> None:
    sim = make(n=1)
    seen: list[tuple[float, str]] = []
    sim.at(2.0, lambda s: seen.append((s.now, "b")))
    sim.at(1.0, lambda s: seen.append((s.now, "a")))
    sim.at(2.0, lambda s: seen.append((s.now, "c")))
    sim.run_until(3.0)
    assert seen == [(1.0, "a"), (2.0, "b"), (2.0, "c")]
    assert sim.now == 3.0


def test_run_until_condition_limit() -> None:
    sim = make(n=2)
    assert sim.run_until_condition(lambda s: False, 2.0) is None
    assert sim.now == pytest.approx(2.0)


def test_core_with_stuck_deadline_is_reported() -> None:
    class Stuck(FakeCore):
        def next_deadline(self) -> float | None:
            return 1.0

    def factory(
        config: SwimConfig, name: str, addr: Address, rng: random.Random, now: float
    ) -> CoreProtocol:
        return Stuck(config, name, addr, rng, now)

    sim = Simulator(1, core_factory=factory)
    sim.add_node()
    with pytest.raises(RuntimeError, match="does not advance"):
        sim.run_until(2.0)


def test_views_and_members_typed() -> None:
    sim = joined(3)
    info = sim.nodes["n0"].core.member("n1")
    assert isinstance(info, MemberInfo)
    assert sim.view("n0") == {"n0": State.ALIVE, "n1": State.ALIVE, "n2": State.ALIVE}


def test_duplicate_packets_are_delivered_twice() -> None:
    sim = make(n=2, link=LinkProfile(jitter=0.0, duplicate=1.0))
    core = fake(sim, "n0")
    sim._apply(sim.nodes["n0"], [SendPacket(sim.nodes["n1"].addr, b"ping 99")])
    sim.run_for(1.0)
    assert [d for _, d in fake(sim, "n1").inputs].count("ping 99") == 2
    assert core is fake(sim, "n0")
