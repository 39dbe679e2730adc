"""CLI latency: ``serf-trio members`` beside ``serf members``, wall time per invocation.

    python bench/cli_latency.py [--runs 20]

Starts a serf-trio agent (Unix socket in a temporary directory) and, if the ``serf`` binary is
installed, a HashiCorp serf agent (``-rpc-addr`` on loopback TCP); then runs each command
``--runs`` times after two warm-up runs and prints the median and p90 wall time, the
serf-trio / serf ratio and whether the goal (median under 100 ms) is met. Extra rows show the
floor (``python -c pass`` with the same interpreter) and serf-trio's CLI against the serf agent.

Python runs with a bytecode cache in the temporary directory (``PYTHONPYCACHEPREFIX``), as an
installed package has its ``.pyc`` files; one extra row shows the same command compiling every
module from source (``PYTHONDONTWRITEBYTECODE=1``, as in some development shells).

If the serf-trio agent cannot be started, a minimal ``RpcServer`` with a stub agent API serves
the socket instead, and the output says so. Every wait is bounded; every process started here
is stopped (SIGINT, then SIGKILL) and the temporary directory removed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from _common import free_port

GOAL_MS = 100.0
START_TIMEOUT = 20.0  # seconds for an agent to answer `members`
STOP_TIMEOUT = 10.0
RUN_TIMEOUT = 10.0  # seconds for one CLI invocation


def serf_trio_cmd() -> list[str]:
    script = Path(sys.executable).with_name("serf-trio")
    return [str(script)] if script.exists() else [sys.executable, "-m", "serf_trio.cli"]


ENV = dict(os.environ)  # the environment of every process started here (set in main)


def run_ok(cmd: list[str]) -> bool:
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=RUN_TIMEOUT, check=False, env=ENV)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def wait_until(check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if check():
            return True
        time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def timed_run(cmd: list[str], env: dict[str, str]) -> float:
    """Wall time in ms of one invocation; a failure or a hang (``RUN_TIMEOUT``) aborts.

    The wait is a blocking ``waitpid``: ``subprocess.run(timeout=...)`` polls with sleeps that
    double up to 50 ms, which rounds every time above 63 ms up to 113, 163, ... ms.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    watchdog = threading.Timer(RUN_TIMEOUT, proc.kill)
    watchdog.start()
    try:
        rc = proc.wait()
    finally:
        watchdog.cancel()
    elapsed = (time.perf_counter() - t0) * 1000.0
    if rc != 0:
        raise subprocess.CalledProcessError(rc, cmd)
    return elapsed


def time_runs(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    """Wall time in ms of ``runs`` invocations (after two warm-ups); a failure aborts."""
    env = ENV if env is None else env
    for _ in range(2):
        subprocess.run(cmd, capture_output=True, timeout=RUN_TIMEOUT, check=True, env=env)
    return [timed_run(cmd, env) for _ in range(runs)]


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10, method="inclusive")[-1]


FAKE_AGENT = """
import sys
from collections.abc import AsyncIterator
import structlog, trio
from serf_trio.rpc.api import NOT_SUPPORTED, AgentError, RpcMember
from serf_trio.rpc.server import RpcServer

class Stub:
    node_name = "fake"
    rpc_auth = ""
    def members(self):
        return [RpcMember("fake", bytes([127, 0, 0, 1]), 7946, {"role": "bench"}, "alive")]
    def stats(self):
        return {"agent": {"name": "fake"}}
    def get_coordinate(self, node):
        return None
    def __getattr__(self, name):
        async def unsupported(*args, **kw):
            raise AgentError(NOT_SUPPORTED)
        return unsupported

async def main():
    server = RpcServer(Stub(), socket_path=sys.argv[1], logger=structlog.get_logger())
    await server.serve()

trio.run(main)
"""


