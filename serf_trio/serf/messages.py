"""Serf's messages (types 0-9), query filters and internal-query payloads, with their codec.

A Serf message is ``[serf type byte][msgpack body]`` in the gossip dialect (raw strings, no
bin, struct keys in Go's sorted field order; see ``wire.codec``).  It rides inside a memberlist
user message (``08``), a bare direct-UDP user packet, or the push/pull user state.  Nested
encodings are byte strings holding *another* type byte and msgpack document: a query's
``Filters`` entries, internal-query payloads (key request ``07``) and their response payloads
(conflict response ``06``, key response ``08``), and the message after a relay header.

Decoding is total: peer input gives a record or ``DecodeError``.  Serf's push/pull carries a
512-entry ``Events`` array and one ``StatusLTimes`` entry per member, so this module passes
its own container cap (``MAX_CONTAINER``) to ``wire.codec.unpack_one`` instead of the default 64,
and reads fields with ``wire.codec.Fields``.

Empty byte payloads encode as msgpack nil (Go sends a nil slice for "no payload").
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import msgpack

from serf_trio.record import record

from ..swim.api import Address
from ..wire.codec import (
    MAX_U16,
    MAX_U32,
    MSGPACK_ERRORS,
    DecodeError,
    Fields,
    pack,
    pack_struct,
    text,
    unpack_one,
)

MAX_CONTAINER = 100_000  # members per push/pull; same order as swim's max_push_pull_nodes
MAX_U8 = 0xFF
MAX_U64 = 0xFFFF_FFFF_FFFF_FFFF

QUERY_FLAG_ACK = 1  # serf queryFlagAck: the originator wants acks
QUERY_FLAG_NO_BROADCAST = 2  # serf queryFlagNoBroadcast: do not re-gossip the query


class SerfType(IntEnum):
    LEAVE = 0
    JOIN = 1
    PUSH_PULL = 2
    USER_EVENT = 3
    QUERY = 4
    QUERY_RESPONSE = 5
    CONFLICT_RESPONSE = 6
    KEY_REQUEST = 7
    KEY_RESPONSE = 8
    RELAY = 9


class FilterType(IntEnum):
    NODE = 0
    TAG = 1


# ---------------------------------------------------------------------------------------------
# Records


@record
class Leave:
    """type 0: leave intent (``prune``: erase the member at once, force-leave -prune)."""

    ltime: int
    node: str
    prune: bool = False


@record
class Join:
    """type 1: join intent."""

    ltime: int
    node: str


@record
class EventEntry:
    name: str
    payload: bytes


@record
class EventSlot:
    """One non-empty slot of the push/pull event ring: all events seen at ``ltime``."""

    ltime: int
    events: tuple[EventEntry, ...]


@record
class PushPullState:
    """type 2: Serf's push/pull user state.  ``events`` keeps ring positions (``None`` = empty)."""

    ltime: int
    status_ltimes: dict[str, int]
    left_members: tuple[str, ...]
    event_ltime: int
    events: tuple[EventSlot | None, ...]
    query_ltime: int


@record
class UserEvent:
    """type 3: a user event (``cc``: may be coalesced)."""

    ltime: int
    name: str
    payload: bytes
    cc: bool


@record
class Query:
    """type 4.  ``timeout_ns`` is Go's time.Duration; ``addr`` the packed originator IP."""

    ltime: int
    id: int
    addr: bytes
    port: int
    source_node: str
    filters: tuple[bytes, ...]
    flags: int
    relay_factor: int
    timeout_ns: int
    name: str
    payload: bytes

    @property
    def ack(self) -> bool:
        return bool(self.flags & QUERY_FLAG_ACK)

    @property
    def no_broadcast(self) -> bool:
        return bool(self.flags & QUERY_FLAG_NO_BROADCAST)


@record
class QueryResponse:
    """type 5: an ack (``flags`` bit 0) or a response, sent by direct UDP."""

    ltime: int
    id: int
    from_: str
    flags: int
    payload: bytes

    @property
    def ack(self) -> bool:
        return bool(self.flags & QUERY_FLAG_ACK)


@record
class Relay:
    """type 9: forward ``inner`` (a complete Serf message) as a bare user packet to ``dest``."""

    dest: Address
    dest_name: str
    inner: bytes


@record
class MemberRecord:
    """serf ``Member`` as msgpack (conflict responses); ``status`` is the numeric code."""

    name: str
    addr: bytes
    port: int
    tags: dict[str, str]
    status: int
    protocol_min: int
    protocol_max: int
    protocol_cur: int
    delegate_min: int
    delegate_max: int
    delegate_cur: int


@record
class KeyRequest:
    """type 7 (inside key query payloads)."""

    key: bytes


