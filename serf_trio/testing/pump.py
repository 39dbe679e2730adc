"""A tiny deterministic packet pump that drives a handful of cores by hand, for unit tests.

The discrete-event simulator (``testing.sim``) models a network; this pump models none: every
datagram and stream exchange is delivered at once, in FIFO order, so a test can say exactly
what happened after ``feed``.  It plays the driver role of ``swim.api`` for ``Memberlist``
(``SwimPump``) and for ``SerfNode`` (``SerfPump``, which drives it the same way):

* periodic rounds - ``probe``, ``gossip``, ``push_pull`` per node, each starting after a seeded
  random stagger in ``[0, interval)`` and re-armed from the time it was due;
* internal timers - ``tick`` at ``next_deadline()``; ``run_until`` always runs the earliest due
  round or timer over all nodes (ties: the first node added, then tick, probe, gossip,
  push/pull), so the order of calls is a function of the seed only;
* faults - ``down`` nodes get nothing and send nothing (UDP dropped, streams refused);
  ``udp_blackhole`` nodes get no UDP but still accept streams; ``udp_cut`` drops the UDP of
  single ``(src, dst)`` pairs.

Every effect lands in the node's ``Log``; effects the pump has no field for go to
``Log.other`` rather than vanishing.  Pure: no trio, no clock, randomness from ``seed``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..serf.config import SerfConfig
from ..serf.effects import QueryUpdate, SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from ..serf.node import SerfNode
from ..swim.api import (
    Address,
    Delegate,
    DrivenCore,
    JoinDone,
    LeaveDone,
    MemberEvent,
    Notice,
    NullDelegate,
    OpenStream,
    SendPacket,
    Violation,
)
from ..swim.config import SwimConfig
from ..swim.node import Memberlist

TEST_CONFIG = SwimConfig(enable_compression=False)
"""Default memberlist config of ``SwimPump`` (compression off: the pure-Python LZW is slow)."""
SWIM = TEST_CONFIG
"""Default memberlist config of ``SerfPump``: the same LAN timings, compression off."""
SERF = SerfConfig()
"""Default Serf config of ``SerfPump``."""

# Answers a query delivered at ``node``: the response payload, or None to stay silent.
QueryHandler = Callable[[str, SerfQueryEvent], bytes | None]


# The pump drives anything with the cores' shared driving API.
PumpCore = DrivenCore


CoreT = TypeVar("CoreT", bound=PumpCore)


@dataclass
class Log:
    """Everything one node emitted, by kind (``members`` carries the pump time)."""

    events: list[MemberEvent] = field(default_factory=list)  # memberlist member events
    members: list[tuple[float, SerfMemberEvent]] = field(default_factory=list)
    users: list[SerfUserEvent] = field(default_factory=list)
    queries: list[SerfQueryEvent] = field(default_factory=list)
    updates: list[QueryUpdate] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    joins: list[JoinDone] = field(default_factory=list)
    leaves: list[LeaveDone] = field(default_factory=list)
    other: list[object] = field(default_factory=list)

    def member_kinds(self, name: str) -> list[str]:
        """Kinds of the Serf member events about ``name``, in order."""
        return [e.kind for _, e in self.members if any(m.name == name for m in e.members)]


class Pump(Generic[CoreT]):
    """Zero-latency FIFO driver of a few cores; subclasses build the cores (``add``)."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.nodes: dict[Address, CoreT] = {}
        self.by_name: dict[str, CoreT] = {}
        self.logs: dict[str, Log] = {}
        self.down: set[str] = set()
        self.udp_blackhole: set[str] = set()
        self.udp_cut: set[tuple[str, str]] = set()  # (src, dst) pairs whose UDP is lost
        self.periodic: dict[str, dict[str, float]] = {}
        self.sent: list[tuple[str, SendPacket]] = []
        self.notice_times: dict[str, list[tuple[float, Notice]]] = {}
        self._q: deque[tuple[str, object]] = deque()

    # -- nodes ----------------------------------------------------------------------------

    def _core_rng(self) -> random.Random:
        return random.Random(self.rng.random())

    def _register(self, core: CoreT, config: SwimConfig) -> CoreT:
        """Book a freshly built core in and stagger its first rounds (seeded)."""
        name = core.name
        self.nodes[core.addr] = core
        self.by_name[name] = core
        self.logs[name] = Log()
        self.notice_times[name] = []
        self.down.discard(name)
        self.periodic[name] = {
            "probe": self.now + self.rng.uniform(0, config.probe_interval),
            "gossip": self.now + self.rng.uniform(0, config.gossip_interval),
            "push_pull": self.now + self.rng.uniform(0, config.push_pull_interval),
        }
        return core

    def _swim_config(self, core: CoreT) -> SwimConfig:
        raise NotImplementedError

    def stop(self, name: str) -> None:
        """``name`` stops: it gets, sends and runs nothing any more."""
        self.down.add(name)

    def up(self) -> list[str]:
        return [n for n in self.by_name if n not in self.down]

    # -- delivery -------------------------------------------------------------------------

    def feed(self, name: str, effects: Sequence[object]) -> None:
        """Apply ``effects`` emitted by ``name`` and everything they cause, to quiescence."""
        for e in effects:
            self._q.append((name, e))
        self._drain()

    def _drain(self) -> None:
        while self._q:
            name, e = self._q.popleft()
            if isinstance(e, SendPacket):
                self._packet(name, e)
            elif isinstance(e, OpenStream):
                self._stream(name, e)
            else:
                self._record(name, e)

    def _packet(self, name: str, e: SendPacket) -> None:
        self.sent.append((name, e))
        dst = self.nodes.get(e.addr)
        if dst is None or dst.name in self.down or dst.name in self.udp_blackhole:
            return
        if name in self.down or (name, dst.name) in self.udp_cut:
            return
        src = self.by_name[name].addr
        for out in dst.handle_packet(self.now, src, e.data):
            self._q.append((dst.name, out))

    def _stream(self, name: str, e: OpenStream) -> None:
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

    def _record(self, name: str, e: object) -> None:
        log = self.logs[name]
        if isinstance(e, MemberEvent):
            log.events.append(e)
        elif isinstance(e, SerfMemberEvent):
            log.members.append((self.now, e))
        elif isinstance(e, SerfUserEvent):
            log.users.append(e)
        elif isinstance(e, SerfQueryEvent):
            log.queries.append(e)
            self._on_query(name, e)
        elif isinstance(e, QueryUpdate):
            log.updates.append(e)
        elif isinstance(e, Notice):
            log.notices.append(e)
            self.notice_times[name].append((self.now, e))
            if e.event == "name_conflict_resolution" and not e.fields.get("won", True):
                # serf: the minority of a name conflict shuts down without leaving.
                self.down.add(name)
        elif isinstance(e, Violation):
            log.violations.append(e)
        elif isinstance(e, JoinDone):
            log.joins.append(e)
        elif isinstance(e, LeaveDone):
            log.leaves.append(e)
        else:
            log.other.append(e)

    def _on_query(self, name: str, e: SerfQueryEvent) -> None:
        """Hook: a query was delivered at ``name`` (``SerfPump`` may answer it)."""

    # -- time -----------------------------------------------------------------------------

    def run_until(self, t_end: float) -> None:
        """Run every round and timer due up to ``t_end``, earliest first."""
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
            cfg = self._swim_config(node)
            effs: Sequence[object]
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


