"""Five nodes in one trio process on real UDP/TCP sockets on 127.0.0.1."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from dataclasses import replace

import pytest
import trio

from serf_trio.runtime.driver import MembershipNode
from serf_trio.runtime.transport import UdpTcpTransport
from serf_trio.swim.api import Address, State
from serf_trio.swim.config import LOCAL

pytestmark = [pytest.mark.realnet, pytest.mark.slow]

# The "local" profile, tightened so that a failure is declared in about two seconds:
# min suspicion = 3 * 1 * 0.3 s = 0.9 s (5 nodes: log10(5) < 1), max 6x that.
FAST = replace(
    LOCAL,
    probe_interval=0.3,
    probe_timeout=0.1,
    gossip_interval=0.05,
    push_pull_interval=2.0,
    tcp_timeout=1.0,
)


def states(node: MembershipNode) -> dict[str, State]:
    return {m.name: m.state for m in node.members()}


async def wait_until(cond: Callable[[], bool]) -> None:
    while not cond():  # noqa: ASYNC110 - polls a view that has no change signal
        await trio.sleep(0.02)


def test_five_real_nodes_converge_and_detect_a_stopped_node() -> None:
    timings: dict[str, float] = {}

    async def main() -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nodes = [
                    MembershipNode(
                        FAST,
                        f"r{i}",
                        UdpTcpTransport(Address("127.0.0.1", 0), stream_timeout=1.0),
                        rng=random.Random(i),
                    )
                    for i in range(5)
                ]
                addrs = [await nursery.start(n.run) for n in nodes]
                assert len({a.port for a in addrs}) == 5
                t0 = trio.current_time()
                for n in nodes[1:]:
                    assert await n.join([addrs[0]]) == 1
                names = {f"r{i}" for i in range(5)}
                await wait_until(
                    lambda: all(states(n) == dict.fromkeys(names, State.ALIVE) for n in nodes)
                )
                timings["converge"] = trio.current_time() - t0
                nodes[2].stop()
                others = [n for i, n in enumerate(nodes) if i != 2]
                t1 = trio.current_time()
                await wait_until(lambda: all(states(n).get("r2") is State.DEAD for n in others))
                timings["detect"] = trio.current_time() - t1
                for n in others:
                    assert n.member("r2") is not None
                    assert sum(s is State.ALIVE for s in states(n).values()) == 4
                nursery.cancel_scope.cancel()

    trio.run(main)
    print(f"realnet timings: {timings}")
    assert timings["detect"] < 15


def _can_bind_v6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_bind_v6(), reason="cannot bind ::1 here")
def test_two_nodes_on_ipv6_loopback_converge() -> None:
    async def main() -> None:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                a, b = (
                    MembershipNode(FAST, name, UdpTcpTransport(Address("::1", 0)))
                    for name in ("v6a", "v6b")
                )
                addr_a = await nursery.start(a.run)
                await nursery.start(b.run)
                assert addr_a.host == "::1"
                assert await b.join([addr_a]) == 1
                await wait_until(lambda: states(a).get("v6b") is State.ALIVE)
                assert (m := a.member("v6b")) is not None and m.addr.host == "::1"
                nursery.cancel_scope.cancel()

    trio.run(main)
