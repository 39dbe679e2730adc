"""Golden tests: every memberlist packet and stream captured from the real agent decodes without
errors and re-encodes to exactly the bytes Go sent.  Encrypted records are opened with the key
recorded in the capture's ``_meta`` first; their plaintext is then checked like any other.

The captures (tests/data/vectors, see its README) come with an independent decoding of their
framing (``decoded``); the tests rebuild each packet from that framing plus our decoded
messages, so both the framing encoders and the message encoders are checked byte for byte.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serf_trio.wire import lzw
from serf_trio.wire.codec import DecodeError, encode_message, unpack_one
from serf_trio.wire.crypto import Algorithm, Envelope
from serf_trio.wire.keyring import Keyring, decode_key
from serf_trio.wire.messages import Message, MessageType
from serf_trio.wire.packet import (
    add_crc,
    compress_message,
    decode_packet,
    encode_packet,
    make_compound,
)
from serf_trio.wire.stream import (
    ENCRYPTED_BUT_NOT_CONFIGURED,
    StreamParser,
    decode_stream_message,
    encode_stream_error,
    encode_stream_message,
)

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"
FILES = sorted(p.name for p in VECTORS.glob("*.jsonl"))

# Packets a Python test peer built deliberately non-canonically (09-python-probe): a str8
# SourceNode, a bin-typed SourceNode, and a ping with its map keys in reverse order.  They must
# decode; our canonical re-encoding differs from their bytes by design.
NON_CANONICAL = {
    ("09-python-probe.jsonl", 3),
    ("09-python-probe.jsonl", 5),
    ("09-python-probe.jsonl", 6),
}

_TYPE_RE = re.compile(r"\((\d+)\)$")


def _records(name: str) -> Iterator[dict[str, Any]]:
    with (VECTORS / name).open() as fh:
        for line in fh:
            rec = json.loads(line)
            if "_meta" not in rec:
                yield rec


@functools.cache
def _envelope(name: str) -> Envelope | None:
    """An aes-gcm envelope holding the keys the capture recorded (``None`` if it has none)."""
    with (VECTORS / name).open() as fh:
        meta = json.loads(fh.readline())["_meta"]
    keys = [decode_key(k) for k in meta.get("keys_base64") or []]
    return Envelope(Keyring(keys), Algorithm.AES_GCM) if keys else None


def _open(name: str, rec: dict[str, Any], data: bytes) -> bytes:
    """Decrypt one captured record and check it against the capture's own decryption."""
    env = _envelope(name)
    assert env is not None, name
    enc = rec["decoded"]["encrypted"]
    if rec["transport"] == "udp":
        opened = env.open_packet(data)
    else:
        reader = env.stream_reader()
        assert reader.feed(data) is not None
        assert reader.opened is not None
        opened = reader.opened
    assert opened.data.hex() == enc["plaintext_hex"], (name, rec.get("frame"))
    assert opened.key_index == enc["key_index"]
    return opened.data


def _type_no(node: dict[str, Any]) -> int:
    m = _TYPE_RE.search(node["type"])
    assert m, node["type"]
    return int(m.group(1))


def _leaves(node: dict[str, Any]) -> list[dict[str, Any]]:
    t = _type_no(node)
    if t in (MessageType.HAS_CRC, MessageType.COMPRESS):
        return _leaves(node["inner"])
    if t == MessageType.COMPOUND:
        return [leaf for part in node["parts"] for leaf in _leaves(part)]
    return [node]


def _rebuild(node: dict[str, Any], msgs: Iterator[Message]) -> bytes:
    """Re-frame our decoded messages exactly as the capture's framing says Go did."""
    t = _type_no(node)
    if t == MessageType.HAS_CRC:
        return add_crc(_rebuild(node["inner"], msgs))
    if t == MessageType.COMPRESS:
        return compress_message(_rebuild(node["inner"], msgs))
    if t == MessageType.COMPOUND:
        return make_compound([_rebuild(p, msgs) for p in node["parts"]])
    return encode_message(next(msgs))


def _go_shape(node: dict[str, Any]) -> tuple[bool, bool, int] | None:
    """(crc, compressed, n_leaves) if ``node`` is what ``encode_packet`` builds, else None."""
    crc = _type_no(node) == MessageType.HAS_CRC
    if crc:
        node = node["inner"]
    comp = _type_no(node) == MessageType.COMPRESS
    if comp:
        node = node["inner"]
    if _type_no(node) == MessageType.COMPOUND:
        if any(_type_no(p) in (7, 9, 12) for p in node["parts"]):
            return None
        return crc, comp, len(node["parts"])
    return crc, comp, 1


def check_udp(name: str, rec: dict[str, Any]) -> str:
    """Check one datagram; return what was checked ("skip-..." if not applicable)."""
    dec = rec["decoded"]
    data = bytes.fromhex(rec["hex"])
    if "encrypted" in dec:
        plain = _open(name, rec, data)
        kind = check_udp(name, {**rec, "hex": plain.hex(), "decoded": dec["inner"]})
        return f"encrypted-{kind}"
    pkt = decode_packet(data)
    if dec.get("crc_ok") is False:
        assert pkt.errors == ["crc: checksum mismatch"] and not pkt.messages
        return "bad-crc"
    assert pkt.errors == [], (name, rec["frame"], pkt.errors)
    leaves = _leaves(dec)
    assert [int(_MSG_TYPE[type(m).__name__]) for m in pkt.messages] == [
        _type_no(leaf) for leaf in leaves
    ], (name, rec["frame"])
    if (name, rec["frame"]) in NON_CANONICAL:
        return "non-canonical"
    assert _rebuild(dec, iter(pkt.messages)) == data, (name, rec["frame"])
    shape = _go_shape(dec)
    if not rec["src_node"].startswith("py") and shape is not None:
        # Go compresses every packet and keeps the result only if shorter: encode_packet with
        # compression on must make the same choice.
        crc, _comp, n = shape
        assert n == len(pkt.messages)
        built = encode_packet([encode_message(m) for m in pkt.messages], crc=crc, compress=True)
        assert built == data, (name, rec["frame"])
    return "packet"


