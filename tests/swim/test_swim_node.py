"""End-to-end behaviour of a few ``Memberlist`` cores driven by the in-test pump."""

from __future__ import annotations

from swim_harness import TEST_CONFIG, Pump
from swim_harness import cluster as _cluster

from serf_trio.swim.api import LeaveDone, MemberEventKind, NullDelegate, State
from serf_trio.swim.formulas import suspicion_timeout
from serf_trio.wire.packet import decode_packet


def test_join_three_nodes_converges() -> None:
    p = _cluster(3)
    assert p.logs["n2"].joins[0].joined == 1
    assert p.logs["n3"].joins[0].errors == ()
    p.run_until(5.0)
    for name in ("n1", "n2", "n3"):
        assert p.states(name) == {"n1": "ALIVE", "n2": "ALIVE", "n3": "ALIVE"}, name
    joined = {e.member.name for e in p.logs["n3"].events if e.kind is MemberEventKind.JOIN}
    assert joined == {"n1", "n2"}
    assert all(n.statistics().probes_failed == 0 for n in p.by_name.values())


def _times(p: Pump, observer: str, event: str, node: str) -> list[float]:
    return [
        t for (t, n) in p.notice_times[observer] if n.event == event and n.fields["node"] == node
    ]


def test_silent_node_is_suspected_then_declared_dead_within_bound() -> None:
    p = _cluster(3)
    p.run_until(3.0)
    p.down.add("n3")
    crash = p.now
    p.run_until(crash + 30.0)
    for obs in ("n1", "n2"):
        assert p.states(obs)["n3"] == "DEAD", obs
    # Someone suspected n3 and someone declared it dead; k = 0 for n = 3, so the timer is min.
    suspected = [t for o in ("n1", "n2") for t in _times(p, o, "suspected", "n3")]
    dead = [t for o in ("n1", "n2") for t in _times(p, o, "declared_dead", "n3")]
    assert suspected and dead
    cfg = TEST_CONFIG
    min_t = suspicion_timeout(cfg.suspicion_mult, 3, cfg.probe_interval)
    assert min_t == 4.0
    # detection: at most ~2 probe rounds of each observer, then exactly the suspicion timeout
    assert min(suspected) - crash <= 2 * cfg.probe_interval * 2 + 0.01
    assert abs(min(dead) - min(suspected) - min_t) < 1e-6
    leave_events = [e for e in p.logs["n1"].events if e.kind is MemberEventKind.LEAVE]
    assert [e.member.name for e in leave_events] == ["n3"]
    assert leave_events[0].member.state is State.DEAD


def test_suspected_live_node_refutes_with_incarnation_plus_one() -> None:
    p = _cluster(3)
    p.run_until(3.0)
    n1 = p.by_name["n1"]
    n3 = p.by_name["n3"]
    inc = n3.local.incarnation
    # n1 wrongly suspects n3 (e.g. after a lost ack): inject the suspicion into n1 directly.
    from serf_trio.wire.codec import encode_message
    from serf_trio.wire.messages import Suspect

    p.feed("n1", n1.handle_packet(p.now, n1.addr, encode_message(Suspect(inc, "n3", "n2"))))
    assert n1.member("n3").state is State.SUSPECT  # type: ignore[union-attr]
    p.run_until(p.now + 3.0)
    refuted = [n for n in p.logs["n3"].notices if n.event == "refuted"]
    assert refuted and refuted[0].fields["incarnation"] == inc + 1
    assert n3.local.incarnation == inc + 1
    for obs in ("n1", "n2"):
        m = p.by_name[obs].member("n3")
        assert m is not None and m.state is State.ALIVE and m.incarnation == inc + 1
    assert n3.health_score() >= 0


def test_graceful_leave_shows_left_on_others() -> None:
    p = _cluster(3)
    p.run_until(3.0)
    p.feed("n2", p.by_name["n2"].leave(p.now, 5.0))
    p.run_until(p.now + 5.0)
    assert p.logs["n2"].leaves == [LeaveDone(timed_out=False)]
    for obs in ("n1", "n3"):
        assert p.states(obs)["n2"] == "LEFT", obs
        ev = [e for e in p.logs[obs].events if e.kind is MemberEventKind.LEAVE]
        assert [e.member.name for e in ev] == ["n2"]
    # stale alive about the leaver never resurrects it locally
    assert p.by_name["n2"].local.state is State.LEFT


def test_leave_alone_finishes_at_once() -> None:
    solo = Pump().add("solo")
    effs = solo.leave(0.0, 5.0)
    assert [e for e in effs if isinstance(e, LeaveDone)] == [LeaveDone(timed_out=False)]
    assert solo.next_deadline() is None


