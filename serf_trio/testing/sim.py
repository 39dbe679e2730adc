"""A deterministic discrete-event simulator that drives many sans-IO membership cores.

No trio, no sockets, no wall clock: the simulator owns a heap of ``(time, seq, kind, ...)``
events (``seq`` is a global counter, so ties break by scheduling order and a seed replays to the
same trace), and plays the *driver* role of ``swim.api`` for every node:

* periodic rounds – ``probe`` every ``probe_interval``, ``gossip`` every ``gossip_interval``,
  ``push_pull`` every ``push_pull_period()`` (re-read each round, it grows with the cluster),
  each starting after a seeded random stagger in ``[0, interval)``, as memberlist does;
* internal timers – after *every* call into a core the simulator re-reads ``next_deadline()``
  and, if it changed, schedules a ``tick`` for it.  Each node has a timer *generation*; a
  reschedule bumps it, so superseded heap entries are skipped in O(1) when popped instead of
  being searched for and removed;
* datagrams – each ``SendPacket`` goes through the ``NetModel`` (latency, loss, duplication,
  partitions, dead hosts, starved receivers) and becomes zero, one or two delivery events;
* streams – an ``OpenStream`` becomes a request delivered to the target's ``handle_stream``
  after a connect + one-way latency, and its reply delivered back after another latency; every
  failure (refused, reset, closed without reply, partition, ``timeout``) ends in
  ``stream_result(None, error)``; whichever of reply, failure and timeout comes first wins;
* converged start – ``bootstrap_converged(n)`` starts ``n`` nodes that already know each
  other alive (the table a join storm leaves, handed to each core's ``assume_converged``), so
  a 1,000-node cluster is ready in seconds instead of minutes of simulated storm;
* idle gossip – with ``skip_idle_gossip`` a gossip round is only scheduled while the core has
  something to gossip (``has_broadcasts``), keeping its phase, as the trio driver does;
* commands – join, crash (the process stops, its address becomes a dead host), graceful
  leave (the node stops once its ``LeaveDone`` arrives; a Serf node lingers
  ``leave_propagate_delay`` more, as the agent does), restart (a fresh core, incarnation 1,
  same name and address).

Cores: ``core_factory`` builds each node's core; ``memberlist_factory`` (the default) a
``swim.node.Memberlist``, ``serf_factory`` (or ``Simulator(serf=SerfConfig(...))``) a
``serf.node.SerfNode``, which the simulator drives exactly the same way.  Memberlist-level views
(``view``, convergence, dead detection) read ``SerfNode.memberlist``; Serf nodes add Serf
commands (``user_event``, ``query``, ``set_tags``, ``force_leave``, now or at a simulated time),
an in-sim query ``query_handler`` that answers delivered queries through ``SerfNode.respond``,
and records of what each node delivered: ``serf_member_events``, ``user_events`` (with their
LTime), ``query_deliveries`` and, per started query, a ``SimQuery`` collecting acks, responses
and the final ``done``.  An effect the simulator does not know is an error (``TypeError``),
never silently dropped.

Nodes live on loopback *labels* ``127.0.X.Y:7946``; nothing is ever sent.  The simulator records
a trace of ``(time, node, summary)`` for member events (memberlist's and Serf's), Serf user
events, query deliveries and query progress, notices, violations and command results
(``same seed => same trace``), and offers queries for assertions: views, convergence, the time
at which every survivor saw a node dead, and false dead declarations.

Encryption: ``add_node(..., envelope=...)`` gives a node a ``wire.crypto.Envelope`` (build
one with ``Simulator.envelope``: its nonces come from the seed).  The core gets it (its packet
budget shrinks by the sealing overhead; a Serf core answers key queries from its keyring) and a
``pump.WireSeal`` seals every datagram and stream message the node sends and opens what it
receives, with the real transport's rules: a datagram that does not open is dropped and
counted, a stream request that does not open is answered with memberlist's ``err`` (or closed),
a reply that does not open fails the exchange.  The envelope survives ``restart`` (an agent
reloads its keyring file).  ``key_operation`` runs Serf's KeyManager queries (the responses
become a ``KeyReport``); a ``KeyringChanged`` effect waiting for persistence is answered at once
through ``keyring_writer``.  A node without an envelope costs nothing more per packet than one
attribute test.

The default config disables compression: the pure-Python LZW codec costs far more than the
rest of a message's handling, and it changes nothing the simulator is meant to observe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, cast, runtime_checkable

from serf_trio.record import record

from ..serf.config import SerfConfig
from ..serf.effects import (
    KeyringChanged,
    QueryUpdate,
    SerfEffect,
    SerfMemberEvent,
    SerfQueryEvent,
    SerfUserEvent,
)
from ..serf.internal import KeyReport, key_query
from ..serf.members import SerfMember
from ..serf.node import SeedMember, SerfError, SharedTables
from ..serf.query import QueryParam, QueryParamsLike
from ..swim.api import (
    Address,
    DrivenCore,
    JoinDone,
    LeaveDone,
    MemberEvent,
    MemberEventKind,
    MemberInfo,
    Notice,
    OpenStream,
    SendPacket,
    State,
    Violation,
)
from ..swim.config import LAN, SwimConfig
from ..swim.formulas import next_tick
from ..swim.members import NodeRecord
from ..wire.crypto import Algorithm, Envelope
from .netmodel import CONNECTION_REFUSED, LinkProfile, NetModel
from .pump import KeyringWriter, WireSeal, keyring_write_error, seeded_envelope

PORT = 7946
STREAM_TIMEOUT_ERROR = "i/o timeout"
STREAM_EOF_ERROR = "EOF"
STREAM_RESET_ERROR = "connection reset by peer"
SIM_CONFIG = dataclasses.replace(LAN, enable_compression=False)


class CoreProtocol(DrivenCore, Protocol):
    """What the simulator calls (``swim.api.DrivenCore`` plus join/leave and views):
    ``swim.node.Memberlist`` and ``serf.node.SerfNode`` both fit.  ``members``/``member`` are
    each core's *own* view (``MemberInfo`` for memberlist, ``SerfMember`` for Serf); the
    simulator reads the memberlist-level one through ``swim_view``."""

    def join(self, now: float, seeds: Sequence[Address]) -> tuple[int, Sequence[object]]: ...
    def leave(self, now: float, timeout: float) -> Sequence[object]: ...
    def members(self) -> Sequence[object]: ...
    def member(self, name: str) -> object | None: ...
    def num_alive(self) -> int: ...


class SwimView(Protocol):
    """Memberlist-level views: ``Memberlist`` itself, or ``SerfNode.memberlist``."""

    def members(self) -> list[MemberInfo]: ...
    def member(self, name: str) -> MemberInfo | None: ...
    def num_alive(self) -> int: ...


@runtime_checkable
class SerfCore(CoreProtocol, Protocol):
    """What the simulator needs of a Serf core (``serf.node.SerfNode``) beyond driving it."""

    @property
    def config(self) -> SerfConfig: ...
    @property
    def memberlist(self) -> SwimView: ...
    def members(self) -> list[SerfMember]: ...
    def member(self, name: str) -> SerfMember | None: ...
    def user_event(
        self, now: float, name: str, payload: bytes, coalesce: bool
    ) -> Sequence[object]: ...
    def query(self, now: float, params: QueryParamsLike) -> tuple[int, Sequence[object]]: ...
    def respond(self, now: float, token: int, payload: bytes) -> Sequence[object]: ...
    def set_tags(self, now: float, tags: dict[str, str]) -> Sequence[object]: ...
    def force_leave(self, now: float, node: str, prune: bool = False) -> Sequence[object]: ...


@runtime_checkable
class ConvergibleSwim(Protocol):
    """A memberlist core that can start converged (``swim.node.Memberlist``)."""

    @property
    def local(self) -> MemberInfo: ...
    def assume_converged(
        self, now: float, members: Sequence[MemberInfo], shared: dict[str, NodeRecord] | None = None
    ) -> None: ...


class ConvergibleSerf(Protocol):
    """A Serf core that can start converged (``serf.node.SerfNode``)."""

    @property
    def tags(self) -> dict[str, str]: ...
    def assume_converged(
        self,
        now: float,
        members: Sequence[SeedMember],
        member_clock: int,
        shared: SharedTables | None = None,
    ) -> None: ...


class KeyedCore(Protocol):
    """A Serf core that waits for its keyring to be persisted (``KeyringChanged.token``)."""

    def key_persisted(self, now: float, token: int, error: str = "") -> Sequence[SerfEffect]: ...


def swim_view(core: CoreProtocol) -> SwimView:
    """The memberlist-level view of ``core``: its ``memberlist`` if it wraps one, else itself."""
    if isinstance(core, SerfCore):
        return core.memberlist
    return cast(SwimView, core)


# (config, name, addr, rng, now) -> core
CoreFactory = Callable[[SwimConfig, str, Address, random.Random, float], CoreProtocol]


class SealingCoreFactory(Protocol):
    """A ``CoreFactory`` that also builds encrypted cores: ``envelope=`` is handed to the core
    (``memberlist_factory`` and ``serf_factory`` are such factories)."""

    def __call__(
        self,
        config: SwimConfig,
        name: str,
        addr: Address,
        rng: random.Random,
        now: float,
        /,
        *,
        envelope: Envelope | None = None,
    ) -> CoreProtocol: ...


# (node name, delivered query) -> response payload, or None to stay silent
QueryHandler = Callable[[str, SerfQueryEvent], bytes | None]


def memberlist_factory(
    config: SwimConfig,
    name: str,
    addr: Address,
    rng: random.Random,
    now: float,
    *,
    envelope: Envelope | None = None,
) -> CoreProtocol:
    """Build the real core (imported lazily so the engine can be tested without it)."""
    from ..swim.node import Memberlist

    return Memberlist(config, name, addr, rng=rng, now=now, sealer=envelope)


def serf_factory(
    serf_config: SerfConfig | None = None,
    *,
    tags: Callable[[str], dict[str, str]] | None = None,
    persist_keyring: bool = False,
) -> CoreFactory:
    """A factory of ``SerfNode`` cores with ``serf_config`` and initial ``tags(name)``; with
    ``persist_keyring`` their key queries wait for the simulator's ``keyring_writer``."""
    from ..serf.node import SerfNode

    cfg = serf_config if serf_config is not None else SerfConfig()

    def make(
        config: SwimConfig,
        name: str,
        addr: Address,
        rng: random.Random,
        now: float,
        *,
        envelope: Envelope | None = None,
    ) -> CoreProtocol:
        return SerfNode(
            cfg,
            config,
            name,
            addr,
            rng=rng,
            now=now,
            tags=tags(name) if tags else None,
            envelope=envelope,
            persist_keyring=persist_keyring,
        )

    return make


