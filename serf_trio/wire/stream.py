"""TCP stream messages: push/pull, fallback ping/ack, stream user message, err (WIRE.md 8).

A stream carries one message per direction: ``[type][msgpack objects][opaque bytes]`` with no
length prefix, optionally wrapped in ``compress`` (memberlist compresses *every* stream message
when compression is on).  ``StreamParser`` is an incremental, size-capped reader: feed it bytes
as they arrive and it says when one complete message has been read, so a driver never has to
guess how much to read.  Encrypted stream frames (type 10) are the keyring's business.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .codec import (
    DecodeError,
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
    PushPull,
    UserMsg,
)
from .packet import compress_message, decompress_message

MAX_STREAM_BYTES = 20 * 1024 * 1024  # memberlist maxPushStateBytes


def encode_stream_message(msg: Message, *, compress: bool) -> bytes:
    """The bytes a sender writes for ``msg`` on a fresh stream (plaintext)."""
    if isinstance(msg, PushPull):
        header = pack(
            {"Join": msg.join, "Nodes": len(msg.nodes), "UserStateLen": len(msg.user_state)}
        )
        raw = (
            bytes([MessageType.PUSH_PULL])
            + header
            + b"".join(encode_node_state(n) for n in msg.nodes)
            + msg.user_state
        )
    elif isinstance(msg, UserMsg):
        raw = bytes([MessageType.USER]) + pack({"UserMsgLen": len(msg.payload)}) + msg.payload
    elif isinstance(msg, Ping | Ack | Err):
        t = {Ping: MessageType.PING, Ack: MessageType.ACK, Err: MessageType.ERR}[type(msg)]
        raw = bytes([t]) + encode_body(msg)
    else:
        raise TypeError(f"{type(msg).__name__} is not a stream message")
    return compress_message(raw) if compress else raw


class _Incomplete(Exception):
    """More bytes are needed."""


def _read_obj(unpacker: Any) -> Any:
    try:
        return unpacker.unpack()
    except msgpack.OutOfData:
        raise _Incomplete from None
    except Exception as exc:
        raise DecodeError(f"stream: bad msgpack ({type(exc).__name__})") from exc


def _parse(data: bytes, max_nodes: int) -> tuple[Message, int] | None:
    """Parse one plaintext (decompressed) stream message; ``None`` if incomplete."""
    if not data:
        return None
    t = data[0]
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=len(data) + 1)
    unpacker.feed(data[1:])
    try:
        if t == MessageType.PUSH_PULL:
            hdr = _read_obj(unpacker)
            if not isinstance(hdr, dict):
                raise DecodeError("push_pull: header is not a map")
            n = hdr.get(b"Nodes", 0)
            ulen = hdr.get(b"UserStateLen", 0)
            join = hdr.get(b"Join", False)
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= max_nodes:
                raise DecodeError(f"push_pull: bad node count {n!r}")
            if not isinstance(ulen, int) or isinstance(ulen, bool):
                raise DecodeError("push_pull: bad UserStateLen")
            if not 0 <= ulen <= MAX_STREAM_BYTES:
                raise DecodeError(f"push_pull: UserStateLen {ulen} out of range")
            nodes = tuple(decode_node_state(_read_obj(unpacker)) for _ in range(n))
            pos = 1 + unpacker.tell()
            if len(data) < pos + ulen:
                return None
            user = bytes(data[pos : pos + ulen])
            return PushPull(bool(join), nodes, user), pos + ulen
        if t == MessageType.USER:
            hdr = _read_obj(unpacker)
            ulen = hdr.get(b"UserMsgLen") if isinstance(hdr, dict) else None
            if not isinstance(ulen, int) or isinstance(ulen, bool) or ulen < 0:
                raise DecodeError("user: bad UserMsgLen")
            if ulen > MAX_STREAM_BYTES:
                raise DecodeError("user: UserMsgLen too large")
            pos = 1 + unpacker.tell()
            if len(data) < pos + ulen:
                return None
            return UserMsg(bytes(data[pos : pos + ulen])), pos + ulen
        if t in (MessageType.PING, MessageType.ACK, MessageType.ERR):
            body = _read_obj(unpacker)
            return decode_body(MessageType(t), body), 1 + unpacker.tell()
    except _Incomplete:
        return None
    raise DecodeError(f"stream: message type {t} not supported")


class StreamParser:
    """Incremental reader of one plaintext stream message.

    ``feed(chunk)`` returns the message once complete, else ``None``; it raises
    ``DecodeError`` on malformed or oversized input.  ``finish()`` is called at EOF.
    """

    def __init__(self, max_bytes: int = MAX_STREAM_BYTES, max_nodes: int = 100_000) -> None:
        self._buf = bytearray()
        self._max = max_bytes
        self._max_nodes = max_nodes
        self.compressed = False

    def feed(self, chunk: bytes) -> Message | None:
        self._buf += chunk
        if len(self._buf) > self._max:
            raise DecodeError(f"stream: message exceeds {self._max} bytes")
        return self._try()

    def finish(self) -> Message:
        msg = self._try()
        if msg is None:
            raise DecodeError("stream: connection closed mid-message")
        return msg

    def _try(self) -> Message | None:
        data = bytes(self._buf)
        if not data:
            return None
        if data[0] == MessageType.COMPRESS:
            unpacker = msgpack.Unpacker(raw=True, strict_map_key=False)
            unpacker.feed(data[1:])
            try:
                unpacker.unpack()
            except msgpack.OutOfData:
                return None
            except Exception as exc:
                raise DecodeError(f"stream: bad compress wrapper ({type(exc).__name__})") from exc
            end = 1 + unpacker.tell()
            inner = decompress_message(data[1:end], self._max)
            self.compressed = True
            res = _parse(inner, self._max_nodes)
            if res is None:
                raise DecodeError("stream: compressed message is incomplete")
            return res[0]
        if data[0] == MessageType.ENCRYPT:
            raise DecodeError("Remote state is encrypted and encryption is not configured")
        res = _parse(data, self._max_nodes)
        return None if res is None else res[0]


def decode_stream_message(data: bytes) -> Message:
    """Decode one complete plaintext stream message (compressed or not)."""
    parser = StreamParser()
    return parser.finish() if parser.feed(data) is None else parser.finish()


__all__ = [
    "MAX_STREAM_BYTES",
    "StreamParser",
    "decode_stream_message",
    "encode_stream_message",
    "unpack_one",
]
