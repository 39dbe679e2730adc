"""The network edge of a membership node: UDP packets and TCP streams on one address.

memberlist uses one port for both protocols (memberlist net_transport.go): UDP carries packets
(one message or a compound per datagram), TCP carries streams (one request and at most one reply
per connection, then close). This module owns

* ``Transport``: the abstract interface the driver talks to, so that the in-memory network
  (``serf_trio.testing.memnet``) can replace real sockets in tests;
* ``UdpTcpTransport``: the real implementation on trio sockets (IPv4 and IPv6);
* ``WireCrypto`` / ``PlaintextCrypto``: the encryption seam.  Every byte that crosses the
  socket boundary goes through a ``WireCrypto``: ``PlaintextCrypto`` passes it through,
  ``runtime.crypto.EnvelopeCrypto`` seals and opens it with the node's keyring (it counts and
  logs what it refuses, so the transport only counts the drop);
* ``request_stream`` / ``read_stream_message``: one outbound or inbound stream exchange, framed
  with ``serf_trio.wire.stream.StreamParser`` so we never guess how many bytes to read.

Receiving never blocks on a slow consumer: datagrams are handed to a bounded memory channel with
``send_nowait`` and dropped (and counted) when it is full, exactly as a kernel drops datagrams
when a socket buffer overflows.  Peers are identified by the addresses inside messages, never by
a TCP source address (Go agents dial from an ephemeral port on any local IP).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket as stdlib_socket
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog
import trio

from serf_trio.record import record
from serf_trio.swim.api import Address
from serf_trio.wire.codec import DecodeError
from serf_trio.wire.crypto import CryptoError
from serf_trio.wire.stream import StreamParser, first_stage_error

# memberlist's UDP reader allocates 64 KiB per datagram (memberlist net_transport.go).
MAX_DATAGRAM = 65536
# memberlist asks for a 2 MiB receive buffer so bursts of gossip are not dropped by the kernel.
UDP_RECV_BUFFER = 2 * 1024 * 1024
UDP_BATCH = 16  # datagrams read in a row before the reader yields to other tasks
# Bytes read from a TCP stream per receive call.
_READ_CHUNK = 65536


class TransportError(Exception):
    """An outbound stream failed: refused, reset, timed out or a malformed reply."""


class BindError(OSError):
    """A listening address cannot be bound.  ``str()`` is a sentence that names the address,
    its role and protocol, and the reason (``cannot bind the gossip address 127.0.0.1:7946
    (UDP): address already in use``); ``errno`` is the OS's."""

    def __str__(self) -> str:
        return str(self.strerror)


# A word of advice for the reasons an operator can do something about.
_BIND_HINTS = {
    errno.EADDRINUSE: "is another agent using it?",
    errno.EADDRNOTAVAIL: "is it an address of this host?",
    errno.EACCES: "ports below 1024 need privileges",
}


def bind_failure(what: str, exc: OSError) -> str:
    """``cannot bind <what>: <reason>`` with the OS's reason in words (and a hint)."""
    code = exc.errno
    reason = os.strerror(code) if code else (exc.strerror or str(exc) or type(exc).__name__)
    reason = reason[:1].lower() + reason[1:]
    hint = _BIND_HINTS.get(code or 0)
    return f"cannot bind {what}: {reason}" + (f" ({hint})" if hint else "")


def gossip_bind_error(addr: Address, proto: str, exc: OSError) -> BindError:
    return BindError(exc.errno, bind_failure(f"the gossip address {addr} ({proto})", exc))


