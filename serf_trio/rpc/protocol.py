"""Serf's agent RPC protocol (v1): the one definition shared by the server and the client.

Owns everything both ends must agree on, so no constant is written twice:

* command names and the exact error strings Serf sends (clients and scripts match them);
* the field schema of every request body, and the decoder that checks a body against it;
* the msgpack dialect of the RPC port: ``use_bin_type=True`` (str8 for 32..255-byte strings,
  bin for ``[]byte`` fields such as ``Payload`` and ``Addr``), ``raw=False`` when reading, and
  struct keys sorted by Go field name (go-msgpack sorts struct fields; Go *maps* such as tags
  keep whatever order the sender chose);
* the encoders/decoders of response bodies and stream records (members, key responses,
  coordinates, query/stream/log records);
* :class:`FrameReader`, an incremental, sans-IO reader (feed bytes, get objects) with a size
  cap: RPC frames are bare concatenated msgpack objects with no length prefix, so the only
  defence against a huge or endless object is to stop buffering at a limit.

No I/O here, and no trio/structlog: the CLI imports this module and must start fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from .api import (
    EventRecord,
    KeyResponse,
    MemberEventRecord,
    QueryEventRecord,
    QueryRecord,
    RpcMember,
    UserEventRecord,
)

if TYPE_CHECKING:
    from ..serf.coordinate import Coordinate

IPC_VERSION = 1  # the only RPC protocol version Serf has ever had

# -- commands (ipc.go command constants) ------------------------------------------------------
HANDSHAKE = "handshake"
AUTH = "auth"
EVENT = "event"
FORCE_LEAVE = "force-leave"
JOIN = "join"
MEMBERS = "members"
MEMBERS_FILTERED = "members-filtered"
STREAM = "stream"
STOP = "stop"
MONITOR = "monitor"
LEAVE = "leave"
INSTALL_KEY = "install-key"
USE_KEY = "use-key"
REMOVE_KEY = "remove-key"
LIST_KEYS = "list-keys"
TAGS = "tags"
QUERY = "query"
RESPOND = "respond"
STATS = "stats"
GET_COORDINATE = "get-coordinate"

# -- error strings (verbatim from Serf: clients compare them) ---------------------------------
ERR_UNSUPPORTED_COMMAND = "Unsupported command"
ERR_UNSUPPORTED_VERSION = "Unsupported IPC version"
ERR_DUPLICATE_HANDSHAKE = "Handshake already performed"
ERR_HANDSHAKE_REQUIRED = "Handshake required"
ERR_MONITOR_EXISTS = "Monitor already exists"
ERR_INVALID_FILTER = "Invalid event filter"
ERR_STREAM_EXISTS = "Stream with given sequence exists"
ERR_INVALID_QUERY_ID = "No pending queries matching ID"
ERR_AUTH_REQUIRED = "Authentication required"
ERR_INVALID_AUTH_TOKEN = "Invalid authentication token"


def err_unknown_log_level(level: str) -> str:
    """Serf upper-cases the requested level before quoting it."""
    return f"Unknown log level: {level.upper()}"


# Serf's log levels (logutils filter), lowest first.  ``monitor`` matches case-insensitively.
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERR")

MEMBER_EVENTS = ("member-join", "member-leave", "member-failed", "member-update", "member-reap")


def valid_event_filter(spec: str) -> bool:
    """RPC.md 6: a comma list of member events, ``user[:NAME]``, ``query[:NAME]`` or ``*``.

    An empty string means ``*``.
    """
    for word in spec.split(","):
        word = word.strip()
        if word in ("", "*", "user", "query") or word in MEMBER_EVENTS:
            continue
        if word.startswith(("user:", "query:")):
            continue
        return False
    return True


# -- field schemas -----------------------------------------------------------------------------


class Kind(Enum):
    """How a Go field type appears in msgpack, and what Python value it decodes to."""

    STR = "string"  # str; nil -> ""
    BYTES = "[]byte"  # bytes (str accepted too: old raw form); nil -> b""
    BOOL = "bool"  # bool (fixint 0/1 accepted, as go-msgpack does)
    UINT = "uint64"
    UINT8 = "uint8"
    INT = "int64"  # also int32 and time.Duration (nanoseconds)
    STR_LIST = "[]string"  # list[str]; nil -> []
    STR_MAP = "map[string]string"  # dict[str, str]; nil -> {}


Schema = Mapping[str, Kind]

# Request bodies by command (RPC.md 3).  Commands missing here send no body.
REQUEST_BODIES: dict[str, Schema] = {
    HANDSHAKE: {"Version": Kind.INT},
    AUTH: {"AuthKey": Kind.STR},
    EVENT: {"Coalesce": Kind.BOOL, "Name": Kind.STR, "Payload": Kind.BYTES},
    FORCE_LEAVE: {"Node": Kind.STR, "Prune": Kind.BOOL},
    JOIN: {"Existing": Kind.STR_LIST, "Replay": Kind.BOOL},
    MEMBERS_FILTERED: {"Name": Kind.STR, "Status": Kind.STR, "Tags": Kind.STR_MAP},
    TAGS: {"DeleteTags": Kind.STR_LIST, "Tags": Kind.STR_MAP},
    STREAM: {"Type": Kind.STR},
    MONITOR: {"LogLevel": Kind.STR},
    STOP: {"Stop": Kind.UINT},
    QUERY: {
        "FilterNodes": Kind.STR_LIST,
        "FilterTags": Kind.STR_MAP,
        "Name": Kind.STR,
        "Payload": Kind.BYTES,
        "RelayFactor": Kind.UINT8,
        "RequestAck": Kind.BOOL,
        "Timeout": Kind.INT,
    },
    RESPOND: {"ID": Kind.UINT, "Payload": Kind.BYTES},
    INSTALL_KEY: {"Key": Kind.STR},
    USE_KEY: {"Key": Kind.STR},
    REMOVE_KEY: {"Key": Kind.STR},
    GET_COORDINATE: {"Node": Kind.STR},
}
NO_BODY_COMMANDS = frozenset({MEMBERS, LEAVE, LIST_KEYS, STATS})
COMMANDS = frozenset(REQUEST_BODIES) | NO_BODY_COMMANDS

# Commands whose response header is always followed by a body, even when Error is set
# (the Go client decodes that body unconditionally).
RESPONSE_HAS_BODY = frozenset(
    {JOIN, MEMBERS, MEMBERS_FILTERED, INSTALL_KEY, USE_KEY, REMOVE_KEY, LIST_KEYS, STATS,
     GET_COORDINATE}
)  # fmt: skip

_U64 = (1 << 64) - 1
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


class ProtocolError(ValueError):
    """Bytes or objects from the peer that do not follow the protocol (close the connection)."""


def _str(v: Any, name: str) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    # go-msgpack refuses bin in a string field (WIRE.md 1.2).
    raise ProtocolError(f"{name}: expected a string, got {type(v).__name__}")


def _field(kind: Kind, v: Any, name: str) -> Any:
    if kind is Kind.STR:
        return _str(v, name)
    if kind is Kind.BYTES:
        if v is None:
            return b""
        if isinstance(v, bytes):
            return v
        if isinstance(v, str):  # old-spec raw arrives as str with raw=False
            return v.encode("utf-8", "surrogateescape")
        raise ProtocolError(f"{name}: expected bytes, got {type(v).__name__}")
    if kind is Kind.BOOL:
        if v is None:
            return False
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise ProtocolError(f"{name}: expected a bool")
    if kind in (Kind.UINT, Kind.UINT8, Kind.INT):
        if v is None:
            return 0
        if not isinstance(v, int) or isinstance(v, bool):
            raise ProtocolError(f"{name}: expected an integer")
        lo, hi = {Kind.UINT: (0, _U64), Kind.UINT8: (0, 255), Kind.INT: (_I64_MIN, _I64_MAX)}[kind]
        if not lo <= v <= hi:
            raise ProtocolError(f"{name}: {v} out of range")
        return v
    if kind is Kind.STR_LIST:
        if v is None:
            return []
        if not isinstance(v, list):
            raise ProtocolError(f"{name}: expected an array")
        return [_str(x, name) for x in v]
    # Kind.STR_MAP
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ProtocolError(f"{name}: expected a map")
    return {_str(k, name): _str(x, name) for k, x in v.items()}


def decode_struct(schema: Schema, obj: Any) -> dict[str, Any]:
    """Check a decoded map against a schema as go-msgpack would decode it into a struct.

    Unknown keys are ignored, missing keys get the zero value, nil is the zero value.
    """
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a map, got {type(obj).__name__}")
    return {name: _field(kind, obj.get(name), name) for name, kind in schema.items()}


def decode_request_body(command: str, obj: Any) -> dict[str, Any]:
    return decode_struct(REQUEST_BODIES[command], obj)


class RequestHeader(NamedTuple):  # not a dataclass: cheaper to create (CLI start)
    command: str
    seq: int


class ResponseHeader(NamedTuple):  # not a dataclass: cheaper to create (CLI start)
    seq: int
    error: str


def decode_request_header(obj: Any) -> RequestHeader:
    d = decode_struct({"Command": Kind.STR, "Seq": Kind.UINT}, obj)
    if "Command" not in obj:
        raise ProtocolError("request header without Command")
    return RequestHeader(d["Command"], d["Seq"])


def is_response_header(obj: Any) -> bool:
    """A response header is a map of exactly ``Error`` (str) and ``Seq`` (int)."""
    return (
        isinstance(obj, dict)
        and set(obj) == {"Error", "Seq"}
        and isinstance(obj["Error"], str)
        and isinstance(obj["Seq"], int)
    )


def decode_response_header(obj: Any) -> ResponseHeader:
    if not is_response_header(obj):
        raise ProtocolError("not a response header")
    return ResponseHeader(obj["Seq"], obj["Error"])


# -- encoding ----------------------------------------------------------------------------------


def pack(obj: Any) -> bytes:
    """msgpack as Serf's RPC codec writes it (str8 allowed, ``bytes`` as bin)."""
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
    except UnicodeEncodeError:
        # A member name (or tag) from a peer that was not valid UTF-8 is held with surrogate
        # escapes (``wire.codec.text``); it goes to RPC clients as the bytes it came as (Serf
        # passes Go strings through), instead of failing every ``members`` answer.
        data = msgpack.packb(obj, use_bin_type=True, unicode_errors="surrogateescape")
    return data


