"""Encode and decode single memberlist messages (``[type byte][msgpack body]``).

Owns the Go-compatible msgpack dialect of the gossip path (go-msgpack 0.5.5 with memberlist's
defaults): strings and byte slices are both old-spec raw (``use_bin_type=False``: ``0xa0-0xbf``,
``0xda``, ``0xdb``, never str8 or bin), struct keys are emitted sorted by Go field name, and a
decoder is *total*: any input gives a message or a :class:`DecodeError`, never another exception.

Decoding is a little stricter than Go where Go would crash or where only a hostile peer would
differ: a ``Vsn`` must be empty or exactly 6 bytes (memberlist 0.2.2 panics on 1..5 bytes),
trailing bytes after a body are an error, and containers are capped (``MAX_MAP_LEN``).  It is
more lenient in one place: a string field sent as msgpack bin is accepted (Go drops the
message), because the raw-mode unpacker cannot tell bin from str.

Packet-level framing (compound, CRC, compression) is in ``packet.py``; stream framing in
``stream.py``.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .messages import (
    VSN_LEN,
    Ack,
    Alive,
    Dead,
    Err,
    IndirectPing,
    Message,
    MessageType,
    Nack,
    Ping,
    PushNodeState,
    Suspect,
    UserMsg,
)

MAX_U32 = 0xFFFF_FFFF
MAX_U16 = 0xFFFF


class DecodeError(ValueError):
    """Bytes from a peer that are not a valid message.  Count, log and drop; never fatal."""


class FramingError(DecodeError):
    """A stream failed its first reading stage: size limit, encryption mismatch or a bad
    compress wrapper.  memberlist (net.go readStream) answers these with an ``err`` message;
    errors in the message body itself are only logged."""


def pack(obj: Any) -> bytes:
    """msgpack as Go's gossip codec writes it: raw strings, no bin, no str8."""
    try:
        return msgpack.packb(obj, use_bin_type=False)
    except UnicodeEncodeError:
        # A string decoded from a peer keeps invalid UTF-8 as surrogate escapes (``text``: Go
        # strings are bytes); re-gossiping it must write those bytes back as they came.
        return msgpack.packb(obj, use_bin_type=False, unicode_errors="surrogateescape")


def pack_struct(pairs: dict[str, Any]) -> bytes:
    """A Go struct as go-msgpack writes it: a map with the fields sorted by Go field name
    (not declaration order), in the gossip dialect."""
    return pack(dict(sorted(pairs.items())))


def encode_body(msg: Message) -> bytes:
    """The msgpack body of a map-bodied message (no type byte)."""
    if isinstance(msg, Ping):
        return pack_struct(_with_source({"SeqNo": msg.seq_no, "Node": msg.node}, msg))
    if isinstance(msg, IndirectPing):
        d: dict[str, Any] = {
            "SeqNo": msg.seq_no,
            "Target": msg.target,
            "Port": msg.port,
            "Node": msg.node,
            "Nack": msg.nack,
        }
        return pack_struct(_with_source(d, msg))
    if isinstance(msg, Ack):
        return pack_struct({"SeqNo": msg.seq_no, "Payload": msg.payload})
    if isinstance(msg, Nack):
        return pack_struct({"SeqNo": msg.seq_no})
    if isinstance(msg, Suspect | Dead):
        # Fields already in Go's sorted order (what ``pack_struct`` would produce): these and
        # alive are queued for every member a storm or a merge changes.
        return pack({"From": msg.from_, "Incarnation": msg.incarnation, "Node": msg.node})
    if isinstance(msg, Alive):
        _check_vsn(msg.vsn)
        return pack(
            {
                "Addr": msg.addr,
                "Incarnation": msg.incarnation,
                "Meta": msg.meta,
                "Node": msg.node,
                "Port": msg.port,
                "Vsn": msg.vsn,
            }
        )
    if isinstance(msg, Err):
        return pack_struct({"Error": msg.error})
    raise TypeError(f"{type(msg).__name__} has no single map body")