@record
class KeyResponse:
    """type 8 (inside key query responses): serf ``nodeKeyResponse``."""

    result: bool
    message: str
    keys: tuple[str, ...] | None = None
    primary_key: str = ""


@record
class NodeFilter:
    names: tuple[str, ...]


@record
class TagFilter:
    tag: str
    expr: str


SerfMessage = Leave | Join | PushPullState | UserEvent | Query | QueryResponse | Relay
Filter = NodeFilter | TagFilter


# ---------------------------------------------------------------------------------------------
# Encoding


def _nil(b: bytes) -> bytes | None:
    return b if b else None


def _slot(s: EventSlot | None) -> dict[str, Any] | None:
    if s is None:
        return None
    evs = [{"Name": e.name, "Payload": _nil(e.payload)} for e in s.events]
    return {"Events": evs, "LTime": s.ltime}


def encode(msg: SerfMessage) -> bytes:
    """``[type][msgpack]`` as Serf 0.9.4 sends it."""
    if isinstance(msg, Leave):
        return bytes([SerfType.LEAVE]) + pack_struct(
            {"LTime": msg.ltime, "Node": msg.node, "Prune": msg.prune}
        )
    if isinstance(msg, Join):
        return bytes([SerfType.JOIN]) + pack_struct({"LTime": msg.ltime, "Node": msg.node})
    if isinstance(msg, PushPullState):
        return bytes([SerfType.PUSH_PULL]) + pack_struct(
            {
                "LTime": msg.ltime,
                "StatusLTimes": dict(msg.status_ltimes),
                "LeftMembers": list(msg.left_members),
                "EventLTime": msg.event_ltime,
                "Events": [_slot(s) for s in msg.events],
                "QueryLTime": msg.query_ltime,
            }
        )
    if isinstance(msg, UserEvent):
        return bytes([SerfType.USER_EVENT]) + pack_struct(
            {"LTime": msg.ltime, "Name": msg.name, "Payload": _nil(msg.payload), "CC": msg.cc}
        )
    if isinstance(msg, Query):
        return bytes([SerfType.QUERY]) + pack_struct(
            {
                "LTime": msg.ltime,
                "ID": msg.id,
                "Addr": msg.addr,
                "Port": msg.port,
                "SourceNode": msg.source_node,
                "Filters": list(msg.filters) or None,
                "Flags": msg.flags,
                "RelayFactor": msg.relay_factor,
                "Timeout": msg.timeout_ns,
                "Name": msg.name,
                "Payload": _nil(msg.payload),
            }
        )
    if isinstance(msg, QueryResponse):
        return bytes([SerfType.QUERY_RESPONSE]) + pack_struct(
            {
                "LTime": msg.ltime,
                "ID": msg.id,
                "From": msg.from_,
                "Flags": msg.flags,
                "Payload": _nil(msg.payload),
            }
        )
    if isinstance(msg, Relay):
        header = {
            "DestAddr": {"IP": msg.dest.packed(), "Port": msg.dest.port, "Zone": ""},
            "DestName": msg.dest_name,
        }
        return bytes([SerfType.RELAY]) + pack(header) + msg.inner
    raise TypeError(f"{type(msg).__name__} is not a Serf message")


def encode_filter(f: Filter) -> bytes:
    if isinstance(f, NodeFilter):
        return bytes([FilterType.NODE]) + pack(list(f.names))
    return bytes([FilterType.TAG]) + pack_struct({"Tag": f.tag, "Expr": f.expr})


def encode_member(m: MemberRecord) -> dict[str, Any]:
    return {
        "Addr": m.addr,
        "DelegateCur": m.delegate_cur,
        "DelegateMax": m.delegate_max,
        "DelegateMin": m.delegate_min,
        "Name": m.name,
        "Port": m.port,
        "ProtocolCur": m.protocol_cur,
        "ProtocolMax": m.protocol_max,
        "ProtocolMin": m.protocol_min,
        "Status": m.status,
        "Tags": dict(m.tags),
    }


def encode_conflict_response(m: MemberRecord | None) -> bytes:
    """``06`` + Member map, or ``06 c0`` when the responder does not know the name."""
    body = pack(None) if m is None else pack_struct(encode_member(m))
    return bytes([SerfType.CONFLICT_RESPONSE]) + body


def encode_key_request(req: KeyRequest) -> bytes:
    return bytes([SerfType.KEY_REQUEST]) + pack_struct({"Key": req.key})


def encode_key_response(r: KeyResponse) -> bytes:
    keys = list(r.keys) if r.keys is not None else None
    return bytes([SerfType.KEY_RESPONSE]) + pack_struct(
        {"Keys": keys, "Message": r.message, "PrimaryKey": r.primary_key, "Result": r.result}
    )


def user_packet(serf_msg: bytes) -> bytes:
    """The memberlist user message carrying a Serf message: ``08`` + message."""
    return b"\x08" + serf_msg


