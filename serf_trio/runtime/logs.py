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
"""

from __future__ import annotations

import logging
import sys
import threading
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
    skip = {"event", "level", "timestamp", "node"}
    fields = " ".join(f"{k}={v}" for k, v in event_dict.items() if k not in skip)
    event = event_dict.get("event", "")
    return f"{stamp} [{level}] agent: {event}" + (f" {fields}" if fields else "")


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
    settings: LogSettings, *, log_format: str | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog (and route stdlib logging and warnings into it).  Call once."""
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
