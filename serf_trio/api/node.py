"""``serf_trio.Node``: a Serf cluster member inside any trio program.

The library's public face.  A ``Node`` is one Serf agent's protocol half (memberlist gossip,
failure detection, tags, user events, queries, Lamport clocks, the keyring) without the agent's
process concerns (config files, signals, handler scripts, the RPC socket, snapshots), which the
agent adds on top of this same class.

Two ways to run one, both inside the caller's nursery and task tree (no threads, no global
state: two nodes in one process are independent)::

    async with serf_trio.open_node("web-1", bind="127.0.0.1:7946") as node:
        await node.join("127.0.0.1:7947")
        ...                      # leaving the block leaves the cluster gracefully

    node = serf_trio.Node("web-1", bind="127.0.0.1:7946")
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        ...
        await node.leave()       # graceful; then node.run returns

**Cancellation.** Every awaitable method is cancellation-safe: cancelling a caller abandons its
wait, never the node's state (commands are applied whole by the core driver or not at all).
When the nursery that runs the node is cancelled, the node stops at once, *without* a leave:
peers see it fail and, after the suspicion timeout, mark it failed, as with a crash.
``open_node`` leaves gracefully when its block exits normally or by an exception, shielded and
bounded by ``leave_timeout``; when the block is cancelled from outside, it stops at once.

**Delivery contract** (``runtime.delivery``): the core never waits for a consumer.  Each
``events()`` subscription gets every member event (while it lags they coalesce per member,
latest state wins; never dropped) and, in a bounded FIFO, user events and queries, which are
dropped and counted (``stats()["delivery"]``) when the consumer cannot keep up.  Replies to a
query we started follow the same rule per query (``QUERY_BUFFER`` unread replies).

**Errors.** ``JoinError`` (no seed reachable, one text per seed), ``SerfError`` (the cluster
protocol refused: size limits, late or second responses; Serf's wording), ``NotRunningError``
(the node is not running), ``KeyringError`` (a key that cannot be used), ``ValueError`` for bad
arguments (addresses, filters), ``OSError`` from ``run``/``open_node`` when the address cannot
be bound.  Each comes out as itself: ``open_node`` does not wrap the block's own exception
or a failure to start in an ``ExceptionGroup``.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, Protocol

import structlog
import trio

from serf_trio.runtime.crypto import EnvelopeCrypto
from serf_trio.runtime.delivery import EventQueue
from serf_trio.runtime.driver import BusSizes, JoinError, NodeEvent, NotRunningError
from serf_trio.runtime.looplag import LoopLag
from serf_trio.runtime.resolve import Lookup, resolve_joins
from serf_trio.runtime.serf_runtime import KeyringPersister, QueryStream, SerfRuntime
from serf_trio.runtime.stats import Section, StatsRegistry
from serf_trio.runtime.transport import Transport, UdpTcpTransport, WireCrypto, parse_hostport
from serf_trio.serf.config import SerfConfig
from serf_trio.serf.coordinate import Coordinate
from serf_trio.serf.filters import parse_filter
from serf_trio.serf.internal import KeyReport
from serf_trio.serf.node import RestoredState
from serf_trio.serf.query import QueryParam
from serf_trio.swim.api import Address, State
from serf_trio.swim.config import SwimConfig, profile
from serf_trio.wire.crypto import Algorithm, Envelope, check_primary
from serf_trio.wire.keyring import Keyring, decode_key

from .events import Ack, Event, Member, QueryEvent, Response, is_event

DEFAULT_PORT = 7946
AddressLike = str | Address


class Network(Protocol):
    """Where a node's transport comes from: the real one (UDP + TCP) by default, or
    ``serf_trio.testing.memnet.MemoryNetwork`` to run nodes on a simulated network."""

    def transport(
        self, addr: Address, *, stream_timeout: float, crypto: WireCrypto
    ) -> Transport: ...


class _Sockets:
    def __init__(self, logger: Any) -> None:
        self._log = logger

    def transport(self, addr: Address, *, stream_timeout: float, crypto: WireCrypto) -> Transport:
        return UdpTcpTransport(addr, stream_timeout=stream_timeout, crypto=crypto, logger=self._log)


def address(value: AddressLike, default_port: int = DEFAULT_PORT) -> Address:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or an ``Address``; ``ValueError`` otherwise."""
    if isinstance(value, Address):
        return value
    return parse_hostport(value, default_port)