# ---------------------------------------------------------------------------------------------
# Decoding


def _unpack(buf: bytes, what: str) -> Any:
    return unpack_one(buf, what, MAX_CONTAINER)


def _fields(obj: object, what: str) -> Fields:
    """Field access on a Serf body: integers default to Go's uint64 (LTimes, IDs)."""
    return Fields(obj, what, MAX_U64)


def _decode_slot(obj: object) -> EventSlot | None:
    if obj is None:
        return None
    f = _fields(obj, "push_pull event slot")
    entries = []
    for e in f.array("Events"):
        ef = _fields(e, "push_pull event")
        entries.append(EventEntry(ef.string("Name"), ef.blob("Payload")))
    return EventSlot(f.uint("LTime"), tuple(entries))


def decode(buf: bytes) -> SerfMessage:
    """Decode one Serf message (``[type][body]``); ``DecodeError`` on anything malformed."""
    if not buf:
        raise DecodeError("serf: empty message")
    t = buf[0]
    body = bytes(buf[1:])
    if t == SerfType.RELAY:
        return _decode_relay(body)
    st = _SERF_TYPES.get(t)
    if st is None:
        raise DecodeError(f"serf: unknown message type {t}")
    what = _WHAT[t]
    obj = _unpack(body, what)
    if st in _FAST_TYPES:
        fast = _fast_decode(st, obj)
        if fast is not None:
            return fast
    f = _fields(obj, what)
    if st is SerfType.LEAVE:
        return Leave(f.uint("LTime"), f.string("Node"), f.boolean("Prune"))
    if st is SerfType.JOIN:
        return Join(f.uint("LTime"), f.string("Node"))
    if st is SerfType.PUSH_PULL:
        raw_st = f.get("StatusLTimes")
        status: dict[str, int] = {}
        if raw_st is not None:
            if not isinstance(raw_st, dict):
                raise DecodeError(f"{what}: StatusLTimes is not a map")
            # One entry per member: the usual shape (byte-string key, int value) is tested
            # with ``type(...) is`` first; ``text`` words the errors (and maps a nil key).
            for k, v in raw_st.items():
                if type(v) is not int or not 0 <= v <= MAX_U64:
                    raise DecodeError(f"{what}: StatusLTimes value is not an integer")
                if type(k) is bytes:
                    status[k.decode("utf-8", "surrogateescape")] = v
                else:
                    status[text(k, f"{what}: StatusLTimes key")] = v
        left = tuple(text(x, f"{what}: LeftMembers entry") for x in f.array("LeftMembers"))
        events = tuple(_decode_slot(s) for s in f.array("Events"))
        return PushPullState(
            ltime=f.uint("LTime"),
            status_ltimes=status,
            left_members=left,
            event_ltime=f.uint("EventLTime"),
            events=events,
            query_ltime=f.uint("QueryLTime"),
        )
    if st is SerfType.USER_EVENT:
        return UserEvent(f.uint("LTime"), f.string("Name"), f.blob("Payload"), f.boolean("CC"))
    if st is SerfType.QUERY:
        filters = []
        for x in f.array("Filters"):
            if not isinstance(x, bytes):
                raise DecodeError(f"{what}: filter is not a byte string")
            filters.append(x)
        return Query(
            ltime=f.uint("LTime"),
            id=f.uint("ID", MAX_U32),
            addr=f.blob("Addr"),
            port=f.uint("Port", MAX_U16),
            source_node=f.string("SourceNode"),
            filters=tuple(filters),
            flags=f.uint("Flags", MAX_U32),
            relay_factor=f.uint("RelayFactor", MAX_U8),
            timeout_ns=f.int_("Timeout"),
            name=f.string("Name"),
            payload=f.blob("Payload"),
        )
    if st is SerfType.QUERY_RESPONSE:
        return QueryResponse(
            ltime=f.uint("LTime"),
            id=f.uint("ID", MAX_U32),
            from_=f.string("From"),
            flags=f.uint("Flags", MAX_U32),
            payload=f.blob("Payload"),
        )
    raise DecodeError(f"serf: message type {st.name.lower()} is not valid at top level")


# By type byte: the type and the "what" of its error texts, without the enum machinery.
_SERF_TYPES: dict[int, SerfType] = {int(t): t for t in SerfType}
_WHAT: dict[int, str] = {int(t): f"serf {t.name.lower()}" for t in SerfType}
_FAST_TYPES = frozenset({SerfType.JOIN, SerfType.LEAVE, SerfType.USER_EVENT})


