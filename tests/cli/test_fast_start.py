"""The client path stays light: real subprocesses, no agent running.

Wall time is measured in ``bench/cli_latency.py``; here we assert the cause of slowness that a
change would bring back: trio, structlog, rich or Pydantic loaded by a client command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("trio", "structlog", "rich", "pydantic")
TIMEOUT = 30  # seconds per subprocess: far above the ~0.1 s it takes

PROBE = """
import json, sys
args, watched = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
sys.argv = ["serf-trio", *args]
from serf_trio.cli import main
try:
    main()
except SystemExit:
    pass
heavy = sorted({m.split(".")[0] for m in sys.modules} & watched)
print(json.dumps(heavy), file=sys.stderr)
"""


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SERF_", "TYPER_", "_TYPER")) and k != "XDG_RUNTIME_DIR"
    }
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    return env


def serf_trio_cmd() -> list[str]:
    script = Path(sys.executable).with_name("serf-trio")
    return [str(script)] if script.exists() else [sys.executable, "-m", "serf_trio.cli"]


def heavy_loaded(
    tmp_path: Path, args: list[str]
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """The ``HEAVY`` modules that ``serf-trio ARGS`` loaded (run in a fresh interpreter)."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        timeout=TIMEOUT,
    )
    return json.loads(proc.stderr.splitlines()[-1]), proc


@pytest.mark.parametrize(
    "args",
    [
        ["members", "--rpc-socket", "/nonexistent/rpc.sock"],
        ["members", "--help"],
        ["query", "--help"],
        ["query", "q", "--timeout", "1s", "--tag", "a=b", "--rpc-addr", "127.0.0.1:1"],
        ["--help"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_client_commands_do_not_load_heavy_modules(tmp_path: Path, args: list[str]) -> None:
    loaded, _ = heavy_loaded(tmp_path, args)
    assert loaded == [], f"{' '.join(args)} loaded {loaded}"


def test_members_without_agent_names_every_socket_tried_and_exit_1(tmp_path: Path) -> None:
    if any(os.path.exists(p) for p in ("/run/serf-trio/rpc.sock",)):
        pytest.skip("a system serf-trio agent is running here")
    proc = subprocess.run(
        [*serf_trio_cmd(), "members"],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        timeout=TIMEOUT,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    sock = tmp_path / "serf-trio" / "rpc.sock"
    error, hint = proc.stderr.splitlines()
    assert error == (
        f"Error connecting to serf-trio agent: no agent socket at {sock} or /run/serf-trio/rpc.sock"
    )
    assert hint.startswith("Hint: is the agent running?")
    assert "/run/serf-trio/rpc.sock" in hint and "--rpc-socket" in hint


def test_tcp_refused_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*serf_trio_cmd(), "members", "--format", "json"],
        capture_output=True,
        text=True,
        env={**clean_env(tmp_path), "SERF_RPC_ADDR": "127.0.0.1:1"},
        timeout=TIMEOUT,
    )
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        "Error connecting to serf-trio agent at 127.0.0.1:1 (from SERF_RPC_ADDR): "
        "Connection refused\n"
    )


def test_module_entry_point_imports_no_heavy_module(tmp_path: Path) -> None:
    """``python -m serf_trio.cli`` (the fallback of ``serf_trio_cmd``), as the interpreter
    reports its imports with ``-X importtime``: ``__main__`` and the package's lazy library
    exports included, nothing heavy.  ``import serf_trio`` alone: ``tests/api``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "serf_trio.cli", "members", "--help"],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # stderr lines: "import time: self [us] | cumulative | imported package".
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert {"serf_trio", "serf_trio.cli", "typer"} <= imported
    assert sorted({m.split(".")[0] for m in imported} & set(HEAVY)) == []
