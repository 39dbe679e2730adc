"""The agent's event pipeline: one task from the node's events to the snapshot file, the
handler scripts and the RPC ``stream`` subscribers.

Rules it owns:

* **One subscription, opened before the node runs** (``Node.events()`` with a generous buffer,
  ``PIPELINE_BUFFER``), so nothing from the start (snapshot rejoin, start join) is missed.
  Under the library's delivery contract member events are never dropped (they coalesce per
  member while the pipeline lags); user events and queries beyond the buffer are dropped and
  counted (``stats`` section ``pipeline``, ``queue.*``).
* **Order**: every Serf event goes first to the snapshot writer (raw, as Serf's snapshotter sees
  it; the member clock is recorded after each member event and every 500 ms, since intents move
  it too), then through ``EventCoalescer`` (member events always 3 s / 1 s, user events only
  when sent with coalesce, as the Serf agent configures it; queries pass at once), then to the
  handler supervisor and to every RPC ``stream`` subscriber whose filter matches.
* **Nothing in it waits on a consumer**: the supervisor's ``enqueue`` and the subscribers'
  channels (``EVENT_BUFFER``, 512 each, RPC.md 4.1) drop when full (``stream_dropped``).
* **Queries**: a handler's output (first non-empty exit-0 run wins) answers the query
  (``make_supervisor``'s respond callback); RPC streams receive query records with a token for
  ``respond``.
* It waits on the node's events with the coalescer's next deadline as its timeout, so a quiet
  window is flushed on time; when the node stops, what the coalescer holds is delivered and the
  pipeline ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from serf_trio.api import EventQueue, Node, NotRunningError, SerfError
from serf_trio.api.events import Event, MemberEvent, is_event
from serf_trio.record import record
from serf_trio.rpc.api import EventRecord
from serf_trio.runtime.delivery import DeliveryStats
from serf_trio.runtime.handlers import (
    HandlerSupervisor,
    RespondFn,
    ResponseRejected,
    SupervisorConfig,
)
from serf_trio.serf.coalesce import CoalesceConfig, EventCoalescer
from serf_trio.serf.config import SerfConfig
from serf_trio.serf.filters import EventFilter
from serf_trio.serf.handler_env import max_response_payload

from .config import AgentConfig
from .records import Subscription, event_record

if TYPE_CHECKING:
    from .snapshot_writer import SnapshotWriter

EVENT_BUFFER = 512  # per ``stream`` subscriber (RPC.md 4.1), lossy
PIPELINE_BUFFER = 8192  # user events / queries the pipeline's node subscription may hold
SNAPSHOT_CLOCK_INTERVAL = 0.5  # serf snapshotter: the member clock is recorded every 500 ms
_HANDLER_COUNTERS = ("queued", "runs", "failures", "timeouts", "dropped", "truncated", "responses")

MemberClock = Callable[[], "int | None"]  # the Serf core's member clock (None: not running)


@record
class PipelineStatistics:
    received: int  # Serf events taken from the node
    delivered: int  # (coalesced) events handed to the handlers and the streams
    stream_subscribers: int
    stream_dropped: int  # stream records dropped for slow RPC subscribers
    queue: DeliveryStats  # the pipeline's own node subscription (delivery contract)


class EventPipeline:
    """The event task (module docstring): ``nursery.start_soon(pipeline.run)`` after the node
    has started; ``subscribe`` adds an RPC ``stream`` subscriber."""

    def __init__(
        self,
        node: Node,
        supervisor: HandlerSupervisor,
        serf: SerfConfig,
        *,
        snapshot: SnapshotWriter | None,
        member_clock: MemberClock,
    ) -> None:
        # Subscribed now, before the node runs: the first events are not missed.
        self.events: EventQueue[Event] = node.events("*", buffer=PIPELINE_BUFFER)
        self.supervisor = supervisor
        self.snapshot = snapshot
        self._member_clock = member_clock
        # The Serf agent's coalescing: member events always, user events when sent with CC.
        self._coalescer = EventCoalescer(
            CoalesceConfig(
                serf.coalesce_period,
                serf.quiescent_period,
                serf.user_coalesce_period,
                serf.user_quiescent_period,
            )
        )
        self._subs: list[tuple[EventFilter, trio.MemorySendChannel[EventRecord]]] = []
        self.received = 0
        self.delivered = 0
        self.stream_dropped = 0

    def subscribe(self, filt: EventFilter) -> Subscription[EventRecord]:
        """A new RPC ``stream`` subscriber, fed from now on (not from its first ``__anext__``:
        events right after the RPC reply must not be lost).  Dropped when its reader is gone."""
        send, recv = trio.open_memory_channel[EventRecord](EVENT_BUFFER)
        self._subs.append((filt, send))
        return Subscription(recv, send.close)

    def statistics(self) -> PipelineStatistics:
        return PipelineStatistics(
            received=self.received,
            delivered=self.delivered,
            stream_subscribers=len(self._subs),
            stream_dropped=self.stream_dropped,
            queue=self.events.statistics(),
        )

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            if self.snapshot is not None:
                nursery.start_soon(self._snapshot_clock, self.snapshot)
            await self._pump()
            nursery.cancel_scope.cancel()

    async def _snapshot_clock(self, writer: SnapshotWriter) -> None:
        """Record the member clock every 500 ms (it also moves with intents, not only events)."""
        while True:
            await trio.sleep(SNAPSHOT_CLOCK_INTERVAL)
            t = self._member_clock()
            if t is not None:
                writer.clock(t)

    async def _pump(self) -> None:
        coalescer = self._coalescer
        while True:
            deadline = coalescer.next_deadline()
            ev: object = None
            ended = False
            with trio.move_on_at(math.inf if deadline is None else deadline):
                try:
                    ev = await self.events.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    ended = True
            now = trio.current_time()
            ready = coalescer.flush(now)
            if is_event(ev):
                self.received += 1
                if self.snapshot is not None:
                    self.snapshot.record(ev)
                    t = self._member_clock() if isinstance(ev, MemberEvent) else None
                    if t is not None:
                        self.snapshot.clock(t)
                ready.extend(coalescer.add(now, ev))
            if ended:
                ready.extend(coalescer.drain())
            for item in ready:
                self._deliver(item)
            if ended:
                return

    def _deliver(self, ev: object) -> None:
        """One (coalesced) event to the handlers and the matching RPC streams; never waits."""
        self.delivered += 1
        self.supervisor.enqueue(ev)
        if not self._subs:
            return  # no RPC stream: skip building the record
        rec = event_record(ev)
        if rec is None:
            return
        for sub in list(self._subs):
            filt, send = sub
            if not filt.match(ev):
                continue
            try:
                send.send_nowait(rec)
            except trio.WouldBlock:
                self.stream_dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subs.remove(sub)


def make_supervisor(
    cfg: AgentConfig, node: Node, tags: dict[str, str], logger: object
) -> HandlerSupervisor:
    """The handler supervisor for ``cfg``'s handlers; a query handler's output answers the
    query through ``node``."""
    return HandlerSupervisor(
        cfg.event_handlers,
        self_name=cfg.node_name,
        self_tags=tags,
        respond=_respond_by_token(node),
        config=SupervisorConfig(
            timeout=cfg.handler_timeout,
            kill_grace=cfg.handler_kill_grace,
            max_response=max_response_payload(cfg.query_response_size_limit, cfg.node_name),
        ),
        logger=logger,
    )


def _respond_by_token(node: Node) -> RespondFn:
    async def respond(token: object, payload: bytes) -> None:
        if not isinstance(token, int):
            raise ResponseRejected("not a query token")
        try:
            await node.respond(token, payload)  # the supervisor holds only the token
        except (SerfError, NotRunningError) as exc:
            raise ResponseRejected(str(exc)) from None

    return respond


def handler_totals(supervisor: HandlerSupervisor) -> dict[str, int]:
    """The ``handlers`` stats section: the number of handlers and their summed counters."""
    per_handler = supervisor.statistics()
    out = {"handlers": len(per_handler)}
    for name in _HANDLER_COUNTERS:
        out[name] = sum(getattr(s, name) for s in per_handler)
    return out