def test_leave_times_out_when_the_broadcast_cannot_drain_in_time() -> None:
    # 2 nodes: the dead{self} broadcast must go out 4 times, one gossip peer per 0.2 s round
    p = _cluster(2)
    p.run_until(2.0)
    p.down.add("n1")
    p.feed("n2", p.by_name["n2"].leave(p.now, 0.3))
    p.run_until(p.now + 2.0)
    assert p.logs["n2"].leaves == [LeaveDone(timed_out=True)]


def test_meta_update_gives_update_event() -> None:
    p = Pump()
    d1 = NullDelegate(b"role=a")
    p.add("n1", delegate=d1)
    p.add("n2")
    p.join("n2", "n1")
    p.run_until(3.0)
    assert p.by_name["n2"].member("n1").meta == b"role=a"  # type: ignore[union-attr]
    d1.meta = b"role=b"
    p.feed("n1", p.by_name["n1"].update_meta(p.now))
    p.run_until(p.now + 3.0)
    m = p.by_name["n2"].member("n1")
    assert m is not None and m.meta == b"role=b" and m.incarnation == 2
    ups = [e for e in p.logs["n2"].events if e.kind is MemberEventKind.UPDATE]
    assert [e.member.name for e in ups] == ["n1"]


def _decoded_from(p: Pump, src: str, dst: str) -> list[object]:
    from serf_trio.wire.packet import decode_packet

    out: list[object] = []
    for name, pkt in p.sent:
        if name == src and pkt.addr == p.by_name[dst].addr:
            out.extend(decode_packet(pkt.data).messages)
    return out


def test_indirect_probe_saves_a_node_behind_a_one_way_cut() -> None:
    from dataclasses import replace

    p = Pump(3, replace(TEST_CONFIG, disable_tcp_pings=True))
    for n in ("n1", "n2", "n3", "n4"):
        p.add(n)
    for n in ("n2", "n3", "n4"):
        p.join(n, "n1")
    p.udp_cut |= {("n1", "n4"), ("n4", "n1")}
    p.run_until(20.0)
    assert all(p.states(o)["n4"] == "ALIVE" for o in ("n1", "n2", "n3"))
    assert not [n for n in p.logs["n1"].notices if n.event == "suspected"]
    from serf_trio.wire.messages import IndirectPing

    assert any(isinstance(m, IndirectPing) for m in _decoded_from(p, "n1", "n2"))
    assert p.by_name["n1"].statistics().probes_failed == 0


def test_indirect_probe_of_dead_node_returns_nacks_and_keeps_health() -> None:
    from dataclasses import replace

    from serf_trio.wire.messages import Nack

    p = Pump(4, replace(TEST_CONFIG, disable_tcp_pings=True))
    for n in ("n1", "n2", "n3", "n4"):
        p.add(n)
    for n in ("n2", "n3", "n4"):
        p.join(n, "n1")
    p.run_until(3.0)
    p.down.add("n4")
    p.run_until(15.0)
    nacks = [m for r in ("n2", "n3") for m in _decoded_from(p, r, "n1") if isinstance(m, Nack)]
    assert nacks, "relays must nack when the target stays silent"
    # every failed probe had all its nacks answered: the prober's health is not blamed
    assert p.by_name["n1"].health_score() == 0
    assert p.states("n1")["n4"] == "DEAD"


def test_missing_nacks_raise_the_local_health_score() -> None:
    from dataclasses import replace

    p = Pump(5, replace(TEST_CONFIG, disable_tcp_pings=True))
    for n in ("n1", "n2", "n3"):
        p.add(n)
    for n in ("n2", "n3"):
        p.join(n, "n1")
    p.run_until(3.0)
    # n1 is the sick one: it hears nothing at all any more
    p.udp_cut |= {(o, "n1") for o in ("n2", "n3")}
    p.run_until(6.0)
    assert p.by_name["n1"].health_score() >= 1


def test_tcp_fallback_keeps_udp_blackholed_node_alive() -> None:
    p = _cluster(4, seed=6)
    p.run_until(3.0)
    p.udp_blackhole.add("n4")
    p.run_until(25.0)
    for o in ("n1", "n2", "n3"):
        assert p.states(o)["n4"] == "ALIVE", o
        assert not [n for n in p.logs[o].notices if n.event == "suspected"], o
    tcp_only = [
        n for o in ("n1", "n2", "n3") for n in p.logs[o].notices if n.event == "probe_tcp_only"
    ]
    assert tcp_only and all(n.fields["node"] == "n4" for n in tcp_only)