def struct(**fields: Any) -> dict[str, Any]:
    """A Go struct as a map: keys sorted by field name (go-msgpack sorts struct fields)."""
    return dict(sorted(fields.items()))


def encode_request(command: str, seq: int, body: Mapping[str, Any] | None = None) -> bytes:
    """Request header (+ body, keys sorted) as one buffer, ready for a single write."""
    out = pack(struct(Command=command, Seq=seq))
    if body is not None:
        out += pack(dict(sorted(body.items())))
    return out


def encode_response(
    seq: int, error: str = "", body: Any = None, *, has_body: bool = False
) -> bytes:
    """Response header (+ body) as one buffer: header and body must not be split by others."""
    out = pack(struct(Error=error, Seq=seq))
    if has_body:
        out += pack(body)
    return out


def member_to_wire(m: RpcMember) -> dict[str, Any]:
    """RpcMember -> Serf's ``Member`` struct (ipc.go), keys in go-msgpack order."""
    return struct(
        Addr=bytes(m.addr),
        DelegateCur=m.delegate_cur,
        DelegateMax=m.delegate_max,
        DelegateMin=m.delegate_min,
        Name=m.name,
        Port=m.port,
        ProtocolCur=m.protocol_cur,
        ProtocolMax=m.protocol_max,
        ProtocolMin=m.protocol_min,
        Status=m.status,
        Tags=dict(m.tags),  # a Go map: the order is the sender's, not sorted
    )


