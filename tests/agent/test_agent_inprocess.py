"""Three ``Agent``s in one trio run on real loopback sockets, driven through ``AgentAPI``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from agent_harness import make_agent
from helpers import wait_until

from serf_trio.agent import Agent
from serf_trio.agent.agent import rpc_member
from serf_trio.rpc.api import AgentError, MemberEventRecord, QueryParams
from serf_trio.swim.api import Address, MemberInfo, State

pytestmark = pytest.mark.realnet


@asynccontextmanager
async def running(*agents: Agent) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        for a in agents:
            await nursery.start(a.run)
        yield nursery
        nursery.cancel_scope.cancel()


def alive(agent: Agent) -> set[str]:
    return {m.name for m in agent.members() if m.status == "alive"}


def test_three_agents_join_tags_events_and_leave(tmp_path: Path) -> None:
    trio.run(three_agents, tmp_path)


async def three_agents(tmp_path: Path) -> None:
    a = make_agent(tmp_path, "a", "--tag=role=web")
    b = make_agent(tmp_path, "b")
    c = make_agent(tmp_path, "c", f"--tags-file={tmp_path / 'c-tags.json'}")
    with trio.fail_after(30):
        async with running(a, b, c):
            assert a.addr is not None
            events = a.events("member-join,member-update")
            joined = await b.join([f"a/{a.addr.host}:{a.addr.port}"], replay=False)
            assert joined == 1
            assert await c.join([f"{a.addr.host}:{a.addr.port}", "not-an-ip"], False) == 1
            for ag in (a, b, c):
                await wait_until(lambda ag=ag: alive(ag) == {"a", "b", "c"})  # type: ignore[misc]
            # member events are coalesced (Serf agent: 3 s / 1 s): wait for the joins to be
            # delivered before changing tags, or c's update would replace its join.
            got: list[tuple[str, str]] = []
            with trio.fail_after(10):
                async for rec in events:
                    assert isinstance(rec, MemberEventRecord)
                    got.extend((rec.event, m.name) for m in rec.members)
                    if ("member-join", "b") in got and ("member-join", "c") in got:
                        break
            web = next(m for m in b.members() if m.name == "a")
            assert web.tags == {"role": "web"} and web.port == a.addr.port
            assert web.addr == bytes([127, 0, 0, 1])

            # the stream sees b and c join; a tag change shows up as member-update
            await c.set_tags({"dc": "x"}, delete=[])
            with trio.fail_after(10):
                async for rec in events:
                    assert isinstance(rec, MemberEventRecord)
                    got.extend((rec.event, m.name) for m in rec.members)
                    if ("member-update", "c") in got:
                        break
            assert got.count(("member-join", "c")) == 1
            await wait_until(
                lambda: next(m for m in a.members() if m.name == "c").tags == {"dc": "x"}
            )
            # tags_file written atomically with the new tags
            assert json.loads((tmp_path / "c-tags.json").read_text()) == {"dc": "x"}

            stats = a.stats()
            assert stats["agent"]["name"] == "a"
            assert stats["serf"]["members"] == "3" and stats["serf"]["encrypted"] == "false"
            assert stats["tags"] == {"role": "web"}

            keys = await a.key_operation("list", "")
            assert keys.keys == {} and keys.num_nodes == 3 and keys.num_err == 3
            assert keys.error == "3/3 nodes reported failure"
            assert set(keys.messages.values()) == {"Keyring is empty (encryption not enabled)"}
            inst = await a.key_operation("install", "dGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVzdGtleQ==")
            assert inst.keys is None
            assert "No keyring to modify" in next(iter(inst.messages.values()))

            # b leaves through the API: its run() returns 0, the others see it leave
            with trio.fail_after(10):
                await b.leave()
            await wait_until(lambda: next(m for m in a.members() if m.name == "b").status == "left")


def test_bad_input_answers_errors_not_crashes(tmp_path: Path) -> None:
    trio.run(bad_input, tmp_path)


async def bad_input(tmp_path: Path) -> None:
    a = make_agent(tmp_path, "solo")
    with trio.fail_after(20):
        async with running(a):
            with pytest.raises(AgentError, match="Invalid event filter"):
                a.events("member-joyn")
            with pytest.raises(AgentError, match=r"^Unknown log level: LOUD$"):
                a.logs("LOUD")
            with pytest.raises(AgentError, match="Invalid event filter"):
                a.events(" member-join")  # Serf does not trim filter words
            await a.force_leave("nobody", False)  # unknown names are accepted silently
            with pytest.raises(
                AgentError,
                match=r"^user event exceeds configured limit of 512 bytes before encoding$",
            ):
                await a.user_event("e", b"x" * 512, True)
            with pytest.raises(AgentError, match=r"^failed to respond to key query: "):
                await a.respond(12345, b"late")
            with pytest.raises(AgentError, match=r"^Queries cannot contain the '_serf_' prefix$"):
                a.query(QueryParams("_serf_conflict", b""))
            with pytest.raises(AgentError, match=r"^query exceeds limit of 1024 bytes$"):
                a.query(QueryParams("q", b"x" * 1100))
            assert a.get_coordinate("nobody") is None
            coord = a.get_coordinate("solo")
            assert coord is not None and len(coord.vec) == 8
            with pytest.raises(AgentError, match="512 bytes"):
                await a.set_tags({"big": "x" * 600}, [])
            with pytest.raises(AgentError):
                await a.join(["bogus host"], False)
            with pytest.raises(AgentError):
                await a.join(["127.0.0.1:1"], False)  # nobody there
            with pytest.raises(AgentError, match="illegal base64"):
                await a.key_operation("use", "***")
            assert a.tags == {}  # nothing above changed state
            assert alive(a) == {"solo"}
            # monitor: buffered lines first, filtered by level
            a.settings.hub.publish(10, "2026/11/29 04:50:54 [DEBUG] agent: detail")
            a.settings.hub.publish(20, "2026/11/29 04:50:54 [INFO] agent: hello")
            lines = a.logs("info")
            with trio.fail_after(5):
                first = await lines.__anext__()
            assert first.endswith("[INFO] agent: hello")
            await lines.aclose()  # type: ignore[attr-defined]
            assert a.settings.hub.min_level() is None  # unsubscribed


def test_rpc_member_versions() -> None:
    info = MemberInfo(
        "n",
        Address("10.1.2.3", 7946),
        b"\xff\x81\xa1k\xa1v",
        3,
        State.SUSPECT,
        bytes([1, 5, 2, 2, 5, 4]),
        0.0,
    )
    m = rpc_member(info)
    assert (m.name, m.addr, m.port, m.tags, m.status) == (
        "n",
        bytes([10, 1, 2, 3]),
        7946,
        {"k": "v"},
        "alive",
    )
    assert (m.protocol_min, m.protocol_max, m.protocol_cur) == (1, 5, 2)
    assert (m.delegate_min, m.delegate_max, m.delegate_cur) == (2, 5, 4)


def test_retry_join(tmp_path: Path) -> None:
    trio.run(retry_join, tmp_path)


async def retry_join(tmp_path: Path) -> None:
    a = make_agent(tmp_path, "ra")
    results: dict[str, int] = {}

    async def run_and_keep(agent: Agent, task_status: trio.TaskStatus[None]) -> None:
        async def inner(*, task_status: trio.TaskStatus[Address]) -> None:
            results[agent.node_name] = await agent.run(task_status=task_status)

        async with trio.open_nursery() as n:
            await n.start(inner)
            task_status.started()

    with trio.fail_after(20):
        async with running(a) as nursery:
            assert a.addr is not None
            # retries until the seed answers (it answers at once here) and joins in the background
            b = make_agent(
                tmp_path, "rb", f"--retry-join=127.0.0.1:{a.addr.port}", "--retry-interval=50ms"
            )
            await nursery.start(run_and_keep, b)
            await wait_until(lambda: alive(a) == {"ra", "rb"})
            # nobody at the seed: gives up after retry_max attempts and exits with status 1
            c = make_agent(
                tmp_path, "rc", "--retry-join=127.0.0.1:1", "--retry-interval=10ms", "--retry-max=2"
            )
            await nursery.start(run_and_keep, c)
            await wait_until(lambda: "rc" in results)
            assert results["rc"] == 1
            assert "rb" not in results  # still running
