"""``Simulator.bootstrap_converged``: a cluster started converged behaves like a joined one.

A converged bootstrap skips the join storm (minutes of simulation at 1,000 nodes) by handing
every core the member table the storm leaves (``Memberlist.assume_converged``,
``SerfNode.assume_converged``).  These tests compare it with a real join storm of the same seed
and check the behaviour that matters afterwards: crash detection, user events, determinism.
Also covered: ``skip_idle_gossip`` (idle gossip rounds neither scheduled nor run).
"""

from __future__ import annotations

import dataclasses
import random
from typing import cast

import pytest

from serf_trio.serf.config import SerfConfig
from serf_trio.serf.node import SerfNode
from serf_trio.swim.api import Address, State
from serf_trio.swim.members import NodeRecord
from serf_trio.swim.node import Memberlist
from serf_trio.testing.sim import SIM_CONFIG, Simulator, serf_factory
from serf_trio.wire.codec import encode_message, encode_node_state
from serf_trio.wire.messages import PushNodeState, Suspect

N = 20


def node_tags(name: str) -> dict[str, str]:
    """Distinct tags per node, so a mixed-up table would show."""
    return {"role": "web" if name.endswith(("1", "3", "5")) else "db", "id": name}


def joined(sim: Simulator, n: int) -> Simulator:
    """``n`` nodes all joining through n0 at once, run until converged."""
    sim.add_nodes(n)
    for i in range(1, n):
        sim.join(f"n{i}", ["n0"])
    assert sim.run_until_condition(Simulator.all_alive_converged, 120.0, step=0.5) is not None
    return sim


def swim_table(sim: Simulator, name: str) -> list[tuple[object, ...]]:
    """``name``'s memberlist table without times: what a converged join must agree on."""
    return sorted(
        (m.name, m.state, m.addr, m.meta, m.incarnation, m.vsn)
        for m in sim.nodes[name].swim.members()
    )


def serf_table(sim: Simulator, name: str) -> list[tuple[object, ...]]:
    return sorted(
        (m.name, m.status, m.addr, tuple(sorted(m.tags.items())), m.protocol_cur)
        for m in sim.serf_core(name).members()
    )


def test_memberlist_bootstrap_equals_a_join_storm() -> None:
    boot = Simulator(7)
    nodes = boot.bootstrap_converged(N)
    assert [n.name for n in nodes] == [f"n{i}" for i in range(N)]
    assert boot.all_alive_converged()
    assert all(n.swim.num_alive() == N for n in nodes)
    # Nothing to gossip: everybody has heard everything.
    assert not any(n.core.has_broadcasts() for n in nodes)
    storm = joined(Simulator(7), N)
    for i in range(N):
        assert swim_table(boot, f"n{i}") == swim_table(storm, f"n{i}")
    # The probe rounds are staggered, not all at the same instant.
    boot.run_for(SIM_CONFIG.probe_interval)
    assert boot.statistics().packets_sent >= N  # every node probed once (ping, ack)


def test_serf_bootstrap_equals_a_join_storm() -> None:
    factory = serf_factory(SerfConfig(), tags=node_tags)
    boot = Simulator(3, core_factory=factory)
    boot.bootstrap_converged(N)
    storm = joined(Simulator(3, core_factory=factory), N)
    assert storm.run_until_condition(Simulator.all_serf_alive_converged, 60.0) is not None
    assert boot.all_serf_alive_converged()
    for i in range(N):
        name = f"n{i}"
        assert serf_table(boot, name) == serf_table(storm, name)
        assert swim_table(boot, name) == swim_table(storm, name)
        core = cast(SerfNode, boot.serf_core(name))
        stats = core.serf_statistics()
        # The member clock is past every status time, as after witnessing every join intent.
        assert stats.member_time > max(m.status_ltime for m in core.members())
        assert stats.intent_queue == stats.event_queue == stats.query_queue == 0
    n5 = boot.serf_core("n5").member("n5")
    assert n5 is not None and n5.status_ltime == 5


@pytest.mark.parametrize("skip", [False, True])
def test_crash_is_detected_by_all(skip: bool) -> None:
    sim = Simulator(11, record_trace=False, skip_idle_gossip=skip)
    sim.bootstrap_converged(N)
    sim.run_for(3.0)
    sim.crash("n4")
    limit = sim.now + 60.0
    assert sim.run_until_condition(lambda s: s.dead_seen_at("n4") is not None, limit) is not None
    assert not sim.false_dead()
    sim.restart("n4", ["n0"])
    assert sim.run_until_condition(Simulator.all_alive_converged, sim.now + 60.0) is not None


def test_skipped_gossip_rounds_keep_their_phase() -> None:
    sim = Simulator(4, skip_idle_gossip=True, record_trace=False)
    nodes = sim.bootstrap_converged(N)
    node = nodes[6]
    phase, interval = node.gossip_at, SIM_CONFIG.gossip_interval
    calls: list[float] = []
    real = node.core.gossip

    def spy(now: float) -> object:
        calls.append(now)
        return real(now)

    setattr(node.core, "gossip", spy)  # noqa: B010 - instance override of a method
    sim.run_for(3.0)
    assert calls == []  # converged and idle: no round runs
    sim.crash("n2")  # its death is gossiped: node 6 has something to send
    sim.run_for(20.0)
    assert len(calls) >= 3
    for t in calls:
        ticks = (t - phase) / interval
        assert abs(ticks - round(ticks)) < 1e-6


