"""What encryption costs: per packet in-process, and per agent in a running cluster, beside serf.

Part 1 (in-process, serf-trio only): CPU time to seal and open one packet with each cipher
(plaintext pass-through, memberlist's AES-GCM, secretbox), for a 100-byte ping and a full
1,400-byte gossip packet, and how many such packets one core could seal+open per second.

Part 2 (real agents, both implementations, one run): for each configuration

    serf plain | serf -encrypt (AES-GCM) | serf-trio plain | serf-trio aes-gcm | serf-trio secretbox

start N agents on 127.0.0.1 (LAN profile) joined through the first, time join convergence
(every agent lists N alive), measure idle CPU and RSS per agent over ``--idle`` seconds, then
SIGKILL one agent and time until every survivor lists it failed.  The report gives, per
implementation, encrypted / plain ratios (what encryption costs) and serf-trio / serf ratios
with encryption on.

    .venv/bin/python bench/encryption.py --n 5 --idle 20

Agents are watched with the project's RPC client (Unix socket for serf-trio, TCP for serf);
every agent runs in its own process group and every group is SIGKILLed at the end.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import HOST, free_port, wait_for
from capacity import SERF, SERF_TRIO, TICK, Agent, Cluster, group_usage

from serf_trio.rpc.client import RpcClient, RpcError
from serf_trio.wire.crypto import Algorithm, Envelope
from serf_trio.wire.keyring import Keyring

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()


# -- part 1: per packet --------------------------------------------------------------------------


def per_packet(size: int, envelope: Envelope, rounds: int) -> float:
    """Microseconds of CPU to seal and then open one ``size``-byte packet (best of 5)."""
    data = os.urandom(size)
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(rounds):
            envelope.open_packet(envelope.seal_packet(data))
        best = min(best, (time.process_time() - t0) / rounds)
    return best * 1e6


def part1(rounds: int) -> None:
    print("Part 1: seal + open one packet, CPU microseconds (best of 5)")
    print(f"{'cipher':12} {'100 B':>9} {'1400 B':>9} {'1400 B packets/s/core':>22}")
    envs = {
        "plaintext": Envelope(None),
        "aes-gcm": Envelope(Keyring([KEY]), Algorithm.AES_GCM),
        "secretbox": Envelope(Keyring([KEY]), Algorithm.SECRETBOX),
    }
    for label, env in envs.items():
        small, big = per_packet(100, env, rounds), per_packet(1400, env, rounds)
        print(f"{label:12} {small:9.1f} {big:9.1f} {1e6 / big:22,.0f}")
    # A second key tried first: what a node pays for each packet sealed under an older key.
    env = Envelope(Keyring([os.urandom(32), KEY]), Algorithm.AES_GCM)
    sealer = Envelope(Keyring([KEY]), Algorithm.AES_GCM)
    data = sealer.seal_packet(os.urandom(1400))
    t0 = time.process_time()
    for _ in range(rounds):
        env.open_packet(data)
    us = (time.process_time() - t0) / rounds * 1e6
    print(f"open 1400 B aes-gcm under the second of two keys: {us:.1f} us")


# -- part 2: agents ------------------------------------------------------------------------------


class TrioAgents(Cluster):
    def __init__(self, n: int, workdir: Path, extra: list[str]) -> None:
        super().__init__(n, workdir)
        self.extra = extra

    def argv(self, name: str, port: int, join: str | None) -> tuple[list[str], str, str]:
        sock = str(self.workdir / f"{name}.sock")
        cmd = [
            str(SERF_TRIO), "agent", "--node", name, "--bind", f"{HOST}:{port}",
            "--rpc-socket", sock, "--log-level", "warn", *self.extra,
        ]  # fmt: skip
        if join:
            cmd += ["--join", join]
        return cmd, "", sock


class SerfAgents(Cluster):
    def __init__(self, n: int, workdir: Path, extra: list[str]) -> None:
        super().__init__(n, workdir)
        self.extra = extra

    def argv(self, name: str, port: int, join: str | None) -> tuple[list[str], str, str]:
        rpc = f"{HOST}:{free_port()}"
        cmd = [
            SERF, "agent", f"-node={name}", f"-bind={HOST}:{port}", f"-rpc-addr={rpc}",
            "-log-level=warn", *self.extra,
        ]  # fmt: skip
        if join:
            cmd.append(f"-join={join}")
        return cmd, rpc, ""


CONFIGS: list[tuple[str, type[Cluster], list[str]]] = [
    ("serf plain", SerfAgents, []),
    ("serf -encrypt", SerfAgents, [f"-encrypt={KEY_B64}"]),
    ("serf-trio plain", TrioAgents, []),
    ("serf-trio aes-gcm", TrioAgents, ["--encrypt", KEY_B64, "--encrypt-algorithm", "aes-gcm"]),
    ("serf-trio secretbox", TrioAgents, ["--encrypt", KEY_B64]),
]


def statuses(agent: Agent) -> dict[str, str] | None:
    try:
        with RpcClient(addr=agent.rpc_addr, socket_path=agent.rpc_socket, timeout=2.0) as c:
            return {m.name: m.status for m in c.members()}
    except (OSError, RpcError):
        return None


@dataclass
class Outcome:
    join_s: float | None
    cpu_pct: float  # median per agent over the idle window
    rss_mib: float  # median per agent
    fail_s: float | None


def run_config(kind: type[Cluster], extra: list[str], n: int, idle: float) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        c = kind(n, Path(tmp), extra)  # type: ignore[call-arg]
        try:
            seed = c.spawn(0, None)
            wait_for(lambda: statuses(seed) is not None, 15)
            for i in range(1, n):
                c.spawn(i, f"{HOST}:{seed.port}")
            t0 = time.monotonic()

            def converged() -> bool:
                for a in c.agents:
                    st = statuses(a)
                    if st is None or sum(v == "alive" for v in st.values()) != n:
                        return False
                return True

            join_s = None if wait_for(converged, 60) is None else time.monotonic() - t0
            pgids = [a.proc.pid for a in c.agents]
            ticks0, _ = group_usage()
            time.sleep(idle)  # the idle window itself: nothing is sent meanwhile
            ticks1, rss = group_usage()
            cpu = [(ticks1.get(p, 0) - ticks0.get(p, 0)) / TICK / idle * 100 for p in pgids]
            mem = [rss.get(p, 0) / 1024 for p in pgids]
            victim = c.agents[-1]
            os.killpg(victim.proc.pid, 9)
            survivors = c.agents[:-1]

            def detected() -> bool:
                return all((statuses(a) or {}).get(victim.name) == "failed" for a in survivors)

            fail_s = wait_for(detected, 90)
            return Outcome(join_s, statistics.median(cpu), statistics.median(mem), fail_s)
        finally:
            c.kill_all()


def fmt(x: float | None, unit: str = "s") -> str:
    return "timeout" if x is None else f"{x:.2f} {unit}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{b / a:.2f}" if a and b else "-"


def part2(n: int, idle: float) -> None:
    print(f"\nPart 2: N={n} agents per configuration, idle window {idle:.0f} s")
    results: dict[str, Outcome] = {}
    for label, kind, extra in CONFIGS:
        out = run_config(kind, extra, n, idle)
        results[label] = out
        print(
            f"{label:20} join {fmt(out.join_s):>9}  idle CPU {out.cpu_pct:5.2f} %  "
            f"RSS {out.rss_mib:5.1f} MiB  failure detected by all {fmt(out.fail_s):>9}"
        )
    print("\nratios (below 1.0: the second is cheaper / faster)")
    pairs = [
        ("encryption's cost in serf", "serf plain", "serf -encrypt"),
        ("encryption's cost in serf-trio (aes-gcm)", "serf-trio plain", "serf-trio aes-gcm"),
        ("encryption's cost in serf-trio (secretbox)", "serf-trio plain", "serf-trio secretbox"),
        ("serf-trio aes-gcm / serf -encrypt", "serf -encrypt", "serf-trio aes-gcm"),
        ("serf-trio secretbox / serf -encrypt", "serf -encrypt", "serf-trio secretbox"),
    ]
    print(f"{'':44} {'join':>6} {'CPU':>6} {'RSS':>6} {'detect':>7}")
    for title, a_label, b_label in pairs:
        a, b = results[a_label], results[b_label]
        print(
            f"{title:44} {ratio(a.join_s, b.join_s):>6} {ratio(a.cpu_pct, b.cpu_pct):>6} "
            f"{ratio(a.rss_mib, b.rss_mib):>6} {ratio(a.fail_s, b.fail_s):>7}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2000, help="packets per part-1 measurement")
    ap.add_argument("--part", choices=("1", "2", "both"), default="both")
    args = ap.parse_args()
    if args.part in ("1", "both"):
        part1(args.rounds)
    if args.part in ("2", "both"):
        if shutil.which("serf") is None:
            print("serf is not installed (apt-get install serf)", file=sys.stderr)
            return 1
        part2(args.n, args.idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
