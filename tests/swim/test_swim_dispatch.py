"""Single-core dispatch rules: ping/ack addressing, relays, streams, and mutation fuzzing."""

from __future__ import annotations

import random

from swim_harness import TEST_CONFIG, Pump

from serf_trio.swim.api import (
    Address,
    Effect,
    JoinDone,
    Notice,
    NullDelegate,
    OpenStream,
    SendPacket,
    Violation,
)
from serf_trio.swim.node import Memberlist
from serf_trio.wire.codec import encode_message
from serf_trio.wire.messages import DEFAULT_VSN, Ack, Alive, Err, IndirectPing, Nack, Ping, UserMsg
from serf_trio.wire.packet import decode_packet
from serf_trio.wire.stream import decode_stream_message, encode_stream_message

ME = Address("127.0.0.1", 7946)
PEER = Address("127.0.0.2", 7946)


class Recorder(NullDelegate):
    def __init__(self) -> None:
        super().__init__(b"")
        self.msgs: list[bytes] = []

    def notify_msg(self, now: float, payload: bytes) -> None:
        self.msgs.append(payload)

    def ack_payload(self) -> bytes:
        return b"coord"


def _core(delegate: NullDelegate | None = None) -> Memberlist:
    return Memberlist(TEST_CONFIG, "me", ME, rng=random.Random(1), now=0.0, delegate=delegate)


def _sent(effs: list[Effect]) -> list[SendPacket]:
    return [e for e in effs if isinstance(e, SendPacket)]


def test_ping_for_us_is_acked_to_source_fields_with_payload() -> None:
    core = _core(Recorder())
    ping = Ping(7, "me", Address("127.0.0.9", 1).packed(), 1234, "other")
    (pkt,) = _sent(core.handle_packet(1.0, PEER, encode_message(ping)))
    assert pkt.addr == Address("127.0.0.9", 1234)
    msgs = decode_packet(pkt.data).messages
    assert msgs[0] == Ack(7, b"coord")


def test_ping_without_source_is_acked_to_packet_source_and_foreign_ping_ignored() -> None:
    core = _core()
    (pkt,) = _sent(core.handle_packet(1.0, PEER, encode_message(Ping(3, ""))))
    assert pkt.addr == PEER and decode_packet(pkt.data).messages[0] == Ack(3, None)
    assert _sent(core.handle_packet(1.0, PEER, encode_message(Ping(4, "someone-else")))) == []


def test_relay_forwards_ack_with_requester_seq() -> None:
    core = _core()
    target = Address("127.0.0.3", 0)
    req = IndirectPing(99, target.packed(), 0, "t", True, PEER.packed(), PEER.port, "peer")
    (ping_pkt,) = _sent(core.handle_packet(1.0, PEER, encode_message(req)))
    assert ping_pkt.addr == Address("127.0.0.3", ME.port)  # port 0 -> our bind port
    ping = decode_packet(ping_pkt.data).messages[0]
    assert isinstance(ping, Ping) and ping.node == "t" and ping.source_node == "me"
    (fwd,) = _sent(core.handle_packet(1.2, target, encode_message(Ack(ping.seq_no, b"x"))))
    assert fwd.addr == PEER and decode_packet(fwd.data).messages[0] == Ack(99, None)
    assert core.tick(5.0) == []  # no nack after a success


def test_relay_nacks_after_probe_timeout() -> None:
    core = _core()
    req = IndirectPing(5, Address("127.0.0.3", 1).packed(), 1, "t", True)
    core.handle_packet(1.0, PEER, encode_message(req))
    assert core.next_deadline() == 1.0 + TEST_CONFIG.probe_timeout
    assert core.tick(1.2) == []
    (nack,) = _sent(core.tick(1.0 + TEST_CONFIG.probe_timeout))
    assert nack.addr == PEER and decode_packet(nack.data).messages[0] == Nack(5)


def test_streams_tcp_ping_and_user_message() -> None:
    rec = Recorder()
    core = _core(rec)
    reply, _ = core.handle_stream(1.0, encode_stream_message(Ping(11, "me"), compress=False))
    assert reply is not None and decode_stream_message(reply) == Ack(11, None)
    reply, _ = core.handle_stream(1.0, encode_stream_message(Ping(12, "nope"), compress=False))
    assert reply is None
    reply, _ = core.handle_stream(1.0, encode_stream_message(UserMsg(b"hi"), compress=True))
    assert reply is None and rec.msgs == [b"hi"]
    core.handle_packet(1.0, PEER, encode_message(UserMsg(b"udp")))
    assert rec.msgs == [b"hi", b"udp"]


def test_encrypted_stream_gets_err_reply() -> None:
    core = _core()
    reply, effs = core.handle_stream(1.0, b"\x0a\x00\x00\x00\x10" + bytes(16))
    assert reply is not None and "encrypted" in decode_stream_message(reply).error  # type: ignore[union-attr]
    assert any(isinstance(e, Violation) for e in effs)


