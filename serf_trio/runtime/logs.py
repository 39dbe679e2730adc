"""Process logging: structlog configured once, and the ``LogHub`` behind RPC ``monitor``.

Every entry point (the agent, the runner, the demo) calls ``configure`` here; it lives in the
runtime layer so that the runner and the demo, which sit below the agent, share it.

Rules this module owns:

* **One configuration** (``configure``): contextvars merge, level, ISO-8601 UTC timestamp,
  dict tracebacks, then a JSON renderer (one object per line on stderr) or, on a TTY or with
  ``--log-format text``, structlog's console renderer.  Stdlib ``logging`` records and Python
  warnings are routed into structlog, so with no TTY the process writes nothing but JSON lines.
* **Levels are dynamic**: the output level lives in ``LogSettings`` (SIGHUP changes it) and is
  applied by a processor, not baked into the bound-logger class, because the lower layers bind
  their loggers once at start.  The floor actually processed is the lowest of the output level
  and the levels ``monitor`` subscribers asked for: Serf's monitor sees debug lines even when
  the agent's own output is at INFO.
* **LogHub**: the last 512 lines (as Serf's ``2026/11/29 04:50:54 [INFO] agent: ...`` text)
  plus bounded, lossy subscriber channels; a slow monitor client loses lines, never the agent.
* **Syslog** (``SyslogWriter``, Serf's ``enable_syslog`` / ``syslog_facility``): every line
  that is output also goes, as text, to the local syslog socket (``/dev/log``; the path is a
  parameter), tagged ``serf-trio``, with Serf's level-to-priority map (TRACE debug, DEBUG info,
  INFO notice, WARN warning, ERR err).  The socket is non-blocking and lossy: a full or absent
  syslog drops the line (counted in ``dropped``), it never stalls the agent.  The JSON (or
  text) lines on stderr stay as they are.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog
import trio

# Numeric levels: Serf's names on the left, structlog method names mapped onto them.
LEVEL_NUMBERS = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "WARN": 30, "ERR": 40}
# Level words accepted in config and flags (lower-case) -> Serf's names.
LEVEL_WORDS = {
    "trace": "TRACE",
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARN",
    "warning": "WARN",
    "err": "ERR",
    "error": "ERR",
}
_METHOD_LEVELS = {
    "trace": "TRACE",
    "debug": "DEBUG",
    "info": "INFO",
    "msg": "INFO",
    "warning": "WARN",
    "warn": "WARN",
    "error": "ERR",
    "exception": "ERR",
    "critical": "ERR",
    "fatal": "ERR",
}

# syslog(3) facilities by Serf's names (go-syslog facilityPriority), and the severity each of
# Serf's levels is written at (serf syslog.go levelPriority: one step down, INFO is notice).
SYSLOG_FACILITIES = {
    "KERN": 0,
    "USER": 1,
    "MAIL": 2,
    "DAEMON": 3,
    "AUTH": 4,
    "SYSLOG": 5,
    "LPR": 6,
    "NEWS": 7,
    "UUCP": 8,
    "CRON": 9,
    "AUTHPRIV": 10,
    "FTP": 11,
    **{f"LOCAL{i}": 16 + i for i in range(8)},
}
_SYSLOG_SEVERITY = {"TRACE": 7, "DEBUG": 6, "INFO": 5, "WARN": 4, "ERR": 3}
SYSLOG_PATH = "/dev/log"
SYSLOG_TAG = "serf-trio"

BACKLOG = 512  # lines kept for new monitor clients (Serf's log writer keeps 512)
SUBSCRIBER_BUFFER = 512


class UnknownLevel(ValueError):
    """``monitor`` asked for a level Serf does not know (``Unknown log level: X``)."""


def monitor_level(text: str) -> int:
    """TRACE/DEBUG/INFO/WARN/ERR, case-insensitive -> number; ``UnknownLevel`` otherwise."""
    name = text.strip().upper()
    if name not in LEVEL_NUMBERS:
        raise UnknownLevel(f"Unknown log level: {text}")
    return LEVEL_NUMBERS[name]


def render_text(level: str, event_dict: MutableMapping[str, Any]) -> str:
    """Serf's Go-log form: ``2026/11/29 04:50:54 [INFO] agent: member_join member=n2``."""
    stamp = datetime.now(UTC).strftime("%Y/%m/%d %H:%M:%S")
    return f"{stamp} [{level}] {_message(event_dict)}"


def _message(event_dict: MutableMapping[str, Any]) -> str:
    """``agent: member_join member=n2``: the part of a line after the level."""
    skip = {"event", "level", "timestamp", "node"}
    fields = " ".join(f"{k}={v}" for k, v in event_dict.items() if k not in skip)
    event = event_dict.get("event", "")
    return f"agent: {event}" + (f" {fields}" if fields else "")


class SyslogWriter:
    """Log lines to the local syslog socket, as datagrams in the form syslog(3) writes
    (``<PRI>Mmm dd hh:mm:ss serf-trio[PID]: message``).  ``OSError`` from the constructor when
    the socket cannot be reached (Serf refuses to start then too); afterwards sending never
    blocks and never raises: a line that cannot be sent is dropped and counted."""

    def __init__(self, facility: str = "LOCAL0", path: str = SYSLOG_PATH) -> None:
        name = facility.strip().upper()
        if name not in SYSLOG_FACILITIES:
            raise ValueError(f"unknown syslog facility {facility!r}")
        self.facility = SYSLOG_FACILITIES[name]
        self.path = path
        self.sent = 0
        self.dropped = 0
        self._sock = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def send(self, level: str, message: str) -> None:
        """Send one line at Serf's ``level`` (TRACE ... ERR)."""
        pri = self.facility * 8 + _SYSLOG_SEVERITY.get(level, 5)
        stamp = time.strftime("%b %d %H:%M:%S")
        data = f"<{pri}>{stamp} {SYSLOG_TAG}[{os.getpid()}]: {message}".encode()
        for attempt in (1, 2):
            try:
                self._sock.send(data)
            except BlockingIOError:
                break  # syslog is behind: drop rather than wait
            except OSError:
                if attempt == 2:
                    break
                try:  # the daemon restarted (a new socket at the same path): reconnect once
                    fresh = self._connect()
                except OSError:
                    break
                self._sock.close()
                self._sock = fresh
            else:
                self.sent += 1
                return
        self.dropped += 1

    def close(self) -> None:
        self._sock.close()


