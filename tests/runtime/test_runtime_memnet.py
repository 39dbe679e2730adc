"""The real runtime tasks on the in-memory network under an autojumping MockClock."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import helpers
import pytest
import structlog
import trio
import trio.testing
from helpers import mem_addr as addr

from serf_trio.runtime.driver import BusSizes, JoinError, MembershipNode
from serf_trio.swim.api import MemberEvent, MemberEventKind, State
from serf_trio.swim.config import LAN
from serf_trio.testing.memnet import MemoryNetwork
from serf_trio.testing.netmodel import LinkProfile, NetModel


def make_node(net: MemoryNetwork, i: int, seed: int) -> MembershipNode:
    return MembershipNode(
        LAN,
        f"n{i}",
        net.transport(addr(i), stream_timeout=LAN.tcp_timeout),
        rng=random.Random(seed * 1000 + i),
    )


def states(node: MembershipNode) -> dict[str, State]:
    return {m.name: m.state for m in node.members()}


async def wait_until(cond: Callable[[], bool], step: float = 0.1) -> None:
    while not cond():  # noqa: ASYNC110 - polls a view that has no change signal
        await trio.sleep(step)


def test_ten_nodes_converge_then_crash_is_declared_dead_by_all() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=7, default=LinkProfile(loss=0.01)))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            nodes = [make_node(net, i, seed=7) for i in range(1, 11)]
            for n in nodes:
                await nursery.start(n.run)
            for n in nodes[1:]:
                assert await n.join([addr(1)]) == 1
            names = {f"n{i}" for i in range(1, 11)}
            t0 = trio.current_time()
            await wait_until(
                lambda: all(states(n) == dict.fromkeys(names, State.ALIVE) for n in nodes)
            )
            assert trio.current_time() - t0 < 30  # gossip spreads in a few seconds

            victim = nodes[4]
            victim.stop()
            net.crash(addr(5))
            others = [n for n in nodes if n is not victim]
            t1 = trio.current_time()
            await wait_until(lambda: all(states(n).get("n5") is State.DEAD for n in others))
            # Lifeguard bounds: min suspicion 4 s (n=10), max 6x that, plus probe rounds.
            detect = trio.current_time() - t1
            print(f"memnet: converged in {t1 - t0:.2f}s, crash detected in {detect:.2f}s")
            assert 4.0 <= detect < 40
            for n in others:
                assert all(s is State.ALIVE for k, s in states(n).items() if k != "n5")
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_join_and_events_and_statistics_on_two_nodes() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=3))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            a, b = make_node(net, 1, 3), make_node(net, 2, 3)
            assert await nursery.start(a.run) == addr(1)
            await nursery.start(b.run)
            with structlog.testing.capture_logs() as logs:
                assert await b.join([addr(1)]) == 1
                await wait_until(lambda: states(a).get("n2") is State.ALIVE)
            assert any(e["event"] == "member_join" and e["member"] == "n2" for e in logs)
            joined = set()
            while True:
                try:
                    ev = a.events.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(ev, MemberEvent) and ev.kind is MemberEventKind.JOIN:
                    joined.add(ev.member.name)
            assert joined == {"n1", "n2"} or joined == {"n2"}
            st = a.statistics()
            assert st.transport.packets_in > 0 or st.transport.streams_in > 0
            assert st.events_dropped == 0
            # A join to nobody fails with the per-seed errors.
            with pytest.raises(JoinError):
                await b.join([addr(99)])
            # Graceful leave: a sees n2 as left.
            assert await b.leave(5.0) is False
            b.stop()
            await wait_until(lambda: states(a).get("n2") is State.LEFT)
            nursery.cancel_scope.cancel()

    run_mock(body, limit=120)


def test_unconsumed_events_follow_the_delivery_contract_without_blocking() -> None:
    """Nobody reads events: membership still converges; member events are never dropped but
    coalesce per member (at most one pending per member); other records drop and are counted."""

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=5))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            nodes = [
                MembershipNode(
                    LAN,
                    f"n{i}",
                    net.transport(addr(i)),
                    rng=random.Random(i),
                    sizes=BusSizes(events=1),
                )
                for i in range(1, 5)
            ]
            for n in nodes:
                await nursery.start(n.run)
            for n in nodes[1:]:
                await n.join([addr(1)])
            await wait_until(lambda: all(len(states(n)) == 4 for n in nodes))
            # n2 leaves: n1's pending join event for n2 is replaced by the leave (latest wins).
            assert await nodes[1].leave(5.0) is False
            nodes[1].stop()
            await wait_until(lambda: states(nodes[0]).get("n2") is State.LEFT)
            # n2's join and leave results (and notices) overflow its 1-slot FIFO.
            assert nodes[1].statistics().delivery.dropped_other > 0
            st = nodes[0].statistics().delivery
            assert st.coalesced >= 1 and st.dropped == 0
            q = nodes[0].events
            member_events = []
            while True:
                try:
                    ev = q.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(ev, MemberEvent):
                    member_events.append(ev)
            by_name = {ev.member.name: ev for ev in member_events}
            assert len(by_name) == len(member_events)  # one per member
            assert set(by_name) == {"n1", "n2", "n3", "n4"} or set(by_name) == {"n2", "n3", "n4"}
            assert by_name["n2"].kind is MemberEventKind.LEAVE
            nursery.cancel_scope.cancel()

    run_mock(body, limit=120)


def test_partition_is_detected_on_both_sides_and_heals() -> None:
    async def body() -> None:
        model = NetModel(seed=11)
        net = MemoryNetwork(model)
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            nodes = [make_node(net, i, seed=11) for i in range(1, 7)]
            for n in nodes:
                await nursery.start(n.run)
            for n in nodes[1:]:
                await n.join([addr(1)])
            await wait_until(lambda: all(len(states(n)) == 6 for n in nodes))
            left, right = nodes[:3], nodes[3:]
            cut = model.partition([addr(i) for i in (1, 2, 3)], [addr(i) for i in (4, 5, 6)])

            def split() -> bool:
                return all(
                    states(n)[o.name] is State.DEAD
                    for side, other in ((left, right), (right, left))
                    for n in side
                    for o in other
                )

            await wait_until(split)
            model.heal(cut)
            # Push/pull (every 30 s) tells each side the other is alive again (refutation).
            await wait_until(
                lambda: all(s is State.ALIVE for n in nodes for s in states(n).values())
            )
            nursery.cancel_scope.cancel()

    run_mock(body, limit=300)


def run_mock(fn: Callable[[], Awaitable[None]], limit: float = 300.0) -> None:
    """``helpers.run_mock`` with this module's longer virtual deadline."""
    helpers.run_mock(fn, limit)
