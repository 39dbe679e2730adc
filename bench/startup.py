"""Agent start-up: serf-trio vs HashiCorp serf, one agent joining a running seed.

For each implementation: start a seed agent and wait until it answers RPC; then, ``--trials``
times (after one warm-up run that is not counted), start one agent with ``--join`` (serf:
``-join``) to the seed and time, from just before its exec:

(a) RPC up: a TCP connect to its ``--rpc-addr`` succeeds (tried every 2 ms);
(b) seen alive: the seed lists it ``alive`` (``members-filtered`` by name over one kept RPC
    connection to the seed, every ``SEED_POLL`` s, so the seed is not loaded by the polling);

and the CPU time the new agent had used at each moment, read right when the condition was seen:
utime+stime from ``/proc/PID/stat`` (10 ms ticks: a serf agent often shows 0) and the process's
CPU-time clock (``clock_gettime`` on its ``clock_getcpuclockid``, all threads, ns resolution).
Each agent then leaves gracefully (RPC ``leave``, so the seed does not accumulate failed
members) and is killed.
Prints median and min per implementation and the serf-trio / serf ratio of the medians.

    python bench/startup.py --trials 10

serf-trio is started as the console script of this venv (``serf-trio agent ...``), with a warm
bytecode cache as an installed package has it: ``PYTHONPYCACHEPREFIX`` in the run's temporary
directory (filled by the seed and the warm-up run), ``PYTHONDONTWRITEBYTECODE`` unset.  Every
agent runs in its own process group, SIGKILLed at the end, also on Ctrl-C or SIGTERM; every
wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import (
    HOST,
    IMPLS,
    SERF,
    SERF_TRIO,
    agent_env,
    binaries_present,
    free_port,
    impls,
    interrupt_on_signals,
    kill_group,
    proc_cpu_clock,
    proc_cpu_seconds,
    spawn_group,
)

from serf_trio.rpc.client import RpcClient, RpcError

CONNECT_POLL = 0.002  # seconds between TCP connect attempts
SEED_POLL = 0.01  # seconds between members-filtered calls to the seed
SEED_READY = 30.0
LIMIT = 30.0  # one agent to reach both (a) and (b)


def argv(impl: str, name: str, port: int, rpc: str, workdir: Path, join: str | None) -> list[str]:
    if impl == "serf":
        cmd = [
            SERF, "agent", f"-node={name}", f"-bind={HOST}:{port}", f"-rpc-addr={rpc}",
            "-log-level=warn",
        ]  # fmt: skip
        return cmd + ([f"-join={join}"] if join else [])
    cmd = [
        str(SERF_TRIO), "agent", "--node", name, "--bind", f"{HOST}:{port}", "--rpc-addr", rpc,
        "--rpc-socket", str(workdir / f"{name}.sock"), "--log-level", "warn",
    ]  # fmt: skip
    return cmd + (["--join", join] if join else [])


@dataclass
class Run:
    rpc_s: float | None = None  # (a) TCP connect to its RPC address succeeded
    alive_s: float | None = None  # (b) the seed lists it alive
    cpu_rpc_s: float | None = None  # its CPU time at (a): utime+stime, 10 ms ticks
    cpu_alive_s: float | None = None  # at (b)
    clock_rpc_s: float | None = None  # the same from its CPU-time clock (ns resolution)
    clock_alive_s: float | None = None
    error: str = ""


def seed_sees(seed: RpcClient, name: str) -> bool:
    ms = seed.members_filtered(name=name)
    return bool(ms) and ms[0].status == "alive"


def one(impl: str, workdir: Path, env: dict[str, str], seed: RpcClient, join: str, name: str
        ) -> Run:  # fmt: skip
    run = Run()
    port, rpc_port = free_port(), free_port()
    rpc = f"{HOST}:{rpc_port}"
    log = workdir / f"{name}.log"
    t0 = time.monotonic()
    proc = spawn_group(argv(impl, name, port, rpc, workdir, join), env, workdir, log)
    try:
        next_seed = t0
        while run.rpc_s is None or run.alive_s is None:
            now = time.monotonic()
            if now - t0 > LIMIT:
                run.error = f"limit {LIMIT:.0f} s"
                break
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-3:]
                run.error = f"exited {proc.returncode}: {' | '.join(tail)}"
                break
            if run.rpc_s is None:
                with contextlib.suppress(OSError), socket.create_connection((HOST, rpc_port), 1):
                    run.rpc_s = time.monotonic() - t0
                    run.clock_rpc_s = proc_cpu_clock(proc.pid)
                    run.cpu_rpc_s = proc_cpu_seconds(proc.pid)
            if run.alive_s is None and now >= next_seed:
                if seed_sees(seed, name):
                    run.alive_s = time.monotonic() - t0
                    run.clock_alive_s = proc_cpu_clock(proc.pid)
                    run.cpu_alive_s = proc_cpu_seconds(proc.pid)
                next_seed = time.monotonic() + SEED_POLL
            time.sleep(CONNECT_POLL)
        if run.rpc_s is not None:  # leave, so the seed does not keep a failed member
            with contextlib.suppress(OSError, RpcError), RpcClient(addr=rpc, timeout=10) as c:
                c.leave()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    finally:
        kill_group(proc)
    return run


def measure(impl: str, trials: int) -> list[Run]:
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        workdir = Path(tmp)
        env = agent_env(workdir)
        port, rpc_port = free_port(), free_port()
        rpc = f"{HOST}:{rpc_port}"
        seed_proc = spawn_group(
            argv(impl, "seed", port, rpc, workdir, None), env, workdir, workdir / "seed.log"
        )
        seed: RpcClient | None = None
        try:
            deadline = time.monotonic() + SEED_READY
            while seed is None:
                if time.monotonic() > deadline or seed_proc.poll() is not None:
                    raise RuntimeError(f"{impl} seed did not answer RPC")
                try:
                    seed = RpcClient(addr=rpc, timeout=5)
                    if not seed_sees(seed, "seed"):
                        seed.close()
                        seed = None
                except (OSError, RpcError):
                    seed = None
                if seed is None:
                    time.sleep(0.05)
            for t in range(trials + 1):  # run 0 is the warm-up
                time.sleep(1.0)  # let the seed settle after the previous leave
                r = one(impl, workdir, env, seed, f"{HOST}:{port}", f"s{t}")
                label = "warm-up" if t == 0 else f"trial {t}"
                print(f"  {impl:9} {label:8}: RPC up {fmt_s(r.rpc_s)} (CPU {fmt_s(r.clock_rpc_s)}),"
                      f" seen alive {fmt_s(r.alive_s)} (CPU {fmt_s(r.clock_alive_s)})"
                      f"{'  ' + r.error if r.error else ''}", flush=True)  # fmt: skip
                if t:
                    runs.append(r)
        finally:
            if seed is not None:
                seed.close()
            kill_group(seed_proc)
    return runs


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f} s"


KEYS = [
    ("rpc_s", "RPC up (TCP connect)"),
    ("alive_s", "seed lists it alive"),
    ("cpu_rpc_s", "CPU by RPC up, stat"),
    ("cpu_alive_s", "CPU by seen alive, stat"),
    ("clock_rpc_s", "CPU by RPC up, clock"),
    ("clock_alive_s", "CPU by seen alive, clock"),
]


def summary(runs: list[Run]) -> dict[str, Any]:
    s: dict[str, Any] = {"runs": len(runs), "errors": sum(bool(r.error) for r in runs)}
    for key, _ in KEYS:
        vals = [v for r in runs if (v := getattr(r, key)) is not None]
        s[key] = {"median": statistics.median(vals), "min": min(vals)} if vals else None
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--impl", choices=IMPLS, default="both")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    args = ap.parse_args()
    if not binaries_present(args.impl):
        return 1
    interrupt_on_signals()
    results: dict[str, Any] = {}
    try:
        for impl in impls(args.impl):
            runs = measure(impl, args.trials)
            results[impl] = {"summary": summary(runs), "runs": [asdict(r) for r in runs]}
    except KeyboardInterrupt:
        print("interrupted; every agent was killed", file=sys.stderr)
        return 130
    print(f"\nOne agent joining a running seed, {args.trials} trials after a warm-up "
          f"(median / min; ratio of medians, serf-trio / serf)")  # fmt: skip
    a, b = (results.get(k, {}).get("summary") for k in ("serf", "serf-trio"))
    print(f"{'metric':24} {'serf':>17} {'serf-trio':>17} {'ratio':>6}")

    def cell(s: dict[str, Any] | None, key: str) -> str:
        v = s.get(key) if s else None
        d = 3 if key in ("rpc_s", "alive_s") else 4
        return "-" if v is None else f"{v['median']:.{d}f} / {v['min']:.{d}f}"

    for key, title in KEYS:
        ratio = ""
        if a and b and a.get(key) and b.get(key) and a[key]["median"]:
            ratio = f"{b[key]['median'] / a[key]['median']:.2f}"
        print(f"{title:24} {cell(a, key):>17} {cell(b, key):>17} {ratio:>6}")
    for label, s in (("serf", a), ("serf-trio", b)):
        if s and s["errors"]:
            print(f"  {label}: {s['errors']} of {s['runs']} runs did not complete")
    print(
        "(times in s from the exec; CPU in s of the new agent's process: 'stat' is utime+stime"
        " from /proc/PID/stat, in 10 ms ticks; 'clock' its CPU-time clock, ns resolution)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
