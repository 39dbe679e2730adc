"""Behaviour of several SerfNodes driven by the in-test pump (virtual time)."""

from __future__ import annotations

import dataclasses

import pytest

from serf_trio.serf.node import SerfError
from serf_trio.serf.query import QueryParam

from .serf_harness import SERF, Pump


def test_join_converges_with_tags_and_join_intents() -> None:
    p = Pump(seed=3)
    p.cluster("a", "b", "c")
    for n in "abc":
        assert p.statuses(n) == {"a": "alive", "b": "alive", "c": "alive"}
        assert p.by_name[n].member("b").tags == {"role": "b"}  # type: ignore[union-attr]
    # b and c broadcast join intents after joining: everyone knows a status time for them.
    assert p.by_name["a"].member("c").status_ltime > 0  # type: ignore[union-attr]
    assert "member-join" in p.logs["a"].member_kinds("c")


def test_user_event_delivered_exactly_once_per_node() -> None:
    p = Pump(seed=5)
    p.cluster("a", "b", "c", "d")
    p.feed("a", p.by_name["a"].user_event(p.now, "deploy", b"v1", True))
    p.feed("c", p.by_name["c"].user_event(p.now, "deploy", b"v2", False))
    # Long enough for every gossip retransmit and several push/pull replays.
    p.run_for(120.0)
    for n in "abcd":
        got = sorted((e.name, e.payload) for e in p.logs[n].users)
        assert got == [("deploy", b"v1"), ("deploy", b"v2")], n
    # Same LTime, different payload: both delivered (dedupe is by name+payload per LTime).
    assert p.logs["a"].users[0].coalesce is True


def test_push_pull_replay_is_deduped_and_join_does_not_replay() -> None:
    p = Pump(seed=7)
    p.cluster("a", "b")
    p.feed("a", p.by_name["a"].user_event(p.now, "old", b"", False))
    p.run_for(5.0)
    assert [e.name for e in p.logs["b"].users] == ["old"]
    p.add("late")
    p.join("late", "a")
    p.run_for(60.0)
    assert p.logs["late"].users == []  # join without replay: the old event stays old
    p.add("replayer")
    p.join("replayer", "a", replay=True)
    p.run_for(5.0)
    assert [e.name for e in p.logs["replayer"].users] == ["old"]
    assert [e.name for e in p.logs["b"].users] == ["old"]


def test_user_event_size_limits() -> None:
    p = Pump()
    p.add("a")
    node = p.by_name["a"]
    with pytest.raises(SerfError, match="before encoding"):
        node.user_event(0.0, "x", b"y" * 512, False)
    with pytest.raises(SerfError, match="after encoding"):
        node.user_event(0.0, "x", b"y" * 500, False)
    assert node.event_clock.time() == 1  # nothing was sent


def test_tag_change_is_member_update_everywhere() -> None:
    p = Pump(seed=9)
    p.cluster("a", "b", "c")
    p.feed("b", p.by_name["b"].set_tags(p.now, {"role": "b", "version": "2"}))
    p.run_for(5.0)
    for n in "abc":
        assert "member-update" in p.logs[n].member_kinds("b"), n
        assert p.by_name[n].member("b").tags["version"] == "2"  # type: ignore[union-attr]


def test_query_filters_acks_and_responses() -> None:
    p = Pump(seed=11)
    p.cluster("a", "b", "c", tags={"a": {"role": "lb"}, "b": {"role": "web"}, "c": {"role": "db"}})
    for n in "abc":
        p.auto_respond[n] = f"load-of-{n}".encode()
    qid, effs = p.by_name["a"].query(
        p.now, QueryParam("load", b"x", filter_tags={"role": "^w"}, request_ack=True, timeout=2.0)
    )
    p.feed("a", effs)
    p.run_for(3.0)
    ups = [u for u in p.logs["a"].updates if u.query_id == qid]
    assert [(u.record_type, u.from_) for u in ups if u.record_type == "ack"] == [("ack", "b")]
    assert [(u.from_, u.payload) for u in ups if u.record_type == "response"] == [
        ("b", b"load-of-b")
    ]
    assert ups[-1].record_type == "done"
    assert [q.name for q in p.logs["c"].queries] == []  # filtered out, but still gossiped
    # node filter, originator included: it answers itself over UDP.
    qid2, effs = p.by_name["a"].query(p.now, QueryParam("load", filter_nodes=("a", "c")))
    p.feed("a", effs)
    p.run_for(4.0)
    got = sorted(u.from_ for u in p.logs["a"].updates if u.query_id == qid2 and u.from_)
    assert got == ["a", "c"]