def test_bad_bytes_become_violations_never_exceptions() -> None:
    import random

    p = _cluster(2)
    n1 = p.by_name["n1"]
    src = p.by_name["n2"].addr
    rng = random.Random(7)
    bad = [
        b"\x00",
        b"\x07\x05\x00",
        b"\x0c\x00\x00\x00\x00\x01",
        b"\x02\xc1",
        b"\xff\x01",
        b"\x04\x81\xa4Node\x01",
        b"\x09\x80",
    ]
    bad += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(500)]
    total = 0
    for data in bad:
        effs = n1.handle_packet(p.now, src, data)
        total += sum(1 for e in effs if type(e).__name__ == "Violation")
        reply, effs = n1.handle_stream(p.now, data)
        assert reply is None or isinstance(reply, bytes)
    assert total >= 7
    assert n1.statistics().violations >= total
    reply, effs = n1.handle_stream(p.now, b"\x06\x83")
    assert reply is None and any(type(e).__name__ == "Violation" for e in effs)


def test_version_incompatibility_rejects_push_pull() -> None:
    p = Pump()
    p.add("n1", vsn=bytes([3, 5, 3, 2, 5, 5]))
    p.add("n2")
    p.join("n2", "n1")
    done = p.logs["n2"].joins[0]
    assert done.joined == 0
    assert done.errors and "Node 'n2' protocol version (2) is incompatible: [3 5]" in done.errors[0]
    assert "n2" not in p.states("n1")
    assert any("incompatible" in v.reason for v in p.logs["n1"].violations)


def test_cluster_works_with_compression_and_lan_defaults() -> None:
    from serf_trio.swim.config import LAN
    from serf_trio.wire.messages import MessageType

    p = Pump(9, LAN)
    for n in ("n1", "n2", "n3"):
        p.add(n, delegate=NullDelegate(b"tags" * 30))
    for n in ("n2", "n3"):
        p.join(n, "n1")
    p.run_until(10.0)
    for obs in ("n1", "n2", "n3"):
        assert set(p.states(obs).values()) == {"ALIVE"}
    first = {pkt.data[0] for _, pkt in p.sent}
    # gossip to pmax>=5 peers carries a CRC; some packets compress
    assert MessageType.HAS_CRC in first
    assert not any(p.logs[o].violations for o in p.logs)


def _first(p: Pump, event: str, node: str) -> float:
    return min(t for o in p.by_name for t in _times(p, o, event, node))


def test_confirmations_shrink_the_suspicion_timer() -> None:
    p = _cluster(6, seed=8)
    p.run_until(5.0)
    p.down.add("n6")
    p.run_until(30.0)
    cfg = TEST_CONFIG
    min_t = suspicion_timeout(cfg.suspicion_mult, 6, cfg.probe_interval)
    max_t = cfg.suspicion_max_timeout_mult * min_t
    took = _first(p, "declared_dead", "n6") - _first(p, "suspected", "n6")
    assert min_t - 1e-6 <= took < max_t - 5.0  # k = 2 confirmations arrived and cut the wait
    assert all(p.states(o)["n6"] == "DEAD" for o in ("n1", "n2", "n3", "n4", "n5"))
    p.run_until(120.0)  # forgotten after gossip_to_the_dead_time, at a probe-list wrap
    assert all("n6" not in p.states(o) for o in ("n1", "n2", "n3", "n4", "n5"))


def test_plain_swim_uses_min_timeout_and_ignores_health() -> None:
    from dataclasses import replace

    p = Pump(8, replace(TEST_CONFIG, lifeguard=False))
    for i in range(1, 7):
        p.add(f"n{i}")
    for i in range(2, 7):
        p.join(f"n{i}", "n1")
    p.run_until(5.0)
    p.down.add("n6")
    p.run_until(40.0)
    min_t = suspicion_timeout(TEST_CONFIG.suspicion_mult, 6, TEST_CONFIG.probe_interval)
    took = _first(p, "declared_dead", "n6") - _first(p, "suspected", "n6")
    assert abs(took - min_t) < 1e-6
    assert all(p.by_name[f"n{i}"].health_score() == 0 for i in range(1, 6))
    from serf_trio.wire.messages import IndirectPing

    reqs = [
        m
        for _, pkt in p.sent
        for m in decode_packet(pkt.data).messages
        if isinstance(m, IndirectPing)
    ]
    assert reqs and not any(r.nack for r in reqs)
