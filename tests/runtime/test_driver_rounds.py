"""The driver's periodic rounds are timers of its own loop: staggered, then one per interval
keeping their phase; the gossip round costs no wake-up while the core has nothing to gossip."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import structlog
import structlog.testing
import trio
import trio.testing
from helpers import mem_addr as addr

from serf_trio.runtime.bus import BusSizes
from serf_trio.runtime.driver import MembershipNode
from serf_trio.swim.api import Address
from serf_trio.swim.config import LAN
from serf_trio.swim.formulas import next_tick
from serf_trio.swim.node import Memberlist
from serf_trio.testing.memnet import MemoryNetwork
from serf_trio.testing.netmodel import NetModel
from serf_trio.wire.codec import encode_message
from serf_trio.wire.messages import Ping
from serf_trio.wire.packet import make_compound


class CountingCore(Memberlist):
    """A real memberlist core that records when each round ran and when the driver woke."""

    pending = False  # whether a broadcast is "queued"
    queue_at = float("inf")  # the first probe at or after this time "queues" one

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls: list[tuple[str, float]] = []

    def has_broadcasts(self) -> bool:
        return self.pending

    def gossip(self, now: float) -> list[object]:  # type: ignore[override]
        self.calls.append(("gossip", now))
        return []

    def probe(self, now: float) -> list[object]:  # type: ignore[override]
        self.calls.append(("probe", now))
        if now >= self.queue_at:
            self.pending = True  # as a probe's refutation or a join would queue one
        return []

    def times(self, which: str) -> list[float]:
        return [t for w, t in self.calls if w == which]


class CountingNode(MembershipNode):
    def _make_core(self, adv: Address, now: float) -> Memberlist:
        return CountingCore(self.config, self.name, adv, rng=self._rng, now=now)


def run_node(seconds: float, queue_at: float = float("inf")) -> CountingCore:
    """One node alone for ``seconds`` of mock time; its first probe after ``queue_at`` queues
    a broadcast (inside a core call, as every broadcast is queued)."""
    holder: list[CountingCore] = []

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=3))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            node = CountingNode(LAN, "n1", net.transport(addr(1)), rng=random.Random(5))
            await nursery.start(node.run)
            core = node.core
            assert isinstance(core, CountingCore)
            core.queue_at = queue_at
            holder.append(core)
            await trio.sleep_until(seconds)
            nursery.cancel_scope.cancel()

    trio.run(body, clock=trio.testing.MockClock(autojump_threshold=0))
    return holder[0]


def gaps(times: Sequence[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


def test_idle_core_is_never_asked_to_gossip_but_probes_every_interval() -> None:
    core = run_node(10.0)
    assert core.times("gossip") == []
    probes = core.times("probe")
    assert 9 <= len(probes) <= 10
    assert set(gaps(probes)) == {LAN.probe_interval}  # the phase is kept


def test_gossip_resumes_on_its_original_phase_once_something_is_queued() -> None:
    core = run_node(10.0, queue_at=4.05)
    queued = next(t for t in core.times("probe") if t >= 4.05)
    gossip = core.times("gossip")
    assert gossip and queued < gossip[0] <= queued + LAN.gossip_interval
    # Every gap is a whole interval, also between the idle ticks that were skipped and the
    # first round: the round kept the phase of its first (staggered) tick.
    assert set(gaps(gossip)) == {LAN.gossip_interval}
    assert gossip[0] != queued  # not fired off-phase in the wake that queued it


def test_next_tick_keeps_phase_and_drops_missed_ticks() -> None:
    assert next_tick(1.0, 0.2, 1.05) == 1.2
    assert next_tick(1.0, 0.2, 1.9) == 2.0  # ticks at 1.2 ... 1.8 were missed: dropped
    assert next_tick(1.0, 0.2, 2.0) > 2.0


def test_a_full_send_queue_is_counted_per_packet_and_logged_a_few_times() -> None:
    """300 pings (in three compound packets) into a node whose outgoing queue holds one packet:
    most acks are dropped and counted, and the log gets the 1st, 10th and 100th drop only,
    each with the running total."""

    async def body() -> tuple[int, list[dict[str, object]]]:
        net = MemoryNetwork(NetModel(seed=4))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            with structlog.testing.capture_logs() as logs:
                node = MembershipNode(
                    LAN,
                    "n1",
                    net.transport(addr(1)),
                    rng=random.Random(1),
                    sizes=BusSizes(outgoing=1),
                    logger=structlog.get_logger(),
                )
                await nursery.start(node.run)
                peer = net.transport(addr(2))
                for first in range(0, 300, 100):  # a compound of 100 pings: 100 acks at once
                    pings = [
                        encode_message(Ping(seq, "n1", bytes([127, 0, 0, 2]), 7946))
                        for seq in range(first, first + 100)
                    ]
                    await peer.send_packet(addr(1), make_compound(pings))
                await trio.sleep(1.0)
                dropped = node.runtime_counters()["outgoing_dropped"]
                nursery.cancel_scope.cancel()
        return dropped, [e for e in logs if e["event"] == "packet_dropped"]

    dropped, lines = trio.run(body, clock=trio.testing.MockClock(autojump_threshold=0))
    assert dropped >= 100
    assert [line["total"] for line in lines] == [1, 10, 100]