def test_query_relay_factor_duplicates_are_deduped() -> None:
    p = Pump(seed=13)
    p.cluster("a", "b", "c", "d")
    for n in "abcd":
        p.auto_respond[n] = b"ok"
    qid, effs = p.by_name["a"].query(p.now, QueryParam("q", relay_factor=2, request_ack=True))
    p.feed("a", effs)
    p.run_for(5.0)
    ups = [u for u in p.logs["a"].updates if u.query_id == qid]
    acks = [u.from_ for u in ups if u.record_type == "ack"]
    resps = [u.from_ for u in ups if u.record_type == "response"]
    assert sorted(acks) == ["a", "b", "c", "d"] and sorted(resps) == ["a", "b", "c", "d"]
    # Each ack/response also travelled through two relays, yet each sender counts once.
    assert p.by_name["a"].serf_statistics().pending_queries == 0


def test_respond_rules() -> None:
    p = Pump(seed=2)
    p.cluster("a", "b")
    _, effs = p.by_name["a"].query(p.now, QueryParam("q", timeout=1.0))
    p.feed("a", effs)
    p.run_for(0.5)
    q = p.logs["b"].queries[0]
    node = p.by_name["b"]
    with pytest.raises(SerfError, match="exceeds limit of 1024"):
        node.respond(p.now, q.token, b"x" * 1024)
    p.feed("b", node.respond(p.now, q.token, b"fine"))
    with pytest.raises(SerfError, match="already sent"):
        node.respond(p.now, q.token, b"again")
    p.run_for(2.0)
    with pytest.raises(SerfError, match="past the deadline"):
        node.respond(p.now, p.logs["a"].queries[0].token, b"late")


def test_failed_member_reaped_after_reconnect_timeout() -> None:
    serf = dataclasses.replace(SERF, reconnect_timeout=120.0, tombstone_timeout=60.0)
    p = Pump(seed=17, serf=serf)
    p.cluster("a", "b", "c")
    p.stop("c")
    p.run_for(30.0)
    assert p.statuses("a")["c"] == "failed"
    assert "member-failed" in p.logs["a"].member_kinds("c")
    p.run_for(60.0)
    assert "c" in p.statuses("a")  # kept (and retried) until reconnect_timeout
    assert any(n.event == "reconnect" for n in p.logs["a"].notices + p.logs["b"].notices)
    p.run_for(60.0)
    assert "c" not in p.statuses("a") and "c" not in p.statuses("b")
    assert p.logs["a"].member_kinds("c")[-1] == "member-reap"


def test_left_member_reaped_after_tombstone_and_force_leave() -> None:
    serf = dataclasses.replace(SERF, tombstone_timeout=40.0)
    p = Pump(seed=19, serf=serf)
    p.cluster("a", "b", "c", "d")
    p.feed("d", p.by_name["d"].leave(p.now, 5.0))
    p.run_for(10.0)
    p.stop("d")
    assert p.statuses("a")["d"] == "left"
    assert p.logs["a"].member_kinds("d")[-1] == "member-leave"
    p.stop("c")
    p.run_for(20.0)
    assert p.statuses("a")["c"] == "failed"
    p.feed("a", p.by_name["a"].force_leave(p.now, "c"))
    p.run_for(2.0)
    assert p.statuses("a")["c"] == "left" and p.statuses("b")["c"] == "left"
    p.run_for(60.0)
    assert "d" not in p.statuses("a") and "c" not in p.statuses("b")


