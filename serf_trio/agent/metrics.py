"""Prometheus ``/metrics``: the node's stats registry as Prometheus families, served from trio.

``metrics_addr`` (``--metrics-addr HOST:PORT``) turns it on; the agent imports this module (and
so ``prometheus_client``) only then.  ``prometheus_client`` does the data model and the text
exposition (``generate_latest``); the HTTP side is a minimal HTTP/1.1 ``GET`` handler on
``trio.serve_tcp`` (no server thread): ``/metrics`` answers 200 with ``CONTENT_TYPE_LATEST``,
any other path 404, any other method 405; one request per connection.

``RegistryCollector`` reads ``StatsRegistry.snapshot()`` at scrape time (no second set of
counters to keep in step) and maps it through ``FAMILIES`` below: one place that says which
section and counter each family comes from, with its HELP text.  A sample whose counter is
missing (a section that is not registered, e.g. ``rpc`` before the RPC server starts) is left
out.  Names carry the ``serf_trio_`` prefix; counters get ``_total`` from the exposition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial

import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from serf_trio.record import record
from serf_trio.runtime.stats import Scalar, Section

PREFIX = "serf_trio_"
Snapshot = Mapping[str, Section]
# A sample source: (labels, value) pairs read from one snapshot.
Reader = Callable[[Snapshot], Iterable[tuple[tuple[str, ...], float]]]


def _num(value: Scalar | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)  # the encryption section reports its counts as strings
    except ValueError:
        return None


def field(section: str, key: str) -> Reader:
    """One unlabelled sample: ``section.key``."""

    def read(snap: Snapshot) -> Iterable[tuple[tuple[str, ...], float]]:
        v = _num(snap.get(section, {}).get(key))
        return [((), v)] if v is not None else []

    return read


def labelled(pairs: Mapping[str, tuple[str, str]]) -> Reader:
    """One sample per label value: ``{label value: (section, key)}``."""

    def read(snap: Snapshot) -> Iterable[tuple[tuple[str, ...], float]]:
        out = []
        for label, (section, key) in pairs.items():
            v = _num(snap.get(section, {}).get(key))
            if v is not None:
                out.append(((label,), v))
        return out

    return read


def by_prefix(section: str, prefix: str) -> Reader:
    """One sample per ``section.PREFIX<name>`` counter, labelled with ``<name>`` (the dict
    counters the cores keep: ``messages_in.ping``, ``member_events.member-join``, ...)."""

    def read(snap: Snapshot) -> Iterable[tuple[tuple[str, ...], float]]:
        out = []
        for key, value in snap.get(section, {}).items():
            if key.startswith(prefix):
                v = _num(value)
                if v is not None:
                    out.append(((key[len(prefix) :],), v))
        return out

    return read


def total(*parts: Reader, prefix_of: tuple[str, str] | None = None) -> Reader:
    """The sum of several unlabelled readers (and of every ``section.prefix*`` counter)."""

    def read(snap: Snapshot) -> Iterable[tuple[tuple[str, ...], float]]:
        found = False
        acc = 0.0
        for part in parts:
            for _, v in part(snap):
                acc += v
                found = True
        if prefix_of is not None:
            for _, v in by_prefix(*prefix_of)(snap):
                acc += v
                found = True
        return [((), acc)] if found else []

    return read


@record
class Family:
    name: str  # without the prefix (and without _total for counters)
    kind: str  # "counter" | "gauge"
    help: str
    read: Reader
    labels: tuple[str, ...] = ()


def _causes(snap: Snapshot) -> Iterable[tuple[tuple[str, ...], float]]:
    out: list[tuple[tuple[str, ...], float]] = []
    for (label,), v in [
        (("decode",), field("driver", "violations")),
        (("crypto",), total(prefix_of=("encryption", "dropped_"))),
        (
            ("overload",),
            total(field("transport", "packets_dropped_full"), field("driver", "outgoing_dropped")),
        ),
    ]:
        out.extend(((label,), value) for _, value in v(snap))
    return out


ML, SERF, TR = "memberlist", "serf", "transport"

FAMILIES: tuple[Family, ...] = (
    # -- membership
    Family(
        "members",
        "gauge",
        "Members in the Serf member table, by status.",
        labelled({s: (SERF, s) for s in ("alive", "leaving", "left", "failed")}),
        ("status",),
    ),
    Family(
        "memberlist_members",
        "gauge",
        "Members in the memberlist (SWIM) table, by state.",
        labelled({s: (ML, s) for s in ("alive", "suspect", "dead", "left")}),
        ("state",),
    ),
    Family(
        "member_events",
        "counter",
        "Member events raised here, by kind (member-join, member-leave, member-failed, "
        "member-update, member-reap), one per member.",
        by_prefix(SERF, "member_events."),
        ("kind",),
    ),
    Family(
        "member_flaps",
        "counter",
        "Failed members that came back within flap_timeout.",
        field(SERF, "flaps"),
    ),
    Family(
        "health_score",
        "gauge",
        "Lifeguard awareness (local health) score; 0 is healthy, higher scales timeouts up.",
        field(ML, "health_score"),
    ),
    # -- failure detection
    Family("probes_sent", "counter", "Probe rounds started.", field(ML, "probes_sent")),
    Family(
        "probes_failed",
        "counter",
        "Probe rounds that got no ack (the target became suspect).",
        field(ML, "probes_failed"),
    ),
    Family(
        "probes_indirect",
        "counter",
        "Probe rounds that went on to indirect probes through other members.",
        field(ML, "probes_indirect"),
    ),
    Family(
        "probes_tcp_only",
        "counter",
        "Probe rounds answered only by the TCP fallback ping.",
        field(ML, "probes_tcp_only"),
    ),
    Family(
        "probes_degraded",
        "counter",
        "Failed probes that got fewer nacks than expected (memberlist.degraded.probe).",
        field(ML, "degraded_probes"),
    ),
    Family(
        "nacks_received",
        "counter",
        "Nacks received for our own probes.",
        field(ML, "nacks_received"),
    ),
    Family(
        "suspicions_raised",
        "counter",
        "Times a member became suspect in our table.",
        field(ML, "suspicions_raised"),
    ),
    Family(
        "suspicions_confirmed",
        "counter",
        "Suspect members declared dead.",
        field(ML, "suspicions_confirmed"),
    ),
    Family(
        "suspicions_refuted",
        "counter",
        "Suspect members that became alive again.",
        field(ML, "suspicions_refuted"),
    ),
    Family(
        "refutations",
        "counter",
        "Accusations about this node that it refuted.",
        field(ML, "refutations"),
    ),
    Family(
        "push_pulls",
        "counter",
        "Push/pull state exchanges completed (started here or answered).",
        field(ML, "push_pulls"),
    ),
    # -- traffic
    Family(
        "messages_received",
        "counter",
        "memberlist messages received, by type (compound and compress count once, and each "
        "message inside by its own type).",
        by_prefix(ML, "messages_in."),
        ("type",),
    ),
    Family(
        "messages_sent",
        "counter",
        "memberlist messages sent, by type (as messages_received).",
        by_prefix(ML, "messages_out."),
        ("type",),
    ),
    Family(
        "serf_messages_received",
        "counter",
        "Serf-layer messages received (intents, events, queries, responses, relays).",
        field(SERF, "messages_received"),
    ),
    Family(
        "serf_messages_sent",
        "counter",
        "Serf-layer messages sent (each broadcast transmission and each direct packet).",
        field(SERF, "messages_sent"),
    ),
    Family(
        "packets_received",
        "counter",
        "UDP packets received and opened.",
        field(TR, "packets_in"),
    ),
    Family("packets_sent", "counter", "UDP packets sent.", field(TR, "packets_out")),
    Family(
        "bytes_received",
        "counter",
        "Bytes received, as on the wire, by transport.",
        labelled({"udp": (TR, "bytes_in")}),
        ("transport",),
    ),
    Family(
        "bytes_sent",
        "counter",
        "Bytes sent, as on the wire, by transport.",
        labelled({"udp": (TR, "bytes_out"), "tcp": (TR, "tcp_bytes_out")}),
        ("transport",),
    ),
    Family(
        "packets_dropped",
        "counter",
        "Input dropped, by cause: decode (protocol violations), crypto (refused by the "
        "encryption), overload (receive queue full or outgoing queue full).",
        _causes,
        ("cause",),
    ),
    Family(
        "broadcast_queue_depth",
        "gauge",
        "Broadcasts waiting to be gossiped, by queue.",
        labelled(
            {
                "memberlist": (ML, "queue_depth"),
                "intents": (SERF, "intent_queue"),
                "events": (SERF, "event_queue"),
                "queries": (SERF, "query_queue"),
            }
        ),
        ("queue",),
    ),
    # -- events and queries
    Family("user_events_sent", "counter", "User events sent.", field(SERF, "user_events_sent")),
    Family(
        "user_events_received",
        "counter",
        "User events delivered here (after dedupe).",
        field(SERF, "user_events_received"),
    ),
    Family(
        "user_events_dropped",
        "counter",
        "User events dropped because a subscriber's queue was full.",
        field("delivery", "dropped_user_events"),
    ),
    Family("queries_sent", "counter", "Queries started here.", field(SERF, "queries_sent")),
    Family(
        "queries_received",
        "counter",
        "Queries delivered here.",
        field(SERF, "queries_received"),
    ),
    Family(
        "queries_dropped",
        "counter",
        "Queries dropped because a subscriber's queue was full.",
        field("delivery", "dropped_queries"),
    ),
    Family(
        "query_acks_received",
        "counter",
        "Acks received for queries started here.",
        field(SERF, "query_acks"),
    ),
    Family(
        "query_responses_received",
        "counter",
        "Responses received for queries started here.",
        field(SERF, "query_responses"),
    ),
    # -- agent
    Family("handler_runs", "counter", "Event handler runs.", field("handlers", "runs")),
    Family(
        "handler_failures",
        "counter",
        "Event handler runs that failed (non-zero exit or could not start).",
        field("handlers", "failures"),
    ),
    Family(
        "handler_timeouts",
        "counter",
        "Event handler runs stopped at handler_timeout.",
        field("handlers", "timeouts"),
    ),
    Family(
        "rpc_connections",
        "gauge",
        "RPC connections open now.",
        field("rpc", "connections_open"),
    ),
    Family(
        "rpc_connections_accepted",
        "counter",
        "RPC connections accepted since start.",
        field("rpc", "connections_total"),
    ),
    # -- runtime
    Family(
        "loop_lag_seconds",
        "gauge",
        "How late the node's last timer ran (probe, gossip or core deadline).",
        field("runtime_lag", "lag_seconds"),
    ),
    Family(
        "loop_lag_max_seconds",
        "gauge",
        "The largest event-loop lag over the last minute.",
        field("runtime_lag", "max_lag_seconds"),
    ),
    Family(
        "loop_late_wakes",
        "counter",
        "Event-loop timer wakes more than 100 ms late.",
        field("runtime_lag", "late_wakes"),
    ),
    Family(
        "loop_stalls",
        "counter",
        "Stalls the node caught up after: its timers moved by the stall and the input that "
        "piled up read first; local health raised for stalls of a probe timeout or more.",
        field(ML, "stalls"),
    ),
)


class RegistryCollector(Collector):
    """A ``prometheus_client`` collector over ``snapshot()`` (``StatsRegistry.snapshot``)."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not take a snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        for fam in FAMILIES:
            name = PREFIX + fam.name
            metric: CounterMetricFamily | GaugeMetricFamily
            if fam.kind == "counter":
                metric = CounterMetricFamily(name, fam.help, labels=fam.labels)
            else:
                metric = GaugeMetricFamily(name, fam.help, labels=fam.labels)
            for labels, value in fam.read(snap):
                metric.add_metric(list(labels), value)
            yield metric


