"""The Serf layer's counters (``SerfStats``) move when their event happens."""

from __future__ import annotations

import dataclasses

from serf_trio.serf.query import QueryParam
from serf_trio.swim.tally import MAX_NAMES, OTHER

from .serf_harness import SERF, Pump


def test_join_counts_member_joins_and_serf_messages() -> None:
    p = Pump(seed=3)
    p.cluster("a", "b", "c")
    s = p.by_name["a"].serf_statistics()
    assert s.member_events.get("member-join", 0) == 3  # ourselves (as Serf), b and c
    assert s.messages_sent > 0 and s.messages_received > 0  # join intents
    assert s.flaps == 0 and s.user_events_sent == 0 and s.queries_sent == 0


def test_user_events_sent_received_and_by_name() -> None:
    p = Pump(seed=5)
    p.cluster("a", "b", "c")
    p.feed("a", p.by_name["a"].user_event(p.now, "deploy", b"v1", False))
    p.feed("a", p.by_name["a"].user_event(p.now, "deploy", b"v2", False))
    p.feed("b", p.by_name["b"].user_event(p.now, "restart", b"", False))
    p.run_for(60.0)  # retransmits and push/pull replays: delivered once each all the same
    sa, sc = p.by_name["a"].serf_statistics(), p.by_name["c"].serf_statistics()
    assert sa.user_events_sent == 2
    assert p.by_name["b"].serf_statistics().user_events_sent == 1
    assert sc.user_events_received == 3
    assert sc.user_events_by_name == {"deploy": 2, "restart": 1}
    assert sa.user_events_received == 3  # the sender delivers its own event too (Serf does)
    assert sc.user_events_too_old == 0  # the replays were duplicates, not drops


def test_an_event_flood_counts_queue_drops_at_the_sender_and_old_events_at_receivers() -> None:
    """Every event a receiver did not deliver is accounted for: dropped from the sender's full
    broadcast queue before it was sent enough, dropped on arrival as older than the receiver's
    event window, or never arrived (which the sender's queue drops explain)."""
    serf = dataclasses.replace(SERF, event_buffer=8, max_queue_depth=16)
    p = Pump(seed=23, serf=serf)
    p.cluster("a", "b", "c")
    for i in range(100):
        p.feed("a", p.by_name["a"].user_event(p.now, f"e{i}", b"", False))
    p.run_for(60.0)
    sa, sb = p.by_name["a"].serf_statistics(), p.by_name["b"].serf_statistics()
    assert sa.user_events_sent == 100
    assert sa.event_queue_dropped >= 100 - 16  # the queue holds 16: the rest were pushed out
    assert sb.user_events_too_old > 0
    assert 0 < sb.user_events_received + sb.user_events_too_old <= 100
    assert sb.event_queue_dropped == 0


def test_queries_sent_received_acks_and_responses() -> None:
    p = Pump(seed=13)
    p.cluster("a", "b", "c")
    for n in "abc":
        p.auto_respond[n] = b"ok"
    _, effs = p.by_name["a"].query(p.now, QueryParam("load", request_ack=True))
    p.feed("a", effs)
    p.run_for(5.0)
    sa = p.by_name["a"].serf_statistics()
    assert sa.queries_sent == 1
    assert sa.query_acks == 3 and sa.query_responses == 3
    for n in "bc":
        s = p.by_name[n].serf_statistics()
        assert s.queries_received == 1 and s.queries_by_name == {"load": 1}
        assert s.query_acks == 0 and s.query_responses == 0


def test_failure_flap_and_reap_are_counted() -> None:
    serf = dataclasses.replace(SERF, flap_timeout=60.0)
    p = Pump(seed=17, serf=serf)
    p.cluster("a", "b", "c")
    p.down.add("c")
    p.run_for(30.0)
    assert p.statuses("a")["c"] == "failed"
    s = p.by_name["a"].serf_statistics()
    assert s.member_events.get("member-failed") == 1
    p.down.discard("c")
    p.run_for(30.0)
    assert p.statuses("a")["c"] == "alive"
    s = p.by_name["a"].serf_statistics()
    assert s.member_events.get("member-join") == 4  # ourselves, b, c, and c again
    assert s.flaps == 1


def test_member_reap_is_counted() -> None:
    serf = dataclasses.replace(SERF, reconnect_timeout=120.0, tombstone_timeout=60.0)
    p = Pump(seed=17, serf=serf)
    p.cluster("a", "b", "c")
    p.stop("c")
    p.run_for(150.0)
    assert "c" not in p.statuses("a")
    assert p.by_name["a"].serf_statistics().member_events.get("member-reap") == 1


def test_names_from_the_network_are_bounded() -> None:
    p = Pump(seed=5)
    p.cluster("a", "b")
    a = p.by_name["a"]
    for i in range(MAX_NAMES + 10):
        p.feed("a", a.user_event(p.now, f"e{i}", b"", False))
    p.run_for(30.0)
    by_name = p.by_name["b"].serf_statistics().user_events_by_name
    assert len(by_name) <= MAX_NAMES + 1
    assert sum(by_name.values()) == p.by_name["b"].serf_statistics().user_events_received
    assert by_name.get(OTHER, 0) > 0


def test_serf_stats_flatten_with_dotted_names() -> None:
    from serf_trio.runtime.stats import flatten

    p = Pump(seed=3)
    p.cluster("a", "b")
    flat = flatten(p.by_name["a"].serf_statistics())
    assert flat["member_events.member-join"] == 2  # a itself and b
