"""Real faults, full length: serf-trio and HashiCorp Serf side by side, plaintext or encrypted.

Every scenario starts a fresh cluster of ``--agents`` agents (16 by default), one per network
namespace on a bridge (``serf_trio.testing.faults``), converges it, applies the fault and
counts from the agents' own logs what they did:

* ``loss``      10 % loss on every link, each way, UDP and TCP, for ``--loss-seconds`` (600);
* ``partition`` the even and odd hosts cut apart for ``--partition-seconds`` (60), then healed;
                the time until each side listed the other failed, and from the heal until every
                member was alive everywhere again (the cut starts after a random 0-30 s lead,
                so repeated runs sample the phase of Serf's 30 s reconnect ticker);
* ``freeze``    the last agent SIGSTOPped for 3 s (must be refuted), then, in a new cluster,
                for 30 s (must be detected, and alive everywhere after SIGCONT);
* ``busy``      2 busy loops for 60 s, then 8 for 30 s, then a 15 s tail (the reference run's
                load); run this one alone on the box;
* ``mixed``     serf-trio and Serf agents alternating in one cluster at 10 % loss for
                ``--loss-seconds``; the false failures are split by who logged them.

A *false failure* is a member-failed that an agent logged about a member the scenario did not
take away from it (see ``serf_trio.testing.fault_scenarios``).  This kernel has no ``netem``, so
there is loss but no added delay.  Needs root, ``ip`` and ``nft`` (``apt-get install nftables``).

    python bench/faults.py                                   # everything, both, plaintext
    python bench/faults.py --encrypt --scenario loss,partition,freeze
    python bench/faults.py --scenario busy --impl both --json busy.json
    python bench/faults.py --quick --impl serf-trio          # the CI lengths (8 agents)
    python bench/faults.py --scenario partition --repeat 5   # heal times vary with Serf's
                                                             # 30 s reconnect tick: repeat

Prints one Markdown table; ``--json FILE`` writes every outcome.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import binaries_present, impls, interrupt_on_signals

from serf_trio.testing import fault_scenarios as sc
from serf_trio.testing.faults import Cluster, Fabric, unavailable

RECONNECT = 30.0  # Serf's reconnect_interval, the same in both implementations
SCENARIOS = ("loss", "partition", "freeze", "busy", "mixed")
COLUMNS = (
    "scenario", "impls", "encrypted", "agents", "minutes", "false failed", "failed seen",
    "suspicions", "refutations", "detect s", "heal s", "all alive", "stalls / late wakes",
    "notes",
)  # fmt: skip


def run_one(
    label: str,
    kinds: list[str],
    key: str | None,
    body: Callable[[Cluster], sc.Outcome],
) -> sc.Outcome:
    print(f"# {label}: {len(kinds)} agents, {'encrypted' if key else 'plaintext'}", flush=True)
    t0 = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="serf-trio-faults-") as d,
        Fabric(len(kinds)) as fabric,
        Cluster(fabric, kinds, Path(d), key=key) as c,
    ):
        took = c.start(limit=120.0)
        out = body(c)
        out.notes.insert(0, f"converged in {took:.1f} s")
        if out.impls == "mixed":
            impl_of = dict(zip(c.names, c.impls, strict=True))
            for impl in ("serf-trio", "serf"):
                seen = out.false_seen_by(impl_of, impl)
                out.notes.append(f"false failures logged by {impl} agents: {len(seen)}")
    print(f"#   done in {time.monotonic() - t0:.0f} s: {json.dumps(out.row())}", flush=True)
    return out


def plan(args: argparse.Namespace, key: str | None) -> list[tuple[str, list[str], Callable]]:
    n = args.agents
    runs: list[tuple[str, list[str], Callable[[Cluster], sc.Outcome]]] = []
    chosen = SCENARIOS if args.scenario == "all" else args.scenario.split(",")
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    for impl in impls(args.impl):
        kinds = [impl] * n
        if "loss" in chosen:
            runs.append(("loss", kinds, lambda c: sc.lossy(c, 0.10, args.loss_seconds)))
        if "partition" in chosen:
            # A random lead before the cut samples the phase of Serf's 30 s reconnect ticker,
            # which sets the heal time (see ``partitioned``).
            runs.append(
                (
                    "partition",
                    kinds,
                    lambda c: sc.partitioned(
                        c, args.partition_seconds, lead=random.uniform(0, RECONNECT)
                    ),
                )
            )
        if "freeze" in chosen:
            runs.append(("freeze 3 s", kinds, lambda c: sc.frozen(c, len(c) - 1, 3.0)))
            if not args.quick:
                runs.append(("freeze 30 s", kinds, lambda c: sc.frozen(c, len(c) - 1, 30.0)))
        if "busy" in chosen:
            phases = [(2, 20.0)] if args.quick else [(2, 60.0), (8, 30.0)]
            runs.append(("busy", kinds, lambda c, p=phases: sc.starved(c, p)))
    if "mixed" in chosen and args.impl == "both":
        mixed = ["serf-trio" if i % 2 == 0 else "serf" for i in range(n)]
        runs.append(("mixed", mixed, lambda c: sc.lossy(c, 0.10, args.loss_seconds)))
    return runs


def table(outs: list[sc.Outcome]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for o in outs:

        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.1f}"

        cells = [
            o.scenario, o.impls, "yes" if o.encrypted else "no", str(o.agents),
            f"{o.seconds / 60:.1f}", str(len(o.false_failed)), str(o.failed_seen),
            str(o.suspicions), str(o.refutations), f(o.detect_s), f(o.heal_s),
            "yes" if o.all_alive_end else "NO",
            "-" if o.stalls is None else f"{o.stalls} / {o.late_wakes}", "; ".join(o.notes),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impl", choices=("serf-trio", "serf", "both"), default="both")
    ap.add_argument("--scenario", default="all", help=f"all, or some of {','.join(SCENARIOS)}")
    ap.add_argument("--agents", type=int, help="agents per cluster (16; --quick: 8)")
    ap.add_argument("--encrypt", action="store_true", help="a gossip key on every agent")
    ap.add_argument("--loss-seconds", type=float, default=600.0)
    ap.add_argument("--partition-seconds", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="the CI lengths: 8 agents, short")
    ap.add_argument("--repeat", type=int, default=1, help="run each scenario this many times")
    ap.add_argument("--json", type=Path, help="write every outcome to this file")
    args = ap.parse_args()
    if args.quick:
        args.loss_seconds, args.partition_seconds = 60.0, 20.0
    args.agents = args.agents or (8 if args.quick else 16)
    reason = unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    if not binaries_present(args.impl):
        return 2
    interrupt_on_signals()
    key = base64.b64encode(os.urandom(32)).decode() if args.encrypt else None
    outs = []
    for label, kinds, body in plan(args, key) * args.repeat:
        outs.append(run_one(label, kinds, key, body))
        if args.json:
            args.json.write_text(json.dumps([o.row() for o in outs], indent=1) + "\n")
    print(table(outs))
    return 0 if all(o.all_alive_end for o in outs) else 1


if __name__ == "__main__":
    sys.exit(main())
