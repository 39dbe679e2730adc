"""A stalled event loop does not make its node accuse a healthy peer.

A Python agent's own stalls (a GC pause, a busy box, a blocking call) are the likelier cause of a
false accusation than the network: while the loop is blocked, the ack to a probe in flight sits
in the socket buffer, and when the loop runs again the probe's timers are long due.  The driver
notices the late wake, tells the core (``note_stall``: its pending timers move by the stall and
its local health goes up) and reads what piled up before the due timers run
(``CoreDriver._catch_up``).  Without that the same stall makes the node suspect its healthy peer
whenever the due timers run before the ack is read: ``tests/swim/test_swim_stall.py`` shows the
core's side of it deterministically.

Real UDP on loopback, the peer in a thread of its own (its own trio loop, so only our loop
stalls).  TCP pings are off: the TCP fallback would otherwise rescue the probe by its own route.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import trio
from helpers import wait_until

import serf_trio
from serf_trio.swim.config import LAN

pytestmark = pytest.mark.realnet

CONFIG = dataclasses.replace(LAN, disable_tcp_pings=True)
STALL_SECONDS = 2.0


def _peer(ready: threading.Event, stop: threading.Event, box: list[serf_trio.Address]) -> None:
    async def body() -> None:
        node = serf_trio.Node("peer", bind=serf_trio.Address("127.0.0.1", 0), profile=CONFIG)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            box.append(node.address)
            ready.set()
            while not stop.is_set():  # noqa: ASYNC110 - a threading.Event from the test
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    trio.run(body)


def probes(node: serf_trio.Node) -> int:
    return int(node.stats()["memberlist"]["probes_sent"])


def stalled_probe() -> dict[str, int]:
    """Join a peer, stall our loop for 2 s right after a probe went out, run 2 s more; our
    core's counters."""
    ready, stop, box = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=_peer, args=(ready, stop, box), daemon=True)
    thread.start()
    try:
        assert ready.wait(10)

        async def body() -> dict[str, int]:
            node = serf_trio.Node("us", bind=serf_trio.Address("127.0.0.1", 0), profile=CONFIG)
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                await node.join(box[0])
                await wait_until(lambda: probes(node) >= 2, within=10)
                sent = probes(node)
                # The stall starts within a millisecond of the next probe.
                await wait_until(lambda: probes(node) > sent, within=5, interval=0.001)
                # A probe is in flight: its ack arrives while we are blocked.
                time.sleep(STALL_SECONDS)  # noqa: ASYNC251 - the stall under test
                await trio.sleep(2.0)
                stats = node.stats()["memberlist"]
                nursery.cancel_scope.cancel()
            return {k: int(v) for k, v in stats.items() if isinstance(v, int)}

        return trio.run(body)
    finally:
        stop.set()
        thread.join(10)


def test_a_stalled_loop_reads_the_ack_before_judging_the_probe() -> None:
    stats = stalled_probe()
    assert stats["stalls"] >= 1
    assert stats["suspicions_raised"] == 0
    assert stats["probes_failed"] == 0
