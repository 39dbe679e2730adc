"""The trio runtime of one node: a generic core driver and its tasks on a channel bus.

``CoreDriver.run`` opens one nursery holding:

* the transport (``Transport.serve``): UDP reader and TCP listener;
* the **core driver** (``_drive``): the ONLY task that mutates the sans-IO core.  It consumes
  the input channel, fires the core's internal timers itself (it waits on the input channel
  with ``trio.move_on_at(...)`` until the core's next deadline or the next periodic round,
  then calls ``tick``) and executes the effects.  Timers are handled inline rather than by a
  separate timer task because every core call can move the next deadline; a separate task
  would need a re-arm signal for each call;
* the periodic rounds (prober, gossip broadcaster, push-pull sync) are timers of that same
  loop: each first runs after a random stagger (as memberlist does), then every interval,
  keeping its phase.  Tasks of their own would double the wake-ups of an idle agent (a sleep
  to wake, then a channel hop to the driver), and wake-ups are most of what it costs.  The
  gossip round does not wake the loop while the core has nothing to gossip
  (``has_broadcasts``), five wake-ups a second fewer for an idle agent;
* the **sender**: drains the outgoing-packet channel into ``Transport.send_packet``;
* one short-lived task per ``OpenStream`` effect, which posts its ``StreamOutcome`` back.

The driver drives any ``swim.api.DrivenCore`` without knowing which: ``MembershipNode`` (this
module) runs a bare ``Memberlist``; ``serf_runtime.SerfRuntime`` runs the Serf core and adds
the Serf commands, query routing and keyring persistence as a layer on top (it overrides
``_make_core`` and ``_consume``).  Effects are dispatched on their record type only.

The bus (every channel bounded; sizes in ``BusSizes``):

============  ======================  ==========================  ======================  =====
channel       producers               consumer                    full policy             size
============  ======================  ==========================  ======================  =====
input         UDP reader (packets),   core driver                 packets: drop + count   1024
              inbound stream tasks,                               (``send_nowait``);
              stream tasks (results),                             everything else waits
              API calls (join/leave/...)                          (``await send``)
outgoing      core driver             sender task                 drop + count: the core  1024
                                                                  never waits on sockets
events        core driver             each subscriber             the delivery contract   1024
                                      (``subscribe()``)           (``runtime.delivery``)
============  ======================  ==========================  ======================  =====

Events follow ``runtime.delivery``'s contract: the driver never waits for a consumer, member
events are never dropped (they coalesce per member while a consumer lags), everything else is
dropped and counted when a subscriber's queue is full.

Reads of views (``members()``, ``statistics()``) call the core's read-only methods directly from
other tasks: trio switches tasks only at ``await``, so a synchronous view never observes a
half-applied driver step.  All mutations go through the driver.

Everything the core reports is logged by ``runtime.report`` (the core itself never logs);
logging changes no state.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal

import structlog
import trio

from serf_trio.swim.api import (
    Address,
    Delegate,
    JoinDone,
    LeaveDone,
    MemberInfo,
    OpenStream,
    SendPacket,
    Violation,
)
from serf_trio.swim.config import SwimConfig
from serf_trio.swim.formulas import next_tick
from serf_trio.swim.node import Memberlist, SwimStats
from serf_trio.wire.crypto import Envelope

from .bus import (
    DEFAULT_SIZES,
    BusSizes,
    C,
    Call,
    CoreInput,
    DriverStats,
    Flush,
    JoinError,
    LeaveCommand,
    NodeEvent,
    NotRunningError,
    Outcome,
    Reply,
    StreamOutcome,
    StreamRequest,
    classify,
)
from .delivery import DeliveryStats, EventQueue, Subscribers
from .looplag import LATE, LoopLag
from .report import report
from .transport import Datagram, Transport, TransportError

__all__ = [
    "BusSizes",
    "CoreDriver",
    "DriverStats",
    "JoinError",
    "MembershipNode",
    "NodeEvent",
    "NotRunningError",
]


Round = Literal["probe", "gossip", "push_pull"]
ROUNDS: tuple[Round, ...] = ("probe", "gossip", "push_pull")


# A timer wake this late (seconds) means the loop stalled, the threshold the loop-lag stats
# count late wakes by: the core moves its timers (``note_stall``) and the input that arrived
# meanwhile is read before the due timers run (``_catch_up``).
STALL = LATE
CATCH_UP_MIN = 3
CATCH_UP_YIELDS = 16


def _worth_a_line(total: int) -> bool:
    """Whether the ``total``-th drop of a kind is logged: the 1st, 10th, 100th, then every
    1,000th, each line with the running total (a flood must not flood the log too)."""
    return total in (1, 10, 100) or total % 1000 == 0


class CoreDriver(Generic[C]):
    """One node on trio: ``async with`` a nursery, ``await nursery.start(node.run)``.

    ``advertise`` is the address peers are told (default: the bound address; a port of 0 takes
    the bound port).  ``events`` is a subscription opened at construction (so nothing from the
    start is missed) unless ``subscribe_default=False``; more consumers call ``subscribe()``.
    Subclasses build the core (``_make_core``) and may take effects first (``_consume``).
    """

    def __init__(
        self,
        config: SwimConfig,
        name: str,
        transport: Transport,
        *,
        advertise: Address | None = None,
        rng: random.Random | None = None,
        logger: Any = None,
        sizes: BusSizes = DEFAULT_SIZES,
        envelope: Envelope | None = None,
        subscribe_default: bool = True,
    ) -> None:
        self.config = config
        self.name = name
        self.transport = transport
        self.envelope = envelope
        self._advertise = advertise
        self._rng = rng if rng is not None else random.Random()
        self._log: Any = logger if logger is not None else structlog.get_logger().bind(node=name)
        self._sizes = sizes
        self._core: C | None = None
        self._input: trio.MemorySendChannel[CoreInput] | None = None
        self._subscribers: Subscribers[NodeEvent] = Subscribers(classify, sizes.events)
        self._subscribers.on_drop = self._on_drop
        self._events = self._subscribers.subscribe() if subscribe_default else None
        self._local: deque[CoreInput] = deque()  # inputs the driver makes for itself
        self._join_waiters: dict[int, Reply[JoinDone]] = {}
        self._leave_waiters: list[Reply[LeaveDone]] = []
        self._push_pull_period = config.push_pull_interval
        self._cancel: trio.CancelScope | None = None
        self._stop_requested = ""
        self._streams_active = 0
        self._streams_failed = 0
        self._outgoing_dropped = 0
        self._sending = False  # the sender task holds a packet it has not sent yet
        self._violations = 0
        self._streams: trio.Nursery | None = None  # the driver's nursery for short tasks
        self.addr: Address | None = None
        # Set before ``run`` (``api.Node`` does): every timer wake of the driver loop reports
        # how late it ran.
        self.loop_lag: LoopLag | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the node until cancelled (or ``stop()``); ``started(advertise address)``."""
        input_send, input_recv = trio.open_memory_channel[CoreInput](self._sizes.input)
        out_send, out_recv = trio.open_memory_channel[SendPacket | Flush](self._sizes.outgoing)
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
                    # The core exists before the driver reads its first packet.
                    self._core = self._make_core(adv, trio.current_time())
                    self._input = input_send
                    nursery.start_soon(self._sender, out_recv)
                    nursery.start_soon(self._drive, self._core, input_recv.clone(), out_send)
                    self._log.info("node_started", addr=str(adv), bind=str(bound))
                    task_status.started(adv)
            finally:
                self._input = None
                # Consumers see the end of their queues: ``run`` is one-shot.
                self._subscribers.close()
                self._on_stopped()
                self._log.info("node_stopped")

    def _make_core(self, adv: Address, now: float) -> C:
        raise NotImplementedError

    def _on_stopped(self) -> None:
        """Hook: the node has stopped (subclasses end what is still waiting)."""

    def _consume(self, eff: object) -> bool:
        """Hook: take an effect before it is logged and published (True: it is handled)."""
        return False

    def _spawn(self, fn: Callable[..., Any], *args: object) -> None:
        """Start a short task in the driver's nursery (from ``_consume``; never waits)."""
        if self._streams is not None:
            self._streams.start_soon(fn, *args)

    def stop(self) -> None:
        """Cancel ``run`` (an abrupt stop: call ``leave`` first for a graceful one)."""
        if self._cancel is not None:
            self._cancel.cancel()

    def request_stop(self, reason: str) -> None:
        """Stop after the current driver step (a core that stops itself, e.g. Serf's
        name-conflict loser)."""
        self._stop_requested = reason

    @property
    def stopped_by_core(self) -> str:
        """Why the node stopped itself ("" if it did not): e.g. ``name_conflict``."""
        return self._stop_requested

    @property
    def running(self) -> bool:
        return self._input is not None

    # -- commands -------------------------------------------------------------------------

    async def call(
        self,
        fn: Callable[[C, float], tuple[int, Sequence[object]]],
        *,
        refusals: tuple[type[Exception], ...] = (),
        on_value: Callable[[int], None] | None = None,
    ) -> Outcome:
        """Run ``fn(core, now)`` in the driver; its effects are executed."""
        reply: Reply[Outcome] = Reply()
        await self._post(Call(fn, reply, refusals, on_value))
        return await reply.wait()

    async def join(self, seeds: Sequence[Address]) -> int:
        """Push/pull with each seed; the number synced.  ``JoinError`` if none could be."""
        return await self._join(lambda core, now: core.join(now, seeds))

    async def _join(self, start: Callable[[C, float], tuple[int, Sequence[object]]]) -> int:
        waiter: Reply[JoinDone] = Reply()
        await self.call(start, on_value=lambda rid: self._join_waiters.__setitem__(rid, waiter))
        done = await waiter.wait()
        if done.joined == 0:
            raise JoinError(done.errors)
        return done.joined

    async def leave(self, timeout: float) -> bool:  # noqa: ASYNC109 - a protocol timer
        """Broadcast our leave; True if the broadcast timed out (memberlist's Leave).

        ``timeout`` is the core's broadcast timer (memberlist's Leave timeout), not a cancel
        scope: the core answers ``LeaveDone(timed_out=True)`` when it expires.
        """
        reply: Reply[LeaveDone] = Reply()
        await self._post(LeaveCommand(timeout, reply))
        done = await reply.wait()
        return done.timed_out

    @property
    def events(self) -> EventQueue[NodeEvent]:
        """The subscription opened at construction (``subscribe_default``)."""
        if self._events is None:
            raise RuntimeError("this node was made with subscribe_default=False; use subscribe()")
        return self._events

    def subscribe(
        self, size: int | None = None, accept: Callable[[object], bool] | None = None
    ) -> EventQueue[NodeEvent]:
        """A new event queue under the delivery contract (``runtime.delivery``); ``accept``
        filters what it takes (what it rejects is neither queued nor counted)."""
        return self._subscribers.subscribe(size, accept)

    # -- views ---------------------------------------------------------------------------

    @property
    def core(self) -> C | None:
        """The core, for read-only views (``None`` before ``run``)."""
        return self._core

    def members(self) -> list[MemberInfo]:
        """Every known node including ourselves, in any state ([] before ``run``)."""
        core = self._core
        return core.memberlist.members() if core is not None else []

    def member(self, name: str) -> MemberInfo | None:
        core = self._core
        return core.memberlist.member(name) if core is not None else None

    def core_statistics(self) -> SwimStats | None:
        """The core's memberlist counters (``None`` before ``run``)."""
        return self._core.statistics() if self._core is not None else None

    def delivery_statistics(self) -> DeliveryStats:
        return self._subscribers.statistics()

    def runtime_counters(self) -> dict[str, int]:
        """The driver's own counters (the ``driver`` stats section)."""
        return {
            "outgoing_dropped": self._outgoing_dropped,
            "violations": self._violations,
            "streams_active": self._streams_active,
            "streams_failed": self._streams_failed,
        }

    def driver_statistics(self) -> DriverStats:
        return DriverStats(
            core=self.core_statistics(),
            transport=self.transport.statistics(),
            delivery=self.delivery_statistics(),
            outgoing_dropped=self._outgoing_dropped,
            violations=self._violations,
            streams_active=self._streams_active,
            streams_failed=self._streams_failed,
        )

    def statistics(self) -> DriverStats:
        return self.driver_statistics()

    # -- tasks ----------------------------------------------------------------------------

    async def _post(self, item: CoreInput) -> None:
        if self._input is None:
            raise NotRunningError("the node is not running")
        await self._input.send(item)

    async def _on_stream(self, data: bytes) -> bytes | None:
        """Transport callback for one inbound stream request (runs in the connection's task)."""
        reply: Reply[bytes | None] = Reply()
        try:
            await self._post(StreamRequest(data, reply))
        except (NotRunningError, trio.ClosedResourceError, trio.BrokenResourceError):
            return None
        return await reply.wait()

    def _first_rounds(self, now: float) -> dict[Round, float]:
        """When each periodic round first runs: after a random stagger (memberlist does too)."""
        rounds: dict[Round, float] = {}
        for which in ROUNDS:
            if which == "push_pull" and self.config.push_pull_interval <= 0:
                continue
            rounds[which] = now + self._rng.uniform(0, self._period(which))
        return rounds

    def _period(self, which: Round) -> float:
        if which == "probe":
            return self.config.probe_interval
        if which == "gossip":
            return self.config.gossip_interval
        return self._push_pull_period

    async def _sender(self, out: trio.MemoryReceiveChannel[SendPacket | Flush]) -> None:
        async with out:
            async for pkt in out:
                if isinstance(pkt, Flush):
                    # Everything queued before the marker is on the wire now.
                    for w in pkt.waiters:
                        w.set(pkt.done)
                    continue
                self._sending = True
                try:
                    await self.transport.send_packet(pkt.addr, pkt.data)
                finally:
                    self._sending = False

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
        core: C,
        inputs: trio.MemoryReceiveChannel[CoreInput],
        out: trio.MemorySendChannel[SendPacket | Flush],
    ) -> None:
        """The core driver: the only task that calls the core's mutating methods."""
        # The periodic rounds (probe, gossip, push/pull) are timers of this loop, not tasks of
        # their own: a round that falls due runs in the wake that noticed it, with no channel
        # hop and no second task to schedule.  On an idle agent every wake-up is most of the
        # CPU it uses, so this halves the cost of each timer.
        rounds = self._first_rounds(trio.current_time())
        async with inputs, out, trio.open_nursery() as streams:
            self._streams = streams
            while True:
                deadline = core.next_deadline()
                if "gossip" in rounds and not core.has_broadcasts():
                    # Nothing to gossip: no wake-up for the round (memberlist's gossip()
                    # returns at once then).
                    wake = min((at for w, at in rounds.items() if w != "gossip"), default=math.inf)
                else:
                    wake = min(rounds.values(), default=math.inf)
                if deadline is not None and deadline < wake:
                    wake = deadline
                item: CoreInput | None = None
                if self._local:
                    item = self._local.popleft()
                    await trio.lowlevel.checkpoint()
                else:
                    with trio.move_on_at(wake):
                        item = await inputs.receive()
                now = trio.current_time()
                late = now - wake if wake <= now else 0.0
                if wake <= now and self.loop_lag is not None:
                    self.loop_lag.record(late)  # how late this timer ran
                effects: list[object] = []
                if late >= STALL:
                    # The loop stalled.  What arrived meanwhile is older than the timers now
                    # due: an ack in the socket buffer would lose to the probe timeout it
                    # answers, a refutation to the suspicion timer it cancels.  Read it first.
                    core.note_stall(now, late)  # counted in the core's stats: ``stalls``
                    if item is not None:
                        effects.extend(self._dispatch(core, now, item))
                        item = None
                    effects.extend(await self._catch_up(core, inputs, now))
                gossip_at = rounds.get("gossip")
                if gossip_at is not None and gossip_at <= now and not core.has_broadcasts():
                    # Gossip ticks that passed with nothing to send are skipped before this
                    # wake's core calls, so a broadcast one of them queues goes out at the next
                    # tick of the round's phase, as with a ticker that never stopped.
                    rounds["gossip"] = next_tick(gossip_at, self._period("gossip"), now)
                if deadline is not None and now >= deadline:
                    effects.extend(core.tick(now))
                for which, at in rounds.items():
                    if at <= now:
                        effects.extend(self._round(core, now, which))
                        rounds[which] = next_tick(at, self._period(which), now)
                if item is not None:
                    effects.extend(self._dispatch(core, now, item))
                self._execute(effects, out, streams)
                if self._stop_requested:
                    self.stop()
                    return

    async def _catch_up(
        self, core: C, inputs: trio.MemoryReceiveChannel[CoreInput], now: float
    ) -> list[object]:
        """Dispatch the input that piled up during a stall, before the due timers run.

        The transport's readers were stalled too: a few checkpoints let them move the
        kernel's backlog into ``inputs`` (they drain bursts), and each batch is dispatched as
        it comes.  Bounded: at most ``CATCH_UP_YIELDS`` checkpoints, stopping once one brings
        nothing (after the first ``CATCH_UP_MIN``, which give every reader its turn).
        """
        effects: list[object] = []
        for turn in range(CATCH_UP_YIELDS):
            await trio.lowlevel.checkpoint()
            got = 0
            while True:
                try:
                    item = inputs.receive_nowait()
                except trio.WouldBlock:
                    break
                effects.extend(self._dispatch(core, now, item))
                got += 1
            if not got and turn + 1 >= CATCH_UP_MIN:
                break
        return effects

    def _dispatch(self, core: C, now: float, item: CoreInput) -> Sequence[object]:
        if isinstance(item, Datagram):
            return core.handle_packet(now, item.src, item.data)
        if isinstance(item, StreamRequest):
            answer, effects = core.handle_stream(now, item.data)
            item.reply.set(answer)
            return effects
        if isinstance(item, StreamOutcome):
            return core.stream_result(now, item.stream_id, item.reply, item.error)
        if isinstance(item, LeaveCommand):
            self._leave_waiters.append(item.reply)
            return core.leave(now, item.timeout)
        try:
            value, effects = item.call(core, now)
        except item.refusals as exc:
            item.reply.set(Outcome(error=str(exc)))
            return []
        if item.on_value is not None:
            item.on_value(value)
        item.reply.set(Outcome(value=value))
        return effects

    def _round(self, core: C, now: float, which: Round) -> Sequence[object]:
        if which == "probe":
            return core.probe(now)
        if which == "gossip":
            return core.gossip(now)
        effects = core.push_pull(now)
        self._push_pull_period = core.push_pull_period()
        return effects

    def _execute(
        self,
        effects: list[object],
        out: trio.MemorySendChannel[SendPacket | Flush],
        streams: trio.Nursery,
    ) -> None:
        """Carry out effects without ever waiting (the driver must not block)."""
        for eff in effects:
            if isinstance(eff, SendPacket):
                # Straight onto the socket when nothing is queued before it (order kept, no
                # task hop); else, or when the socket would block, through the sender.
                if (
                    not self._sending
                    and out.statistics().current_buffer_used == 0
                    and self.transport.send_packet_nowait(eff.addr, eff.data)
                ):
                    continue
                try:
                    out.send_nowait(eff)
                except trio.WouldBlock:
                    self._outgoing_dropped += 1
                    if _worth_a_line(self._outgoing_dropped):  # a flood writes a few lines
                        self._log.warning(
                            "packet_dropped",
                            reason="send_queue_full",
                            to=str(eff.addr),
                            total=self._outgoing_dropped,
                        )
                continue
            if isinstance(eff, OpenStream):
                if self._streams_active >= self._sizes.max_streams:
                    self._streams_failed += 1
                    self._local.append(StreamOutcome(eff.stream_id, None, "too many streams"))
                else:
                    self._streams_active += 1
                    streams.start_soon(self._run_stream, eff)
                continue
            if isinstance(eff, LeaveDone):
                # The core retires our dead{From: us} broadcast when it *hands out* its last
                # copy; those packets are still in the outgoing channel.  Answer leave() only
                # once the sender has put them on the wire, or a caller that stops the node
                # right after leave() would drop its own goodbye.
                waiters, self._leave_waiters = self._leave_waiters, []
                try:
                    out.send_nowait(Flush(tuple(waiters), eff))
                except trio.WouldBlock:
                    for w in waiters:
                        w.set(eff)
            elif isinstance(eff, JoinDone):
                waiter = self._join_waiters.pop(eff.request_id, None)
                if waiter is not None:
                    waiter.set(eff)
            elif isinstance(eff, Violation):
                self._violations += 1
            elif self._consume(eff):
                continue
            report(self._log, eff)
            self._subscribers.publish(eff)  # type: ignore[arg-type]

    def _on_drop(self, kind: str, total: int) -> None:
        if _worth_a_line(total):
            self._log.warning("event_dropped", kind=kind, total=total)


class MembershipNode(CoreDriver[Memberlist]):
    """A bare memberlist node on trio (the runner, the demo, the memberlist tests).

    ``events`` receives every ``MemberEvent``, ``Notice``, ``Violation``, ``JoinDone`` and
    ``LeaveDone`` under the delivery contract; ``delegate`` supplies node meta and user data.
    """

    def __init__(
        self,
        config: SwimConfig,
        name: str,
        transport: Transport,
        *,
        delegate: Delegate | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, name, transport, **kwargs)
        self._delegate = delegate

    def _make_core(self, adv: Address, now: float) -> Memberlist:
        return Memberlist(
            self.config,
            self.name,
            adv,
            rng=self._rng,
            now=now,
            delegate=self._delegate,
            sealer=self.envelope,
        )
