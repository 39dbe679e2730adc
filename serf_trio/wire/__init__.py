"""memberlist 0.2.2 wire format: message records, msgpack codec, packet and stream framing, LZW.

Pure functions over bytes; no I/O, no clocks, no randomness.  Every decoder is total: peer input
yields a message or a ``DecodeError`` (packets: a list of messages plus a list of errors).
"""

from .codec import DecodeError, decode_message, encode_message, pack
from .messages import (
    DEFAULT_VSN,
    META_MAX_SIZE,
    VSN_LEN,
    Ack,
    Alive,
    Dead,
    Err,
    IndirectPing,
    Message,
    MessageType,
    Nack,
    NodeStateCode,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
)
from .packet import (
    COMPOUND_HEADER_OVERHEAD,
    COMPOUND_PART_OVERHEAD,
    MAX_COMPOUND_PARTS,
    DecodedPacket,
    add_crc,
    compress_message,
    decode_packet,
    encode_packet,
    make_compound,
)
from .stream import (
    MAX_STREAM_BYTES,
    StreamParser,
    decode_stream_message,
    encode_stream_error,
    encode_stream_message,
)

__all__ = [
    "COMPOUND_HEADER_OVERHEAD",
    "COMPOUND_PART_OVERHEAD",
    "DEFAULT_VSN",
    "MAX_COMPOUND_PARTS",
    "MAX_STREAM_BYTES",
    "META_MAX_SIZE",
    "VSN_LEN",
    "Ack",
    "Alive",
    "Dead",
    "DecodeError",
    "DecodedPacket",
    "Err",
    "IndirectPing",
    "Message",
    "MessageType",
    "Nack",
    "NodeStateCode",
    "Ping",
    "PushNodeState",
    "PushPull",
    "StreamParser",
    "Suspect",
    "UserMsg",
    "add_crc",
    "compress_message",
    "decode_message",
    "decode_packet",
    "decode_stream_message",
    "encode_message",
    "encode_packet",
    "encode_stream_error",
    "encode_stream_message",
    "make_compound",
    "pack",
]