_MSG_TYPE = {
    "Ping": MessageType.PING,
    "IndirectPing": MessageType.INDIRECT_PING,
    "Ack": MessageType.ACK,
    "Nack": MessageType.NACK,
    "Suspect": MessageType.SUSPECT,
    "Alive": MessageType.ALIVE,
    "Dead": MessageType.DEAD,
    "UserMsg": MessageType.USER,
    "Err": MessageType.ERR,
    "PushPull": MessageType.PUSH_PULL,
}


def check_tcp(name: str, rec: dict[str, Any]) -> str:
    if rec["len"] == 0:
        return "skip-empty"
    dec = rec["decoded"]
    data = bytes.fromhex(rec["hex"])
    if "encrypted" in dec:
        if data[0] == MessageType.ENCRYPT and "error" in dec["encrypted"]:
            # A fake encrypted frame sent to a node without a keyring (12-stream-error).
            with pytest.raises(DecodeError, match=ENCRYPTED_BUT_NOT_CONFIGURED):
                decode_stream_message(data)
            return "encrypted-refused"
        plain = _open(name, rec, data)
        inner = {k: v for k, v in dec.items() if k != "encrypted"}
        return "encrypted-" + check_tcp(name, {**rec, "hex": plain.hex(), "decoded": inner})
    compressed = "compressed" in dec
    msg = decode_stream_message(data)
    assert int(_MSG_TYPE[type(msg).__name__]) == _type_no(dec), (name, rec["tcp_stream"])
    assert encode_stream_message(msg, compress=compressed) == data, (name, rec["tcp_stream"])
    if compressed:
        plain = bytes.fromhex(dec["compressed"]["plaintext_hex"])
        assert encode_stream_message(msg, compress=False) == plain
    # Byte-at-a-time feeding gives the same message, and only on the last byte.
    parser = StreamParser()
    for i in range(len(data)):
        got = parser.feed(data[i : i + 1])
        assert (got is not None) == (i == len(data) - 1), (name, rec["tcp_stream"], i)
    assert parser.finish() == msg
    assert parser.compressed == compressed
    return "stream"


@functools.cache
def _check_file(name: str) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for rec in _records(name):
        if rec["transport"] == "udp":
            kind = check_udp(name, rec)
        elif rec["transport"] == "tcp":
            kind = check_tcp(name, rec)
        else:
            continue
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


@pytest.mark.parametrize("name", FILES)
def test_vectors_round_trip(name: str) -> None:
    kinds = _check_file(name)
    assert sum(n for k, n in kinds.items() if k.endswith(("packet", "stream"))) > 0


def test_vector_totals() -> None:
    """Regression guard on how much of the captures the golden tests cover."""
    totals: dict[str, int] = {}
    for name in FILES:
        for kind, n in _check_file(name).items():
            totals[kind] = totals.get(kind, 0) + n
    assert totals == EXPECTED_TOTALS


EXPECTED_TOTALS = {
    "packet": 761,  # datagrams decoded and re-encoded byte for byte
    "stream": 31,  # stream directions decoded, re-encoded, and parsed byte by byte
    "non-canonical": 3,
    "bad-crc": 1,
    "encrypted-refused": 1,
    # opened with the capture's key, then decoded and re-encoded byte for byte (06, 09, 12)
    "encrypted-packet": 113,
    "encrypted-stream": 3,
    "skip-empty": 13,  # refused TCP fallback pings
}


def test_every_captured_lzw_buffer_reencodes() -> None:
    """Each LZW buffer Go sent decompresses, and ``lzw.compress`` gives it back byte for byte."""
    n = 0
    for name in FILES:
        for rec in _records(name):
            if rec["transport"] not in ("udp", "tcp") or not rec.get("len"):
                continue
            data = bytes.fromhex(rec["hex"])
            if "encrypted" in rec["decoded"]:
                if "error" in rec["decoded"]["encrypted"]:
                    continue
                data = _open(name, rec, data)
            if data[0] == MessageType.HAS_CRC:
                data = data[5:]
            if data[0] != MessageType.COMPRESS:
                continue
            buf = unpack_one(data[1:], "compress")[b"Buf"]
            plain = lzw.decompress(buf, 1 << 20)
            assert lzw.compress(plain) == buf, (name, rec.get("frame"), rec.get("tcp_stream"))
            if "compressed" in rec["decoded"]:
                assert plain.hex() == rec["decoded"]["compressed"]["plaintext_hex"]
            n += 1
    assert n == EXPECTED_LZW_BUFFERS


EXPECTED_LZW_BUFFERS = 60  # plaintext: 22 UDP packets + 27 streams; 11 more inside encryption


def test_stream_error_reply_matches_go() -> None:
    """12-stream-error: n1's compressed ``err`` reply is exactly ``encode_stream_error``."""
    for rec in _records("12-stream-error.jsonl"):
        if rec["transport"] == "tcp" and rec["direction"] == "server->client":
            err = rec["decoded"].get("body", {}).get("Error")
            if err and "encrypted" not in rec["decoded"]:
                assert encode_stream_error(err, compress=True) == bytes.fromhex(rec["hex"])
                assert err == ENCRYPTED_BUT_NOT_CONFIGURED
                return
    pytest.fail("no plaintext err reply in the capture")
