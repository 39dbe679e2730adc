"""Round-trip properties: encode -> decode gives back the original record, for every type."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_strategies import packet_messages, push_pulls, stream_messages

from serf_trio.wire.codec import DecodeError, decode_message, encode_message
from serf_trio.wire.messages import Alive, Err, Message, Ping, PushPull, UserMsg
from serf_trio.wire.packet import (
    MAX_COMPOUND_PARTS,
    add_crc,
    compress_message,
    decode_packet,
    encode_packet,
    make_compound,
)
from serf_trio.wire.stream import (
    StreamParser,
    decode_stream_message,
    encode_stream_error,
    encode_stream_message,
)


@given(packet_messages)
@settings(max_examples=300, deadline=None)
def test_message_round_trip(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


@given(st.lists(packet_messages, min_size=1, max_size=6), st.booleans(), st.booleans())
@settings(max_examples=200, deadline=None)
def test_packet_round_trip(msgs: list[Message], crc: bool, compress: bool) -> None:
    data = encode_packet([encode_message(m) for m in msgs], crc=crc, compress=compress)
    pkt = decode_packet(data)
    assert pkt.errors == []
    assert pkt.messages == msgs


@given(stream_messages, st.booleans())
@settings(max_examples=200, deadline=None)
def test_stream_round_trip(msg: Message, compress: bool) -> None:
    data = encode_stream_message(msg, compress=compress)
    assert decode_stream_message(data) == msg


@given(push_pulls, st.booleans(), st.integers(1, 97))
@settings(max_examples=60, deadline=None)
def test_stream_round_trip_any_chunking(msg: PushPull, compress: bool, step: int) -> None:
    data = encode_stream_message(msg, compress=compress)
    parser = StreamParser()
    results = [parser.feed(data[i : i + step]) for i in range(0, len(data), step)]
    assert all(r is None for r in results[:-1])
    assert results[-1] == msg
    assert parser.finish() == msg
    assert parser.compressed is compress


def test_stream_error_reply() -> None:
    data = encode_stream_error("boom", compress=False)
    assert data == bytes.fromhex("0d81a54572726f72a4626f6f6d")
    assert decode_stream_message(encode_stream_error("boom", compress=True)) == Err("boom")


def test_compressed_only_if_shorter() -> None:
    small = encode_message(Ping(1, "a"))
    assert encode_packet([small], crc=False, compress=True) == small
    big = encode_message(UserMsg(b"x" * 500))
    assert encode_packet([big], crc=False, compress=True)[0] == 9


# --- the send side refuses what memberlist 0.2.2 crashes on ------------------------------------


def test_compound_part_limits() -> None:
    part = encode_message(Ping(1, "a"))
    make_compound([part] * MAX_COMPOUND_PARTS)
    with pytest.raises(ValueError):
        make_compound([part] * (MAX_COMPOUND_PARTS + 1))
    with pytest.raises(ValueError):
        make_compound([])
    with pytest.raises(ValueError):
        make_compound([part, b""])
    with pytest.raises(ValueError):
        encode_packet([b""], crc=True, compress=False)


def test_no_empty_crc_or_compress() -> None:
    with pytest.raises(ValueError):
        add_crc(b"")
    with pytest.raises(ValueError):
        compress_message(b"")


def test_short_vsn_rejected_both_ways() -> None:
    bad = Alive(1, "n", b"\x7f\x00\x00\x01", 1, None, b"\x01\x05")
    with pytest.raises(ValueError, match="Vsn"):
        encode_message(bad)
    good = encode_message(Alive(1, "n", b"\x7f\x00\x00\x01", 1, None, b"\x01\x05\x02\x02\x05\x05"))
    forged = good.replace(b"\xa6\x01\x05\x02\x02\x05\x05", b"\xa2\x01\x05")
    with pytest.raises(DecodeError, match="Vsn"):
        decode_message(forged)
