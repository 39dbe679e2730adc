"""Join convergence and failure detection: serf-trio vs HashiCorp serf, same scenario, one run.

For each implementation: start N agents on 127.0.0.1 (LAN profile, the default of both),
join them through the first, time until every agent lists N alive members; then SIGKILL one
agent and time until every survivor lists it as failed.  Repeats ``--trials`` times and prints
medians and the serf-trio / serf ratio (below 1.0 = serf-trio faster).

    python bench/detect.py --n 5 --trials 3

serf agents are watched with ``serf members -format json`` over their RPC port; serf-trio
runners write their member list to a file on every change.  Every wait is bounded; every
process is killed on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import HOST, free_port, wait_for


class Cluster:
    """N agents of one implementation; subclasses say how to start and observe them."""

    def __init__(self, n: int, workdir: Path) -> None:
        self.n = n
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes] | None] = []
        self.names = [f"b{i}" for i in range(n)]
        self.ports = [free_port() for _ in range(n)]

    def start(self) -> None:
        for i in range(self.n):
            join = f"{HOST}:{self.ports[0]}" if i else None
            self.procs.append(self.spawn(i, join))
            if i == 0:
                wait_for(lambda: self.view(0) is not None, 10)

    def spawn(self, i: int, join: str | None) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def view(self, i: int) -> dict[str, str] | None:
        """name -> status as agent i sees it (None if it cannot answer yet)."""
        raise NotImplementedError

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            p.send_signal(signal.SIGKILL)
            p.wait(5)
            self.procs[i] = None

    def stop(self) -> None:
        for i in range(len(self.procs)):
            self.kill(i)


class SerfCluster(Cluster):
    def spawn(self, i: int, join: str | None) -> subprocess.Popen[bytes]:
        self.rpc = getattr(self, "rpc", [free_port() for _ in range(self.n)])
        cmd = [
            "serf", "agent", f"-node={self.names[i]}", f"-bind={HOST}:{self.ports[i]}",
            f"-rpc-addr={HOST}:{self.rpc[i]}", "-log-level=warn",
        ]  # fmt: skip
        if join:
            cmd.append(f"-join={join}")
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def view(self, i: int) -> dict[str, str] | None:
        r = subprocess.run(
            ["serf", "members", "-format=json", f"-rpc-addr={HOST}:{self.rpc[i]}"],
            capture_output=True,
            timeout=5,
        )
        if r.returncode != 0:
            return None
        return {m["name"]: m["status"] for m in json.loads(r.stdout)["members"]}


class TrioCluster(Cluster):
    def spawn(self, i: int, join: str | None) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable, "-m", "serf_trio.runtime.runner", "--name", self.names[i],
            "--bind", f"{HOST}:{self.ports[i]}", "--log-level", "warning",
            "--members-file", str(self.workdir / f"{self.names[i]}.json"),
        ]  # fmt: skip
        if join:
            cmd += ["--join", join]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def view(self, i: int) -> dict[str, str] | None:
        try:
            doc = json.loads((self.workdir / f"{self.names[i]}.json").read_text())
        except (OSError, ValueError):
            return None
        return {m["name"]: m["status"] for m in doc["members"]}


def trial(kind: type[Cluster], n: int) -> tuple[float | None, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        c = kind(n, Path(tmp))
        try:
            t0 = time.monotonic()
            c.start()
            spawned = time.monotonic()

            def all_alive() -> bool:
                for i in range(n):
                    v = c.view(i)
                    if v is None or sum(s == "alive" for s in v.values()) != n:
                        return False
                return True

            join_t = wait_for(all_alive, 60, 0.02)
            join_s = None if join_t is None else time.monotonic() - spawned
            del t0
            victim = n - 1
            c.kill(victim)
            name = c.names[victim]

            def all_failed() -> bool:
                return all((c.view(i) or {}).get(name) == "failed" for i in range(n - 1))

            fail_s = wait_for(all_failed, 90, 0.05)
            return join_s, fail_s
        finally:
            c.stop()


def med(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def fmt(x: float | None) -> str:
    return "timeout" if x is None else f"{x:.3f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("serf") is None:
        print("serf is not installed (apt-get install serf)", file=sys.stderr)
        return 1
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    results: dict[str, dict[str, float | None]] = {}
    for label, kind in (("serf", SerfCluster), ("serf-trio", TrioCluster)):
        joins, fails = [], []
        for t in range(args.trials):
            j, f = trial(kind, args.n)
            print(f"{label:9} trial {t + 1}: join {fmt(j)}, failure detected by all {fmt(f)}")
            joins.append(j)
            fails.append(f)
        results[label] = {"join": med(joins), "fail": med(fails)}
    print(f"\nN={args.n}, {args.trials} trials, medians:")
    print(f"{'metric':28} {'serf':>10} {'serf-trio':>10} {'ratio':>7}")
    for key, title in (("join", "join convergence"), ("fail", "failure detection (all)")):
        a, b = results["serf"][key], results["serf-trio"][key]
        ratio = f"{b / a:.2f}" if a and b else "-"
        print(f"{title:28} {fmt(a):>10} {fmt(b):>10} {ratio:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
