"""Operator experience with real processes on loopback: ``serf-trio leave`` returns once the
others know (and fails when the leave did not complete), one Ctrl-C on ``scripts/demo.sh`` is
one graceful leave per agent (two abort it, and say so), bind failures name the address and
its role, a mistyped socket directory is an error, and unrunnable handler scripts are warned
about at start and on SIGHUP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port

from .conftest import (
    CLI_TIMEOUT,
    MARKER_VAR,
    WAIT,
    Agent,
    Cluster,
    serf_trio_cli,
    wait_for,
)

pytestmark = [pytest.mark.realnet, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo.sh"


def pair(cluster: Cluster, *extra: str) -> tuple[Agent, Agent]:
    """n1 and n2 (with ``extra`` flags), joined and both alive everywhere."""
    n1 = cluster.trio("n1", handlers=[])
    n2 = cluster.trio("n2", *extra, handlers=[], join=[n1])
    cluster.all_alive([n1, n2])
    return n1, n2


# -- 1. RPC leave answers after the leave -----------------------------------------------------


def test_leave_returns_once_the_others_list_the_node_as_left(cluster: Cluster) -> None:
    n1, n2 = pair(cluster)
    proc = n2.cli("leave")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "Graceful leave complete\n", "")
    # Checked at once, no polling: the command returned after the leave was done.
    assert n1.statuses()["n2"] == "left"
    assert n2.proc.wait(timeout=WAIT) == 0


def test_a_leave_whose_broadcast_times_out_is_an_error(cluster: Cluster) -> None:
    conf = cluster.dir / "short.json"
    conf.write_text(json.dumps({"broadcast_timeout": "1ms"}))
    _n1, n2 = pair(cluster, f"--config-file={conf}")
    proc = n2.cli("leave")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        "Error leaving: the leave broadcast timed out after 0.001s "
        "(the agent stops anyway; the others may see it fail instead of leave)\n"
    )
    assert n2.proc.wait(timeout=WAIT) == 0  # it stops all the same, as Serf's does
    assert n2.logs_with("leave_timed_out")


def test_a_leave_aborted_by_a_signal_is_an_error(cluster: Cluster) -> None:
    _n1, n2 = pair(cluster)
    assert n2.rpc_socket is not None
    with subprocess.Popen(
        [*serf_trio_cli(), "leave", "--rpc-socket", str(n2.rpc_socket)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as leave:
        try:
            # The leave takes at least leave_propagate_delay (1 s): signal it meanwhile.
            wait_for(lambda: n2.logs_with("rpc_leave_requested"), "the leave to start")
            n2.proc.send_signal(signal.SIGINT)
            out, err = leave.communicate(timeout=CLI_TIMEOUT)
        finally:
            if leave.poll() is None:
                leave.kill()
    assert (leave.returncode, out) == (1, "")
    assert err == (
        "Error leaving: leave aborted (signal during the leave, SIGINT): "
        "the agent stops without finishing its leave\n"
    )
    assert n2.proc.wait(timeout=WAIT) == 0
    (rec,) = n2.logs_with("leave_aborted")
    assert rec["reason"] == "signal during the leave, SIGINT" and rec["level"] == "warning"


# -- 2. scripts/demo.sh and Ctrl-C ------------------------------------------------------------


def _free_both(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def three_free_ports() -> int:
    for _ in range(100):
        base = free_port()
        if base + 2 < 65536 and _free_both(base + 1) and _free_both(base + 2):
            return base
    raise AssertionError("no three consecutive free ports")


@contextlib.contextmanager
def demo(cluster: Cluster) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """``scripts/demo.sh`` in a session of its own (the terminal's foreground process group
    stands in for it), its agents logging into ``<tmp>/demo``; always cleaned up."""
    cli = serf_trio_cli()
    if len(cli) != 1:
        pytest.skip("needs the installed serf-trio script")
    base = three_free_ports()
    logs = cluster.dir / "demo"
    out = cluster.dir / "demo.out"
    env = {
        **os.environ,
        "SERF_TRIO": cli[0],
        "DEMO_BASE_PORT": str(base),
        "DEMO_DIR": str(logs),
        MARKER_VAR: str(cluster.dir),  # Cluster.close kills the agents whatever happens
    }
    for var in ("SERF_RPC_ADDR", "SERF_TRIO_RPC_SOCKET", "NOTIFY_SOCKET", "DEMO_SECONDS"):
        env.pop(var, None)
    with out.open("wb") as f:
        proc = subprocess.Popen(
            ["bash", str(DEMO)],
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "Ctrl-C stops the cluster" in out.read_text() or proc.poll() is not None,
            "the demo cluster to be up",
            60,
        )
        assert proc.poll() is None, out.read_text()
        yield proc, logs, base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT)


def demo_logs(logs: Path, name: str) -> list[dict[str, object]]:
    path = logs / f"{name}.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def events(logs: Path, name: str, event: str) -> list[dict[str, object]]:
    return [r for r in demo_logs(logs, name) if r.get("event") == event]


DEMO_AGENTS = ("demo1", "demo2", "demo3")


@pytest.mark.slow
def test_one_ctrl_c_on_the_demo_is_one_graceful_leave_per_agent(cluster: Cluster) -> None:
    with demo(cluster) as (proc, logs, base):
        watch = cluster.trio("watch", f"--join=127.0.0.1:{base}", handlers=[])
        cluster.converge([watch], **dict.fromkeys(DEMO_AGENTS, "alive"))
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        assert proc.wait(timeout=60) == 0
        out = (cluster.dir / "demo.out").read_text()
        assert "Stopping: each agent leaves the cluster gracefully" in out
        assert "Second Ctrl-C" not in out
        cluster.converge([watch], **dict.fromkeys(DEMO_AGENTS, "left"))
    for name in DEMO_AGENTS:
        assert len(events(logs, name, "signal_received")) == 1, name
        assert not events(logs, name, "leave_aborted"), name
        # One graceful leave each.  Its broadcast may time out when every demo agent leaves
        # at once (the gossip targets are leaving too); the watcher seeing "left" is the proof.
        assert len(events(logs, name, "left")) == 1, name


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_the_leave_and_says_so(cluster: Cluster) -> None:
    with demo(cluster) as (proc, logs, _base):
        os.killpg(proc.pid, signal.SIGINT)
        for name in DEMO_AGENTS:  # each agent is leaving (that takes at least 1 s)
            wait_for(lambda n=name: events(logs, n, "agent_stopping"), f"{name} leaving")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    out = (cluster.dir / "demo.out").read_text()
    assert "Second Ctrl-C: aborting the graceful leave; the agents stop now." in out
    for name in DEMO_AGENTS:
        (rec,) = events(logs, name, "leave_aborted")
        assert rec["reason"] == "second signal, SIGINT", rec


# -- 4. bind failures name the address and its role ------------------------------------------


def failure(agent: Agent) -> str:
    assert agent.proc.wait(timeout=WAIT) == 1, agent.describe()
    (rec,) = agent.logs_with("agent_failed")
    assert rec["level"] == "error"
    return str(rec["error"])


@pytest.mark.parametrize("kind", ["UDP", "TCP"])
def test_a_taken_gossip_port_is_named(cluster: Cluster, kind: str) -> None:
    sock_type = socket.SOCK_DGRAM if kind == "UDP" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == "TCP":
            taken.listen()
        port = taken.getsockname()[1]
        agent = cluster.trio("busy", port=port, handlers=[], ready=False)
        error = failure(agent)
    assert error == (
        f"cannot bind the gossip address 127.0.0.1:{port} ({kind}): address already in use "
        "(is another agent using it?)"
    )


def test_a_taken_rpc_port_and_a_live_rpc_socket_are_named(cluster: Cluster) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = cluster.trio("rpcbusy", f"--rpc-addr=127.0.0.1:{port}", handlers=[], ready=False)
        assert failure(agent) == (
            f"cannot listen on the RPC address 127.0.0.1:{port} (TCP): address already in use"
        )
    live = cluster.trio("live", handlers=[])
    second = cluster.trio("second", f"--rpc-socket={live.rpc_socket}", handlers=[], ready=False)
    assert failure(second) == (
        f"cannot listen on the RPC socket {live.rpc_socket}: another agent is listening on it "
        "(stop it, or give this agent another --rpc-socket)"
    )


# -- 6. the socket directory -------------------------------------------------------------------


def test_a_missing_socket_directory_is_an_error_but_the_runtime_one_is_made(
    cluster: Cluster,
) -> None:
    typo = cluster.dir / "no-such-dir" / "rpc.sock"
    agent = cluster.trio("typo", f"--rpc-socket={typo}", handlers=[], ready=False)
    assert failure(agent) == (
        f"cannot listen on the RPC socket {typo}: its directory {typo.parent} does not exist "
        "(create it first, or choose another socket path)"
    )
    assert not typo.parent.exists()

    xdg = cluster.dir / "xdg"
    xdg.mkdir()
    runtime_sock = xdg / "serf-trio" / "rpc.sock"
    ok = cluster.trio(
        "xdg",
        f"--rpc-socket={runtime_sock}",
        handlers=[],
        env={"XDG_RUNTIME_DIR": str(xdg)},
        ready=False,
    )
    ok.rpc_socket = runtime_sock
    cluster.wait_ready(ok)
    assert stat.S_IMODE(runtime_sock.parent.stat().st_mode) == 0o700


# -- 5. handler scripts that cannot run --------------------------------------------------------


def test_unrunnable_handlers_are_warned_about_at_start_and_on_sighup(cluster: Cluster) -> None:
    (cluster.dir / "plain.sh").write_text("echo hi\n")  # not executable
    conf = cluster.dir / "handlers.json"
    conf.write_text(json.dumps({"event_handlers": ["user:a=./missing.sh"]}))
    n1 = cluster.trio("n1", f"--config-file={conf}", handlers=[])
    (start,) = n1.logs_with("handler_not_runnable")
    assert (start["handler"], start["reason"], start["level"]) == (
        "user:a=./missing.sh",
        "./missing.sh does not exist",
        "warning",
    )
    conf.write_text(
        json.dumps({"event_handlers": ["user:a=./missing.sh", "user:b=./plain.sh arg"]})
    )
    n1.sighup()
    wait_for(lambda: len(n1.logs_with("handler_not_runnable")) == 3, "the reload's warnings")
    reasons = sorted(str(r["reason"]) for r in n1.logs_with("handler_not_runnable")[1:])
    assert reasons == [
        "./missing.sh does not exist",
        "./plain.sh is not executable (chmod +x, or run it through sh)",
    ]
