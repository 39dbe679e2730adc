"""Effects the Serf core adds to memberlist's (see ``swim.api`` for those).

``SerfNode`` passes every memberlist effect through except ``MemberEvent``, which it consumes
and replaces by ``SerfMemberEvent``.  It adds user events, query deliveries and query progress
records; name-conflict facts are ``swim.api.Notice`` records, direct query acks/responses are
``swim.api.SendPacket``.  ``Outbox`` is where the core's components put the effects they raise.
"""

from __future__ import annotations

from serf_trio.record import record

from ..swim.api import Effect, Violation
from .members import SerfMember

MEMBER_EVENT_KINDS = (
    "member-join",
    "member-leave",
    "member-failed",
    "member-update",
    "member-reap",
)


@record
class SerfMemberEvent:
    """One Serf member event; ``kind`` is one of ``MEMBER_EVENT_KINDS``."""

    kind: str
    members: tuple[SerfMember, ...]

    @property
    def member(self) -> SerfMember:
        """The member (the core emits one event per member; only coalescing groups them)."""
        return self.members[0]


@record
class SerfUserEvent:
    """A user event to deliver to handlers / RPC streams (exactly once per node)."""

    name: str
    payload: bytes
    ltime: int
    coalesce: bool


@record
class SerfQueryEvent:
    """A query for local handlers / RPC streams; answer with ``SerfNode.respond(token, ...)``
    before ``deadline`` (core time).  Internal ``_serf_*`` queries never surface."""

    name: str
    payload: bytes
    ltime: int
    token: int
    deadline: float
    source_node: str = ""


@record
class QueryUpdate:
    """Progress of a query we started: ``ack``, ``response`` or the final ``done``."""

    query_id: int
    record_type: str  # "ack" | "response" | "done"
    from_: str = ""
    payload: bytes = b""


@record
class KeyringChanged:
    """A key query changed this node's keyring (``op``: install | use | remove); ``keys`` is
    the new keyring, primary first.  When ``token`` is set the core waits to answer the query
    until the driver has persisted the keyring and called ``SerfNode.key_persisted(token,
    error)`` (Serf writes its keyring file before it answers, and reports a failed write)."""

    op: str
    keys: tuple[bytes, ...]
    token: int | None = None


SerfEffect = (
    Effect | SerfMemberEvent | SerfUserEvent | SerfQueryEvent | QueryUpdate | KeyringChanged
)


class Outbox:
    """The effect list of the ``SerfNode`` entry point that is running.

    ``SerfNode._run`` points ``effects`` at the list it will return; the components (and the
    memberlist delegate callbacks they serve) append to it, so effects keep the order in which
    they were raised.  Between entry points it is a throw-away list.
    """

    __slots__ = ("effects",)

    def __init__(self) -> None:
        self.effects: list[SerfEffect] = []

    def emit(self, eff: SerfEffect) -> None:
        self.effects.append(eff)

    def violation(self, reason: str) -> None:
        """Bad Serf input (never an exception): a ``Violation`` from source ``serf``."""
        self.effects.append(Violation("serf", reason))
