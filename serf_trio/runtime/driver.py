"""The trio runtime of one membership node: the core driver and its tasks on a channel bus.

``MembershipNode.run`` opens one nursery holding:

* the transport (``Transport.serve``): UDP reader and TCP listener;
* the **core driver** (``_drive``): the ONLY task that mutates the sans-IO ``Memberlist`` core.
  It consumes the input channel, fires the core's internal timers itself (it waits on the input
  channel with ``trio.move_on_at(core.next_deadline())``, then calls ``tick``) and executes the
  effects.  Timers are handled inline rather than by a separate timer task because every core
  call can move the next deadline; a separate task would need a re-arm signal for each call;
* three periodic tasks (prober, gossip broadcaster, push-pull sync): each sleeps its interval
  (after a random initial stagger, as memberlist does) and posts a ``Periodic`` command;
* the **sender**: drains the outgoing-packet channel into ``Transport.send_packet``;
* one short-lived task per ``OpenStream`` effect, which posts its ``StreamOutcome`` back.

The core is a ``Memberlist`` by default (the runner, the demo, the memberlist tests) or, when
a ``SerfConfig`` is given, a ``serf.node.SerfNode`` (the agent), which owns a ``Memberlist`` and
is driven the same way.  With Serf the node also takes the Serf commands (``user_event``,
``query``, ``respond``, ``set_tags``, ``force_leave``), publishes Serf's events
(``SerfMemberEvent``, ``SerfUserEvent``, ``SerfQueryEvent``) on ``events`` instead of memberlist's
``MemberEvent``, routes each ``QueryUpdate`` to the ``QueryStream`` of the query it belongs to,
stops *without leaving* when it loses a name-conflict resolution (Serf: "minority in name
conflict resolution, quitting"), and answers ``leave()`` only ``leave_propagate_delay`` after
the core's ``LeaveDone`` (Serf's LeavePropagateDelay: the node keeps gossiping meanwhile so its
leave spreads).

The bus (every channel bounded; sizes in ``BusSizes``):

============  ======================  ==========================  ======================  =====
channel       producers               consumer                    full policy             size
============  ======================  ==========================  ======================  =====
input         UDP reader (packets),   core driver                 packets: drop + count   1024
              inbound stream tasks,                               (``send_nowait``);
              stream tasks (results),                             everything else waits
              periodic tasks, API                                 (``await send``)
              calls (join/leave/...)
outgoing      core driver             sender task                 drop + count: the core  1024
                                                                  never waits on sockets
events        core driver             the application             drop + count (logged    1024
                                      (``MembershipNode.events``)  ``event_dropped``): a
                                                                  slow consumer must not
                                                                  stall failure detection
query (each)  core driver             the ``QueryStream`` of one  acks/responses: drop +   512
                                      query (``node.query()``)    count; the final "done"
                                                                  is a flag, never dropped
============  ======================  ==========================  ======================  =====

Reads of views (``members()``, ``statistics()``) call the core's read-only methods directly from
other tasks: trio switches tasks only at ``await``, so a synchronous view never observes a
half-applied driver step.  All mutations go through the driver.

Everything the core reports is logged here (the core itself never logs), with snake_case event
names: ``member_join``, ``member_failed``, ``member_left``, ``member_update``, ``packet_dropped``,
``join_done``, ``leave_done`` and the core's ``Notice`` names
(``suspected``, ``declared_dead``, ``refuted``, ...).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import structlog
import trio

from serf_trio.serf.config import SerfConfig
from serf_trio.serf.coordinate import Coordinate
from serf_trio.serf.effects import (
    KeyringChanged,
    QueryUpdate,
    SerfEffect,
    SerfMemberEvent,
    SerfQueryEvent,
    SerfUserEvent,
)
from serf_trio.serf.internal import KeyReport, key_query, keyring_write_failed
from serf_trio.serf.members import SerfMember
from serf_trio.serf.node import RestoredState, SerfError, SerfNode, SerfStats
from serf_trio.serf.query import QueryParamsLike
from serf_trio.serf.tags import TagsTooLarge
from serf_trio.swim.api import (
    Address,
    Delegate,
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
from serf_trio.swim.config import SwimConfig
from serf_trio.swim.node import Memberlist, SwimStats
from serf_trio.wire.crypto import Envelope
from serf_trio.wire.keyring import fingerprint

from .transport import Datagram, Transport, TransportError, TransportStats

T = TypeVar("T")

NodeEvent = (
    MemberEvent
    | Notice
    | Violation
    | JoinDone
    | LeaveDone
    | SerfMemberEvent
    | SerfUserEvent
    | SerfQueryEvent
)
Core = Memberlist | SerfNode

QUERY_BUFFER = 512  # records buffered per running query before acks/responses are dropped

# Writes the keyring (primary first) somewhere durable; raises on failure.
KeyringPersister = Callable[[tuple[bytes, ...]], Awaitable[None]]


class JoinError(Exception):
    """No seed could be synced with; ``errors`` holds one text per seed."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors) or "no seeds given")
        self.errors = tuple(errors)


