"""The agent's telemetry: the stats registry sent to statsd (UDP) and statsite (TCP) in the
names and line format of the real Serf agent (go-metrics' statsd and statsite sinks).

``docs/metrics.md`` lists every name.  Rules this module owns:

* **One name table** (``COUNTERS``, ``COUNTER_FAMILIES``, ``GAUGES``): registry names
  (``section.field``, as ``StatsRegistry.snapshot`` flattens them) to Serf's metric names.  A
  registry name that does not exist (a component that has no such counter, a section not
  registered yet) is skipped, so the table may name counters before they exist.
* **Lines as go-metrics writes them**: ``serf-agent.NAME:VALUE|TYPE`` with ``VALUE`` a float32
  printed ``%f`` (``1.000000``; go-metrics passes every value as a float32, so large values are
  rounded as Serf rounds them), ``c`` for counters and ``g`` for gauges.  Gauges carry the host
  name after the prefix (go-metrics' ``EnableHostname``: ``os.Hostname()`` as is, here
  ``socket.gethostname()``); counters do not.  ``:`` and space in a name become ``_`` (the
  sinks' ``flattenKey``); so do ``|`` and line breaks, which would break the line format.
  Every line ends with ``\\n``; a statsd datagram holds as many whole lines as fit in
  ``MAX_DATAGRAM`` (1400) bytes (a longer single line goes alone), as go-metrics packs them.
* **Values**: every ``interval`` (1 s; go-metrics' sinks flush every 100 ms) one
  ``registry.snapshot()``: counters are sent as the non-zero increase since the previous flush
  (the first flush counts from zero, so what happened before it is sent too; a counter that
  went down was reset and its new value is the increase), gauges as their current value at
  every flush.  No timers or samples are sent (nothing here measures them).
* **Never blocks, never crashes the agent**: the flush hands each sink one batch without
  waiting (``offer``); a sink sends from its own task, and a batch it cannot take (not
  connected, its queue full) or cannot send (a socket error) is dropped and counted.  A failed
  sink closes its socket and connects again (resolving the name again) after a backoff that
  doubles from ``BACKOFF_MIN`` to ``BACKOFF_MAX``.  The counts are the registry section
  ``telemetry``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import resource
import socket
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from serf_trio.record import record
from serf_trio.runtime.resolve import HostPort, resolve_one
from serf_trio.runtime.stats import Section, StatsRegistry

from .config import AgentConfig

PREFIX = "serf-agent"  # Serf: metrics.DefaultConfig("serf-agent")
MAX_DATAGRAM = 1400  # go-metrics' statsdMaxLen
INTERVAL = 1.0
BACKOFF_MIN = 1.0
BACKOFF_MAX = 30.0
QUEUE_BATCHES = 16  # batches a sink holds before dropping
WRITE_TIMEOUT = 10.0  # a statsite write that takes longer drops the connection
DEFAULT_PORT = 8125  # statsd's and statsite's port

# Registry name (section.field) -> Serf's counter name.
COUNTERS: dict[str, str] = {
    "serf.member_events.member-join": "serf.member.join",
    "serf.member_events.member-leave": "serf.member.left",
    "serf.member_events.member-failed": "serf.member.failed",
    "serf.member_events.member-update": "serf.member.update",
    "serf.member_events.member-reap": "serf.member.reap",
    "serf.flaps": "serf.member.flap",
    "serf.user_events_received": "serf.events",
    "serf.queries_received": "serf.queries",
    "serf.query_acks": "serf.query_acks",
    "serf.query_responses": "serf.query_responses",
    "memberlist.messages_in.alive": "memberlist.msg.alive",
    "memberlist.messages_in.suspect": "memberlist.msg.suspect",
    "memberlist.messages_in.dead": "memberlist.msg.dead",
    "memberlist.degraded_probes": "memberlist.degraded.probe",
    "transport.bytes_in": "memberlist.udp.received",
    "transport.bytes_out": "memberlist.udp.sent",
    "transport.streams_out": "memberlist.tcp.connect",
    "transport.streams_in": "memberlist.tcp.accept",
    "transport.tcp_bytes_out": "memberlist.tcp.sent",
    "rpc.connections_total": "agent.ipc.accept",
    "rpc.commands": "agent.ipc.command",
}

# Registry name prefix -> Serf's counter name prefix (one counter per event or query name).
COUNTER_FAMILIES: dict[str, str] = {
    "serf.user_events_by_name.": "serf.events.",
    "serf.queries_by_name.": "serf.queries.",
}

# Registry name -> Serf's gauge name (sent as serf-agent.HOST.NAME).
GAUGES: dict[str, str] = {
    "memberlist.health_score": "memberlist.health.score",
    "serf.intent_queue": "serf.queue.Intent",
    "serf.event_queue": "serf.queue.Event",
    "serf.query_queue": "serf.queue.Query",
}

_BAD = str.maketrans({":": "_", " ": "_", "|": "_", "\n": "_", "\r": "_"})


def sanitize(name: str) -> str:
    """go-metrics' ``flattenKey`` (``:`` and space -> ``_``), plus ``|`` and line breaks."""
    return name.translate(_BAD)


