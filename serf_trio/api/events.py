"""The records the library hands to applications: events, query replies, members.

Member, user and query events are the Serf core's own immutable records, exported under
shorter names (no copy is made per event):

* ``MemberEvent``: ``kind`` (``member-join``, ``-leave``, ``-failed``, ``-update``, ``-reap``)
  and ``members``, always exactly one member under the delivery contract (``member`` is the
  convenient accessor);
* ``UserEvent``: ``name``, ``payload``, ``ltime``, ``coalesce``;
* ``QueryEvent``: ``name``, ``payload``, ``ltime``, ``source_node``, ``deadline``; answer it
  with ``Node.respond(event, payload)`` before ``deadline`` (in the node's clock).

Replies to a query this node started are ``Ack(node)`` and ``Response(node, payload)``.
"""

from __future__ import annotations

from serf_trio.record import record
from serf_trio.serf.effects import SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from serf_trio.serf.internal import KeyReport
from serf_trio.serf.members import SerfMember

MemberEvent = SerfMemberEvent
UserEvent = SerfUserEvent
QueryEvent = SerfQueryEvent
Member = SerfMember
Event = SerfMemberEvent | SerfUserEvent | SerfQueryEvent

__all__ = [
    "Ack",
    "Event",
    "KeyReport",
    "Member",
    "MemberEvent",
    "QueryEvent",
    "Response",
    "UserEvent",
    "is_event",
]


@record
class Ack:
    """A node received our query (sent only when the query asked for acks)."""

    node: str


@record
class Response:
    """A node answered our query."""

    node: str
    payload: bytes


def is_event(ev: object) -> bool:
    """True for the records ``Node.events()`` delivers (not the runtime's notices)."""
    return isinstance(ev, SerfMemberEvent | SerfUserEvent | SerfQueryEvent)
