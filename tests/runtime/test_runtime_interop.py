"""The runner against the real HashiCorp ``serf`` agent on 127.0.0.1 (both directions).

Every wait polls a condition with a deadline; every process is killed in a fixture finalizer.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import Procs, free_port, wait_for

pytestmark = [
    pytest.mark.interop,
    pytest.mark.realnet,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("serf") is None, reason="needs the serf binary"),
]

SERF = shutil.which("serf") or "serf"


class RealAgent:
    def __init__(self, procs: Procs, name: str, join: str | None = None) -> None:
        self.port = free_port()
        self.rpc = f"127.0.0.1:{free_port()}"
        self.addr = f"127.0.0.1:{self.port}"
        argv = [SERF, "agent", f"-node={name}", f"-bind={self.addr}", f"-rpc-addr={self.rpc}"]
        if join:
            argv.append(f"-join={join}")
        self.proc = procs.start(name, argv)
        wait_for(self._rpc_up, f"serf agent {name} RPC", 15)

    def _rpc_up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("serf agent exited early")
        return self.members() is not None

    def members(self) -> dict[str, dict[str, Any]] | None:
        r = subprocess.run(
            [SERF, "members", f"-rpc-addr={self.rpc}", "-format=json"],
            capture_output=True,
            timeout=10,
        )
        if r.returncode != 0:
            return None
        return {m["name"]: m for m in json.loads(r.stdout)["members"]}

    def status(self, name: str) -> str | None:
        m = (self.members() or {}).get(name)
        return None if m is None else str(m["status"])

    def join(self, addr: str) -> None:
        r = subprocess.run(
            [SERF, "join", f"-rpc-addr={self.rpc}", addr], capture_output=True, timeout=15
        )
        assert r.returncode == 0, r.stdout + r.stderr


class Runner:
    def __init__(self, procs: Procs, name: str, *extra: str, profile: str = "lan") -> None:
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.members_file = procs.tmp / f"{name}.members.json"
        argv = [
            sys.executable,
            "-m",
            "serf_trio.runtime.runner",
            f"--name={name}",
            f"--bind={self.addr}",
            f"--members-file={self.members_file}",
            f"--profile={profile}",
            "--tag=impl=serf-trio",
            *extra,
        ]
        self.proc = procs.start(name, argv)
        wait_for(self.members_file.exists, f"runner {name} members file", 15)

    def status(self, name: str) -> str | None:
        try:
            doc = json.loads(self.members_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        for m in doc["members"]:
            if m["name"] == name:
                return str(m["status"])
        return None


def test_our_node_joins_real_agent_and_detects_its_crash(procs: Procs) -> None:
    t0 = time.monotonic()
    try:
        real = RealAgent(procs, "real1")
        ours = Runner(procs, "py1", f"--join={real.addr}")
        wait_for(lambda: real.status("py1") == "alive", "real agent lists py1 alive", 15)
        wait_for(lambda: ours.status("real1") == "alive", "py1 lists real1 alive", 15)
        # Real Serf decodes our tags from Meta.
        assert (real.members() or {})["py1"]["tags"] == {"impl": "serf-trio"}
        t_joined = time.monotonic()
        real.proc.send_signal(signal.SIGKILL)
        wait_for(lambda: ours.status("real1") == "failed", "py1 marks real1 failed", 30)
        t_failed = time.monotonic()
        assert ours.proc.poll() is None
    except AssertionError:
        print(procs.logs())
        raise
    print(f"interop A: join {t_joined - t0:.1f}s, failure detected {t_failed - t_joined:.1f}s")


def test_real_agent_joins_our_node_and_detects_its_crash(procs: Procs) -> None:
    t0 = time.monotonic()
    try:
        ours = Runner(procs, "py2")
        real = RealAgent(procs, "real2")
        real.join(ours.addr)
        wait_for(lambda: real.status("py2") == "alive", "real agent lists py2 alive", 15)
        wait_for(lambda: ours.status("real2") == "alive", "py2 lists real2 alive", 15)
        t_joined = time.monotonic()
        ours.proc.send_signal(signal.SIGKILL)
        wait_for(lambda: real.status("py2") == "failed", "real agent marks py2 failed", 30)
        t_failed = time.monotonic()
    except AssertionError:
        print(procs.logs())
        raise
    print(f"interop B: join {t_joined - t0:.1f}s, failure detected {t_failed - t_joined:.1f}s")


def test_sigterm_is_a_memberlist_leave_not_a_detected_failure(procs: Procs) -> None:
    """SIGTERM -> dead{From: self} is broadcast; the real agent drops us without suspecting.

    Real Serf only shows ``left`` after a Serf *leave intent* (serf.go Leave), which is the Serf
    layer's job (not this runtime's); a bare memberlist leave shows as ``failed`` at once,
    without the suspicion that a crash goes through.
    """
    try:
        real = RealAgent(procs, "real3")
        ours = Runner(procs, "py3", f"--join={real.addr}")
        wait_for(lambda: real.status("py3") == "alive", "real agent lists py3 alive", 15)
        ours.proc.send_signal(signal.SIGTERM)
        assert ours.proc.wait(timeout=15) == 0
        wait_for(lambda: real.status("py3") == "failed", "real agent drops py3", 15)
        real_log = (procs.tmp / "real3.log").read_text()
        assert "Suspect py3" not in real_log and "Marking py3 as failed" not in real_log
        log = (procs.tmp / "py3.log").read_text().splitlines()
        events = [json.loads(line) for line in log if line.startswith("{")]
        assert any(e["event"] == "left" and e["node"] == "py3" for e in events)
        assert all({"event", "level", "timestamp", "node"} <= e.keys() for e in events)
    except AssertionError:
        print(procs.logs())
        raise


def test_runner_exits_1_when_join_fails(procs: Procs, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    p = procs.start(
        "py4",
        [
            sys.executable,
            "-m",
            "serf_trio.runtime.runner",
            "--name=py4",
            f"--bind=127.0.0.1:{free_port()}",
            f"--join={dead}",
            "--profile=local",
        ],
    )
    assert p.wait(timeout=30) == 1
    assert "join_failed" in (tmp_path / "py4.log").read_text()
