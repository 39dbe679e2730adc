"""The real ``serf-trio`` script against a real ``RpcServer`` serving a fake agent.

Exercises the whole client path (argument parsing, socket lookup, handshake, msgpack, output)
in a separate process, the way a user runs it; only the agent behind the RPC server is fake.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import structlog
import trio
from rpc.fake_agent import FakeAgent

from serf_trio.rpc.api import NOT_SUPPORTED, QueryRecord, RpcMember
from serf_trio.rpc.server import RpcServer

from .test_fast_start import clean_env, serf_trio_cmd

pytestmark = pytest.mark.realnet  # a real (Unix) socket and real processes

LIMIT = 30  # seconds for a whole test; each command takes ~0.1 s


def fake_agent() -> FakeAgent:
    """The scripted agent of the RPC tests, answering members, join, query and an error."""
    return FakeAgent(
        member_list=[
            RpcMember("n1", bytes([127, 0, 0, 11]), 7946, {"role": "lb"}, "alive"),
            RpcMember("n2", bytes([127, 0, 0, 12]), 7947, {}, "failed"),
        ],
        join_result=2,
        query_records=[
            QueryRecord("ack", "n1"),
            QueryRecord("response", "n1", b"cba"),
            QueryRecord("done"),
        ],
        event_error=NOT_SUPPORTED,
    )


def with_agent(body: Callable[[FakeAgent, Path], Awaitable[None]], tmp_path: Path) -> None:
    sock = tmp_path / "serf-trio" / "rpc.sock"
    agent = fake_agent()

    async def main() -> None:
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                server = RpcServer(agent, socket_path=str(sock), logger=structlog.get_logger())
                await nursery.start(server.serve)
                await body(agent, sock)
                nursery.cancel_scope.cancel()

    trio.run(main)


async def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = clean_env(tmp_path)  # XDG_RUNTIME_DIR=tmp_path: the default socket is the server's
    return await trio.run_process(
        [*serf_trio_cmd(), *args], capture_stdout=True, capture_stderr=True, check=False, env=env
    )


def test_members_json_through_the_default_socket(tmp_path: Path) -> None:
    if os.path.exists("/run/serf-trio/rpc.sock"):
        pytest.skip("a system serf-trio agent is running here")

    async def body(agent: FakeAgent, sock: Path) -> None:
        proc = await cli(tmp_path, "members", "--format", "json")
        assert (proc.returncode, proc.stderr) == (0, b"")
        assert json.loads(proc.stdout) == {
            "members": [
                {
                    "name": "n1",
                    "addr": "127.0.0.11:7946",
                    "port": 7946,
                    "tags": {"role": "lb"},
                    "status": "alive",
                    "protocol": {"max": 5, "min": 2, "version": 5},
                },
                {
                    "name": "n2",
                    "addr": "127.0.0.12:7947",
                    "port": 7947,
                    "tags": {},
                    "status": "failed",
                    "protocol": {"max": 5, "min": 2, "version": 5},
                },
            ]
        }
        proc = await cli(tmp_path, "members", "--status", "fail.*", "--rpc-socket", str(sock))
        assert proc.stdout.decode().splitlines() == ["n2  127.0.0.12:7947  failed"]

    with_agent(body, tmp_path)


def test_join_query_and_an_agent_error(tmp_path: Path) -> None:
    async def body(agent: FakeAgent, sock: Path) -> None:
        s = ("--rpc-socket", str(sock))
        proc = await cli(tmp_path, "join", "127.0.0.2", "127.0.0.3:7946", "--replay", *s)
        assert proc.stdout == b"Successfully joined cluster by contacting 2 nodes.\n"
        assert agent.calls == [("join", (["127.0.0.2", "127.0.0.3:7946"], True))]

        proc = await cli(tmp_path, "query", "rev", "abc", "--timeout", "2s", *s)
        assert proc.returncode == 0
        assert proc.stdout.decode().splitlines() == [
            "Query 'rev' dispatched",
            "Ack from 'n1'",
            "Response from 'n1': cba",
            "Total Acks: 1",
            "Total Responses: 1",
        ]
        what, params = agent.calls[1]
        assert (what, params.name, params.payload) == ("query", "rev", b"abc")

        proc = await cli(tmp_path, "event", "deploy", *s)
        assert (proc.returncode, proc.stdout) == (1, b"")
        assert proc.stderr == b"Error sending event: Feature not supported\n"

    with_agent(body, tmp_path)
