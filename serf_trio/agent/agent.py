"""The agent process: one ``serf_trio.Node`` and the agent's parts in one nursery, and the
lifecycle that orders them.

The agent is a shell over the public library API.  The node is a ``serf_trio.Node`` (its Serf
knobs from the agent config); each other concern is a part in a module of its own:
``facade`` (``AgentAPI`` for the RPC server), ``pipeline`` (events to the snapshot, the handler
scripts and the RPC streams), ``joins`` (start join, retry join, snapshot rejoin), ``reload``
(SIGHUP), ``tags`` (the local tags and the tags file), ``records`` (RPC records),
``snapshot_writer``, ``notify`` (sd_notify, watchdog), ``services`` (the RPC listeners,
telemetry, ``/metrics``, mDNS), ``config`` and ``files``.

Rules this module owns:

* **Start-up order**: the tags file and the snapshot are read *before* the node exists, so the
  restored clocks are in the core before any socket reads a packet (no event at or below them
  is delivered again); the pipeline subscribes before the node runs.  Then: snapshot writer,
  handler supervisor, the node (bound), pipeline, signals, RPC listeners and the optional
  services (``services``), snapshot rejoin, the start join (a failed start join is fatal, as
  in Serf), ``READY=1``, retry join and watchdog.
* **Signals**: SIGINT leaves gracefully (unless ``skip_leave_on_interrupt``), SIGTERM leaves only
  with ``leave_on_terminate``; both then exit 0.  A second SIGINT/SIGTERM during the leave stops
  at once (``leave_aborted``, reason ``second signal``).  SIGHUP reloads (``reload``), between
  ``RELOADING=1`` and ``READY=1``.
* **Graceful leave** (signal or RPC ``leave``, at most once: a second request waits for the
  first's outcome): the snapshot's ``leave`` record, then ``Node.leave``: the leave intent (at
  most ``broadcast_timeout``), memberlist's leave (at most ``broadcast_timeout``) and
  ``leave_propagate_delay``, after which the node stops.  The RPC ``leave`` is answered once
  that is over (as Serf's is), with an error when the broadcast timed out or the leave was
  aborted; the agent stops either way.  Shutdown then waits ``SHUTDOWN_GRACE`` so that the
  reply reaches its client before the process exits.
* **Encryption**: one ``wire.crypto.Envelope``, the node's (keyring, cipher, verify switches),
  is shared by the transport (which seals and opens through ``runtime.crypto.EnvelopeCrypto``)
  and the Serf core (which answers key queries from it and sizes packets by its overhead);
  SIGHUP changes it in place.  With a ``keyring_file`` every keyring change is written to it
  atomically (mode 0600) before the node answers the key query that made it, as Serf does.
* **Exit code**: 0 after a leave or a stop signal; 1 for an unusable tags file, a failed start
  join, ``retry_join`` giving up, or losing a name-conflict resolution (the node stops without
  a leave, as in Serf).
* **One stats registry**: the parts register in ``node.registry`` (``handlers``, ``pipeline``,
  ``snapshot``, ``rpc``, and ``telemetry`` when it runs) beside the node's own sections; RPC
  ``stats`` and ``info`` read it, and ``telemetry`` sends it to statsd/statsite when configured.
* The agent uses only the public ``Node`` API (it never reaches into ``node.runtime``): what it
  needed beyond an application's needs (the Lamport clocks for the snapshot and the query size
  pre-check, coordinates, answering a query by token) is public API now.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import structlog
import trio

from serf_trio.api import JoinError, Node, NotRunningError
from serf_trio.record import record
from serf_trio.rpc.api import (
    AgentError,
    EventRecord,
    KeyResponse,
    QueryParams,
    QueryRecord,
    RpcMember,
)
from serf_trio.runtime.crypto import EnvelopeCrypto
from serf_trio.runtime.handlers import HandlerSupervisor
from serf_trio.runtime.logs import LogSettings
from serf_trio.serf.coordinate import Coordinate
from serf_trio.serf.node import RestoredState
from serf_trio.serf.tags import TagsTooLarge, encode_tags
from serf_trio.swim.api import Address
from serf_trio.wire.crypto import Envelope

from . import joins
from .addresses import gossip_addresses
from .config import ConfigError, LoadedConfig
from .facade import AgentFacade
from .files import read_tags_file, write_keyring_file
from .notify import Notifier, watchdog_loop
from .pipeline import EventPipeline, handler_totals, make_supervisor
from .records import rpc_member
from .reload import Reloader
from .services import OptionalServices, require_packages, start_rpc
from .tags import LocalTags

if TYPE_CHECKING:
    from .snapshot_writer import SnapshotWriter

__all__ = ["Agent", "rpc_member"]  # ``rpc_member``: kept importable from here

SHUTDOWN_GRACE = 0.1  # lets an in-flight RPC reply (``leave``) reach its client
_PROGRESS = ("probes_sent", "packets_in", "packets_out")  # the watchdog's counters


@record
class _Parts:
    """What exists once ``run`` has read the files: the node and the parts built on it."""

    node: Node
    supervisor: HandlerSupervisor
    tags: LocalTags
    pipeline: EventPipeline
    facade: AgentFacade
    reloader: Reloader


class Agent:
    """A running agent; construct, then ``await agent.run()`` for the exit code.  It is an
    ``AgentAPI`` (the calls go to its ``facade``) once ``run`` has started."""

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
        self._keys = loaded.keys or ()
        self._argv = list(argv)
        self.settings = settings
        self._log: Any = logger or structlog.get_logger().bind(node=self.config.node_name)
        self.notifier = notifier if notifier is not None else Notifier(logger=self._log)
        self.serf_config = self.config.serf_config()
        self.snapshot: SnapshotWriter | None = None
        self._parts: _Parts | None = None
        self.services = OptionalServices(self._log)  # telemetry, /metrics, mDNS
        self._stop = trio.Event()
        self._stop_leave = False
        self._stopping = False
        self._leave_scope: trio.CancelScope | None = None
        self._leave_done: trio.Event | None = None  # set once the graceful leave is over
        self._leave_error: str | None = None  # why it did not complete (None: it did)
        self._abort_reason: str | None = None  # why the leave was cancelled, if it was
        self._stop_signals = 0
        self._join_scope: trio.CancelScope | None = None
        self.exit_code = 0
        self.addr: Address | None = None

    # -- the parts ------------------------------------------------------------------------

    def _running(self) -> _Parts:
        if self._parts is None:
            raise AgentError("the agent is not running")
        return self._parts

    @property
    def node(self) -> Node:
        return self._running().node

    @property
    def facade(self) -> AgentFacade:
        return self._running().facade

    @property
    def supervisor(self) -> HandlerSupervisor:
        return self._running().supervisor

    @property
    def pipeline(self) -> EventPipeline:
        return self._running().pipeline

    @property
    def envelope(self) -> Envelope:
        return self.node.envelope

    @property
    def crypto(self) -> EnvelopeCrypto:
        return self.node.crypto

    @property
    def metrics_bound(self) -> tuple[str, int] | None:
        """Prometheus ``/metrics``' bound address, once serving (``services``)."""
        return self.services.metrics_bound

    @property
    def events_dropped(self) -> int:
        """RPC ``stream`` records dropped for slow subscribers."""
        return self.pipeline.stream_dropped

    # -- AgentAPI (each call goes to the facade) --------------------------------------------

    @property
    def node_name(self) -> str:
        return self.config.node_name

    @property
    def rpc_auth(self) -> str:
        return self.config.rpc_auth

    @property
    def tags(self) -> dict[str, str]:
        parts = self._parts
        return parts.tags.current if parts is not None else dict(self.config.tags)

    _tags = tags

    def members(self) -> list[RpcMember]:
        return self.facade.members()

    async def join(self, addrs: list[str], replay: bool) -> int:
        return await self.facade.join(addrs, replay)

    async def leave(self) -> None:
        await self.facade.leave()

    async def force_leave(self, node: str, prune: bool) -> None:
        await self.facade.force_leave(node, prune)

    async def set_tags(self, tags: dict[str, str], delete: list[str]) -> None:
        await self.facade.set_tags(tags, delete)

    async def user_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        await self.facade.user_event(name, payload, coalesce)

    def query(self, params: QueryParams) -> AsyncIterator[QueryRecord]:
        return self.facade.query(params)

    async def respond(self, token: int, payload: bytes) -> None:
        await self.facade.respond(token, payload)

    def events(self, filter_spec: str) -> AsyncIterator[EventRecord]:
        return self.facade.events(filter_spec)

    def logs(self, level: str) -> AsyncIterator[str]:
        return self.facade.logs(level)

    def stats(self) -> dict[str, dict[str, str]]:
        return self.facade.stats()

    def get_coordinate(self, node: str) -> Coordinate | None:
        return self.facade.get_coordinate(node)

    async def key_operation(self, op: str, key: str) -> KeyResponse:
        return await self.facade.key_operation(op, key)

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> int:
        """Run until a leave or signal; returns the process exit code."""
        cfg = self.config
        tags = dict(cfg.tags)
        if cfg.tags_file is not None:
            try:
                tags = await trio.to_thread.run_sync(read_tags_file, cfg.tags_file)
                encode_tags(tags)
            except (ConfigError, TagsTooLarge) as exc:
                self._log.error("config_invalid", error=str(exc))
                return 1
        try:
            # Host names and the interface, once (no socket is open yet).
            bind, advertise = await gossip_addresses(cfg, self._log)
            require_packages(cfg)  # looks for zeroconf / prometheus_client, imports neither
        except ConfigError as exc:
            self._log.error("config_invalid", error=str(exc))
            return 1
        restored: RestoredState | None = None
        rejoin: dict[str, str] = {}
        if cfg.snapshot_path is not None:
            # Before the node exists: the core starts from the saved clocks (no old event
            # can be delivered again) and no socket is open yet.
            from .snapshot_writer import SnapshotWriter, load_snapshot  # only with a snapshot

            state = restored = await load_snapshot(cfg.snapshot_path, self._log)
            rejoin = state.rejoin_targets(cfg.rejoin_after_leave)
            rejoin.pop(cfg.node_name, None)
            self.snapshot = SnapshotWriter(
                cfg.snapshot_path, state, rejoin_after_leave=cfg.rejoin_after_leave, log=self._log
            )
        parts = self._parts = self._build(tags, restored, bind, advertise)
        node = parts.node
        sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        with trio.open_signal_receiver(*sigs) as signals:
            async with trio.open_nursery() as nursery:
                if self.snapshot is not None:
                    await nursery.start(self.snapshot.run)
                await nursery.start(parts.supervisor.run)
                self.addr = await nursery.start(self._run_node, node)
                nursery.start_soon(parts.pipeline.run)
                nursery.start_soon(self._handle_signals, signals)
                await start_rpc(nursery, parts.facade, node, self.config, self._log)
                failed = await self.services.start(nursery, node, cfg, bind)
                if failed is not None:
                    self.notifier.stopping(status=failed)
                    nursery.cancel_scope.cancel()
                    return 1
                if rejoin:
                    nursery.start_soon(joins.rejoin, node, rejoin, self._log)
                if cfg.start_join and not await self._start_join(node):
                    self.notifier.stopping(status="start join failed")
                    nursery.cancel_scope.cancel()
                    return 1
                if cfg.retry_join:
                    nursery.start_soon(joins.retry_join, node, cfg, self._log, self._gave_up)
                self._log.info(
                    "agent_ready", addr=str(self.addr), profile=cfg.profile, tags=parts.tags.current
                )
                self.notifier.ready(status=self._status())
                nursery.start_soon(self._watchdog, node)
                task_status.started(self.addr)
                await self._stop.wait()
                await self.services.stop()  # withdraw the mDNS advertisement before leaving
                if self._stop_leave:
                    await self._graceful_leave()
                elif self._leave_done is not None:
                    await self._leave_done.wait()  # an RPC leave's outcome, then its reply
                # Let in-flight RPC replies (e.g. to ``leave``) reach their clients.
                await trio.sleep(SHUTDOWN_GRACE)
                nursery.cancel_scope.cancel()
        self._log.info("agent_stopped", exit_code=self.exit_code)
        return self.exit_code

    def _build(
        self,
        tags: dict[str, str],
        restored: RestoredState | None,
        bind: Address,
        advertise: Address | None,
    ) -> _Parts:
        cfg, log = self.config, self._log
        node = Node(
            cfg.node_name,
            bind=bind,
            advertise=advertise,
            tags=tags,
            profile=cfg.swim_config(),
            serf=self.serf_config,
            keys=self._keys,
            encrypt_algorithm=cfg.encrypt_algorithm,
            verify_incoming=cfg.encrypt_verify_incoming,
            verify_outgoing=cfg.encrypt_verify_outgoing,
            logger=log,
            restored=restored,
            persist_keyring=self._persist_keyring,
        )
        supervisor = make_supervisor(cfg, node, tags, log)
        local_tags = LocalTags(
            tags, node=node, supervisor=supervisor, tags_file=cfg.tags_file, logger=log
        )
        pipeline = EventPipeline(
            node, supervisor, self.serf_config, snapshot=self.snapshot, member_clock=self._clock
        )
        facade = AgentFacade(
            node,
            config=lambda: self.config,
            serf=self.serf_config,
            tags=local_tags,
            pipeline=pipeline,
            settings=self.settings,
            leave=self._leave_and_stop,
            logger=log,
        )
        reloader = Reloader(
            self._argv,
            settings=self.settings,
            supervisor=supervisor,
            tags=local_tags,
            envelope=node.envelope,
            notifier=self.notifier,
            status=self._status,
            logger=log,
        )
        registry = node.registry
        registry.register("handlers", lambda: handler_totals(supervisor))
        registry.register("pipeline", pipeline.statistics)
        if self.snapshot is not None:
            registry.register("snapshot", self.snapshot.statistics)
        return _Parts(node, supervisor, local_tags, pipeline, facade, reloader)

    async def _run_node(self, node: Node, *, task_status: trio.TaskStatus[Address]) -> None:
        await node.run(task_status=task_status)
        # run() returned by itself: the core stopped the node (lost a name conflict).
        if not self._stopping:
            reason = node.stopped_by_core or "node_stopped"
            self._log.error("node_stopped_unexpectedly", reason=reason)
            self.exit_code = 1
            self._request_stop(leave=False, reason=reason)

    async def _start_join(self, node: Node) -> bool:
        """The start join; abandoned (True) when the agent is asked to stop meanwhile."""
        with trio.CancelScope() as scope:
            self._join_scope = scope
            try:
                await joins.start_join(node, self.config, self._log)
            except JoinError:
                return False
            finally:
                self._join_scope = None
        return True

    def _gave_up(self) -> None:
        # Serf exits when retry_join gives up.
        self.exit_code = 1
        self._request_stop(leave=False, reason="retry_join_gave_up")

    def _request_stop(self, *, leave: bool, reason: str) -> None:
        if self._stop.is_set():
            return
        self._stop_leave = leave
        self._log.info("agent_stopping", reason=reason, leave=leave)
        self.notifier.stopping(status=f"stopping ({reason})")
        self._stopping = True
        if self._join_scope is not None:
            self._join_scope.cancel()
        self._stop.set()

    async def _leave_and_stop(self) -> None:
        """RPC ``leave``: the graceful leave, then shutdown; returns (or raises) once the leave
        is over, and the shutdown grace lets the RPC reply out.  ``AgentError`` (the client's
        error text) when the leave did not complete; the agent stops all the same."""
        if self._stop.is_set() and not self._stop_leave and self._leave_done is None:
            raise AgentError("the agent is shutting down without a leave (stop signal)")
        error = await self._graceful_leave()
        self._request_stop(leave=False, reason="rpc_leave")
        if error is not None:
            raise AgentError(error)

    async def _graceful_leave(self) -> str | None:
        """Leave the cluster (once: a later caller waits for the first leave's outcome).
        None when the leave completed, else why not (the text an RPC client gets)."""
        if self._leave_done is not None:
            await self._leave_done.wait()
            return self._leave_error
        done = self._leave_done = trio.Event()
        self._leave_error = "the agent stopped before its leave completed"
        try:
            self._leave_error = await self._leave_once()
        finally:
            done.set()
        return self._leave_error

    async def _leave_once(self) -> str | None:
        if not self._stopping:
            self._stopping = True
            self.notifier.stopping(status="leaving")
        if self.snapshot is not None:
            self.snapshot.leave()
        timeout = self.config.broadcast_timeout
        sc = self.serf_config
        # Leave intent (<= broadcast_timeout), memberlist leave (<= timeout), then
        # leave_propagate_delay; one more second of slack.
        limit = sc.broadcast_timeout + timeout + sc.leave_propagate_delay + 1.0
        timed_out = False
        with trio.CancelScope(deadline=trio.current_time() + limit) as scope:
            self._leave_scope = scope
            try:
                timed_out = await self.node.leave(timeout)  # the node stops afterwards
            except NotRunningError:
                self._log.warning("leave_failed", reason="the node is not running")
                return "the node is not running (nothing to leave)"
            finally:
                self._leave_scope = None
        if scope.cancelled_caught:
            reason = self._abort_reason or f"not done after {limit:g}s"
            self._log.warning(
                "leave_aborted", reason=reason, hint="the others may see this node fail"
            )
            return f"leave aborted ({reason}): the agent stops without finishing its leave"
        self._log.info("left", timed_out=timed_out)
        if timed_out:
            self._log.warning(
                "leave_timed_out",
                timeout=timeout,
                hint="the leave broadcast was not sent everywhere in time; "
                "the others may see this node fail",
            )
            return (
                f"the leave broadcast timed out after {timeout:g}s "
                "(the agent stops anyway; the others may see it fail instead of leave)"
            )
        return None

    async def _handle_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            self._log.info("signal_received", signal=name)
            if signum == signal.SIGHUP:
                await self.reload()
            elif self._stop.is_set() or self._stopping:
                # A second stop signal (or one during an RPC leave): give up on the leave and
                # exit now, and say so.
                self._stop_signals += 1
                reason = "second signal" if self._stop_signals > 1 else "signal during the leave"
                if self._leave_scope is not None:
                    self._abort_reason = f"{reason}, {name}"
                    self._leave_scope.cancel()
                elif self._stop_leave:  # the leave has not started yet: skip it
                    self._log.warning("leave_aborted", reason=f"{reason}, {name}")
                self._stop_leave = False
                self._stop.set()
            elif signum == signal.SIGINT:
                self._stop_signals += 1
                self._request_stop(leave=not self.config.skip_leave_on_interrupt, reason=name)
            else:
                self._stop_signals += 1
                self._request_stop(leave=self.config.leave_on_terminate, reason=name)

    async def reload(self) -> None:
        """SIGHUP (``reload.Reloader``): the config in force afterwards replaces ours."""
        self.config = await self._running().reloader.reload(self.config)

    async def _persist_keyring(self, keys: tuple[bytes, ...]) -> None:
        """The node's keyring persister: rewrite the keyring file, if one is configured."""
        path = self.config.keyring_file
        if path is not None:
            await trio.to_thread.run_sync(write_keyring_file, path, keys)

    def _clock(self) -> int | None:
        clocks = self.node.clocks()
        return clocks.member if clocks is not None else None

    async def _watchdog(self, node: Node) -> None:
        def progress() -> tuple[object, ...]:
            ml = node.registry.read("memberlist")
            return tuple(ml.get(k) for k in _PROGRESS) if ml else ()

        def alone() -> bool:
            return not any(m.name != node.name for m in node.alive_members())

        await watchdog_loop(self.notifier, progress, alone=alone, logger=self._log)

    def _status(self) -> str:
        return f"{self.node.num_alive()} alive members, listening on {self.addr}"
