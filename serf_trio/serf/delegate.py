"""The memberlist ``Delegate`` of a Serf node (serf delegate.go + ping_delegate.go).

memberlist calls these synchronously from inside its own entry points; they go straight to the
``SerfNode``'s components, which put any effects they cause in the node's outbox, returned from
the entry point that is running.  Mapping:

* ``node_meta`` -> the encoded tags (``0xFF`` + msgpack map);
* ``notify_msg`` -> dispatch of one Serf message (intents, events, queries, responses, relays);
  whatever was news is gossiped on through its queue;
* ``get_broadcasts`` -> Serf's three queues, intents first, then queries, then events;
* ``local_state`` / ``merge_remote_state`` -> Serf push/pull state (type 2, ``pushpull``);
* ``ack_payload`` / ``notify_ping_complete`` -> Vivaldi coordinates.
"""

from __future__ import annotations

from collections.abc import Callable

from ..swim.api import Address, SendPacket
from ..wire.codec import DecodeError
from .context import NodeContext
from .coordinate import NodeCoordinates
from .events import UserEvents
from .membership import Membership
from .messages import Join, Leave, Query, QueryResponse, Relay, UserEvent, decode
from .pushpull import StateExchange
from .queries import Queries


class SerfDelegate:
    """Implements ``swim.api.Delegate`` for one Serf node's components."""

    __slots__ = (
        "_accepting",
        "_coords",
        "_counters",
        "_events",
        "_membership",
        "_meta",
        "_out",
        "_queries",
        "_state",
        "_user_packet",
    )

    def __init__(
        self,
        ctx: NodeContext,
        membership: Membership,
        events: UserEvents,
        queries: Queries,
        state: StateExchange,
        coords: NodeCoordinates,
        *,
        meta: Callable[[], bytes],
        accepting: Callable[[], bool],
        user_packet: Callable[[Address, bytes], SendPacket],
    ) -> None:
        self._out = ctx.out
        self._counters = ctx.counters
        self._membership = membership
        self._events = events
        self._queries = queries
        self._state = state
        self._coords = coords
        self._meta = meta  # our encoded tags
        self._accepting = accepting  # False once the node is shut down
        self._user_packet = user_packet

    def node_meta(self, limit: int) -> bytes:
        meta = self._meta()
        return meta if len(meta) <= limit else b""

    def notify_msg(self, now: float, payload: bytes) -> None:
        if not payload:  # serf: an empty user message is ignored
            return
        if not self._accepting():
            return
        try:
            msg = decode(payload)
        except DecodeError as exc:
            self._out.violation(str(exc))
            return
        self._counters.messages_received += 1
        if isinstance(msg, Leave):
            if self._membership.handle_leave_intent(now, msg):
                self._membership.queue.queue(None, payload)
        elif isinstance(msg, Join):
            if self._membership.handle_join_intent(now, msg):
                self._membership.queue.queue(None, payload)
        elif isinstance(msg, UserEvent):
            if self._events.handle(msg):
                self._events.queue.queue(None, payload)
        elif isinstance(msg, Query):
            if self._queries.receive(now, msg):
                self._queries.queue.queue(None, payload)
        elif isinstance(msg, QueryResponse):
            self._queries.handle_response(now, msg)
        elif isinstance(msg, Relay):
            # serf handleRelay: forward the inner message as a bare user packet.
            self._out.emit(self._user_packet(msg.dest, msg.inner))
        else:
            self._out.violation("serf: push/pull state outside a push/pull")

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        # serf delegate GetBroadcasts: intents, then queries, then events, in what is left.
        msgs: list[bytes] = []
        used = 0
        for q in (self._membership.queue, self._queries.queue, self._events.queue):
            if limit - used <= overhead:
                break
            got = q.get_broadcasts(overhead, limit - used)
            used += sum(len(m) + overhead for m in got)
            msgs.extend(got)
        self._counters.messages_sent += len(msgs)
        return msgs

    def has_broadcasts(self) -> bool:
        return any(
            len(q) > 0 for q in (self._membership.queue, self._queries.queue, self._events.queue)
        )

    def local_state(self, join: bool) -> bytes:
        return self._state.local_state(join)

    def merge_remote_state(self, now: float, buf: bytes, join: bool) -> None:
        self._state.merge_remote_state(now, buf, join)

    def ack_payload(self) -> bytes:
        return self._coords.ack_payload()

    def notify_ping_complete(self, node: str, rtt: float, payload: bytes) -> None:
        self._coords.ping_complete(node, rtt, payload)


__all__ = ["SerfDelegate"]