def _reason(exc: BaseException) -> str:
    """An exception in words for a log line (the OS's text, never a Python repr)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@record
class Datagram:
    """One received UDP packet (plaintext, after ``WireCrypto.open_packet``)."""

    src: Address
    data: bytes


# An inbound stream request (one complete plaintext message) -> reply bytes or None (no reply).
StreamHandler = Callable[[bytes], Awaitable[bytes | None]]


@record
class TransportStats:
    packets_in: int
    packets_out: int
    packets_dropped_full: int  # receive channel full: the consumer is too slow
    packets_dropped_bad: int  # could not be opened (decrypt) or were empty
    send_errors: int
    streams_in: int
    streams_out: int
    stream_errors: int
    bytes_in: int = 0  # UDP bytes of every datagram read (as on the wire: sealed if encrypted)
    bytes_out: int = 0  # UDP bytes sent (as on the wire)
    tcp_bytes_out: int = 0  # stream bytes written (requests and replies, as on the wire)


class TransportCounters:
    """Mutable counters behind ``TransportStats`` (shared by real and in-memory transports)."""

    def __init__(self) -> None:
        self.packets_in = 0
        self.packets_out = 0
        self.packets_dropped_full = 0
        self.packets_dropped_bad = 0
        self.send_errors = 0
        self.streams_in = 0
        self.streams_out = 0
        self.stream_errors = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.tcp_bytes_out = 0

    def snapshot(self) -> TransportStats:
        return TransportStats(
            self.packets_in,
            self.packets_out,
            self.packets_dropped_full,
            self.packets_dropped_bad,
            self.send_errors,
            self.streams_in,
            self.streams_out,
            self.stream_errors,
            self.bytes_in,
            self.bytes_out,
            self.tcp_bytes_out,
        )


# ---------------------------------------------------------------------------------------------
# KEYRING HOOK


class StreamReader(Protocol):
    """Incremental reader of one stream message as it arrives on the socket."""

    def feed(self, chunk: bytes) -> bytes | None:
        """Return the complete *plaintext* message once read, else ``None``; ``DecodeError``."""
        ...


class WireCrypto(Protocol):
    """Where a keyring encrypts and decrypts (memberlist security.go, ``wire.crypto``)."""

    def seal_packet(self, data: bytes) -> bytes: ...

    def open_packet(self, data: bytes, src: Address) -> bytes:
        """Plaintext of a datagram from ``src``; ``DecodeError`` to drop it (the crypto has
        already logged why)."""
        ...

    def seal_stream(self, data: bytes) -> bytes: ...

    def stream_reader(self, peer: str) -> StreamReader:
        """A reader for one stream message from ``peer`` (``host:port``, for log lines)."""
        ...


class _PlainStreamReader:
    """Accumulates raw bytes until ``StreamParser`` says one message is complete."""

    def __init__(self) -> None:
        self._parser = StreamParser()
        self._raw = bytearray()

    def feed(self, chunk: bytes) -> bytes | None:
        self._raw += chunk
        if self._parser.feed(chunk) is None:
            return None
        return bytes(self._raw)


class PlaintextCrypto:
    """No encryption: bytes pass through unchanged (memberlist without a keyring)."""

    def seal_packet(self, data: bytes) -> bytes:
        return data

    def open_packet(self, data: bytes, src: Address) -> bytes:
        return data

    def seal_stream(self, data: bytes) -> bytes:
        return data

    def stream_reader(self, peer: str) -> StreamReader:
        return _PlainStreamReader()


PLAINTEXT = PlaintextCrypto()


# ---------------------------------------------------------------------------------------------
# The interface


class Transport(Protocol):
    """What the driver needs from a network.  Implementations: real sockets, ``memnet``."""

    async def serve(
        self,
        packets: trio.MemorySendChannel[Datagram],
        on_stream: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen; ``task_status.started(bound address)`` once listening; run until cancelled.

        Datagrams go to ``packets`` with ``send_nowait`` (dropped and counted when full).  Each
        inbound stream's request is passed to ``on_stream`` and its result written back.
        """
        ...

    async def send_packet(self, addr: Address, data: bytes) -> None:
        """Send one datagram; errors are counted, never raised (UDP is best effort)."""
        ...

    def send_packet_nowait(self, addr: Address, data: bytes) -> bool:
        """Send one datagram now, without yielding, if the socket takes it at once: True when
        it was handled (sent, or failed and counted as ``send_packet`` would), False when the
        caller must queue it for ``send_packet`` (the socket would block, or this transport
        always sends from a task)."""
        ...

    async def request(
        self, addr: Address, data: bytes, *, expect_reply: bool, time_limit: float
    ) -> bytes:
        """One outbound stream exchange; the reply message (``b""`` if none expected).

        Raises ``TransportError`` on any failure, including the timeout.
        """
        ...

    def statistics(self) -> TransportStats: ...


