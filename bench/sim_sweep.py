"""Simulator sweeps: one gossip or failure-detection setting varied, the rest at LAN defaults.

Usage::

    python bench/sim_sweep.py retransmit [--nodes 1000] [--runs 5] [--loss 0.05]
    python bench/sim_sweep.py fanout     [--nodes 1000] [--runs 5] [--loss 0.0]
    python bench/sim_sweep.py interval   [--nodes 1000] [--runs 5] [--loss 0.0]
    python bench/sim_sweep.py suspicion  [--nodes 100]  [--runs 30] [--loss 0.05]

Each row is one ``serf-trio simulate`` experiment (``serf_trio.cli.simulate.run_experiment``,
the same code as the command) pooled over ``--runs`` seeds, printed as a Markdown table for
``docs/simulate.md``:

* ``retransmit``: ``retransmit_mult`` 1-6 against the tail of a user event's spread (99.9 %,
  99.99 %, events that missed a node within the window) and the bytes every node sends;
* ``fanout``: ``gossip_nodes`` 1-6, the same columns;
* ``interval``: ``gossip_interval`` 50 ms to 1 s, the same columns;
* ``suspicion``: ``suspicion_mult`` 2-6 with one crash and ``--slow`` slow nodes (input handled
  0.5-2.5 s late) per run, against detection p50 / p99, false deaths of healthy nodes and how
  often the slow ones were declared dead, under loss.

Only simulated results are printed, plus the wall time of each row: the same arguments print
the same table.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from serf_trio.cli.simulate import Profile, run_experiment

SWEEPS: dict[str, tuple[str, list[Any]]] = {
    "retransmit": ("retransmit_mult", [1, 2, 3, 4, 6]),
    "fanout": ("gossip_nodes", [1, 2, 3, 4, 6]),
    "interval": ("gossip_interval", [0.05, 0.1, 0.2, 0.5, 1.0]),
    "suspicion": ("suspicion_mult", [2, 3, 4, 5, 6]),
}
DEFAULTS = {  # (nodes, runs, loss, duration)
    "retransmit": (1000, 5, 0.05, 10.0),
    "fanout": (1000, 5, 0.0, 10.0),
    "interval": (1000, 5, 0.0, 10.0),
    "suspicion": (100, 30, 0.05, 40.0),
}


def percent(event: dict[str, Any], label: str) -> str:
    """The event's time to ``label`` percent of the pooled deliveries, or "-"."""
    for row in event["percentiles"]:
        if row["percent"] == label:
            return "-" if row["seconds"] is None else f"{row['seconds']:.2f} s"
    return "-"


def spread_row(value: Any, doc: dict[str, Any]) -> str:
    event, traffic = doc["event"], doc["traffic"]
    runs = doc["params"]["runs"]
    missed = runs - event["runs_all_reached"]
    return (
        f"| {value} | {percent(event, '50')} | {percent(event, '99')} | "
        f"{percent(event, '99.9')} | {percent(event, '99.99')} | {missed} of {runs} | "
        f"{traffic['packets_per_node_per_second']:.1f} | "
        f"{traffic['bytes_per_node_per_second']:,.0f} |"
    )


def detection_row(value: Any, doc: dict[str, Any]) -> str:
    det = doc["detection"]
    slow = doc["params"]["slow"] * doc["params"]["runs"]
    return (
        f"| {value} | {doc['params']['suspicion_timeout_min']:.1f} s | {det['p50']:.2f} s | "
        f"{det['p99']:.2f} s | {det['undetected']} | {doc['false_deaths']} | "
        f"{doc['slow_dead_nodes']} of {slow} |"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", choices=sorted(SWEEPS))
    ap.add_argument("--nodes", type=int)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--loss", type=float)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slow", type=int, default=5, help="suspicion: slow nodes per run")
    ap.add_argument("--values", help="comma-separated values instead of the sweep's own")
    args = ap.parse_args(argv)
    key, values = SWEEPS[args.sweep]
    nodes, runs, loss, duration = DEFAULTS[args.sweep]
    nodes = args.nodes or nodes
    runs = args.runs or runs
    loss = loss if args.loss is None else args.loss
    duration = args.duration or duration
    if args.values:
        kind = type(values[0])
        values = [kind(v) for v in args.values.split(",")]
    detection = args.sweep == "suspicion"

    slow = f", {args.slow} slow nodes" if detection and args.slow else ""
    print(
        f"{args.sweep}: {key} at {nodes:,} nodes, loss {loss * 100:g} %{slow}, {runs} runs "
        f"each (seeds {args.seed}-{args.seed + runs - 1}), {duration:g} s observed\n"
    )
    if detection:
        print(
            "| suspicion_mult | suspicion min | detection p50 | p99 | undetected "
            "| false deaths (healthy) | slow nodes declared dead |"
        )
        print("|---|---|---|---|---|---|---|")
    else:
        print(
            f"| {key} | 50 % | 99 % | 99.9 % | 99.99 % | runs missing a node "
            "| packets/s per node | bytes/s per node |"
        )
        print("|---|---|---|---|---|---|---|---|")
    walls: list[str] = []
    for value in values:
        start = time.perf_counter()
        doc = run_experiment(
            nodes=nodes,
            profile=Profile.lan,
            serf=not detection,
            seed=args.seed,
            duration=duration,
            loss=loss,
            latency=None,
            crashes=1 if detection else 0,
            overrides={key: value},
            runs=runs,
            slow=args.slow if detection else 0,
        )
        walls.append(f"{value}: {time.perf_counter() - start:.1f} s")
        print(detection_row(value, doc) if detection else spread_row(value, doc), flush=True)
    print(f"\nwall per row: {', '.join(walls)}")


if __name__ == "__main__":
    main()
