"""RPC ``leave`` is answered once the agent's leave is over (Serf's ipc.go handleLeave), and a
leave that did not complete is an error reply, not a success."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from serf_trio.rpc import protocol as p
from serf_trio.rpc.api import AgentError
from serf_trio.rpc.client import RpcError

from .fake_agent import FakeAgent
from .rpc_harness import client, in_thread, running_server

LIMIT = 10


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        with trio.fail_after(LIMIT):
            await body()

    trio.run(main)


@dataclass
class SlowLeaver(FakeAgent):
    """Its leave starts (``left`` is set), then waits for ``release``; ``error``: fails."""

    release: trio.Event = field(default_factory=trio.Event)
    error: str = ""

    async def leave(self) -> None:
        self.calls.append(("leave", None))
        self.left.set()
        await self.release.wait()
        if self.error:
            raise AgentError(self.error)


def _raw(path: Path) -> socket.socket:
    """A blocking stdlib connection that has done the handshake."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    sock.sendall(p.pack({"Command": "handshake", "Seq": 0}) + p.pack({"Version": 1}))
    reader = p.FrameReader()
    assert reader.feed(sock.recv(4096)) == [{"Error": "", "Seq": 0}]
    return sock


def test_no_reply_while_the_leave_runs(tmp_path: Path) -> None:
    agent = SlowLeaver()
    path = tmp_path / "rpc.sock"

    async def body() -> None:
        async with running_server(agent, path):
            sock = await in_thread(lambda: _raw(path))
            with sock:
                sock.sendall(p.pack({"Command": "leave", "Seq": 1}))
                await agent.left.wait()
                # The leave has started: a reply sent before it (the old order) would be in the
                # socket's buffer by now.  Nothing is there until the leave is over.
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(4096)
                sock.settimeout(5)
                agent.release.set()
                data = await in_thread(lambda: sock.recv(4096))
                assert p.FrameReader().feed(data) == [{"Error": "", "Seq": 1}]
                assert await in_thread(lambda: sock.recv(4096)) == b""  # then it closes

    run(body)
    assert agent.calls == [("leave", None)]


def test_a_leave_that_did_not_complete_is_an_error_for_the_client(tmp_path: Path) -> None:
    text = "leave aborted (second signal, SIGINT): the agent stops without finishing its leave"
    agent = SlowLeaver(error=text)
    agent.release.set()
    path = tmp_path / "rpc.sock"

    async def body() -> None:
        async with running_server(agent, path):
            c = await client(path)
            with c, pytest.raises(RpcError) as info:
                await in_thread(c.leave)
            assert str(info.value) == text

    run(body)