def _fast_decode(st: SerfType, obj: object) -> Join | Leave | UserEvent | None:
    """A join or leave intent or a user event in the shape Serf writes, or ``None`` (then the
    ``Fields`` path decides, with the same record or the error).

    Intents and events are the Serf gossip of a join storm (every node's join intent reaches
    every node, several times), so their usual shape is recognised with plain lookups.
    """
    if type(obj) is not dict:
        return None
    ltime = obj.get(b"LTime")
    if type(ltime) is not int or not 0 <= ltime <= MAX_U64:
        return None
    if st is SerfType.USER_EVENT:
        name, payload, cc = obj.get(b"Name"), obj.get(b"Payload"), obj.get(b"CC")
        if type(name) is bytes and (payload is None or type(payload) is bytes) and type(cc) is bool:
            return UserEvent(
                ltime,
                name.decode("utf-8", "surrogateescape"),
                payload if payload is not None else b"",
                cc,
            )
        return None
    node = obj.get(b"Node")
    if type(node) is not bytes:
        return None
    if st is SerfType.JOIN:
        return Join(ltime, node.decode("utf-8", "surrogateescape"))
    prune = obj.get(b"Prune")
    if type(prune) is bool:
        return Leave(ltime, node.decode("utf-8", "surrogateescape"), prune)
    return None


_RELAY_ERRORS: tuple[type[Exception], ...] = (*MSGPACK_ERRORS, StopIteration)


def _decode_relay(body: bytes) -> Relay:
    unpacker = msgpack.Unpacker(
        raw=True,
        strict_map_key=False,
        max_buffer_size=max(len(body), 1),
        max_map_len=16,
        max_array_len=16,
    )
    try:
        unpacker.feed(body)
        header = unpacker.unpack()
    except _RELAY_ERRORS as exc:
        raise DecodeError(f"serf relay: bad header ({type(exc).__name__})") from exc
    inner = body[unpacker.tell() :]
    f = _fields(header, "serf relay")
    dest = _fields(f.get("DestAddr"), "serf relay DestAddr")
    try:
        addr = Address.from_packed(dest.blob("IP"), dest.uint("Port", MAX_U16))
    except ValueError:
        raise DecodeError("serf relay: bad DestAddr IP") from None
    if not inner:
        raise DecodeError("serf relay: no message to forward")
    return Relay(addr, f.string("DestName"), inner)


def decode_filter(buf: bytes) -> Filter:
    """One query filter; ``DecodeError`` for unknown types (the node then skips the query)."""
    if not buf:
        raise DecodeError("filter: empty")
    obj = _unpack(bytes(buf[1:]), "filter")
    if buf[0] == FilterType.NODE:
        if not isinstance(obj, list):
            raise DecodeError("node filter: not an array")
        return NodeFilter(tuple(text(x, "node filter entry") for x in obj))
    if buf[0] == FilterType.TAG:
        f = _fields(obj, "tag filter")
        return TagFilter(f.string("Tag"), f.string("Expr"))
    raise DecodeError(f"filter: unknown type {buf[0]}")


def decode_member(obj: object) -> MemberRecord:
    f = _fields(obj, "member")
    return MemberRecord(
        name=f.string("Name"),
        addr=f.blob("Addr"),
        port=f.uint("Port", MAX_U16),
        tags=f.str_map("Tags"),
        status=f.int_("Status"),
        protocol_min=f.uint("ProtocolMin", MAX_U8),
        protocol_max=f.uint("ProtocolMax", MAX_U8),
        protocol_cur=f.uint("ProtocolCur", MAX_U8),
        delegate_min=f.uint("DelegateMin", MAX_U8),
        delegate_max=f.uint("DelegateMax", MAX_U8),
        delegate_cur=f.uint("DelegateCur", MAX_U8),
    )


def decode_conflict_response(buf: bytes) -> MemberRecord | None:
    if not buf or buf[0] != SerfType.CONFLICT_RESPONSE:
        raise DecodeError("conflict response: wrong type byte")
    obj = _unpack(bytes(buf[1:]), "conflict response")
    return None if obj is None else decode_member(obj)


def decode_key_request(buf: bytes) -> KeyRequest:
    if not buf or buf[0] != SerfType.KEY_REQUEST:
        raise DecodeError("key request: wrong type byte")
    return KeyRequest(_fields(_unpack(bytes(buf[1:]), "key request"), "key request").blob("Key"))


def decode_key_response(buf: bytes) -> KeyResponse:
    if not buf or buf[0] != SerfType.KEY_RESPONSE:
        raise DecodeError("key response: wrong type byte")
    f = _fields(_unpack(bytes(buf[1:]), "key response"), "key response")
    raw_keys = f.get("Keys")
    keys = None
    if raw_keys is not None:
        if not isinstance(raw_keys, list):
            raise DecodeError("key response: Keys is not an array")
        keys = tuple(text(k, "key response key") for k in raw_keys)
    return KeyResponse(f.boolean("Result"), f.string("Message"), keys, f.string("PrimaryKey"))