@dataclass(slots=True)
class _Subscriber:
    level: int
    send: trio.MemorySendChannel[str]
    thread: int
    dropped: int = 0


@dataclass
class LogHub:
    """Recent log lines and live subscribers for ``monitor`` (bounded and lossy)."""

    backlog: int = BACKLOG
    _lines: deque[tuple[int, str]] = field(init=False)
    _subs: list[_Subscriber] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._lines = deque(maxlen=self.backlog)

    def min_level(self) -> int | None:
        return min((s.level for s in self._subs), default=None)

    def publish(self, level: int, line: str) -> None:
        self._lines.append((level, line))
        me = threading.get_ident()
        for sub in self._subs:
            # Memory channels belong to the trio thread; lines logged from worker threads are
            # kept in the backlog only.
            if level < sub.level or sub.thread != me:
                continue
            try:
                sub.send.send_nowait(line)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                sub.dropped += 1

    def open(self, level: int) -> tuple[trio.MemoryReceiveChannel[str], Callable[[], None]]:
        """Subscribe now: a channel of lines at ``level`` or above (buffered ones first) and
        the function that ends the subscription."""
        send, recv = trio.open_memory_channel[str](SUBSCRIBER_BUFFER)
        sub = _Subscriber(level, send, threading.get_ident())
        for lvl, line in list(self._lines)[-SUBSCRIBER_BUFFER:]:
            if lvl >= level:
                send.send_nowait(line)
        self._subs.append(sub)

        def close() -> None:
            if sub in self._subs:
                self._subs.remove(sub)
            send.close()

        return recv, close

    @contextmanager
    def subscribe(self, level: int) -> Iterator[trio.MemoryReceiveChannel[str]]:
        recv, close = self.open(level)
        try:
            yield recv
        finally:
            close()
            recv.close()

    def lines(self) -> list[str]:
        return [line for _, line in self._lines]


@dataclass
class LogSettings:
    """Mutable level state read by the processors (SIGHUP changes ``level``)."""

    level: str = "INFO"
    hub: LogHub = field(default_factory=LogHub)

    @property
    def level_number(self) -> int:
        return LEVEL_NUMBERS[self.level]


def _floor_processor(settings: LogSettings) -> Any:
    def floor(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        name = _METHOD_LEVELS.get(method, "INFO")
        number = LEVEL_NUMBERS[name]
        hub_min = settings.hub.min_level()
        floor_level = (
            settings.level_number if hub_min is None else min(hub_min, settings.level_number)
        )
        if number < floor_level:
            raise structlog.DropEvent
        event_dict["_serf_level"] = name
        return event_dict

    return floor


def _hub_processor(settings: LogSettings) -> Any:
    def tap(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        name = event_dict.pop("_serf_level", "INFO")
        number = LEVEL_NUMBERS[name]
        settings.hub.publish(number, render_text(name, event_dict))
        if number < settings.level_number:
            raise structlog.DropEvent
        return event_dict

    return tap


def _syslog_processor(writer: SyslogWriter) -> Any:
    def tee(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        writer.send(_METHOD_LEVELS.get(method, "INFO"), _message(event_dict))
        return event_dict

    return tee


def use_console(log_format: str | None, stream: TextIO) -> bool:
    """Console rendering when asked for, or by default when ``stream`` is a TTY."""
    if log_format is not None:
        return log_format == "text"
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _StdlibBridge(logging.Handler):
    """Forwards stdlib ``logging`` records (libraries, ``py.warnings``) into structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        log = structlog.get_logger(record.name)
        msg = record.getMessage()
        if record.name == "py.warnings":
            log.warning("python_warning", message=msg.strip())
        elif record.levelno >= logging.ERROR:
            log.error("library_log", logger=record.name, message=msg)
        elif record.levelno >= logging.WARNING:
            log.warning("library_log", logger=record.name, message=msg)
        elif record.levelno >= logging.INFO:
            log.info("library_log", logger=record.name, message=msg)
        else:
            log.debug("library_log", logger=record.name, message=msg)


def configure(
    settings: LogSettings,
    *,
    log_format: str | None = None,
    stream: TextIO | None = None,
    syslog: SyslogWriter | None = None,
) -> None:
    """Configure structlog (and route stdlib logging and warnings into it).  Call once.
    ``syslog``: also send every line that is output there (module docstring)."""
    out = stream if stream is not None else sys.stderr
    renderer: Any
    if use_console(log_format, out):
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        tracebacks: list[Any] = []
    else:
        renderer = structlog.processors.JSONRenderer()
        tracebacks = [structlog.processors.dict_tracebacks]
    structlog.configure(
        processors=[
            _floor_processor(settings),
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _hub_processor(settings),
            *([_syslog_processor(syslog)] if syslog is not None else []),
            *tracebacks,
            renderer,
        ],
        # Every level reaches the processors; ``_floor_processor`` filters (levels change).
        wrapper_class=structlog.make_filtering_bound_logger(0),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    root.setLevel(logging.DEBUG)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
