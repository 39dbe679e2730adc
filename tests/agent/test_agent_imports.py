"""The agent process keeps rich out (structlog would import it for tracebacks it never shows)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from serf_trio.process import keep_rich_out
keep_rich_out()
import serf_trio.agent.main
from serf_trio.runtime.logs import LogSettings, configure
configure(LogSettings(), log_format="text")
import structlog
structlog.get_logger().info("console_still_works", x=1)
print("rich" in sys.modules and sys.modules["rich"] is not None)
"""


def test_agent_entry_keeps_rich_out_and_console_logs_still_render() -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    assert "console_still_works" in r.stderr
