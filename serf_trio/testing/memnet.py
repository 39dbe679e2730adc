"""An in-memory trio network implementing ``serf_trio.runtime.transport.Transport``.

It lets the *real* runtime tasks (``MembershipNode``: core driver, prober, gossip, push-pull,
sender, stream tasks) run many nodes in one process under ``trio.testing.MockClock``, with the
network's behaviour decided by the seeded, pure ``netmodel.NetModel`` (latency, loss,
duplication, partitions, dead hosts, starvation).  The network owns *delivery*: one task
(``MemoryNetwork.run``) holds a timer heap of datagrams in flight and hands each one to the
destination's receive channel at its arrival time (``send_nowait``: a full channel drops and
counts, like the real UDP reader).

Streams: ``request`` asks the model when the connect/request arrives, runs the destination's
stream handler in the network's nursery (bounded by the destination's stream timeout, as the
real listener does), and waits for the reply's arrival time; all under the caller's time limit.
A node whose ``serve`` has ended (crashed or stopped) is unregistered: its datagrams vanish and
connects to it are refused.

Encryption: each transport takes a ``WireCrypto`` (``runtime.crypto.EnvelopeCrypto`` for an
encrypted node).  Datagrams and stream messages travel sealed by the sender's and are opened
by the receiver's, with the real transport's rules (a refused stream is answered with
memberlist's ``err``), so protocol tests can mix keys and ciphers.

Usage::

    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(NetModel(seed=1))
        await nursery.start(net.run)
        node = MembershipNode(config, "n1", net.transport(Address("127.0.0.1", 7946)))
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

import trio

from serf_trio.runtime.transport import (
    PLAINTEXT,
    Datagram,
    StreamHandler,
    TransportCounters,
    TransportError,
    TransportStats,
    WireCrypto,
    stream_error_reply,
)
from serf_trio.swim.api import Address
from serf_trio.wire.codec import DecodeError

from .netmodel import NetModel


@dataclass(slots=True)
class _Endpoint:
    packets: trio.MemorySendChannel[Datagram]
    on_stream: StreamHandler
    stream_timeout: float
    counters: TransportCounters
    crypto: WireCrypto


class MemoryNetwork:
    """A set of in-memory transports sharing one ``NetModel``."""

    def __init__(self, model: NetModel) -> None:
        self.model = model
        self._endpoints: dict[Address, _Endpoint] = {}
        self._heap: list[tuple[float, int, Address, Datagram]] = []
        self._seq = itertools.count()
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None

    def transport(
        self, addr: Address, *, stream_timeout: float = 10.0, crypto: WireCrypto = PLAINTEXT
    ) -> MemoryTransport:
        """A transport bound to ``addr`` (e.g. ``127.0.0.X:7946``) on this network."""
        return MemoryTransport(self, addr, stream_timeout, crypto)

    def crash(self, addr: Address) -> None:
        """Make ``addr`` unreachable at once (its task may still be running)."""
        self.model.kill(addr)
        self._endpoints.pop(addr, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver datagrams at their arrival times; run until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                if not self._heap:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                at = self._heap[0][0]
                if trio.current_time() < at:
                    self._wake = trio.Event()
                    with trio.move_on_at(at):
                        await self._wake.wait()
                    continue
                _, _, dst, dgram = heapq.heappop(self._heap)
                ep = self._endpoints.get(dst)
                if ep is None:
                    continue
                ep.counters.bytes_in += len(dgram.data)
                try:
                    dgram = Datagram(dgram.src, ep.crypto.open_packet(dgram.data, dgram.src))
                except DecodeError:
                    ep.counters.packets_dropped_bad += 1
                    continue
                try:
                    ep.packets.send_nowait(dgram)
                    ep.counters.packets_in += 1
                except trio.WouldBlock:
                    ep.counters.packets_dropped_full += 1
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._endpoints.pop(dst, None)

    # -- used by MemoryTransport ----------------------------------------------------------

    def _register(self, addr: Address, ep: _Endpoint) -> None:
        if addr in self._endpoints:
            raise OSError(f"address {addr} already in use on the memory network")
        self.model.revive(addr)
        self._endpoints[addr] = ep

    def _unregister(self, addr: Address, ep: _Endpoint) -> None:
        if self._endpoints.get(addr) is ep:
            del self._endpoints[addr]

    def _send(self, src: Address, dst: Address, data: bytes) -> None:
        for at in self.model.packet(trio.current_time(), src, dst):
            heapq.heappush(self._heap, (at, next(self._seq), dst, Datagram(src, data)))
        self._wake.set()

    def _spawn_handler(self, ep: _Endpoint, src: Address, data: bytes, reply: _Slot) -> None:
        if self._nursery is None:
            raise RuntimeError("MemoryNetwork.run is not running")
        self._nursery.start_soon(self._handle, ep, src, data, reply)

    async def _handle(self, ep: _Endpoint, src: Address, data: bytes, reply: _Slot) -> None:
        ep.counters.streams_in += 1
        try:
            request = ep.crypto.stream_reader(str(src)).feed(data)
            if request is None:
                raise DecodeError("stream: connection closed mid-message")
        except DecodeError as exc:
            ep.counters.stream_errors += 1
            reply.set(stream_error_reply(exc, data[0] if data else None, ep.crypto))
            return
        with trio.move_on_after(ep.stream_timeout):
            answer = await ep.on_stream(request)
            reply.set(ep.crypto.seal_stream(answer) if answer is not None else None)
            return
        ep.counters.stream_errors += 1
        reply.set(None)


class _Slot:
    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: bytes | None = None

    def set(self, value: bytes | None) -> None:
        self.value = value
        self.event.set()


class MemoryTransport:
    """One node's endpoint on a ``MemoryNetwork``."""

    def __init__(
        self,
        net: MemoryNetwork,
        addr: Address,
        stream_timeout: float,
        crypto: WireCrypto = PLAINTEXT,
    ) -> None:
        self.net = net
        self.addr = addr
        self.stream_timeout = stream_timeout
        self.crypto = crypto
        self._counters = TransportCounters()

    def statistics(self) -> TransportStats:
        return self._counters.snapshot()

    async def serve(
        self,
        packets: trio.MemorySendChannel[Datagram],
        on_stream: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        ep = _Endpoint(packets, on_stream, self.stream_timeout, self._counters, self.crypto)
        self.net._register(self.addr, ep)
        try:
            async with packets:
                task_status.started(self.addr)
                await trio.sleep_forever()
        finally:
            self.net._unregister(self.addr, ep)

    async def send_packet(self, addr: Address, data: bytes) -> None:
        sealed = self.crypto.seal_packet(data)
        self._counters.packets_out += 1
        self._counters.bytes_out += len(sealed)
        self.net._send(self.addr, addr, sealed)
        await trio.lowlevel.checkpoint()

    def send_packet_nowait(self, addr: Address, data: bytes) -> bool:
        return False  # always through the sender task: seeded runs keep their interleaving

    async def request(
        self, addr: Address, data: bytes, *, expect_reply: bool, time_limit: float
    ) -> bytes:
        self._counters.streams_out += 1
        model = self.net.model
        with trio.move_on_after(time_limit):
            c = model.stream_connect(trio.current_time(), self.addr, addr)
            if c.handle_at is None:
                await trio.sleep_until(math.inf if c.fail_at is None else c.fail_at)
                self._counters.stream_errors += 1
                raise TransportError(f"stream to {addr} failed: {c.error}")
            await trio.sleep_until(c.handle_at)
            ep = self.net._endpoints.get(addr)
            if ep is None:
                self._counters.stream_errors += 1
                raise TransportError(f"stream to {addr} failed: connection refused")
            slot = _Slot()
            sealed = self.crypto.seal_stream(data)
            self._counters.tcp_bytes_out += len(sealed)
            self.net._spawn_handler(ep, self.addr, sealed, slot)
            if not expect_reply:
                return b""
            await slot.event.wait()
            if slot.value is None:
                self._counters.stream_errors += 1
                raise TransportError(f"stream to {addr}: closed without a reply")
            arrive = model.stream_reply(trio.current_time(), addr, self.addr)
            await trio.sleep_until(math.inf if arrive is None else arrive)
            try:
                reply = self.crypto.stream_reader(str(addr)).feed(slot.value)
            except DecodeError as exc:
                self._counters.stream_errors += 1
                raise TransportError(f"bad reply from {addr}: {exc}") from exc
            if reply is None:
                self._counters.stream_errors += 1
                raise TransportError(f"bad reply from {addr}: incomplete message")
            return reply
        self._counters.stream_errors += 1
        raise TransportError(f"stream to {addr} timed out after {time_limit}s")
