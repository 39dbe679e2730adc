"""Simulator throughput: simulated node-seconds per wall second for a steady LAN cluster.

Usage::

    python bench/sim_throughput.py [--nodes 1000] [--seconds 20] [--seed 1] [--batch 100]
                                   [--profile [N]] [--serf] [--converged] [--skip-idle-gossip]
                                   [--tracemalloc]

Bootstraps ``--nodes`` nodes (all join through node n0, ``--batch`` at a time with a short
settle between batches, so the seed is not asked for a thousand push/pulls at once), waits
until every node sees every other alive, then runs ``--seconds`` of simulated steady state and
prints the rate.  ``--warmup`` simulated seconds run first, unmeasured: after a join storm every
node still retransmits one alive per member for a while, which is not the steady state.
``--profile`` runs the steady phase under cProfile and prints the top
functions by own time (the simulator's and the core's hot spots).  ``--serf`` runs
``SerfNode`` cores (the Serf layer over memberlist) instead of bare memberlist cores.

``--converged`` starts the cluster converged (``Simulator.bootstrap_converged``: every node
already knows every other alive, nothing queued) instead of simulating the join storm, and
skips the warm-up unless ``--warmup`` is given (there is no storm to drain; the first
push/pulls still encode every member once, so a few seconds of warm-up make the steady rate
steadier).  ``--skip-idle-gossip`` lets the simulator skip idle gossip rounds (as the trio
driver does; other seeded results than without).  Peak memory is the process's ``ru_maxrss``;
``--tracemalloc`` also traces Python allocations (slow: use it for memory, not for rates).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import sys
import time
import tracemalloc

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


def bootstrap_converged(sim: Simulator, nodes: int) -> float:
    """Start ``nodes`` nodes already converged; returns the wall seconds it took."""
    start = time.perf_counter()
    sim.bootstrap_converged(nodes)
    wall = time.perf_counter() - start
    if not sim.all_alive_converged():  # pragma: no cover - a bug in the bootstrap
        sys.exit("converged bootstrap is not converged")
    return wall


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20.0, help="simulated steady-state seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=100, help="nodes joining per batch")
    ap.add_argument("--settle", type=float, default=2.0, help="simulated seconds per batch")
    ap.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="simulated seconds to drain the join storm (default 60; 5 with --converged)",
    )
    ap.add_argument("--profile", type=int, nargs="?", const=25, default=0, metavar="N")
    ap.add_argument("--serf", action="store_true", help="drive SerfNode cores")
    ap.add_argument("--converged", action="store_true", help="start converged, no join storm")
    ap.add_argument("--skip-idle-gossip", action="store_true", help="skip idle gossip rounds")
    ap.add_argument("--tracemalloc", action="store_true", help="trace Python allocations")
    args = ap.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else (5.0 if args.converged else 60.0)

    if args.tracemalloc:
        tracemalloc.start()
    sim = Simulator(
        args.seed,
        record_trace=False,
        serf=SerfConfig() if args.serf else None,
        skip_idle_gossip=args.skip_idle_gossip,
    )
    if args.converged:
        boot_wall = bootstrap_converged(sim, args.nodes)
    else:
        boot_wall = bootstrap(sim, args.nodes, args.batch, args.settle)
    boot_events = sim.statistics().events
    print(
        f"bootstrap ({'converged' if args.converged else 'join storm'}): {args.nodes} nodes "
        f"converged at t={sim.now:.1f}s simulated, {boot_wall:.1f}s wall, {boot_events} events, "
        f"peak RSS {peak_rss_mb():,.0f} MB"
    )

    t_warm = time.perf_counter()
    sim.run_for(warmup)
    print(f"warm-up: {warmup:.0f}s simulated in {time.perf_counter() - t_warm:.1f}s wall")

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
    print(f"peak RSS {peak_rss_mb():,.0f} MB")
    if args.tracemalloc:
        current, peak = tracemalloc.get_traced_memory()
        print(f"tracemalloc: current {current / 2**20:,.0f} MB, peak {peak / 2**20:,.0f} MB")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
