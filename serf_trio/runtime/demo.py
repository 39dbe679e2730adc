"""A local demo cluster: a few membership nodes on 127.0.0.1 in one process.

Starts ``count`` nodes on consecutive ports (free ones when the Serf default 7946.. is taken),
joins them through the first, prints the member table as each node sees it, stops one node
abruptly to show failure detection, and leaves gracefully.  It exists so that a fresh checkout
can show the protocol working in a few seconds; the agent proper is ``serf-trio agent``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TextIO

import trio

from serf_trio.swim.api import Address, MemberInfo, NullDelegate
from serf_trio.swim.config import profile

from .driver import MembershipNode
from .logs import LEVEL_WORDS, LogSettings, configure
from .runner import serf_meta
from .transport import UdpTcpTransport


async def _poll_until(pred: Callable[[], bool], limit: float) -> None:
    """Wait (at most ``limit`` s) until ``pred()``: the demo watches views, it reacts to nothing."""
    with trio.move_on_after(limit):
        while not pred():  # noqa: ASYNC110 - polling a read-only view for display only
            await trio.sleep(0.05)


def _status(node: MembershipNode, name: str) -> str | None:
    m = node.member(name)
    return None if m is None else m.state.serf_status


def render(owner: str, members: Sequence[MemberInfo]) -> str:
    """``serf members``-style lines: name, address, status."""
    lines = [f"as seen by {owner}:"]
    for m in sorted(members, key=lambda m: m.name):
        lines.append(f"  {m.name:<10} {m.addr!s:<21} {m.state.serf_status}")
    return "\n".join(lines)


async def run_demo(count: int, base_port: int, out: TextIO) -> None:
    cfg = profile("local")
    async with trio.open_nursery() as nursery:
        nodes: list[MembershipNode] = []
        scopes: list[trio.CancelScope] = []
        for i in range(count):
            name = f"demo{i + 1}"
            port = base_port + i if base_port else 0
            node = MembershipNode(
                cfg,
                name,
                UdpTcpTransport(Address("127.0.0.1", port), stream_timeout=cfg.tcp_timeout),
                delegate=NullDelegate(serf_meta({"role": "demo"})),
            )
            scope = trio.CancelScope()

            async def run_node(
                node: MembershipNode = node,
                scope: trio.CancelScope = scope,
                *,
                task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                with scope:
                    await node.run(task_status=task_status)

            addr = await nursery.start(run_node)
            nodes.append(node)
            scopes.append(scope)
            print(f"started {name} on {addr}", file=out)
        seed = nodes[0].addr
        assert seed is not None
        for node in nodes[1:]:
            await node.join([seed])
        await _poll_until(
            lambda: all(
                sum(m.state.serf_status == "alive" for m in n.members()) == count for n in nodes
            ),
            5,
        )
        print(render(nodes[0].name, nodes[0].members()), file=out)
        victim = nodes[-1]
        print(f"\nstopping {victim.name} abruptly (no leave) ...", file=out)
        scopes[-1].cancel()
        await _poll_until(lambda: all(_status(n, victim.name) == "failed" for n in nodes[:-1]), 15)
        print(render(nodes[0].name, nodes[0].members()), file=out)
        print(f"\n{nodes[1].name} leaves gracefully ...", file=out)
        await nodes[1].leave(2.0)
        scopes[1].cancel()
        await _poll_until(lambda: _status(nodes[0], nodes[1].name) == "left", 5)
        print(render(nodes[0].name, nodes[0].members()), file=out)
        nursery.cancel_scope.cancel()


def main(count: int = 3, base_port: int = 7946, log_level: str = "warning") -> int:
    configure(LogSettings(level=LEVEL_WORDS[log_level.lower()]))
    try:
        trio.run(run_demo, count, base_port, sys.stdout)
    except OSError:
        # A default port is taken (a real agent running?): use free ports instead.
        trio.run(run_demo, count, 0, sys.stdout)
    return 0