def _with_source(d: dict[str, Any], msg: Ping | IndirectPing) -> dict[str, Any]:
    # memberlist tags only the Source* fields omitempty: left out when zero/empty.
    if msg.source_addr:
        d["SourceAddr"] = msg.source_addr
    if msg.source_port:
        d["SourcePort"] = msg.source_port
    if msg.source_node:
        d["SourceNode"] = msg.source_node
    return d


def _check_vsn(vsn: bytes) -> None:
    # memberlist 0.2.2 indexes Vsn[0..5] whenever it is non-empty: 1..5 bytes make it panic.
    if vsn and len(vsn) != VSN_LEN:
        raise ValueError(f"Vsn must be empty or {VSN_LEN} bytes, got {len(vsn)}")


def encode_node_state(ns: PushNodeState) -> bytes:
    _check_vsn(ns.vsn)
    # Go's sorted field order written out (``pack_struct`` would sort the same keys per call):
    # a push/pull encodes one of these per member.
    return pack(
        {
            "Addr": ns.addr,
            "Incarnation": ns.incarnation,
            "Meta": ns.meta,
            "Name": ns.name,
            "Port": ns.port,
            "State": ns.state,
            "Vsn": ns.vsn,
        }
    )


_TYPE_OF: dict[type, MessageType] = {
    Ping: MessageType.PING,
    IndirectPing: MessageType.INDIRECT_PING,
    Ack: MessageType.ACK,
    Nack: MessageType.NACK,
    Suspect: MessageType.SUSPECT,
    Alive: MessageType.ALIVE,
    Dead: MessageType.DEAD,
    Err: MessageType.ERR,
}
_PACKET_TYPES = frozenset(_TYPE_OF.values())


# Decoded gossip (alive, suspect, dead) by its exact bytes, type byte included.  A broadcast is
# re-gossiped unchanged by every member that learns it, so a member receives the same bytes about
# ``retransmit_limit`` times (a join storm of N nodes decodes ~N^2 x limit alive messages of
# which about N differ); the records are immutable values, so the one decoded first is shared.
# Only successful decodes are kept, and decoding is a function of the bytes alone, so the cache
# changes no result.  Bounded: emptied when full (a cluster has about one live broadcast per
# member at a time).  ``_encoded`` below is its counterpart for encoding.
GOSSIP_CACHE_MAX = 4096
gossip_cache: dict[bytes, Message] = {}
_GOSSIP_TYPES = frozenset(
    int(t) for t in (MessageType.ALIVE, MessageType.SUSPECT, MessageType.DEAD)
)

# Encoded gossip by record, the record itself kept alongside so that its ``id`` stays its own
# while cached.  A member re-broadcasts the alive, suspect or dead it learns as it got it, and
# the same decoded record (``gossip_cache``) reaches every member: a join storm of N nodes
# encodes each of N alive records N times.  Records are immutable, so their encoding is too.
_GOSSIP_CLASSES = (Alive, Suspect, Dead)
_encoded: dict[int, tuple[Message, bytes]] = {}


def encode_message(msg: Message) -> bytes:
    """``[type][body]`` for a packet message.  ``UserMsg`` becomes ``08`` + payload (UDP form)."""
    cls = type(msg)
    if cls in _GOSSIP_CLASSES:
        hit = _encoded.get(id(msg))
        if hit is not None and hit[0] is msg:
            return hit[1]
        data = bytes([_TYPE_OF[cls]]) + encode_body(msg)
        if len(_encoded) >= GOSSIP_CACHE_MAX:
            _encoded.clear()
        _encoded[id(msg)] = (msg, data)
        return data
    if isinstance(msg, UserMsg):
        return bytes([MessageType.USER]) + msg.payload
    t = _TYPE_OF.get(cls)
    if t is None:
        raise TypeError(f"{cls.__name__} is not a packet message")
    return bytes([t]) + encode_body(msg)


# ---------------------------------------------------------------------------------------------
# Decoding: schema-checked field access on a raw=True unpacked map.