def test_name_conflict_minority_shuts_down() -> None:
    p = Pump(seed=23)
    p.cluster("n1", "n2", "n3")
    impostor = p.add("n3", host="127.0.0.15", port=7951)
    assert p.by_name["n3"] is impostor
    p.join("n3", "n1")
    p.run_for(10.0)
    res = [n for n in p.logs["n3"].notices if n.event == "name_conflict_resolution"]
    assert res and res[0].fields["won"] is False
    assert res[0].fields["responses"] == 2 and res[0].fields["matching"] == 0
    assert impostor.state == "shutdown"
    real = next(n for a, n in p.nodes.items() if n.name == "n3" and n is not impostor)
    assert real.state == "alive"
    assert p.by_name["n1"].member("n3").addr == real.addr  # type: ignore[union-attr]


def test_graceful_leave_shows_left_everywhere() -> None:
    p = Pump(seed=29)
    p.cluster("a", "b", "c")
    p.feed("c", p.by_name["c"].leave(p.now, 5.0))
    p.run_for(8.0)
    assert p.logs["c"].leaves and p.by_name["c"].state == "left"
    assert p.statuses("a")["c"] == "left" and p.statuses("b")["c"] == "left"


@pytest.mark.parametrize("seed", [31, 37, 41])
def test_leave_and_restart_same_name_is_alive_everywhere(seed: int) -> None:
    p = Pump(seed=seed)
    p.cluster("a", "b", "c", "d")
    addr = p.by_name["d"].addr
    # Push the member clock up so the leave intent's LTime is well above a fresh node's.
    for _ in range(5):
        p.feed("b", p.by_name["b"].force_leave(p.now, "nobody"))
    p.run_for(2.0)
    p.feed("d", p.by_name["d"].leave(p.now, 5.0))
    p.run_for(1.0)
    while not p.logs["d"].leaves:
        p.run_for(0.2)
    p.stop("d")
    p.run_for(1.0)
    p.add("d", host=addr.host, port=addr.port)  # same name, same address, fresh state
    p.join("d", "a")
    p.run_for(5.0)
    for n in p.up():
        assert p.statuses(n)["d"] == "alive", (n, p.statuses(n))
    p.run_for(60.0)
    for n in p.up():
        assert p.statuses(n)["d"] == "alive", (n, p.statuses(n))


def test_stale_leave_intent_after_restart_does_not_stick() -> None:
    """A leave intent that reaches a node only after the member came back must not keep it
    'leaving': the member's higher memberlist incarnation (or the leaving timeout) clears it."""
    p = Pump(seed=43)
    p.cluster("a", "b", "c")
    b = p.by_name["b"]
    from serf_trio.serf.messages import Leave, encode, user_packet

    stale = Leave(b.clock.time() + 50, "c")
    p.feed("b", b.handle_packet(p.now, p.by_name["a"].addr, user_packet(encode(stale))))
    assert p.statuses("b")["c"] == "leaving"
    p.run_for(20.0)
    # c hears the intent about itself and refutes with a newer join intent (Serf's rule), or
    # b's leaving check clears it; either way c ends alive at b.
    assert p.statuses("b")["c"] == "alive"
    assert p.by_name["b"].member("c").status_ltime > stale.ltime  # type: ignore[union-attr]


def test_has_broadcasts_is_true_while_anything_is_queued_then_false() -> None:
    """The driver skips idle gossip rounds on ``has_broadcasts``: it must see Serf's queues
    (a user event) as well as memberlist's, and turn false once every copy has gone out."""
    p = Pump(seed=11)
    p.cluster("a", "b", "c")
    p.run_for(60.0)  # the join's alive and intent broadcasts have all been sent
    a = p.by_name["a"]
    assert not a.has_broadcasts()
    p.feed("a", a.user_event(p.now, "deploy", b"v1", False))
    assert a.has_broadcasts()  # only Serf's event queue holds something
    p.run_for(30.0)
    assert not a.has_broadcasts()
    assert all(("deploy", b"v1") in [(e.name, e.payload) for e in p.logs[n].users] for n in "bc")
