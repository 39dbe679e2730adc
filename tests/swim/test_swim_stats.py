"""The memberlist core's counters (``SwimStats``) move when their event happens."""

from __future__ import annotations

from dataclasses import replace

from swim_harness import TEST_CONFIG, Pump
from swim_harness import cluster as _cluster

from serf_trio.swim.tally import MAX_NAMES, OTHER, tally
from serf_trio.wire.codec import encode_message
from serf_trio.wire.messages import DEFAULT_VSN, Alive, Ping, Suspect
from serf_trio.wire.packet import compress_message, make_compound


def test_new_counters_start_at_zero() -> None:
    s = Pump().add("solo").statistics()
    assert (s.probes_indirect, s.nacks_received, s.degraded_probes) == (0, 0, 0)
    assert (s.suspicions_raised, s.suspicions_confirmed, s.suspicions_refuted) == (0, 0, 0)
    assert (s.refutations, s.push_pulls) == (0, 0)
    assert s.messages_in == {} and s.messages_out == {}


def test_join_counts_push_pulls_on_both_sides() -> None:
    p = _cluster(3)
    assert p.by_name["n2"].statistics().push_pulls >= 1  # ours (the join)
    assert p.by_name["n1"].statistics().push_pulls >= 2  # answered twice
    assert p.by_name["n2"].statistics().messages_out["push_pull"] >= 1
    assert p.by_name["n1"].statistics().messages_in["push_pull"] >= 2


def test_probe_traffic_is_counted_by_message_type() -> None:
    p = _cluster(3)
    p.run_until(5.0)
    s = p.by_name["n1"].statistics()
    for kind in ("ping", "ack"):
        assert s.messages_in.get(kind, 0) > 0, kind
        assert s.messages_out.get(kind, 0) > 0, kind
    assert s.messages_out.get("alive", 0) > 0  # gossip of the members' alive messages
    assert s.suspicions_raised == 0 and s.probes_indirect == 0


def test_dead_node_counts_indirect_probes_nacks_suspicion_and_confirmation() -> None:
    p = _cluster(4, seed=4, config=replace(TEST_CONFIG, disable_tcp_pings=True))
    p.run_until(3.0)
    p.down.add("n4")
    p.run_until(15.0)
    assert p.states("n1")["n4"] == "DEAD"
    stats = [p.by_name[n].statistics() for n in ("n1", "n2", "n3")]
    for s in stats:
        assert s.suspicions_raised >= 1  # n4 became suspect in every table
        assert s.suspicions_confirmed >= 1  # ... and was declared dead
        assert s.suspicions_refuted == 0
    assert sum(s.probes_indirect for s in stats) >= 1
    assert sum(s.nacks_received for s in stats) >= 1
    assert sum(s.messages_out.get("indirect_ping", 0) for s in stats) >= 1
    assert sum(s.messages_out.get("nack", 0) for s in stats) >= 1
    # degraded_probes <= failed probes (a failed probe with fewer nacks than expected)
    assert all(s.degraded_probes <= s.probes_failed for s in stats)


def test_missing_nacks_count_degraded_probes() -> None:
    p = _cluster(3, seed=5, config=replace(TEST_CONFIG, disable_tcp_pings=True))
    p.run_until(3.0)
    p.udp_cut |= {(o, "n1") for o in ("n2", "n3")}  # n1 hears nothing any more
    p.run_until(6.0)
    s = p.by_name["n1"].statistics()
    assert s.probes_failed >= 1
    assert s.degraded_probes >= 1


def test_refuted_suspicion_counts_on_both_sides() -> None:
    p = _cluster(3)
    p.run_until(3.0)
    n1, n3 = p.by_name["n1"], p.by_name["n3"]
    inc = n3.local.incarnation
    p.feed("n1", n1.handle_packet(p.now, n1.addr, encode_message(Suspect(inc, "n3", "n2"))))
    assert n1.statistics().suspicions_raised == 1
    p.run_until(p.now + 3.0)
    assert n3.statistics().refutations == 1
    s1 = n1.statistics()
    assert s1.suspicions_refuted == 1 and s1.suspicions_confirmed == 0
    assert s1.messages_in.get("suspect", 0) >= 1


def test_compound_and_compress_count_the_wrapper_and_each_inner_message() -> None:
    p = _cluster(2)
    n1 = p.by_name["n1"]
    src = p.by_name["n2"].addr
    before = dict(n1.statistics().messages_in)
    ping = encode_message(Ping(99, "n1", b"", 0, "n2"))
    alive = encode_message(Alive(1, "zz", bytes([127, 0, 0, 9]), 7946, None, DEFAULT_VSN))
    n1.handle_packet(p.now, src, compress_message(make_compound([ping, alive])))
    after = n1.statistics().messages_in

    def delta(k: str) -> int:
        return after.get(k, 0) - before.get(k, 0)

    assert (delta("compress"), delta("compound"), delta("ping"), delta("alive")) == (1, 1, 1, 1)


def test_compression_shows_in_messages_out() -> None:
    p = _cluster(3, config=replace(TEST_CONFIG, enable_compression=True))
    p.run_until(5.0)
    outs = [p.by_name[n].statistics().messages_out for n in ("n1", "n2", "n3")]
    assert any(o.get("compress", 0) > 0 or o.get("compound", 0) > 0 for o in outs)


def test_tally_is_bounded() -> None:
    d: dict[str, int] = {}
    for i in range(MAX_NAMES + 50):
        tally(d, f"name{i}")
    tally(d, "name0", 2)
    assert len(d) == MAX_NAMES + 1
    assert d[OTHER] == 50 and d["name0"] == 3


def test_stats_flatten_dicts_into_dotted_names() -> None:
    from serf_trio.runtime.stats import StatsRegistry

    p = _cluster(2)
    reg = StatsRegistry()
    reg.register("memberlist", p.by_name["n1"].statistics)
    flat = reg.snapshot()["memberlist"]
    assert flat["messages_in.push_pull"] >= 1
    assert "push_pulls" in flat and "degraded_probes" in flat