# ---------------------------------------------------------------------------------------------
# Stream helpers on any trio stream


async def read_stream_message(stream: trio.abc.ReceiveStream, reader: StreamReader) -> bytes:
    """Read exactly one stream message; ``DecodeError`` if malformed or cut short."""
    while True:
        chunk = bytes(await stream.receive_some(_READ_CHUNK))
        if not chunk:
            raise DecodeError("stream: connection closed mid-message")
        msg = reader.feed(chunk)
        if msg is not None:
            return msg


def stream_error_reply(
    exc: DecodeError, first_byte: int | None, crypto: WireCrypto
) -> bytes | None:
    """``wire.stream.first_stage_error``, sealed by ``crypto`` (the agent compresses)."""
    err = first_stage_error(exc, first_byte, compress=True)
    return crypto.seal_stream(err) if err is not None else None


def _peer_name(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "?"
    return str(Address(host, port))


async def serve_stream_connection(
    stream: trio.abc.Stream,
    on_stream: StreamHandler,
    crypto: WireCrypto,
    time_limit: float,
    counters: TransportCounters,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Handle one inbound connection: read a request, hand it over, write the reply, close."""
    first: list[int] = []

    class _FirstByte:
        """Remembers the first byte (to choose memberlist's error reply)."""

        def __init__(self, inner: StreamReader) -> None:
            self.inner = inner

        def feed(self, chunk: bytes) -> bytes | None:
            if not first and chunk:
                first.append(chunk[0])
            return self.inner.feed(chunk)

    counters.streams_in += 1
    async with stream:
        with trio.move_on_after(time_limit) as scope:
            try:
                reader = _FirstByte(crypto.stream_reader(_peer_name(stream)))
                request = await read_stream_message(stream, reader)
            except DecodeError as exc:
                counters.stream_errors += 1
                if not isinstance(exc, CryptoError):  # the crypto reports its own refusals
                    log.warning("stream_rejected", reason=str(exc))
                reply = stream_error_reply(exc, first[0] if first else None, crypto)
                if reply is not None:
                    counters.tcp_bytes_out += len(reply)
                    await _send_quietly(stream, reply)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                counters.stream_errors += 1
                log.debug("stream_read_failed", error=_reason(exc))
                return
            answer = await on_stream(request)
            if answer is not None:
                sealed = crypto.seal_stream(answer)
                counters.tcp_bytes_out += len(sealed)
                await _send_quietly(stream, sealed)
        if scope.cancelled_caught:
            counters.stream_errors += 1
            log.debug("stream_timeout", timeout=time_limit)


async def _send_quietly(stream: trio.abc.SendStream, data: bytes) -> None:
    # the peer may have gone away; there is nothing left to tell it then
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.send_all(data)


async def request_stream(
    addr: Address,
    data: bytes,
    *,
    expect_reply: bool,
    time_limit: float,
    crypto: WireCrypto,
    counters: TransportCounters | None = None,
) -> bytes:
    """Connect to ``addr``, write ``data``, read one reply if ``expect_reply``, under a timeout."""
    with trio.move_on_after(time_limit):
        try:
            stream = await trio.open_tcp_stream(addr.host, addr.port)
            async with stream:
                sealed = crypto.seal_stream(data)
                if counters is not None:
                    counters.tcp_bytes_out += len(sealed)
                await stream.send_all(sealed)
                if not expect_reply:
                    return b""
                return await read_stream_message(stream, crypto.stream_reader(str(addr)))
        except DecodeError as exc:
            raise TransportError(f"bad reply from {addr}: {exc}") from exc
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportError(f"stream to {addr} failed: {exc}") from exc
    raise TransportError(f"stream to {addr} timed out after {time_limit}s")


# ---------------------------------------------------------------------------------------------
# The real transport


def _family(host: str) -> stdlib_socket.AddressFamily:
    ip = ipaddress.ip_address(host)
    return stdlib_socket.AF_INET6 if ip.version == 6 else stdlib_socket.AF_INET


class UdpTcpTransport:
    """UDP + TCP on one ``bind`` address (port 0 picks a free port shared by both).

    ``stream_timeout`` bounds each inbound connection (memberlist: the TCP timeout).
    """

    def __init__(
        self,
        bind: Address,
        *,
        stream_timeout: float = 10.0,
        crypto: WireCrypto = PLAINTEXT,
        logger: structlog.typing.FilteringBoundLogger | None = None,
        max_inbound_streams: int = 128,
    ) -> None:
        self.bind = bind
        self.stream_timeout = stream_timeout
        self.crypto = crypto
        self._log: structlog.typing.FilteringBoundLogger = logger or structlog.get_logger()
        self._udp: trio.socket.SocketType | None = None
        self._udp_raw: stdlib_socket.socket | None = None  # the same socket, for sync sends
        self._counters = TransportCounters()
        # memberlist handles at most 128 concurrent inbound streams; we do the same with a limiter.
        self._inbound = trio.CapacityLimiter(max_inbound_streams)
        self.bound: Address | None = None

    def statistics(self) -> TransportStats:
        return self._counters.snapshot()

    async def _bind_pair(
        self,
    ) -> tuple[trio.socket.SocketType, stdlib_socket.socket, trio.SocketListener]:
        """Bind UDP and TCP to the same port; with port 0, retry until both get the same one."""
        family = _family(self.bind.host)
        host = self.bind.host
        for _attempt in range(20):
            # A stdlib socket wrapped for trio: ``send_packet_nowait`` sends on it directly.
            raw = stdlib_socket.socket(family, stdlib_socket.SOCK_DGRAM)
            raw.setblocking(False)
            udp = trio.socket.from_stdlib_socket(raw)
            try:
                try:
                    await udp.bind((host, self.bind.port))
                except OSError as exc:
                    raise gossip_bind_error(self.bind, "UDP", exc) from None
                port = udp.getsockname()[1]
                tcp = trio.socket.socket(family, stdlib_socket.SOCK_STREAM)
                try:
                    tcp.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
                    if family == stdlib_socket.AF_INET6:
                        tcp.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
                    await tcp.bind((host, port))
                    tcp.listen(128)
                except OSError as exc:
                    tcp.close()
                    if self.bind.port == 0 and exc.errno == errno.EADDRINUSE:
                        udp.close()
                        continue  # the TCP side of that port is taken; try another port
                    raise gossip_bind_error(Address(host, port), "TCP", exc) from None
            except BaseException:
                udp.close()
                raise
            try:
                udp.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, UDP_RECV_BUFFER)
            except OSError:
                self._log.info("udp_rcvbuf_not_set", wanted=UDP_RECV_BUFFER)
            return udp, raw, trio.SocketListener(tcp)
        raise BindError(
            errno.EADDRINUSE,
            f"cannot bind the gossip address {self.bind} (UDP and TCP): "
            "no port was free for both after 20 tries",
        )

    async def serve(
        self,
        packets: trio.MemorySendChannel[Datagram],
        on_stream: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        udp, raw, listener = await self._bind_pair()
        self._udp = udp
        self._udp_raw = raw
        bound = Address(self.bind.host, udp.getsockname()[1])
        self.bound = bound
        try:
            async with packets, trio.open_nursery() as nursery:
                nursery.start_soon(self._udp_loop, raw, packets)
                nursery.start_soon(self._accept_loop, listener, on_stream, nursery)
                self._log.info("transport_listening", addr=str(bound))
                task_status.started(bound)
        finally:
            self._udp = None
            self._udp_raw = None
            udp.close()
            await trio.aclose_forcefully(listener)

    async def _udp_loop(
        self, raw: stdlib_socket.socket, packets: trio.MemorySendChannel[Datagram]
    ) -> None:
        """Read datagrams into ``packets``.  The socket is read without a trio wrapper: a burst
        is drained with plain non-blocking reads and the task yields every ``UDP_BATCH``
        datagrams (and waits for readability when there are none), instead of yielding to the
        scheduler after each one."""
        c = self._counters
        batch = 0
        while True:
            if batch >= UDP_BATCH:
                batch = 0
                await trio.lowlevel.checkpoint()  # let the driver and the rest run
            batch += 1  # every read counts, errors too: the loop always yields in the end
            try:
                data, src = raw.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                batch = 0
                await trio.lowlevel.wait_readable(raw)
                continue
            except OSError as exc:
                # e.g. ECONNREFUSED from an earlier send (ICMP port unreachable): not fatal.
                self._log.debug("udp_recv_error", error=_reason(exc))
                continue
            c.bytes_in += len(data)
            if not data:
                c.packets_dropped_bad += 1  # memberlist ignores 0-byte datagrams
                continue
            try:
                plain = self.crypto.open_packet(data, Address(src[0], src[1]))
            except DecodeError:
                c.packets_dropped_bad += 1  # logged (rate-limited) by the crypto
                continue
            c.packets_in += 1
            try:
                packets.send_nowait(Datagram(Address(src[0], src[1]), plain))
            except trio.WouldBlock:
                # Policy: never block the socket reader; drop like a full kernel buffer.
                c.packets_dropped_full += 1
                self._log.debug("packet_dropped", reason="receive_queue_full")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async def _accept_loop(
        self, listener: trio.SocketListener, on_stream: StreamHandler, nursery: trio.Nursery
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # EMFILE and friends: back off briefly, like trio.serve_listeners does.
                self._log.warning("tcp_accept_failed", error=_reason(exc))
                await trio.sleep(0.1)
                continue
            if self._inbound.available_tokens == 0:
                self._counters.stream_errors += 1
                self._log.warning("stream_rejected", reason="too_many_streams")
                await trio.aclose_forcefully(stream)
                continue
            nursery.start_soon(self._handle_conn, stream, on_stream)

    async def _handle_conn(self, stream: trio.SocketStream, on_stream: StreamHandler) -> None:
        async with self._inbound:
            await serve_stream_connection(
                stream, on_stream, self.crypto, self.stream_timeout, self._counters, self._log
            )

    async def send_packet(self, addr: Address, data: bytes) -> None:
        udp = self._udp
        if udp is None:
            self._counters.send_errors += 1
            return
        try:
            sealed = self.crypto.seal_packet(data)
            await udp.sendto(sealed, (addr.host, addr.port))
            self._counters.packets_out += 1
            self._counters.bytes_out += len(sealed)
        except OSError as exc:
            self._counters.send_errors += 1
            self._log.debug("udp_send_failed", to=str(addr), error=_reason(exc))

    def send_packet_nowait(self, addr: Address, data: bytes) -> bool:
        raw = self._udp_raw
        if raw is None:
            return False
        sealed = self.crypto.seal_packet(data)
        try:
            raw.sendto(sealed, (addr.host, addr.port))
        except BlockingIOError:
            return False  # the send buffer is full: queue it, the sender waits for room
        except OSError as exc:
            self._counters.send_errors += 1
            self._log.debug("udp_send_failed", to=str(addr), error=_reason(exc))
            return True
        self._counters.packets_out += 1
        self._counters.bytes_out += len(sealed)
        return True

    async def request(
        self, addr: Address, data: bytes, *, expect_reply: bool, time_limit: float
    ) -> bytes:
        self._counters.streams_out += 1
        try:
            return await request_stream(
                addr,
                data,
                expect_reply=expect_reply,
                time_limit=time_limit,
                crypto=self.crypto,
                counters=self._counters,
            )
        except TransportError:
            self._counters.stream_errors += 1
            raise


def parse_hostport(text: str, default_port: int = 7946) -> Address:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or a bare IPv6 literal -> ``Address``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    else:
        host, port = text, default_port
    ipaddress.ip_address(host)  # ValueError for hostnames: we take literal IPs only
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return Address(host, port)
