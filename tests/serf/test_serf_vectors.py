"""Golden tests: every Serf message in the real-agent captures decodes and re-encodes to Go's bytes.

Go-map key order (tags, StatusLTimes) is random on the wire; there the re-encoding is compared
by decoded equality.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from serf_trio.serf import messages as sm
from serf_trio.serf.coordinate import decode_ping_payload, encode_ping_payload
from serf_trio.wire.codec import DecodeError
from serf_trio.wire.messages import Ack, PushPull, UserMsg
from serf_trio.wire.packet import decode_packet
from serf_trio.wire.stream import StreamParser

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"
SCENARIOS = [
    "01-join-tags",
    "02-user-event",
    "03-query",
    "04-leave",
    "05-failure",
    "09-python-probe",
    "10-name-conflict",
    "11-stream-usermsg",
    "13-refute",
]


def _records(name: str) -> Iterator[dict[str, object]]:
    with open(VECTORS / f"{name}.jsonl") as fh:
        for line in fh:
            rec = json.loads(line)
            if "_meta" not in rec:
                yield rec


def serf_messages() -> list[tuple[str, bytes]]:
    out = []
    for name in SCENARIOS:
        for rec in _records(name):
            data = bytes.fromhex(str(rec.get("hex", "")))
            if not data:
                continue
            if rec["transport"] == "udp":
                for m in decode_packet(data).messages:
                    if isinstance(m, UserMsg):
                        out.append((f"{name}#{rec['frame']}", m.payload))
            elif rec["transport"] == "tcp":
                msg = StreamParser().feed(data)
                if isinstance(msg, PushPull) and msg.user_state:
                    out.append((f"{name}/tcp{rec['tcp_stream']}", msg.user_state))
                elif isinstance(msg, UserMsg):
                    out.append((f"{name}/tcp{rec['tcp_stream']}", msg.payload))
    return out


def ack_payloads() -> list[bytes]:
    out = []
    for name in ("01-join-tags", "03-query"):
        for rec in _records(name):
            if rec["transport"] != "udp":
                continue
            for m in decode_packet(bytes.fromhex(str(rec["hex"]))).messages:
                if isinstance(m, Ack) and m.payload:
                    out.append(m.payload)
    return out


MESSAGES = serf_messages()


def _raw(b: bytes) -> object:
    return msgpack.unpackb(b, raw=True, strict_map_key=False)


def test_captures_hold_every_serf_type() -> None:
    types = {p[0] for _, p in MESSAGES}
    assert types == {0, 1, 2, 3, 4, 5, 9}
    assert len(MESSAGES) > 200


@pytest.mark.parametrize("where,data", MESSAGES, ids=[w for w, _ in MESSAGES])
def test_decode_reencode(where: str, data: bytes) -> None:
    msg = sm.decode(data)
    again = sm.encode(msg)
    if isinstance(msg, sm.PushPullState):
        # Go randomises StatusLTimes key order: compare the documents.
        assert again[0] == data[0]
        assert _raw(again[1:]) == _raw(data[1:])
        assert len(msg.events) in (0, 512)
    else:
        assert again == data, where
    if isinstance(msg, sm.Relay):
        inner = sm.decode(msg.inner)
        assert isinstance(inner, sm.QueryResponse)
    if isinstance(msg, sm.Query):
        for f in msg.filters:
            assert sm.encode_filter(sm.decode_filter(f)) == f
    if isinstance(msg, sm.QueryResponse) and msg.payload[:1] == b"\x06":
        member = sm.decode_conflict_response(msg.payload)
        assert member is not None and member.name == "n3"
        assert _raw(sm.encode_conflict_response(member)[1:]) == _raw(msg.payload[1:])


def test_golden_bytes_from_protocol_notes() -> None:
    join = bytes.fromhex("0182a54c54696d6501a44e6f6465a26e32")
    assert sm.decode(join) == sm.Join(1, "n2")
    assert sm.encode(sm.Join(1, "n2")) == join
    leave = bytes.fromhex("0083a54c54696d6503a44e6f6465a26e33a55072756e65c2")
    assert sm.encode(sm.Leave(3, "n3", False)) == leave
    ev = bytes.fromhex(
        "0384a24343c3a54c54696d6501a44e616d65a66465706c6f79a75061796c6f6164a676312e322e33"
    )
    assert sm.encode(sm.UserEvent(1, "deploy", b"v1.2.3", True)) == ev
    assert sm.encode_filter(sm.NodeFilter(("n3",))) == bytes.fromhex("0091a26e33")
    assert sm.encode_filter(sm.TagFilter("role", "web")) == bytes.fromhex(
        "0182a445787072a3776562a3546167a4726f6c65"
    )
    assert sm.encode_key_request(sm.KeyRequest(b"")) == bytes.fromhex("0781a34b6579a0")


def test_key_request_list_keys_golden() -> None:
    # _serf_list-keys payload: 07 81 a3 4b6579 a0 (Key is an empty raw string).
    golden = bytes.fromhex("0781a34b6579a0")
    assert sm.decode_key_request(golden) == sm.KeyRequest(b"")


def test_key_response_roundtrip() -> None:
    r = sm.KeyResponse(False, "Keyring is empty (encryption not enabled)")
    assert sm.decode_key_response(sm.encode_key_response(r)) == r


@pytest.mark.parametrize("payload", ack_payloads()[:20])
def test_ack_coordinate_payload_roundtrip(payload: bytes) -> None:
    coord = decode_ping_payload(payload)
    assert coord is not None and len(coord.vec) == 8
    assert encode_ping_payload(coord) == payload


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x0a\x80", b"\x01\x91", b"\x04\x81\xa2ID\xa1x", b"\x09\xc1", b"\x09\x80", b"\x03\xff"],
)
def test_decode_is_total(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        sm.decode(bad)
