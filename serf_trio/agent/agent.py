"""The agent process: one Serf node, its event pipeline, handlers, snapshot, the RPC server,
signals and sd_notify in one nursery.

``Agent`` implements ``serf_trio.rpc.api.AgentAPI`` over a ``MembershipNode`` driving the Serf
core (``SerfConfig`` from the agent config).  Rules it owns:

* **Event pipeline** (``_pump_events``, one task): every Serf event from the node goes first to
  the snapshot writer (raw, as Serf's snapshotter sees it), then through ``EventCoalescer``
  (member events always 3 s / 1 s, user events only when sent with coalesce, as the Serf
  agent configures it; queries pass at once), then to the handler supervisor and to every RPC
  ``stream`` subscriber whose filter matches.  Nothing in it waits on a consumer: the
  supervisor's ``enqueue`` and the subscribers' channels (512 each) drop when full.
* **Queries**: a handler's output (first non-empty exit-0 run wins) answers through
  ``SerfNode.respond``; RPC streams receive query records with a token for ``respond``.
* **Snapshots** (``snapshot_path``): read before the node exists, so the restored clocks are in
  the core before any socket reads a packet; previously alive members are rejoined in the
  background without an explicit join (one at a time, random order); records are appended by
  ``snapshot_writer.SnapshotWriter`` off the event loop.

* **Lifecycle**: bind the node, start RPC listeners, do the start join (a failed start join is
  fatal, as in Serf), then ``READY=1``; ``retry_join`` keeps trying in the background
  (``retry_interval``, at most ``retry_max`` attempts, 0 = forever).
* **Signals**: SIGINT leaves gracefully (unless ``skip_leave_on_interrupt``), SIGTERM leaves only
  with ``leave_on_terminate``; both then exit 0.  A second SIGINT/SIGTERM during the leave stops
  at once.  SIGHUP re-reads the same config sources and applies log level, event handlers and
  tags without leaving (``RELOADING=1`` ... ``READY=1``); other changed keys are logged as
  needing a restart.  A bad reload is logged and the running config kept.
* **Files**: the tags file is read at start and rewritten atomically (temp, fsync, rename) off
  the event loop whenever RPC ``tags`` changes the tags.
* **Encryption**: one ``wire.crypto.Envelope`` (keyring, cipher, verify switches) is shared by
  the transport (which seals and opens through ``runtime.crypto.EnvelopeCrypto``) and the Serf
  core (which answers key queries from it and sizes packets by its overhead).  With a
  ``keyring_file`` every keyring change is written to it atomically (mode 0600) before the
  node answers the key query that made it, as Serf does.  Key RPCs run Serf's internal key
  queries through the cluster and report what the members answered.  SIGHUP applies
  ``encrypt_algorithm``, ``encrypt_verify_incoming``/``_outgoing`` and turns encryption on or
  off (the live keyring stays authoritative while it is on): the plaintext -> encrypted
  procedure needs no restart.
* **Bad input never kills the agent**: RPC methods raise ``AgentError`` with Serf's wording.
  Losing a name-conflict resolution stops the node without a leave (Serf) and the agent
  exits 1.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import structlog
import trio

from serf_trio.rpc.api import (
    AgentError,
    EventRecord,
    KeyResponse,
    MemberEventRecord,
    QueryEventRecord,
    QueryParams,
    QueryRecord,
    RpcMember,
    UserEventRecord,
)
from serf_trio.rpc.paths import default_socket_path
from serf_trio.rpc.server import RpcServer
from serf_trio.runtime.crypto import EnvelopeCrypto
from serf_trio.runtime.driver import JoinError, NotRunningError
from serf_trio.runtime.handlers import HandlerSupervisor, ResponseRejected, SupervisorConfig
from serf_trio.runtime.logs import LogSettings, UnknownLevel, monitor_level
from serf_trio.runtime.serf_runtime import QueryStream, SerfRuntime
from serf_trio.runtime.transport import UdpTcpTransport
from serf_trio.serf.coalesce import CoalesceConfig, EventCoalescer
from serf_trio.serf.coordinate import Coordinate
from serf_trio.serf.effects import SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from serf_trio.serf.filters import EventFilter, InvalidEventFilter, parse_filter
from serf_trio.serf.handler_env import max_response_payload
from serf_trio.serf.members import SerfMember
from serf_trio.serf.messages import NodeFilter, Query, TagFilter, encode, encode_filter
from serf_trio.serf.node import SerfError
from serf_trio.serf.query import default_query_timeout
from serf_trio.serf.tags import TagsTooLarge, decode_tags, encode_tags
from serf_trio.swim.api import Address, MemberInfo, State
from serf_trio.wire.crypto import Algorithm, Envelope, check_primary
from serf_trio.wire.keyring import Keyring, KeyringError, decode_key, encode_key

from .config import (
    AgentConfig,
    ConfigError,
    LoadedConfig,
    load,
    parse_join_address,
)
from .files import read_tags_file, write_json_atomically
from .notify import Notifier, watchdog_loop
from .snapshot_writer import SnapshotWriter, load_snapshot

T = TypeVar("T")

EVENT_BUFFER = 512  # per ``stream`` subscriber (RPC.md 4.1), lossy
SHUTDOWN_GRACE = 0.1  # lets an in-flight RPC reply (``leave``) reach its client
SNAPSHOT_CLOCK_INTERVAL = 0.5  # serf snapshotter: the member clock is recorded every 500 ms
SERF_PREFIX = "_serf_"
NS = 1_000_000_000
_RELOADABLE = (
    "log_level",
    "event_handlers",
    "tags",
    "encrypt_key",
    "keyring_file",
    "encrypt_algorithm",
    "encrypt_verify_incoming",
    "encrypt_verify_outgoing",
)
_KEY_OPS = ("install", "use", "remove", "list")


def rpc_member(m: MemberInfo) -> RpcMember:
    """A ``MemberInfo`` as RPC clients see it (versions from memberlist's vsn bytes)."""
    v = m.vsn if len(m.vsn) >= 6 else bytes([1, 5, 2, 2, 5, 5])
    return RpcMember(
        name=m.name,
        addr=m.addr.packed(),
        port=m.addr.port,
        tags=decode_tags(m.meta),
        status=m.state.serf_status,
        protocol_min=v[0],
        protocol_max=v[1],
        protocol_cur=v[2],
        delegate_min=v[3],
        delegate_max=v[4],
        delegate_cur=v[5],
    )


def rpc_serf_member(m: SerfMember) -> RpcMember:
    """A Serf member as RPC clients see it (status alive | leaving | left | failed)."""
    return RpcMember(
        name=m.name,
        addr=m.addr.packed(),
        port=m.addr.port,
        tags=dict(m.tags),
        status=m.status,
        protocol_min=m.protocol_min,
        protocol_max=m.protocol_max,
        protocol_cur=m.protocol_cur,
        delegate_min=m.delegate_min,
        delegate_max=m.delegate_max,
        delegate_cur=m.delegate_cur,
    )


def event_record(ev: object) -> EventRecord | None:
    """A Serf event as an RPC ``stream`` record (``None`` for anything else)."""
    if isinstance(ev, SerfMemberEvent):
        return MemberEventRecord(ev.kind, tuple(rpc_serf_member(m) for m in ev.members))
    if isinstance(ev, SerfUserEvent):
        return UserEventRecord(ev.name, ev.payload, ev.ltime, ev.coalesce)
    if isinstance(ev, SerfQueryEvent):
        return QueryEventRecord(ev.name, ev.payload, ev.ltime, ev.token)
    return None


def handler_stats(config: AgentConfig) -> dict[str, str]:
    """Serf's ``event_handlers`` stats section: ``"<event>:<name>": script``."""
    out: dict[str, str] = {}
    for h in config.event_handlers:
        for word in str(h.filter).split(","):
            event, _, name = word.strip().partition(":")
            out[f"{event}:{name}"] = h.command
    return out


class Subscription(AsyncIterator[T]):
    """An async iterator over a subscription channel; ``aclose`` (or garbage collection)
    ends the subscription so that the publisher stops feeding it."""

    def __init__(self, recv: trio.MemoryReceiveChannel[T], on_close: Callable[[], None]) -> None:
        self._recv = recv
        self._on_close = on_close

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._on_close()
        self._recv.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def __del__(self) -> None:
        self._recv.close()


class _QueryRecords(AsyncIterator[QueryRecord]):
    """``AgentAPI.query``'s iterator: starts the query at the first ``__anext__``, then yields
    acks, responses and exactly one ``done``."""

    def __init__(self, node: SerfRuntime, params: QueryParams) -> None:
        self._node = node
        self._params = params
        self._stream: QueryStream | None = None
        self._done = False

    def __aiter__(self) -> _QueryRecords:
        return self

    async def __anext__(self) -> QueryRecord:
        if self._done:
            raise StopAsyncIteration
        if self._stream is None:
            try:
                self._stream = await self._node.query(self._params)
            except (SerfError, NotRunningError) as exc:
                raise AgentError(str(exc)) from None
        upd = await self._stream.__anext__()
        if upd.record_type == "done":
            self._done = True
            return QueryRecord(type="done")
        payload = upd.payload if upd.record_type == "response" else None
        return QueryRecord(type=upd.record_type, from_=upd.from_, payload=payload)

    async def aclose(self) -> None:
        self._done = True
        if self._stream is not None:
            await self._stream.aclose()
        else:
            await trio.lowlevel.checkpoint()


class Agent:
    """A running agent (``AgentAPI``); construct, then ``await agent.run()`` for the exit code."""

    def __init__(
        self,
        loaded: LoadedConfig,
        argv: Sequence[str],
        *,
        settings: LogSettings,
        notifier: Notifier | None = None,
        logger: Any = None,
    ) -> None:
        self.config = loaded.config
        self._argv = list(argv)
        self.settings = settings
        self._log: Any = logger or structlog.get_logger().bind(node=self.config.node_name)
        self.notifier = notifier if notifier is not None else Notifier(logger=self._log)
        self._tags = dict(self.config.tags)
        cfg = self.config
        self.serf_config = cfg.serf_config()
        swim = cfg.swim_config()
        keys = loaded.keys
        self.envelope = Envelope(
            Keyring(keys) if keys else None,
            Algorithm(cfg.encrypt_algorithm),
            verify_incoming=cfg.encrypt_verify_incoming,
            verify_outgoing=cfg.encrypt_verify_outgoing,
        )
        self.crypto = EnvelopeCrypto(self.envelope, self._log)
        self.node = SerfRuntime(
            swim,
            cfg.node_name,
            UdpTcpTransport(
                cfg.bind, stream_timeout=swim.tcp_timeout, crypto=self.crypto, logger=self._log
            ),
            advertise=cfg.advertise,
            logger=self._log,
            serf=self.serf_config,
            tags=self._tags,
            envelope=self.envelope,
            persist_keyring=self._write_keyring,
        )
        self.supervisor = HandlerSupervisor(
            cfg.event_handlers,
            self_name=cfg.node_name,
            self_tags=self._tags,
            respond=self._handler_respond,
            config=SupervisorConfig(
                timeout=cfg.handler_timeout,
                kill_grace=cfg.handler_kill_grace,
                max_response=max_response_payload(cfg.query_response_size_limit, cfg.node_name),
            ),
            logger=self._log,
        )
        # The Serf agent's coalescing: member events always, user events when sent with CC.
        sc = self.serf_config
        self._coalescer = EventCoalescer(
            CoalesceConfig(
                sc.coalesce_period,
                sc.quiescent_period,
                sc.user_coalesce_period,
                sc.user_quiescent_period,
            )
        )
        self.snapshot: SnapshotWriter | None = None
        self._event_subs: list[tuple[EventFilter, trio.MemorySendChannel[EventRecord]]] = []
        self._stop = trio.Event()
        self._stop_leave = False
        self._stopping = False
        self._leave_scope: trio.CancelScope | None = None
        self._tags_lock = trio.Lock()
        self._rng = random.Random()
        self.exit_code = 0
        self.events_dropped = 0
        self.addr: Address | None = None

    # -- AgentAPI ---------------------------------------------------------------------------

    @property
    def node_name(self) -> str:
        return self.config.node_name

    @property
    def rpc_auth(self) -> str:
        return self.config.rpc_auth

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    def members(self) -> list[RpcMember]:
        return [rpc_serf_member(m) for m in self.node.serf_members()]

    async def join(self, addrs: list[str], replay: bool) -> int:
        seeds: list[Address] = []
        errors: list[str] = []
        for text in addrs:
            try:
                seeds.append(parse_join_address(text))
            except ValueError as exc:
                errors.append(f"{text}: {exc}")
        if not seeds:
            raise AgentError("; ".join(errors) or "no addresses to join")
        try:
            n = await self.node.join(seeds, replay=replay)
        except JoinError as exc:
            raise AgentError("; ".join([*errors, str(exc)])) from None
        except NotRunningError as exc:
            raise AgentError(str(exc)) from None
        self._log.info("join_requested", addrs=addrs, joined=n, replay=replay)
        return n

    async def leave(self) -> None:
        self._log.info("leave_requested", source="rpc")
        await self._graceful_leave()
        self._request_stop(leave=False, reason="rpc_leave")

    async def force_leave(self, node: str, prune: bool) -> None:
        try:
            await self.node.force_leave(node, prune)
        except (SerfError, NotRunningError) as exc:
            raise AgentError(str(exc)) from None
        self._log.info("force_leave", member=node, prune=prune)

    async def set_tags(self, tags: dict[str, str], delete: list[str]) -> None:
        gone = set(delete)
        async with self._tags_lock:
            new = {k: v for k, v in self._tags.items() if k not in gone}
            new.update(tags)
            await self._apply_tags(new, persist=True)

    async def user_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        try:
            await self.node.user_event(name, payload, coalesce)
        except (SerfError, NotRunningError) as exc:
            raise AgentError(str(exc)) from None
        self._log.debug("user_event_sent", name=name, size=len(payload), coalesce=coalesce)

    def query(self, params: QueryParams) -> AsyncIterator[QueryRecord]:
        self._check_query(params)
        return _QueryRecords(self.node, params)

    def _check_query(self, params: QueryParams) -> None:
        """Refuse what Serf refuses before the query starts (RPC.md 3, ``query``)."""
        if params.name.startswith(SERF_PREFIX) and not (
            params.name == "_serf_ping" and not params.payload
        ):
            raise AgentError("Queries cannot contain the '_serf_' prefix")
        serf = self.node.serf
        if serf is None or self.addr is None:
            raise AgentError("the node is not running")
        # The encoded size, as SerfNode.query will compute it (largest id: a safe estimate).
        filters = []
        if params.filter_nodes:
            filters.append(encode_filter(NodeFilter(tuple(params.filter_nodes))))
        filters.extend(encode_filter(TagFilter(t, e)) for t, e in params.filter_tags.items())
        timeout = params.timeout
        if timeout <= 0:
            swim = self.config.swim_config()
            timeout = default_query_timeout(
                swim.gossip_interval, self.serf_config.query_timeout_mult, serf.num_alive()
            )
        q = Query(
            ltime=serf.query_clock.time(),
            id=2**31 - 1,
            addr=self.addr.packed(),
            port=self.addr.port,
            source_node=self.node_name,
            filters=tuple(filters),
            flags=0,
            relay_factor=max(0, min(255, params.relay_factor)),
            timeout_ns=int(timeout * NS),
            name=params.name,
            payload=params.payload,
        )
        limit = self.serf_config.query_size_limit
        if len(encode(q)) > limit:
            raise AgentError(f"query exceeds limit of {limit} bytes")

    async def respond(self, token: int, payload: bytes) -> None:
        try:
            await self.node.respond(token, payload)
        except SerfError as exc:
            # Serf's wording for every query (RPC.md 3, ``respond``).
            raise AgentError(f"failed to respond to key query: {exc}") from None
        except NotRunningError as exc:
            raise AgentError(str(exc)) from None

    async def _handler_respond(self, token: object, payload: bytes) -> None:
        """The supervisor's callback: a query handler's output answers the query."""
        if not isinstance(token, int):
            raise ResponseRejected("not a query token")
        try:
            await self.node.respond(token, payload)
        except (SerfError, NotRunningError) as exc:
            raise ResponseRejected(str(exc)) from None

    def events(self, filter_spec: str) -> AsyncIterator[EventRecord]:
        try:
            filt = parse_filter(filter_spec)
        except InvalidEventFilter:
            raise AgentError("Invalid event filter") from None
        send, recv = trio.open_memory_channel[EventRecord](EVENT_BUFFER)
        # Subscribed now, not at the first ``__anext__``: events right after the RPC reply
        # must not be lost.  The pump drops subscribers whose receiver is gone.
        self._event_subs.append((filt, send))
        return Subscription(recv, send.close)

    def logs(self, level: str) -> AsyncIterator[str]:
        try:
            number = monitor_level(level)
        except UnknownLevel as exc:
            raise AgentError(str(exc)) from None
        recv, close = self.settings.hub.open(number)
        return Subscription(recv, close)

    def stats(self) -> dict[str, dict[str, str]]:
        st = self.node.statistics()
        core, serf = st.core, self.node.serf_statistics()
        serf_section = {
            "members": str(serf.members if serf else 0),
            "failed": str(serf.failed if serf else 0),
            "left": str(serf.left if serf else 0),
            "health_score": str(core.health_score if core else 0),
            "member_time": str(serf.member_time if serf else 0),
            "event_time": str(serf.event_time if serf else 0),
            "query_time": str(serf.query_time if serf else 0),
            "intent_queue": str(serf.intent_queue if serf else 0),
            "event_queue": str(serf.event_queue if serf else 0),
            "query_queue": str(serf.query_queue if serf else 0),
            "encrypted": str(self.envelope.enabled).lower(),
            "coordinate_resets": str(serf.coordinate_resets if serf else 0),
        }
        return {
            "agent": {"name": self.node_name},
            "runtime": {
                "os": sys.platform,
                "arch": platform.machine(),
                "version": platform.python_version(),
                "cpu_count": str(os.cpu_count() or 1),
                "max_procs": str(os.cpu_count() or 1),
            },
            "serf": serf_section,
            "tags": dict(self._tags),
            "event_handlers": handler_stats(self.config),
            "encryption": self.crypto.stats(),
        }

    def get_coordinate(self, node: str) -> Coordinate | None:
        return self.node.get_coordinate(node)

    async def key_operation(self, op: str, key: str) -> KeyResponse:
        """Serf's KeyManager: an internal key query through the cluster, every member answering
        from its own keyring; the report counts what they said."""
        if op not in _KEY_OPS:
            raise AgentError(f"unknown key operation {op!r}")
        raw = b""
        if op != "list":
            try:
                raw = decode_key(key)
            except ValueError as exc:
                raise AgentError(str(exc)) from None
        try:
            report = await self.node.key_operation(op, raw)
        except (SerfError, NotRunningError) as exc:
            raise AgentError(str(exc)) from None
        self._log.info(
            "key_operation",
            op=op,
            nodes=report.num_nodes,
            responses=report.num_resp,
            errors=report.num_err,
        )
        return KeyResponse(
            keys=dict(report.keys) if op == "list" else None,
            messages=dict(report.messages),
            num_nodes=report.num_nodes,
            num_resp=report.num_resp,
            num_err=report.num_err,
            error=report.error,
        )

    async def _write_keyring(self, keys: tuple[bytes, ...]) -> None:
        """Rewrite the keyring file, if one is configured (Serf's format: a JSON list of base64
        keys, primary first), atomically with mode 0600, off the event loop."""
        path = self.config.keyring_file
        if path is not None:
            doc = [encode_key(k) for k in keys]
            await trio.to_thread.run_sync(write_json_atomically, path, doc)

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> int:
        """Run until a leave or signal; returns the process exit code."""
        cfg = self.config
        if cfg.tags_file is not None:
            try:
                self._tags = await trio.to_thread.run_sync(read_tags_file, cfg.tags_file)
                encode_tags(self._tags)
            except (ConfigError, TagsTooLarge) as exc:
                self._log.error("config_invalid", error=str(exc))
                return 1
            self.node.initial_tags = dict(self._tags)
            self.supervisor.set_self_tags(self._tags)
        rejoin: dict[str, str] = {}
        if cfg.snapshot_path is not None:
            # Before the node exists: the core starts from the saved clocks (no old event
            # can be delivered again) and no socket is open yet.
            state = await load_snapshot(cfg.snapshot_path, self._log)
            self.node.restored = state
            rejoin = state.rejoin_targets(cfg.rejoin_after_leave)
            rejoin.pop(cfg.node_name, None)
            self.snapshot = SnapshotWriter(
                cfg.snapshot_path,
                state,
                rejoin_after_leave=cfg.rejoin_after_leave,
                log=self._log,
            )
        sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        with trio.open_signal_receiver(*sigs) as signals:
            async with trio.open_nursery() as nursery:
                if self.snapshot is not None:
                    await nursery.start(self.snapshot.run)
                    nursery.start_soon(self._snapshot_clock, self.snapshot)
                await nursery.start(self.supervisor.run)
                self.addr = await nursery.start(self._run_node)
                nursery.start_soon(self._pump_events)
                nursery.start_soon(self._handle_signals, signals)
                await self._start_rpc(nursery)
                if rejoin:
                    nursery.start_soon(self._rejoin, rejoin)
                if cfg.start_join:
                    try:
                        n = await self.node.join(
                            cfg.join_addresses(cfg.start_join), replay=cfg.replay_on_join
                        )
                        self._log.info("start_join_done", joined=n)
                    except JoinError as exc:
                        # Serf: a failed start join stops the agent with an error.
                        self._log.error("start_join_failed", errors=list(exc.errors))
                        self.notifier.stopping(status="start join failed")
                        nursery.cancel_scope.cancel()
                        return 1
                if cfg.retry_join:
                    nursery.start_soon(self._retry_join)
                self._log.info(
                    "agent_ready", addr=str(self.addr), profile=cfg.profile, tags=self._tags
                )
                self.notifier.ready(status=self._status())
                nursery.start_soon(self._watchdog)
                task_status.started(self.addr)
                await self._stop.wait()
                if self._stop_leave:
                    await self._graceful_leave()
                # Let in-flight RPC replies (e.g. to ``leave``) reach their clients.
                await trio.sleep(SHUTDOWN_GRACE)
                nursery.cancel_scope.cancel()
        self._log.info("agent_stopped", exit_code=self.exit_code)
        return self.exit_code

    async def _run_node(self, *, task_status: trio.TaskStatus[Address]) -> None:
        await self.node.run(task_status=task_status)
        # run() returned by itself: the core stopped the node (lost a name conflict).
        if not self._stopping:
            self._log.error("node_stopped_unexpectedly", reason=self.node.stopped_by_core)
            self.exit_code = 1
            self._request_stop(leave=False, reason=self.node.stopped_by_core or "node_stopped")

    def _request_stop(self, *, leave: bool, reason: str) -> None:
        if self._stop.is_set():
            return
        self._stop_leave = leave
        self._log.info("agent_stopping", reason=reason, leave=leave)
        self.notifier.stopping(status=f"stopping ({reason})")
        self._stopping = True
        self._stop.set()

    async def _graceful_leave(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.notifier.stopping(status="leaving")
        if self.snapshot is not None:
            self.snapshot.leave()
        timeout = self.config.broadcast_timeout
        sc = self.serf_config
        with trio.CancelScope() as scope:
            self._leave_scope = scope
            # Leave intent (<= broadcast_timeout), memberlist leave (<= timeout), then
            # leave_propagate_delay; one more second of slack.
            limit = sc.broadcast_timeout + timeout + sc.leave_propagate_delay + 1.0
            scope.deadline = trio.current_time() + limit
            try:
                timed_out = await self.node.leave(timeout)
                self._log.info("left", timed_out=timed_out)
            except NotRunningError:
                pass
        if scope.cancelled_caught:
            self._log.warning("leave_aborted")

    async def _start_rpc(self, nursery: trio.Nursery) -> None:
        """Start the RPC server (Unix socket, and TCP only when ``rpc_addr`` is set)."""
        cfg = self.config
        path = str(cfg.rpc_socket) if cfg.rpc_socket is not None else default_socket_path()
        tcp = (cfg.rpc_addr.host, cfg.rpc_addr.port) if cfg.rpc_addr is not None else None
        server = RpcServer(self, socket_path=path, tcp_addr=tcp, logger=self._log)
        await nursery.start(server.serve)

    async def _handle_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            self._log.info("signal_received", signal=name)
            if signum == signal.SIGHUP:
                await self.reload()
            elif self._stop.is_set() or self._stopping:
                # A second stop signal: give up on the leave and exit now.
                if self._leave_scope is not None:
                    self._leave_scope.cancel()
                self._stop_leave = False
                self._stop.set()
            elif signum == signal.SIGINT:
                self._request_stop(leave=not self.config.skip_leave_on_interrupt, reason=name)
            else:
                self._request_stop(leave=self.config.leave_on_terminate, reason=name)

    async def reload(self) -> None:
        """SIGHUP: re-read config; apply log level, handlers and tags without leaving."""
        self.notifier.reloading()
        try:
            loaded = await trio.to_thread.run_sync(load, self._argv)
            new = loaded.config
            tags = new.tags
            if new.tags_file is not None:
                tags = await trio.to_thread.run_sync(read_tags_file, new.tags_file)
        except ConfigError as exc:
            self._log.error("reload_failed", error=str(exc))
            self.notifier.ready(status=self._status())
            return
        old = self.config
        changed: list[str] = []
        if new.log_level != old.log_level:
            self.settings.level = new.log_level
            changed.append("log_level")
        if new.event_handlers != old.event_handlers:
            # Unchanged handlers keep their queues; removed ones finish what they have.
            self.supervisor.update(new.event_handlers)
            changed.append("event_handlers")
        if tags != self._tags:
            try:
                async with self._tags_lock:
                    await self._apply_tags(dict(tags), persist=False)
                changed.append("tags")
            except AgentError as exc:
                self._log.error("reload_failed", error=str(exc))
        try:
            changed.extend(self._reload_encryption(new, loaded.keys))
        except KeyringError as exc:
            self._log.error("reload_failed", error=str(exc))
        needs_restart = [
            f.name
            for f in dataclasses.fields(AgentConfig)
            if f.name not in _RELOADABLE and getattr(new, f.name) != getattr(old, f.name)
        ]
        env = self.envelope
        self.config = dataclasses.replace(
            old,
            log_level=new.log_level,
            event_handlers=new.event_handlers,
            tags=dict(tags),
            encrypt_key=new.encrypt_key,
            keyring_file=new.keyring_file,
            encrypt_algorithm=env.algorithm.value,
            encrypt_verify_incoming=env.verify_incoming,
            encrypt_verify_outgoing=env.verify_outgoing,
        )
        self._log.info(
            "config_reloaded",
            changed=changed,
            log_level=new.log_level,
            event_handlers=[h.text for h in new.event_handlers],
        )
        if needs_restart:
            self._log.warning("reload_needs_restart", keys=needs_restart)
        self.notifier.ready(status=self._status())

    def _reload_encryption(self, new: AgentConfig, keys: tuple[bytes, ...] | None) -> list[str]:
        """Apply the reloadable encryption settings; the names of those that changed.

        Turning encryption on takes the configured keys; while it is on, the live keyring
        (rotated by key queries, written to the keyring file) stays authoritative, and a
        configured key it lacks is logged as ignored (``reload_keys_ignored``).  Each switch
        changes only what this node accepts or sends from the next packet on, which is what
        makes the plaintext -> encrypted procedure safe one node at a time (README).
        ``KeyringError`` (nothing changed) when the new cipher cannot send with the primary.
        """
        env = self.envelope
        algorithm = Algorithm(new.encrypt_algorithm)
        keyring = env.keyring
        if keyring is None and keys:
            keyring = Keyring(keys)
        elif not keys:
            keyring = None
        if keyring is not None:
            check_primary(algorithm, keyring.primary)
        changed: list[str] = []
        old = self.config
        if (
            keyring is not None
            and keyring is env.keyring
            and keys
            and (new.encrypt_key, new.keyring_file) != (old.encrypt_key, old.keyring_file)
            and not set(keys) <= set(keyring.keys)
        ):
            # A changed encrypt_key (or keyring file) does not replace the live keyring: say so
            # rather than leave the operator believing the new key is in use.
            self._log.warning(
                "reload_keys_ignored",
                keys=len(keyring),
                hint="while encryption is on the live keyring stays authoritative; rotate it "
                "with `serf-trio keys --install/--use/--remove` (or restart the agent)",
            )
        if (keyring is None) != (env.keyring is None):
            changed.append("encryption_on" if keyring is not None else "encryption_off")
            if keyring is not None and new.encrypt_verify_incoming:
                self._log.warning(
                    "encryption_enabled_verifying",
                    hint="plaintext peers are refused from now on; to move a live cluster, "
                    "turn the key on with encrypt_verify_incoming/outgoing = false first",
                )
        if algorithm is not env.algorithm:
            changed.append("encrypt_algorithm")
        if new.encrypt_verify_incoming != env.verify_incoming:
            changed.append("encrypt_verify_incoming")
        if new.encrypt_verify_outgoing != env.verify_outgoing:
            changed.append("encrypt_verify_outgoing")
        env.keyring = keyring
        env.algorithm = algorithm
        env.verify_incoming = new.encrypt_verify_incoming
        env.verify_outgoing = new.encrypt_verify_outgoing
        return changed

    async def _apply_tags(self, new: dict[str, str], *, persist: bool) -> None:
        try:
            encode_tags(new)
            await self.node.set_tags(new)
        except (TagsTooLarge, SerfError, NotRunningError) as exc:
            raise AgentError(str(exc)) from None
        old, self._tags = self._tags, new
        self.supervisor.set_self_tags(new)
        self._log.info("tags_updated", tags=new, previous=old)
        path = self.config.tags_file
        if persist and path is not None:
            try:
                await trio.to_thread.run_sync(write_json_atomically, path, new)
            except OSError as exc:
                self._log.error("tags_file_write_failed", path=str(path), error=str(exc))
                raise AgentError(f"failed to write tags file: {exc}") from None

    async def _retry_join(self) -> None:
        cfg = self.config
        seeds = cfg.join_addresses(cfg.retry_join)
        attempt = 0
        while True:
            attempt += 1
            try:
                n = await self.node.join(seeds, replay=cfg.replay_on_join)
                self._log.info("retry_join_done", joined=n, attempt=attempt)
                return
            except JoinError as exc:
                self._log.warning("retry_join_failed", attempt=attempt, errors=list(exc.errors))
            if cfg.retry_max and attempt >= cfg.retry_max:
                # Serf exits when retry_join gives up.
                self._log.error("retry_join_gave_up", attempts=attempt)
                self.exit_code = 1
                self._request_stop(leave=False, reason="retry_join_gave_up")
                return
            await trio.sleep(cfg.retry_interval)

    async def _rejoin(self, targets: dict[str, str]) -> None:
        """Snapshot restart: rejoin the members last seen alive, one at a time in random order
        (serf handleRejoin), without the user events the cluster already has."""
        items = list(targets.items())
        self._rng.shuffle(items)
        for name, text in items:
            try:
                addr = parse_join_address(text)
            except ValueError:
                self._log.warning("snapshot_rejoin_skipped", member=name, addr=text)
                continue
            try:
                await self.node.join([addr], replay=False)
            except JoinError as exc:
                self._log.debug("snapshot_rejoin_attempt_failed", member=name, errors=exc.errors)
                continue
            except NotRunningError:
                return
            self._log.info("snapshot_rejoined", member=name, addr=text)
            return
        self._log.warning("snapshot_rejoin_failed", tried=len(items))

    async def _snapshot_clock(self, writer: SnapshotWriter) -> None:
        """Record the member clock every 500 ms (it also moves with intents, not only events)."""
        while True:
            await trio.sleep(SNAPSHOT_CLOCK_INTERVAL)
            serf = self.node.serf
            if serf is not None:
                writer.clock(serf.clock.time())

    async def _pump_events(self) -> None:
        """The event pipeline (module docstring): snapshot, coalescer, handlers, streams.

        Waits on the node's events with the coalescer's next deadline as its timeout, so a
        quiet window is flushed on time.  Never waits on a consumer.
        """
        events = self.node.events
        coalescer = self._coalescer
        while True:
            deadline = coalescer.next_deadline()
            ev: object = None
            ended = False
            with trio.move_on_at(math.inf if deadline is None else deadline):
                try:
                    ev = await events.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    ended = True
            now = trio.current_time()
            ready = coalescer.flush(now)
            if isinstance(ev, SerfMemberEvent | SerfUserEvent | SerfQueryEvent):
                if self.snapshot is not None:
                    self.snapshot.record(ev)
                    serf = self.node.serf
                    if isinstance(ev, SerfMemberEvent) and serf is not None:
                        self.snapshot.clock(serf.clock.time())
                ready.extend(coalescer.add(now, ev))
            if ended:
                ready.extend(coalescer.drain())
            for item in ready:
                self._deliver(item)
            if ended:
                return

    def _deliver(self, ev: object) -> None:
        """One (coalesced) event to the handlers and the matching RPC streams; never waits."""
        self.supervisor.enqueue(ev)
        if not self._event_subs:
            return  # no RPC stream: skip building the record
        rec = event_record(ev)
        if rec is None:
            return
        for sub in list(self._event_subs):
            filt, send = sub
            if not filt.match(ev):
                continue
            try:
                send.send_nowait(rec)
            except trio.WouldBlock:
                self.events_dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._event_subs.remove(sub)

    def _progress(self) -> tuple[int, ...]:
        core = self.node.statistics().core
        if core is None:
            return ()
        return (core.probes_sent, core.packets_in, core.packets_out)

    def _alone(self) -> bool:
        return not any(
            m.name != self.node_name and m.state in (State.ALIVE, State.SUSPECT)
            for m in self.node.members()
        )

    async def _watchdog(self) -> None:
        await watchdog_loop(self.notifier, self._progress, alone=self._alone, logger=self._log)

    def _status(self) -> str:
        alive = sum(1 for m in self.node.members() if m.state in (State.ALIVE, State.SUSPECT))
        return f"{alive} alive members, listening on {self.addr}"
