"""The agent's ``AgentAPI`` (what the RPC server calls), over the public ``serf_trio.Node``.

One method per Serf RPC command, each a thin translation: RPC records in, ``Node`` calls,
RPC records out.  Rules it owns:

* **Bad input never kills the agent**: every method raises ``AgentError`` with Serf's wording
  (the text goes to the client verbatim); a refused command changes no state.
* **Queries**: what Serf refuses before a query starts is refused here too, before anything is
  sent (the ``_serf_`` prefix except a bare ``_serf_ping``; the encoded size against
  ``query_size_limit``, computed as Serf's ``Query`` would encode it).  The records are acks,
  responses and exactly one ``done``.
* **Keys**: key RPCs run Serf's internal key queries through the cluster (``Node.install_key``
  and friends) and report what the members answered.
* **Streams**: ``events`` subscribes to the event pipeline (``pipeline.EventPipeline``) at once,
  not at the first read; ``logs`` to the log hub (buffered lines first).
* **Stats**: Serf's sections exactly as Serf clients parse them (``agent``, ``runtime``,
  ``serf``, ``tags``, ``event_handlers``, plus ``encryption``), then every other section of the
  node's stats registry (``memberlist``, ``transport``, ``delivery``, ``driver``, ``handlers``,
  ``rpc``, ``snapshot``, ``pipeline``, ...) with its values as strings.
* ``leave`` hands over to the lifecycle (``Agent``): graceful leave, then shutdown after the
  reply has been written.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from serf_trio.api import JoinError, Node, NotRunningError, QueryReplies, SerfError
from serf_trio.api.events import Ack, KeyReport
from serf_trio.rpc.api import (
    AGENT_STATS_SECTIONS,
    AgentError,
    EventRecord,
    KeyResponse,
    QueryParams,
    QueryRecord,
    RpcMember,
)
from serf_trio.runtime.logs import LogSettings, UnknownLevel, monitor_level
from serf_trio.runtime.stats import Scalar
from serf_trio.serf.config import SerfConfig
from serf_trio.serf.coordinate import Coordinate
from serf_trio.serf.filters import InvalidEventFilter, parse_filter
from serf_trio.serf.messages import NodeFilter, Query, TagFilter, encode, encode_filter
from serf_trio.serf.query import default_query_timeout
from serf_trio.wire.keyring import decode_key

from .config import AgentConfig, parse_join_address
from .pipeline import EventPipeline
from .records import Subscription, rpc_serf_member
from .tags import LocalTags

SERF_PREFIX = "_serf_"
NS = 1_000_000_000
_SERF_COUNTERS = (
    "members",
    "failed",
    "left",
    "health_score",
    "member_time",
    "event_time",
    "query_time",
    "intent_queue",
    "event_queue",
    "query_queue",
    "encrypted",
    "coordinate_resets",
)


class AgentFacade:
    """``serf_trio.rpc.api.AgentAPI`` over one running ``Node`` (module docstring).

    ``config`` returns the config in force (SIGHUP replaces it); ``leave`` is the lifecycle's
    graceful leave and shutdown.
    """

    def __init__(
        self,
        node: Node,
        *,
        config: Callable[[], AgentConfig],
        serf: SerfConfig,
        tags: LocalTags,
        pipeline: EventPipeline,
        settings: LogSettings,
        leave: Callable[[], Awaitable[None]],
        logger: Any,
    ) -> None:
        self.node = node
        self._config = config
        self._serf = serf
        self._tags = tags
        self._pipeline = pipeline
        self._settings = settings
        self._leave = leave
        self._log = logger

    @property
    def node_name(self) -> str:
        return self.node.name

    @property
    def rpc_auth(self) -> str:
        return self._config().rpc_auth

    def members(self) -> list[RpcMember]:
        return [rpc_serf_member(m) for m in self.node.members()]

    async def join(self, addrs: list[str], replay: bool) -> int:
        """``serf join ADDR...``: each ``HOST[:PORT]`` (an IP or a host name, every address of
        which is tried; ``Node.join``).  The error text lists each address that failed, a
        malformed one or a name that did not resolve included."""
        seeds: list[str] = []
        errors: list[str] = []
        for text in addrs:
            try:
                parse_join_address(text)
            except ValueError as exc:
                errors.append(f"{text}: {exc}")
            else:
                seeds.append(text)
        if not seeds:
            raise AgentError("; ".join(errors) or "no addresses to join")
        try:
            n = await self.node.join(*seeds, replay=replay)
        except JoinError as exc:
            raise AgentError("; ".join([*errors, str(exc)])) from None
        except NotRunningError as exc:
            raise AgentError(str(exc)) from None
        self._log.info("join_requested", addrs=addrs, joined=n, replay=replay)
        return n

    async def leave(self) -> None:
        """Returns once the graceful leave is over (Serf answers ``leave`` then);
        ``AgentError`` when it timed out or was aborted.  The agent stops either way."""
        self._log.info("leave_requested", source="rpc")
        await self._leave()

    async def force_leave(self, node: str, prune: bool) -> None:
        try:
            await self.node.force_leave(node, prune=prune)
        except (SerfError, NotRunningError) as exc:
            raise AgentError(str(exc)) from None
        self._log.info("force_leave", member=node, prune=prune)

    async def set_tags(self, tags: dict[str, str], delete: list[str]) -> None:
        await self._tags.update(tags, delete)

    async def user_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        try:
            await self.node.user_event(name, payload, coalesce=coalesce)
        except (SerfError, NotRunningError) as exc:
            raise AgentError(str(exc)) from None
        self._log.debug("user_event_sent", name=name, size=len(payload), coalesce=coalesce)

    def query(self, params: QueryParams) -> AsyncIterator[QueryRecord]:
        self._check_query(params)
        replies = self.node.query(
            params.name,
            params.payload,
            nodes=params.filter_nodes,
            tags=params.filter_tags,
            request_ack=params.request_ack,
            relay_factor=params.relay_factor,
            timeout=params.timeout,
        )
        return _QueryRecords(replies)

    def _check_query(self, params: QueryParams) -> None:
        """Refuse what Serf refuses before the query starts (RPC.md 3, ``query``)."""
        if params.name.startswith(SERF_PREFIX) and not (
            params.name == "_serf_ping" and not params.payload
        ):
            raise AgentError("Queries cannot contain the '_serf_' prefix")
        clocks, addr = self.node.clocks(), self.node.addr
        if clocks is None or addr is None:
            raise AgentError("the node is not running")
        # The encoded size, as SerfNode.query will compute it (largest id: a safe estimate).
        filters = []
        if params.filter_nodes:
            filters.append(encode_filter(NodeFilter(tuple(params.filter_nodes))))
        filters.extend(encode_filter(TagFilter(t, e)) for t, e in params.filter_tags.items())
        timeout = params.timeout
        if timeout <= 0:
            swim = self._config().swim_config()
            timeout = default_query_timeout(
                swim.gossip_interval, self._serf.query_timeout_mult, self.node.num_alive()
            )
        q = Query(
            ltime=clocks.query,
            id=2**31 - 1,
            addr=addr.packed(),
            port=addr.port,
            source_node=self.node_name,
            filters=tuple(filters),
            flags=0,
            relay_factor=max(0, min(255, params.relay_factor)),
            timeout_ns=int(timeout * NS),
            name=params.name,
            payload=params.payload,
        )
        limit = self._serf.query_size_limit
        if len(encode(q)) > limit:
            raise AgentError(f"query exceeds limit of {limit} bytes")

    async def respond(self, token: int, payload: bytes) -> None:
        try:
            await self.node.respond(token, payload)  # RPC clients hold the token

        except SerfError as exc:
            # Serf's wording for every query (RPC.md 3, ``respond``).
            raise AgentError(f"failed to respond to key query: {exc}") from None
        except NotRunningError as exc:
            raise AgentError(str(exc)) from None

    def events(self, filter_spec: str) -> AsyncIterator[EventRecord]:
        try:
            filt = parse_filter(filter_spec)
        except InvalidEventFilter:
            raise AgentError("Invalid event filter") from None
        return self._pipeline.subscribe(filt)

    def logs(self, level: str) -> AsyncIterator[str]:
        try:
            number = monitor_level(level)
        except UnknownLevel as exc:
            raise AgentError(str(exc)) from None
        recv, close = self._settings.hub.open(number)
        return Subscription(recv, close)

    def stats(self) -> dict[str, dict[str, str]]:
        snap = self.node.stats()
        counters = {**snap.get("memberlist", {}), **snap.get("serf", {})}
        counters["encrypted"] = self.node.envelope.enabled
        out: dict[str, dict[str, str]] = {
            "agent": {"name": self.node_name},
            "runtime": {
                "os": sys.platform,
                "arch": platform.machine(),
                "version": platform.python_version(),
                "cpu_count": str(os.cpu_count() or 1),
                "max_procs": str(os.cpu_count() or 1),
            },
            "serf": {k: _text(counters.get(k, 0)) for k in _SERF_COUNTERS},
            "tags": self._tags.current,
            "event_handlers": handler_stats(self._config()),
            "encryption": self.node.crypto.stats(),
        }
        for name, section in snap.items():
            if name not in AGENT_STATS_SECTIONS:
                out[name] = {k: _text(v) for k, v in section.items()}
        # ``serf`` keeps exactly Serf's keys (its clients parse them); the Serf layer's other
        # counters (member events by kind, user events and queries, flaps, ...) go here.
        more = {k: v for k, v in snap.get("serf", {}).items() if k not in _SERF_COUNTERS}
        if more:
            out["serf_counters"] = {k: _text(v) for k, v in more.items()}
        return out

    def get_coordinate(self, node: str) -> Coordinate | None:
        return self.node.coordinate(node)

    async def key_operation(self, op: str, key: str) -> KeyResponse:
        """Serf's KeyManager: an internal key query through the cluster, every member answering
        from its own keyring; the report counts what they said."""
        run = {
            "install": self.node.install_key,
            "use": self.node.use_key,
            "remove": self.node.remove_key,
        }
        if op not in run and op != "list":
            raise AgentError(f"unknown key operation {op!r}")
        try:
            raw = decode_key(key) if op != "list" else b""
        except ValueError as exc:
            raise AgentError(str(exc)) from None
        try:
            report: KeyReport = await (run[op](raw) if op != "list" else self.node.list_keys())
        except (SerfError, NotRunningError) as exc:
            raise AgentError(str(exc)) from None
        self._log.info(
            "key_operation",
            op=op,
            nodes=report.num_nodes,
            responses=report.num_resp,
            errors=report.num_err,
        )
        return KeyResponse(
            keys=dict(report.keys) if op == "list" else None,
            messages=dict(report.messages),
            num_nodes=report.num_nodes,
            num_resp=report.num_resp,
            num_err=report.num_err,
            error=report.error,
        )


class _QueryRecords(AsyncIterator[QueryRecord]):
    """``AgentAPI.query``'s iterator over ``QueryReplies``: starts the query at the first
    ``__anext__``, then yields acks, responses and exactly one ``done``."""

    def __init__(self, replies: QueryReplies) -> None:
        self._replies = replies
        self._done = False

    def __aiter__(self) -> _QueryRecords:
        return self

    async def __anext__(self) -> QueryRecord:
        if self._done:
            raise StopAsyncIteration
        try:
            rec = await self._replies.__anext__()
        except StopAsyncIteration:
            self._done = True
            return QueryRecord(type="done")
        except (SerfError, NotRunningError) as exc:
            raise AgentError(str(exc)) from None
        if isinstance(rec, Ack):
            return QueryRecord(type="ack", from_=rec.node)
        return QueryRecord(type="response", from_=rec.node, payload=rec.payload)

    async def aclose(self) -> None:
        self._done = True
        await self._replies.aclose()


def handler_stats(config: AgentConfig) -> dict[str, str]:
    """Serf's ``event_handlers`` stats section: ``"<event>:<name>": script``."""
    out: dict[str, str] = {}
    for h in config.event_handlers:
        for word in str(h.filter).split(","):
            event, _, name = word.strip().partition(":")
            out[f"{event}:{name}"] = h.command
    return out


def _text(value: Scalar) -> str:
    """A stats value as Serf clients read them (strings; booleans in Go's spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
