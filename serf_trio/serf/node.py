"""``SerfNode``: the sans-IO Serf layer wrapped around a ``swim.node.Memberlist``.

It exposes the same driving API as ``Memberlist`` (probe/gossip/push_pull/tick/handle_packet/
handle_stream/stream_result/join/leave, ``next_deadline``) so the runtime and the simulator
drive either the same way.  Every memberlist effect passes through except ``MemberEvent``,
which updates the Serf member table and becomes ``SerfMemberEvent``; Serf adds user events,
query deliveries, query progress and direct-UDP query responses (``effects``).

``SerfNode`` is a façade over components that each own one concern (serf serf.go, split):

* ``membership.Membership``: member status from memberlist events and join/leave intents,
  recent intents, the intent queue, the watch over "leaving" members (SERF.md 5, 6);
* ``reaper.Reaper``: prune, reap and reconnect of failed/left members, and their timers (6, 10);
* ``events.UserEvents``: user events and the event queue (7);
* ``queries.Queries``: queries we started, queries delivered to us, responses and relays (8);
* ``internal_queries.InternalQueries``: ``_serf_*`` queries incl. key queries, and name-conflict
  resolution (8.6, 9);
* ``pushpull.StateExchange``: the push/pull state (type 2);
* ``leave.GracefulLeave``: our own leave, intent first, then memberlist's (6);
* ``delegate.SerfDelegate``: what memberlist calls us for (messages, broadcasts, state, pings);
* ``coordinate.NodeCoordinates``: Vivaldi (11).

They share a ``context.NodeContext`` (config, identity, RNG, outbox, member table) and get
anything else passed in.  The node itself keeps the three Lamport clocks, its lifecycle (alive,
leaving, left, shutdown), its tags, and the plumbing that runs one entry point: the memberlist
call, the translation of its effects, then the work that is due, in a fixed order.  Time is
always the ``now`` argument; randomness the injected ``rng``.  Timers live in
``timers.TimerHeap`` s owned by the components, so ``next_deadline`` is the minimum of a few
heap tops, never a scan.

The deliberate improvements over Serf 0.9.4 (a restarted member is never stuck "leaving") are
``membership``'s; see its docstring.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import field
from typing import Protocol

from serf_trio.record import record

from ..swim.api import (
    Address,
    Effect,
    JoinDone,
    LeaveDone,
    MemberEvent,
    MemberInfo,
    Notice,
    SendPacket,
)
from ..swim.broadcast import TransmitLimitedQueue
from ..swim.config import SwimConfig
from ..swim.members import NodeRecord
from ..swim.node import Memberlist, SwimStats
from ..wire.messages import DEFAULT_VSN
from .config import SerfConfig
from .context import NodeContext
from .coordinate import Coordinate, NodeCoordinates, VivaldiClient
from .counters import SerfCounters
from .delegate import SerfDelegate
from .effects import (
    Outbox,
    QueryUpdate,
    SerfEffect,
    SerfMemberEvent,
    SerfQueryEvent,
    SerfUserEvent,
)
from .errors import SerfError
from .events import EventBuffer, UserEvents
from .internal import NodeEnvelope
from .internal_queries import InternalQueries
from .lamport import LamportClock
from .leave import GracefulLeave
from .members import STATUS_CODES, MemberState, RecentIntents, SerfMember
from .membership import Membership
from .messages import Leave, encode
from .pushpull import StateExchange
from .queries import Queries
from .query import QueryBuffer, QueryParamsLike
from .reaper import Reaper
from .tags import encode_tags


class RestoredState(Protocol):
    """What ``SerfNode`` reads from a snapshot (``serf.snapshot.SnapshotState`` has it)."""

    @property
    def clock(self) -> int: ...
    @property
    def event_clock(self) -> int: ...
    @property
    def query_clock(self) -> int: ...


@record
class SeedMember:
    """One member of a converged cluster for ``SerfNode.assume_converged``: its memberlist
    view (``info``, as the member's own ``memberlist.local`` reads), its tags (``info.meta``
    decoded; the same dict may be shared by every node: members' tags are replaced, never
    mutated) and the Lamport time of its status (its join intent's)."""

    info: MemberInfo
    tags: dict[str, str]
    status_ltime: int


class SharedTables:
    """What the cores of one converged bootstrap share (``SerfNode.assume_converged``;
    simulation only): one memberlist record and one Serf member record per member, each
    copied by a node only when that node changes it (copy-on-write)."""

    def __init__(self) -> None:
        self.swim: dict[str, NodeRecord] = {}
        self.serf: dict[str, MemberState] = {}


@record
class SerfStats:
    """Serf-level counters (memberlist's are ``SerfNode.statistics()``)."""

    members: int
    alive: int
    leaving: int
    left: int
    failed: int
    member_time: int
    event_time: int
    query_time: int
    intent_queue: int
    event_queue: int
    query_queue: int
    pending_queries: int
    coordinate_resets: int
    member_events: dict[str, int] = field(default_factory=dict)  # by kind: member-join, ...
    flaps: int = 0  # a failed member came back within flap_timeout
    user_events_sent: int = 0
    user_events_received: int = 0  # delivered here, after dedupe
    user_events_by_name: dict[str, int] = field(default_factory=dict)  # received, by name
    user_events_too_old: int = 0  # dropped on arrival: older than the buffer window or floor
    queries_sent: int = 0
    queries_received: int = 0  # delivered here
    queries_by_name: dict[str, int] = field(default_factory=dict)  # received, by name
    queries_too_old: int = 0  # dropped on arrival, as for user events
    # Broadcasts dropped from a full queue (max_queue_depth: the oldest go first, as in serf
    # checkQueueDepth) before they were sent their full number of times.
    intent_queue_dropped: int = 0
    event_queue_dropped: int = 0
    query_queue_dropped: int = 0
    query_acks: int = 0  # received by us as originator
    query_responses: int = 0  # received by us as originator
    messages_sent: int = 0  # Serf-layer messages (broadcast transmissions + direct packets)
    messages_received: int = 0


class SerfNode:
    """One Serf node as a pure state machine; see the module docstring and ``effects``.

    Notices it adds (``Notice.event``: fields): ``serf_name_conflict`` (node, existing,
    claimed) about another node's name; ``name_conflict_resolution`` (node, matching,
    responses, won) after our ``_serf_conflict`` query ends - when ``won`` is False the driver
    must shut this node down *without* leaving (serf: "minority in name conflict resolution,
    quitting"); ``leave_intent_timeout`` when our leave intent was not fully sent within
    ``broadcast_timeout`` (we go on with the memberlist leave); ``leaving_cleared`` (node,
    reason) when a stale "leaving" was undone; ``reconnect`` (node, addr) when a failed
    member is retried; ``serf_violation`` is never used: bad Serf input is a ``Violation``.
    """

    def __init__(
        self,
        serf_config: SerfConfig,
        swim_config: SwimConfig,
        name: str,
        addr: Address,
        *,
        rng: random.Random,
        now: float,
        tags: dict[str, str] | None = None,
        vsn: bytes = DEFAULT_VSN,
        restored: RestoredState | None = None,
        envelope: NodeEnvelope | None = None,
        persist_keyring: bool = False,
    ) -> None:
        """``envelope`` is the node's keyring and sealing overhead (``wire.crypto.Envelope``;
        ``None``: no encryption).  With ``persist_keyring`` a key query that changes the
        keyring is answered only after the driver's ``key_persisted`` (see ``KeyringChanged``).
        """
        self.config = serf_config
        self.swim_config = swim_config
        self.name = name
        self.addr = addr
        self._tags = dict(tags or {})
        self._meta_bytes = encode_tags(self._tags)  # TagsTooLarge past 512 bytes
        self._state = "alive"  # alive | leaving | left | shutdown
        self.clock = LamportClock()
        self.event_clock = LamportClock()
        self.query_clock = LamportClock()
        event_buffer = EventBuffer(serf_config.event_buffer)
        query_buffer = QueryBuffer(serf_config.query_buffer)
        if restored is not None:
            # serf Create with a snapshot: witness the saved clocks; older events and queries
            # than the saved ones are never delivered again.
            self.clock.witness(restored.clock)
            self.event_clock.witness(restored.event_clock)
            self.query_clock.witness(restored.query_clock)
            event_buffer.min_time = restored.event_clock + 1
            query_buffer.min_time = restored.query_clock + 1
        self._members: dict[str, MemberState] = {}
        intents = RecentIntents(serf_config.recent_intent_timeout)
        n = self._members.__len__
        mult, depth = swim_config.retransmit_mult, serf_config.max_queue_depth
        # Serf's three queues: n counts every Serf member, failed/left ones included.
        self._bq_intents = TransmitLimitedQueue(mult, n, depth)
        self._bq_queries = TransmitLimitedQueue(mult, n, depth)
        self._bq_events = TransmitLimitedQueue(mult, n, depth)
        vivaldi = VivaldiClient(random.Random(rng.getrandbits(64)))  # before memberlist's draws
        self._coords = NodeCoordinates(vivaldi, enabled=not serf_config.disable_coordinates)
        self._serf_joins: dict[int, bool] = {}  # memberlist join request id -> ignore old events
        self._reconnects: set[int] = set()
        # The components.  memberlist comes last, as it needs the delegate (which needs them);
        # they reach it through the node (``self._ml``) once it exists.
        self._out = Outbox()
        self._counters = SerfCounters()
        ctx = NodeContext(
            serf_config,
            name,
            addr,
            rng,
            self._out,
            self._members,
            self._is_alive,
            self._counters,
        )
        self._reaper = Reaper(
            ctx, intents, now=now, rejoin=self._rejoin, forget=self._coords.forget
        )
        self._membership = Membership(
            ctx,
            self.clock,
            intents,
            self._bq_intents,
            self._reaper,
            member_info=lambda name: self._ml.member(name),
        )
        self._queries = Queries(
            ctx,
            swim_config,
            self.query_clock,
            query_buffer,
            self._bq_queries,
            tags=lambda: self._tags,
            user_packet=self._user_packet,
            num_alive=self.num_alive,
            internal=lambda now, q, dest, deadline: self._internal.answer(now, q, dest, deadline),
        )
        self._internal = InternalQueries(
            ctx,
            self._queries,
            envelope=envelope,
            persist_keyring=persist_keyring,
            shutdown=self.shutdown,
        )
        self._events = UserEvents(ctx, self.event_clock, event_buffer, self._bq_events)
        state = StateExchange(
            ctx,
            (self.clock, self.event_clock, self.query_clock),
            self._membership,
            self._events,
            joining_without_replay=lambda: any(self._serf_joins.values()),
        )
        self._leave = GracefulLeave(
            ctx,
            self.clock,
            self._membership,
            begin=self._begin_leave,
            memberlist_leave=lambda now, timeout: self._ml.leave(now, timeout),
        )
        delegate = SerfDelegate(
            ctx,
            self._membership,
            self._events,
            self._queries,
            state,
            self._coords,
            meta=lambda: self._meta_bytes,
            accepting=lambda: self._state != "shutdown",
            user_packet=self._user_packet,
        )
        self._ml = Memberlist(
            swim_config, name, addr, rng=rng, now=now, delegate=delegate, vsn=vsn, sealer=envelope
        )
        # memberlist reports no join for the local node: Serf adds itself (statusLTime 0
        # until its first join intent, as in the captures).
        self._members[name] = MemberState(name, addr, dict(self._tags), "alive", vsn)
        # ... and, like Serf (memberlist notifies the join of the local node too), delivers a
        # member-join for itself: handlers and RPC streams see it first, with the first call.
        self._self_join_pending = True

    def assume_converged(
        self,
        now: float,
        members: Sequence[SeedMember],
        member_clock: int,
        shared: SharedTables | None = None,
    ) -> None:
        """Start as a node of a converged cluster: memberlist knows every one of ``members``
        alive (``Memberlist.assume_converged``), the Serf table has each one alive with its
        tags and status time (ours included, as after our own join intent), the member clock
        reads ``member_clock`` (past every status time: every join intent was witnessed) and
        no intent, event or query is queued.

        For simulation and tests only (``testing.sim.Simulator.bootstrap_converged``); call it
        right after construction.  No member-join is emitted for the others (a converged
        cluster has delivered them); the member-join for ourselves still comes with the
        first call, as it does for any node.  ``shared``, one ``SharedTables`` the caller
        hands to every core of the same bootstrap, makes them share the records of each
        member (see ``Memberlist.assume_converged``).
        """
        if any(m.status_ltime >= member_clock for m in members):
            raise ValueError("member_clock must be past every status time")
        self._ml.assume_converged(
            now, [m.info for m in members], shared.swim if shared is not None else None
        )
        table = self._members
        for m in members:
            info = m.info
            if info.name == self.name:
                table[self.name].status_ltime = m.status_ltime
                continue
            state = shared.serf.get(info.name) if shared is not None else None
            if state is None:
                state = MemberState(info.name, info.addr, m.tags, "alive", info.vsn, m.status_ltime)
                if shared is not None:
                    state.shared = True
                    shared.serf[info.name] = state
            table[info.name] = state
        self.clock.witness(member_clock - 1)

    # ------------------------------------------------------------------ views

    @property
    def memberlist(self) -> Memberlist:
        """The wrapped core (memberlist-level views; do not drive it directly)."""
        return self._ml

    @property
    def state(self) -> str:
        """Our own lifecycle: alive | leaving | left | shutdown."""
        return self._state

    @property
    def local(self) -> SerfMember:
        return self._members[self.name].view()

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    def members(self) -> list[SerfMember]:
        return [m.view() for m in self._members.values()]

    def member(self, name: str) -> SerfMember | None:
        m = self._members.get(name)
        return m.view() if m is not None else None

    def num_alive(self) -> int:
        return self._ml.num_alive()

    def health_score(self) -> int:
        return self._ml.health_score()

    def statistics(self) -> SwimStats:
        return self._ml.statistics()

    def serf_statistics(self) -> SerfStats:
        c = self._counters
        counts = {s: 0 for s in STATUS_CODES}
        for m in self._members.values():
            counts[m.status] = counts.get(m.status, 0) + 1
        return SerfStats(
            members=len(self._members),
            alive=counts["alive"],
            leaving=counts["leaving"],
            left=counts["left"],
            failed=counts["failed"],
            member_time=self.clock.time(),
            event_time=self.event_clock.time(),
            query_time=self.query_clock.time(),
            intent_queue=len(self._bq_intents),
            event_queue=len(self._bq_events),
            query_queue=len(self._bq_queries),
            pending_queries=self._queries.pending,
            coordinate_resets=self._coords.client.resets,
            member_events=dict(c.member_events),
            flaps=c.flaps,
            user_events_sent=c.user_events_sent,
            user_events_received=c.user_events_received,
            user_events_by_name=dict(c.user_events_by_name),
            user_events_too_old=c.user_events_too_old,
            queries_too_old=c.queries_too_old,
            intent_queue_dropped=self._bq_intents.dropped,
            event_queue_dropped=self._bq_events.dropped,
            query_queue_dropped=self._bq_queries.dropped,
            queries_sent=c.queries_sent,
            queries_received=c.queries_received,
            queries_by_name=dict(c.queries_by_name),
            query_acks=c.query_acks,
            query_responses=c.query_responses,
            messages_sent=c.messages_sent,
            messages_received=c.messages_received,
        )

    def push_pull_period(self) -> float:
        return self._ml.push_pull_period()

    def note_stall(self, now: float, seconds: float) -> None:
        """See ``Memberlist.note_stall``."""
        self._ml.note_stall(now, seconds)

    def get_coordinate(self, name: str) -> Coordinate | None:
        return self._coords.get(name, self.name)

    def _is_alive(self) -> bool:
        return self._state == "alive"

    # ------------------------------------------------------------------ driving API

    def probe(self, now: float) -> list[SerfEffect]:
        return self._run(now, lambda: self._ml.probe(now))

    def gossip(self, now: float) -> list[SerfEffect]:
        return self._run(now, lambda: self._ml.gossip(now))

    def has_broadcasts(self) -> bool:
        return self._ml.has_broadcasts()

    def push_pull(self, now: float) -> list[SerfEffect]:
        return self._run(now, lambda: self._ml.push_pull(now))

    def tick(self, now: float) -> list[SerfEffect]:
        return self._run(now, lambda: self._ml.tick(now))

    def handle_packet(self, now: float, src: Address, data: bytes) -> list[SerfEffect]:
        return self._run(now, lambda: self._ml.handle_packet(now, src, data))

    def handle_stream(self, now: float, data: bytes) -> tuple[bytes | None, list[SerfEffect]]:
        box: list[bytes | None] = [None]

        def call() -> list[Effect]:
            reply, effs = self._ml.handle_stream(now, data)
            box[0] = reply
            return effs

        effects = self._run(now, call)
        return box[0], effects

    def stream_result(
        self, now: float, stream_id: int, reply: bytes | None, error: str = ""
    ) -> list[SerfEffect]:
        return self._run(now, lambda: self._ml.stream_result(now, stream_id, reply, error))

    def next_deadline(self) -> float | None:
        """The earliest of memberlist's and our timers: a few heap peeks, no scan."""
        cands = [
            self._ml.next_deadline(),
            self._reaper.next_deadline(),
            self._queries.next_deadline(),
            self._membership.next_deadline(),
            self._leave.deadline(),
        ]
        found = [c for c in cands if c is not None]
        return min(found) if found else None

    # ------------------------------------------------------------------ commands

    def join(
        self, now: float, seeds: Sequence[Address], *, replay: bool = False
    ) -> tuple[int, list[SerfEffect]]:
        """memberlist join, then (on ``JoinDone`` with any success) our join intent.

        Without ``replay`` the events the seeds already had are not delivered (serf
        eventJoinIgnore: the join push/pull raises the event floor).
        """
        rid_box = [0]

        def call() -> list[Effect]:
            rid, effs = self._ml.join(now, seeds)
            rid_box[0] = rid
            self._serf_joins[rid] = not replay
            return effs

        effects = self._run(now, call)
        return rid_box[0], effects

    def leave(self, now: float, timeout: float) -> list[SerfEffect]:
        """Graceful leave (SERF.md 6): leave intent, wait for it to be sent (at most
        ``broadcast_timeout``), then memberlist leave with ``timeout``; ``LeaveDone`` at the
        end.  The runtime then waits ``leave_propagate_delay`` before stopping."""
        return self._run(now, lambda: self._leave.start(now, timeout))

    def _begin_leave(self) -> None:
        self._state = "leaving"

    def user_event(self, now: float, name: str, payload: bytes, coalesce: bool) -> list[SerfEffect]:
        """Send a user event; ``SerfError`` (Serf's text) past ``user_event_size_limit``."""
        msg, raw = self._events.prepare(name, payload, coalesce)

        def call() -> list[Effect]:
            self._events.send(msg, raw)
            self._counters.user_events_sent += 1
            return []

        return self._run(now, call)

    def query(self, now: float, params: QueryParamsLike) -> tuple[int, list[SerfEffect]]:
        """Start a query; its acks/responses and final ``done`` arrive as ``QueryUpdate``."""
        qid, q, raw = self._queries.start(now, params)

        def call() -> list[Effect]:
            self._queries.originate(now, q, raw)
            self._counters.queries_sent += 1
            return []

        return qid, self._run(now, call)

    def respond(self, now: float, token: int, payload: bytes) -> list[SerfEffect]:
        """Answer a delivered query (``SerfQueryEvent.token``); ``SerfError`` with Serf's text
        for a late, second or oversized response."""
        q, resp, raw = self._queries.prepare_response(now, token, payload)

        def call() -> list[Effect]:
            self._queries.send_response(q.dest, q.source_node, q.relay_factor, resp, raw)
            return []

        return self._run(now, call)

    def key_persisted(self, now: float, token: int, error: str = "") -> list[SerfEffect]:
        """The driver has written the keyring after ``KeyringChanged(token=...)``: answer the
        key query (``Result`` false with ``error`` if the write failed, as Serf does)."""
        q = self._queries.pop_incoming(token)
        if q is None or now > q.deadline:
            return []

        def call() -> list[Effect]:
            self._internal.send_persisted(q, error)
            return []

        return self._run(now, call)

    def set_tags(self, now: float, tags: dict[str, str]) -> list[SerfEffect]:
        """New tags: memberlist re-announces us (incarnation + 1); peers raise member-update.
        ``TagsTooLarge`` (Serf's text) past 512 encoded bytes, with nothing changed."""
        meta = encode_tags(tags)
        self._tags = dict(tags)
        self._meta_bytes = meta
        return self._run(now, lambda: self._ml.update_meta(now))

    def force_leave(self, now: float, node: str, prune: bool = False) -> list[SerfEffect]:
        """Broadcast a leave intent for another node: failed -> left, ``prune`` erases it."""
        msg = Leave(self.clock.time(), node, prune)
        self.clock.increment()

        def call() -> list[Effect]:
            self._membership.handle_leave_intent(now, msg)
            if self._membership.has_alive_peers():
                self._bq_intents.queue(None, encode(msg))
            return []

        return self._run(now, call)

    def shutdown(self) -> None:
        """Stop answering (name-conflict minority); the driver stops calling us."""
        self._state = "shutdown"

    # ------------------------------------------------------------------ plumbing

    def _run(self, now: float, call: Callable[[], list[Effect]]) -> list[SerfEffect]:
        """Run one memberlist call, translate its effects, then Serf's own due work.

        Effects raised inside delegate callbacks (into ``self._out``) come first, then the
        memberlist effects in order; both land in the same list.
        """
        out: list[SerfEffect] = []
        self._out.effects = out
        if self._self_join_pending:
            self._self_join_pending = False
            out.append(SerfMemberEvent("member-join", (self._members[self.name].view(),)))
        raw = call()
        for eff in raw:
            self._translate(now, eff)
        self._after(now)
        self._out.effects = []
        self._count(out)
        return out

    def _count(self, effects: list[SerfEffect]) -> None:
        """Statistics from what this entry point delivers (one isinstance chain per effect)."""
        c = self._counters
        for eff in effects:
            if isinstance(eff, SerfMemberEvent):
                c.member_event(eff.kind, len(eff.members))  # per member
            elif isinstance(eff, SerfUserEvent):
                c.user_event_received(eff.name)
            elif isinstance(eff, SerfQueryEvent):
                c.query_received(eff.name)
            elif isinstance(eff, QueryUpdate):
                if eff.record_type == "ack":
                    c.query_acks += 1
                elif eff.record_type == "response":
                    c.query_responses += 1

    def _translate(self, now: float, eff: Effect) -> None:
        out = self._out
        if isinstance(eff, MemberEvent):
            self._membership.on_member_event(now, eff)
        elif isinstance(eff, JoinDone):
            ignore = self._serf_joins.pop(eff.request_id, None)
            if eff.request_id in self._reconnects:
                self._reconnects.discard(eff.request_id)
                out.emit(Notice("reconnect_done", {"joined": eff.joined}))
                return
            out.emit(eff)
            if ignore is not None and eff.joined > 0 and self._state == "alive":
                self._membership.broadcast_join(now)
        elif isinstance(eff, LeaveDone):
            self._leave.memberlist_done()
            self._state = "left"
            out.emit(eff)
        elif isinstance(eff, Notice) and eff.event == "name_conflict":
            out.emit(eff)
            self._internal.on_name_conflict(now, eff)
        else:
            out.emit(eff)

    def _after(self, now: float) -> None:
        """Serf's due work after every entry point, in a fixed order: our leave intent, the
        leaving watch, then the timers (queries, then prune/reap/reconnect)."""
        for eff in self._leave.step(now):
            self._translate(now, eff)
        self._membership.check_leaving(now)
        self._queries.run_due(now, self._internal.query_done)
        self._reaper.run_due(now)

    def _rejoin(self, now: float, addr: Address) -> None:
        """The reaper's reconnect: a memberlist join whose ``JoinDone`` is ``reconnect_done``."""
        rid, effs = self._ml.join(now, [addr])
        self._reconnects.add(rid)
        for eff in effs:
            self._translate(now, eff)

    def _user_packet(self, addr: Address, payload: bytes) -> SendPacket:
        self._counters.messages_sent += 1
        return self._ml.user_packet(addr, payload)


__all__ = ["RestoredState", "SeedMember", "SerfError", "SerfNode", "SerfStats"]