def answer_with_name(query_name: str) -> QueryHandler:
    """A ``query_handler``: every node answers queries named ``query_name`` with its name."""

    def handler(node: str, event: SerfQueryEvent) -> bytes | None:
        return node.encode() if event.name == query_name else None

    return handler


def sim_address(index: int) -> Address:
    """The loopback label of node ``index``: 127.0.X.Y with Y in 1..254."""
    x, y = divmod(index, 254)
    if x > 255:
        raise ValueError("at most 65,024 simulated nodes")
    return Address(f"127.0.{x}.{y + 1}", PORT)


class NodeStatus(Enum):
    RUNNING = "running"
    LEAVING = "leaving"  # leave() called, LeaveDone not yet seen: still runs
    LEFT = "left"  # stopped after a graceful leave
    CRASHED = "crashed"
    SHUTDOWN = "shutdown"  # a Serf node that lost a name conflict stopped without leaving

    @property
    def up(self) -> bool:
        return self in (NodeStatus.RUNNING, NodeStatus.LEAVING)


class SimNode:
    """One simulated process: a core plus the simulator's bookkeeping about it."""

    __slots__ = (
        "addr",
        "config",
        "core",
        "epoch",
        "gossip_armed",
        "gossip_at",
        "index",
        "last_tick",
        "name",
        "same_time_ticks",
        "status",
        "swim",
        "timer_at",
        "timer_gen",
        "wire",
    )

    def __init__(
        self,
        index: int,
        name: str,
        addr: Address,
        config: SwimConfig,
        core: CoreProtocol,
        wire: WireSeal | None = None,
    ) -> None:
        self.index = index
        self.name = name
        self.addr = addr
        self.config = config
        self.core = core
        self.swim = swim_view(core)  # memberlist-level views of ``core``
        self.wire = wire  # seals and opens this node's traffic (None: plaintext, no envelope)
        self.status = NodeStatus.RUNNING
        self.epoch = 0  # bumped by crash/leave/restart: events of an older life are dropped
        self.timer_at: float | None = None
        self.timer_gen = 0
        # The last tick's time and how many ticks in a row came at it (a core whose
        # next_deadline does not advance would loop at one instant forever).
        self.last_tick = -1.0
        self.same_time_ticks = 0
        self.gossip_at = 0.0  # when the gossip round is next due (it keeps its phase)
        self.gossip_armed = False  # a gossip event of this epoch is in the heap for gossip_at

    def __repr__(self) -> str:
        return f"SimNode({self.name}, {self.addr}, {self.status.value})"


