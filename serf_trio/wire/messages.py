"""memberlist message records: one frozen, slotted dataclass per wire message.

This module owns the *vocabulary* of the gossip layer: the message type bytes (the enum order
is the wire format, memberlist ``net.go``), the node-state numbers, and a record per message
with the exact Go field names it maps to.  Encoding and decoding live in ``codec.py``; this
module has no msgpack knowledge beyond the field-name tables.

Field conventions (memberlist net.go structs as go-msgpack 0.5.5 writes them):

* node names and error texts are ``str``; addresses, metadata and payloads are ``bytes``;
* an IP address is its packed form (4 bytes for IPv4, 16 for IPv6);
* ``Vsn`` is a 6-byte ``bytes`` ``[pmin, pmax, pcur, dmin, dmax, dcur]``;
* ``None`` for ``Meta``/``Payload`` is Go's nil slice (``0xc0``), ``b""`` an empty one (``0xa0``).
"""

from __future__ import annotations

from enum import IntEnum

from serf_trio.record import record


class MessageType(IntEnum):
    """memberlist ``messageType``: the first byte of every packet and stream message."""

    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK = 11
    HAS_CRC = 12
    ERR = 13


class NodeStateCode(IntEnum):
    """memberlist ``NodeStateType`` as carried in push/pull node states."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


# What a real Serf agent advertises: memberlist protocol 1..5 speaking 2, Serf 2..5 speaking 5.
DEFAULT_VSN = bytes([1, 5, 2, 2, 5, 5])
VSN_LEN = 6
META_MAX_SIZE = 512  # memberlist MetaMaxSize


@record
class Ping:
    """type 0: ``ping``.  ``node`` is the intended target ("" means whoever answers)."""

    seq_no: int
    node: str
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@record
class IndirectPing:
    """type 1: ``indirectPingReq`` - ask a relay to ping ``target`` on our behalf."""

    seq_no: int
    target: bytes
    port: int
    node: str
    nack: bool
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@record
class Ack:
    """type 2: ``ackResp``.  ``payload`` is the ping delegate's (Serf: Vivaldi coordinate)."""

    seq_no: int
    payload: bytes | None = None


@record
class Nack:
    """type 11: ``nackResp`` - a relay could not reach the target."""

    seq_no: int


@record
class Suspect:
    """type 3: ``suspect``."""

    incarnation: int
    node: str
    from_: str


@record
class Alive:
    """type 4: ``alive`` - join announcement, refutation or metadata update."""

    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes | None
    vsn: bytes


@record
class Dead:
    """type 5: ``dead``.  ``from_ == node`` means a graceful leave (state left)."""

    incarnation: int
    node: str
    from_: str


@record
class UserMsg:
    """type 8: an opaque delegate (Serf) message.

    On UDP the payload runs to the end of the packet or compound part; on a stream it is
    framed as ``{"UserMsgLen": n}`` followed by n bytes (memberlist net.go readUserMsg).
    """

    payload: bytes


@record
class Err:
    """type 13: ``errResp`` - only on streams."""

    error: str


@record
class PushNodeState:
    """One ``pushNodeState`` entry of a push/pull exchange."""

    name: str
    addr: bytes
    port: int
    meta: bytes | None
    incarnation: int
    state: int
    vsn: bytes


@record
class PushPull:
    """type 6: push/pull header + node states + opaque user state (net.go sendLocalState)."""

    join: bool
    nodes: tuple[PushNodeState, ...]
    user_state: bytes = b""


Message = Ping | IndirectPing | Ack | Nack | Suspect | Alive | Dead | UserMsg | Err | PushPull

# Message classes that travel alone in a UDP packet with a msgpack map body.
MAP_BODY_TYPES: dict[type, MessageType] = {
    Ping: MessageType.PING,
    IndirectPing: MessageType.INDIRECT_PING,
    Ack: MessageType.ACK,
    Nack: MessageType.NACK,
    Suspect: MessageType.SUSPECT,
    Alive: MessageType.ALIVE,
    Dead: MessageType.DEAD,
    Err: MessageType.ERR,
}