class NotRunningError(RuntimeError):
    """An API call that needs the driver was made before ``run`` started (or after it ended)."""


class NotSerfError(RuntimeError):
    """A Serf command on a node that drives a bare ``Memberlist``."""


class QueryStream:
    """The records of one query we started: ``QueryUpdate`` acks/responses, then exactly one
    ``done`` (also when the node stops first).  Iterate it with ``async for``.

    The driver feeds it without waiting: acks and responses beyond ``QUERY_BUFFER`` unread ones
    are dropped (counted in ``dropped``); "done" is a flag plus the end of the channel, so it
    can never be lost.
    """

    def __init__(self, size: int = QUERY_BUFFER) -> None:
        self._send, self._recv = trio.open_memory_channel[QueryUpdate](size)
        self.query_id = 0
        self.dropped = 0
        self._done = False
        self._yielded_done = False

    # driver side (never waits)
    def _offer(self, upd: QueryUpdate) -> None:
        if upd.record_type == "done":
            self._finish()
            return
        try:
            self._send.send_nowait(upd)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the consumer went away; "done" still ends the entry

    def _finish(self) -> None:
        self._done = True
        self._send.close()

    # consumer side
    def __aiter__(self) -> QueryStream:
        return self

    async def __anext__(self) -> QueryUpdate:
        if self._yielded_done:
            raise StopAsyncIteration
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._yielded_done = True
            return QueryUpdate(self.query_id, "done")

    async def aclose(self) -> None:
        self._recv.close()
        await trio.lowlevel.checkpoint()


class _Reply(Generic[T]):
    """A one-shot reply slot: the driver sets it without ever waiting."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: T | None = None

    def set(self, value: T) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    async def wait(self) -> T:
        await self._event.wait()
        return self._value  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Inputs of the core driver


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """An inbound stream's request message, and where the driver puts the reply."""

    data: bytes
    reply: _Reply[bytes | None]


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    """Result of one ``OpenStream`` effect (reply bytes, or ``None`` + error)."""

    stream_id: int
    reply: bytes | None
    error: str


@dataclass(frozen=True, slots=True)
class _Flush:
    """A marker in the outgoing channel: answer ``waiters`` once the sender reaches it."""

    waiters: tuple[_Reply[LeaveDone], ...]
    done: LeaveDone


@dataclass(frozen=True, slots=True)
class Periodic:
    round: Literal["probe", "gossip", "push_pull"]


@dataclass(frozen=True, slots=True)
class JoinCommand:
    seeds: tuple[Address, ...]
    reply: _Reply[JoinDone]
    replay: bool = False


@dataclass(frozen=True, slots=True)
class LeaveCommand:
    timeout: float
    reply: _Reply[LeaveDone]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """The answer of a Serf command: ``error`` is Serf's text when the core refused it."""

    error: str = ""
    value: int = 0


@dataclass(frozen=True, slots=True)
class SerfCommand:
    """Run ``call(core, now)`` in the driver (a Serf command); its effects are executed and
    ``SerfError``/``TagsTooLarge`` become ``_Outcome.error``.  ``query`` registers a stream
    for the query id the call returns."""

    call: Callable[[SerfNode, float], tuple[int, list[SerfEffect]]]
    reply: _Reply[_Outcome]
    query: QueryStream | None = None


CoreInput = (
    Datagram | StreamRequest | StreamOutcome | Periodic | JoinCommand | LeaveCommand | SerfCommand
)


@dataclass(frozen=True, slots=True)
class BusSizes:
    """Buffer sizes of the bus channels (see the module docstring for their policies)."""

    input: int = 1024
    outgoing: int = 1024
    events: int = 1024
    # Concurrent outbound streams; beyond this an OpenStream fails at once ("too many streams").
    max_streams: int = 128