@record
class DeadDeclaration:
    """A ``declared_dead`` notice: ``by`` declared ``node`` dead; ``false`` if it was up.

    ``stale`` means the declared incarnation is older than the one the node itself holds:
    every node that already saw the refutation ignores such a ``dead`` message.
    """

    time: float
    by: str
    node: str
    false: bool
    stale: bool = False


@record
class SerfMemberRecord:
    """One member of a ``SerfMemberEvent`` emitted by ``node`` at ``time``."""

    time: float
    node: str
    kind: str  # member-join | member-leave | member-failed | member-update | member-reap
    member: str
    status: str
    tags: dict[str, str]


@record
class UserEventRecord:
    """A user event ``node`` delivered (``SerfUserEvent``) at ``time``."""

    time: float
    node: str
    name: str
    ltime: int
    payload: bytes
    coalesce: bool


@record
class QueryDelivery:
    """A query delivered to ``node``'s handlers (``SerfQueryEvent``) at ``time``."""

    time: float
    node: str
    name: str
    ltime: int
    source: str
    deadline: float


@dataclass(slots=True)
class SimQuery:
    """A query started through ``Simulator.query``, filled in as its ``QueryUpdate`` records arrive.

    A live accumulator (mutable on purpose): ``acks``/``responses`` map the responder to the
    simulated time the originator got it (and the payload); ``duplicates`` counts updates from
    a responder already recorded (the core de-duplicates, so it should stay 0); ``done_at`` is
    when the originator's collector closed (the query deadline).
    """

    node: str
    name: str
    payload: bytes
    issued_at: float | None = None
    query_id: int | None = None
    epoch: int = -1
    acks: dict[str, float] = dataclasses.field(default_factory=dict)
    responses: dict[str, tuple[float, bytes]] = dataclasses.field(default_factory=dict)
    duplicates: int = 0
    done_at: float | None = None
    members: int = 0  # the originator's memberlist NumMembers when the query started

    def key_report(self) -> KeyReport:
        """The responses to a key query (``Simulator.key_operation``) as Serf's KeyManager
        gathers them: in arrival order, over NumMembers at the start, the ones arriving after
        every node has answered unread (serf streamKeyResp returns then)."""
        report = KeyReport(num_nodes=self.members)
        for node, (_, payload) in sorted(self.responses.items(), key=lambda kv: kv[1][0]):
            if report.complete:
                break
            report.add(node, payload)
        return report


@record
class SimStats:
    events: int
    packets_sent: int
    packets_delivered: int
    packets_lost: int  # vanished in the network (loss, cut, dead or unknown host)
    streams_opened: int
    streams_failed: int
    ticks: int
    stale_timer_entries: int
    push_pull_rounds: int = 0  # push_pull() calls (each one anti-entropy sync attempt)
    packets_refused: int = 0  # delivered, then dropped by the receiver's envelope
    streams_refused: int = 0  # stream requests the receiver's envelope did not open
    bytes_sent: int = 0  # datagram bytes handed to the network (as sealed), lost ones included
    stream_bytes_sent: int = 0  # stream request and reply bytes written (as sealed)


# Event kinds (the third field of a heap entry).
_CALL, _PROBE, _GOSSIP, _PUSHPULL, _TIMER, _PACKET, _STREAM_REQ, _STREAM_DONE = range(8)
_MAX_SAME_TIME_TICKS = 1000

TraceEntry = tuple[float, str, str]


