"""The agent as a real process: sd_notify handshake, SIGHUP reload, SIGINT leave, JSON-only
output, config errors, three agents joined over RPC, and the systemd unit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import wait_for

from serf_trio.rpc.client import RpcClient

pytestmark = [pytest.mark.realnet, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WAIT = 15.0  # upper bound of every wait below


def serf_trio_script() -> str:
    """The installed ``serf-trio`` entry point (the venv's, else the one on PATH)."""
    venv = Path(sys.executable).parent / "serf-trio"
    if venv.exists():
        return str(venv)
    found = shutil.which("serf-trio")
    if found is None:
        pytest.skip("serf-trio is not installed")
    return found


@dataclass
class AgentProc:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    notify: socket.socket | None = None
    messages: list[str] = field(default_factory=list)

    def next_notify(self, skip_watchdog: bool = True) -> str:
        assert self.notify is not None
        deadline = time.monotonic() + WAIT
        while True:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            msg = self.notify.recv(4096).decode()
            self.messages.append(msg)
            if not (skip_watchdog and msg == "WATCHDOG=1"):
                return msg

    def json_lines(self) -> list[dict[str, object]]:
        """Every line of stdout and stderr, each parsed as one JSON object (or the test fails)."""
        out = []
        for path in (self.out, self.err):
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                assert isinstance(rec, dict), line
                out.append(rec)
        return out

    def events(self) -> list[str]:
        return [str(r["event"]) for r in self.json_lines()]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., AgentProc]]:
    procs: list[AgentProc] = []

    def start(
        name: str,
        *args: str,
        notify: bool = False,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> AgentProc:
        full_env = dict(os.environ)
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.update(env or {})
        sock = None
        if notify:
            path = tmp_path / f"{name}.notify"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            full_env["NOTIFY_SOCKET"] = str(path)
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        cmd = command or [sys.executable, "-m", "serf_trio.agent"]
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                [*cmd, *args],
                stdout=o,
                stderr=e,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=tmp_path,
            )
        ap = AgentProc(proc, out, err, sock)
        procs.append(ap)
        return ap

    yield start
    for ap in procs:
        if ap.proc.poll() is None:
            ap.proc.kill()
        ap.proc.wait(timeout=WAIT)
        if ap.notify is not None:
            ap.notify.close()


def wait_until(cond: Callable[[], bool], what: str) -> None:
    wait_for(cond, what, WAIT)


