"""A tiny deterministic packet pump for driving a few ``Memberlist`` cores by hand.

Zero-latency FIFO delivery, seeded stagger, per-node periodic probe/gossip/push-pull rounds and
internal timers fired at ``next_deadline``.  Faults: ``down`` nodes get nothing (UDP dropped,
streams refused); ``udp_blackhole`` nodes get no UDP but still accept streams.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from serf_trio.swim.api import (
    Address,
    Effect,
    JoinDone,
    LeaveDone,
    MemberEvent,
    Notice,
    NullDelegate,
    OpenStream,
    SendPacket,
    Violation,
)
from serf_trio.swim.config import SwimConfig
from serf_trio.swim.node import Memberlist

TEST_CONFIG = SwimConfig(enable_compression=False)


@dataclass
class Log:
    events: list[MemberEvent] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    joins: list[JoinDone] = field(default_factory=list)
    leaves: list[LeaveDone] = field(default_factory=list)


class Pump:
    def __init__(self, seed: int = 1, config: SwimConfig = TEST_CONFIG) -> None:
        self.rng = random.Random(seed)
        self.config = config
        self.now = 0.0
        self.nodes: dict[Address, Memberlist] = {}
        self.by_name: dict[str, Memberlist] = {}
        self.logs: dict[str, Log] = {}
        self.down: set[str] = set()
        self.udp_blackhole: set[str] = set()
        self.udp_cut: set[tuple[str, str]] = set()  # (src, dst) pairs whose UDP is lost
        self.periodic: dict[str, dict[str, float]] = {}
        self.sent: list[tuple[str, SendPacket]] = []
        self._q: deque[tuple[str, Effect]] = deque()
        self.notice_times: dict[str, list[tuple[float, Notice]]] = {}

    def add(
        self, name: str, *, config: SwimConfig | None = None, delegate: object = None, **kw: object
    ) -> Memberlist:
        addr = Address("127.0.0.1", 7000 + len(self.nodes))
        node = Memberlist(
            config or self.config,
            name,
            addr,
            rng=random.Random(self.rng.random()),
            now=self.now,
            delegate=delegate if delegate is not None else NullDelegate(),  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )
        self.nodes[addr] = node
        self.by_name[name] = node
        self.logs[name] = Log()
        self.notice_times[name] = []
        cfg = node.config
        self.periodic[name] = {
            "probe": self.now + self.rng.uniform(0, cfg.probe_interval),
            "gossip": self.now + self.rng.uniform(0, cfg.gossip_interval),
            "push_pull": self.now + self.rng.uniform(0, cfg.push_pull_interval),
        }
        return node

    # -- delivery -------------------------------------------------------------------------

    def feed(self, name: str, effects: list[Effect]) -> None:
        for e in effects:
            self._q.append((name, e))
        self._drain()

    def _drain(self) -> None:
        while self._q:
            name, e = self._q.popleft()
            log = self.logs[name]
            if isinstance(e, SendPacket):
                self.sent.append((name, e))
                dst = self.nodes.get(e.addr)
                if dst is None or dst.name in self.down or dst.name in self.udp_blackhole:
                    continue
                if name in self.down or (name, dst.name) in self.udp_cut:
                    continue
                src = self.by_name[name].addr
                for out in dst.handle_packet(self.now, src, e.data):
                    self._q.append((dst.name, out))
            elif isinstance(e, OpenStream):
                me = self.by_name[name]
                dst = self.nodes.get(e.addr)
                if dst is None or dst.name in self.down or name in self.down:
                    res = me.stream_result(self.now, e.stream_id, None, "connection refused")
                else:
                    reply, effs = dst.handle_stream(self.now, e.data)
                    for out in effs:
                        self._q.append((dst.name, out))
                    if e.expect_reply and reply is None:
                        res = me.stream_result(self.now, e.stream_id, None, "EOF")
                    else:
                        res = me.stream_result(self.now, e.stream_id, reply or b"")
                for out in res:
                    self._q.append((name, out))
            elif isinstance(e, MemberEvent):
                log.events.append(e)
            elif isinstance(e, Notice):
                log.notices.append(e)
                self.notice_times[name].append((self.now, e))
            elif isinstance(e, Violation):
                log.violations.append(e)
            elif isinstance(e, JoinDone):
                log.joins.append(e)
            elif isinstance(e, LeaveDone):
                log.leaves.append(e)

    # -- time -----------------------------------------------------------------------------

    def run_until(self, t_end: float) -> None:
        while True:
            best: tuple[float, str, str] | None = None
            for name, node in self.by_name.items():
                if name in self.down:
                    continue
                d = node.next_deadline()
                if d is not None and (best is None or d < best[0]):
                    best = (d, name, "tick")
                for kind, at in self.periodic[name].items():
                    if best is None or at < best[0]:
                        best = (at, name, kind)
            if best is None or best[0] > t_end:
                self.now = max(self.now, t_end)
                return
            at, name, kind = best
            self.now = max(self.now, at)
            node = self.by_name[name]
            cfg = node.config
            if kind == "tick":
                effs = node.tick(self.now)
            elif kind == "probe":
                self.periodic[name]["probe"] = at + cfg.probe_interval
                effs = node.probe(self.now)
            elif kind == "gossip":
                self.periodic[name]["gossip"] = at + cfg.gossip_interval
                effs = node.gossip(self.now)
            else:
                self.periodic[name]["push_pull"] = at + node.push_pull_period()
                effs = node.push_pull(self.now)
            self.feed(name, effs)

    def join(self, name: str, *seeds: str) -> int:
        node = self.by_name[name]
        rid, effs = node.join(self.now, [self.by_name[s].addr for s in seeds])
        self.feed(name, effs)
        return rid

    def states(self, observer: str) -> dict[str, str]:
        return {m.name: m.state.name for m in self.by_name[observer].members()}