_MEMBER_SCHEMA: Schema = {
    "Addr": Kind.BYTES,
    "DelegateCur": Kind.UINT8,
    "DelegateMax": Kind.UINT8,
    "DelegateMin": Kind.UINT8,
    "Name": Kind.STR,
    "Port": Kind.UINT,
    "ProtocolCur": Kind.UINT8,
    "ProtocolMax": Kind.UINT8,
    "ProtocolMin": Kind.UINT8,
    "Status": Kind.STR,
    "Tags": Kind.STR_MAP,
}


def member_from_wire(obj: Any) -> RpcMember:
    d = decode_struct(_MEMBER_SCHEMA, obj)
    return RpcMember(
        name=d["Name"],
        addr=d["Addr"],
        port=d["Port"],
        tags=d["Tags"],
        status=d["Status"],
        protocol_min=d["ProtocolMin"],
        protocol_max=d["ProtocolMax"],
        protocol_cur=d["ProtocolCur"],
        delegate_min=d["DelegateMin"],
        delegate_max=d["DelegateMax"],
        delegate_cur=d["DelegateCur"],
    )


def members_body(members: list[RpcMember]) -> dict[str, Any]:
    return {"Members": [member_to_wire(m) for m in members]}


def members_from_body(obj: Any) -> list[RpcMember]:
    if not isinstance(obj, dict) or not isinstance(obj.get("Members", []), list | None):
        raise ProtocolError("bad members body")
    return [member_from_wire(m) for m in obj.get("Members") or []]