def agent_args(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return [
        f"--node={name}",
        "--bind=127.0.0.1:0",
        "--profile=local",
        f"--rpc-socket={tmp_path / (name + '.sock')}",
        *extra,
    ]


def test_notify_reload_and_interrupt(tmp_path: Path, spawn: Callable[..., AgentProc]) -> None:
    conf = tmp_path / "agent.json"
    conf.write_text(json.dumps({"event_handlers": ["member-join=./join.sh"], "tags": {"v": "1"}}))
    ap = spawn(
        "n1",
        *agent_args(tmp_path, "n1", f"--config-file={conf}"),
        notify=True,
        env={"WATCHDOG_USEC": "600000"},  # ping every 0.3 s
        command=[serf_trio_script(), "agent"],  # as the systemd unit runs it
    )
    ready = ap.next_notify()
    assert ready.startswith("READY=1\n") and "STATUS=" in ready
    with RpcClient(socket_path=str(tmp_path / "n1.sock")) as client:
        assert client.stats()["event_handlers"] == {"member-join:": "./join.sh"}

        conf.write_text(
            json.dumps(
                {
                    "event_handlers": ["user:deploy=./deploy.sh"],
                    "tags": {"v": "2"},
                    "log_level": "debug",
                }
            )
        )
        ap.proc.send_signal(signal.SIGHUP)
        reloading = ap.next_notify().split("\n")
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        assert ap.next_notify().startswith("READY=1")
        stats = client.stats()
        assert stats["event_handlers"] == {"user:deploy": "./deploy.sh"}
        assert stats["tags"] == {"v": "2"}
        me = client.members()[0]
        assert me.tags == {"v": "2"} and me.status == "alive"  # applied without leaving
    wait_until(lambda: any(m == "WATCHDOG=1" for m in ap.messages) or _drain(ap), "watchdog")

    ap.proc.send_signal(signal.SIGINT)
    assert ap.next_notify().startswith("STOPPING=1")
    assert ap.proc.wait(timeout=WAIT) == 0
    recs = ap.json_lines()  # every line on stdout and stderr is JSON
    events = [r["event"] for r in recs]
    assert "left" in events and events[-1] == "agent_stopped"
    reload = next(r for r in recs if r["event"] == "config_reloaded")
    changed = reload["changed"]
    assert isinstance(changed, list)
    assert set(changed) == {"event_handlers", "log_level", "tags"}
    assert ap.out.read_text() == ""  # logs go to stderr only


def _drain(ap: AgentProc) -> bool:
    ap.next_notify(skip_watchdog=False)
    return any(m == "WATCHDOG=1" for m in ap.messages)


def test_unknown_config_key_is_one_line_and_exit_1(
    tmp_path: Path, spawn: Callable[..., AgentProc]
) -> None:
    conf = tmp_path / "bad.json"
    conf.write_text(json.dumps({"node_name": "x", "bindd": "127.0.0.1"}))
    ap = spawn("bad", f"--config-file={conf}")
    assert ap.proc.wait(timeout=WAIT) == 1
    assert ap.out.read_text() == ""
    lines = ap.err.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["level"] == "error" and rec["event"] == "config_invalid"
    assert "'bindd'" in str(rec["error"]) and str(conf) in str(rec["error"])


def test_short_key_for_secretbox_is_one_line_exit_1(
    tmp_path: Path, spawn: Callable[..., AgentProc]
) -> None:
    ap = spawn("enc", "--encrypt=cg8StVXbQJ0gPvMd9o7yrg==")
    assert ap.proc.wait(timeout=WAIT) == 1
    (line,) = ap.err.read_text().splitlines()
    error = json.loads(line)["error"]
    assert "'encrypt_key'" in error and "secretbox needs 32" in error
    assert "cg8StVXbQJ0gPvMd9o7yrg==" not in error  # never echo key material


def test_three_agents_join_and_leave_over_rpc(
    tmp_path: Path, spawn: Callable[..., AgentProc]
) -> None:
    procs = [
        spawn(n, *agent_args(tmp_path, n, f"--tag=name={n}"), notify=True)
        for n in ("a1", "a2", "a3")
    ]
    for ap in procs:
        assert ap.next_notify().startswith("READY=1")
    clients = [RpcClient(socket_path=str(tmp_path / f"{n}.sock")) for n in ("a1", "a2", "a3")]
    try:
        port = clients[0].members()[0].port
        assert clients[1].join([f"127.0.0.1:{port}"]) == 1
        assert clients[2].join([f"a1/127.0.0.1:{port}"]) == 1
        for c in clients:
            wait_until(
                lambda c=c: (
                    sorted(  # type: ignore[misc]
                        (m.name, m.status, m.tags["name"]) for m in c.members()
                    )
                    == [(n, "alive", n) for n in ("a1", "a2", "a3")]
                ),
                "three alive members",
            )
        clients[2].leave()
        assert procs[2].proc.wait(timeout=WAIT) == 0
        wait_until(
            lambda: {m.name: m.status for m in clients[0].members()}.get("a3") == "left",
            "a3 left",
        )
    finally:
        for c in clients:
            c.close()
    for ap in procs[:2]:
        ap.proc.send_signal(signal.SIGINT)
        assert ap.proc.wait(timeout=WAIT) == 0
    for ap in procs:
        assert "agent_stopped" in ap.events()


def test_sigterm_without_leave_on_terminate(
    tmp_path: Path, spawn: Callable[..., AgentProc]
) -> None:
    ap = spawn("t1", *agent_args(tmp_path, "t1"), notify=True)
    assert ap.next_notify().startswith("READY=1")
    ap.proc.send_signal(signal.SIGTERM)
    assert ap.next_notify().startswith("STOPPING=1")
    assert ap.proc.wait(timeout=WAIT) == 0
    events = ap.events()
    assert "left" not in events and "agent_stopped" in events


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (REPO / "config" / "serf-trio.service").read_text()
    assert "ExecStart=/opt/serf-trio/bin/serf-trio agent --config-dir /etc/serf-trio" in unit
    copy = tmp_path / "serf-trio.service"
    copy.write_text(unit.replace("/opt/serf-trio/bin/serf-trio", serf_trio_script()))
    res = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    # Only warnings about the container environment are tolerated, none about our unit's keys.
    assert "serf-trio.service:" not in res.stderr, res.stderr


def test_startup_failures_exit_1_with_json(tmp_path: Path, spawn: Callable[..., AgentProc]) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    with taken:
        port = taken.getsockname()[1]
        ap = spawn("busy", *agent_args(tmp_path, "busy"), f"--bind=127.0.0.1:{port}")
        assert ap.proc.wait(timeout=WAIT) == 1
    failed = [r for r in ap.json_lines() if r["event"] == "agent_failed"]
    assert len(failed) == 1 and "in use" in str(failed[0]["error"])

    # A live agent's RPC socket is not taken over by a second agent.
    first = spawn("live", *agent_args(tmp_path, "live"), notify=True)
    assert first.next_notify().startswith("READY=1")
    second = spawn(
        "live2", *agent_args(tmp_path, "live2"), f"--rpc-socket={tmp_path / 'live.sock'}"
    )
    assert second.proc.wait(timeout=WAIT) == 1
    assert "agent_failed" in second.events()
    with RpcClient(socket_path=str(tmp_path / "live.sock")) as client:
        assert client.members()[0].name == "live"