class Fields:
    """Typed accessors over a decoded msgpack map whose keys are bytes (``raw=True``).

    Shared by every gossip-dialect decoder (memberlist bodies here, Serf's messages in
    ``serf.messages``).  A missing or nil field is the Go zero value; a field of the wrong type
    is a :class:`DecodeError` naming ``what`` and the key.  ``uint_limit`` is the range of
    ``uint`` fields when the caller names none (memberlist: uint32; Serf's LTimes: uint64).
    """

    __slots__ = ("_d", "_uint_limit", "_what")

    def __init__(self, obj: object, what: str, uint_limit: int = MAX_U32) -> None:
        if not isinstance(obj, dict):
            raise DecodeError(f"{what}: body is not a map")
        self._d: dict[Any, Any] = obj
        self._what = what
        self._uint_limit = uint_limit

    def get(self, key: str) -> Any:
        """The raw value of ``key`` (``None`` when missing)."""
        return self._d.get(key.encode())

    def uint(self, key: str, limit: int | None = None) -> int:
        v = self.get(key)
        if limit is None:
            limit = self._uint_limit
        if v is None:
            return 0
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > limit:
            raise DecodeError(f"{self._what}: {key} is not an integer in 0..{limit}")
        return v

    def int_(self, key: str) -> int:
        v = self.get(key)
        if v is None:
            return 0
        if isinstance(v, bool) or not isinstance(v, int):
            raise DecodeError(f"{self._what}: {key} is not an integer")
        return v

    def boolean(self, key: str) -> bool:
        v = self.get(key)
        if v is None:
            return False
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):  # Go accepts fixint 0/1 for bool
            return bool(v)
        raise DecodeError(f"{self._what}: {key} is not a bool")

    def string(self, key: str) -> str:
        return text(self.get(key), f"{self._what}: {key}")

    def blob(self, key: str) -> bytes:
        v = self.opt_blob(key)
        return v if v is not None else b""

    def opt_blob(self, key: str) -> bytes | None:
        v = self.get(key)
        if v is None:
            return None
        if not isinstance(v, bytes):
            raise DecodeError(f"{self._what}: {key} is not a byte string")
        return v

    def array(self, key: str) -> list[Any]:
        v = self.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise DecodeError(f"{self._what}: {key} is not an array")
        return v

    def str_map(self, key: str) -> dict[str, str]:
        v = self.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise DecodeError(f"{self._what}: {key} is not a map")
        return {
            text(k, f"{self._what}: {key} key"): text(x, f"{self._what}: {key} value")
            for k, x in v.items()
        }

    def vsn(self) -> bytes:
        v = self.blob("Vsn")
        if v and len(v) != VSN_LEN:
            # memberlist 0.2.2 panics on 1..5 bytes; we refuse anything but 0 or 6.
            raise DecodeError(f"{self._what}: Vsn has {len(v)} bytes, want {VSN_LEN}")
        return v


def text(v: object, what: str) -> str:
    """A raw-mode msgpack string (bytes) as ``str``; nil is ``""``.  Invalid UTF-8 survives
    as surrogate escapes (Go strings are bytes)."""
    if v is None:
        return ""
    if not isinstance(v, bytes):
        raise DecodeError(f"{what} is not a string")
    return v.decode("utf-8", "surrogateescape")


# Limit on msgpack maps and arrays in gossip bodies.  Go never sends a body with more than a
# handful of fields (the widest, indirect ping, has 8) and no arrays at all at this layer; the cap
# only stops a hostile length header from making the unpacker pre-allocate a huge list or dict.
MAX_MAP_LEN = 64

# Every exception msgpack's unpacker raises on malformed input: ``ValueError`` and its
# subclasses (``ExtraData``, ``FormatError``, ``StackError``, bad ext data), ``TypeError``
# (unhashable map keys) and the ``UnpackException`` base (``OutOfData``).
MSGPACK_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, msgpack.UnpackException)


