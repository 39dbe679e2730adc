"""Simulator throughput: simulated node-seconds per wall second for a steady LAN cluster.

Usage::

    python bench/sim_throughput.py [--nodes 1000] [--seconds 20] [--seed 1] [--batch 100]
                                   [--profile [N]] [--serf]

Bootstraps ``--nodes`` nodes (all join through node n0, ``--batch`` at a time with a short
settle between batches, so the seed is not asked for a thousand push/pulls at once), waits
until every node sees every other alive, then runs ``--seconds`` of simulated steady state and
prints the rate.  ``--warmup`` simulated seconds run first, unmeasured: after a join storm every
node still retransmits one alive per member for a while, which is not the steady state.
``--profile`` runs the steady phase under cProfile and prints the top
functions by own time (the simulator's and the core's hot spots).  ``--serf`` runs
``SerfNode`` cores (the Serf layer over memberlist) instead of bare memberlist cores.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

from serf_trio.serf.config import SerfConfig
from serf_trio.testing.sim import Simulator


def bootstrap(sim: Simulator, nodes: int, batch: int, settle: float) -> float:
    """Join ``nodes`` nodes through n0; returns the wall seconds it took."""
    start = time.perf_counter()
    sim.add_nodes(nodes)
    for first in range(1, nodes, batch):
        for i in range(first, min(first + batch, nodes)):
            sim.join(f"n{i}", ["n0"])
        sim.run_for(settle)
    limit = sim.now + 600.0
    if sim.run_until_condition(Simulator.all_alive_converged, limit, step=1.0) is None:
        sys.exit(f"cluster did not converge by t={limit:.0f}s")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20.0, help="simulated steady-state seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=100, help="nodes joining per batch")
    ap.add_argument("--settle", type=float, default=2.0, help="simulated seconds per batch")
    ap.add_argument(
        "--warmup", type=float, default=60.0, help="simulated seconds to drain the join storm"
    )
    ap.add_argument("--profile", type=int, nargs="?", const=25, default=0, metavar="N")
    ap.add_argument("--serf", action="store_true", help="drive SerfNode cores")
    args = ap.parse_args(argv)

    sim = Simulator(args.seed, record_trace=False, serf=SerfConfig() if args.serf else None)
    boot_wall = bootstrap(sim, args.nodes, args.batch, args.settle)
    boot_events = sim.statistics().events
    print(
        f"bootstrap: {args.nodes} nodes converged at t={sim.now:.1f}s simulated, "
        f"{boot_wall:.1f}s wall, {boot_events} events"
    )

    t_warm = time.perf_counter()
    sim.run_for(args.warmup)
    print(f"warm-up: {args.warmup:.0f}s simulated in {time.perf_counter() - t_warm:.1f}s wall")

    profiler = cProfile.Profile() if args.profile else None
    start_events = sim.statistics().events
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    sim.run_for(args.seconds)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - t0
    events = sim.statistics().events - start_events
    stats = sim.statistics()
    print(
        f"steady state: {args.seconds:.0f}s simulated x {args.nodes} nodes in {wall:.1f}s wall: "
        f"{args.seconds * args.nodes / wall:,.0f} node-seconds/s, {events / wall:,.0f} events/s, "
        f"{events / args.seconds / args.nodes:.1f} events per node-second"
    )
    print(
        f"packets sent {stats.packets_sent}, lost {stats.packets_lost}, "
        f"streams {stats.streams_opened}, false dead {len(sim.false_dead())}"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