class Simulator:
    """Discrete-event driver of many cores over a ``NetModel``."""

    def __init__(
        self,
        seed: int,
        *,
        config: SwimConfig = SIM_CONFIG,
        link: LinkProfile | None = None,
        net: NetModel | None = None,
        core_factory: CoreFactory | None = None,
        serf: SerfConfig | None = None,
        query_handler: QueryHandler | None = None,
        keyring_writer: KeyringWriter | None = None,
        record_trace: bool = True,
        start: float = 0.0,
        skip_idle_gossip: bool = False,
    ) -> None:
        """``core_factory`` builds the cores (default: memberlist); ``serf`` is shorthand for
        ``core_factory=serf_factory(serf)``.  ``query_handler`` answers queries delivered to
        Serf nodes (see ``answer_with_name``); ``keyring_writer(node, keys)`` persists a
        keyring a key query changed on a node built with ``persist_keyring`` (raising: the
        write failed).

        ``skip_idle_gossip``: a node's gossip round is neither scheduled nor run while its core
        has nothing to gossip (``has_broadcasts()``), as the trio driver does; when something
        is queued the round resumes at the next tick of its phase.  An idle round would only
        pick targets and send nothing, but picking draws from the core's RNG, so this changes
        seeded outcomes (deterministically): off by default, so existing seeded scenarios
        replay unchanged.  It halves the events of an idle cluster."""
        if core_factory is None:
            core_factory = serf_factory(serf) if serf is not None else memberlist_factory
        elif serf is not None:
            raise ValueError("pass either core_factory or serf, not both")
        self.seed = seed
        self.rng = random.Random(f"sim/{seed}")
        self.net = net if net is not None else NetModel(f"net/{seed}", link or LinkProfile())
        self.config = config
        self.core_factory = core_factory
        self.record_trace = record_trace
        self.skip_idle_gossip = skip_idle_gossip
        self.now = start
        self.nodes: dict[str, SimNode] = {}
        self._by_addr: dict[Address, SimNode] = {}
        self._heap: list[tuple[Any, ...]] = []
        self._seq = 0
        self._pending_streams: dict[tuple[int, int], int] = {}  # (node index, id) -> epoch
        self.trace: list[TraceEntry] = []
        self.notices: Counter[str] = Counter()
        self.dead_declarations: list[DeadDeclaration] = []
        self.join_results: dict[str, list[JoinDone]] = {}
        self.query_handler = query_handler
        self.keyring_writer = keyring_writer
        self._nonces = random.Random(f"nonces/{seed}")  # apart from ``rng``: nothing else moves
        self.serf_member_events: list[SerfMemberRecord] = []
        self.user_events: list[UserEventRecord] = []
        self.query_deliveries: list[QueryDelivery] = []
        self.queries: list[SimQuery] = []
        self._open_queries: dict[tuple[str, int, int], SimQuery] = {}  # (node, epoch, id)
        # subject -> observer -> (kind, time) of the observer's latest Serf event about it
        self._serf_seen: dict[str, dict[str, tuple[str, float]]] = {}
        # subject -> observer -> time of the observer's latest "subject is DEAD" event
        self._dead_seen: dict[str, dict[str, float]] = {}
        # subject -> observer -> when the observer last took ``subject`` back from DEAD
        self._back_seen: dict[str, dict[str, float]] = {}
        self._events = 0
        self._packets_sent = 0
        self._packets_delivered = 0
        self._packets_lost = 0
        self._streams_opened = 0
        self._streams_failed = 0
        self._ticks = 0
        self._stale = 0
        self._push_pulls = 0
        self._packets_refused = 0
        self._streams_refused = 0
        self._bytes_sent = 0
        self._stream_bytes_sent = 0

    # -- scheduling ------------------------------------------------------------------------

    def _push(self, t: float, kind: int, *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, *args))

    def at(self, t: float, fn: Callable[[Simulator], None]) -> None:
        """Run ``fn(sim)`` at simulated time ``t`` (scenario scripting)."""
        self._push(max(t, self.now), _CALL, fn)

    def _start_rounds(self, node: SimNode) -> None:
        cfg = node.config
        rng = self.rng
        self._push(self.now + rng.uniform(0, cfg.probe_interval), _PROBE, node, node.epoch)
        node.gossip_at = self.now + rng.uniform(0, cfg.gossip_interval)
        node.gossip_armed = False
        if not self.skip_idle_gossip:
            self._push(node.gossip_at, _GOSSIP, node, node.epoch)
        elif node.core.has_broadcasts():
            self._arm_gossip(node)
        period = node.core.push_pull_period()
        if period > 0:
            self._push(self.now + rng.uniform(0, period), _PUSHPULL, node, node.epoch)

    def _arm_gossip(self, node: SimNode) -> None:
        """Schedule the gossip round at its next tick after now (keeping its phase: ticks
        that passed while the node was idle are skipped, as a ticker's would be)."""
        at, now = node.gossip_at, self.now
        if at <= now:
            at = node.gossip_at = next_tick(at, node.config.gossip_interval, now)
        node.gossip_armed = True
        self._push(at, _GOSSIP, node, node.epoch)

    def _reschedule_timer(self, node: SimNode) -> None:
        deadline = node.core.next_deadline()
        if deadline == node.timer_at:
            return
        node.timer_gen += 1
        node.timer_at = deadline
        if deadline is not None:
            self._push(max(deadline, self.now), _TIMER, node, node.timer_gen)

    # -- nodes and commands ----------------------------------------------------------------

    def _new_core(
        self, name: str, addr: Address, config: SwimConfig, wire: WireSeal | None
    ) -> CoreProtocol:
        core_rng = random.Random(self.rng.getrandbits(64))
        if wire is None:
            return self.core_factory(config, name, addr, core_rng, self.now)
        # Only a factory taking ``envelope=`` can build encrypted cores; any other one raises
        # TypeError here rather than run a core that does not know its packets are sealed.
        sealing = cast(SealingCoreFactory, self.core_factory)
        return sealing(config, name, addr, core_rng, self.now, envelope=wire.envelope)

    def envelope(
        self,
        keys: Sequence[bytes] | None,
        algorithm: Algorithm = Algorithm.SECRETBOX,
        **switches: bool,
    ) -> Envelope:
        """An envelope for ``add_node(..., envelope=)`` over ``keys`` (None: encryption off,
        it can be switched on later by setting ``keyring``) with nonces from the seed.
        ``switches``: ``verify_incoming`` / ``verify_outgoing``."""
        return seeded_envelope(self._nonces, keys, algorithm, **switches)

    def add_node(
        self,
        name: str | None = None,
        *,
        config: SwimConfig | None = None,
        envelope: Envelope | None = None,
    ) -> SimNode:
        """Start a new node (not joined to anyone) at the current time; with ``envelope`` its
        traffic is sealed and opened by it (see the module docstring)."""
        node = self._create_node(name, config, envelope)
        self._start_rounds(node)
        self._reschedule_timer(node)
        return node

    def _create_node(
        self, name: str | None, config: SwimConfig | None, envelope: Envelope | None
    ) -> SimNode:
        """Build and register a node and its core; its rounds and timer are not started."""
        index = len(self.nodes)
        name = name if name is not None else f"n{index}"
        if name in self.nodes:
            raise ValueError(f"duplicate node name {name!r}")
        addr = sim_address(index)
        cfg = config if config is not None else self.config
        wire = WireSeal(envelope, compress=cfg.enable_compression) if envelope is not None else None
        node = SimNode(index, name, addr, cfg, self._new_core(name, addr, cfg, wire), wire)
        self.nodes[name] = node
        self._by_addr[addr] = node
        self.net.revive(addr)
        return node

    def bootstrap_converged(
        self,
        count: int,
        *,
        config: SwimConfig | None = None,
        envelope: Callable[[], Envelope] | None = None,
    ) -> list[SimNode]:
        """Start ``count`` nodes (``n0``..., as ``add_nodes``) as a cluster whose join has
        already converged: every node knows every other alive with the incarnation, address,
        meta and protocol versions a join would have taught it, nothing is queued to
        broadcast, and the periodic rounds start staggered as usual.  Serf cores also hold
        every member alive with its tags, node ``n<i>``'s status at Lamport time ``i`` (the
        first node joined nobody) and the member clock at ``count``.  A 1,000-node cluster
        is ready in seconds instead of minutes of simulated join storm.

        The simulator must have no nodes yet.  No member events are recorded for the
        bootstrap (a converged cluster has delivered them); each Serf node still delivers its
        own member-join with its first call.  Cores must offer ``assume_converged``
        (``Memberlist``, ``SerfNode``), else ``TypeError``.
        """
        if self.nodes:
            raise ValueError("bootstrap_converged starts the cluster: add no node before it")
        nodes = [
            self._create_node(None, config, envelope() if envelope else None) for _ in range(count)
        ]
        now = self.now
        serf = [n.core for n in nodes if isinstance(n.core, SerfCore)]
        if len(serf) == count:
            seeds = [
                SeedMember(
                    cast(ConvergibleSwim, core.memberlist).local,
                    cast(ConvergibleSerf, core).tags,
                    ltime,
                )
                for ltime, core in enumerate(serf)
            ]
            tables = SharedTables()  # one record per member for every core (copy-on-write)
            for core in serf:
                cast(ConvergibleSerf, core).assume_converged(now, seeds, count, tables)
        elif not serf and all(isinstance(n.core, ConvergibleSwim) for n in nodes):
            infos = [cast(ConvergibleSwim, n.core).local for n in nodes]
            shared: dict[str, NodeRecord] = {}  # one record per member (copy-on-write)
            for n in nodes:
                cast(ConvergibleSwim, n.core).assume_converged(now, infos, shared)
        else:
            raise TypeError("bootstrap_converged needs Memberlist or SerfNode cores")
        for n in nodes:
            self._start_rounds(n)
            self._reschedule_timer(n)
        return nodes

    def add_nodes(
        self,
        count: int,
        *,
        config: SwimConfig | None = None,
        envelope: Callable[[], Envelope] | None = None,
    ) -> list[SimNode]:
        """``count`` new nodes; ``envelope()`` (if given) builds each one's envelope."""
        return [
            self.add_node(config=config, envelope=envelope() if envelope else None)
            for _ in range(count)
        ]

    def join(self, name: str, seeds: Sequence[str]) -> int:
        """``name`` joins through the named seed nodes now; returns the core's request id."""
        node = self.nodes[name]
        addrs = [self.nodes[s].addr for s in seeds]
        self._record(node.name, "cmd join " + ",".join(seeds))
        request_id, effects = node.core.join(self.now, addrs)
        self._apply(node, effects)
        return request_id

    def crash(self, name: str) -> None:
        """Stop ``name`` abruptly: no more events, its address becomes a dead host."""
        node = self.nodes[name]
        self._stop(node, NodeStatus.CRASHED)
        self._record(name, "cmd crash")

    def leave(self, name: str, timeout: float = 5.0) -> None:
        """Graceful leave; the node stops when its ``LeaveDone`` effect arrives."""
        node = self.nodes[name]
        node.status = NodeStatus.LEAVING
        self._record(name, "cmd leave")
        self._apply(node, node.core.leave(self.now, timeout))

    def restart(self, name: str, seeds: Sequence[str] = ()) -> None:
        """Start a fresh core (incarnation 1) for a stopped node, optionally joining ``seeds``."""
        node = self.nodes[name]
        if node.status.up:
            self._stop(node, NodeStatus.CRASHED)
        node.epoch += 1
        node.status = NodeStatus.RUNNING
        node.core = self._new_core(node.name, node.addr, node.config, node.wire)
        node.swim = swim_view(node.core)
        node.timer_at = None
        self.net.revive(node.addr)
        self._record(name, "cmd restart")
        self._start_rounds(node)
        self._reschedule_timer(node)
        if seeds:
            self.join(name, seeds)

    def _stop(self, node: SimNode, status: NodeStatus) -> None:
        node.status = status
        node.epoch += 1
        node.timer_gen += 1
        node.timer_at = None
        self.net.kill(node.addr)

    # -- Serf commands (now, or at simulated time ``at``) ----------------------------------

    def serf_core(self, name: str) -> SerfCore:
        """``name``'s core as a Serf core (``TypeError`` for a memberlist-only node)."""
        core = self.nodes[name].core
        if not isinstance(core, SerfCore):
            raise TypeError(f"{name} does not run a Serf core")
        return core

    def _command(
        self, name: str, at: float | None, what: str, fn: Callable[[SimNode, SerfCore], None]
    ) -> None:
        """Run ``fn`` on ``name``'s Serf core now or at ``at``; a stopped node is skipped."""
        self.serf_core(name)  # fail fast on a memberlist-only node

        def run(sim: Simulator) -> None:
            node = sim.nodes[name]
            if not node.status.up:
                sim._record(name, f"cmd {what} skipped: {node.status.value}")
                return
            fn(node, sim.serf_core(name))

        if at is None:
            run(self)
        else:
            self.at(at, run)

    def user_event(
        self,
        name: str,
        event: str,
        payload: bytes = b"",
        *,
        coalesce: bool = False,
        at: float | None = None,
    ) -> None:
        """``name`` sends user event ``event`` (now or at ``at``); ``SerfError`` past the size
        limit propagates."""

        def fn(node: SimNode, core: SerfCore) -> None:
            self._record(name, f"cmd user_event {event} {len(payload)}B")
            self._apply(node, core.user_event(self.now, event, payload, coalesce))

        self._command(name, at, f"user_event {event}", fn)

    def query(
        self,
        name: str,
        query: str,
        payload: bytes = b"",
        *,
        timeout: float = 0.0,
        request_ack: bool = False,
        filter_nodes: Sequence[str] = (),
        filter_tags: dict[str, str] | None = None,
        relay_factor: int = 0,
        at: float | None = None,
    ) -> SimQuery:
        """``name`` starts query ``query`` (now or at ``at``); ``timeout`` 0 = Serf's default
        formula.  The returned ``SimQuery`` fills in as acks, responses and ``done`` arrive
        (``issued_at`` stays None if the node was down when the command came due)."""
        params = QueryParam(
            query,
            payload,
            tuple(filter_nodes),
            dict(filter_tags or {}),
            request_ack,
            relay_factor,
            timeout,
        )
        return self._start_query(name, params, at)

    def key_operation(
        self, name: str, op: str, key: bytes = b"", *, at: float | None = None
    ) -> SimQuery:
        """``name`` runs one keyring operation (install | use | remove | list) through the
        cluster as Serf's KeyManager does (the key query with default parameters); once the
        query is done, ``key_report()`` of the returned ``SimQuery`` is its ``KeyReport``."""
        return self._start_query(name, key_query(op, key), at)

    def _start_query(self, name: str, params: QueryParam, at: float | None) -> SimQuery:
        handle = SimQuery(name, params.name, params.payload)
        self.queries.append(handle)

        def fn(node: SimNode, core: SerfCore) -> None:
            qid, effects = core.query(self.now, params)
            handle.issued_at, handle.query_id, handle.epoch = self.now, qid, node.epoch
            handle.members = core.num_alive()
            self._open_queries[(name, node.epoch, qid)] = handle
            self._record(name, f"cmd query {params.name} id={qid}")
            self._apply(node, effects)

        self._command(name, at, f"query {params.name}", fn)
        return handle

    def set_tags(self, name: str, tags: dict[str, str], *, at: float | None = None) -> None:
        """``name`` replaces its tags (memberlist re-announces it; peers see member-update)."""

        def fn(node: SimNode, core: SerfCore) -> None:
            self._record(name, "cmd set_tags " + ",".join(f"{k}={tags[k]}" for k in sorted(tags)))
            self._apply(node, core.set_tags(self.now, tags))

        self._command(name, at, "set_tags", fn)

    def force_leave(
        self, name: str, node: str, *, prune: bool = False, at: float | None = None
    ) -> None:
        """``name`` broadcasts a leave intent for ``node`` (failed -> left; ``prune`` erases)."""

        def fn(sim_node: SimNode, core: SerfCore) -> None:
            self._record(name, f"cmd force_leave {node} prune={prune}")
            self._apply(sim_node, core.force_leave(self.now, node, prune))

        self._command(name, at, f"force_leave {node}", fn)

    # -- running ---------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        """Process every event due at or before ``t``; afterwards ``now == t``."""
        heap = self._heap
        while heap and heap[0][0] <= t:
            ev = heapq.heappop(heap)
            self.now = ev[0]
            self._events += 1
            self._dispatch(ev)
        self.now = max(self.now, t)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until_condition(
        self, pred: Callable[[Simulator], bool], limit: float, *, step: float = 0.1
    ) -> float | None:
        """Run until ``pred(sim)`` holds (checked every ``step`` simulated seconds) or ``limit``.

        Returns the (step-resolution) time at which it first held, or ``None`` at the limit.
        """
        if pred(self):
            return self.now
        while self.now < limit:
            self.run_until(min(self.now + step, limit))
            if pred(self):
                return self.now
        return None

    def _dispatch(self, ev: tuple[Any, ...]) -> None:
        kind = ev[2]
        now = self.now
        if kind == _PACKET:
            node, src, data = ev[3], ev[4], ev[5]
            if node.status.up:
                self._packets_delivered += 1
                if node.wire is not None:
                    data = node.wire.open_packet(data)
                    if data is None:
                        self._packets_refused += 1  # the transport drops what does not open
                        return
                self._apply(node, node.core.handle_packet(now, src, data))
        elif kind == _TIMER:
            node, gen = ev[3], ev[4]
            if gen != node.timer_gen or not node.status.up:
                self._stale += 1
                return
            # Per node: thousands of nodes may well tick at one instant (a converged start
            # arms every node's Serf reaper for the same time).
            if now == node.last_tick:
                node.same_time_ticks += 1
                if node.same_time_ticks > _MAX_SAME_TIME_TICKS:
                    raise RuntimeError(f"{node.name}: next_deadline() does not advance past {now}")
            else:
                node.last_tick = now
                node.same_time_ticks = 0
            node.timer_at = None
            self._ticks += 1
            self._apply(node, node.core.tick(now))
        elif kind == _GOSSIP:
            node, epoch = ev[3], ev[4]
            if epoch == node.epoch and node.status.up:
                if not self.skip_idle_gossip:
                    self._push(now + node.config.gossip_interval, _GOSSIP, node, epoch)
                    self._apply(node, node.core.gossip(now))
                else:
                    # The round runs (or, idle, is skipped); ``_apply`` re-arms it at the
                    # next tick if anything is (still) queued.
                    node.gossip_at = now + node.config.gossip_interval
                    node.gossip_armed = False
                    core = node.core
                    if core.has_broadcasts():
                        self._apply(node, core.gossip(now))
        elif kind == _PROBE:
            node, epoch = ev[3], ev[4]
            if epoch == node.epoch and node.status.up:
                self._push(now + node.config.probe_interval, _PROBE, node, epoch)
                self._apply(node, node.core.probe(now))
        elif kind == _PUSHPULL:
            node, epoch = ev[3], ev[4]
            if epoch == node.epoch and node.status.up:
                period = node.core.push_pull_period()
                if period > 0:
                    self._push(now + period, _PUSHPULL, node, epoch)
                self._push_pulls += 1
                self._apply(node, node.core.push_pull(now))
        elif kind == _STREAM_REQ:
            self._stream_request(ev[3], ev[4], ev[5], ev[6], ev[7], ev[8])
        elif kind == _STREAM_DONE:
            node, epoch, stream_id, reply, error = ev[3], ev[4], ev[5], ev[6], ev[7]
            if self._pending_streams.get((node.index, stream_id)) != epoch:
                return  # already resolved, or a previous life's stream
            del self._pending_streams[(node.index, stream_id)]
            if epoch != node.epoch or not node.status.up:
                return
            if reply and node.wire is not None:
                # b"" is a no-reply stream's completion: nothing was read back.
                reply, error = node.wire.open_reply(reply, ev[8])
            if reply is None:
                self._streams_failed += 1
            self._apply(node, node.core.stream_result(now, stream_id, reply, error))
        elif kind == _CALL:
            ev[3](self)
        else:  # pragma: no cover - kinds are closed
            raise AssertionError(kind)

    # -- effects ---------------------------------------------------------------------------

    def _apply(self, node: SimNode, effects: Sequence[object]) -> None:
        now = self.now
        for eff in effects:
            if isinstance(eff, SendPacket):
                self._packets_sent += 1
                data = eff.data if node.wire is None else node.wire.seal_packet(eff.data)
                self._bytes_sent += len(data)
                target = self._by_addr.get(eff.addr)
                times = self.net.packet(now, node.addr, eff.addr) if target is not None else []
                if not times:
                    self._packets_lost += 1
                for at in times:
                    self._push(at, _PACKET, target, node.addr, data)
            elif isinstance(eff, OpenStream):
                self._open_stream(node, eff)
            elif isinstance(eff, MemberEvent):
                self._member_event(node, eff)
            elif isinstance(eff, Notice):
                self._notice(node, eff)
            elif isinstance(eff, JoinDone):
                self.join_results.setdefault(node.name, []).append(eff)
                self._record(node.name, f"join_done {eff.joined} {'|'.join(eff.errors)}")
            elif isinstance(eff, LeaveDone):
                self._record(node.name, f"leave_done timed_out={eff.timed_out}")
                if node.status is NodeStatus.LEAVING:
                    self._leave_done(node)
            elif isinstance(eff, Violation):
                self.notices["violation"] += 1
                self._record(node.name, f"violation {eff.source} {eff.reason}")
            elif isinstance(eff, SerfMemberEvent):
                self._serf_member_event(node, eff)
            elif isinstance(eff, SerfUserEvent):
                self.user_events.append(
                    UserEventRecord(now, node.name, eff.name, eff.ltime, eff.payload, eff.coalesce)
                )
                self._record(node.name, f"user {eff.name} ltime={eff.ltime} {len(eff.payload)}B")
            elif isinstance(eff, SerfQueryEvent):
                self._query_event(node, eff)
            elif isinstance(eff, QueryUpdate):
                self._query_update(node, eff)
            elif isinstance(eff, KeyringChanged):
                self._keyring_changed(node, eff)
            else:
                # A new effect type needs a decision here; dropping it could hide a bug.
                raise TypeError(f"{node.name}: unknown effect {eff!r}")
        if node.status.up:
            self._reschedule_timer(node)
            if self.skip_idle_gossip and not node.gossip_armed and node.core.has_broadcasts():
                self._arm_gossip(node)

    def _leave_done(self, node: SimNode) -> None:
        """Stop a leaving node; a Serf node first lingers ``leave_propagate_delay`` (the agent
        keeps running that long so its leave spreads)."""
        core = node.core
        linger = core.config.leave_propagate_delay if isinstance(core, SerfCore) else 0.0
        if linger <= 0:
            self._stop(node, NodeStatus.LEFT)
            return
        epoch = node.epoch

        def stop(sim: Simulator) -> None:
            if node.epoch == epoch and node.status is NodeStatus.LEAVING:
                sim._stop(node, NodeStatus.LEFT)
                sim._record(node.name, "stopped after leave")

        self.at(self.now + linger, stop)

    def _serf_member_event(self, node: SimNode, ev: SerfMemberEvent) -> None:
        now = self.now
        for m in ev.members:
            self.serf_member_events.append(
                SerfMemberRecord(now, node.name, ev.kind, m.name, m.status, m.tags)
            )
            self._serf_seen.setdefault(m.name, {})[node.name] = (ev.kind, now)
            # Serf's failed is memberlist's dead: keep dead_seen_at meaningful for Serf runs.
            if ev.kind == "member-failed":
                self._dead_seen.setdefault(m.name, {})[node.name] = now
            elif ev.kind == "member-join":
                self._back_from_dead(m.name, node.name)
            if self.record_trace:
                self._record(node.name, f"{ev.kind} {m.name} {m.status} {m.status_ltime}")

    def _query_event(self, node: SimNode, ev: SerfQueryEvent) -> None:
        self.query_deliveries.append(
            QueryDelivery(self.now, node.name, ev.name, ev.ltime, ev.source_node, ev.deadline)
        )
        self._record(node.name, f"query {ev.name} ltime={ev.ltime} from={ev.source_node}")
        if self.query_handler is None:
            return
        payload = self.query_handler(node.name, ev)
        if payload is None:
            return
        core = node.core
        if not isinstance(core, SerfCore):  # pragma: no cover - only Serf cores emit queries
            raise TypeError(f"{node.name}: query event from a non-Serf core")
        try:
            effects = core.respond(self.now, ev.token, payload)
        except SerfError as exc:
            self.notices["respond_error"] += 1
            self._record(node.name, f"respond_error {ev.name} {exc}")
            return
        self._apply(node, effects)

    def _query_update(self, node: SimNode, up: QueryUpdate) -> None:
        now = self.now
        self._record(node.name, f"query_update id={up.query_id} {up.record_type} {up.from_}")
        handle = self._open_queries.get((node.name, node.epoch, up.query_id))
        if handle is None:
            self.notices["unmatched_query_update"] += 1
            return
        if up.record_type == "ack":
            if up.from_ in handle.acks:
                handle.duplicates += 1
            else:
                handle.acks[up.from_] = now
        elif up.record_type == "response":
            if up.from_ in handle.responses:
                handle.duplicates += 1
            else:
                handle.responses[up.from_] = (now, up.payload)
        else:
            handle.done_at = now
            del self._open_queries[(node.name, node.epoch, up.query_id)]

    def _keyring_changed(self, node: SimNode, ev: KeyringChanged) -> None:
        self._record(node.name, f"keyring {ev.op} keys={len(ev.keys)}")
        if ev.token is None:
            return
        # Serf writes the keyring file before it answers the key query (a write takes no
        # simulated time); the answer carries the write's error.
        error = keyring_write_error(self.keyring_writer, node.name, ev.keys)
        core = cast(KeyedCore, node.core)  # only a Serf core emits KeyringChanged
        self._apply(node, core.key_persisted(self.now, ev.token, error))

    def _back_from_dead(self, subject: str, observer: str) -> None:
        """``observer`` holds ``subject`` alive again: no longer dead, and back at ``now``
        if it had been dead."""
        seen = self._dead_seen.get(subject)
        if seen is not None and seen.pop(observer, None) is not None:
            self._back_seen.setdefault(subject, {})[observer] = self.now

    def _member_event(self, node: SimNode, ev: MemberEvent) -> None:
        m = ev.member
        if ev.kind is MemberEventKind.LEAVE and m.state is State.DEAD:
            self._dead_seen.setdefault(m.name, {})[node.name] = self.now
        elif ev.kind is MemberEventKind.JOIN:
            self._back_from_dead(m.name, node.name)
        if self.record_trace:
            self._record(
                node.name, f"{ev.kind.value} {m.name} {m.state.name.lower()} {m.incarnation}"
            )

    def _notice(self, node: SimNode, n: Notice) -> None:
        self.notices[n.event] += 1
        if n.event == "name_conflict_resolution" and n.fields.get("won") is False:
            # serf: the minority of a name conflict shuts down without leaving.
            self._stop(node, NodeStatus.SHUTDOWN)
        if n.event == "declared_dead":
            about = str(n.fields.get("node"))
            subject = self.nodes.get(about)
            false = subject is not None and subject.status.up
            stale = False
            inc = n.fields.get("incarnation")
            if false and subject is not None and isinstance(inc, int):
                own = subject.swim.member(subject.name)
                stale = own is not None and inc < own.incarnation
            self.dead_declarations.append(DeadDeclaration(self.now, node.name, about, false, stale))
        if self.record_trace:
            fields = " ".join(f"{k}={n.fields[k]}" for k in sorted(n.fields))
            self._record(node.name, f"notice {n.event} {fields}")

    def _record(self, node: str, summary: str) -> None:
        if self.record_trace:
            self.trace.append((self.now, node, summary))

    # -- streams ---------------------------------------------------------------------------

    def _open_stream(self, node: SimNode, op: OpenStream) -> None:
        now = self.now
        self._streams_opened += 1
        data = op.data if node.wire is None else node.wire.seal_stream(op.data)
        self._stream_bytes_sent += len(data)
        self._pending_streams[(node.index, op.stream_id)] = node.epoch
        self._push(
            now + op.timeout,
            _STREAM_DONE,
            node,
            node.epoch,
            op.stream_id,
            None,
            STREAM_TIMEOUT_ERROR,
        )
        target = self._by_addr.get(op.addr)
        if target is None:
            # Nobody listens there: the host answers the SYN with a reset.
            rtt = self.net.latency(node.addr, op.addr) + self.net.latency(op.addr, node.addr)
            self._push(
                now + rtt, _STREAM_DONE, node, node.epoch, op.stream_id, None, CONNECTION_REFUSED
            )
            return
        decision = self.net.stream_connect(now, node.addr, op.addr)
        if decision.fail_at is not None:
            self._push(
                decision.fail_at,
                _STREAM_DONE,
                node,
                node.epoch,
                op.stream_id,
                None,
                decision.error,
            )
        if decision.handle_at is not None:
            self._push(
                decision.handle_at,
                _STREAM_REQ,
                target,
                node,
                node.epoch,
                op.stream_id,
                data,
                op.expect_reply,
            )
            if not op.expect_reply and decision.connected_at is not None:
                # Nothing to read back: the exchange is over once the bytes are written.
                self._push(
                    decision.connected_at, _STREAM_DONE, node, node.epoch, op.stream_id, b"", ""
                )

    def _stream_request(
        self,
        target: SimNode,
        initiator: SimNode,
        epoch: int,
        stream_id: int,
        data: bytes,
        expect_reply: bool,
    ) -> None:
        now = self.now
        if not target.status.up:
            if expect_reply:
                back = self.net.stream_reply(now, target.addr, initiator.addr)
                if back is not None:
                    self._push(
                        back, _STREAM_DONE, initiator, epoch, stream_id, None, STREAM_RESET_ERROR
                    )
            return
        wire = target.wire
        if wire is None:
            reply, effects = target.core.handle_stream(now, data)
            self._apply(target, effects)
        else:
            request, reply = wire.open_request(data)
            if request is None:
                self._streams_refused += 1  # answered with the sealed err, or closed
            else:
                reply, effects = target.core.handle_stream(now, request)
                self._apply(target, effects)
                if reply is not None:
                    reply = wire.seal_stream(reply)
        if not expect_reply:
            return
        if reply is not None:
            self._stream_bytes_sent += len(reply)
        back = self.net.stream_reply(now, target.addr, initiator.addr)
        if back is None:
            return  # lost across a cut: the initiator's timeout fires
        if reply is None:
            self._push(back, _STREAM_DONE, initiator, epoch, stream_id, None, STREAM_EOF_ERROR)
        else:
            # A reply carries who sent it (for the "bad reply from" of one that does not open).
            self._push(back, _STREAM_DONE, initiator, epoch, stream_id, reply, "", target.addr)

    # -- queries ---------------------------------------------------------------------------

    def up_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.status.up]

    def view(self, name: str) -> dict[str, State]:
        """``name``'s current member table: {member name: state}."""
        return {m.name: m.state for m in self.nodes[name].swim.members()}

    def all_alive_converged(self) -> bool:
        """Every running node sees exactly the running nodes as alive."""
        up = [n for n in self.nodes.values() if n.status is NodeStatus.RUNNING]
        count = len(up)
        if any(n.swim.num_alive() != count for n in up):
            return False
        for n in up:
            core = n.swim
            for other in up:
                m = core.member(other.name)
                if m is None or m.state is not State.ALIVE:
                    return False
        return True

    def all_see(self, subject: str, states: Sequence[State]) -> bool:
        """Every up node other than ``subject`` has it in one of ``states`` (or forgot it)."""
        for n in self.nodes.values():
            if n.status.up and n.name != subject:
                m = n.swim.member(subject)
                if m is not None and m.state not in states:
                    return False
        return True

    def dead_seen_at(self, subject: str) -> float | None:
        """When the last up node (other than ``subject``) saw ``subject`` become DEAD.

        ``None`` if some up node has not seen it dead (or has seen it come back since).
        """
        seen = self._dead_seen.get(subject, {})
        latest = 0.0
        for n in self.nodes.values():
            if n.status.up and n.name != subject:
                t = seen.get(n.name)
                if t is None:
                    return None
                latest = max(latest, t)
        return latest

    def dead_seen_by(self, subject: str) -> dict[str, float]:
        """{observer: when it last saw ``subject`` become DEAD (Serf: member-failed)}, for
        observers that still hold it dead; a copy (per-observer detection times)."""
        return dict(self._dead_seen.get(subject, {}))

    def back_seen_by(self, subject: str) -> dict[str, float]:
        """{observer: when it last took ``subject`` back after holding it DEAD (Serf: a
        member-join after member-failed)}; a copy (per-observer times a partition healed)."""
        return dict(self._back_seen.get(subject, {}))

    def serf_view(self, name: str) -> dict[str, str]:
        """``name``'s Serf member table: {member name: status}."""
        return {m.name: m.status for m in self.serf_core(name).members()}

    def all_serf_alive_converged(self) -> bool:
        """Every running Serf node has every running node as an alive Serf member."""
        up = [n for n in self.nodes.values() if n.status is NodeStatus.RUNNING]
        for n in up:
            core = self.serf_core(n.name)
            for other in up:
                m = core.member(other.name)
                if m is None or m.status != "alive":
                    return False
        return True

    def serf_seen_at(self, subject: str, kind: str) -> float | None:
        """When the last up node (other than ``subject``) emitted ``kind`` about ``subject``,
        counting only each node's *latest* Serf event about it; ``None`` if some up node's
        latest event about ``subject`` is not ``kind`` (or it has none)."""
        seen = self._serf_seen.get(subject, {})
        latest = 0.0
        for n in self.nodes.values():
            if n.status.up and n.name != subject:
                got = seen.get(n.name)
                if got is None or got[0] != kind:
                    return None
                latest = max(latest, got[1])
        return latest

    def user_event_counts(self) -> Counter[tuple[str, str, int]]:
        """How often each node delivered each user event: {(node, name, ltime): count}."""
        return Counter((r.node, r.name, r.ltime) for r in self.user_events)

    def false_dead(self) -> list[DeadDeclaration]:
        """``declared_dead`` notices about nodes that were up at the time."""
        return [d for d in self.dead_declarations if d.false]

    def statistics(self) -> SimStats:
        return SimStats(
            events=self._events,
            packets_sent=self._packets_sent,
            packets_delivered=self._packets_delivered,
            packets_lost=self._packets_lost,
            streams_opened=self._streams_opened,
            streams_failed=self._streams_failed,
            ticks=self._ticks,
            stale_timer_entries=self._stale,
            push_pull_rounds=self._push_pulls,
            packets_refused=self._packets_refused,
            streams_refused=self._streams_refused,
            bytes_sent=self._bytes_sent,
            stream_bytes_sent=self._stream_bytes_sent,
        )

    def trace_digest(self) -> str:
        """A short fingerprint of the trace (for same-seed comparisons across processes)."""
        h = hashlib.sha256()
        for t, node, summary in self.trace:
            h.update(f"{t:.9f} {node} {summary}\n".encode())
        return h.hexdigest()
