"""Capacity after a join storm: N agents of one implementation on this machine, then idle cost.

For each implementation (serf-trio, HashiCorp serf or both, one after the other):

1. start one seed agent and wait until it answers RPC;
2. the join storm: start the other N-1 agents as fast as possible, each with ``--join`` (serf:
   ``-join``) pointing at the seed;
3. time until the seed and a sample of 8 other agents (evenly spread over the start order, the
   last one included) each list N alive members;
4. check that every agent process is still running;
5. an idle window (``--idle`` seconds, no RPC traffic from this script): CPU per agent
   (utime+stime of its process group from ``/proc/PID/stat``), RSS (``VmRSS``), the machine's
   busy CPU (``/proc/stat``) and load average.

    python bench/capacity.py --n 128 --impl both --idle 30

Both implementations are observed through the same in-process client (``serf_trio.rpc.client``,
a blocking stdlib-socket client): serf-trio over its Unix socket, serf over its TCP RPC port.
Each observer keeps one connection and is polled every ``POLL`` seconds until it has converged,
so polling costs little beside N agents.  If a run does not converge within ``--limit`` seconds,
the report says how many members each observer saw and the idle window still runs, showing the
CPU state of the unconverged cluster.

Python agents run with a bytecode cache in the temporary directory (``PYTHONPYCACHEPREFIX``, filled
by the seed), as an installed package has its ``.pyc`` files.

Everything is on 127.0.0.1.  Every agent runs in its own process group (``start_new_session``)
and every group is SIGKILLed on exit, whether the run ends, fails or is interrupted (Ctrl-C,
SIGTERM).  Every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from _common import HOST, IMPLS, SERF, SERF_TRIO, binaries_present, file_tail, free_port

from serf_trio.rpc.client import RpcClient, RpcError

SAMPLE = 8  # observers besides the seed
POLL = 0.25  # seconds between polling rounds
SEED_READY = 30.0  # seconds for the seed to answer RPC
RPC_TIMEOUT = 3.0  # one members call
MIB_PER_AGENT = 80  # free-memory check: generous against the ~40 MiB goal
GOAL_CPU_PCT = 1.0
GOAL_RSS_MB = 40.0  # the brief says MB; checked as 40 * 10^6 bytes and as 40 MiB below
TICK = os.sysconf("SC_CLK_TCK")


# -- ports, memory, /proc ----------------------------------------------------------------------


def mem_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def group_usage() -> tuple[dict[int, int], dict[int, int]]:
    """Per process group: CPU ticks (utime+stime) and RSS in KiB, summed over its processes."""
    ticks: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            status = Path(entry.path, "status").read_text()
        except OSError:  # the process went away while we looked
            continue
        # Fields after the parenthesised command name: state is field 3, pgrp 5, utime 14,
        # stime 15 (proc(5)); the name itself may contain spaces, so split after ')'.
        rest = stat.rpartition(")")[2].split()
        pgrp = int(rest[2])
        ticks[pgrp] = ticks.get(pgrp, 0) + int(rest[11]) + int(rest[12])
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[pgrp] = rss.get(pgrp, 0) + int(line.split()[1])
                break
    return ticks, rss


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (``/proc/stat`` first line)."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    total = sum(vals[:8])  # guest time is already counted in user
    return total - idle, total


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- agents -------------------------------------------------------------------------------------


@dataclass
class Agent:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    err: Path
    rpc_addr: str | None = None
    rpc_socket: str | None = None

    def client(self) -> RpcClient:
        return RpcClient(addr=self.rpc_addr, socket_path=self.rpc_socket, timeout=RPC_TIMEOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def err_tail(self, lines: int = 5) -> str:
        return file_tail(self.err, lines, "\n")


class Cluster:
    """N agents of one implementation in ``workdir``; subclasses say how to start one."""

    label = ""

    def __init__(self, n: int, workdir: Path) -> None:
        self.n = n
        self.workdir = workdir
        self.agents: list[Agent] = []
        self.env = dict(os.environ)
        for var in ("SERF_RPC_ADDR", "SERF_RPC_AUTH", "SERF_TRIO_RPC_SOCKET", "NOTIFY_SOCKET"):
            self.env.pop(var, None)
        # As an installed package runs: with a bytecode cache.  The seed fills it (it is
        # started and ready before the storm); without it every storm agent would compile
        # every module from source if PYTHONDONTWRITEBYTECODE is set in the shell.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")

    def argv(self, name: str, port: int, join: str | None) -> tuple[list[str], str, str]:
        """The command line, the TCP RPC address ("" if none) and the RPC socket ("" if none)."""
        raise NotImplementedError

    def spawn(self, i: int, join: str | None) -> Agent:
        name = f"c{i}"
        port = free_port()
        err = self.workdir / f"{name}.err"
        argv, rpc_addr, rpc_socket = self.argv(name, port, join)
        with err.open("wb") as e:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=e,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,
            )
        agent = Agent(name, port, proc, err, rpc_addr or None, rpc_socket or None)
        self.agents.append(agent)
        return agent

    def kill_all(self) -> None:
        for a in self.agents:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(a.proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid
        for a in self.agents:
            with contextlib.suppress(subprocess.TimeoutExpired):
                a.proc.wait(5)


class TrioCluster(Cluster):
    label = "serf-trio"

    def argv(self, name: str, port: int, join: str | None) -> tuple[list[str], str, str]:
        sock = str(self.workdir / f"{name}.sock")
        cmd = [
            str(SERF_TRIO), "agent", "--node", name, "--bind", f"{HOST}:{port}",
            "--rpc-socket", sock, "--log-level", "warn",
        ]  # fmt: skip
        if join:
            cmd += ["--join", join]
        return cmd, "", sock


class SerfCluster(Cluster):
    label = "serf"

    def argv(self, name: str, port: int, join: str | None) -> tuple[list[str], str, str]:
        rpc = f"{HOST}:{free_port()}"
        cmd = [
            SERF, "agent", f"-node={name}", f"-bind={HOST}:{port}", f"-rpc-addr={rpc}",
            "-log-level=warn",
        ]  # fmt: skip
        if join:
            cmd.append(f"-join={join}")
        return cmd, rpc, ""


# -- observing ---------------------------------------------------------------------------------


class Observer:
    """One sampled agent, polled over a kept connection until it lists N alive members."""

    def __init__(self, agent: Agent, n: int) -> None:
        self.agent = agent
        self.n = n
        self.conn: RpcClient | None = None
        self.converged: float | None = None  # seconds after the storm began
        self.last: Counter[str] = Counter()  # status -> count at the last answer
        self.errors = 0

    def poll(self) -> Counter[str] | None:
        try:
            if self.conn is None:
                self.conn = self.agent.client()
            counts = Counter(m.status for m in self.conn.members())
        except (OSError, RpcError):
            self.errors += 1
            self.close()
            return None
        self.last = counts
        return counts

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def describe(self) -> str:
        seen = sum(self.last.values())
        detail = ", ".join(f"{s} {c}" for s, c in sorted(self.last.items())) or "no answer"
        return f"{self.agent.name}: {seen} members ({detail}), {self.errors} RPC errors"


@dataclass
class Result:
    impl: str
    n: int
    storm_spawn: float = 0.0  # seconds to start the N-1 storm agents
    converged_storm: float | None = None  # all observers converged, from the storm's start
    converged_last: float | None = None  # ... from the last spawn returning
    per_observer: dict[str, float | None] = field(default_factory=dict)
    unconverged: list[str] = field(default_factory=list)
    storm_cpu_s: float = 0.0  # CPU seconds of all agents from seed start to convergence/limit
    alive_after_join: int = 0
    alive_after_idle: int = 0
    dead: list[str] = field(default_factory=list)
    idle_s: float = 0.0
    cpu_pct: list[float] = field(default_factory=list)  # per agent, % of one core
    rss_mib: list[float] = field(default_factory=list)  # per agent
    machine_busy_pct: float = 0.0  # of all cores
    load: str = ""
    still_converged: int = 0  # observers listing N alive after the idle window


def wait_seed(agent: Agent) -> None:
    deadline = time.monotonic() + SEED_READY
    while time.monotonic() < deadline:
        if not agent.alive():
            raise RuntimeError(f"seed exited: {agent.err_tail()}")
        with contextlib.suppress(OSError, RpcError), agent.client() as c:
            if any(m.name == agent.name and m.status == "alive" for m in c.members()):
                return
        time.sleep(0.05)
    raise RuntimeError(f"seed did not answer RPC within {SEED_READY} s")


def sample(n: int) -> list[int]:
    """The seed plus SAMPLE agents spread evenly over the start order (the last included)."""
    k = min(SAMPLE, n - 1)
    return [0, *sorted({round(j * (n - 1) / k) for j in range(1, k + 1)})]


def run(kind: type[Cluster], n: int, idle: float, limit: float) -> Result:
    res = Result(kind.label, n)
    with tempfile.TemporaryDirectory(prefix="cap-") as tmp:
        c = kind(n, Path(tmp))
        observers: list[Observer] = []
        try:
            seed = c.spawn(0, None)
            wait_seed(seed)
            join = f"{HOST}:{seed.port}"
            t0 = time.monotonic()
            for i in range(1, n):
                c.spawn(i, join)
            t_last = time.monotonic()
            res.storm_spawn = t_last - t0
            print(f"  {c.label}: {n - 1} agents spawned in {res.storm_spawn:.2f} s", flush=True)

            observers = [Observer(c.agents[i], n) for i in sample(n)]
            next_report = t0 + 10
            while time.monotonic() - t0 < limit:
                pending = [o for o in observers if o.converged is None]
                if not pending:
                    break
                for o in pending:
                    counts = o.poll()
                    if counts is not None and counts["alive"] == n:
                        o.converged = time.monotonic() - t0
                        o.close()  # no more RPC load from this observer
                if time.monotonic() >= next_report:
                    seen = sorted(sum(o.last.values()) for o in observers)
                    print(f"    t={time.monotonic() - t0:5.1f} s members seen: {seen}", flush=True)
                    next_report += 10
                time.sleep(POLL)
            t_end = time.monotonic()
            ticks, _ = group_usage()
            res.storm_cpu_s = sum(ticks.get(a.proc.pid, 0) for a in c.agents) / TICK
            res.per_observer = {o.agent.name: o.converged for o in observers}
            res.unconverged = [o.describe() for o in observers if o.converged is None]
            if not res.unconverged:
                res.converged_storm = max(o.converged or 0.0 for o in observers)
                res.converged_last = res.converged_storm - res.storm_spawn
            else:
                print(f"  {c.label}: NOT converged after {t_end - t0:.0f} s", flush=True)
            for o in observers:
                o.close()
            res.alive_after_join = sum(a.alive() for a in c.agents)

            # The idle window: nothing from this script but two /proc snapshots.
            print(f"  {c.label}: idle window {idle:.0f} s", flush=True)
            ticks0, _ = group_usage()
            busy0, total0 = machine_ticks()
            w0 = time.monotonic()
            time.sleep(idle)
            ticks1, rss1 = group_usage()
            busy1, total1 = machine_ticks()
            res.idle_s = time.monotonic() - w0
            res.load = loadavg()
            res.machine_busy_pct = 100.0 * (busy1 - busy0) / max(1, total1 - total0)
            for a in c.agents:
                pg = a.proc.pid
                if pg in ticks0 and pg in ticks1 and a.alive():
                    res.cpu_pct.append(100.0 * (ticks1[pg] - ticks0[pg]) / TICK / res.idle_s)
                    res.rss_mib.append(rss1.get(pg, 0) / 1024)
            res.alive_after_idle = sum(a.alive() for a in c.agents)
            res.dead = [f"{a.name}: {a.err_tail(3)!r}" for a in c.agents if not a.alive()]
            for o in observers:
                counts = o.poll()
                res.still_converged += counts is not None and counts["alive"] == n
                o.close()
        finally:
            for o in observers:
                o.close()
            c.kill_all()
    return res


# -- reporting ---------------------------------------------------------------------------------


def fmt_s(x: float | None) -> str:
    return "limit" if x is None else f"{x:.2f} s"


def stats(xs: list[float]) -> tuple[float, float, float, float]:
    if not xs:
        return (0.0, 0.0, 0.0, 0.0)
    return statistics.mean(xs), statistics.median(xs), max(xs), sum(xs)


def report(res: Result) -> None:
    cpu = stats(res.cpu_pct)
    rss = stats(res.rss_mib)
    print(f"\n== {res.impl}, N={res.n} ==")
    print(f"storm: {res.n - 1} agents spawned in {res.storm_spawn:.2f} s")
    print(
        f"converged (seed + {len(res.per_observer) - 1} sampled agents list {res.n} alive): "
        f"{fmt_s(res.converged_storm)} from the storm's start, "
        f"{fmt_s(res.converged_last)} from the last spawn"
    )
    print("  per observer: " + ", ".join(f"{k} {fmt_s(v)}" for k, v in res.per_observer.items()))
    for line in res.unconverged:
        print(f"  not converged: {line}")
    print(f"CPU of all agents from seed start to convergence: {res.storm_cpu_s:.1f} s")
    print(f"agents running: {res.alive_after_join}/{res.n} after join, "
          f"{res.alive_after_idle}/{res.n} after idle")  # fmt: skip
    for d in res.dead:
        print(f"  dead: {d}")
    print(
        f"idle {res.idle_s:.1f} s: CPU per agent mean {cpu[0]:.2f} %, median {cpu[1]:.2f} %, "
        f"max {cpu[2]:.2f} % of a core; all agents {cpu[3]:.1f} % of a core"
    )
    print(
        f"  RSS per agent mean {rss[0]:.1f} MiB, median {rss[1]:.1f} MiB, max {rss[2]:.1f} MiB; "
        f"all agents {rss[3]:.0f} MiB"
    )
    print(f"  machine busy {res.machine_busy_pct:.1f} % of all cores; load average {res.load}")
    print(f"  observers still listing {res.n} alive after idle: "
          f"{res.still_converged}/{len(res.per_observer)}")  # fmt: skip
    if res.impl == "serf-trio" and res.cpu_pct:
        ok_cpu = cpu[1] < GOAL_CPU_PCT
        ok_rss = rss[1] * 1024 * 1024 < GOAL_RSS_MB * 1e6
        verdict = f"CPU {'met' if ok_cpu else 'NOT met'}, RSS {'met' if ok_rss else 'NOT met'}"
        print(f"  goal (idle agent < {GOAL_CPU_PCT:g} % CPU, < {GOAL_RSS_MB:g} MB RSS): {verdict}")


def compare(a: Result, b: Result) -> None:
    """Table of both, ratio serf-trio / serf (below 1.0 = serf-trio smaller or faster)."""

    def ratio(x: float | None, y: float | None) -> str:
        return f"{y / x:.2f}" if x and y is not None else "-"

    ca, cb = stats(a.cpu_pct), stats(b.cpu_pct)
    ra, rb = stats(a.rss_mib), stats(b.rss_mib)
    rows: list[tuple[str, str, str, str]] = [
        ("spawn of N-1 agents", fmt_s(a.storm_spawn), fmt_s(b.storm_spawn),
         ratio(a.storm_spawn, b.storm_spawn)),
        ("converged from storm start", fmt_s(a.converged_storm), fmt_s(b.converged_storm),
         ratio(a.converged_storm, b.converged_storm)),
        ("converged from last spawn", fmt_s(a.converged_last), fmt_s(b.converged_last),
         ratio(a.converged_last, b.converged_last)),
        ("agent CPU until converged", f"{a.storm_cpu_s:.1f} s", f"{b.storm_cpu_s:.1f} s",
         ratio(a.storm_cpu_s, b.storm_cpu_s)),
        ("agents running after idle", f"{a.alive_after_idle}/{a.n}",
         f"{b.alive_after_idle}/{b.n}", ""),
        ("idle CPU per agent, median", f"{ca[1]:.2f} %", f"{cb[1]:.2f} %", ratio(ca[1], cb[1])),
        ("idle CPU per agent, max", f"{ca[2]:.2f} %", f"{cb[2]:.2f} %", ratio(ca[2], cb[2])),
        ("idle CPU all agents", f"{ca[3]:.1f} %", f"{cb[3]:.1f} %", ratio(ca[3], cb[3])),
        ("RSS per agent, median", f"{ra[1]:.1f} MiB", f"{rb[1]:.1f} MiB", ratio(ra[1], rb[1])),
        ("RSS all agents", f"{ra[3]:.0f} MiB", f"{rb[3]:.0f} MiB", ratio(ra[3], rb[3])),
        ("machine busy (all cores)", f"{a.machine_busy_pct:.1f} %",
         f"{b.machine_busy_pct:.1f} %", ratio(a.machine_busy_pct, b.machine_busy_pct)),
        ("load average (1/5/15 min)", a.load, b.load, ""),
    ]  # fmt: skip
    print(f"\nN={a.n}: serf-trio / serf (below 1.0 = serf-trio smaller or faster)")
    print(f"{'metric':28} {'serf':>16} {'serf-trio':>16} {'ratio':>6}")
    for title, x, y, r in rows:
        print(f"{title:28} {x:>16} {y:>16} {r:>6}")


# -- main --------------------------------------------------------------------------------------


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through run()'s finally, which kills every agent


def as_json(res: Result) -> dict[str, Any]:
    return dict(res.__dict__)


def kinds(impl: str) -> Iterator[type[Cluster]]:
    if impl in ("serf", "both"):
        yield SerfCluster
    if impl in ("serf-trio", "both"):
        yield TrioCluster


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=128, help="agents, seed included (default 128)")
    ap.add_argument("--impl", choices=IMPLS, default="both")
    ap.add_argument("--idle", type=float, default=30.0, help="idle window in seconds")
    ap.add_argument("--limit", type=float, default=300.0, help="convergence limit in seconds")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    args = ap.parse_args()
    if args.n < 2:
        ap.error("--n must be at least 2")
    if not binaries_present(args.impl):
        return 1
    need = args.n * MIB_PER_AGENT + 512
    have = mem_available_mib()
    if have < need:
        print(f"only {have} MiB available, want {need} MiB for {args.n} agents", file=sys.stderr)
        return 1
    print(f"{have} MiB available; {os.cpu_count()} CPUs; load average {loadavg()}")
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    results: list[Result] = []
    try:
        for kind in kinds(args.impl):
            if results:
                time.sleep(3)  # let the machine settle after killing the previous cluster
            results.append(run(kind, args.n, args.idle, args.limit))
            report(results[-1])
    except KeyboardInterrupt:
        print("interrupted; every agent was killed", file=sys.stderr)
        return 130
    if len(results) == 2:
        compare(results[0], results[1])
    if args.json:
        args.json.write_text(json.dumps([as_json(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
