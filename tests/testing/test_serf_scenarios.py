"""Serf-layer scenarios in the discrete-event simulator: ``SerfNode`` cores on a modelled net.

Each scenario states what it asserts and where the numbers come from (SERF.md, serf 0.9.4
defaults).  Measured values are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from serf_trio.serf.config import SerfConfig
from serf_trio.serf.query import default_query_timeout
from serf_trio.testing.netmodel import LinkProfile
from serf_trio.testing.sim import (
    SIM_CONFIG,
    NodeStatus,
    QueryHandler,
    SerfMemberRecord,
    Simulator,
    answer_with_name,
    serf_factory,
)

N = 50


def serf_cluster(
    n: int,
    seed: int,
    *,
    loss: float = 0.0,
    serf: SerfConfig | None = None,
    handler: QueryHandler | None = None,
) -> Simulator:
    """``n`` Serf nodes all joining through n0, run until every node has every node alive."""
    sim = Simulator(
        seed,
        serf=serf or SerfConfig(),
        link=LinkProfile(loss=loss),
        query_handler=handler,
    )
    sim.add_nodes(n)
    for i in range(1, n):
        sim.join(f"n{i}", ["n0"])
    t = sim.run_until_condition(Simulator.all_serf_alive_converged, 120.0, step=0.5)
    assert t is not None, "Serf cluster did not converge"
    return sim


def events_about(sim: Simulator, subject: str, kind: str) -> dict[str, SerfMemberRecord]:
    """Each observer's first ``kind`` event about ``subject``."""
    out: dict[str, SerfMemberRecord] = {}
    for r in sim.serf_member_events:
        if r.member == subject and r.kind == kind and r.node != subject:
            out.setdefault(r.node, r)
    return out


def survivors(sim: Simulator, *gone: str) -> list[str]:
    return [n for n, node in sim.nodes.items() if node.status.up and n not in gone]


@pytest.mark.slow
def test_user_events_exactly_once_at_5pct_loss_through_push_pull_replays() -> None:
    """20 user events from random nodes at random times, 5% datagram loss, then 5 minutes.

    Gossip spreads each event (retransmit limit x gossip rounds); a node that missed every copy
    gets it from a push/pull (the 512-slot event buffer travels in every push/pull state,
    SERF.md 7), and every later push/pull replays it again: the event buffer's (LTime, name,
    payload) dedupe must keep the delivery count at exactly one per node.
    """
    sim = serf_cluster(N, seed=5, loss=0.05)
    rng = random.Random("events/5")
    t0 = sim.now
    sent: list[tuple[float, str, str]] = []
    for i in range(20):
        at = t0 + rng.uniform(1.0, 60.0)
        origin = f"n{rng.randrange(N)}"
        sim.user_event(origin, f"ev{i}", f"payload {i}".encode(), at=at)
        sent.append((at, origin, f"ev{i}"))
    pp_before = sim.statistics().push_pull_rounds
    sim.run_until(t0 + 60.0 + 300.0)

    assert len(sim.up_nodes()) == N
    ltimes: dict[str, set[int]] = {}
    for r in sim.user_events:
        ltimes.setdefault(r.name, set()).add(r.ltime)
    assert sorted(ltimes) == sorted(name for _, _, name in sent)
    assert all(len(ts) == 1 for ts in ltimes.values()), ltimes  # one LTime per event
    counts = sim.user_event_counts()
    expected = {(n, name, next(iter(ltimes[name]))) for n in sim.nodes for name in ltimes}
    assert set(counts) == expected
    assert set(counts.values()) == {1}
    # Spread time per event: issue -> last node's delivery.
    last = {name: max(r.time for r in sim.user_events if r.name == name) for name in ltimes}
    spread = [last[name] - at for at, _, name in sent]
    issued = {name: at for at, _, name in sent}
    late = sum(1 for r in sim.user_events if r.time - issued[r.name] > 5.0)
    pushpulls = sim.statistics().push_pull_rounds - pp_before
    print(
        f"\n{len(sim.user_events)} deliveries ({N} nodes x {len(ltimes)} events, all once); "
        f"spread max {max(spread):.2f}s mean {sum(spread) / len(spread):.2f}s; "
        f"{late} deliveries > 5 s after issue (missed gossip); "
        f"{pushpulls} push/pull rounds after the first event; t={sim.now:.0f}s"
    )
    # 300 s at the 50-node push/pull period (60 s): every node replayed its buffer ~5 times.
    assert pushpulls >= 4 * N


