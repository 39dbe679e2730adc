"""What ``MembershipNode`` logs, on the in-memory network: a member that never answers a key
operation is named (its keyring may now differ from the others'), and a notice about another
node names it ``member`` without overwriting the line's own ``node``."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import structlog.testing
import trio
import trio.testing

from serf_trio.runtime.driver import MembershipNode
from serf_trio.serf.config import SerfConfig
from serf_trio.swim.api import Address
from serf_trio.swim.config import LAN
from serf_trio.testing.memnet import MemoryNetwork
from serf_trio.testing.netmodel import NetModel


def run_mock(fn: Callable[[], Awaitable[None]], limit: float = 120.0) -> None:
    async def main() -> None:
        with trio.fail_after(limit):
            await fn()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def wait_until(cond: Callable[[], bool]) -> None:
    while not cond():  # noqa: ASYNC110 - polls a view that has no change signal
        await trio.sleep(0.1)


def addr(i: int) -> Address:
    return Address(f"127.0.0.{i}", 7946)


async def three(net: MemoryNetwork, nursery: trio.Nursery) -> list[MembershipNode]:
    """n1..n3 running Serf, n2 and n3 joined to n1, each listing all three."""
    await nursery.start(net.run)
    nodes = [
        MembershipNode(
            LAN,
            f"n{i}",
            net.transport(addr(i), stream_timeout=LAN.tcp_timeout),
            rng=random.Random(i),
            serf=SerfConfig(),
        )
        for i in (1, 2, 3)
    ]
    for node in nodes:
        await nursery.start(node.run)
    for node in nodes[1:]:
        assert await node.join([addr(1)]) == 1
    await wait_until(lambda: all(len(n.serf_members()) == 3 for n in nodes))
    return nodes


def test_a_member_that_never_answers_a_key_query_is_named() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=5))
        async with trio.open_nursery() as nursery:
            nodes = await three(net, nursery)

            report = await nodes[0].key_operation("list")
            assert (report.num_nodes, report.num_resp) == (3, 3)

            net.crash(addr(3))  # still counted alive: suspicion takes seconds
            with structlog.testing.capture_logs() as logs:
                report = await nodes[0].key_operation("list")
            assert (report.num_nodes, report.num_resp) == (3, 2)
            (line,) = [e for e in logs if e["event"] == "key_query_incomplete"]
            assert (line["op"], line["nodes"], line["silent"]) == ("list", 3, ["n3"])
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_a_notice_about_another_node_keeps_the_logging_node() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=6))
        async with trio.open_nursery() as nursery:
            with structlog.testing.capture_logs() as logs:
                nodes = await three(net, nursery)
                net.crash(addr(3))

                def suspected_by_n1() -> list[dict[str, object]]:
                    return [e for e in logs if e["event"] == "suspected" and e["node"] == "n1"]

                await wait_until(lambda: bool(suspected_by_n1()))
            line = suspected_by_n1()[0]
            assert (line["member"], line["by"]) == ("n3", "n1")
            assert nodes[0].name == "n1"
            nursery.cancel_scope.cancel()

    run_mock(body)
