"""Agent logging: JSON lines only, dynamic levels, warnings routed, the monitor LogHub."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings

import pytest
import structlog
import trio
import trio.testing

from serf_trio.runtime.logs import LogHub, LogSettings, UnknownLevel, configure, monitor_level


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    out = []
    for line in buf.getvalue().splitlines():
        out.append(json.loads(line))  # every line must be one JSON object
    return out


def test_json_lines_levels_and_fields(restore_logging: None) -> None:
    buf = io.StringIO()
    settings = LogSettings(level="INFO")
    configure(settings, stream=buf)  # a StringIO is not a TTY: JSON
    log = structlog.get_logger().bind(node="n1")
    log.debug("hidden")
    log.info("member_join", member="n2")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("handler_failed")
    settings.level = "DEBUG"  # SIGHUP changes the level of loggers bound earlier
    log.debug("shown")
    recs = lines(buf)
    assert [r["event"] for r in recs] == ["member_join", "handler_failed", "shown"]
    first = recs[0]
    assert first["node"] == "n1" and first["level"] == "info" and first["member"] == "n2"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", str(first["timestamp"]))
    assert isinstance(recs[1]["exception"], list)  # dict tracebacks


def test_stdlib_logging_and_warnings_become_json(restore_logging: None) -> None:
    buf = io.StringIO()
    configure(LogSettings(), stream=buf)
    logging.getLogger("somelib").warning("careful %s", "now")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old api", DeprecationWarning, stacklevel=1)
    recs = lines(buf)
    assert recs[0]["event"] == "library_log" and recs[0]["message"] == "careful now"
    assert recs[1]["event"] == "python_warning" and "old api" in str(recs[1]["message"])


def test_text_format_on_request(restore_logging: None) -> None:
    buf = io.StringIO()
    configure(LogSettings(), log_format="text", stream=buf)
    structlog.get_logger().info("agent_ready", addr="127.0.0.1:1")
    text = buf.getvalue()
    assert "agent_ready" in text and "addr=127.0.0.1:1" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


@pytest.mark.parametrize(("word", "n"), [("trace", 5), ("DEBUG", 10), ("Info", 20), ("warn", 30)])
def test_monitor_levels(word: str, n: int) -> None:
    assert monitor_level(word) == n


def test_monitor_unknown_level() -> None:
    with pytest.raises(UnknownLevel, match=r"^Unknown log level: LOUD$"):
        monitor_level("LOUD")


def test_hub_backlog_filter_and_lossy_subscribers(restore_logging: None) -> None:
    buf = io.StringIO()
    settings = LogSettings(level="INFO", hub=LogHub(backlog=4))
    configure(settings, stream=buf)
    log = structlog.get_logger()
    for i in range(6):
        log.info("tick", i=i)
    hub = settings.hub
    assert len(hub.lines()) == 4  # bounded backlog keeps the newest
    assert re.match(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[INFO\] agent: tick i=5$", hub.lines()[-1])

    async def main() -> None:
        with hub.subscribe(30) as warn_only:  # WARN and above
            log.info("quiet")
            log.warning("loud", x=1)
            got = warn_only.receive_nowait()
            assert "[WARN] agent: loud x=1" in got
            with pytest.raises(trio.WouldBlock):
                warn_only.receive_nowait()
        with hub.subscribe(10) as debug:  # a DEBUG monitor sees debug lines the output hides
            log.debug("fine_detail")
            seen = [debug.receive_nowait() for _ in range(5)]
            # the backlog (4 newest lines) replayed first, then the live debug line
            assert [s.split("agent: ")[1] for s in seen] == [
                "tick i=4",
                "tick i=5",
                "quiet",
                "loud x=1",
                "fine_detail",
            ]
        for _ in range(600):  # a subscriber nobody reads drops lines rather than blocking
            log.info("spam")

    with hub.subscribe(20):
        trio.run(main)
    assert "fine_detail" not in buf.getvalue()  # output level stayed INFO
