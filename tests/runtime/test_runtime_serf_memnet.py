"""``SerfRuntime`` driving the Serf core on the in-memory network (MockClock): Serf events
on the events channel, query streams with exactly one "done", commands with Serf's errors,
tags, and leave waiting out the propagate delay."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import trio
import trio.testing
from helpers import mem_addr as addr
from helpers import run_mock

from serf_trio.runtime.driver import NodeEvent, NotRunningError
from serf_trio.runtime.serf_runtime import SerfRuntime
from serf_trio.serf.config import SerfConfig
from serf_trio.serf.effects import SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from serf_trio.serf.node import SerfError
from serf_trio.serf.query import QueryParam
from serf_trio.swim.config import LAN
from serf_trio.testing.memnet import MemoryNetwork
from serf_trio.testing.netmodel import NetModel

SERF = SerfConfig()


def make(net: MemoryNetwork, i: int, serf: SerfConfig = SERF) -> SerfRuntime:
    return SerfRuntime(
        LAN,
        f"n{i}",
        net.transport(addr(i), stream_timeout=LAN.tcp_timeout),
        rng=random.Random(i),
        serf=serf,
        tags={"i": str(i)},
    )


async def collect(node: SerfRuntime, into: list[NodeEvent]) -> None:
    async for ev in node.events:
        into.append(ev)


async def wait_until(cond: Callable[[], bool]) -> None:
    while not cond():  # noqa: ASYNC110 - polls a view that has no change signal
        await trio.sleep(0.1)


def test_serf_node_events_queries_tags_and_leave() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=3))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            nodes = [make(net, i) for i in (1, 2, 3)]
            seen: list[list[NodeEvent]] = [[], [], []]
            for node, box in zip(nodes, seen, strict=True):
                await nursery.start(node.run)
                nursery.start_soon(collect, node, box)
            for node in nodes[1:]:
                assert await node.join([addr(1)]) == 1
            await wait_until(
                lambda: all(
                    {m.status for m in n.serf_members()} == {"alive"} and len(n.serf_members()) == 3
                    for n in nodes
                )
            )
            assert all(
                isinstance(e, SerfMemberEvent) and e.kind == "member-join"
                for e in seen[0]
                if isinstance(e, SerfMemberEvent)
            )

            # a user event reaches every node once
            await nodes[0].user_event("deploy", b"v1", False)
            await trio.sleep(5)
            for box in seen:
                users = [e for e in box if isinstance(e, SerfUserEvent)]
                assert [(u.name, u.payload) for u in users] == [("deploy", b"v1")]
            with pytest.raises(SerfError, match="before encoding"):
                await nodes[0].user_event("big", b"x" * 600, False)

            # a query: every node answers through respond(); the stream ends with one done
            stream = await nodes[0].query(QueryParam("ping", b"", request_ack=True, timeout=3))
            for node, box in zip(nodes, seen, strict=True):
                await wait_until(lambda box=box: any(isinstance(e, SerfQueryEvent) for e in box))  # type: ignore[misc]
                q = next(e for e in box if isinstance(e, SerfQueryEvent))
                await node.respond(q.token, node.name.encode())
                with pytest.raises(SerfError, match="already sent"):
                    await node.respond(q.token, b"again")
            records = [r async for r in stream]
            assert {r.from_ for r in records if r.record_type == "ack"} == {"n1", "n2", "n3"}
            assert sorted(r.payload for r in records if r.record_type == "response") == [
                b"n1",
                b"n2",
                b"n3",
            ]
            assert [r.record_type for r in records].count("done") == 1
            assert records[-1].record_type == "done"

            # tags: too large refused with Serf's text, a good change is a member-update
            with pytest.raises(SerfError, match="exceeds limit of 512 bytes"):
                await nodes[1].set_tags({"k": "v" * 600})
            await nodes[1].set_tags({"role": "db"})
            await wait_until(
                lambda: any(
                    isinstance(e, SerfMemberEvent)
                    and e.kind == "member-update"
                    and e.members[0].tags == {"role": "db"}
                    for e in seen[0]
                )
            )

            # leave: answered only after leave_propagate_delay; the others see "left"
            t0 = trio.current_time()
            await nodes[2].leave(2.0)
            assert trio.current_time() - t0 >= SerfConfig().leave_propagate_delay
            await wait_until(
                lambda: next(m for m in nodes[0].serf_members() if m.name == "n3").status == "left"
            )
            stats = nodes[0].serf_statistics()
            assert stats is not None and stats.left == 1
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_serf_commands_need_a_running_node() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=1))
        node = make(net, 1)
        with pytest.raises(NotRunningError):
            await node.user_event("x", b"", False)
        assert node.get_coordinate("n1") is None and node.serf_members() == []
        assert node.serf_statistics() is None

    run_mock(body)
