"""The library API (``serf_trio.Node`` / ``open_node``) on the in-memory network, under a
MockClock: what a user's own tests look like when they run a simulated cluster."""

from __future__ import annotations

import random

import pytest
import trio
from helpers import mem_addr, run_mock

import serf_trio
from serf_trio.testing.memnet import MemoryNetwork
from serf_trio.testing.netmodel import NetModel


def node(net: MemoryNetwork, i: int, **kw: object) -> serf_trio.Node:
    return serf_trio.Node(
        f"n{i}", bind=mem_addr(i), network=net, rng=random.Random(i), **kw  # type: ignore[arg-type]
    )


async def until(cond: object, limit: float = 30.0) -> None:
    with trio.fail_after(limit):
        while not cond():  # type: ignore[operator]  # noqa: ASYNC110 - polls a view
            await trio.sleep(0.1)


def test_two_nodes_join_exchange_events_queries_tags_and_leave() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=2))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            a, b = node(net, 1, tags={"role": "web"}), node(net, 2)
            # Subscribed before the node starts, so no event can be missed.
            events = b.events("member-join,member-update,member-leave,user:deploy")
            await nursery.start(a.run)
            await nursery.start(b.run)
            assert await b.join(mem_addr(1)) == 1
            await until(lambda: len(a.alive_members()) == 2 and len(b.alive_members()) == 2)
            # As with Serf, a node's first event is its own member-join; then the peer's.
            ev = await events.receive()
            assert isinstance(ev, serf_trio.MemberEvent) and ev.kind == "member-join"
            assert ev.member.name == "n2"
            ev = await events.receive()
            assert isinstance(ev, serf_trio.MemberEvent) and ev.kind == "member-join"
            assert ev.member.name == "n1" and ev.member.tags == {"role": "web"}

            await a.user_event("deploy", b"v1")
            ev = await events.receive()
            assert isinstance(ev, serf_trio.UserEvent) and ev.payload == b"v1"

            async def answer() -> None:
                async with a.events("query:who") as qs:
                    async for q in qs:
                        assert isinstance(q, serf_trio.QueryEvent)
                        await a.respond(q, b"me:" + q.payload)

            nursery.start_soon(answer)
            await trio.lowlevel.checkpoint()
            replies = await b.query("who", b"x", timeout=2.0).collect()
            assert [(r.node, r.payload) for r in replies] == [("n1", b"me:x")]

            await a.set_tags({"role": "db"})
            ev = await events.receive()
            assert isinstance(ev, serf_trio.MemberEvent) and ev.kind == "member-update"
            assert ev.members[0].tags == {"role": "db"}

            with pytest.raises(serf_trio.SerfError):
                await a.user_event("big", b"x" * 600)
            st = b.stats()
            assert st["delivery"]["dropped_user_events"] == 0
            assert st["transport"]["packets_in"] > 0 and st["serf"]["members"] == 2

            assert await a.leave() is False
            ev = await events.receive()
            assert isinstance(ev, serf_trio.MemberEvent) and ev.kind == "member-leave"
            await a.wait_stopped()
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_open_node_leaves_on_exit_and_no_task_outlives_it() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=4))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            b = node(net, 2)
            await nursery.start(b.run)
            async with serf_trio.open_node(
                "n1", bind=mem_addr(1), network=net, rng=random.Random(1)
            ) as a:
                await a.join(mem_addr(2))
                await until(lambda: len(b.alive_members()) == 2)
            # The block's exit left gracefully: b sees "left", not "failed".
            await until(lambda: b.member("n1") is not None and b.member("n1").status == "left")
            assert not a.running
            nursery.cancel_scope.cancel()

    run_mock(body)
