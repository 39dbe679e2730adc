"""What ``SerfRuntime`` logs, on the in-memory network: a member that never answers a key
operation is named (its keyring may now differ from the others'), and a notice about another
node names it ``member`` without overwriting the line's own ``node``."""

from __future__ import annotations

import random
from collections.abc import Callable

import structlog.testing
import trio
import trio.testing
from helpers import mem_addr as addr
from helpers import run_mock

from serf_trio.runtime.serf_runtime import SerfRuntime
from serf_trio.serf.config import SerfConfig
from serf_trio.swim.config import LAN
from serf_trio.testing.memnet import MemoryNetwork
from serf_trio.testing.netmodel import NetModel


async def wait_until(cond: Callable[[], bool]) -> None:
    while not cond():  # noqa: ASYNC110 - polls a view that has no change signal
        await trio.sleep(0.1)


async def three(net: MemoryNetwork, nursery: trio.Nursery) -> list[SerfRuntime]:
    """n1..n3 running Serf, n2 and n3 joined to n1, each listing all three."""
    await nursery.start(net.run)
    nodes = [
        SerfRuntime(
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
    """Only the prober that suspects a node notices ``suspected`` (its ``by``); which of n1 and
    n2 probes the crashed n3 first depends on trio's scheduling, so any such line will do: its
    ``node`` is the logging node (the suspecter), the suspected one is ``member``."""

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=6))
        async with trio.open_nursery() as nursery:
            with structlog.testing.capture_logs() as logs:
                await three(net, nursery)
                net.crash(addr(3))

                def suspected() -> list[dict[str, object]]:
                    return [e for e in logs if e["event"] == "suspected"]

                await wait_until(lambda: any(e["member"] == "n3" for e in suspected()))
            for line in suspected():
                # The line's node is the logging node (the suspecter), never the suspected one.
                assert line["node"] == line["by"] != line["member"]
                assert line["node"] in ("n1", "n2", "n3")
            nursery.cancel_scope.cancel()

    run_mock(body)
