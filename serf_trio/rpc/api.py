"""What the RPC server asks of the agent: the ``AgentAPI`` protocol and its plain records.

The RPC server (``server.py``) speaks Serf's RPC protocol and turns each command into one call
on an ``AgentAPI``; the agent (``serf_trio.agent``) implements it.  Keeping the contract here,
free of trio-specific types where possible, lets the server be tested with a fake agent and the
agent be tested without sockets.

Errors: a method that fails raises ``AgentError(text)``; ``text`` goes to the client verbatim in
the response header's ``Error`` field, so use Serf's wording where Serf has one.

Records are ``NamedTuple``s (immutable, no instance dict) rather than frozen dataclasses: the CLI
imports this module on every start, and a ``NamedTuple`` class costs about a fifth of a slotted
dataclass to create (0.2 ms against 0.9 ms each).  ``QueryParams`` stays a dataclass for its
``default_factory``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import field
from typing import TYPE_CHECKING, NamedTuple, Protocol

from serf_trio.record import record

if TYPE_CHECKING:
    # The record is Serf's own (``serf_trio.serf.coordinate``); imported only for typing here
    # so that RPC clients load it only when a command asks for a coordinate.
    from ..serf.coordinate import Coordinate


class AgentError(Exception):
    """A command failed; ``str(exc)`` is the RPC ``Error`` text."""


NOT_SUPPORTED = "Feature not supported"

# The agent's own ``stats`` sections (Serf's, plus serf-trio's ``encryption``), with the keys and
# string values Serf clients parse.  Any other section holds a component's counters (the node's
# stats registry: ``memberlist``, ``transport``, ``handlers``, ``rpc``, ...), also as strings.
AGENT_STATS_SECTIONS = ("agent", "runtime", "serf", "tags", "event_handlers", "encryption")


class RpcMember(NamedTuple):
    """A member as RPC clients see it (``members`` / stream records)."""

    name: str
    addr: bytes  # packed IP: 4 bytes for IPv4
    port: int
    tags: dict[str, str]
    status: str  # alive | leaving | left | failed | none
    protocol_min: int = 1
    protocol_max: int = 5
    protocol_cur: int = 2
    delegate_min: int = 2
    delegate_max: int = 5
    delegate_cur: int = 5


@record
class QueryParams:
    name: str
    payload: bytes
    filter_nodes: tuple[str, ...] = ()
    filter_tags: dict[str, str] = field(default_factory=dict)
    request_ack: bool = False
    relay_factor: int = 0
    timeout: float = 0.0  # seconds; 0 = Serf's default formula


class QueryRecord(NamedTuple):
    """One record of a running query: ``ack``, ``response`` or the final ``done``."""

    type: str  # "ack" | "response" | "done"
    from_: str = ""
    payload: bytes | None = None


class KeyResponse(NamedTuple):
    keys: dict[str, int] | None
    messages: dict[str, str]
    num_nodes: int
    num_resp: int
    num_err: int
    error: str = ""  # e.g. "2/2 nodes reported failure"


class MemberEventRecord(NamedTuple):
    """A member event: ``member-join``, ``-leave``, ``-failed``, ``-update`` or ``-reap``."""

    event: str
    members: tuple[RpcMember, ...]


class UserEventRecord(NamedTuple):
    name: str
    payload: bytes
    ltime: int
    coalesce: bool


class QueryEventRecord(NamedTuple):
    """A query delivered to this agent; answer with ``AgentAPI.respond(token, ...)``."""

    name: str
    payload: bytes
    ltime: int
    token: int  # agent-wide id of the pending query (the server maps it to a per-connection ID)


EventRecord = MemberEventRecord | UserEventRecord | QueryEventRecord


class AgentAPI(Protocol):
    """The agent operations behind Serf's RPC commands (one method per command)."""

    @property
    def node_name(self) -> str: ...

    @property
    def rpc_auth(self) -> str:
        """The required auth token ("" = no auth)."""
        ...

    def members(self) -> list[RpcMember]: ...

    async def join(self, addrs: list[str], replay: bool) -> int:
        """Number of addresses joined; ``AgentError`` if none could be."""
        ...

    async def leave(self) -> None:
        """Graceful leave; returns once the agent has left (Serf answers after its leave), or
        raises ``AgentError`` when the leave timed out or was aborted.  The agent then shuts
        down either way, after the reply is written."""
        ...

    async def force_leave(self, node: str, prune: bool) -> None: ...

    async def set_tags(self, tags: dict[str, str], delete: list[str]) -> None: ...

    async def user_event(self, name: str, payload: bytes, coalesce: bool) -> None: ...

    def query(self, params: QueryParams) -> AsyncIterator[QueryRecord]:
        """Start a query; yields acks/responses and exactly one final ``done``."""
        ...

    async def respond(self, token: int, payload: bytes) -> None: ...

    def events(self, filter_spec: str) -> AsyncIterator[EventRecord]:
        """Subscribe to events matching a Serf filter (``AgentError('Invalid event filter')``).

        Bounded per subscriber (512): events are dropped for a slow subscriber.
        """
        ...

    def logs(self, level: str) -> AsyncIterator[str]:
        """Log lines at ``level`` or above: up to 512 buffered lines first, then live ones.

        ``AgentError('Unknown log level: X')`` for a bad level.
        """
        ...

    def stats(self) -> dict[str, dict[str, str]]:
        """``AGENT_STATS_SECTIONS`` first, then any component sections; every value a string."""
        ...

    def get_coordinate(self, node: str) -> Coordinate | None: ...

    async def key_operation(self, op: str, key: str) -> KeyResponse:
        """``op`` is install | use | remove | list; ``key`` is base64 ("" for list)."""
        ...
