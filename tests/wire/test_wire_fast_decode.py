"""The decoders' shortcuts for the usual shape of high-volume messages give exactly what the
general ``Fields`` path gives: the same record, or the same ``DecodeError`` text.

Shortcuts: ``codec.decode_node_state`` (one per member in a push/pull), ``codec._fast_alive``
and ``codec._fast_accusation`` (alive, suspect, dead gossip), ``serf.messages._fast_decode``
(join/leave intents and user events).  Each is checked against the same decoder with the
shortcut switched off, on maps built from the real field names with values of every type
msgpack can produce (and odd ranges), plus the real encodings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from wire_strategies import alives, deads, node_states, suspects

from serf_trio.serf import messages as serf_messages
from serf_trio.swim.api import Address
from serf_trio.wire import codec
from serf_trio.wire.codec import DecodeError, decode_body, decode_node_state, pack, unpack_one
from serf_trio.wire.messages import Alive, Dead, MessageType, Suspect

# Values a raw-mode unpacker can hand over, around the edges the decoders test.
values = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, 3, 4, -1, 0xFFFF, 0x1_0000, 0xFFFF_FFFF, 0x1_0000_0000, 2**64 - 1]),
    st.integers(),
    st.binary(max_size=8),
    st.sampled_from([b"\x01\x05\x02\x02\x05\x05", b"\xff\xfe", "text"]),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.binary(max_size=2), st.integers(), max_size=1),
)


def _maps(keys: list[str]) -> st.SearchStrategy[Any]:
    """Maps over (mostly) the message's own field names, or not a map at all."""
    fields = st.sampled_from([k.encode() for k in keys] + [b"Other"])
    return st.dictionaries(fields, values, max_size=len(keys) + 1) | values


def _outcome(fn: Callable[[], object]) -> tuple[str, object]:
    try:
        return "ok", fn()
    except DecodeError as exc:
        return "error", str(exc)


NODE_KEYS = ["Name", "Addr", "Port", "Meta", "Incarnation", "State", "Vsn"]
ALIVE_KEYS = ["Incarnation", "Node", "Addr", "Port", "Meta", "Vsn"]
ACCUSATION_KEYS = ["Incarnation", "Node", "From"]


@settings(max_examples=400, deadline=None)
@given(_maps(NODE_KEYS))
def test_node_state_shortcut_matches_fields(obj: Any) -> None:
    assert _outcome(lambda: decode_node_state(obj)) == _outcome(
        lambda: codec._decode_node_state_fields(obj)
    )


@settings(max_examples=200, deadline=None)
@given(node_states)
def test_node_state_shortcut_on_real_encodings(ns: Any) -> None:
    obj = unpack_one(codec.encode_node_state(ns), "push_node_state")
    assert decode_node_state(obj) == codec._decode_node_state_fields(obj) == ns


def _slow_body(mtype: MessageType, obj: object) -> tuple[str, object]:
    with (
        mock.patch.object(codec, "_fast_alive", lambda obj: None),
        mock.patch.object(codec, "_fast_accusation", lambda obj, cls: None),
    ):
        return _outcome(lambda: decode_body(mtype, obj))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([MessageType.ALIVE, MessageType.SUSPECT, MessageType.DEAD]), st.data())
def test_gossip_shortcuts_match_fields(mtype: MessageType, data: st.DataObject) -> None:
    keys = ALIVE_KEYS if mtype is MessageType.ALIVE else ACCUSATION_KEYS
    obj = data.draw(_maps(keys))
    assert _outcome(lambda: decode_body(mtype, obj)) == _slow_body(mtype, obj)


@settings(max_examples=200, deadline=None)
@given(st.one_of(alives, suspects, deads))
def test_gossip_shortcuts_on_real_encodings(msg: Alive | Suspect | Dead) -> None:
    raw = codec.encode_message(msg)
    mtype = MessageType(raw[0])
    obj = unpack_one(raw[1:], "body")
    assert _outcome(lambda: decode_body(mtype, obj)) == _slow_body(mtype, obj) == ("ok", msg)


SERF_KEYS = {
    serf_messages.SerfType.JOIN: ["LTime", "Node"],
    serf_messages.SerfType.LEAVE: ["LTime", "Node", "Prune"],
    serf_messages.SerfType.USER_EVENT: ["LTime", "Name", "Payload", "CC"],
}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(SERF_KEYS)), st.data())
def test_serf_shortcut_matches_fields(t: serf_messages.SerfType, data: st.DataObject) -> None:
    obj = data.draw(_maps(SERF_KEYS[t]))
    try:
        buf = bytes([t]) + pack(obj)
    except (TypeError, ValueError, OverflowError):
        return  # not representable in msgpack
    fast = _outcome(lambda: serf_messages.decode(buf))
    with mock.patch.object(serf_messages, "_fast_decode", lambda st_, obj: None):
        slow = _outcome(lambda: serf_messages.decode(buf))
    assert fast == slow


def test_serf_shortcut_on_real_encodings() -> None:
    for msg in (
        serf_messages.Join(7, "a"),
        serf_messages.Leave(2**64 - 1, "b", True),
        serf_messages.Leave(3, "", False),
        serf_messages.UserEvent(1, "deploy", b"", True),
        serf_messages.UserEvent(9, "é", b"\x00payload", False),
    ):
        assert serf_messages.decode(serf_messages.encode(msg)) == msg


def test_address_caches_give_equal_values() -> None:
    a = Address.from_packed(b"\x0a\x00\x00\x01", 7946)
    assert a == Address("10.0.0.1", 7946) and a.packed() == b"\x0a\x00\x00\x01"
    mapped = bytes(10) + b"\xff\xff" + b"\x0a\x00\x00\x01"
    assert Address.from_packed(mapped, 1) == Address("10.0.0.1", 1)
    assert Address.from_packed(bytes(range(16)), 1).packed() == bytes(range(16))
