"""``SerfNode``: the sans-IO Serf layer wrapped around a ``swim.node.Memberlist``.

It exposes the same driving API as ``Memberlist`` (probe/gossip/push_pull/tick/handle_packet/
handle_stream/stream_result/join/leave, ``next_deadline``) so the runtime and the simulator
drive either the same way.  Every memberlist effect passes through except ``MemberEvent``,
which updates the Serf member table and becomes ``SerfMemberEvent``; Serf adds user events,
query deliveries, query progress and direct-UDP query responses (``effects``).

What it owns (serf serf.go, split): the three Lamport clocks and intents (SERF.md 5), member
status and the reaper/reconnector (6, 10), user events (7), queries and relays (8), internal
queries and name-conflict resolution (8.6, 9), Vivaldi (11).  Time is always the ``now``
argument; randomness the injected ``rng``.

Deliberate improvements over Serf 0.9.4 (the restart-with-the-same-name problem):

* a member that memberlist reports alive with an incarnation above the one it had when a leave
  intent made it "leaving" has come back (restart or refutation): it is alive again;
* a member cannot stay "leaving" while memberlist keeps it alive longer than
  ``SerfConfig.leaving_timeout`` (a real leave ends in memberlist left/dead long before);
* a memberlist *graceful* leave (dead with From == node) makes a member "left" even if we
  missed its leave intent (Serf would call it failed);
* a restarted node's join intent is sent after the join push/pull has witnessed the cluster's
  member clock, and any leave intent about itself it learns while alive is refuted with a join
  intent at its (now larger) clock, as Serf does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..swim.api import (
    Address,
    Effect,
    JoinDone,
    LeaveDone,
    MemberEvent,
    MemberEventKind,
    MemberInfo,
    Notice,
    State,
    Violation,
)
from ..swim.broadcast import TransmitLimitedQueue
from ..swim.config import SwimConfig
from ..swim.node import Memberlist, SwimStats
from ..wire.codec import DecodeError
from ..wire.messages import DEFAULT_VSN
from .config import SerfConfig
from .coordinate import Coordinate, VivaldiClient, decode_ping_payload, encode_ping_payload
from .delegate import SerfDelegate
from .effects import (
    KeyringChanged,
    QueryUpdate,
    SerfEffect,
    SerfMemberEvent,
    SerfQueryEvent,
    SerfUserEvent,
)
from .events import EventBuffer
from .internal import (
    CONFLICT,
    KEY_QUERIES,
    LIST_KEYS,
    NodeEnvelope,
    answer_key_query,
    conflict_outcome,
    fit_key_list,
    internal_response,
    is_internal,
)
from .lamport import LamportClock
from .members import STATUS_CODES, MemberState, RecentIntents, SerfMember
from .messages import (
    QUERY_FLAG_ACK,
    Join,
    KeyResponse,
    Leave,
    MemberRecord,
    NodeFilter,
    PushPullState,
    Query,
    QueryResponse,
    Relay,
    TagFilter,
    UserEvent,
    decode,
    encode,
    encode_filter,
    encode_key_response,
)
from .query import (
    IncomingQuery,
    OutgoingQuery,
    QueryBuffer,
    QueryParamsLike,
    default_query_timeout,
    filters_match,
)
from .tags import decode_tags, encode_tags

NS = 1_000_000_000


class SerfError(Exception):
    """A command refused; ``str(exc)`` is Serf's error text."""


class RestoredState(Protocol):
    """What ``SerfNode`` reads from a snapshot (``serf.snapshot.SnapshotState`` has it)."""

    @property
    def clock(self) -> int: ...
    @property
    def event_clock(self) -> int: ...
    @property
    def query_clock(self) -> int: ...


@dataclass(frozen=True, slots=True)
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