def unpack_one(buf: bytes, what: str, max_container: int = MAX_MAP_LEN) -> Any:
    """Unpack exactly one msgpack object (raw=True); trailing bytes are an error.

    ``max_container`` caps every map and array (the default suits memberlist bodies; Serf's
    push/pull passes its own).  ``unpackb`` also caps strings by the input length, so no header
    can make it allocate more than the packet could hold.
    """
    try:
        return msgpack.unpackb(
            buf,
            raw=True,
            strict_map_key=False,
            max_map_len=max_container,
            max_array_len=max_container,
        )
    except MSGPACK_ERRORS as exc:
        raise DecodeError(f"{what}: bad msgpack ({type(exc).__name__})") from exc


# Lower-case message type names (error texts) and the types by wire byte, looked up per
# message instead of going through the enum machinery.
_NAMES: dict[int, str] = {int(t): t.name.lower() for t in MessageType}
_MESSAGE_TYPES: dict[int, MessageType] = {int(t): t for t in MessageType}


def _fast_alive(obj: object) -> Alive | None:
    """An alive body in the shape memberlist writes, or ``None`` (then ``decode_body`` decides).

    Alive, suspect and dead are the gossip of a join storm - every node hears about every
    other many times - so their usual shape is recognised with plain lookups and type tests;
    the record is the one ``decode_body`` would build.
    """
    if type(obj) is not dict:
        return None
    node, addr, port = obj.get(b"Node"), obj.get(b"Addr"), obj.get(b"Port")
    inc, meta, vsn = obj.get(b"Incarnation"), obj.get(b"Meta"), obj.get(b"Vsn")
    if (
        type(node) is bytes
        and type(addr) is bytes
        and type(port) is int
        and 0 <= port <= MAX_U16
        and type(inc) is int
        and 0 <= inc <= MAX_U32
        and (meta is None or type(meta) is bytes)
        and type(vsn) is bytes
        and len(vsn) == VSN_LEN
    ):
        return Alive(inc, node.decode("utf-8", "surrogateescape"), addr, port, meta, vsn)
    return None


def _fast_accusation(obj: object, cls: type[Suspect] | type[Dead]) -> Suspect | Dead | None:
    """A suspect or dead body in its usual shape, or ``None`` (see ``_fast_alive``)."""
    if type(obj) is not dict:
        return None
    inc, node, from_ = obj.get(b"Incarnation"), obj.get(b"Node"), obj.get(b"From")
    if type(inc) is int and 0 <= inc <= MAX_U32 and type(node) is bytes and type(from_) is bytes:
        return cls(
            inc, node.decode("utf-8", "surrogateescape"), from_.decode("utf-8", "surrogateescape")
        )
    return None


def decode_body(mtype: MessageType, obj: object) -> Message:
    """Build a record from an unpacked map body."""
    if mtype == MessageType.ALIVE:
        fast: Message | None = _fast_alive(obj)
    elif mtype == MessageType.SUSPECT:
        fast = _fast_accusation(obj, Suspect)
    elif mtype == MessageType.DEAD:
        fast = _fast_accusation(obj, Dead)
    else:
        fast = None
    if fast is not None:
        return fast
    name = _NAMES[mtype]
    f = Fields(obj, name)
    if mtype is MessageType.PING:
        return Ping(
            seq_no=f.uint("SeqNo"),
            node=f.string("Node"),
            source_addr=f.blob("SourceAddr"),
            source_port=f.uint("SourcePort", MAX_U16),
            source_node=f.string("SourceNode"),
        )
    if mtype is MessageType.INDIRECT_PING:
        return IndirectPing(
            seq_no=f.uint("SeqNo"),
            target=f.blob("Target"),
            port=f.uint("Port", MAX_U16),
            node=f.string("Node"),
            nack=f.boolean("Nack"),
            source_addr=f.blob("SourceAddr"),
            source_port=f.uint("SourcePort", MAX_U16),
            source_node=f.string("SourceNode"),
        )
    if mtype is MessageType.ACK:
        return Ack(seq_no=f.uint("SeqNo"), payload=f.opt_blob("Payload"))
    if mtype is MessageType.NACK:
        return Nack(seq_no=f.uint("SeqNo"))
    if mtype is MessageType.SUSPECT:
        return Suspect(f.uint("Incarnation"), f.string("Node"), f.string("From"))
    if mtype is MessageType.DEAD:
        return Dead(f.uint("Incarnation"), f.string("Node"), f.string("From"))
    if mtype is MessageType.ALIVE:
        return Alive(
            incarnation=f.uint("Incarnation"),
            node=f.string("Node"),
            addr=f.blob("Addr"),
            port=f.uint("Port", MAX_U16),
            meta=f.opt_blob("Meta"),
            vsn=f.vsn(),
        )
    if mtype is MessageType.ERR:
        return Err(f.string("Error"))
    raise DecodeError(f"message type {int(mtype)} has no map body")


