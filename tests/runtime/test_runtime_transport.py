"""The real UDP/TCP transport on loopback (127.0.0.1 and ::1)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import pytest
import trio

from serf_trio.runtime.transport import (
    Datagram,
    TransportError,
    UdpTcpTransport,
    parse_hostport,
)
from serf_trio.swim.api import Address
from serf_trio.wire.messages import Ack, Err, Ping
from serf_trio.wire.stream import decode_stream_message, encode_stream_message

pytestmark = pytest.mark.realnet


def _can_bind(host: str, family: socket.AddressFamily) -> bool:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


HOSTS = [
    "127.0.0.1",
    pytest.param(
        "::1",
        marks=pytest.mark.skipif(
            not _can_bind("::1", socket.AF_INET6), reason="cannot bind ::1 here"
        ),
    ),
]


async def _echo_ack(data: bytes) -> bytes | None:
    msg = decode_stream_message(data)
    assert isinstance(msg, Ping)
    return encode_stream_message(Ack(msg.seq_no, b"pong"), compress=True)


def run(fn: Callable[[], Awaitable[None]], limit: float = 10.0) -> None:
    async def main() -> None:
        with trio.fail_after(limit):
            await fn()

    trio.run(main)


@pytest.mark.parametrize("host", HOSTS)
def test_udp_and_tcp_share_one_port_and_exchange(host: str) -> None:
    async def body() -> None:
        a = UdpTcpTransport(Address(host, 0))
        b = UdpTcpTransport(Address(host, 0))
        a_send, a_recv = trio.open_memory_channel[Datagram](16)
        b_send, b_recv = trio.open_memory_channel[Datagram](16)
        async with trio.open_nursery() as nursery:
            addr_a: Address = await nursery.start(a.serve, a_send, _echo_ack)
            addr_b: Address = await nursery.start(b.serve, b_send, _echo_ack)
            assert addr_a.port != 0 and addr_a.host == host
            await a.send_packet(addr_b, b"\x00hello")
            got = await b_recv.receive()
            assert got == Datagram(addr_a, b"\x00hello")
            # The TCP listener is on the same port as UDP.
            reply = await a.request(
                addr_b,
                encode_stream_message(Ping(7, "b"), compress=True),
                expect_reply=True,
                time_limit=5,
            )
            assert decode_stream_message(reply) == Ack(7, b"pong")
            assert b.statistics().streams_in == 1
            assert a.statistics().packets_out == 1 and b.statistics().packets_in == 1
            nursery.cancel_scope.cancel()
        del a_recv

    run(body)


def test_stream_without_reply_and_refused_and_timeout() -> None:
    async def body() -> None:
        got: list[bytes] = []
        never = trio.Event()

        async def handler(data: bytes) -> bytes | None:
            got.append(data)
            if decode_stream_message(data) == Ping(1, "hang"):
                await never.wait()
            return None

        srv = UdpTcpTransport(Address("127.0.0.1", 0), stream_timeout=5)
        send, _recv = trio.open_memory_channel[Datagram](1)
        async with trio.open_nursery() as nursery:
            addr: Address = await nursery.start(srv.serve, send, handler)
            msg = encode_stream_message(Ping(2, "x"), compress=False)
            assert await srv.request(addr, msg, expect_reply=False, time_limit=2) == b""
            with trio.fail_after(2):
                while not got:  # noqa: ASYNC110 - polled under fail_after
                    await trio.sleep(0.01)
            assert got == [msg]
            # A server that never answers: the caller's time limit turns into TransportError.
            start = trio.current_time()
            hang = encode_stream_message(Ping(1, "hang"), compress=False)
            with pytest.raises(TransportError, match="timed out"):
                await srv.request(addr, hang, expect_reply=True, time_limit=0.3)
            assert 0.25 <= trio.current_time() - start < 2
            nursery.cancel_scope.cancel()
        # Nothing listens any more: refused.
        with pytest.raises(TransportError):
            await srv.request(addr, msg, expect_reply=True, time_limit=2)
        assert srv.statistics().stream_errors >= 2

    run(body)


def test_encrypted_stream_to_plain_node_gets_memberlist_error() -> None:
    async def body() -> None:
        srv = UdpTcpTransport(Address("127.0.0.1", 0))
        send, _recv = trio.open_memory_channel[Datagram](1)
        async with trio.open_nursery() as nursery:
            addr: Address = await nursery.start(srv.serve, send, _echo_ack)
            # type 10 = encrypted stream frame (memberlist security.go)
            frame = b"\x0a\x00\x00\x00\x20" + b"\x01" + bytes(31)
            stream = await trio.open_tcp_stream(addr.host, addr.port)
            async with stream:
                await stream.send_all(frame)
                data = b""
                while chunk := await stream.receive_some(4096):
                    data += chunk
            assert decode_stream_message(data) == Err(
                "Remote state is encrypted and encryption is not configured"
            )
            nursery.cancel_scope.cancel()

    run(body)


def test_full_receive_channel_drops_and_counts() -> None:
    async def body() -> None:
        srv = UdpTcpTransport(Address("127.0.0.1", 0))
        send, recv = trio.open_memory_channel[Datagram](2)
        async with trio.open_nursery() as nursery:
            addr: Address = await nursery.start(srv.serve, send, _echo_ack)
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(10):
                    await s.sendto(bytes([0, i]), (addr.host, addr.port))
                await s.sendto(b"", (addr.host, addr.port))  # ignored, counted as bad
                # Poll (bounded by fail_after) until the reader has seen all 11 datagrams.
                while True:
                    st = srv.statistics()
                    if st.packets_in + st.packets_dropped_bad >= 11:
                        break
                    await trio.sleep(0.01)
            st = srv.statistics()
            assert st.packets_in == 10 and st.packets_dropped_bad == 1
            assert st.packets_dropped_full == 8  # only 2 fit; the reader never blocked
            assert (await recv.receive()).data == b"\x00\x00"
            nursery.cancel_scope.cancel()

    run(body)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7946", Address("127.0.0.1", 7946)),
        ("127.0.0.2", Address("127.0.0.2", 7946)),
        ("[::1]:8000", Address("::1", 8000)),
        ("::1", Address("::1", 7946)),
    ],
)
def test_parse_hostport(text: str, expected: Address) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("bad", ["localhost:1", "1.2.3.4:99999", "nonsense"])
def test_parse_hostport_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(bad)
