"""TCP stream messages: push/pull, fallback ping/ack, stream user message, err.

A memberlist stream carries one message per direction and has no length prefix:
``[type][msgpack objects][opaque bytes]``.  The receiver reads a type byte and then as many
msgpack objects as the type needs; for push/pull the header says how many node states and how
many opaque user-state bytes follow, for a stream user message the ``UserMsgLen`` header does.
When compression is on, memberlist wraps *every* stream message (unconditionally, unlike UDP) in
``09`` + ``{"Algo": 0, "Buf": lzw(message)}``; the reader decompresses and then parses the
inner message, which must be complete.

``StreamParser`` is an incremental, size-capped reader: feed it bytes as they arrive and it says
when one complete message has been read, so a driver never has to guess how much to read.  It
keeps one resumable msgpack unpacker and a small state machine, so each byte is examined a
bounded number of times however the stream is chunked (a 20 MiB push/pull arriving in 4 KiB
pieces is linear, not quadratic).

Encrypted stream frames (type 10) are the keyring's business: the driver decrypts them and feeds
the plaintext.  A parser that meets one reports memberlist's own error text, which the receiver
sends back in an ``err`` reply (see ``encode_stream_error``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from .codec import (
    MSGPACK_ERRORS,
    DecodeError,
    Fields,
    FramingError,
    decode_body,
    decode_node_state,
    encode_body,
    encode_node_state,
    pack,
    unpack_one,
)
from .messages import (
    Ack,
    Err,
    Message,
    MessageType,
    Ping,
    PushNodeState,
    PushPull,
    UserMsg,
)
from .packet import compress_message, inflate

MAX_STREAM_BYTES = 20 * 1024 * 1024  # memberlist maxPushStateBytes
_UNPACKER_START = 64 * 1024  # below glibc's mmap threshold (128 KiB)
MAX_PUSH_NODES = 100_000  # far above any real cluster; bounds the work a header can ask for
# No stream object at this layer needs more than a handful of map entries or any array.
_MAX_CONTAINER = 64

# memberlist's error text for an encrypted stream reaching a node without a keyring.
ENCRYPTED_BUT_NOT_CONFIGURED = "Remote state is encrypted and encryption is not configured"


def encode_push_pull(
    join: bool, nodes: Sequence[bytes], user_state: bytes, *, compress: bool
) -> bytes:
    """A push/pull stream message from node states that are already encoded
    (``encode_node_state``), so a sender can keep each member's bytes between exchanges;
    byte for byte what ``encode_stream_message`` writes for the same ``PushPull``."""
    # pushPullHeader fields in Go's sorted order: Join, Nodes, UserStateLen.
    header = pack({"Join": join, "Nodes": len(nodes), "UserStateLen": len(user_state)})
    raw = b"".join((bytes([MessageType.PUSH_PULL]), header, *nodes, user_state))
    # memberlist compresses every stream message when compression is on, even if it grows.
    return compress_message(raw) if compress else raw


def encode_stream_message(msg: Message, *, compress: bool) -> bytes:
    """The bytes a sender writes for ``msg`` on a fresh stream (plaintext)."""
    if isinstance(msg, PushPull):
        nodes = [encode_node_state(n) for n in msg.nodes]
        return encode_push_pull(msg.join, nodes, msg.user_state, compress=compress)
    if isinstance(msg, UserMsg):
        raw = bytes([MessageType.USER]) + pack({"UserMsgLen": len(msg.payload)}) + msg.payload
    elif isinstance(msg, Ping | Ack | Err):
        t = {Ping: MessageType.PING, Ack: MessageType.ACK, Err: MessageType.ERR}[type(msg)]
        raw = bytes([t]) + encode_body(msg)
    else:
        raise TypeError(f"{type(msg).__name__} is not a stream message")
    # memberlist compresses every stream message when compression is on, even if it grows.
    return compress_message(raw) if compress else raw


def encode_stream_error(text: str, compress: bool) -> bytes:
    """The ``err`` reply memberlist writes when the first reading stage of a stream fails."""
    return encode_stream_message(Err(text), compress=compress)


def first_stage_error(exc: DecodeError, first_byte: int | None, *, compress: bool) -> bytes | None:
    """The (plaintext) ``err`` reply to a stream whose reading failed with ``exc``, or ``None``
    to close it without one.  memberlist net.go handleConn answers failures of readStream, the
    first stage: decryption (or plaintext where encryption is required), an encrypted stream
    without a keyring, decompression; a bad message body is only logged."""
    if isinstance(exc, FramingError) or first_byte in (MessageType.ENCRYPT, MessageType.COMPRESS):
        return encode_stream_error(str(exc), compress)
    return None


# Decoded push/pull node states by their exact msgpack bytes.  Between two push/pulls almost no
# member changes, and every peer encodes an unchanged member's state to the same bytes
# (memberlist's field order; ours are cached per record), so a node mostly receives entries it
# has decoded before: a dict lookup instead of a decode (1,000 members: about 3x cheaper).  The
# records are immutable values and decoding is a function of the bytes alone, so the cache
# changes no result; only successful decodes are kept.  Bounded: emptied when full (a cluster
# has about one live state per member).
NODE_STATES_MAX = 16_384
_node_states: dict[bytes, PushNodeState] = {}


def _node_state_from_raw(raw: bytes) -> PushNodeState:
    """The ``pushNodeState`` encoded as exactly ``raw`` (one msgpack map)."""
    state = _node_states.get(raw)
    if state is not None:
        return state
    obj = unpack_one(raw, "stream", max_container=_MAX_CONTAINER)
    state = decode_node_state(obj)
    if len(_node_states) >= NODE_STATES_MAX:
        _node_states.clear()
    _node_states[raw] = state
    return state


def _new_unpacker(max_bytes: int) -> Any:
    # msgpack allocates min(max_buffer_size, 1 MiB) up front unless ``read_size`` says less: a
    # 1 MiB malloc per stream is an mmap/munmap pair per connection (visible in a join storm's
    # profile).  The buffer still grows on demand up to ``max_buffer_size``.
    limit = max_bytes + 64
    return msgpack.Unpacker(
        raw=True,
        strict_map_key=False,
        max_buffer_size=limit,
        read_size=min(limit, _UNPACKER_START),
        max_map_len=_MAX_CONTAINER,
        max_array_len=_MAX_CONTAINER,
        max_ext_len=_MAX_CONTAINER,
    )


class _Reader:
    """State machine reading one plaintext stream message from bytes fed in any chunking.

    Phases: type byte -> (per type) header / body objects -> trailing opaque bytes.  Progress
    is kept between feeds; msgpack's unpacker is itself resumable, so nothing is re-parsed.
    """

    def __init__(self, max_bytes: int, max_nodes: int, allow_compress: bool) -> None:
        self._max_bytes = max_bytes
        self._max_nodes = max_nodes
        self._allow_compress = allow_compress
        self._unpacker: Any = _new_unpacker(max_bytes)
        self.mtype: int | None = None
        # push/pull progress
        self._join = False
        self._want_nodes = -1  # -1: header not read yet
        self._nodes: list[PushNodeState] = []
        # A push/pull's bytes as fed (the unpacker's offsets index into it), and where the next
        # node state starts: entries are sliced out whole (``_node_state_from_raw``).
        self._fed: bytearray | None = None
        self._entry_start = 0
        # trailing opaque bytes (push/pull user state, stream user message)
        self._want_tail = -1  # -1: not in the tail phase
        self._tail = bytearray()
        self.result: Message | None = None
        self._user_len = 0
        self.compress_obj: Any = None  # for type 9: the unpacked compress map

    def feed(self, chunk: bytes) -> None:
        if self.result is not None or self.compress_obj is not None:
            return  # one message per stream direction; anything after it is ignored
        if self.mtype is None:
            if not chunk:
                return
            self._start(chunk[0])
            chunk = chunk[1:]
        if chunk:
            if self._fed is not None:
                self._fed += chunk
            try:
                self._unpacker.feed(chunk)
            except msgpack.BufferFull:
                raise FramingError(f"stream: message exceeds {self._max_bytes} bytes") from None
        self._advance()

    def _start(self, t: int) -> None:
        if t == MessageType.ENCRYPT:
            raise FramingError(ENCRYPTED_BUT_NOT_CONFIGURED)
        ok = (
            MessageType.PUSH_PULL,
            MessageType.USER,
            MessageType.PING,
            MessageType.ACK,
            MessageType.ERR,
        )
        if t == MessageType.COMPRESS and self._allow_compress:
            pass
        elif t not in ok:
            # memberlist logs an unknown stream type and closes without a reply.
            raise DecodeError(f"stream: message type {t} not supported")
        self.mtype = t
        if t == MessageType.PUSH_PULL:
            self._fed = bytearray()

    def _obj(self) -> Any:
        """The next msgpack object, or ``_MORE`` if it has not fully arrived."""
        try:
            return self._unpacker.unpack()
        except msgpack.OutOfData:
            return _MORE
        except MSGPACK_ERRORS as exc:
            raise DecodeError(f"stream: bad msgpack ({type(exc).__name__})") from exc

    def _advance(self) -> None:
        t = self.mtype
        if t is None:
            return
        if self._want_tail >= 0:
            self._read_tail()
            return
        if t == MessageType.COMPRESS:
            obj = self._obj()
            if obj is not _MORE:
                self.compress_obj = obj if obj is not None else {}
            return
        if t == MessageType.PUSH_PULL:
            self._advance_push_pull()
            return
        if t == MessageType.USER:
            hdr = self._obj()
            if hdr is _MORE:
                return
            self._want_tail = Fields(hdr, "user header").uint("UserMsgLen", self._max_bytes)
            self._read_tail()
            return
        body = self._obj()
        if body is not _MORE:
            self.result = decode_body(MessageType(t), body)

    def _advance_push_pull(self) -> None:
        if self._want_nodes < 0:
            hdr = self._obj()
            if hdr is _MORE:
                return
            f = Fields(hdr, "push_pull header")
            self._join = f.boolean("Join")
            # uint: a negative Nodes count makes memberlist 0.2.2 panic in make(); refuse it.
            self._want_nodes = f.uint("Nodes", self._max_nodes)
            self._user_len = f.uint("UserStateLen", self._max_bytes)
            self._entry_start = self._unpacker.tell()
        fed, nodes, unpacker = self._fed, self._nodes, self._unpacker
        assert fed is not None  # set for every push/pull
        while len(nodes) < self._want_nodes:
            try:
                unpacker.skip()
            except msgpack.OutOfData:
                return
            except MSGPACK_ERRORS as exc:
                raise DecodeError(f"stream: bad msgpack ({type(exc).__name__})") from exc
            end = unpacker.tell()
            nodes.append(_node_state_from_raw(bytes(fed[self._entry_start : end])))
            self._entry_start = end
        self._fed = None  # the tail is read from the unpacker; the copy is done with
        self._want_tail = self._user_len
        self._read_tail()

    def _read_tail(self) -> None:
        need = self._want_tail - len(self._tail)
        if need > 0:
            self._tail += self._unpacker.read_bytes(need)
        if len(self._tail) < self._want_tail:
            return
        tail = bytes(self._tail)
        if self.mtype == MessageType.USER:
            self.result = UserMsg(tail)
        else:
            self.result = PushPull(self._join, tuple(self._nodes), tail)


class _More:
    """Marker: the next msgpack object is incomplete."""


_MORE: Any = _More()


class StreamParser:
    """Incremental reader of one plaintext stream message.

    ``feed(chunk)`` returns the message once complete, else ``None`` (after completion it keeps
    returning the same message and ignores further bytes); it raises ``DecodeError`` on
    malformed or oversized input.  ``finish()`` is called at EOF and returns the message or
    raises.  ``compressed`` tells whether the peer wrapped the message in ``compress`` (a
    reply should mirror the peer's setting only if the local config says so; memberlist uses
    its own config).
    """

    def __init__(self, max_bytes: int = MAX_STREAM_BYTES, max_nodes: int = MAX_PUSH_NODES) -> None:
        self._max = max_bytes
        self._max_nodes = max_nodes
        self._seen = 0
        self._reader = _Reader(max_bytes, max_nodes, allow_compress=True)
        self._msg: Message | None = None
        self._wrapped = False
        self.compressed = False

    def feed(self, chunk: bytes) -> Message | None:
        if self._msg is not None:
            return self._msg
        if self._seen == 0 and chunk:
            self._wrapped = chunk[0] == MessageType.COMPRESS
        self._seen += len(chunk)
        if self._seen > self._max:
            raise FramingError(f"stream: message exceeds {self._max} bytes")
        try:
            self._reader.feed(chunk)
            wrapper = self._reader.compress_obj
            inner = None if wrapper is None else inflate(wrapper, self._max)
        except FramingError:
            raise
        except DecodeError as exc:
            if self._wrapped:
                # Everything up to the decompressed bytes is the first reading stage.
                raise FramingError(str(exc)) from exc
            raise
        if inner is not None:
            self.compressed = True
            # Inside the wrapper the message must be complete, and another compress is not a
            # message type memberlist dispatches on.
            reader = _Reader(self._max, self._max_nodes, allow_compress=False)
            reader.feed(inner)
            if reader.result is None:
                raise DecodeError("stream: compressed message is incomplete")
            self._msg = reader.result
        else:
            self._msg = self._reader.result
        return self._msg

    def finish(self) -> Message:
        if self._msg is None:
            raise DecodeError("stream: connection closed mid-message")
        return self._msg


def decode_stream_message(data: bytes) -> Message:
    """Decode one complete plaintext stream message (compressed or not)."""
    parser = StreamParser()
    parser.feed(data)
    return parser.finish()


__all__ = [
    "ENCRYPTED_BUT_NOT_CONFIGURED",
    "MAX_PUSH_NODES",
    "MAX_STREAM_BYTES",
    "StreamParser",
    "decode_stream_message",
    "encode_push_pull",
    "encode_stream_error",
    "encode_stream_message",
    "first_stage_error",
]