def float32(value: float) -> float:
    """``value`` as go-metrics carries it (a float32)."""
    try:
        return float(struct.unpack("f", struct.pack("f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def format_value(value: float) -> str:
    """go's ``%f`` of a float32: six decimals."""
    return f"{float32(value):f}"


def counter_line(name: str, value: float) -> str:
    return f"{PREFIX}.{sanitize(name)}:{format_value(value)}|c"


def gauge_line(host: str, name: str, value: float) -> str:
    return f"{PREFIX}.{sanitize(host)}.{sanitize(name)}:{format_value(value)}|g"


def pack(lines: Iterable[str], limit: int = MAX_DATAGRAM) -> list[bytes]:
    """Newline-terminated lines packed into datagrams of at most ``limit`` bytes (a longer
    single line is a datagram of its own), in order, as go-metrics' statsd sink packs them."""
    out: list[bytes] = []
    buf = bytearray()
    for line in lines:
        data = (line + "\n").encode()
        if buf and len(buf) + len(data) > limit:
            out.append(bytes(buf))
            buf.clear()
        buf += data
    if buf:
        out.append(bytes(buf))
    return out


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def counter_names(flat: Mapping[str, object]) -> dict[str, tuple[str, float]]:
    """Registry name -> (Serf counter name, cumulative value), for every mapped counter that
    exists in ``flat`` (``section.field`` -> value)."""
    out: dict[str, tuple[str, float]] = {}
    for key, value in flat.items():
        number = _number(value)
        if number is None:
            continue
        name = COUNTERS.get(key)
        if name is None:
            for prefix, serf_prefix in COUNTER_FAMILIES.items():
                if key.startswith(prefix) and len(key) > len(prefix):
                    name = serf_prefix + key[len(prefix) :]
                    break
        if name is not None:
            out[key] = (name, number)
    return out


def flat_snapshot(snapshot: Mapping[str, Section]) -> dict[str, object]:
    """``{section: {field: v}}`` -> ``{"section.field": v}``."""
    return {f"{sec}.{k}": v for sec, fields in snapshot.items() for k, v in fields.items()}


class CounterDeltas:
    """The increase of each counter since the previous call (module docstring)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def update(self, flat: Mapping[str, object]) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for key, (name, value) in counter_names(flat).items():
            last = self._last.get(key, 0.0)
            delta = value - last if value >= last else value  # went down: it was reset
            self._last[key] = value
            if delta > 0:
                out.append((name, delta))
        return out


def process_gauges() -> dict[str, float]:
    """The process's own figures, in place of go-metrics' Go runtime gauges."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/statm", "rb") as f:  # procfs: never blocks
            out["runtime.rss_bytes"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["runtime.max_rss_bytes"] = usage.ru_maxrss * 1024  # KiB on Linux
    out["runtime.cpu_seconds"] = usage.ru_utime + usage.ru_stime
    out["runtime.gc_collections"] = sum(g.get("collections", 0) for g in gc.get_stats())
    out["runtime.num_threads"] = threading.active_count()
    with contextlib.suppress(RuntimeError):  # not in trio
        out["runtime.num_tasks"] = trio.lowlevel.current_statistics().tasks_living
    return out


def gauge_values(flat: Mapping[str, object]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for key, name in GAUGES.items():
        number = _number(flat.get(key))
        if number is not None:
            out.append((name, number))
    out.extend(sorted(process_gauges().items()))
    return out


# ---------------------------------------------------------------------------------------------
# Sinks


@dataclass(slots=True)
class SinkStats:
    connects: int = 0
    connect_failures: int = 0
    batches_sent: int = 0  # statsd: datagrams; statsite: writes
    lines_sent: int = 0
    bytes_sent: int = 0
    lines_dropped: int = 0
    send_errors: int = 0


class _Reconnect(Exception):
    """The connection is unusable: close it and connect again after the backoff."""


class Sink:
    """One destination: ``offer`` never waits; ``run`` connects and sends (module docstring)."""

    kind = "sink"

    def __init__(self, target: HostPort, *, logger: Any = None) -> None:
        self.target = target
        self.stats = SinkStats()
        self.connected = False
        self._log: Any = logger or structlog.get_logger("serf_trio.telemetry")
        self._send, self._recv = trio.open_memory_channel[list[str]](QUEUE_BATCHES)

    def offer(self, lines: list[str]) -> None:
        if not lines:
            return
        if not self.connected:
            self.stats.lines_dropped += len(lines)
            return
        try:
            self._send.send_nowait(lines)
        except trio.WouldBlock:
            self.stats.lines_dropped += len(lines)

    def _drain(self) -> None:
        while True:
            try:
                batch = self._recv.receive_nowait()
            except trio.WouldBlock:
                return
            self.stats.lines_dropped += len(batch)

    async def run(self) -> None:
        backoff = BACKOFF_MIN
        while True:
            try:
                await self._session()
            except _Reconnect:
                pass
            except Exception as exc:  # never let a sink take the agent down
                self._log.warning("telemetry_sink_error", sink=self.kind, error=repr(exc))
            finally:
                if self.connected:
                    backoff = BACKOFF_MIN  # it had connected: start the backoff over
                self.connected = False
                self._drain()
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session(self) -> None:
        raise NotImplementedError


class StatsdSink(Sink):
    """Datagrams of newline-separated lines to ``HOST:PORT`` over UDP."""

    kind = "statsd"

    async def _session(self) -> None:
        try:
            addr = await resolve_one(self.target)
            family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
            sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        except (OSError, ValueError) as exc:
            self._connect_failed(exc)
            raise _Reconnect from None
        with sock:
            try:
                await sock.connect((addr.host, addr.port))
            except OSError as exc:
                self._connect_failed(exc)
                raise _Reconnect from None
            self.stats.connects += 1
            self.connected = True
            while True:
                batch = await self._recv.receive()
                sent = 0
                for datagram in pack(batch):
                    try:
                        await sock.send(datagram)
                    except OSError as exc:
                        self.stats.send_errors += 1
                        self.stats.lines_dropped += len(batch) - sent
                        self._log.debug("telemetry_send_failed", sink=self.kind, error=str(exc))
                        raise _Reconnect from None
                    lines = datagram.count(b"\n")
                    sent += lines
                    self.stats.batches_sent += 1
                    self.stats.lines_sent += lines
                    self.stats.bytes_sent += len(datagram)

    def _connect_failed(self, exc: Exception) -> None:
        self.stats.connect_failures += 1
        self._log.warning("telemetry_connect_failed", sink=self.kind, addr=str(self.target),
                          error=str(exc))  # fmt: skip


class StatsiteSink(Sink):
    """The same lines over one TCP connection to ``HOST:PORT``."""

    kind = "statsite"

    async def _session(self) -> None:
        try:
            addr = await resolve_one(self.target)
            with trio.fail_after(WRITE_TIMEOUT):
                stream = await trio.open_tcp_stream(addr.host, addr.port)
        except (OSError, ValueError, trio.TooSlowError) as exc:
            self.stats.connect_failures += 1
            self._log.warning("telemetry_connect_failed", sink=self.kind,
                              addr=str(self.target), error=str(exc))  # fmt: skip
            raise _Reconnect from None
        async with stream:
            self.stats.connects += 1
            self.connected = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_close, stream, nursery.cancel_scope)
                await self._write(stream)  # returns when a write fails
                nursery.cancel_scope.cancel()
        raise _Reconnect

    async def _write(self, stream: trio.SocketStream) -> None:
        while True:
            batch = await self._recv.receive()
            data = "".join(line + "\n" for line in batch).encode()
            try:
                with trio.fail_after(WRITE_TIMEOUT):
                    await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError,
                    trio.TooSlowError) as exc:  # fmt: skip
                self.stats.send_errors += 1
                self.stats.lines_dropped += len(batch)
                self._log.debug("telemetry_send_failed", sink=self.kind, error=repr(exc))
                return
            self.stats.batches_sent += 1
            self.stats.lines_sent += len(batch)
            self.stats.bytes_sent += len(data)

    async def _watch_close(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        """statsite never writes: end of stream (or an error) means the connection is gone."""
        try:
            while await stream.receive_some(4096):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()


# ---------------------------------------------------------------------------------------------
# The exporter


@record
class TelemetryStats:
    flushes: int
    flush_errors: int
    lines: int
    statsd: SinkStats | None
    statsite: SinkStats | None


class Telemetry:
    """Every ``interval``: the registry's counters and gauges as lines, to each sink."""

    def __init__(
        self,
        registry: StatsRegistry,
        *,
        statsd: HostPort | None = None,
        statsite: HostPort | None = None,
        hostname: str | None = None,
        interval: float = INTERVAL,
        logger: Any = None,
    ) -> None:
        self.registry = registry
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.interval = interval
        self._log: Any = logger or structlog.get_logger("serf_trio.telemetry")
        self.statsd = StatsdSink(statsd, logger=self._log) if statsd is not None else None
        self.statsite = StatsiteSink(statsite, logger=self._log) if statsite is not None else None
        self.deltas = CounterDeltas()
        self._flushes = 0
        self._flush_errors = 0
        self._lines = 0

    @property
    def sinks(self) -> list[Sink]:
        return [s for s in (self.statsd, self.statsite) if s is not None]

    def statistics(self) -> TelemetryStats:
        return TelemetryStats(
            self._flushes,
            self._flush_errors,
            self._lines,
            self.statsd.stats if self.statsd is not None else None,
            self.statsite.stats if self.statsite is not None else None,
        )

    def collect(self) -> list[str]:
        """The lines of one flush (counters' increases, then gauges)."""
        flat = flat_snapshot(self.registry.snapshot())
        lines = [counter_line(name, delta) for name, delta in self.deltas.update(flat)]
        lines += [gauge_line(self.hostname, name, v) for name, v in gauge_values(flat)]
        return lines

    def flush(self) -> None:
        try:
            lines = self.collect()
        except Exception as exc:  # a component's statistics() failing costs one flush
            self._flush_errors += 1
            self._log.warning("telemetry_flush_failed", error=repr(exc))
            return
        self._flushes += 1
        self._lines += len(lines)
        for sink in self.sinks:
            sink.offer(lines)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.registry.register("telemetry", self.statistics)
        self._log.info(
            "telemetry_started",
            statsd=str(self.statsd.target) if self.statsd else None,
            statsite=str(self.statsite.target) if self.statsite else None,
            interval=self.interval,
        )
        async with trio.open_nursery() as nursery:
            for sink in self.sinks:
                nursery.start_soon(sink.run)
            task_status.started()
            deadline = trio.current_time()
            while True:
                # a steady tick; after a stall, one flush at once and no burst of catch-up flushes
                deadline = max(deadline + self.interval, trio.current_time())
                await trio.sleep_until(deadline)
                self.flush()


def from_config(
    config: AgentConfig, registry: StatsRegistry, logger: Any = None
) -> Telemetry | None:
    """The agent's telemetry when ``statsd_addr`` or ``statsite_addr`` is set, else None."""
    if config.statsd_addr is None and config.statsite_addr is None:
        return None
    return Telemetry(
        registry, statsd=config.statsd_addr, statsite=config.statsite_addr, logger=logger
    )