@contextlib.contextmanager
def serf_trio_agent(tmp: Path) -> Iterator[tuple[list[str], str]]:
    """Yield (members command, description) for a running serf-trio agent or the stub."""
    sock = tmp / "rpc.sock"
    members = [*serf_trio_cmd(), "members", "--rpc-socket", str(sock)]
    log = open(tmp / "serf-trio-agent.log", "wb")  # noqa: SIM115 (closed below)
    agent_cmd = [
        *serf_trio_cmd(),
        "agent",
        "--node",
        "bench-t1",
        "--bind",
        f"127.0.0.1:{free_port()}",
        "--rpc-socket",
        str(sock),
        "--log-level",
        "warn",
    ]
    proc = subprocess.Popen(agent_cmd, stdout=log, stderr=log, env=ENV)
    what = "serf-trio agent"
    try:
        if not wait_until(lambda: run_ok(members), START_TIMEOUT, proc):
            stop(proc)
            print("serf-trio agent did not start; using a stub RpcServer instead", file=sys.stderr)
            proc = subprocess.Popen(
                [sys.executable, "-c", FAKE_AGENT, str(sock)], stdout=log, stderr=log, env=ENV
            )
            what = "stub RpcServer (serf-trio agent not available)"
            if not wait_until(lambda: run_ok(members), START_TIMEOUT, proc):
                raise RuntimeError(f"no serf-trio RPC server came up; see {tmp}")
        yield members, what
    finally:
        stop(proc)
        log.close()


@contextlib.contextmanager
def serf_agent(tmp: Path) -> Iterator[str | None]:
    """Yield the RPC address of a running HashiCorp serf agent (None if serf is missing)."""
    serf = shutil.which("serf")
    if serf is None:
        yield None
        return
    rpc = f"127.0.0.1:{free_port()}"
    log = open(tmp / "serf-agent.log", "wb")  # noqa: SIM115 (closed below)
    cmd = [serf, "agent", "-node", "b1", "-bind", f"127.0.0.1:{free_port()}", "-rpc-addr", rpc]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=ENV)
    try:
        ready = [serf, "members", f"-rpc-addr={rpc}"]
        if not wait_until(lambda: run_ok(ready), START_TIMEOUT, proc):
            raise RuntimeError(f"the serf agent did not start; see {tmp}")
        yield rpc
    finally:
        stop(proc)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()

    rows: list[tuple[str, list[float]]] = []
    tmp = Path(tempfile.mkdtemp(prefix="serf-trio-bench-"))
    ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    ENV["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    no_pyc = {**ENV, "PYTHONDONTWRITEBYTECODE": "1"}
    no_pyc.pop("PYTHONPYCACHEPREFIX")
    env_note = f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, runs={args.runs}"
    try:
        floor = time_runs([sys.executable, "-c", "pass"], args.runs)
        rows.append(("python -c pass (floor)", floor))
        with serf_trio_agent(tmp) as (members, what):
            ours_name = f"serf-trio members -> {what}"
            rows.append((ours_name, time_runs(members, args.runs)))
            rows.append(("  same, no bytecode cache", time_runs(members, args.runs, no_pyc)))
        with serf_agent(tmp) as rpc:
            if rpc is not None:
                serf_cmd = [shutil.which("serf") or "serf", "members", f"-rpc-addr={rpc}"]
                rows.append(("serf members -> serf agent (TCP)", time_runs(serf_cmd, args.runs)))
                ours = [*serf_trio_cmd(), "members", "--rpc-addr", rpc]
                rows.append(("serf-trio members -> serf agent (TCP)", time_runs(ours, args.runs)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"CLI latency, wall time per invocation ({env_note})")
    width = max(len(name) for name, _ in rows)
    print(f"{'command':<{width}}  {'median ms':>9}  {'p90 ms':>7}")
    medians = {}
    for name, samples in rows:
        medians[name] = statistics.median(samples)
        print(f"{name:<{width}}  {medians[name]:9.1f}  {p90(samples):7.1f}")
    theirs = medians.get("serf members -> serf agent (TCP)")
    if theirs:
        print(f"ratio serf-trio / serf (median): {medians[ours_name] / theirs:.2f}")
    verdict = "met" if medians[ours_name] < GOAL_MS else "NOT met"
    print(f"goal: serf-trio members median under {GOAL_MS:.0f} ms: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
