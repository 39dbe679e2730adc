"""A tiny deterministic packet pump for driving a few ``SerfNode`` cores by hand.

Zero-latency FIFO delivery, seeded stagger, periodic probe/gossip/push-pull rounds and timers at
``next_deadline``.  Each node's Serf effects are recorded per node.  ``down`` nodes get nothing.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from dataclasses import dataclass, field

from serf_trio.serf.config import SerfConfig
from serf_trio.serf.effects import (
    QueryUpdate,
    SerfEffect,
    SerfMemberEvent,
    SerfQueryEvent,
    SerfUserEvent,
)
from serf_trio.serf.node import SerfNode
from serf_trio.swim.api import Address, JoinDone, LeaveDone, Notice, OpenStream, SendPacket
from serf_trio.swim.config import LAN, SwimConfig

SWIM = dataclasses.replace(LAN, enable_compression=False)
SERF = SerfConfig()


@dataclass
class Log:
    members: list[tuple[float, SerfMemberEvent]] = field(default_factory=list)
    users: list[SerfUserEvent] = field(default_factory=list)
    queries: list[SerfQueryEvent] = field(default_factory=list)
    updates: list[QueryUpdate] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    joins: list[JoinDone] = field(default_factory=list)
    leaves: list[LeaveDone] = field(default_factory=list)
    other: list[object] = field(default_factory=list)

    def member_kinds(self, name: str) -> list[str]:
        return [e.kind for _, e in self.members if any(m.name == name for m in e.members)]


class Pump:
    def __init__(self, seed: int = 1, swim: SwimConfig = SWIM, serf: SerfConfig = SERF) -> None:
        self.rng = random.Random(seed)
        self.swim = swim
        self.serf = serf
        self.now = 0.0
        self.nodes: dict[Address, SerfNode] = {}
        self.by_name: dict[str, SerfNode] = {}
        self.logs: dict[str, Log] = {}
        self.down: set[str] = set()
        self.periodic: dict[str, dict[str, float]] = {}
        self.auto_respond: dict[str, bytes] = {}  # node -> payload answered to every query
        self._q: deque[tuple[str, SerfEffect]] = deque()
        self._port = 7000

    def add(
        self,
        name: str,
        tags: dict[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        **kw: object,
    ) -> SerfNode:
        if port is None:
            self._port += 1
            port = self._port
        addr = Address(host, port)
        node = SerfNode(
            self.serf,
            self.swim,
            name,
            addr,
            rng=random.Random(self.rng.random()),
            now=self.now,
            tags=tags or {},
            **kw,  # type: ignore[arg-type]
        )
        self.nodes[addr] = node
        self.by_name[name] = node
        self.logs[name] = Log()
        self.down.discard(name)
        cfg = node.swim_config
        self.periodic[name] = {
            "probe": self.now + self.rng.uniform(0, cfg.probe_interval),
            "gossip": self.now + self.rng.uniform(0, cfg.gossip_interval),
            "push_pull": self.now + self.rng.uniform(0, cfg.push_pull_interval),
        }
        return node

    def stop(self, name: str) -> None:
        self.down.add(name)

    # -- delivery ---------------------------------------------------------------------------

    def feed(self, name: str, effects: list[SerfEffect]) -> None:
        for e in effects:
            self._q.append((name, e))
        self._drain()

    def _drain(self) -> None:
        while self._q:
            name, e = self._q.popleft()
            log = self.logs[name]
            if isinstance(e, SendPacket):
                dst = self.nodes.get(e.addr)
                if dst is None or dst.name in self.down or name in self.down:
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
            elif isinstance(e, SerfMemberEvent):
                log.members.append((self.now, e))
            elif isinstance(e, SerfUserEvent):
                log.users.append(e)
            elif isinstance(e, SerfQueryEvent):
                log.queries.append(e)
                if name in self.auto_respond and name not in self.down:
                    node = self.by_name[name]
                    for out in node.respond(self.now, e.token, self.auto_respond[name]):
                        self._q.append((name, out))
            elif isinstance(e, QueryUpdate):
                log.updates.append(e)
            elif isinstance(e, Notice):
                log.notices.append(e)
                if e.event == "name_conflict_resolution" and not e.fields["won"]:
                    self.down.add(name)
            elif isinstance(e, JoinDone):
                log.joins.append(e)
            elif isinstance(e, LeaveDone):
                log.leaves.append(e)
            else:
                log.other.append(e)

    # -- time -------------------------------------------------------------------------------

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
            cfg = node.swim_config
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

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def join(self, name: str, *seeds: str, replay: bool = False) -> int:
        node = self.by_name[name]
        rid, effs = node.join(self.now, [self.by_name[s].addr for s in seeds], replay=replay)
        self.feed(name, effs)
        return rid

    def cluster(self, *names: str, tags: dict[str, dict[str, str]] | None = None) -> None:
        for n in names:
            self.add(n, (tags or {}).get(n, {"role": n}))
        for n in names[1:]:
            self.join(n, names[0])
        self.run_for(3.0)

    def statuses(self, observer: str) -> dict[str, str]:
        return {m.name: m.status for m in self.by_name[observer].members()}

    def up(self) -> list[str]:
        return [n for n in self.by_name if n not in self.down]