def make_registry(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RegistryCollector(snapshot))
    return registry


# ---------------------------------------------------------------------------------------------
# HTTP

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0


def _response(status: str, body: bytes, content_type: str, *, head: bool = False) -> bytes:
    head_lines = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head_lines.encode("ascii") + (b"" if head else body)


def answer(request_head: bytes, registry: CollectorRegistry) -> bytes:
    """The response to one request head (pure: the HTTP handler's logic, for tests too)."""
    line = request_head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return _response("400 Bad Request", b"bad request\n", "text/plain; charset=utf-8")
    method, target = parts[0], parts[1]
    path = target.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", b"GET only\n", "text/plain; charset=utf-8")
    if path != "/metrics":
        return _response("404 Not Found", b"not found\n", "text/plain; charset=utf-8")
    return _response(
        "200 OK", generate_latest(registry), CONTENT_TYPE_LATEST, head=method == "HEAD"
    )


class MetricsServer:
    """Serves ``/metrics`` on ``host:port`` (port 0: a free port; ``bound`` tells which)."""

    def __init__(
        self,
        host: str,
        port: int,
        snapshot: Callable[[], Snapshot],
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = make_registry(snapshot)
        self._log: structlog.typing.FilteringBoundLogger = logger or structlog.get_logger()
        self.bound: tuple[str, int] | None = None
        self.scrapes = 0

    async def run(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, self._handle, self.port, host=self.host or None)
            )
            sock = listeners[0].socket
            bound = sock.getsockname()
            self.bound = (bound[0], bound[1])
            self._log.info("metrics_listening", addr=f"{self.host}:{bound[1]}", path="/metrics")
            task_status.started(self.bound)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(REQUEST_TIMEOUT):
                with contextlib.suppress(trio.BrokenResourceError, OSError):
                    while b"\r\n\r\n" not in data and len(data) < MAX_REQUEST:
                        chunk = await stream.receive_some(4096)
                        if not chunk:
                            break
                        data += chunk
                if not data:
                    return
                reply = answer(data, self.registry)
                self.scrapes += 1
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, OSError
                ):
                    await stream.send_all(reply)


__all__ = ["FAMILIES", "MetricsServer", "RegistryCollector", "answer", "make_registry"]