def test_query_collects_a_response_from_every_node_before_the_deadline() -> None:
    """A query with the default timeout, gossip_interval x 16 x ceil(log10(50 + 1)) = 6.4 s
    on the LAN profile (serf DefaultQueryTimeout), reaches all 50 nodes; each answers with its
    name through ``respond`` and every answer arrives before the collector closes."""
    sim = serf_cluster(N, seed=7, handler=answer_with_name("whoami"))
    q = sim.query("n7", "whoami", b"?", request_ack=True)
    sim.run_for(30.0)
    timeout = default_query_timeout(SIM_CONFIG.gossip_interval, 16, N)
    assert timeout == pytest.approx(6.4)
    assert q.issued_at is not None and q.done_at is not None
    assert q.done_at - q.issued_at == pytest.approx(timeout)
    assert set(q.responses) == set(sim.nodes)
    assert all(payload == name.encode() for name, (_, payload) in q.responses.items())
    assert set(q.acks) == set(sim.nodes)
    assert q.duplicates == 0
    latest = max(t for t, _ in q.responses.values())
    assert latest < q.done_at
    delivered = Counter(d.node for d in sim.query_deliveries if d.name == "whoami")
    assert set(delivered.values()) == {1} and len(delivered) == N
    print(
        f"\nquery: {len(q.responses)} responses, {len(q.acks)} acks, last response "
        f"{latest - q.issued_at:.3f}s after issue, done at {q.done_at - q.issued_at:.2f}s"
    )


def test_tag_change_reaches_every_node_as_member_update() -> None:
    """``set_tags`` bumps the incarnation and re-announces the node; all 49 peers raise
    member-update with the new tags (and none with the old ones afterwards)."""
    sim = serf_cluster(N, seed=3)
    t0 = sim.now
    sim.set_tags("n13", {"role": "db", "dc": "b"})
    sim.run_for(10.0)
    got = events_about(sim, "n13", "member-update")
    assert set(got) == set(sim.nodes) - {"n13"}
    new = {"role": "db", "dc": "b"}
    updates = [r for r in sim.serf_member_events if r.member == "n13" and r.time >= t0]
    assert updates and all(r.kind == "member-update" and r.tags == new for r in updates)
    for n in sim.nodes:
        m = sim.serf_core(n).member("n13")
        assert m is not None and m.tags == new
    last = max(r.time for r in got.values()) - t0
    print(f"\ntags: member-update at all 49 peers within {last:.2f}s")


@pytest.mark.slow
def test_crash_is_failed_then_reaped_and_leave_is_left_then_reaped() -> None:
    """Crash: member-failed everywhere, then member-reap once the failed member is older than
    ``reconnect_timeout`` at a reaper run (every ``reap_interval``).  Graceful leave: member-
    leave everywhere (status left), member-reap after ``tombstone_timeout``."""
    serf = SerfConfig(reconnect_timeout=40.0, tombstone_timeout=60.0, reap_interval=5.0)
    sim = serf_cluster(N, seed=11, serf=serf)

    crash_at = sim.now
    sim.crash("n5")
    failed_at = sim.run_until_condition(
        lambda s: s.serf_seen_at("n5", "member-failed") is not None, crash_at + 60.0, step=0.5
    )
    assert failed_at is not None, "not failed everywhere"
    failed_everywhere = sim.serf_seen_at("n5", "member-failed")
    assert failed_everywhere is not None
    assert all(sim.serf_view(n)["n5"] == "failed" for n in survivors(sim, "n5"))
    reaped_at = sim.run_until_condition(
        lambda s: s.serf_seen_at("n5", "member-reap") is not None, sim.now + 120.0, step=0.5
    )
    assert reaped_at is not None, "failed member not reaped everywhere"
    failed = events_about(sim, "n5", "member-failed")
    reaped = events_about(sim, "n5", "member-reap")
    waits = [reaped[o].time - failed[o].time for o in survivors(sim, "n5")]
    assert min(waits) > serf.reconnect_timeout
    assert max(waits) <= serf.reconnect_timeout + serf.reap_interval + 1e-9
    assert all("n5" not in sim.serf_view(n) for n in survivors(sim, "n5"))
    print(
        f"\ncrash: failed everywhere {failed_everywhere - crash_at:.1f}s "
        f"after the crash; reaped {min(waits):.1f}-{max(waits):.1f}s after failed "
        f"(reconnect_timeout {serf.reconnect_timeout:.0f}s, "
        f"reap_interval {serf.reap_interval:.0f}s)"
    )

    leave_at = sim.now
    sim.leave("n9")
    left_at = sim.run_until_condition(
        lambda s: s.serf_seen_at("n9", "member-leave") is not None, leave_at + 30.0, step=0.5
    )
    assert left_at is not None, "leave not seen everywhere"
    # LeaveDone, then the agent's leave_propagate_delay, then the process stops.
    sim.run_for(serf.broadcast_timeout + serf.leave_propagate_delay)
    assert sim.nodes["n9"].status is NodeStatus.LEFT
    stopped = [t for t, n, s in sim.trace if n == "n9" and s == "stopped after leave"]
    done = [t for t, n, s in sim.trace if n == "n9" and s.startswith("leave_done")]
    assert stopped[0] - done[0] == pytest.approx(serf.leave_propagate_delay)
    assert all(sim.serf_view(n)["n9"] == "left" for n in survivors(sim, "n9", "n5"))
    assert not events_about(sim, "n9", "member-failed")  # a leave, never a failure
    sim.run_until_condition(
        lambda s: s.serf_seen_at("n9", "member-reap") is not None, sim.now + 120.0, step=0.5
    )
    left = events_about(sim, "n9", "member-leave")
    reaped = events_about(sim, "n9", "member-reap")
    assert set(reaped) == set(survivors(sim, "n9", "n5"))
    waits = [reaped[o].time - left[o].time for o in reaped]
    assert min(waits) > serf.tombstone_timeout
    assert max(waits) <= serf.tombstone_timeout + serf.reap_interval + 1e-9
    print(
        f"leave: left everywhere {max(r.time for r in left.values()) - leave_at:.2f}s after "
        f"the leave; reaped {min(waits):.1f}-{max(waits):.1f}s after left "
        f"(tombstone_timeout {serf.tombstone_timeout:.0f}s)"
    )