def join_body(num: int) -> dict[str, Any]:
    return {"Num": num}


def key_response_body(kr: KeyResponse) -> dict[str, Any]:
    return struct(
        Keys=kr.keys, Messages=dict(kr.messages), NumErr=kr.num_err, NumNodes=kr.num_nodes,
        NumResp=kr.num_resp,
    )  # fmt: skip


def key_response_from_body(obj: Any, error: str = "") -> KeyResponse:
    if not isinstance(obj, dict):
        raise ProtocolError("bad key response body")
    keys = obj.get("Keys")
    if keys is not None and not isinstance(keys, dict):
        raise ProtocolError("bad Keys")
    d = decode_struct(
        {"Messages": Kind.STR_MAP, "NumErr": Kind.INT, "NumNodes": Kind.INT, "NumResp": Kind.INT},
        obj,
    )
    if keys is not None:
        # Keys is a Go map[string]int: an integer per key (int() took "7" and 1.5, and raised
        # TypeError on nil, a list or a map).
        keys = {_str(k, "Keys"): _field(Kind.INT, v, "Keys") for k, v in keys.items()}
    return KeyResponse(
        keys=keys,
        messages=d["Messages"],
        num_nodes=d["NumNodes"],
        num_resp=d["NumResp"],
        num_err=d["NumErr"],
        error=error,
    )


def coordinate_body(coord: Coordinate | None) -> dict[str, Any]:
    """``{Coord, Ok}``; an unknown node gets a zero coordinate with a nil ``Vec`` (ipc.go)."""
    if coord is None:
        c = struct(Adjustment=0.0, Error=0.0, Height=0.0, Vec=None)
    else:
        c = struct(
            Adjustment=float(coord.adjustment), Error=float(coord.error),
            Height=float(coord.height), Vec=[float(x) for x in coord.vec],
        )  # fmt: skip
    return {"Coord": c, "Ok": coord is not None}


def coordinate_from_body(obj: Any) -> Coordinate | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("Coord"), dict):
        raise ProtocolError("bad coordinate body")
    if not obj.get("Ok"):
        return None
    from ..serf.coordinate import Coordinate  # only ``rtt`` needs it: keep other commands lean

    c = obj["Coord"]
    try:
        return Coordinate(
            vec=tuple(float(x) for x in c.get("Vec") or ()),
            error=float(c.get("Error", 0.0)),
            adjustment=float(c.get("Adjustment", 0.0)),
            height=float(c.get("Height", 0.0)),
        )
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"bad coordinate: {exc}") from exc


