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
  single ``(src, dst)`` pairs;
* encryption - ``add(..., envelope=...)`` gives a node a ``wire.crypto.Envelope``: the core
  gets it (its packet budget shrinks by the sealing overhead) and a ``WireSeal`` seals every
  datagram and stream message the node sends and opens what it receives, with the real
  transport's rules (see ``WireSeal``).  ``Pump.envelope(...)`` builds one whose nonces come
  from the seed.  ``SerfPump.key_operation`` runs a keyring operation through the cluster
  (Serf's KeyManager: a key query, its responses gathered into a ``KeyReport``); a
  ``KeyringChanged`` effect waiting for persistence is answered at once through
  ``SerfPump.keyring_writer``.  Nodes without an envelope exchange exactly the bytes their
  cores produce, as before.

Every effect lands in the node's ``Log``; effects the pump has no field for go to
``Log.other`` rather than vanishing.  Pure: no trio, no clock, randomness from ``seed``.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..serf.config import SerfConfig
from ..serf.effects import (
    KeyringChanged,
    QueryUpdate,
    SerfMemberEvent,
    SerfQueryEvent,
    SerfUserEvent,
)
from ..serf.internal import KeyReport, key_query, keyring_write_failed
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
from ..wire.codec import DecodeError
from ..wire.crypto import Algorithm, CryptoError, Envelope, Opened
from ..wire.keyring import Keyring
from ..wire.stream import first_stage_error

TEST_CONFIG = SwimConfig(enable_compression=False)
"""Default memberlist config of ``SwimPump`` (compression off: the pure-Python LZW is slow)."""
SWIM = TEST_CONFIG
"""Default memberlist config of ``SerfPump``: the same LAN timings, compression off."""
SERF = SerfConfig()
"""Default Serf config of ``SerfPump``."""

# Answers a query delivered at ``node``: the response payload, or None to stay silent.
QueryHandler = Callable[[str, SerfQueryEvent], bytes | None]


# Writes node ``name``'s changed keyring (primary first) somewhere durable and raises on
# failure: the driver's keyring persister, synchronous (in the pure kit a write takes no time).
KeyringWriter = Callable[[str, tuple[bytes, ...]], None]


def keyring_write_error(writer: KeyringWriter | None, name: str, keys: tuple[bytes, ...]) -> str:
    """Persist a ``KeyringChanged`` keyring with ``writer``: "" when written (or nothing to
    write with), else Serf's answer for a failed write (serf internal_query.go, as
    ``runtime.driver`` words it)."""
    if writer is None:
        return ""
    try:
        writer(name, keys)
    except Exception as exc:  # any failure to write is reported in the answer, never fatal
        return keyring_write_failed(exc)
    return ""


def seeded_envelope(
    rng: random.Random,
    keys: Sequence[bytes] | None,
    algorithm: Algorithm = Algorithm.SECRETBOX,
    *,
    verify_incoming: bool = True,
    verify_outgoing: bool = True,
) -> Envelope:
    """An ``Envelope`` over ``Keyring(keys)`` (``None`` or no keys: encryption off) whose
    nonces come from ``rng``, so a seeded run seals the same bytes every time."""
    return Envelope(
        Keyring(keys) if keys else None,
        algorithm,
        verify_incoming=verify_incoming,
        verify_outgoing=verify_outgoing,
        nonces=rng.randbytes,
    )


class WireSeal:
    """One node's ``Envelope`` as the pure drivers apply it, with the real transport's rules
    (``runtime.transport`` and ``runtime.crypto``):

    * every datagram the node sends is sealed; one it receives that does not open is dropped
      and counted by cause in ``dropped`` (the UDP reader's ``packets_dropped_bad``);
    * a stream request that does not open never reaches the core: a framing failure (every
      envelope refusal, a bad compress wrapper) is answered with memberlist's ``err`` message,
      sealed by this node (memberlist net.go handleConn answers first-stage read failures;
      rawSendMsgStream compresses per the local config, then encrypts), anything else closes
      the stream without a reply;
    * a stream reply that does not open fails the exchange (``request_stream``'s "bad reply");
    * ``opened`` counts what was opened by cipher (``plaintext``: it arrived unsealed),
      ``sent`` every datagram sent by cipher (``plaintext`` while not sealing), and
      ``largest_packet`` is the size of the largest datagram sent, sealed.
    """

    __slots__ = ("compress", "dropped", "envelope", "largest_packet", "opened", "sent")

    def __init__(self, envelope: Envelope, *, compress: bool) -> None:
        self.envelope = envelope
        self.compress = compress
        self.dropped: Counter[str] = Counter()
        self.opened: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.largest_packet = 0

    def seal_packet(self, data: bytes) -> bytes:
        env = self.envelope
        sealed = env.seal_packet(data)
        self.sent[env.algorithm.value if env.sealing else "plaintext"] += 1
        if len(sealed) > self.largest_packet:
            self.largest_packet = len(sealed)
        return sealed

    def open_packet(self, data: bytes) -> bytes | None:
        """The plaintext of a received datagram, or ``None``: dropped (and counted)."""
        try:
            opened = self.envelope.open_packet(data)
        except CryptoError as exc:
            self.dropped[exc.cause] += 1
            return None
        self._count(opened)
        return opened.data

    def seal_stream(self, data: bytes) -> bytes:
        return self.envelope.seal_stream(data)

    def open_request(self, data: bytes) -> tuple[bytes | None, bytes | None]:
        """An inbound stream's bytes -> ``(plaintext request, None)`` for the core, or
        ``(None, reply)`` when refused: the sealed ``err`` to send back, or ``None`` to close
        without one (``runtime.transport.stream_error_reply``)."""
        reader = self.envelope.stream_reader()
        try:
            request = reader.feed(data)
            if request is None:
                raise DecodeError("stream: connection closed mid-message")
        except DecodeError as exc:
            if isinstance(exc, CryptoError):
                self.dropped[exc.cause] += 1
            err = first_stage_error(exc, data[0] if data else None, compress=self.compress)
            return None, self.envelope.seal_stream(err) if err is not None else None
        if reader.opened is not None:
            self._count(reader.opened)
        return request, None

    def open_reply(self, data: bytes, peer: Address) -> tuple[bytes | None, str]:
        """A stream reply's bytes -> ``(plaintext, "")``, or ``(None, error)`` for the core's
        ``stream_result`` when it does not open (``runtime.transport.request_stream``)."""
        reader = self.envelope.stream_reader()
        try:
            reply = reader.feed(data)
        except DecodeError as exc:
            if isinstance(exc, CryptoError):
                self.dropped[exc.cause] += 1
            return None, f"bad reply from {peer}: {exc}"
        if reply is None:
            return None, f"bad reply from {peer}: stream: connection closed mid-message"
        if reader.opened is not None:
            self._count(reader.opened)
        return reply, ""

    def _count(self, opened: Opened) -> None:
        self.opened[opened.algorithm.value if opened.algorithm is not None else "plaintext"] += 1


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
    keyrings: list[KeyringChanged] = field(default_factory=list)
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
        self.sent: list[tuple[str, SendPacket]] = []  # as the cores emitted them (plaintext)
        self.notice_times: dict[str, list[tuple[float, Notice]]] = {}
        self.seals: dict[str, WireSeal] = {}  # nodes with an envelope
        self.wire: list[tuple[str, bytes]] = []  # their datagrams as sent (sealed)
        self._nonces = random.Random(f"nonces/{seed}")  # apart from ``rng``: no stagger moves
        self._q: deque[tuple[str, object]] = deque()

    # -- nodes ----------------------------------------------------------------------------

    def _core_rng(self) -> random.Random:
        return random.Random(self.rng.random())

    def envelope(
        self,
        keys: Sequence[bytes] | None,
        algorithm: Algorithm = Algorithm.SECRETBOX,
        **switches: bool,
    ) -> Envelope:
        """An envelope for ``add(..., envelope=)`` over ``keys`` (None: encryption off) with
        nonces from the pump's seed.
        ``switches``: ``verify_incoming`` / ``verify_outgoing``."""
        return seeded_envelope(self._nonces, keys, algorithm, **switches)

    def _register(self, core: CoreT, config: SwimConfig, envelope: Envelope | None) -> CoreT:
        """Book a freshly built core in and stagger its first rounds (seeded)."""
        name = core.name
        self.nodes[core.addr] = core
        self.by_name[name] = core
        self.logs[name] = Log()
        self.notice_times[name] = []
        self.down.discard(name)
        if envelope is not None:
            self.seals[name] = WireSeal(envelope, compress=config.enable_compression)
        else:
            self.seals.pop(name, None)
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
        data = e.data
        seal = self.seals.get(name)
        if seal is not None:
            data = seal.seal_packet(data)
            self.wire.append((name, data))
        dst = self.nodes.get(e.addr)
        if dst is None or dst.name in self.down or dst.name in self.udp_blackhole:
            return
        if name in self.down or (name, dst.name) in self.udp_cut:
            return
        opener = self.seals.get(dst.name)
        if opener is not None:
            opened = opener.open_packet(data)
            if opened is None:
                return  # the transport drops what its envelope refuses
            data = opened
        src = self.by_name[name].addr
        for out in dst.handle_packet(self.now, src, data):
            self._q.append((dst.name, out))

    def _stream(self, name: str, e: OpenStream) -> None:
        me = self.by_name[name]
        dst = self.nodes.get(e.addr)
        if dst is None or dst.name in self.down or name in self.down:
            res = me.stream_result(self.now, e.stream_id, None, "connection refused")
        else:
            seal = self.seals.get(name)
            reply = self._serve_stream(dst, e.data if seal is None else seal.seal_stream(e.data))
            if e.expect_reply and reply is None:
                res = me.stream_result(self.now, e.stream_id, None, "EOF")
            elif seal is None:
                res = me.stream_result(self.now, e.stream_id, reply or b"")
            elif not e.expect_reply:
                res = me.stream_result(self.now, e.stream_id, b"")  # nothing is read back
            else:
                opened, error = seal.open_reply(reply or b"", e.addr)
                res = me.stream_result(self.now, e.stream_id, opened, error)
        for out in res:
            self._q.append((name, out))

    def _serve_stream(self, dst: CoreT, data: bytes) -> bytes | None:
        """``dst`` handles one inbound stream's bytes: its reply as written (sealed by its
        envelope, if any), or ``None`` when it closes without one."""
        opener = self.seals.get(dst.name)
        if opener is not None:
            request, refusal = opener.open_request(data)
            if request is None:
                return refusal
            data = request
        reply, effs = dst.handle_stream(self.now, data)
        for out in effs:
            self._q.append((dst.name, out))
        if reply is not None and opener is not None:
            reply = opener.seal_stream(reply)
        return reply

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
        elif isinstance(e, KeyringChanged):
            log.keyrings.append(e)
            self._on_keyring(name, e)
        else:
            log.other.append(e)

    def _on_query(self, name: str, e: SerfQueryEvent) -> None:
        """Hook: a query was delivered at ``name`` (``SerfPump`` may answer it)."""

    def _on_keyring(self, name: str, e: KeyringChanged) -> None:
        """Hook: a key query changed ``name``'s keyring (``SerfPump`` persists it)."""

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
        envelope: Envelope | None = None,
        **kw: Any,
    ) -> Memberlist:
        """A memberlist core; with ``envelope`` its traffic is sealed and its packet budget
        shrinks by the sealing overhead (memberlist encryptOverhead)."""
        addr = Address("127.0.0.1", 7000 + len(self.nodes))
        node = Memberlist(
            config or self.config,
            name,
            addr,
            rng=self._core_rng(),
            now=self.now,
            delegate=delegate if delegate is not None else NullDelegate(),
            sealer=envelope,
            **kw,
        )
        return self._register(node, node.config, envelope)

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
    may answer with bytes or stay silent with None.  A node added with
    ``persist_keyring=True`` answers key queries that changed its keyring only once
    ``keyring_writer(node, keys)`` has returned (or failed: Serf's "Failed to write keyring
    file" answer); without a writer the write always succeeds.
    """

    def __init__(self, seed: int = 1, swim: SwimConfig = SWIM, serf: SerfConfig = SERF) -> None:
        super().__init__(seed)
        self.swim = swim
        self.serf = serf
        self.auto_respond: dict[str, bytes] = {}
        self.query_handler: QueryHandler | None = None
        self.keyring_writer: KeyringWriter | None = None
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
        envelope: Envelope | None = None,
        **kw: Any,
    ) -> SerfNode:
        """A Serf core; with ``envelope`` its traffic is sealed and it answers key queries
        from the envelope's keyring."""
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
            envelope=envelope,
            **kw,
        )
        return self._register(node, node.swim_config, envelope)

    def _on_query(self, name: str, e: SerfQueryEvent) -> None:
        if name in self.down:
            return
        payload = self.auto_respond.get(name)
        if payload is None and self.query_handler is not None:
            payload = self.query_handler(name, e)
        if payload is not None:
            for out in self.by_name[name].respond(self.now, e.token, payload):
                self._q.append((name, out))

    def _on_keyring(self, name: str, e: KeyringChanged) -> None:
        if e.token is None or name in self.down:
            return
        error = keyring_write_error(self.keyring_writer, name, e.keys)
        for out in self.by_name[name].key_persisted(self.now, e.token, error):
            self._q.append((name, out))

    def join(self, name: str, *seeds: str, replay: bool = False) -> int:
        node = self.by_name[name]
        rid, effs = node.join(self.now, [self.by_name[s].addr for s in seeds], replay=replay)
        self.feed(name, effs)
        return rid

    def key_operation(
        self, name: str, op: str, key: bytes = b"", *, step: float = 0.05
    ) -> KeyReport:
        """``name`` runs one keyring operation (install | use | remove | list) through the
        cluster as Serf's KeyManager does: the key query with default parameters, responses
        gathered into a ``KeyReport`` over memberlist's NumMembers at the start, until every
        node answered or the query's deadline passed.  Time advances by ``step``."""
        node = self.by_name[name]
        updates = self.logs[name].updates
        seen = len(updates)
        qid, effs = node.query(self.now, key_query(op, key))
        report = KeyReport(num_nodes=node.num_alive())
        self.feed(name, effs)
        while True:
            for up in updates[seen:]:
                if up.query_id != qid:
                    continue
                if up.record_type == "done":
                    return report
                if up.record_type == "response":
                    report.add(up.from_, up.payload)
                    if report.complete:
                        return report  # serf streamKeyResp: done once every node answered
            seen = len(updates)
            if name in self.down:
                return report  # stopped: its collector will never close
            self.run_for(step)

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
    "KeyringWriter",
    "Log",
    "Pump",
    "PumpCore",
    "QueryHandler",
    "SerfPump",
    "SwimPump",
    "WireSeal",
    "keyring_write_error",
    "seeded_envelope",
]