class Node:
    """One cluster member (module docstring).

    ``name`` must be unique in the cluster.  ``bind`` is the gossip address (UDP and TCP, port
    0 picks a free one); ``advertise`` what peers are told (default: the bound address).
    ``profile`` is memberlist's timing (``lan``, ``wan``, ``local`` or a ``SwimConfig``);
    ``serf`` Serf's knobs (``SerfConfig``: size limits, reap and reconnect timeouts).
    ``keys`` turn on encryption (primary first; base64 text or raw 16/24/32 bytes) with
    ``encrypt_algorithm`` (``secretbox``, or ``aes-gcm`` to talk to HashiCorp agents).
    ``network`` replaces the sockets (e.g. an in-memory network for tests); ``rng`` makes the
    protocol's random choices reproducible; ``logger`` is a structlog logger (``node`` bound).
    ``resolver`` looks up the host names given to ``join`` (default: the system resolver,
    ``serf_trio.runtime.resolve.system_lookup``).
    """

    def __init__(
        self,
        name: str,
        *,
        bind: AddressLike = "0.0.0.0:7946",
        advertise: AddressLike | None = None,
        tags: Mapping[str, str] | None = None,
        profile: str | SwimConfig = "lan",
        serf: SerfConfig | None = None,
        keys: Sequence[str | bytes] = (),
        encrypt_algorithm: str = Algorithm.SECRETBOX.value,
        verify_incoming: bool = True,
        verify_outgoing: bool = True,
        network: Network | None = None,
        rng: random.Random | None = None,
        logger: Any = None,
        restored: RestoredState | None = None,
        persist_keyring: KeyringPersister | None = None,
        event_buffer: int = 1024,
        resolver: Lookup | None = None,
    ) -> None:
        if not name:
            raise ValueError("a node needs a name")
        swim = _profile(profile)
        self._log: Any = logger if logger is not None else structlog.get_logger().bind(node=name)
        raw_keys = tuple(k if isinstance(k, bytes) else decode_key(k) for k in keys)
        algorithm = Algorithm(encrypt_algorithm)
        keyring = Keyring(raw_keys) if raw_keys else None
        if keyring is not None:
            check_primary(algorithm, keyring.primary)
        self.envelope = Envelope(
            keyring, algorithm, verify_incoming=verify_incoming, verify_outgoing=verify_outgoing
        )
        self.crypto = EnvelopeCrypto(self.envelope, self._log)
        net = network if network is not None else _Sockets(self._log)
        transport = net.transport(
            address(bind), stream_timeout=swim.tcp_timeout, crypto=self.crypto
        )
        self._runtime = SerfRuntime(
            swim,
            name,
            transport,
            serf=serf,
            tags=tags,
            restored=restored,
            persist_keyring=persist_keyring,
            advertise=address(advertise) if advertise is not None else None,
            rng=rng,
            logger=self._log,
            sizes=BusSizes(events=event_buffer),
            envelope=self.envelope,
            subscribe_default=False,
        )
        self.name = name
        self._tags = dict(tags or {})
        self._stopped = trio.Event()
        self._ending = False  # leave() or stop() was called: open_node must not leave (again)
        self._ran = False  # run() was called: a node runs once
        self._lookup = resolver
        self.registry = StatsRegistry()
        rt = self._runtime
        self.registry.register("serf", rt.serf_statistics)
        # One source per section: a snapshot reads each component once.
        self.registry.register("memberlist", rt.core_statistics)
        self.registry.register("transport", rt.transport.statistics)
        self.registry.register("delivery", rt.delivery_statistics)
        self.registry.register("driver", rt.runtime_counters)
        self.registry.register("encryption", self.crypto.stats)
        rt.loop_lag = LoopLag()  # the driver reports each timer wake to it
        self.registry.register("runtime_lag", rt.loop_lag.statistics)

    # -- lifecycle ------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until ``leave()``/``stop()`` or cancellation; ``started(advertised address)``.
        Start it with ``await nursery.start(node.run)``.  A node runs once (its subscriptions
        end with it): ``RuntimeError`` the second time; make a new ``Node`` to rejoin."""
        if self._ran:
            raise RuntimeError(f"node {self.name!r} has already run; make a new Node to rejoin")
        self._ran = True
        try:
            await self._runtime.run(task_status=task_status)
        except BaseExceptionGroup as group:
            # It could not start (e.g. the address is in use): raise that error itself, not
            # the runtime's nursery group around it.
            error = _only_error(group)
            if self._runtime.addr is None and error is not None:
                raise error from None
            raise
        finally:
            self._stopped.set()

    @property
    def addr(self) -> Address | None:
        """The advertised address (``None`` before the node runs)."""
        return self._runtime.addr

    @property
    def address(self) -> Address:
        """The advertised address of a node that has started (``addr`` without ``None``, e.g.
        for ``other.join(node.address)``); ``NotRunningError`` before ``run`` started."""
        addr = self._runtime.addr
        if addr is None:
            raise NotRunningError("the node has not started")
        return addr

    @property
    def running(self) -> bool:
        return self._runtime.running

    @property
    def stopped_by_core(self) -> str:
        """Why the node stopped by itself ("" if it did not): ``name_conflict`` when it lost
        a name-conflict resolution (Serf: the minority quits without leaving)."""
        return self._runtime.stopped_by_core

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def join(self, *addrs: AddressLike, replay: bool = False) -> int:
        """Join the cluster through any of ``addrs`` (push/pull with each); the number of
        addresses reached.  ``JoinError`` if none could be; ``replay`` delivers the user events
        the cluster already had (Serf's ``-replay``).

        An address is an ``Address``, ``IP``, ``IP:PORT``, ``[IPv6]:PORT``, a host name with
        an optional port (``"seed.example.com:7946"``), or Serf's ``NAME/ADDR`` form (the name
        is ignored); the port defaults to 7946.  A host name is looked up on every call
        (never cached; ``resolver``, off the event loop) and every address it resolves to is
        pushed/pulled with and counted, as memberlist's Join does.  ``JoinError.errors`` holds
        one text per address that failed, a name that did not resolve included (``Failed to
        resolve HOST: reason``).  ``ValueError`` for a malformed address, before anything is
        sent."""
        if not addrs:
            raise ValueError("join needs at least one address")
        seeds, errors = await resolve_joins(addrs, self._lookup, DEFAULT_PORT)
        if not seeds:
            raise JoinError(errors)
        try:
            return await self._runtime.join(seeds, replay=replay)
        except JoinError as exc:
            raise JoinError([*errors, *exc.errors]) from None

    async def leave(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - protocol
        """Leave gracefully, then stop: broadcast the leave intent, wait until it has spread
        (at most ``timeout``, default Serf's broadcast timeout), then stop the node and return
        once ``run`` has returned (every task of the node has ended).  True if the broadcast
        timed out (peers will learn of the leave by gossip or see a failure)."""
        rt = self._runtime
        if not rt.running:
            raise NotRunningError("the node is not running")
        limit = rt.serf_config.broadcast_timeout if timeout is None else timeout
        self._ending = True
        try:
            timed_out = await rt.leave(limit)
        finally:
            rt.stop()
        await self._stopped.wait()
        return timed_out

    def stop(self) -> None:
        """Stop at once, without a leave (peers will see this node fail)."""
        self._ending = True
        self._runtime.stop()

    # -- views ---------------------------------------------------------------------------

    def members(self) -> list[Member]:
        """Every member this node knows, itself included, in any Serf status (alive, leaving,
        left, failed)."""
        return self._runtime.serf_members()

    def member(self, name: str) -> Member | None:
        core = self._runtime.serf
        return core.member(name) if core is not None else None

    def alive_members(self) -> list[Member]:
        return [m for m in self.members() if m.status == "alive"]

    @property
    def tags(self) -> dict[str, str]:
        core = self._runtime.serf
        return dict(core.tags) if core is not None else dict(self._tags)

    def clocks(self) -> Clocks | None:
        """The three Lamport clocks now (``None`` before ``run``): member (intents), event
        (user events) and query; what a snapshot records and what the next message carries."""
        core = self._runtime.serf
        if core is None:
            return None
        return Clocks(core.clock.time(), core.event_clock.time(), core.query_clock.time())

    def coordinate(self, name: str | None = None) -> Coordinate | None:
        """The Vivaldi network coordinate of a member (this node by default), as Serf's
        ``GetCoordinate``/``GetCachedCoordinate`` give it; ``None`` if unknown."""
        return self._runtime.get_coordinate(self.name if name is None else name)

    def num_alive(self) -> int:
        """memberlist's NumMembers: alive and suspect nodes, this one included."""
        return sum(1 for m in self._runtime.members() if m.state in (State.ALIVE, State.SUSPECT))

    # -- events ----------------------------------------------------------------------------

    def events(self, filter: str = "*", *, buffer: int | None = None) -> EventQueue[Event]:
        """Subscribe to events matching a Serf event filter (``member-join,user:deploy,query``;
        ``*`` for all).  Iterate the result with ``async for``; close it with ``aclose()`` or
        ``async with``.  Subscribe before ``join`` to see the join's events."""
        filt = parse_filter(filter)

        def accept(ev: object) -> bool:
            return is_event(ev) and filt.match(ev)

        queue: EventQueue[NodeEvent] = self._runtime.subscribe(buffer, accept)
        return queue  # type: ignore[return-value]  # accept() lets only ``Event``s in

    async def user_event(self, name: str, payload: bytes = b"", *, coalesce: bool = False) -> None:
        """Send a user event to every member (this one included); ``SerfError`` past Serf's
        size limit (``serf.user_event_size_limit``, 512 bytes of name and payload)."""
        await self._runtime.user_event(name, payload, coalesce)

    def query(
        self,
        name: str,
        payload: bytes = b"",
        *,
        nodes: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        request_ack: bool = False,
        relay_factor: int = 0,
        timeout: float = 0.0,
    ) -> QueryReplies:
        """Ask the members (all, or those named in ``nodes`` / whose tags match the regular
        expressions in ``tags``) and gather their replies until ``timeout`` (0: Serf's
        default, gossip interval x 16 x ceil(log10(N+1))).  Iterate the result (``async for``,
        ideally inside ``async with``) for ``Ack`` and ``Response`` records; the iteration
        ends when the query times out."""
        params = QueryParam(
            name=name,
            payload=payload,
            filter_nodes=tuple(nodes),
            filter_tags=dict(tags or {}),
            request_ack=request_ack,
            relay_factor=relay_factor,
            timeout=timeout,
        )
        return QueryReplies(self._runtime, params)

    async def respond(self, query: QueryEvent | int, payload: bytes) -> None:
        """Answer a delivered query (the event, or its ``token`` for callers that hold only
        that, e.g. an RPC client); ``SerfError`` when late, already answered or too large."""
        token = query if isinstance(query, int) else query.token
        await self._runtime.respond(token, payload)

    async def set_tags(self, tags: Mapping[str, str]) -> None:
        """Replace this node's tags (the others see member-update); ``SerfError`` past 512
        encoded bytes."""
        await self._runtime.set_tags(tags)
        self._tags = dict(tags)

    async def force_leave(self, node: str, *, prune: bool = False) -> None:
        """Mark a failed member left (``prune``: forget it at once)."""
        await self._runtime.force_leave(node, prune)

    # -- keys (Serf's KeyManager: each runs through the cluster) ---------------------------

    async def install_key(self, key: str | bytes) -> KeyReport:
        return await self._runtime.key_operation("install", _key(key))

    async def use_key(self, key: str | bytes) -> KeyReport:
        return await self._runtime.key_operation("use", _key(key))

    async def remove_key(self, key: str | bytes) -> KeyReport:
        return await self._runtime.key_operation("remove", _key(key))

    async def list_keys(self) -> KeyReport:
        return await self._runtime.key_operation("list")

    # -- stats ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Section]:
        """Every component's counters, by section (``StatsRegistry``): ``serf``, ``memberlist``,
        ``transport``, ``delivery``, ``driver``, ``encryption`` and whatever the embedding
        program registered in ``registry``."""
        return self.registry.snapshot()

    @property
    def runtime(self) -> SerfRuntime:
        """The runtime under this node (for the agent and tests; not a stable API)."""
        return self._runtime


class Clocks(NamedTuple):
    member: int
    event: int
    query: int


class QueryReplies:
    """The replies to one query (``Node.query``): ``Ack`` and ``Response`` records until the
    query's timeout.  The query starts at ``async with`` or at the first ``__anext__``."""

    def __init__(self, runtime: SerfRuntime, params: QueryParam) -> None:
        self._runtime = runtime
        self._params = params
        self._stream: QueryStream | None = None
        self._done = False

    @property
    def dropped(self) -> int:
        """Replies dropped because the consumer lagged (``QUERY_BUFFER``)."""
        return self._stream.dropped if self._stream is not None else 0

    async def start(self) -> None:
        if self._stream is None:
            self._stream = await self._runtime.query(self._params)

    async def __aenter__(self) -> QueryReplies:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> QueryReplies:
        return self

    async def __anext__(self) -> Ack | Response:
        if self._done:
            raise StopAsyncIteration
        await self.start()
        assert self._stream is not None
        upd = await self._stream.__anext__()
        if upd.record_type == "done":
            self._done = True
            raise StopAsyncIteration
        if upd.record_type == "ack":
            return Ack(upd.from_)
        return Response(upd.from_, upd.payload)

    async def aclose(self) -> None:
        self._done = True
        if self._stream is not None:
            await self._stream.aclose()
        else:
            await trio.lowlevel.checkpoint()

    async def collect(self) -> list[Response]:
        """Every response until the query ends (acks are skipped)."""
        async with self:
            return [r async for r in self if isinstance(r, Response)]


@asynccontextmanager
async def open_node(
    name: str, *, leave_timeout: float | None = None, **options: Any
) -> AsyncIterator[Node]:
    """Run a ``Node`` for the duration of an ``async with`` block (module docstring): it is
    bound and running when the block starts; a normal exit or an exception leaves gracefully
    (shielded, at most ``leave_timeout`` plus Serf's leave propagation delay); cancellation
    from outside stops it at once.  ``options`` are ``Node``'s keyword arguments.

    Errors come out as themselves, not wrapped in an ``ExceptionGroup`` by the nursery inside:
    the block's own exception (after the leave), and the node's failure to start (e.g.
    ``OSError`` when the address is in use; the block does not run then)."""
    node = Node(name, **options)
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(node.run)
        except Exception as exc:
            error = exc
        else:
            try:
                yield node
            except BaseException as exc:
                if isinstance(exc, GeneratorExit) or _cancelled():
                    # Cancelled from outside (possibly inside a group from the block's own
                    # nurseries): stop at once, no leave.
                    nursery.cancel_scope.cancel()
                    raise
                error = exc
            if node.running and not node._ending:
                await _shielded_leave(node, leave_timeout)
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error


def _cancelled() -> bool:
    """Whether the calling task is in a cancelled scope."""
    return trio.current_effective_deadline() == -math.inf


def _only_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The single ``Exception`` in a (nested) group, if that is all it holds."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    only = leaves[0] if len(leaves) == 1 else None
    return only if isinstance(only, Exception) else None


async def _shielded_leave(node: Node, timeout: float | None) -> None:  # noqa: ASYNC109
    rt = node.runtime
    limit = rt.serf_config.broadcast_timeout if timeout is None else timeout
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + limit + rt.serf_config.leave_propagate_delay + 1.0
        await node.leave(limit)


def _profile(value: str | SwimConfig) -> SwimConfig:
    return value if isinstance(value, SwimConfig) else profile(value)


def _key(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else decode_key(key)