def stats_body(stats: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    # A Go map of maps: Serf's order is random; sorting keeps our output reproducible.
    return {sec: dict(sorted(vals.items())) for sec, vals in sorted(stats.items())}


def stats_from_body(obj: Any) -> dict[str, dict[str, str]]:
    if not isinstance(obj, dict):
        raise ProtocolError("bad stats body")
    return {_str(k, "stats"): _field(Kind.STR_MAP, v, "stats") for k, v in obj.items()}


# -- stream records ----------------------------------------------------------------------------


def query_record_to_wire(rec: QueryRecord) -> dict[str, Any]:
    """ipc_query_response_stream.go: ``{From, Payload, Type}``; ack/done carry a nil payload."""
    return struct(From=rec.from_, Payload=rec.payload, Type=rec.type)


def query_record_from_wire(obj: Any) -> QueryRecord:
    if not isinstance(obj, dict):
        raise ProtocolError("bad query record")
    d = decode_struct({"From": Kind.STR, "Type": Kind.STR}, obj)
    payload = None if obj.get("Payload") is None else _field(Kind.BYTES, obj["Payload"], "Payload")
    return QueryRecord(type=d["Type"], from_=d["From"], payload=payload)


def event_record_to_wire(rec: EventRecord, query_id: int = 0) -> dict[str, Any]:
    """ipc_event_stream.go records.  ``query_id`` is the per-connection ID of a query record."""
    if isinstance(rec, MemberEventRecord):
        return struct(Event=rec.event, Members=[member_to_wire(m) for m in rec.members])
    if isinstance(rec, UserEventRecord):
        return struct(
            Coalesce=rec.coalesce, Event="user", LTime=rec.ltime, Name=rec.name,
            Payload=rec.payload,
        )  # fmt: skip
    return struct(Event="query", ID=query_id, LTime=rec.ltime, Name=rec.name, Payload=rec.payload)


def event_record_from_wire(obj: Any) -> EventRecord:
    """Decode a ``stream`` record; a query record's ``token`` is the connection's query ID."""
    if not isinstance(obj, dict):
        raise ProtocolError("bad stream record")
    event = _str(obj.get("Event"), "Event")
    if event == "user":
        d = decode_struct(
            {"Coalesce": Kind.BOOL, "LTime": Kind.UINT, "Name": Kind.STR, "Payload": Kind.BYTES},
            obj,
        )
        return UserEventRecord(d["Name"], d["Payload"], d["LTime"], d["Coalesce"])
    if event == "query":
        d = decode_struct(
            {"ID": Kind.UINT, "LTime": Kind.UINT, "Name": Kind.STR, "Payload": Kind.BYTES}, obj
        )
        return QueryEventRecord(d["Name"], d["Payload"], d["LTime"], d["ID"])
    members = obj.get("Members") or []
    if not isinstance(members, list):
        raise ProtocolError("bad Members")
    return MemberEventRecord(event, tuple(member_from_wire(m) for m in members))


def log_record(line: str) -> dict[str, Any]:
    return {"Log": line}


# -- incremental reader ------------------------------------------------------------------------

DEFAULT_MAX_OBJECT = 1 << 20  # 1 MiB: far above any request a client sends
_MAX_CHUNK = 64 * 1024


class FrameReader:
    """Feed bytes, get whole msgpack objects (``raw=False``: str as str, bin as bytes).

    Rule: an object still incomplete after ``max_object`` buffered bytes is rejected with
    :class:`ProtocolError`; so is any malformed input.  After an error the reader is unusable
    (the connection must be closed: without length prefixes there is no resynchronising).
    """

    def __init__(self, max_object: int = DEFAULT_MAX_OBJECT) -> None:
        self.max_object = max_object
        self._fed = 0
        self._boundary = 0
        self._broken = False
        self._unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=True,
            max_buffer_size=max_object + _MAX_CHUNK,
            # Start small (msgpack would allocate min(max_buffer_size, 1 MiB) per connection);
            # the buffer grows on demand up to max_buffer_size.
            read_size=min(max_object + _MAX_CHUNK, 64 * 1024),
            max_str_len=max_object,
            max_bin_len=max_object,
            max_array_len=max_object,
            max_map_len=max_object,
            max_ext_len=max_object,
        )

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes; return every object they complete, in order."""
        if self._broken:
            raise ProtocolError("reader already failed")
        out: list[Any] = []
        view = memoryview(data)
        try:
            for start in range(0, len(view), _MAX_CHUNK):
                piece = view[start : start + _MAX_CHUNK]
                self._unpacker.feed(piece)
                self._fed += len(piece)
                for obj in self._unpacker:
                    out.append(obj)
                    self._boundary = self._unpacker.tell()  # end of the last whole object
                if self.pending > self.max_object:
                    raise ProtocolError(f"object larger than {self.max_object} bytes")
        except ProtocolError:
            self._broken = True
            raise
        except (ValueError, TypeError, msgpack.exceptions.BufferFull) as exc:
            # UnpackValueError, FormatError, StackError and ExtraData are ValueErrors.
            self._broken = True
            raise ProtocolError(f"malformed msgpack: {exc}") from exc
        return out

    @property
    def pending(self) -> int:
        """Bytes received of the object not yet complete (the unpacker may have parsed part of
        it already: containers are consumed item by item, so this is what the cap measures)."""
        return self._fed - self._boundary