def serf_story(seed: int) -> Simulator:
    """A short Serf run touching every recorded effect: joins, events, a query, tags, a crash."""
    sim = Simulator(seed, serf=SerfConfig(), link=LinkProfile(loss=0.05))
    sim.query_handler = answer_with_name("q")
    sim.add_nodes(12)
    for i in range(1, 12):
        sim.join(f"n{i}", ["n0"])
    sim.run_for(5.0)
    for i in range(4):
        sim.user_event(f"n{i * 3}", f"e{i}", b"x", at=5.0 + i)
    sim.query("n2", "q", at=8.0)
    sim.set_tags("n4", {"v": "2"}, at=9.0)
    sim.at(10.0, lambda s: s.crash("n11"))
    sim.run_until(40.0)
    return sim


def test_same_seed_same_serf_trace() -> None:
    a, b, c = serf_story(21), serf_story(21), serf_story(22)
    assert a.trace == b.trace
    assert a.trace_digest() == b.trace_digest()
    assert a.trace_digest() != c.trace_digest()
    kinds = Counter(s.split()[0] for _, _, s in a.trace)
    # Every Serf record type made it into the trace.
    for kind in ("member-join", "member-update", "member-failed", "user", "query", "query_update"):
        assert kinds[kind] > 0, kind
    assert len(a.user_events) == 4 * 12


@pytest.mark.slow
def test_serf_trace_independent_of_hash_seed() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from test_serf_scenarios import serf_story
        print(serf_story(21).trace_digest())
        """
    )
    here = os.path.dirname(os.path.abspath(__file__))
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", code, here],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_unknown_effect_is_an_error_not_dropped() -> None:
    sim = Simulator(1, core_factory=serf_factory())
    sim.add_nodes(1)
    with pytest.raises(TypeError, match="unknown effect"):
        sim._apply(sim.nodes["n0"], [object()])


def test_serf_commands_need_a_serf_core() -> None:
    sim = Simulator(1)
    sim.add_nodes(1)
    with pytest.raises(TypeError, match="not run a Serf core"):
        sim.user_event("n0", "e")


def test_command_at_a_stopped_node_is_recorded_and_skipped() -> None:
    sim = Simulator(1, serf=SerfConfig())
    sim.add_nodes(2)
    sim.join("n1", ["n0"])
    sim.user_event("n1", "late", at=3.0)
    sim.at(2.0, lambda s: s.crash("n1"))
    sim.run_until(5.0)
    assert not sim.user_events
    assert any(s == "cmd user_event late skipped: crashed" for _, _, s in sim.trace)