class SwimPump(Pump[Memberlist]):
    """Drives ``Memberlist`` cores at ``127.0.0.1:7000+i``."""

    def __init__(self, seed: int = 1, config: SwimConfig = TEST_CONFIG) -> None:
        super().__init__(seed)
        self.config = config

    def _swim_config(self, core: Memberlist) -> SwimConfig:
        return core.config

    def add(
        self,
        name: str,
        *,
        config: SwimConfig | None = None,
        delegate: Delegate | None = None,
        **kw: Any,
    ) -> Memberlist:
        addr = Address("127.0.0.1", 7000 + len(self.nodes))
        node = Memberlist(
            config or self.config,
            name,
            addr,
            rng=self._core_rng(),
            now=self.now,
            delegate=delegate if delegate is not None else NullDelegate(),
            **kw,
        )
        return self._register(node, node.config)

    def join(self, name: str, *seeds: str) -> int:
        node = self.by_name[name]
        rid, effs = node.join(self.now, [self.by_name[s].addr for s in seeds])
        self.feed(name, effs)
        return rid

    def states(self, observer: str) -> dict[str, str]:
        """``observer``'s memberlist view: {member: state name}."""
        return {m.name: m.state.name for m in self.by_name[observer].members()}


class SerfPump(Pump[SerfNode]):
    """Drives ``SerfNode`` cores at ``host:7001, 7002, ...``; answers queries on request.

    ``auto_respond[node] = payload`` makes ``node`` answer every query with ``payload``;
    ``query_handler(node, event)`` (consulted when the node has no ``auto_respond`` entry)
    may answer with bytes or stay silent with None.
    """

    def __init__(self, seed: int = 1, swim: SwimConfig = SWIM, serf: SerfConfig = SERF) -> None:
        super().__init__(seed)
        self.swim = swim
        self.serf = serf
        self.auto_respond: dict[str, bytes] = {}
        self.query_handler: QueryHandler | None = None
        self._port = 7000

    def _swim_config(self, core: SerfNode) -> SwimConfig:
        return core.swim_config

    def add(
        self,
        name: str,
        tags: dict[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        **kw: Any,
    ) -> SerfNode:
        if port is None:
            self._port += 1
            port = self._port
        node = SerfNode(
            self.serf,
            self.swim,
            name,
            Address(host, port),
            rng=self._core_rng(),
            now=self.now,
            tags=tags or {},
            **kw,
        )
        return self._register(node, node.swim_config)

    def _on_query(self, name: str, e: SerfQueryEvent) -> None:
        if name in self.down:
            return
        payload = self.auto_respond.get(name)
        if payload is None and self.query_handler is not None:
            payload = self.query_handler(name, e)
        if payload is not None:
            for out in self.by_name[name].respond(self.now, e.token, payload):
                self._q.append((name, out))

    def join(self, name: str, *seeds: str, replay: bool = False) -> int:
        node = self.by_name[name]
        rid, effs = node.join(self.now, [self.by_name[s].addr for s in seeds], replay=replay)
        self.feed(name, effs)
        return rid

    def cluster(self, *names: str, tags: dict[str, dict[str, str]] | None = None) -> None:
        """Start ``names`` (tags ``{"role": name}`` unless given), all joining the first."""
        for n in names:
            self.add(n, (tags or {}).get(n, {"role": n}))
        for n in names[1:]:
            self.join(n, names[0])
        self.run_for(3.0)

    def statuses(self, observer: str) -> dict[str, str]:
        """``observer``'s Serf view: {member: status}."""
        return {m.name: m.status for m in self.by_name[observer].members()}


__all__ = [
    "SERF",
    "SWIM",
    "TEST_CONFIG",
    "Log",
    "Pump",
    "PumpCore",
    "QueryHandler",
    "SerfPump",
    "SwimPump",
]