@dataclass(slots=True)
class _LeaveOp:
    phase: str  # "intent" (waiting for the leave intent to go out) | "memberlist" | "done"
    deadline: float
    bcast_id: int
    timeout: float


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
        self._envelope = envelope
        self._persist_keyring = persist_keyring
        self.swim_config = swim_config
        self.name = name
        self.addr = addr
        self._rng = rng
        self._tags = dict(tags or {})
        self._meta_bytes = encode_tags(self._tags)  # TagsTooLarge past 512 bytes
        self._state = "alive"  # alive | leaving | left | shutdown
        self.clock = LamportClock()
        self.event_clock = LamportClock()
        self.query_clock = LamportClock()
        self._events = EventBuffer(serf_config.event_buffer)
        self._query_buf = QueryBuffer(serf_config.query_buffer)
        if restored is not None:
            # serf Create with a snapshot: witness the saved clocks; older events and queries
            # than the saved ones are never delivered again.
            self.clock.witness(restored.clock)
            self.event_clock.witness(restored.event_clock)
            self.query_clock.witness(restored.query_clock)
            self._events.min_time = restored.event_clock + 1
            self._query_buf.min_time = restored.query_clock + 1
        self._members: dict[str, MemberState] = {}
        self._intents = RecentIntents(serf_config.recent_intent_timeout)
        n = self._num_members
        mult, depth = swim_config.retransmit_mult, serf_config.max_queue_depth
        # Serf's three queues: n counts every Serf member, failed/left ones included.
        self._bq_intents = TransmitLimitedQueue(mult, n, depth)
        self._bq_queries = TransmitLimitedQueue(mult, n, depth)
        self._bq_events = TransmitLimitedQueue(mult, n, depth)
        self._finished: set[int] = set()
        self._vivaldi = VivaldiClient(random.Random(rng.getrandbits(64)))
        self._coords: dict[str, Coordinate] = {}
        self._pending: list[SerfEffect] = []
        self._now = now
        self._tokens = 0
        self._query_ids = 0
        self._outgoing: dict[int, OutgoingQuery] = {}  # by LTime (one outstanding per LTime)
        self._incoming: dict[int, IncomingQuery] = {}  # by token
        self._serf_joins: dict[int, bool] = {}  # memberlist join request id -> ignore old events
        self._reconnects: set[int] = set()
        self._leave: _LeaveOp | None = None
        self._prune_at: dict[str, float] = {}
        self._leaving: set[str] = set()  # other members in status leaving (checked each call)
        self._conflict_running = False
        self._next_reap = now + serf_config.reap_interval
        self._next_reconnect = now + serf_config.reconnect_interval
        self._ml = Memberlist(
            swim_config,
            name,
            addr,
            rng=rng,
            now=now,
            delegate=SerfDelegate(self),
            vsn=vsn,
            sealer=envelope,
        )
        # memberlist reports no join for the local node: Serf adds itself (statusLTime 0
        # until its first join intent, as in the captures).
        self._members[name] = MemberState(name, addr, dict(self._tags), "alive", vsn)

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
            pending_queries=len(self._outgoing),
            coordinate_resets=self._vivaldi.resets,
        )

    def push_pull_period(self) -> float:
        return self._ml.push_pull_period()

    def get_coordinate(self, name: str) -> Coordinate | None:
        if name == self.name:
            return self._vivaldi.coord
        return self._coords.get(name)

    def _num_members(self) -> int:
        return len(self._members)

    # ------------------------------------------------------------------ driving API

    def probe(self, now: float) -> list[SerfEffect]:
        return self._run(now, lambda: self._ml.probe(now))

    def gossip(self, now: float) -> list[SerfEffect]:
        return self._run(now, lambda: self._ml.gossip(now))

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
        cands = [self._ml.next_deadline(), self._next_reap, self._next_reconnect]
        cands.extend(q.deadline for q in self._outgoing.values())
        cands.extend(q.deadline for q in self._incoming.values())
        cands.extend(self._prune_at.values())
        if self._leave is not None and self._leave.phase == "intent":
            cands.append(self._leave.deadline)
        for name in self._leaving:
            m = self._members.get(name)
            if m is not None and m.status == "leaving":
                cands.append(m.leaving_since + self.config.leaving_timeout)
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
        return self._run(now, lambda: self._start_leave(now, timeout))

    def _start_leave(self, now: float, timeout: float) -> list[Effect]:
        if self._leave is not None:
            if self._leave.phase == "done":
                return [LeaveDone(False)]
            return []
        self._state = "leaving"
        msg = Leave(self.clock.time(), self.name)
        self.clock.increment()
        self._handle_leave_intent(now, msg)
        bid = self._bq_intents.queue(None, encode(msg), notify=True)
        self._leave = _LeaveOp("intent", now + self.config.broadcast_timeout, bid, timeout)
        if not self._has_alive_members():
            return self._leave_memberlist(now)
        return []

    def _leave_memberlist(self, now: float) -> list[Effect]:
        op = self._leave
        assert op is not None
        op.phase = "memberlist"
        return self._ml.leave(now, op.timeout)

    def user_event(self, now: float, name: str, payload: bytes, coalesce: bool) -> list[SerfEffect]:
        """Send a user event; ``SerfError`` (Serf's text) past ``user_event_size_limit``."""
        limit = self.config.user_event_size_limit
        if len(name.encode()) + len(payload) > limit:
            raise SerfError(f"user event exceeds configured limit of {limit} bytes before encoding")
        msg = UserEvent(self.event_clock.time(), name, payload, coalesce)
        raw = encode(msg)
        if len(raw) > limit:
            # Wording of the real agent (serf.go UserEvent), checked against it.
            raise SerfError(
                f"encoded user event exceeds configured limit of {limit} bytes after encoding"
            )
        self.event_clock.increment()

        def call() -> list[Effect]:
            # The originator delivers its own event, then gossips it.
            if self._handle_user_event(msg):
                self._bq_events.queue(None, raw)
            return []

        return self._run(now, call)

    def query(self, now: float, params: QueryParamsLike) -> tuple[int, list[SerfEffect]]:
        """Start a query; its acks/responses and final ``done`` arrive as ``QueryUpdate``."""
        filters: list[bytes] = []
        if params.filter_nodes:
            filters.append(encode_filter(NodeFilter(tuple(params.filter_nodes))))
        tag_items = sorted(params.filter_tags.items())
        self._rng.shuffle(tag_items)  # serf: tag filters in map (random) order
        filters.extend(encode_filter(TagFilter(t, e)) for t, e in tag_items)
        timeout = params.timeout if params.timeout > 0 else self._default_query_timeout()
        q = self._new_query(
            params.name,
            params.payload,
            timeout,
            filters=tuple(filters),
            flags=QUERY_FLAG_ACK if params.request_ack else 0,
            relay_factor=max(0, min(255, params.relay_factor)),
        )
        raw = encode(q)
        if len(raw) > self.config.query_size_limit:
            raise SerfError(f"query exceeds limit of {self.config.query_size_limit} bytes")
        self._query_ids += 1
        qid = self._query_ids
        self._outgoing[q.ltime] = OutgoingQuery(qid, q.ltime, q.id, now + timeout)

        def call() -> list[Effect]:
            self._handle_query(now, q)
            self._bq_queries.queue(None, raw)
            return []

        return qid, self._run(now, call)

    def _default_query_timeout(self) -> float:
        return default_query_timeout(
            self.swim_config.gossip_interval, self.config.query_timeout_mult, self.num_alive()
        )

    def _new_query(
        self,
        name: str,
        payload: bytes,
        timeout: float,
        *,
        filters: tuple[bytes, ...] = (),
        flags: int = 0,
        relay_factor: int = 0,
    ) -> Query:
        """A query from this node at the current query clock, with a fresh random id."""
        return Query(
            ltime=self.query_clock.time(),
            id=self._rng.getrandbits(31),
            addr=self.addr.packed(),
            port=self.addr.port,
            source_node=self.name,
            filters=filters,
            flags=flags,
            relay_factor=relay_factor,
            timeout_ns=int(timeout * NS),
            name=name,
            payload=payload,
        )

    def respond(self, now: float, token: int, payload: bytes) -> list[SerfEffect]:
        """Answer a delivered query (``SerfQueryEvent.token``); ``SerfError`` with Serf's text
        for a late, second or oversized response."""
        q = self._incoming.get(token)
        if q is None or now > q.deadline:
            raise SerfError("response is past the deadline")
        if q.responded:
            raise SerfError("response already sent")
        resp = QueryResponse(q.ltime, q.id, self.name, 0, payload)
        raw = encode(resp)
        if len(raw) > self.config.query_response_size_limit:
            limit = self.config.query_response_size_limit
            raise SerfError(f"response exceeds limit of {limit} bytes")
        q.responded = True

        def call() -> list[Effect]:
            self._send_response(q.dest, q.source_node, q.relay_factor, resp, raw)
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
            self._handle_leave_intent(now, msg)
            if self._has_alive_members():
                self._bq_intents.queue(None, encode(msg))
            return []

        return self._run(now, call)

    def shutdown(self) -> None:
        """Stop answering (name-conflict minority); the driver stops calling us."""
        self._state = "shutdown"

    # ------------------------------------------------------------------ plumbing

    def _run(self, now: float, call: Callable[[], list[Effect]]) -> list[SerfEffect]:
        """Run one memberlist call, translate its effects, then Serf's own due work.

        Effects raised inside delegate callbacks (``self._pending``) come first, then the
        memberlist effects in order; both land in the same list.
        """
        out: list[SerfEffect] = []
        self._pending = out
        raw = call()
        for eff in raw:
            self._translate(now, eff, out)
        self._after(now, out)
        self._pending = []
        return out

    def _translate(self, now: float, eff: Effect, out: list[SerfEffect]) -> None:
        if isinstance(eff, MemberEvent):
            self._on_member_event(now, eff, out)
        elif isinstance(eff, JoinDone):
            ignore = self._serf_joins.pop(eff.request_id, None)
            if eff.request_id in self._reconnects:
                self._reconnects.discard(eff.request_id)
                out.append(Notice("reconnect_done", {"joined": eff.joined}))
                return
            out.append(eff)
            if ignore is not None and eff.joined > 0 and self._state == "alive":
                self._broadcast_join(now)
        elif isinstance(eff, LeaveDone):
            if self._leave is not None:
                self._leave.phase = "done"
            self._state = "left"
            out.append(eff)
        elif isinstance(eff, Notice) and eff.event == "name_conflict":
            out.append(eff)
            self._on_name_conflict(now, eff)
        else:
            out.append(eff)

    def _after(self, now: float, out: list[SerfEffect]) -> None:
        self._finished.update(self._bq_intents.pop_finished())
        op = self._leave
        if op is not None and op.phase == "intent":
            done = op.bcast_id in self._finished
            if done or now >= op.deadline or not self._has_alive_members():
                if not done and now >= op.deadline:
                    out.append(Notice("leave_intent_timeout", {"node": self.name}))
                self._finished.discard(op.bcast_id)
                for eff in self._leave_memberlist(now):
                    self._translate(now, eff, out)
        if self._leaving:
            self._check_leaving(now, out)
        self._run_timers(now, out)

    def _run_timers(self, now: float, out: list[SerfEffect]) -> None:
        for ltime, oq in list(self._outgoing.items()):
            if now >= oq.deadline:
                del self._outgoing[ltime]
                self._query_finished(now, oq, out)
        for token, iq in list(self._incoming.items()):
            if now >= iq.deadline:
                del self._incoming[token]
        for name, at in list(self._prune_at.items()):
            if now >= at:
                del self._prune_at[name]
                self._erase(name, out)
        if now >= self._next_reap:
            self._next_reap = now + self.config.reap_interval
            self._reap(now, out)
        if now >= self._next_reconnect:
            self._next_reconnect = now + self.config.reconnect_interval
            self._reconnect(now, out)

    def _emit_member(self, kind: str, m: MemberState, out: list[SerfEffect]) -> None:
        out.append(SerfMemberEvent(kind, (m.view(),)))

    def _has_alive_members(self) -> bool:
        return any(m.status == "alive" and n != self.name for n, m in self._members.items())

    # ------------------------------------------------------------------ member events (6)

    def _on_member_event(self, now: float, ev: MemberEvent, out: list[SerfEffect]) -> None:
        info = ev.member
        if ev.kind is MemberEventKind.JOIN:
            self._node_join(now, info, out)
        elif ev.kind is MemberEventKind.LEAVE:
            self._node_leave(now, info, out)
        else:
            m = self._members.get(info.name)
            if m is None:
                return
            m.addr, m.tags, m.vsn = info.addr, decode_tags(info.meta), info.vsn or m.vsn
            self._emit_member("member-update", m, out)

    def _node_join(self, now: float, info: MemberInfo, out: list[SerfEffect]) -> None:
        m = self._members.get(info.name)
        tags = decode_tags(info.meta)
        if m is None:
            m = MemberState(info.name, info.addr, tags, "alive", info.vsn)
            # serf handleNodeJoin: a remembered intent supplies the status time; a remembered
            # leave makes the member start as leaving.
            join_t = self._intents.get(info.name, "join")
            if join_t is not None:
                m.status_ltime = join_t
            leave_t = self._intents.get(info.name, "leave")
            if leave_t is not None:
                m.status_ltime = leave_t
                self._mark_leaving(m, now, info.incarnation)
            self._members[info.name] = m
        else:
            m.status = "alive"
            m.leave_time = 0.0
            m.addr, m.tags, m.vsn = info.addr, tags, info.vsn or m.vsn
        self._prune_at.pop(info.name, None)
        self._emit_member("member-join", m, out)

    def _node_leave(self, now: float, info: MemberInfo, out: list[SerfEffect]) -> None:
        m = self._members.get(info.name)
        if m is None:
            return
        graceful = info.state is State.LEFT
        if m.status == "leaving" or (graceful and m.status == "alive"):
            # Improvement: memberlist's own graceful leave is a leave even if we missed the
            # intent (Serf would call the member failed).
            m.status = "left"
        elif m.status == "alive":
            m.status = "failed"
        else:
            return
        m.leave_time = now
        self._emit_member("member-leave" if m.status == "left" else "member-failed", m, out)

    def _mark_leaving(self, m: MemberState, now: float, incarnation: int) -> None:
        m.status = "leaving"
        m.leaving_since = now
        m.leaving_incarnation = incarnation
        if m.name != self.name:
            self._leaving.add(m.name)

    def _check_leaving(self, now: float, out: list[SerfEffect]) -> None:
        for name in list(self._leaving):
            m = self._members.get(name)
            if m is None or m.status != "leaving":
                self._leaving.discard(name)
                continue
            info = self._ml.member(m.name)
            if info is None or info.state not in (State.ALIVE, State.SUSPECT):
                # memberlist's left/dead event settles it; nothing to time out here.
                self._leaving.discard(name)
                continue
            reason = ""
            if info.incarnation > m.leaving_incarnation:
                reason = "incarnation"
            elif now - m.leaving_since >= self.config.leaving_timeout:
                reason = "timeout"
            if reason:
                m.status = "alive"
                self._leaving.discard(name)
                out.append(Notice("leaving_cleared", {"node": m.name, "reason": reason}))

    def _erase(self, name: str, out: list[SerfEffect]) -> None:
        m = self._members.pop(name, None)
        if m is None:
            return
        self._coords.pop(name, None)
        self._vivaldi.forget(name)
        self._emit_member("member-reap", m, out)

    def _reap(self, now: float, out: list[SerfEffect]) -> None:
        """serf reaper: failed past reconnect_timeout, left past tombstone_timeout."""
        self._intents.expire(now)
        for m in list(self._members.values()):
            if m.name == self.name:
                continue
            if (m.status == "failed" and now - m.leave_time > self.config.reconnect_timeout) or (
                m.status == "left" and now - m.leave_time > self.config.tombstone_timeout
            ):
                self._erase(m.name, out)

    def _reconnect(self, now: float, out: list[SerfEffect]) -> None:
        """serf reconnect: with probability failed/alive, rejoin one random failed member."""
        if self._state != "alive":
            return
        failed = [m for m in self._members.values() if m.status == "failed"]
        if not failed:
            return
        left = sum(1 for m in self._members.values() if m.status == "left")
        alive = len(self._members) - len(failed) - left
        prob = len(failed) / (alive or 1)
        if self._rng.random() > prob:
            return
        target = failed[self._rng.randrange(len(failed))]
        out.append(Notice("reconnect", {"node": target.name, "addr": str(target.addr)}))
        rid, effs = self._ml.join(now, [target.addr])
        self._reconnects.add(rid)
        for eff in effs:
            self._translate(now, eff, out)

    # ------------------------------------------------------------------ intents (5)

    def _broadcast_join(self, now: float) -> None:
        msg = Join(self.clock.time(), self.name)
        self._handle_join_intent(now, msg)  # witnesses msg.ltime: our clock moves past it
        self._bq_intents.queue(None, encode(msg))

    def _handle_join_intent(self, now: float, msg: Join) -> bool:
        self.clock.witness(msg.ltime)
        m = self._members.get(msg.node)
        if m is None:
            return self._intents.upsert(msg.node, "join", msg.ltime, now)
        if msg.ltime <= m.status_ltime:
            return False
        m.status_ltime = msg.ltime
        if m.status == "leaving":
            m.status = "alive"  # the leave must have been older than this join
        return True

    def _handle_leave_intent(self, now: float, msg: Leave) -> bool:
        self.clock.witness(msg.ltime)
        m = self._members.get(msg.node)
        if m is None:
            return self._intents.upsert(msg.node, "leave", msg.ltime, now)
        if msg.ltime <= m.status_ltime:
            return False
        if msg.node == self.name and self._state == "alive":
            # serf: refute a leave intent about us with a join intent at our clock, which
            # has just witnessed the leave's time and so beats it everywhere.
            self._broadcast_join(now)
            return False
        m.status_ltime = msg.ltime
        if m.status == "alive":
            info = self._ml.member(msg.node)
            self._mark_leaving(m, now, info.incarnation if info is not None else 0)
        elif m.status == "failed":
            m.status = "left"
            self._emit_member("member-leave", m, self._pending)
        if msg.prune:
            if m.status == "leaving":
                # serf handlePrune waits out the member's own leave before erasing it.
                delay = self.config.broadcast_timeout + self.config.leave_propagate_delay
                self._prune_at[m.name] = now + delay
            elif m.name != self.name:
                self._erase(m.name, self._pending)
        return True

    # ------------------------------------------------------------------ delegate hooks

    def _meta(self) -> bytes:
        return self._meta_bytes

    def _violation(self, reason: str) -> None:
        self._pending.append(Violation("serf", reason))

    def _notify_msg(self, now: float, payload: bytes) -> None:
        if self._state == "shutdown":
            return
        try:
            msg = decode(payload)
        except DecodeError as exc:
            self._violation(str(exc))
            return
        if isinstance(msg, Leave):
            if self._handle_leave_intent(now, msg):
                self._bq_intents.queue(None, payload)
        elif isinstance(msg, Join):
            if self._handle_join_intent(now, msg):
                self._bq_intents.queue(None, payload)
        elif isinstance(msg, UserEvent):
            if self._handle_user_event(msg):
                self._bq_events.queue(None, payload)
        elif isinstance(msg, Query):
            if self._handle_query(now, msg):
                self._bq_queries.queue(None, payload)
        elif isinstance(msg, QueryResponse):
            self._handle_query_response(now, msg)
        elif isinstance(msg, Relay):
            # serf handleRelay: forward the inner message as a bare user packet.
            self._pending.append(self._ml.user_packet(msg.dest, msg.inner))
        else:
            self._violation("serf: push/pull state outside a push/pull")

    def _get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        # serf delegate GetBroadcasts: intents, then queries, then events, in what is left.
        msgs: list[bytes] = []
        used = 0
        for q in (self._bq_intents, self._bq_queries, self._bq_events):
            if limit - used <= overhead:
                break
            got = q.get_broadcasts(overhead, limit - used)
            used += sum(len(m) + overhead for m in got)
            msgs.extend(got)
        return msgs

    def _local_state(self, join: bool) -> bytes:
        members = self._members.values()
        state = PushPullState(
            ltime=self.clock.time(),
            status_ltimes={m.name: m.status_ltime for m in members},
            left_members=tuple(m.name for m in members if m.status == "left"),
            event_ltime=self.event_clock.time(),
            events=self._events.slots(),
            query_ltime=self.query_clock.time(),
        )
        return encode(state)

    def _merge_remote_state(self, now: float, buf: bytes, join: bool) -> None:
        try:
            pp = decode(buf)
        except DecodeError as exc:
            self._violation(f"push/pull state: {exc}")
            return
        if not isinstance(pp, PushPullState):
            self._violation("push/pull state: not a push/pull message")
            return
        # serf MergeRemoteState: witness the three clocks (minus one: they are "next" times).
        if pp.ltime > 0:
            self.clock.witness(pp.ltime - 1)
        if pp.event_ltime > 0:
            self.event_clock.witness(pp.event_ltime - 1)
        if pp.query_ltime > 0:
            self.query_clock.witness(pp.query_ltime - 1)
        # Left members first, as leaves one past their status time (they must have been
        # accepted after it); then every other status time as a join.  Not rebroadcast.
        left = set(pp.left_members)
        for name in pp.left_members:
            self._handle_leave_intent(now, Leave(pp.status_ltimes.get(name, 0) + 1, name))
        for name, t in pp.status_ltimes.items():
            if name not in left:
                self._handle_join_intent(now, Join(t, name))
        if join and any(self._serf_joins.values()):
            # Joining without replay: nothing the cluster already had is delivered.
            self._events.min_time = max(self._events.min_time, pp.event_ltime)
        for slot in pp.events:
            if slot is None:
                continue
            for e in slot.events:
                self._handle_user_event(UserEvent(slot.ltime, e.name, e.payload, False))

    def _ack_payload(self) -> bytes:
        if self.config.disable_coordinates:
            return b""
        return encode_ping_payload(self._vivaldi.coord)

    def _ping_complete(self, node: str, rtt: float, payload: bytes) -> None:
        if self.config.disable_coordinates:
            return
        coord = decode_ping_payload(payload)
        if coord is None:
            return
        if self._vivaldi.update(node, coord, rtt) is not None:
            self._coords[node] = coord

    # ------------------------------------------------------------------ user events (7)

    def _handle_user_event(self, msg: UserEvent) -> bool:
        self.event_clock.witness(msg.ltime)
        ok, _why = self._events.accept(self.event_clock.time(), msg.ltime, msg.name, msg.payload)
        if ok:
            self._pending.append(SerfUserEvent(msg.name, msg.payload, msg.ltime, msg.cc))
        return ok

    # ------------------------------------------------------------------ queries (8)

    def _handle_query(self, now: float, q: Query) -> bool:
        self.query_clock.witness(q.ltime)
        ok, _why = self._query_buf.accept(self.query_clock.time(), q.ltime, q.id)
        if not ok:
            return False
        rebroadcast = not q.no_broadcast
        if not filters_match(q.filters, self.name, self._tags):
            return rebroadcast  # first sighting: still gossiped on
        try:
            dest = Address.from_packed(q.addr, q.port)
        except ValueError:
            self._violation("query: bad Addr")
            return rebroadcast
        if q.ack:
            ack = QueryResponse(q.ltime, q.id, self.name, QUERY_FLAG_ACK, b"")
            self._send_response(dest, q.source_node, q.relay_factor, ack, encode(ack))
        deadline = now + q.timeout_ns / NS
        if q.name in KEY_QUERIES:
            self._answer_key_query(now, q, dest, deadline)
            return rebroadcast
        if is_internal(q.name):
            payload = internal_response(q.name, q.payload, self.name, self._member_record)
            if payload is not None and now <= deadline:
                self._send_internal_response(q, dest, payload)
            return rebroadcast
        token = self._register_incoming(q, dest, deadline)
        self._pending.append(
            SerfQueryEvent(q.name, q.payload, q.ltime, token, deadline, q.source_node)
        )
        return rebroadcast

    def _register_incoming(self, q: Query, dest: Address, deadline: float) -> int:
        """Remember a delivered query until its deadline; its token answers it (``respond``)."""
        self._tokens += 1
        token = self._tokens
        self._incoming[token] = IncomingQuery(
            token, q.name, q.ltime, q.id, dest, q.source_node, q.relay_factor, deadline
        )
        return token

    def _send_internal_response(self, q: Query, dest: Address, payload: bytes) -> None:
        resp = QueryResponse(q.ltime, q.id, self.name, 0, payload)
        raw = encode(resp)
        if len(raw) <= self.config.query_response_size_limit:
            self._send_response(dest, q.source_node, q.relay_factor, resp, raw)

    def _answer_key_query(self, now: float, q: Query, dest: Address, deadline: float) -> None:
        """SERF.md 8.6: apply a key query to our keyring and answer from it."""
        answer = answer_key_query(q.name, q.payload, self._envelope)
        keyring = self._envelope.keyring if self._envelope is not None else None
        if answer.changed and keyring is not None:  # only a keyring can change
            op = KEY_QUERIES[q.name]
            if self._persist_keyring:
                # Serf writes the keyring file before it answers: wait for key_persisted.
                token = self._register_incoming(q, dest, deadline)
                self._pending.append(KeyringChanged(op, keyring.keys, token))
                return
            self._pending.append(KeyringChanged(op, keyring.keys))
        if now > deadline:
            return
        if q.name == LIST_KEYS:
            limit = self.config.query_response_size_limit

            def fits(payload: bytes) -> bool:
                return len(encode(QueryResponse(q.ltime, q.id, self.name, 0, payload))) <= limit

            payload = fit_key_list(answer.response, fits)
            if payload is None:
                self._violation("list-keys: no response fits the response size limit")
                return
        else:
            payload = encode_key_response(answer.response)
        self._send_internal_response(q, dest, payload)

    def key_persisted(self, now: float, token: int, error: str = "") -> list[SerfEffect]:
        """The driver has written the keyring after ``KeyringChanged(token=...)``: answer the
        key query (``Result`` false with ``error`` if the write failed, as Serf does)."""
        q = self._incoming.pop(token, None)
        if q is None or now > q.deadline:
            return []
        payload = encode_key_response(KeyResponse(not error, error))
        resp = QueryResponse(q.ltime, q.id, self.name, 0, payload)

        def call() -> list[Effect]:
            self._send_response(q.dest, q.source_node, q.relay_factor, resp, encode(resp))
            return []

        return self._run(now, call)

    def _member_record(self, name: str) -> MemberRecord | None:
        """The member we know by ``name`` as serf's ``Member`` (conflict responses)."""
        m = self._members.get(name)
        if m is None:
            return None
        v = m.view()
        return MemberRecord(
            name=v.name,
            addr=v.addr.packed(),
            port=v.addr.port,
            tags=v.tags,
            status=v.status_code,
            protocol_min=v.protocol_min,
            protocol_max=v.protocol_max,
            protocol_cur=v.protocol_cur,
            delegate_min=v.delegate_min,
            delegate_max=v.delegate_max,
            delegate_cur=v.delegate_cur,
        )

    def _send_response(
        self, dest: Address, dest_name: str, relay_factor: int, resp: QueryResponse, raw: bytes
    ) -> None:
        self._pending.append(self._ml.user_packet(dest, raw))
        if relay_factor <= 0 or len(self._members) < relay_factor + 1:
            return
        relay = encode(Relay(dest, dest_name, raw))
        if len(relay) > self.config.query_response_size_limit:
            return
        # serf relayResponse: through relay_factor random alive members speaking protocol 5+.
        candidates = [
            m
            for m in self._members.values()
            if m.status == "alive" and m.name != self.name and m.view().protocol_max >= 5
        ]
        picks = self._rng.sample(candidates, min(relay_factor, len(candidates)))
        for m in picks:
            self._pending.append(self._ml.user_packet(m.addr, relay))

    def _handle_query_response(self, now: float, resp: QueryResponse) -> None:
        oq = self._outgoing.get(resp.ltime)
        if oq is None or oq.id != resp.id or now > oq.deadline:
            return
        if resp.ack:
            if resp.from_ in oq.acks:
                return
            oq.acks.add(resp.from_)
            if not oq.internal:
                self._pending.append(QueryUpdate(oq.query_id, "ack", resp.from_, b""))
        else:
            if resp.from_ in oq.responses:
                return
            oq.responses.add(resp.from_)
            if oq.internal:
                oq.payloads.append(resp.payload)
            else:
                self._pending.append(QueryUpdate(oq.query_id, "response", resp.from_, resp.payload))

    def _query_finished(self, now: float, oq: OutgoingQuery, out: list[SerfEffect]) -> None:
        if oq.internal == CONFLICT:
            self._conflict_running = False
            res = conflict_outcome(oq.payloads, self.addr.packed(), self.addr.port)
            out.append(
                Notice(
                    "name_conflict_resolution",
                    {
                        "node": self.name,
                        "matching": res.matching,
                        "responses": res.responses,
                        "won": res.won,
                    },
                )
            )
            if not res.won:
                self.shutdown()
            return
        out.append(QueryUpdate(oq.query_id, "done"))

    # ------------------------------------------------------------------ name conflicts (9)

    def _on_name_conflict(self, now: float, notice: Notice) -> None:
        node = str(notice.fields.get("node", ""))
        if node != self.name:
            self._pending.append(Notice("serf_name_conflict", dict(notice.fields)))
            return
        if not self.config.enable_name_conflict_resolution or self._conflict_running:
            return
        if self._state != "alive":
            return
        self._conflict_running = True
        timeout = self._default_query_timeout()
        q = self._new_query(CONFLICT, self.name.encode(), timeout)
        self._query_ids += 1
        self._outgoing[q.ltime] = OutgoingQuery(
            self._query_ids, q.ltime, q.id, now + timeout, internal=CONFLICT
        )
        self._handle_query(now, q)
        self._bq_queries.queue(None, encode(q))


__all__ = ["RestoredState", "SerfError", "SerfNode", "SerfStats"]