def decode_node_state(obj: object) -> PushNodeState:
    """One ``pushNodeState`` from its unpacked map; ``DecodeError`` as ``Fields`` words it.

    A push/pull carries one per member, so the shape every memberlist writes (all fields
    present with their Go types, a 6-byte ``Vsn``) is recognised with plain dict lookups and
    type tests; anything else - missing, nil or odd fields, or an error to report - takes the
    general ``Fields`` path, which gives the same record or the same error.
    """
    if type(obj) is dict:
        name, addr, port = obj.get(b"Name"), obj.get(b"Addr"), obj.get(b"Port")
        meta, inc, state, vsn = (
            obj.get(b"Meta"),
            obj.get(b"Incarnation"),
            obj.get(b"State"),
            obj.get(b"Vsn"),
        )
        if (
            type(name) is bytes
            and type(addr) is bytes
            and type(port) is int
            and 0 <= port <= MAX_U16
            and (meta is None or type(meta) is bytes)
            and type(inc) is int
            and 0 <= inc <= MAX_U32
            and type(state) is int
            and 0 <= state <= 3
            and type(vsn) is bytes
            and len(vsn) == VSN_LEN
        ):
            return PushNodeState(
                name.decode("utf-8", "surrogateescape"), addr, port, meta, inc, state, vsn
            )
    return _decode_node_state_fields(obj)


def _decode_node_state_fields(obj: object) -> PushNodeState:
    f = Fields(obj, "push_node_state")
    state = f.int_("State")
    if not 0 <= state <= 3:
        raise DecodeError(f"push_node_state: unknown State {state}")
    return PushNodeState(
        name=f.string("Name"),
        addr=f.blob("Addr"),
        port=f.uint("Port", MAX_U16),
        meta=f.opt_blob("Meta"),
        incarnation=f.uint("Incarnation"),
        state=state,
        vsn=f.vsn(),
    )


def decode_message(buf: bytes) -> Message:
    """Decode one non-framing packet message (``[type][body]``); raise ``DecodeError``.

    Framing types (compound, compress, CRC, encrypt) and stream-only push/pull are handled by
    ``packet.py`` / ``stream.py``; passing them here is a ``DecodeError``.
    """
    if not buf:
        raise DecodeError("empty message")
    t = buf[0]
    if t in _GOSSIP_TYPES and type(buf) is bytes:
        cached = gossip_cache.get(buf)
        if cached is not None:
            return cached
        msg = decode_body(_MESSAGE_TYPES[t], unpack_one(buf[1:], _NAMES[t]))
        if len(gossip_cache) >= GOSSIP_CACHE_MAX:
            gossip_cache.clear()
        gossip_cache[buf] = msg
        return msg
    if t == MessageType.USER:
        return UserMsg(bytes(buf[1:]))
    mtype = _MESSAGE_TYPES.get(t)
    if mtype is None:
        raise DecodeError(f"message type {t} not supported")
    name = _NAMES[t]
    if mtype not in _PACKET_TYPES:
        raise DecodeError(f"message type {name} not valid here")
    return decode_body(mtype, unpack_one(bytes(buf[1:]), name))
