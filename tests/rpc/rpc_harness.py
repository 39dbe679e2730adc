"""Shared helpers for RPC server tests: run an RpcServer on a temporary Unix socket, talk raw
msgpack to it, and run the blocking RpcClient in a worker thread."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

from serf_trio.rpc import protocol as p
from serf_trio.rpc.client import RpcClient
from serf_trio.rpc.server import RpcBound, RpcServer

from .fake_agent import FakeAgent

T = TypeVar("T")
EOF = object()


@asynccontextmanager
async def running_server(
    agent: FakeAgent, sock_path: Path, tcp: bool = False, **kw: Any
) -> AsyncIterator[tuple[RpcServer, RpcBound]]:
    async with trio.open_nursery() as nursery:
        server = RpcServer(
            agent, socket_path=str(sock_path), tcp_addr=("127.0.0.1", 0) if tcp else None, **kw
        )
        bound = await nursery.start(server.serve)
        yield server, bound
        nursery.cancel_scope.cancel()


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


async def client(path: Path, **kw: Any) -> RpcClient:
    return await in_thread(lambda: RpcClient(socket_path=str(path), timeout=5.0, **kw))


class Raw:
    """A raw connection speaking msgpack objects, for protocol-level assertions."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = p.FrameReader()
        self.inbox: list[Any] = []

    @classmethod
    async def open(cls, path: Path) -> Raw:
        return cls(await trio.open_unix_socket(str(path)))

    async def send(self, *objs: Any) -> None:
        await self.stream.send_all(b"".join(p.pack(o) for o in objs))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def recv(self) -> Any:
        """Next object, or EOF when the server closed the connection."""
        while not self.inbox:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return EOF
            if not data:
                return EOF
            self.inbox.extend(self.reader.feed(data))
        return self.inbox.pop(0)

    async def handshake(self) -> None:
        await self.send({"Command": "handshake", "Seq": 0}, {"Version": 1})
        assert await self.recv() == {"Error": "", "Seq": 0}

    async def aclose(self) -> None:
        await self.stream.aclose()