@dataclass(frozen=True, slots=True)
class NodeStats:
    """A snapshot of the runtime's counters (the core's own are in ``core``)."""

    core: SwimStats | None  # the core's own counters (None before run)
    serf: SerfStats | None  # Serf's counters (None before run or without Serf)
    transport: TransportStats
    outgoing_dropped: int
    events_dropped: int
    violations: int
    streams_active: int
    streams_failed: int


_FAILED_STATES = {State.DEAD: "member_failed", State.LEFT: "member_left"}
# Notice fields renamed in log lines: every line's "node" is the logging node (bound by the
# agent and the runner), so a notice about another node names it "member", as the member
# event lines do.
_NOTICE_KEYS = {"node": "member"}


class MembershipNode:
    """One memberlist node on trio: ``async with`` a nursery, ``await nursery.start(node.run)``.

    ``advertise`` is the address peers are told (default: the bound address; a port of 0 takes
    the bound port).  ``events`` receives every ``MemberEvent``, ``Notice``, ``Violation``,
    ``JoinDone`` and ``LeaveDone``; it is bounded and lossy (see the module docstring).

    With ``serf`` set the core is a ``SerfNode`` (``tags`` its initial tags, ``restored`` the
    clocks read from a snapshot; both may also be set as ``initial_tags`` / ``restored`` before
    ``run``: the core witnesses the restored clocks before it handles any packet, so no event
    older than them is delivered again) and ``events`` carries Serf's member,
    user and query events in place of ``MemberEvent``; ``delegate`` is then unused (the Serf
    core is memberlist's delegate).
    """

    def __init__(
        self,
        config: SwimConfig,
        name: str,
        transport: Transport,
        *,
        advertise: Address | None = None,
        delegate: Delegate | None = None,
        rng: random.Random | None = None,
        logger: Any = None,
        sizes: BusSizes = BusSizes(),
        serf: SerfConfig | None = None,
        tags: Mapping[str, str] | None = None,
        restored: RestoredState | None = None,
        envelope: Envelope | None = None,
        persist_keyring: KeyringPersister | None = None,
    ) -> None:
        self.config = config
        self.serf_config = serf
        self.envelope = envelope
        self._persist_keyring = persist_keyring
        self._keyring_lock = trio.Lock()  # keyring writes land in the order of the changes
        # Read when ``run`` builds the Serf core (set them before ``run``).
        self.initial_tags: dict[str, str] = dict(tags or {})
        self.restored = restored
        self._queries: dict[int, QueryStream] = {}
        self._stopped_by_core = ""
        self.name = name
        self.transport = transport
        self._advertise = advertise
        self._delegate = delegate
        self._rng = rng if rng is not None else random.Random()
        self._log: Any = logger if logger is not None else structlog.get_logger().bind(node=name)
        self._sizes = sizes
        self._core: Core | None = None
        self._input: trio.MemorySendChannel[CoreInput] | None = None
        self._events_send, self.events = trio.open_memory_channel[NodeEvent](sizes.events)
        self._local: deque[CoreInput] = deque()  # inputs the driver makes for itself
        self._join_waiters: dict[int, _Reply[JoinDone]] = {}
        self._leave_waiters: list[_Reply[LeaveDone]] = []
        self._push_pull_period = config.push_pull_interval
        self._cancel: trio.CancelScope | None = None
        self._streams_active = 0
        self._streams_failed = 0
        self._outgoing_dropped = 0
        self._events_dropped = 0
        self._violations = 0
        self.addr: Address | None = None

    # -- public API -----------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the node until cancelled (or ``stop()``); ``started(advertise address)``."""
        input_send, input_recv = trio.open_memory_channel[CoreInput](self._sizes.input)
        out_send, out_recv = trio.open_memory_channel[SendPacket | _Flush](self._sizes.outgoing)
        with trio.CancelScope() as cancel:
            self._cancel = cancel
            try:
                async with input_send, input_recv, trio.open_nursery() as nursery:
                    bound: Address = await nursery.start(
                        self.transport.serve, input_send.clone(), self._on_stream
                    )
                    adv = self._advertise or bound
                    if adv.port == 0:
                        adv = Address(adv.host, bound.port)
                    self.addr = adv
                    self._core = self._make_core(adv, trio.current_time())
                    self._input = input_send
                    nursery.start_soon(self._sender, out_recv)
                    nursery.start_soon(self._periodic, "probe", input_send.clone())
                    nursery.start_soon(self._periodic, "gossip", input_send.clone())
                    if self.config.push_pull_interval > 0:
                        nursery.start_soon(self._periodic, "push_pull", input_send.clone())
                    nursery.start_soon(self._drive, self._core, input_recv.clone(), out_send)
                    self._log.info("node_started", addr=str(adv), bind=str(bound))
                    task_status.started(adv)
            finally:
                self._input = None
                # Consumers iterating ``events`` see the end of the channel: ``run`` is one-shot.
                self._events_send.close()
                # Every running query still gets its single "done".
                for stream in self._queries.values():
                    stream._finish()
                self._queries.clear()
                self._log.info("node_stopped")

    def _make_core(self, adv: Address, now: float) -> Core:
        if self.serf_config is None:
            return Memberlist(
                self.config,
                self.name,
                adv,
                rng=self._rng,
                now=now,
                delegate=self._delegate,
                sealer=self.envelope,
            )
        # The restored clocks are witnessed before the first packet can arrive: the transport
        # is bound but the driver, the only reader of its input, has not started yet.
        return SerfNode(
            self.serf_config,
            self.config,
            self.name,
            adv,
            rng=self._rng,
            now=now,
            tags=self.initial_tags,
            restored=self.restored,
            envelope=self.envelope,
            persist_keyring=self._persist_keyring is not None,
        )

    @property
    def stopped_by_core(self) -> str:
        """Why the node stopped itself ("" if it did not): ``name_conflict``."""
        return self._stopped_by_core

    def stop(self) -> None:
        """Cancel ``run`` (an abrupt stop: call ``leave`` first for a graceful one)."""
        if self._cancel is not None:
            self._cancel.cancel()

    async def join(self, seeds: Sequence[Address], *, replay: bool = False) -> int:
        """Push/pull with each seed; the number synced.  ``JoinError`` if none could be.

        ``replay`` (Serf only): deliver the user events the cluster already had."""
        reply: _Reply[JoinDone] = _Reply()
        await self._post(JoinCommand(tuple(seeds), reply, replay))
        done = await reply.wait()
        if done.joined == 0:
            raise JoinError(done.errors)
        return done.joined

    async def leave(self, timeout: float) -> bool:  # noqa: ASYNC109 - a protocol timer
        """Broadcast our leave; True if the broadcast timed out (memberlist's Leave).

        ``timeout`` is the core's broadcast timer (memberlist's Leave timeout), not a cancel
        scope: the core answers ``LeaveDone(timed_out=True)`` when it expires.
        """
        reply: _Reply[LeaveDone] = _Reply()
        await self._post(LeaveCommand(timeout, reply))
        done = await reply.wait()
        if self.serf_config is not None:
            # Serf LeavePropagateDelay: keep gossiping a moment so the leave reaches everyone.
            await trio.sleep(self.serf_config.leave_propagate_delay)
        return done.timed_out

    # -- Serf commands (``SerfError`` carries Serf's text; ``NotSerfError`` without Serf) ------

    async def _serf_call(
        self,
        call: Callable[[SerfNode, float], tuple[int, list[SerfEffect]]],
        query: QueryStream | None = None,
    ) -> int:
        if self.serf_config is None:
            raise NotSerfError("this node runs without the Serf layer")
        reply: _Reply[_Outcome] = _Reply()
        await self._post(SerfCommand(call, reply, query))
        outcome = await reply.wait()
        if outcome.error:
            raise SerfError(outcome.error)
        return outcome.value

    async def user_event(self, name: str, payload: bytes, coalesce: bool = False) -> None:
        """Send a user event (delivered here too); ``SerfError`` past the size limit."""
        await self._serf_call(lambda c, now: (0, c.user_event(now, name, payload, coalesce)))

    async def query(self, params: QueryParamsLike) -> QueryStream:
        """Start a query; iterate the returned stream for acks, responses and one "done"."""
        stream = QueryStream()
        stream.query_id = await self._serf_call(lambda c, now: c.query(now, params), stream)
        return stream

    async def respond(self, token: int, payload: bytes) -> None:
        """Answer a delivered ``SerfQueryEvent``; ``SerfError``: late, second, too large."""
        await self._serf_call(lambda c, now: (0, c.respond(now, token, payload)))

    async def set_tags(self, tags: Mapping[str, str]) -> None:
        """Replace our tags (peers see member-update); ``SerfError`` past 512 encoded bytes."""
        new = dict(tags)
        await self._serf_call(lambda c, now: (0, c.set_tags(now, new)))

    async def force_leave(self, node: str, prune: bool = False) -> None:
        """Broadcast a leave intent for ``node``: failed -> left, ``prune`` erases it."""
        await self._serf_call(lambda c, now: (0, c.force_leave(now, node, prune)))

    async def key_operation(self, op: str, key: bytes = b"") -> KeyReport:
        """Run one keyring operation (install | use | remove | list) on every member, as
        Serf's KeyManager does: an internal query with default parameters, one response per
        node gathered until all ``NumMembers`` answered or the query times out."""
        stream = await self.query(key_query(op, key))
        serf = self.serf
        report = KeyReport(num_nodes=serf.num_alive() if serf is not None else 0)
        answered: set[str] = set()
        try:
            async for upd in stream:
                if upd.record_type == "response":
                    answered.add(upd.from_)
                    report.add(upd.from_, upd.payload)
                    if report.complete:
                        break  # serf: return early once every node has answered
        finally:
            await stream.aclose()
        if not report.complete:
            # Which keyrings may now differ: the members that never answered.
            silent = sorted(
                m.name
                for m in self.members()
                if m.state in (State.ALIVE, State.SUSPECT) and m.name not in answered
            )
            self._log.warning("key_query_incomplete", op=op, nodes=report.num_nodes, silent=silent)
        return report

    def get_coordinate(self, name: str) -> Coordinate | None:
        core = self._core
        return core.get_coordinate(name) if isinstance(core, SerfNode) else None

    @property
    def serf(self) -> SerfNode | None:
        """The Serf core for read-only views (``None`` before ``run`` or without Serf)."""
        return self._core if isinstance(self._core, SerfNode) else None

    def serf_members(self) -> list[SerfMember]:
        core = self.serf
        return core.members() if core is not None else []

    # -- views ---------------------------------------------------------------------------

    def members(self) -> list[MemberInfo]:
        """Every known node including ourselves, in any state ([] before ``run``)."""
        core = self._core
        if core is None:
            return []
        return core.memberlist.members() if isinstance(core, SerfNode) else core.members()

    def member(self, name: str) -> MemberInfo | None:
        core = self._core
        if core is None:
            return None
        return core.memberlist.member(name) if isinstance(core, SerfNode) else core.member(name)

    def statistics(self) -> NodeStats:
        serf = self.serf
        return NodeStats(
            core=self._core.statistics() if self._core is not None else None,
            serf=serf.serf_statistics() if serf is not None else None,
            transport=self.transport.statistics(),
            outgoing_dropped=self._outgoing_dropped,
            events_dropped=self._events_dropped,
            violations=self._violations,
            streams_active=self._streams_active,
            streams_failed=self._streams_failed,
        )

    # -- tasks ----------------------------------------------------------------------------

    async def _post(self, item: CoreInput) -> None:
        if self._input is None:
            raise NotRunningError("the node is not running")
        await self._input.send(item)

    async def _on_stream(self, data: bytes) -> bytes | None:
        """Transport callback for one inbound stream request (runs in the connection's task)."""
        reply: _Reply[bytes | None] = _Reply()
        try:
            await self._post(StreamRequest(data, reply))
        except (NotRunningError, trio.ClosedResourceError, trio.BrokenResourceError):
            return None
        return await reply.wait()

    async def _periodic(
        self,
        which: Literal["probe", "gossip", "push_pull"],
        send: trio.MemorySendChannel[CoreInput],
    ) -> None:
        """Post ``Periodic(which)`` every interval, after a random stagger (memberlist does too)."""
        async with send:
            first = True
            while True:
                period = self._period(which)
                await trio.sleep(self._rng.uniform(0, period) if first else period)
                first = False
                await send.send(Periodic(which))

    def _period(self, which: str) -> float:
        if which == "probe":
            return self.config.probe_interval
        if which == "gossip":
            return self.config.gossip_interval
        return self._push_pull_period

    async def _sender(self, out: trio.MemoryReceiveChannel[SendPacket | _Flush]) -> None:
        async with out:
            async for pkt in out:
                if isinstance(pkt, _Flush):
                    # Everything queued before the marker is on the wire now.
                    for w in pkt.waiters:
                        w.set(pkt.done)
                    continue
                await self.transport.send_packet(pkt.addr, pkt.data)

    async def _run_stream(self, eff: OpenStream) -> None:
        """Carry out one OpenStream effect and post its outcome back to the driver."""
        try:
            reply = await self.transport.request(
                eff.addr, eff.data, expect_reply=eff.expect_reply, time_limit=eff.timeout
            )
            outcome = StreamOutcome(eff.stream_id, reply, "")
        except TransportError as exc:
            self._streams_failed += 1
            self._log.debug("stream_failed", to=str(eff.addr), error=str(exc))
            outcome = StreamOutcome(eff.stream_id, None, str(exc))
        finally:
            self._streams_active -= 1
        inp = self._input
        if inp is not None:
            await inp.send(outcome)

    async def _drive(
        self,
        core: Core,
        inputs: trio.MemoryReceiveChannel[CoreInput],
        out: trio.MemorySendChannel[SendPacket | _Flush],
    ) -> None:
        """The core driver: the only task that calls the core's mutating methods."""
        async with inputs, out, trio.open_nursery() as streams:
            while True:
                deadline = core.next_deadline()
                item: CoreInput | None = None
                if self._local:
                    item = self._local.popleft()
                    await trio.lowlevel.checkpoint()
                else:
                    with trio.move_on_at(math.inf if deadline is None else deadline):
                        item = await inputs.receive()
                now = trio.current_time()
                effects: list[SerfEffect] = []
                if deadline is not None and now >= deadline:
                    effects.extend(core.tick(now))
                if item is not None:
                    effects.extend(self._dispatch(core, now, item))
                self._execute(effects, out, streams)
                if self._stopped_by_core:
                    # Serf: the minority of a name conflict shuts down without leaving.
                    self.stop()
                    return

    def _dispatch(self, core: Core, now: float, item: CoreInput) -> Sequence[SerfEffect]:
        if isinstance(item, Datagram):
            return core.handle_packet(now, item.src, item.data)
        if isinstance(item, StreamRequest):
            answer, effects = core.handle_stream(now, item.data)
            item.reply.set(answer)
            return effects
        if isinstance(item, StreamOutcome):
            return core.stream_result(now, item.stream_id, item.reply, item.error)
        if isinstance(item, Periodic):
            if item.round == "probe":
                return core.probe(now)
            if item.round == "gossip":
                return core.gossip(now)
            effects = core.push_pull(now)
            self._push_pull_period = core.push_pull_period()
            return effects
        if isinstance(item, JoinCommand):
            if isinstance(core, SerfNode):
                request_id, effects = core.join(now, item.seeds, replay=item.replay)
            else:
                request_id, effects = core.join(now, item.seeds)
            self._join_waiters[request_id] = item.reply
            return effects
        if isinstance(item, LeaveCommand):
            self._leave_waiters.append(item.reply)
            return core.leave(now, item.timeout)
        # A SerfCommand (``_serf_call`` made sure the core is a SerfNode).
        assert isinstance(core, SerfNode)
        try:
            value, effects = item.call(core, now)
        except (SerfError, TagsTooLarge) as exc:
            item.reply.set(_Outcome(error=str(exc)))
            return []
        if item.query is not None:
            self._queries[value] = item.query
        item.reply.set(_Outcome(value=value))
        return effects

    def _execute(
        self,
        effects: list[SerfEffect],
        out: trio.MemorySendChannel[SendPacket | _Flush],
        streams: trio.Nursery,
    ) -> None:
        """Carry out effects without ever waiting (the driver must not block)."""
        for eff in effects:
            if isinstance(eff, SendPacket):
                try:
                    out.send_nowait(eff)
                except trio.WouldBlock:
                    self._outgoing_dropped += 1
                    self._log.warning("packet_dropped", reason="send_queue_full", to=str(eff.addr))
                continue
            if isinstance(eff, LeaveDone):
                # The core retires our dead{From: us} broadcast when it *hands out* its last
                # copy; those packets are still in the outgoing channel.  Answer leave() only
                # once the sender has put them on the wire, or a caller that stops the node
                # right after leave() would drop its own goodbye.
                waiters, self._leave_waiters = self._leave_waiters, []
                flush = _Flush(tuple(waiters), eff)
                try:
                    out.send_nowait(flush)
                except trio.WouldBlock:
                    for w in waiters:
                        w.set(eff)
            elif isinstance(eff, OpenStream):
                if self._streams_active >= self._sizes.max_streams:
                    self._streams_failed += 1
                    self._local.append(StreamOutcome(eff.stream_id, None, "too many streams"))
                else:
                    self._streams_active += 1
                    streams.start_soon(self._run_stream, eff)
                continue
            elif isinstance(eff, QueryUpdate):
                stream = self._queries.get(eff.query_id)
                if stream is not None:
                    if eff.record_type == "done":
                        del self._queries[eff.query_id]
                    stream._offer(eff)
                continue
            elif isinstance(eff, KeyringChanged):
                self._log.info(
                    "keyring_changed",
                    op=eff.op,
                    keys=len(eff.keys),
                    primary=fingerprint(eff.keys[0]) if eff.keys else "",
                )
                if eff.token is not None:
                    streams.start_soon(self._save_keyring, eff.keys, eff.token)
                continue
            self._report(eff)
            self._publish(eff)

    async def _save_keyring(self, keys: tuple[bytes, ...], token: int) -> None:
        """Persist a changed keyring, then let the core answer the key query that changed it
        (with the write's error, as Serf does)."""
        persist = self._persist_keyring
        error = ""
        async with self._keyring_lock:
            try:
                if persist is not None:
                    await persist(keys)
            except Exception as exc:  # any failure to write is reported, never fatal
                error = keyring_write_failed(exc)
                self._log.error("keyring_write_failed", error=str(exc))
        # When stopping, the query's originator counts us as not answering.
        with contextlib.suppress(NotRunningError, trio.ClosedResourceError):
            await self._serf_call(lambda c, now: (0, c.key_persisted(now, token, error)))

    def _report(self, eff: NodeEvent) -> None:
        log = self._log
        if isinstance(eff, MemberEvent):
            m = eff.member
            if eff.kind is MemberEventKind.JOIN:
                event = "member_join"
            elif eff.kind is MemberEventKind.LEAVE:
                event = _FAILED_STATES.get(m.state, "member_failed")
            else:
                event = "member_update"
            log.info(event, member=m.name, addr=str(m.addr), incarnation=m.incarnation)
        elif isinstance(eff, SerfMemberEvent):
            for sm in eff.members:
                log.info(
                    eff.kind.replace("-", "_"),
                    member=sm.name,
                    addr=str(sm.addr),
                    status=sm.status,
                )
        elif isinstance(eff, SerfUserEvent):
            log.debug("user_event", name=eff.name, ltime=eff.ltime, size=len(eff.payload))
        elif isinstance(eff, SerfQueryEvent):
            log.debug("query_event", name=eff.name, ltime=eff.ltime, source=eff.source_node)
        elif isinstance(eff, Notice):
            # A notice's "node" is the member it is about; the log's "node" is this node.
            fields = {_NOTICE_KEYS.get(k, k): _loggable(v) for k, v in eff.fields.items()}
            if eff.event == "name_conflict_resolution" and eff.fields.get("won") is False:
                log.error("name_conflict_lost", **fields)
                self._stopped_by_core = "name_conflict"
            else:
                log.info(eff.event, **fields)
        elif isinstance(eff, Violation):
            self._violations += 1
            log.warning("packet_dropped", source=eff.source, reason=eff.reason)
        elif isinstance(eff, JoinDone):
            waiter = self._join_waiters.pop(eff.request_id, None)
            if waiter is not None:
                waiter.set(eff)
            log.info("join_done", joined=eff.joined, errors=list(eff.errors))
        else:
            log.info("leave_done", timed_out=eff.timed_out)

    def _publish(self, eff: NodeEvent) -> None:
        try:
            self._events_send.send_nowait(eff)
        except (trio.WouldBlock, trio.BrokenResourceError):
            # Policy: drop rather than stall the core behind a slow (or absent) consumer.
            self._events_dropped += 1
            if self._events_dropped in (1, 10, 100) or self._events_dropped % 1000 == 0:
                self._log.warning("event_dropped", total=self._events_dropped)


def _loggable(v: object) -> object:
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)
