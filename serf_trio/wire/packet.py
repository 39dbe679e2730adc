"""UDP packet framing: compound (type 7), CRC (type 12), compression (type 9).

Send order, innermost first (memberlist ``sendMsg``/``rawSendMsgPacket``): encoded messages ->
compound if several -> LZW-compress, kept only if shorter -> CRC header if the peer speaks
protocol >= 5 -> encryption (the driver's business).  Receive order: CRC (top level only; a CRC
header inside a compound or a compressed payload is an unknown type) -> dispatch; compound and
compress unwrap and recurse into dispatch.

Decoding is total and bounded: ``decode_packet`` returns the messages it could read and the
reasons for the parts it could not; it never raises on peer input.  All decompression in one
packet shares a single output budget (``MAX_DECOMPRESSED``), so a datagram full of small LZW
bombs, or bombs nested in compounds, cannot make the receiver inflate more than that in total.

Things memberlist 0.2.2 crashes or mis-parses on are refused when *building* packets (the
encoder raises ``ValueError``) and reported as errors when *reading* them: an empty compound
part, a hasCrc packet of 5 bytes or fewer, a compress wrapper that inflates to nothing, and
(send side only) compounds of 128 parts or more, whose ``N*2`` length check overflows 8 bits.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from . import lzw
from .codec import DecodeError, decode_message, gossip_cache, pack, unpack_one
from .messages import Message, MessageType

COMPOUND_HEADER_OVERHEAD = 2  # type byte + part count
COMPOUND_PART_OVERHEAD = 2  # u16 length per part
MAX_COMPOUND_PARTS = 127  # memberlist 0.2.2 checks N*2 in 8 bits: >= 128 parts mis-parse
CRC_HEADER_LEN = 5
MAX_NESTING = 4  # compress(compound(...)) is normal; deeper is hostile
MAX_DECOMPRESSED = 1 << 20  # total inflated bytes per datagram; Go never sends near this
_NO_CACHE: dict[bytes, Message] = {}  # what ``_compound`` looks parts up in when it must not


@dataclass(slots=True)
class DecodedPacket:
    """What one datagram held: the messages read, in order, and why any part was dropped."""

    messages: list[Message] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Remaining decompression budget for this datagram (shared by every compress wrapper in it).
    budget: int = field(default=MAX_DECOMPRESSED, repr=False)
    # The compound/compress wrappers unwrapped, outermost first (message types; statistics).
    wrappers: list[int] = field(default_factory=list, repr=False, compare=False)


def make_compound(parts: list[bytes]) -> bytes:
    """``07 | N | N x u16 length | parts``.  Raises ``ValueError`` on empty parts or N > 127."""
    n = len(parts)
    if not parts or n > MAX_COMPOUND_PARTS:
        raise ValueError(f"compound needs 1..{MAX_COMPOUND_PARTS} parts, got {n}")
    lengths = list(map(len, parts))
    if 0 in lengths:
        raise ValueError("empty compound part (memberlist 0.2.2 panics on it)")
    if max(lengths) > 0xFFFF:
        raise ValueError("compound part over 65535 bytes")
    return b"".join([struct.pack(f">BB{n}H", MessageType.COMPOUND, n, *lengths), *parts])


def add_crc(data: bytes) -> bytes:
    """``0c | crc32(data) BE | data``.  memberlist: the CRC covers the (compressed) payload."""
    if not data:
        raise ValueError("nothing to checksum")
    return bytes([MessageType.HAS_CRC]) + struct.pack(">I", zlib.crc32(data)) + data


def compress_message(data: bytes) -> bytes:
    """``09`` + msgpack ``{"Algo": 0, "Buf": lzw(data)}`` (keys in Go's sorted order).

    Raises ``ValueError`` on empty input: memberlist 0.2.2 panics on a compress wrapper that
    inflates to nothing.
    """
    if not data:
        raise ValueError("compressing an empty message (memberlist 0.2.2 panics on it)")
    return bytes([MessageType.COMPRESS]) + pack({"Algo": 0, "Buf": lzw.compress(data)})


def decompress_message(body: bytes, max_out: int = MAX_DECOMPRESSED) -> bytes:
    """Inverse of ``compress_message`` given the bytes after the ``09`` type byte."""
    return inflate(unpack_one(body, "compress"), max_out)


def inflate(obj: object, max_out: int) -> bytes:
    """Decompress an unpacked ``compress`` map: 1..max_out bytes, else ``DecodeError``."""
    if not isinstance(obj, dict):
        raise DecodeError("compress: body is not a map")
    algo = obj.get(b"Algo", 0)
    buf = obj.get(b"Buf")
    if isinstance(algo, bool) or not isinstance(algo, int) or algo != 0:
        raise DecodeError(f"compress: unknown algorithm {algo!r}")
    if not isinstance(buf, bytes):
        raise DecodeError("compress: Buf is not bytes")
    out = lzw.decompress(buf, max_out)
    if not out:
        # memberlist 0.2.2 indexes the first byte of the result and panics on an empty one.
        raise DecodeError("compress: decompresses to nothing")
    return out


def encode_packet(parts: list[bytes], *, crc: bool, compress: bool) -> bytes:
    """Frame already-encoded messages as one datagram (see module docstring for order).

    One part is sent bare, several as a compound; ``compress`` keeps the LZW form only if it
    is shorter (memberlist does the same); ``crc`` prepends the checksum header.
    """
    if not parts:
        raise ValueError("a packet needs at least one message")
    if not all(parts):
        raise ValueError("empty message (memberlist 0.2.2 panics on it)")
    data = parts[0] if len(parts) == 1 else make_compound(parts)
    if compress:
        packed = compress_message(data)
        if len(packed) < len(data):
            data = packed
    if crc:
        data = add_crc(data)
    return data


def decode_packet(data: bytes) -> DecodedPacket:
    """Unwrap and decode one plaintext datagram; never raises on peer input."""
    out = DecodedPacket()
    if not data:
        out.errors.append("empty packet")
        return out
    if data[0] == MessageType.HAS_CRC:
        if len(data) <= CRC_HEADER_LEN:
            out.errors.append("crc: packet too short")
            return out
        (want,) = struct.unpack(">I", data[1:5])
        data = data[5:]
        if zlib.crc32(data) != want:
            out.errors.append("crc: checksum mismatch")
            return out
    _dispatch(data, out, 0)
    return out


def _dispatch(data: bytes, out: DecodedPacket, depth: int) -> None:
    if not data:
        out.errors.append("empty message")
        return
    if depth > MAX_NESTING:
        out.errors.append("packet nested too deeply")
        return
    t = data[0]
    try:
        if t == MessageType.COMPOUND:
            out.wrappers.append(t)
            _compound(data, out, depth)
        elif t == MessageType.COMPRESS:
            out.wrappers.append(t)
            inner = decompress_message(data[1:], out.budget)
            out.budget -= len(inner)
            _dispatch(inner, out, depth + 1)
        else:
            out.messages.append(decode_message(data))
    except DecodeError as exc:
        out.errors.append(str(exc))


def _compound(data: bytes, out: DecodedPacket, depth: int) -> None:
    if len(data) < 2:
        raise DecodeError("compound: missing part count")
    n = data[1]
    if n == 0:
        raise DecodeError("compound: no parts")
    header_end = 2 + 2 * n
    if len(data) < header_end:
        raise DecodeError("compound: truncated length table")
    lengths = struct.unpack(f">{n}H", data[2:header_end])
    pos = header_end
    size = len(data)
    messages = out.messages
    # Parts already decoded (see ``codec.gossip_cache``) skip ``_dispatch``: it would give the
    # same record (only a part nested too deep, which this excludes, reads otherwise).
    cache = gossip_cache if depth < MAX_NESTING and type(data) is bytes else _NO_CACHE
    for i, ln in enumerate(lengths):
        end = pos + ln
        if end > size:
            out.errors.append(f"compound: {n - i} of {n} parts truncated")
            return
        part = data[pos:end]
        pos = end
        msg = cache.get(part)
        if msg is None:
            _dispatch(part, out, depth + 1)
        else:
            messages.append(msg)
