"""Decoders are total and bounded: any bytes give messages or ``DecodeError``, quickly.

Random inputs and mutations of the golden captures must never raise anything else, and each
example runs under a Hypothesis deadline.  Hostile inputs that target memory or CPU (LZW bombs,
deep nesting, huge length headers) are checked explicitly.
"""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serf_trio.wire import lzw
from serf_trio.wire.codec import DecodeError, decode_message, encode_message, pack
from serf_trio.wire.messages import MessageType, Ping, UserMsg
from serf_trio.wire.packet import (
    MAX_DECOMPRESSED,
    DecodedPacket,
    add_crc,
    compress_message,
    decode_packet,
    make_compound,
)
from serf_trio.wire.stream import StreamParser, decode_stream_message

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"


def _golden() -> tuple[list[bytes], list[bytes]]:
    packets: list[bytes] = []
    streams: list[bytes] = []
    for path in sorted(VECTORS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("transport") not in ("udp", "tcp") or not rec.get("len"):
                continue
            if "encrypted" in rec["decoded"]:
                continue
            (packets if rec["transport"] == "udp" else streams).append(bytes.fromhex(rec["hex"]))
    return packets, streams


GOLDEN_PACKETS, GOLDEN_STREAMS = _golden()

FUZZ = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])

leading = st.sampled_from([*range(15), 244, 255])
framed_bytes = st.tuples(leading, st.binary(max_size=400)).map(lambda t: bytes([t[0]]) + t[1])
any_bytes = st.binary(max_size=400) | framed_bytes


def _packet_ok(data: bytes) -> DecodedPacket:
    pkt = decode_packet(data)  # must not raise
    assert isinstance(pkt, DecodedPacket)
    assert all(isinstance(e, str) for e in pkt.errors)
    return pkt


def _stream_ok(data: bytes, step: int = 0) -> None:
    try:
        if step:
            parser = StreamParser()
            for i in range(0, len(data), step):
                parser.feed(data[i : i + step])
            parser.finish()
        else:
            decode_stream_message(data)
    except DecodeError:
        pass


@given(any_bytes)
@FUZZ
def test_random_bytes(data: bytes) -> None:
    _packet_ok(data)
    with contextlib.suppress(DecodeError):
        decode_message(data)
    _stream_ok(data)
    _stream_ok(data, step=7)


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xC0, 0xC1, 0xDB, 0xDD, 0xDF, 0xFF]))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i : i + draw(st.integers(1, 8))]
    return bytes(data)


@given(mutated(GOLDEN_PACKETS))
@FUZZ
def test_mutated_golden_packets(data: bytes) -> None:
    _packet_ok(data)
    # Also with the CRC header recomputed, so mutations reach the inner layers.
    if data and data[0] == MessageType.HAS_CRC and len(data) > 5:
        _packet_ok(add_crc(data[5:]))


@given(mutated(GOLDEN_STREAMS), st.integers(0, 50))
@FUZZ
def test_mutated_golden_streams(data: bytes, step: int) -> None:
    _stream_ok(data, step)


@pytest.mark.slow
@given(mutated(GOLDEN_PACKETS + GOLDEN_STREAMS))
@settings(max_examples=5000, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_golden_many(data: bytes) -> None:
    _packet_ok(data)
    _stream_ok(data, 13)


# --- explicit hostile inputs ---------------------------------------------------------------


def test_lzw_bombs_share_one_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = compress_message(encode_message(UserMsg(b"a" * 900_000)))
    assert len(bomb) < 3000
    inflated: list[int] = []
    real = lzw.decompress

    def counting(data: bytes, max_out: int) -> bytes:
        out = real(data, max_out)
        inflated.append(len(out))
        return out

    monkeypatch.setattr(lzw, "decompress", counting)
    packet = make_compound([bomb] * 20)
    pkt = decode_packet(packet)
    assert len(pkt.messages) == 1  # the first bomb fits the budget, the rest are refused
    assert len(pkt.errors) == 19 and all("exceeds" in e for e in pkt.errors)
    assert sum(inflated) <= MAX_DECOMPRESSED


def test_deep_nesting_is_refused() -> None:
    data = encode_message(Ping(1, "x"))
    for _ in range(10):
        data = make_compound([data])
    pkt = decode_packet(data)
    assert pkt.messages == [] and pkt.errors == ["packet nested too deeply"]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "empty packet"),
        (b"\x0c\x00\x00\x00\x00", "crc: packet too short"),  # 5-byte hasCrc
        (b"\x07\x02\x00\x00\x00\x00", "empty message"),  # empty compound parts
        (b"\x07\x00", "compound: no parts"),
        (b"\x09" + pack({"Algo": 0, "Buf": lzw.compress(b"")}), "decompresses to nothing"),
        (b"\x09" + pack({"Algo": 1, "Buf": b""}), "unknown algorithm"),
        (b"\x0c" + struct.pack(">I", 0) + b"\x00\x80", "checksum mismatch"),
        (b"\x06\x80", "not valid here"),  # push/pull is stream-only
        (b"\xf4\x01a\x00\x80", "not supported"),  # label (memberlist >= 0.3)
    ],
)
def test_traps_are_errors(data: bytes, error: str) -> None:
    pkt = decode_packet(data)
    assert pkt.messages == []
    assert len(pkt.errors) >= 1 and error in pkt.errors[0]


def test_huge_container_headers_do_not_allocate() -> None:
    # An array header claiming 2**32-1 elements inside a ping body, and in a stream.
    huge = b"\x00\x81\xa4Node\xdd\xff\xff\xff\xff"
    assert decode_packet(huge).errors
    with pytest.raises(DecodeError):
        decode_stream_message(huge)


def test_stream_size_and_count_caps() -> None:
    hdr = pack({"Join": False, "Nodes": 10**9, "UserStateLen": 0})
    with pytest.raises(DecodeError, match="Nodes"):
        StreamParser().feed(b"\x06" + hdr)
    hdr = pack({"Join": False, "Nodes": -1, "UserStateLen": 0})
    with pytest.raises(DecodeError, match="Nodes"):
        StreamParser().feed(b"\x06" + hdr)
    hdr = pack({"Join": False, "Nodes": 0, "UserStateLen": 1 << 30})
    with pytest.raises(DecodeError, match="UserStateLen"):
        StreamParser().feed(b"\x06" + hdr)
    parser = StreamParser(max_bytes=1000)
    parser.feed(b"\x08" + pack({"UserMsgLen": 900}) + b"x" * 100)
    with pytest.raises(DecodeError, match="exceeds"):
        parser.feed(b"x" * 1000)


def test_stream_compress_bomb_is_capped() -> None:
    bomb = compress_message(b"\x08" + pack({"UserMsgLen": 600_000}) + b"a" * 600_000)
    assert len(bomb) < 5000
    with pytest.raises(DecodeError, match="exceeds"):
        StreamParser(max_bytes=1 << 19).feed(bomb)