def test_bad_compress_wrapper_gets_err_reply_but_a_bad_body_does_not() -> None:
    """memberlist (net.go readStream) answers first-stage failures, including a compress wrapper
    that is not valid msgpack, with an err message; a malformed body is only logged."""
    core = _core()
    # 0xc1 is the one byte msgpack never uses: the wrapper is malformed, not incomplete.
    reply, effs = core.handle_stream(1.0, b"\x09\xc1")
    assert reply is not None
    assert isinstance(decode_stream_message(reply), Err)
    assert any(isinstance(e, Violation) for e in effs)
    # A well-framed ping whose body has a string where SeqNo belongs: no reply.
    body = encode_message(Ping(1, "me"))[1:].replace(b"SeqNo\x01", b"SeqNo\xa1x")
    reply, effs = core.handle_stream(1.0, b"\x00" + body)
    assert reply is None
    assert any(isinstance(e, Violation) for e in effs)


def test_name_conflict_is_noticed_and_ignored() -> None:
    core = _core()
    a = Alive(1, "x", PEER.packed(), PEER.port, None, DEFAULT_VSN)
    core.handle_packet(1.0, PEER, encode_message(a))
    b = Alive(5, "x", Address("127.0.0.5", 1).packed(), 1, None, DEFAULT_VSN)
    effs = core.handle_packet(2.0, PEER, encode_message(b))
    assert [type(e).__name__ for e in effs] == ["Notice"]
    assert core.member("x").addr == PEER and core.member("x").incarnation == 1  # type: ignore[union-attr]


def test_alive_about_us_with_other_meta_is_refuted() -> None:
    core = _core()
    a = Alive(1, "me", ME.packed(), ME.port, b"other", DEFAULT_VSN)
    effs = core.handle_packet(1.0, PEER, encode_message(a))
    assert [e.event for e in effs if isinstance(e, Notice)] == ["refuted"]
    assert core.local.incarnation == 2 and core.health_score() == 1


def test_join_with_unreachable_seed_reports_error() -> None:
    core = _core()
    rid, effs = core.join(0.0, [PEER])
    (op,) = [e for e in effs if isinstance(e, OpenStream)]
    done = core.stream_result(0.5, op.stream_id, None, "connection refused")
    (jd,) = done
    assert isinstance(jd, JoinDone) and jd.request_id == rid and jd.joined == 0
    assert "connection refused" in jd.errors[0]


def test_mutated_real_traffic_never_raises() -> None:
    p = Pump(21)
    for n in ("n1", "n2", "n3"):
        p.add(n, delegate=NullDelegate(b"meta"))
    p.join("n2", "n1")
    p.join("n3", "n1")
    p.run_until(5.0)
    samples = [pkt.data for _, pkt in p.sent]
    samples.append(encode_stream_message(p.by_name["n1"]._local_state(True), compress=False))
    samples.append(encode_stream_message(p.by_name["n1"]._local_state(False), compress=True))
    victim = _core()
    rng = random.Random(5)
    for i in range(3000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(data))
            op = rng.randrange(3)
            if op == 0:
                data[pos] = rng.randrange(256)
            elif op == 1:
                del data[pos:]
                if not data:
                    data = bytearray(b"\x00")
            else:
                data.insert(pos, rng.randrange(256))
        victim.handle_packet(float(i), PEER, bytes(data))
        victim.handle_stream(float(i), bytes(data))
        victim.tick(float(i))
    assert victim.statistics().violations > 100


def _populated(n: int) -> Memberlist:
    from serf_trio.wire.messages import PushNodeState, PushPull

    core = _core()
    nodes = tuple(
        PushNodeState(f"node-{i}", bytes([10, 0, i // 256, i % 256]), 7946, b"t" * 30, 1, 0,
                      DEFAULT_VSN)
        for i in range(n)
    )  # fmt: skip
    core.handle_stream(1.0, encode_stream_message(PushPull(False, nodes), compress=False))
    return core


def test_gossip_packets_respect_the_budget_and_carry_crc() -> None:
    core = _populated(300)
    assert core.statistics().queue_depth > 100
    sends = _sent(core.gossip(2.0))
    assert len(sends) == TEST_CONFIG.gossip_nodes
    for pkt in sends:
        assert pkt.data[0] == 12  # CRC for pmax >= 5 peers
        assert len(pkt.data) <= TEST_CONFIG.udp_buffer_size + 5
        msgs = decode_packet(pkt.data).messages
        assert 10 < len(msgs) <= 127 and all(isinstance(m, Alive) for m in msgs)


def test_piggyback_on_ack_stays_within_budget() -> None:
    core = _populated(300)
    (pkt,) = _sent(core.handle_packet(2.0, PEER, encode_message(Ping(1, "me"))))
    assert len(pkt.data) <= TEST_CONFIG.udp_buffer_size
    msgs = decode_packet(pkt.data).messages
    assert msgs[0] == Ack(1, None) and len(msgs) > 10


def test_probe_of_suspect_sends_ping_and_suspect_compound() -> None:
    from serf_trio.wire.messages import Suspect

    core = _populated(1)
    core.handle_packet(2.0, PEER, encode_message(Suspect(1, "node-0", "x")))
    (pkt,) = _sent(core.probe(3.0))
    assert pkt.data[0] == 12
    msgs = decode_packet(pkt.data).messages
    assert isinstance(msgs[0], Ping) and msgs[1] == Suspect(1, "node-0", "me")


def test_member_views_and_statistics() -> None:
    core = _populated(5)
    stats = core.statistics()
    assert (stats.members, stats.alive, core.num_alive()) == (6, 6, 6)
    assert core.push_pull_period() == TEST_CONFIG.push_pull_interval
    assert {m.name for m in core.members()} == {"me"} | {f"node-{i}" for i in range(5)}
    assert core.local.name == "me" and core.local.incarnation == 1
