"""``Queries``: both ends of Serf queries inside a node (SERF.md 8; serf query.go, serf.go
Query/handleQuery/handleQueryResponse/relayResponse).

``query`` holds the rules as plain data and functions (dedupe buffer, filters, default
timeout, the records of a query); this module is the stateful part the node owns:

* queries we started (``OutgoingQuery`` by LTime): their acks and responses become
  ``QueryUpdate`` records (or are collected, for an internal query such as the name-conflict
  vote), and ``done`` when the deadline passes;
* queries delivered to us (``IncomingQuery`` by token) until their deadline, so ``respond``
  (or a persisted keyring) can answer them once;
* sending responses: straight to the originator and through ``relay_factor`` random members;
* the query broadcast queue.

Both kinds of deadline live in one ``TimerHeap``; those due within one call fire as they always
did: finished outgoing queries in the order they were started, then expired incoming ones.
A query this node should answer is first offered to ``internal`` (the ``_serf_*`` handler, as
Serf's internal-query handler sits in front of its query events) and otherwise delivered to
handlers as a ``SerfQueryEvent``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..swim.api import Address, SendPacket
from ..swim.broadcast import TransmitLimitedQueue
from ..swim.config import SwimConfig
from .context import NodeContext
from .effects import QueryUpdate, SerfQueryEvent
from .errors import SerfError
from .lamport import LamportClock
from .messages import (
    QUERY_FLAG_ACK,
    NodeFilter,
    Query,
    QueryResponse,
    Relay,
    TagFilter,
    encode,
    encode_filter,
)
from .query import (
    IncomingQuery,
    OutgoingQuery,
    QueryBuffer,
    QueryParamsLike,
    default_query_timeout,
    filters_match,
)
from .timers import TimerHeap

NS = 1_000_000_000
_OUTGOING, _INCOMING = 0, 1  # timer kinds, in firing order


class Queries:
    """Outgoing and incoming queries of one node; see the module docstring."""

    def __init__(
        self,
        ctx: NodeContext,
        swim_config: SwimConfig,
        clock: LamportClock,
        buffer: QueryBuffer,
        queue: TransmitLimitedQueue,
        *,
        tags: Callable[[], dict[str, str]],
        user_packet: Callable[[Address, bytes], SendPacket],
        num_alive: Callable[[], int],
        internal: Callable[[float, Query, Address, float], bool],
    ) -> None:
        self._config = ctx.config
        self._name = ctx.name
        self._addr = ctx.addr
        self._members = ctx.members
        self._out = ctx.out
        self._counters = ctx.counters
        self._rng = ctx.rng
        self._swim_config = swim_config
        self._clock = clock  # the query clock
        self._buffer = buffer
        self.queue = queue  # serf query broadcasts
        self._tags = tags  # our current tags (filters)
        self._user_packet = user_packet
        self._num_alive = num_alive
        self._internal = internal  # answers (True) an internal query, else leaves it to us
        self._tokens = 0
        self._query_ids = 0
        self._outgoing: dict[int, OutgoingQuery] = {}  # by LTime (one outstanding per LTime)
        self._incoming: dict[int, IncomingQuery] = {}  # by token
        self._timers: TimerHeap[tuple[int, int]] = TimerHeap()  # (kind, LTime or token)

    @property
    def pending(self) -> int:
        """Queries we started that are still running."""
        return len(self._outgoing)

    def next_deadline(self) -> float | None:
        return self._timers.peek()

    def default_timeout(self) -> float:
        return default_query_timeout(
            self._swim_config.gossip_interval, self._config.query_timeout_mult, self._num_alive()
        )

    # ------------------------------------------------------------------ originating

    def start(self, now: float, params: QueryParamsLike) -> tuple[int, Query, bytes]:
        """Build and register a query; ``SerfError`` past ``query_size_limit``.  The node
        then sends it (``originate``)."""
        filters: list[bytes] = []
        if params.filter_nodes:
            filters.append(encode_filter(NodeFilter(tuple(params.filter_nodes))))
        tag_items = sorted(params.filter_tags.items())
        self._rng.shuffle(tag_items)  # serf: tag filters in map (random) order
        filters.extend(encode_filter(TagFilter(t, e)) for t, e in tag_items)
        timeout = params.timeout if params.timeout > 0 else self.default_timeout()
        q = self._new_query(
            params.name,
            params.payload,
            timeout,
            filters=tuple(filters),
            flags=QUERY_FLAG_ACK if params.request_ack else 0,
            relay_factor=max(0, min(255, params.relay_factor)),
        )
        raw = encode(q)
        if len(raw) > self._config.query_size_limit:
            raise SerfError(f"query exceeds limit of {self._config.query_size_limit} bytes")
        return self._register_outgoing(now, q, timeout), q, raw

    def start_internal(self, now: float, name: str, payload: bytes, kind: str) -> Query:
        """An internal query whose responses ``kind``'s owner reads (no ``QueryUpdate``)."""
        timeout = self.default_timeout()
        q = self._new_query(name, payload, timeout)
        self._register_outgoing(now, q, timeout, internal=kind)
        return q

    def originate(self, now: float, q: Query, raw: bytes) -> None:
        """Send a query we started: the originator is one of the nodes it asks, then it is
        gossiped."""
        self.receive(now, q)
        self.queue.queue(None, raw)

    def _register_outgoing(
        self, now: float, q: Query, timeout: float, *, internal: str = ""
    ) -> int:
        self._query_ids += 1
        qid = self._query_ids
        deadline = now + timeout
        self._outgoing[q.ltime] = OutgoingQuery(qid, q.ltime, q.id, deadline, internal=internal)
        self._timers.set((_OUTGOING, q.ltime), deadline)
        return qid

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
            ltime=self._clock.time(),
            id=self._rng.getrandbits(31),
            addr=self._addr.packed(),
            port=self._addr.port,
            source_node=self._name,
            filters=filters,
            flags=flags,
            relay_factor=relay_factor,
            timeout_ns=int(timeout * NS),
            name=name,
            payload=payload,
        )

    def handle_response(self, now: float, resp: QueryResponse) -> None:
        """serf handleQueryResponse: match by LTime then ID, dedupe acks and responses."""
        oq = self._outgoing.get(resp.ltime)
        if oq is None or oq.id != resp.id or now > oq.deadline:
            return
        if resp.ack:
            if resp.from_ in oq.acks:
                return
            oq.acks.add(resp.from_)
            if not oq.internal:
                self._out.emit(QueryUpdate(oq.query_id, "ack", resp.from_, b""))
        else:
            if resp.from_ in oq.responses:
                return
            oq.responses.add(resp.from_)
            if oq.internal:
                oq.payloads.append(resp.payload)
            else:
                self._out.emit(QueryUpdate(oq.query_id, "response", resp.from_, resp.payload))

    # ------------------------------------------------------------------ receiving

    def receive(self, now: float, q: Query) -> bool:
        """serf handleQuery; True if the query is to be gossiped on."""
        rebroadcast, dest, deadline = self._accept(now, q)
        if dest is not None and not self._internal(now, q, dest, deadline):
            token = self.register_incoming(q, dest, deadline)
            self._out.emit(
                SerfQueryEvent(q.name, q.payload, q.ltime, token, deadline, q.source_node)
            )
        return rebroadcast

    def _accept(self, now: float, q: Query) -> tuple[bool, Address | None, float]:
        """serf handleQuery up to the answer: ``(rebroadcast, dest, deadline)``, where
        ``dest`` (the originator's address) is ``None`` when this node does not answer."""
        self._clock.witness(q.ltime)
        ok, why = self._buffer.accept(self._clock.time(), q.ltime, q.id)
        if not ok:
            if why != "duplicate":
                self._counters.queries_too_old += 1
            return False, None, 0.0
        rebroadcast = not q.no_broadcast
        if not filters_match(q.filters, self._name, self._tags()):
            return rebroadcast, None, 0.0  # first sighting: still gossiped on
        try:
            dest = Address.from_packed(q.addr, q.port)
        except ValueError:
            self._out.violation("query: bad Addr")
            return rebroadcast, None, 0.0
        if q.ack:
            ack = QueryResponse(q.ltime, q.id, self._name, QUERY_FLAG_ACK, b"")
            self.send_response(dest, q.source_node, q.relay_factor, ack, encode(ack))
        return rebroadcast, dest, now + q.timeout_ns / NS

    def register_incoming(self, q: Query, dest: Address, deadline: float) -> int:
        """Remember a delivered query until its deadline; its token answers it (``respond``)."""
        self._tokens += 1
        token = self._tokens
        self._incoming[token] = IncomingQuery(
            token, q.name, q.ltime, q.id, dest, q.source_node, q.relay_factor, deadline
        )
        self._timers.set((_INCOMING, token), deadline)
        return token

    def pop_incoming(self, token: int) -> IncomingQuery | None:
        """Take a delivered query out (it will be answered now or never)."""
        self._timers.cancel((_INCOMING, token))
        return self._incoming.pop(token, None)

    def prepare_response(
        self, now: float, token: int, payload: bytes
    ) -> tuple[IncomingQuery, QueryResponse, bytes]:
        """Check and claim the one response to a delivered query; ``SerfError`` with Serf's
        text for a late, second or oversized response."""
        q = self._incoming.get(token)
        if q is None or now > q.deadline:
            raise SerfError("response is past the deadline")
        if q.responded:
            raise SerfError("response already sent")
        resp = QueryResponse(q.ltime, q.id, self._name, 0, payload)
        raw = encode(resp)
        limit = self._config.query_response_size_limit
        if len(raw) > limit:
            raise SerfError(f"response exceeds limit of {limit} bytes")
        q.responded = True
        return q, resp, raw

    def send_internal_response(self, q: Query, dest: Address, payload: bytes) -> None:
        """An internal query's answer, sent only if it fits the response size limit."""
        resp = QueryResponse(q.ltime, q.id, self._name, 0, payload)
        raw = encode(resp)
        if len(raw) <= self._config.query_response_size_limit:
            self.send_response(dest, q.source_node, q.relay_factor, resp, raw)

    def send_response(
        self, dest: Address, dest_name: str, relay_factor: int, resp: QueryResponse, raw: bytes
    ) -> None:
        self._out.emit(self._user_packet(dest, raw))
        if relay_factor <= 0 or len(self._members) < relay_factor + 1:
            return
        relay = encode(Relay(dest, dest_name, raw))
        if len(relay) > self._config.query_response_size_limit:
            return
        # serf relayResponse: through relay_factor random alive members speaking protocol 5+.
        candidates = [
            m
            for m in self._members.values()
            if m.status == "alive" and m.name != self._name and m.protocol_max >= 5
        ]
        picks = self._rng.sample(candidates, min(relay_factor, len(candidates)))
        for m in picks:
            self._out.emit(self._user_packet(m.addr, relay))

    # ------------------------------------------------------------------ deadlines

    def run_due(self, now: float, internal_done: Callable[[OutgoingQuery], None]) -> None:
        """Finish the outgoing queries past their deadline (``done``, or ``internal_done``
        for an internal one), then forget the expired incoming ones."""
        due = self._timers.pop_due(now)
        due.sort(key=lambda key: key[0])  # stable: outgoing first, each in arming order
        for kind, key in due:
            if kind == _OUTGOING:
                oq = self._outgoing.pop(key)
                if oq.internal:
                    internal_done(oq)
                else:
                    self._out.emit(QueryUpdate(oq.query_id, "done"))
            else:
                del self._incoming[key]


__all__ = ["NS", "Queries"]