@pytest.mark.parametrize("skip", [False, True])
def test_user_event_reaches_every_serf_node(skip: bool) -> None:
    sim = Simulator(5, serf=SerfConfig(), record_trace=False, skip_idle_gossip=skip)
    sim.bootstrap_converged(N)
    sim.run_for(2.0)
    sim.user_event("n3", "deploy", b"v2")
    sim.run_for(10.0)
    counts = sim.user_event_counts()
    # The event clock starts at 1: the first event has Lamport time 1.
    assert {node for node, name, _ in counts if name == "deploy"} == set(sim.nodes)
    assert all(c == 1 for c in counts.values())


def test_skip_idle_gossip_halves_the_events_and_stays_deterministic() -> None:
    def run(skip: bool) -> tuple[str, int, int]:
        sim = Simulator(9, skip_idle_gossip=skip)
        sim.bootstrap_converged(N)
        sim.run_for(5.0)
        sim.crash("n2")
        sim.run_for(20.0)
        assert sim.dead_seen_at("n2") is not None
        stats = sim.statistics()
        return sim.trace_digest(), stats.events, stats.packets_sent

    plain, skipped = run(False), run(True)
    assert run(True) == skipped  # same seed, same results
    assert skipped[1] < plain[1] * 0.7
    assert run(False) == plain


def test_bootstrap_needs_an_empty_simulator_and_capable_cores() -> None:
    sim = Simulator(1)
    sim.add_node()
    with pytest.raises(ValueError):
        sim.bootstrap_converged(3)


def test_assume_converged_only_on_a_fresh_core() -> None:
    def core(i: int) -> Memberlist:
        return Memberlist(
            SIM_CONFIG, f"m{i}", Address(f"127.0.0.{i + 1}", 7946), rng=random.Random(i), now=0.0
        )

    a, b, c = core(0), core(1), core(2)
    shared: dict[str, NodeRecord] = {}
    a.assume_converged(0.0, [a.local, b.local], shared)
    # One record of m1, with its push/pull encoding made once, for every core of the bootstrap.
    rec = shared["m1"]
    assert rec.shared
    m1 = b.local
    expected = PushNodeState(
        m1.name, m1.addr.packed(), m1.addr.port, m1.meta or None, 1, State.ALIVE.value, m1.vsn
    )
    assert rec.push_state() == encode_node_state(expected)
    assert {m.name: m.state for m in a.members()} == {"m0": State.ALIVE, "m1": State.ALIVE}
    assert not a.has_broadcasts()
    with pytest.raises(RuntimeError):
        a.assume_converged(0.0, [c.local])
    suspect = dataclasses.replace(c.local, state=State.SUSPECT)
    with pytest.raises(ValueError):
        b.assume_converged(0.0, [suspect])


def test_shared_records_are_copied_before_a_change() -> None:
    """Copy-on-write: one node's suspicion of a member changes that node's table only, the
    shared record stays as it was for the others, and the changing node's probe list, gossip
    cycle and push/pull all see its own copy from then on."""

    def core(i: int) -> Memberlist:
        return Memberlist(
            SIM_CONFIG, f"m{i}", Address(f"127.0.0.{i + 1}", 7946), rng=random.Random(i), now=0.0
        )

    cores = [core(i) for i in range(4)]
    infos = [c.local for c in cores]
    shared: dict[str, NodeRecord] = {}
    for c in cores:
        c.assume_converged(0.0, infos, shared)
    a, b = cores[0], cores[1]
    before = shared["m3"]
    a.handle_packet(1.0, infos[2].addr, encode_message(Suspect(1, "m3", "m2")))
    assert {m.name: m.state for m in a.members()}["m3"] is State.SUSPECT
    assert {m.name: m.state for m in b.members()}["m3"] is State.ALIVE
    assert shared["m3"] is before and before.state is State.ALIVE and before.shared
    # a's structures all resolve to its private copy.
    table = a._members  # the structure under test
    mine = table.get("m3")
    assert mine is not None and mine is not before and not mine.shared
    assert [r for r in table if r.name == "m3"] == [mine] and next(
        r for r in table if r.name == "m3"
    ) is mine
    with pytest.raises(AssertionError):
        table.set_state(before, State.DEAD, 2.0)


def test_serf_shared_members_are_copied_before_a_change() -> None:
    """A crash: the nodes that marked it failed hold their own copies; a node crashed before
    it heard still holds the shared record, unchanged."""
    sim = Simulator(5, serf=SerfConfig(), skip_idle_gossip=True)
    sim.bootstrap_converged(8)
    sim.run_for(2.0)
    sim.crash("n3")
    sim.crash("n6")
    assert sim.run_until_condition(
        lambda s: all(
            m.status == "failed"
            for n in s.nodes.values()
            if n.status.up
            for m in s.serf_core(n.name).members()
            if m.name in ("n3", "n6")
        ),
        sim.now + 60.0,
        step=0.5,
    )
    n3_view = {m.name: m.status for m in sim.serf_core("n3").members()}
    assert n3_view["n6"] == "alive"  # crashed at the same instant: never heard


@pytest.mark.slow
def test_more_nodes_than_the_same_instant_guard_may_tick_together() -> None:
    """A converged start arms every Serf node's reaper for the same instant (15 s): more
    than a thousand nodes ticking at once is no runaway core (the guard counts per node)."""
    sim = Simulator(3, serf=SerfConfig(), record_trace=False, skip_idle_gossip=True)
    sim.bootstrap_converged(1_050)
    sim.run_until(15.5)
    assert sim.statistics().ticks >= 1_050
