"""The agent process imports only what it runs: no rich (structlog would import it for tracebacks
it never shows), no Typer or Click (the console script dispatches ``agent`` past them), and no
optional feature's modules unless the feature is configured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


# The console script's agent path, run until the agent is ready (its sd_notify READY call),
# then the loaded modules are printed: what an agent with no optional keys has imported.
READY_PROBE = """
import importlib.abc, importlib.machinery, json, os, sys

def ready(self, *args, **kwargs):
    print(json.dumps(sorted(m for m, mod in sys.modules.items() if mod is not None)), flush=True)
    os._exit(0)

class PatchNotify(importlib.abc.MetaPathFinder):
    # Patches Notifier.ready once the agent itself imports serf_trio.agent.notify, so the probe
    # imports nothing before the launcher does.
    def find_spec(self, name, path, target=None):
        if name != "serf_trio.agent.notify":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.Notifier.ready = ready
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, PatchNotify())
sys.argv = ["serf-trio", "agent", *sys.argv[1:]]
from serf_trio.launcher import main
main()
"""

# Imported only when their feature is configured (or, for the CLI framework, never by the agent).
OPTIONAL = (
    "typer",
    "click",
    "rich",
    "zeroconf",
    "prometheus_client",
    "cryptography",
    "tomllib",
    "serf_trio.cli",
    "serf_trio.agent.discover",
    "serf_trio.agent.telemetry",
    "serf_trio.agent.metrics",
    "serf_trio.agent.snapshot_writer",
    "serf_trio.serf.snapshot",
)


def loaded_at_ready(tmp_path: Path, *extra: str) -> set[str]:
    argv = ["--node=solo", "--bind=127.0.0.1:0", f"--rpc-socket={tmp_path / 's.sock'}", *extra]
    r = subprocess.run(
        [sys.executable, "-c", READY_PROBE, *argv], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


@pytest.mark.realnet
def test_agent_path_imports_no_cli_framework_and_no_unconfigured_feature(tmp_path: Path) -> None:
    loaded = loaded_at_ready(tmp_path)
    assert "serf_trio.launcher" in loaded and "trio" in loaded  # the probe saw the real path
    assert sorted(m for m in OPTIONAL if m in loaded) == []


@pytest.mark.realnet
def test_configured_features_are_imported_when_asked_for(tmp_path: Path) -> None:
    config = tmp_path / "telemetry.json"
    config.write_text(json.dumps({"statsd_addr": "127.0.0.1:9"}))
    loaded = loaded_at_ready(tmp_path, f"--snapshot={tmp_path / 'snap'}", f"--config-file={config}")
    assert {"serf_trio.agent.snapshot_writer", "serf_trio.agent.telemetry"} <= loaded
