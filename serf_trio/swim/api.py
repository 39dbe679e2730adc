"""The contract between the sans-IO membership core and whoever drives it.

The core (``node.Memberlist``) is a plain object: the driver calls its methods with the current
time (float seconds, any monotonic origin) and gets back a list of *effects* to carry out.  The
same effects are executed by the trio runtime (real UDP/TCP), the in-memory trio network and
the pure discrete-event simulator; only who delivers them differs.

Driver obligations:

* call ``tick(now)`` no later than ``next_deadline()`` (it fires every due timer);
* deliver every received datagram with ``handle_packet(now, src, data)``;
* for ``OpenStream``: connect to ``addr``, write ``data``, read one reply message if
  ``expect_reply`` (with ``stream.StreamReader``), all within ``timeout`` seconds, then call
  ``stream_result(now, stream_id, reply_bytes)`` with the reply (``b""`` when no reply was
  expected) or ``stream_result(now, stream_id, None, error)`` on any failure;
* for an inbound stream: read one request message, call ``handle_stream(now, data)`` and write
  back the bytes it returns (if not ``None``), then close.

Wire bytes handed across this boundary are *plaintext* memberlist packets / stream messages;
encryption, when configured, is the driver's job (``wire.crypto.Envelope`` provides it).  The
core only needs to know how many bytes sealing adds to a packet (``PacketOverhead``), so that
its packet budget shrinks by that much, as memberlist's does by encryptOverhead.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from serf_trio.record import record


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """A UDP/TCP endpoint.  ``host`` is a literal IP address (v4 or v6), never a hostname."""

    host: str
    port: int

    def packed(self) -> bytes:
        """The IP in memberlist's wire form: 4 bytes for IPv4, 16 for IPv6."""
        return _ip_packed(self.host)

    @classmethod
    def from_packed(cls, ip: bytes, port: int) -> Address:
        """From wire form; IPv4-mapped IPv6 addresses come back as plain IPv4.

        ``ValueError`` if ``ip`` is not 4 or 16 bytes.
        """
        if cls is Address:
            return _address(ip, port)
        return cls(_ip_text(ip), port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class PacketOverhead(Protocol):
    """Whatever seals packets on their way out (``wire.crypto.Envelope``): the bytes it adds
    to each one, read at every send so a key or cipher change applies at once."""

    @property
    def overhead(self) -> int: ...


@functools.lru_cache(maxsize=65536)
def _ip_text(ip: bytes) -> str:
    # Every alive message and node state carries a packed IP; parsing it with ``ipaddress``
    # each time was a tenth of the simulator's CPU.  A cluster has one IP per member, so a
    # bounded cache keyed on the raw bytes removes that cost.
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@functools.lru_cache(maxsize=65536)
def _address(ip: bytes, port: int) -> Address:
    # Every alive message, push/pull node state and query names its sender by packed IP and
    # port; a cluster has one pair per member, so the (immutable) Address is shared instead of
    # being rebuilt per message (a frozen dataclass costs a few object.__setattr__ calls).
    return Address(_ip_text(ip), port)


@functools.lru_cache(maxsize=65536)
def _ip_packed(host: str) -> bytes:
    # The reverse direction: every push/pull lists every member's packed IP, and parsing the
    # text with ``ipaddress`` each time cost more than encoding the rest of the node state.
    return ipaddress.ip_address(host).packed


class State(Enum):
    """memberlist node states (values are the push/pull wire codes)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3

    @property
    def serf_status(self) -> str:
        """The word Serf shows users: suspect is still alive, dead is failed."""
        return _SERF_STATUS[self]


_SERF_STATUS = {
    State.ALIVE: "alive",
    State.SUSPECT: "alive",
    State.DEAD: "failed",
    State.LEFT: "left",
}


@record
class MemberInfo:
    """A read-only view of one member, as events and ``members()`` report it."""

    name: str
    addr: Address
    meta: bytes
    incarnation: int
    state: State
    vsn: bytes
    state_change: float  # core time of the last state change


# ---------------------------------------------------------------------------------------------
# Effects


@record
class SendPacket:
    """Send one UDP datagram (plaintext; the driver encrypts if configured)."""

    addr: Address
    data: bytes


@record
class OpenStream:
    """Open a TCP stream, write ``data``, optionally read one reply message."""

    stream_id: int
    addr: Address
    data: bytes
    expect_reply: bool
    timeout: float


class MemberEventKind(Enum):
    JOIN = "join"  # memberlist NotifyJoin: new, or back from dead/left
    LEAVE = "leave"  # NotifyLeave: dead (failed) or left
    UPDATE = "update"  # NotifyUpdate: metadata (tags) or address changed


@record
class MemberEvent:
    kind: MemberEventKind
    member: MemberInfo


@record
class JoinDone:
    """Result of ``join()``: how many seed addresses were synced, and the errors of the rest."""

    request_id: int
    joined: int
    errors: tuple[str, ...]


@record
class LeaveDone:
    """Our leave was broadcast (or the broadcast timed out: ``timed_out``)."""

    timed_out: bool


@record
class Violation:
    """A peer sent something we dropped: for the driver to count and log, never fatal."""

    source: str  # "udp 1.2.3.4:5" or "stream"
    reason: str


@record
class Notice:
    """A noteworthy protocol fact the driver should log (name conflict, refutation, ...)."""

    event: str  # snake_case fact, e.g. "refuted_suspicion", "name_conflict"
    fields: dict[str, object] = field(default_factory=dict)


Effect = SendPacket | OpenStream | MemberEvent | JoinDone | LeaveDone | Violation | Notice


# ---------------------------------------------------------------------------------------------
# The delegate: how the Serf layer plugs into the core (all synchronous, no I/O).


class Delegate(Protocol):
    """memberlist's Delegate + PingDelegate + AliveDelegate, as one optional object."""

    def node_meta(self, limit: int) -> bytes:
        """Our metadata (Serf: ``0xFF`` + tags), at most ``limit`` bytes."""
        ...

    def notify_msg(self, now: float, payload: bytes) -> None:
        """A user message arrived (gossip or stream)."""
        ...

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """User messages to piggy-back, each counted with ``overhead`` bytes, within ``limit``."""
        ...

    def has_broadcasts(self) -> bool:
        """Whether ``get_broadcasts`` has anything queued (O(1): asked before each gossip round)."""
        ...

    def local_state(self, join: bool) -> bytes:
        """Push/pull user state to send (Serf's push/pull message)."""
        ...

    def merge_remote_state(self, now: float, buf: bytes, join: bool) -> None:
        """Merge a peer's push/pull user state."""
        ...

    def ack_payload(self) -> bytes:
        """Payload for acks to direct pings (Serf: Vivaldi coordinate)."""
        ...

    def notify_ping_complete(self, node: str, rtt: float, payload: bytes) -> None:
        """A direct ping to ``node`` was acked after ``rtt`` seconds with ``payload``."""
        ...


class NullDelegate:
    """A delegate that carries no user data (plain memberlist)."""

    def __init__(self, meta: bytes = b"") -> None:
        self.meta = meta

    def node_meta(self, limit: int) -> bytes:
        return self.meta[:limit]

    def notify_msg(self, now: float, payload: bytes) -> None:
        return None

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        return []

    def has_broadcasts(self) -> bool:
        return False

    def local_state(self, join: bool) -> bytes:
        return b""

    def merge_remote_state(self, now: float, buf: bytes, join: bool) -> None:
        return None

    def ack_payload(self) -> bytes:
        return b""

    def notify_ping_complete(self, node: str, rtt: float, payload: bytes) -> None:
        return None


class DrivenCore(Protocol):
    """The driving API shared by ``swim.node.Memberlist`` and ``serf.node.SerfNode``.

    Whoever delivers packets and time (the trio runtime, the simulator, the test pump) programs
    against this.  Effects are typed loosely (``Sequence[object]``) because the two cores return
    different effect unions; drivers dispatch on the record type.
    """

    @property
    def name(self) -> str: ...
    @property
    def addr(self) -> Address: ...
    def probe(self, now: float) -> Sequence[object]: ...
    def gossip(self, now: float) -> Sequence[object]: ...
    def has_broadcasts(self) -> bool:
        """Whether ``gossip`` would send anything: with nothing queued a driver may skip the
        round (and the wake-up), as memberlist's gossip() returns at once when it has nothing."""
        ...

    def push_pull(self, now: float) -> Sequence[object]: ...
    def push_pull_period(self) -> float: ...
    def note_stall(self, now: float, seconds: float) -> None:
        """The driver's loop did not run for ``seconds``: the core moves its pending timers
        by the stall and, for a long one, raises its local health."""
        ...

    def next_deadline(self) -> float | None: ...
    def tick(self, now: float) -> Sequence[object]: ...
    def handle_packet(self, now: float, src: Address, data: bytes) -> Sequence[object]: ...
    def handle_stream(self, now: float, data: bytes) -> tuple[bytes | None, Sequence[object]]: ...
    def stream_result(
        self, now: float, stream_id: int, reply: bytes | None, error: str = ""
    ) -> Sequence[object]: ...
