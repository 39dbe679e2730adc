"""Ecosystem clients against RpcServer on TCP with a fake agent: the real HashiCorp ``serf``
CLI (skipped when it is not installed) and the PyPI client ``serfclient``."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from serf_trio.rpc.api import MemberEventRecord, UserEventRecord
from serf_trio.rpc.server import RpcServer

from .fake_agent import FakeAgent, default_members
from .rpc_harness import in_thread

SERF = shutil.which("serf")
pytestmark = [pytest.mark.realnet]
needs_serf = pytest.mark.skipif(SERF is None, reason="the HashiCorp serf binary is not installed")
LIMIT = 20


def with_tcp_server(agent: FakeAgent, body: Callable[[str], Awaitable[None]]) -> None:
    """Serve ``agent`` on 127.0.0.1 (port chosen by the kernel) and run ``body(addr)``."""

    async def main() -> None:
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                server = RpcServer(agent, socket_path=None, tcp_addr=("127.0.0.1", 0))
                bound = await nursery.start(server.serve)
                assert bound.tcp_addr is not None
                await body(f"127.0.0.1:{bound.tcp_addr[1]}")
                nursery.cancel_scope.cancel()

    trio.run(main)


async def serf_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert SERF is not None
    return await trio.run_process(
        [SERF, *args], capture_stdout=True, capture_stderr=True, check=False
    )


@pytest.mark.interop
@needs_serf
def test_serf_cli_members_join_tags_event_leave() -> None:
    agent = FakeAgent()

    async def body(addr: str) -> None:
        rpc = f"-rpc-addr={addr}"
        out = await serf_cli("members", rpc)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.decode().splitlines()
        assert [line.split()[:3] for line in lines] == [
            ["n1", "127.0.0.11:7946", "alive"],
            ["n2", "127.0.0.12:7947", "alive"],
            ["n3", "127.0.0.13:7948", "failed"],
        ]
        out = await serf_cli("members", rpc, "-format", "json")
        doc = json.loads(out.stdout)
        assert doc["members"][1] == {
            "name": "n2",
            "addr": "127.0.0.12:7947",
            "port": 7947,
            "tags": {"role": "web", "dc": "lab"},
            "status": "alive",
            "protocol": {"min": 2, "max": 5, "version": 5},
        }
        out = await serf_cli("members", rpc, "-status", "failed", "-tag", "role=d.")
        assert out.stdout.decode().split()[:1] == ["n3"]
        out = await serf_cli("join", rpc, "127.0.0.12:7947")
        assert out.returncode == 0
        assert b"Successfully joined cluster by contacting 1 nodes" in out.stdout
        out = await serf_cli("tags", rpc, "-set", "env=prod", "-delete", "dc")
        assert out.returncode == 0 and b"Successfully updated agent tags" in out.stdout
        out = await serf_cli("event", rpc, "deploy", "v1.2.3")
        assert out.returncode == 0 and b"Event 'deploy' dispatched" in out.stdout
        out = await serf_cli("leave", rpc)
        assert out.returncode == 0 and b"Graceful leave complete" in out.stdout
        await agent.left.wait()

    with_tcp_server(agent, body)
    assert agent.calls == [
        ("join", (["127.0.0.12:7947"], False)),
        ("set_tags", ({"env": "prod"}, ["dc"])),
        ("user_event", ("deploy", b"v1.2.3", True)),
        ("leave", None),
    ]


@pytest.mark.interop
@needs_serf
def test_serf_cli_join_failure_and_keys_errors_are_printed() -> None:
    agent = FakeAgent(join_result="1 error occurred: dial tcp 127.0.0.9:1: connection refused")

    async def body(addr: str) -> None:
        out = await serf_cli("join", f"-rpc-addr={addr}", "127.0.0.9:1")
        assert out.returncode == 1
        assert b"Error joining the cluster: 1 error occurred" in out.stdout + out.stderr
        out = await serf_cli("keys", f"-rpc-addr={addr}", "-list")
        assert out.returncode == 1
        text = (out.stdout + out.stderr).decode()
        assert "n1  Keyring is empty (encryption not enabled)" in text
        assert "1/1 nodes reported failure" in text

    with_tcp_server(agent, body)


@pytest.mark.interop
@needs_serf
def test_serf_cli_monitor_shows_logs_and_events() -> None:
    agent = FakeAgent(log_backlog=["2026/11/29 04:59:18 [INFO] agent: Serf agent starting"])

    async def body(addr: str) -> None:
        assert SERF is not None
        proc = await trio.lowlevel.open_process(
            [SERF, "monitor", f"-rpc-addr={addr}"], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        try:
            seen = b""
            while b"Serf agent starting" not in seen:
                seen += await proc.stdout.receive_some(4096)
            # serf monitor opens the log monitor and an event stream "*"
            while ("logs", "INFO") not in agent.calls or ("events", "*") not in agent.calls:
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0.01)
            agent.push_log("2026/11/29 04:59:19 [INFO] agent: pushed line")
            agent.push_event(UserEventRecord("deploy", b"v2", 4, True))
            agent.push_event(MemberEventRecord("member-join", (default_members()[1],)))
            while not all(s in seen for s in (b"pushed line", b'Name: "deploy"', b'"Name":"n2"')):
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, seen
                seen += chunk
        finally:
            proc.kill()
            await proc.wait()

    with_tcp_server(agent, body)


@pytest.mark.interop
@needs_serf
def test_serf_cli_auth() -> None:
    agent = FakeAgent(rpc_auth="s3cr3t-token")

    async def body(addr: str) -> None:
        ok = await serf_cli("members", f"-rpc-addr={addr}", "-rpc-auth", "s3cr3t-token")
        assert ok.returncode == 0 and ok.stdout.startswith(b"n1 ")
        bad = await serf_cli("members", f"-rpc-addr={addr}", "-rpc-auth", "wrong")
        assert bad.returncode == 1
        assert b"Invalid authentication token" in bad.stdout + bad.stderr
        none = await serf_cli("members", f"-rpc-addr={addr}")
        assert none.returncode == 1
        assert b"Authentication required" in none.stdout + none.stderr

    with_tcp_server(agent, body)


def test_serfclient_members_join_event_stream() -> None:
    serfclient = pytest.importorskip("serfclient")
    agent = FakeAgent(rpc_auth="tok")

    async def body(addr: str) -> None:
        port = int(addr.rsplit(":", 1)[1])
        c = await in_thread(lambda: serfclient.SerfClient(port=port, rpc_auth="tok", timeout=5))
        try:
            r = await in_thread(c.members)
            assert r.head == {"Error": "", "Seq": 2}
            assert [m["Name"] for m in r.body["Members"]] == ["n1", "n2", "n3"]
            r = await in_thread(lambda: c.members(name="n[23]", status="alive"))
            assert [m["Name"] for m in r.body["Members"]] == ["n2"]
            r = await in_thread(lambda: c.join(["127.0.0.12:7947"]))
            assert r.body == {"Num": 1}
            r = await in_thread(lambda: c.event("deploy", "v1"))
            assert r.head["Error"] == ""
            r = await in_thread(c.stats)
            assert r.body["agent"] == {"name": "n1"}
        finally:
            await in_thread(c.close)

    with_tcp_server(agent, body)
    assert agent.calls == [
        ("join", (["127.0.0.12:7947"], False)),
        ("user_event", ("deploy", b"v1", True)),  # str payload accepted for a []byte field
    ]
