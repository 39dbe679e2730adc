"""The agent process entry point: ``serf-trio agent`` and ``python -m serf_trio.agent``.

Exit status: 0 after a leave or a stop signal, 1 for a bad configuration, a failed start (bind
error, a host name that does not resolve, a live agent on the RPC socket, failed start join,
syslog asked for but unreachable) or a crash.  Every failure is one log line (JSON unless
stderr is a TTY), never a bare traceback.  Once logging is set up, each config key that is
accepted but not honoured gets one warning line (``config_key_ignored``, with a ``hint``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import structlog
import trio

from serf_trio.rpc.server import RpcServeError
from serf_trio.runtime.logs import SYSLOG_PATH, LogSettings, SyslogWriter, configure

from .agent import Agent
from .config import ConfigError, load


def _log_config_error(message: str) -> None:
    """One line on stderr: JSON unless stderr is a TTY (logging is not configured yet)."""
    configure(LogSettings())
    structlog.get_logger().error("config_invalid", error=message)


def main(argv: Sequence[str] | None = None, *, syslog_path: str = SYSLOG_PATH) -> int:
    """``serf-trio agent [flags]``: run the agent; the process exit status is returned.
    ``syslog_path`` is the syslog socket ``enable_syslog`` writes to."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        loaded = load(args)
    except ConfigError as exc:
        _log_config_error(str(exc))
        return 1
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    cfg = loaded.config
    syslog: SyslogWriter | None = None
    if cfg.enable_syslog:
        try:
            syslog = SyslogWriter(cfg.syslog_facility, syslog_path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            _log_config_error(
                f"config key 'enable_syslog': cannot reach syslog at {syslog_path}: {reason}"
            )
            return 1
    settings = LogSettings(level=cfg.log_level)
    configure(settings, log_format=cfg.log_format, syslog=syslog)
    log = structlog.get_logger().bind(node=cfg.node_name)
    for notice in loaded.notices:
        log.warning(notice.event, key=notice.key, hint=notice.hint)
    agent = Agent(loaded, args, settings=settings, logger=log)
    code = 1
    try:
        code = trio.run(agent.run)
    except* (OSError, RpcServeError) as group:
        # Bind failures, a live agent on our socket, ...: one clear line, exit 1.
        errors = [str(e) for e in _leaves(group)]
        log.error("agent_failed", error="; ".join(errors))
    except* KeyboardInterrupt:
        code = 130
    except* Exception as group:
        # The process boundary: a bug must still come out as one JSON line (with a dict
        # traceback), never as a bare Python traceback on stderr.
        for crash in _leaves(group):
            log.error("agent_crashed", error=repr(crash), exc_info=crash)
    return code


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
