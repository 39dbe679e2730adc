"""``serf-trio simulate``: seeded what-if runs of the real cores in the simulator.

Answers "how would a cluster of N nodes with these settings behave?" without a cluster: ``N``
nodes start converged (``Simulator.bootstrap_converged``), warm up (``--warmup``, 5 s), and
then, over ``--duration`` observed simulated seconds,

1. node ``n0`` sends one user event (Serf cores only); reported: the simulated time until
   50 / 90 / 99 / 99.9 / 99.99 % of the nodes delivered it, for the percentiles that mean
   something at this N (the first one that needs every node is the last node's time; the ones
   beyond it are left out), whether every node got it, and beside it what HashiCorp's old
   convergence simulator predicts for the same N, fan-out, interval and loss
   (``serf_model_curve``: it counts whole synchronous rounds, so it runs behind the protocol);
2. once every node has the event (or ``EVENT_PHASE_MAX`` seconds have passed), ``--crashes K``
   seeded random nodes crash at once; reported: per (survivor, crashed node) pair the time
   until the survivor held the crashed node dead (p50 / p99 / max, and the pairs not
   detected by the end of the window);
3. at the same moment ``--partition F`` cuts a seeded random fraction ``F`` of the live nodes
   off from the rest for ``--partition-for`` seconds; reported: how many cross pairs held each
   other dead when it healed and after how long (``split``), then how long after the heal
   they took each other back (``merged``: Serf's reconnect and the refutation of the dead
   messages; bare memberlist cores never merge, as memberlist alone does not);
4. false deaths: live nodes declared dead by anyone, apart from the declarations across the
   partition while it lasted (those are the protocol doing its job) and those about the
   ``--slow K`` nodes, which handle their input 0.5-2.5 s late from the same moment
   (``NetModel.starve``, Lifeguard's case): those are counted apart, being arguably right;
5. traffic: datagram packets and bytes, and stream bytes, sent per node (all ``N``, crashed
   ones included) per simulated second of the observed window.

``--runs R`` repeats the experiment with seeds ``SEED`` .. ``SEED + R - 1`` and pools the
samples: the event percentiles are over all (run, node) deliveries, the detection figures
over all pairs of all runs, the counts are summed and the traffic averaged.  ``--samples``
adds every delivery and detection time to the JSON, and ``--plot FILE.png`` draws them
(``cli.simulate_plot``, the optional ``plot`` extra).

Determinism: everything but the ``wall`` object (wall seconds, peak RSS) is a function of the
options, so the same seed prints byte-identical JSON apart from ``wall``; times are rounded to
microseconds.  The wall clock and RSS are read here, never in the simulator (sans-IO).

Fast start: this module imports only the standard library and Typer; the simulator and the
cores are imported inside the command, so ``serf-trio simulate --help`` stays light.

Choices: the simulator skips idle gossip rounds (as the trio driver does), compression is
off (the simulator's default: pure-Python LZW would dominate the run, and it changes no
timing), and the link is LAN-like (0.5 ms one way plus a 0.2 ms mean jitter) for every profile
unless ``--latency`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import resource
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import parse_duration

if TYPE_CHECKING:
    from serf_trio.swim.config import SwimConfig

WARMUP = 5.0  # simulated seconds before the observed window (the first push/pulls settle)
PARTITION_FOR = 30.0  # simulated seconds a --partition lasts unless --partition-for says
MODEL_CUTOFF = 0.9999  # the old Serf simulator stopped its curve at 99.99 %
MODEL_MAX_ROUNDS = 100_000
MAX_RUNS = 1_000
EVENT_PHASE_MAX = 10.0  # simulated seconds the crashes wait at most for the event to spread
EVENT_NAME = "simulate"
MAX_NODES = 65_024  # the simulator's address space (127.0.X.Y)
# (label, per 100,000): the delivery percentiles reported when they mean something at this N.
PERCENTILES = (("50", 50_000), ("90", 90_000), ("99", 99_000), ("99.9", 99_900), ("99.99", 99_990))


class Profile(StrEnum):
    lan = "lan"
    wan = "wan"
    local = "local"


def _duration(text: str | None, option: str) -> float | None:
    """Seconds from a Go duration (``200ms``, ``1s``) or a plain number of seconds, > 0."""
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text)
        except ValueError:
            raise typer.BadParameter(
                f'{text!r} is not a duration such as "200ms", "1s" or 0.5 (seconds)',
                param_hint=f"'{option}'",
            ) from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise typer.BadParameter(f"must be more than 0, not {text!r}", param_hint=f"'{option}'")
    return seconds


def _check(ok: bool, option: str, message: str) -> None:
    if not ok:
        raise typer.BadParameter(message, param_hint=f"'{option}'")


def _round(x: float) -> float:
    """Microsecond resolution (and a stable JSON form)."""
    return round(x, 6)


def _nearest_rank(sorted_values: list[float], per_100k: int) -> float:
    """The nearest-rank percentile of a non-empty sorted list."""
    k = max(1, -(-per_100k * len(sorted_values) // 100_000))
    return sorted_values[k - 1]


def event_percentiles(times: list[float], nodes: int) -> list[dict[str, Any]]:
    """Time until each percentile of ``nodes`` delivered, from the sorted delivery ``times``.

    A percentile needs ``ceil(p * nodes)`` nodes; the first that needs all of them is the last
    node's time (``"all": true``) and the ones after it say nothing new, so they are left out.
    ``seconds`` is None for a percentile the event never reached.
    """
    rows: list[dict[str, Any]] = []
    for label, per_100k in PERCENTILES:
        need = -(-per_100k * nodes // 100_000)
        reached = need <= len(times)
        rows.append(
            {
                "percent": label,
                "nodes": need,
                "all": need >= nodes,
                "seconds": _round(times[need - 1]) if reached else None,
            }
        )
        if need >= nodes:
            break
    return rows


def serf_model_curve(
    nodes: int, fanout: int, interval: float, loss: float = 0.0, failed: float = 0.0
) -> list[tuple[float, float]]:
    """HashiCorp's old Serf convergence simulator (the serf.io page, ``_simulator.js``): the
    fraction of ``nodes`` a broadcast has reached after ``x`` gossip rounds is the logistic
    ``1 / (1 + (n + 1) e^(-c n x))`` with ``c = (fanout / n) (1 - loss) (1 - failed) / 2``,
    evaluated once per round up to 99.99 %.  Returns ``[(seconds, fraction), ...]``.

    It counts in whole, synchronous rounds: a node infected during round ``x`` spreads from
    round ``x + 1`` on, and each round adds ``c n`` new infections per infected node.  Real
    nodes gossip on their own phase (a node that just heard waits half an interval on
    average, not a whole one), which is most of why the simulator's curve runs ahead of it.
    """
    c = (fanout / nodes) * (1.0 - loss) * (1.0 - failed) * 0.5
    if c <= 0:
        return [(0.0, 1.0 / (nodes + 2))]
    points: list[tuple[float, float]] = []
    x = 0
    while True:
        fraction = 1.0 / (1.0 + (nodes + 1) * math.exp(-c * nodes * x))
        points.append((_round(x * interval), fraction))
        if fraction >= MODEL_CUTOFF or x >= MODEL_MAX_ROUNDS:
            return points
        x += 1


def model_percentiles(curve: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """The first time the model's curve reaches each percentile (None: never, in its span)."""
    rows: list[dict[str, Any]] = []
    for label, per_100k in PERCENTILES:
        level = per_100k / 100_000
        hit = next((t for t, fraction in curve if fraction >= level), None)
        rows.append({"percent": label, "seconds": hit})
    return rows


def _stats(values: list[float]) -> dict[str, float | None]:
    """p50 / p99 / max of sorted ``values`` (None when empty)."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": _round(_nearest_rank(values, 50_000)),
        "p99": _round(_nearest_rank(values, 99_000)),
        "max": _round(values[-1]),
    }


def _config(profile: Profile, overrides: dict[str, Any]) -> SwimConfig:
    from serf_trio.swim.config import PROFILES

    return dataclasses.replace(PROFILES[profile.value], enable_compression=False, **overrides)


def run_once(
    *,
    nodes: int,
    config: SwimConfig,
    serf: bool,
    seed: int,
    warmup: float,
    duration: float,
    loss: float,
    latency: float | None,
    crashes: int,
    partition: float | None,
    partition_for: float,
    slow: int = 0,
) -> dict[str, Any]:
    """One seeded run of the module docstring's experiment: its raw samples and counts."""
    from serf_trio.serf.config import SerfConfig
    from serf_trio.testing.netmodel import LinkProfile
    from serf_trio.testing.sim import NodeStatus, Simulator

    link = LinkProfile(loss=loss)
    if latency is not None:
        link = dataclasses.replace(link, base_latency=latency)
    sim = Simulator(
        seed,
        config=config,
        link=link,
        serf=SerfConfig() if serf else None,
        record_trace=False,
        skip_idle_gossip=True,
    )
    sim.bootstrap_converged(nodes)
    sim.run_for(warmup)
    start = sim.now
    end = start + duration
    before = sim.statistics()
    run: dict[str, Any] = {"event_times": None, "crash": None, "partition": None}

    if serf:
        sim.user_event("n0", EVENT_NAME)

        def delivered(s: Simulator) -> bool:
            return len({r.node for r in s.user_events if r.name == EVENT_NAME}) >= nodes

        sim.run_until_condition(delivered, min(end, start + EVENT_PHASE_MAX), step=0.1)
        first: dict[str, float] = {}
        for r in sim.user_events:
            if r.name == EVENT_NAME and r.node not in first:
                first[r.node] = r.time - start
        run["event_times"] = sorted(first.values())

    fault_at = sim.now
    picker = random.Random(f"simulate/faults/{seed}")
    by_index = sorted(sim.nodes, key=lambda name: sim.nodes[name].index)
    victims = sorted(picker.sample(by_index, crashes), key=lambda n: sim.nodes[n].index)
    for name in victims:
        sim.crash(name)
    rest = [n for n in by_index if n not in set(victims)]
    starved = set(picker.sample(rest, slow)) if slow else set()
    for name in sorted(starved, key=lambda n: sim.nodes[n].index):
        sim.net.starve(sim.nodes[name].addr)
    side_a: list[str] = []
    side_b: list[str] = []
    heal_at = fault_at + partition_for
    lost: dict[tuple[str, str], float] = {}  # (observer, subject) dead at the heal
    if partition is not None:
        alive = [n for n in by_index if n not in set(victims)]
        cut = set(picker.sample(alive, max(1, min(len(alive) - 1, round(partition * nodes)))))
        side_a = [n for n in by_index if n in cut]
        side_b = [n for n in by_index if n not in cut]
        cut_id = sim.net.partition(
            [sim.nodes[n].addr for n in side_a], [sim.nodes[n].addr for n in side_b]
        )

        def heal(s: Simulator) -> None:
            # Which cross pairs hold each other dead when the partition heals.
            for group, other in ((side_a, side_b), (side_b, side_a)):
                for subject in group:
                    seen = s.dead_seen_by(subject)
                    for observer in other:
                        t = seen.get(observer)
                        if t is not None and t >= fault_at and s.nodes[observer].status.up:
                            lost[(observer, subject)] = t
            s.net.heal(cut_id)

        sim.at(heal_at, heal)
    sim.run_until(end)

    up = [n for n in by_index if sim.nodes[n].status is NodeStatus.RUNNING]
    if crashes:
        found: list[float] = []
        for victim in victims:
            seen = sim.dead_seen_by(victim)
            for observer in up:
                t = seen.get(observer)
                if t is not None and t >= fault_at:
                    found.append(t - fault_at)
        run["crash"] = {"victims": victims, "times": found, "pairs": len(victims) * len(up)}
    side: dict[str, int] = {n: 0 for n in side_a}
    side.update({n: 1 for n in side_b})
    if partition is not None:
        healed = heal_at <= end
        back: list[float] = []
        if healed:
            for (observer, subject), _ in sorted(lost.items()):
                t = sim.back_seen_by(subject).get(observer)
                if t is not None and t >= heal_at:
                    back.append(t - heal_at)
        cross = {n for n in side_a if n in up}, {n for n in side_b if n in up}
        run["partition"] = {
            "sizes": [len(side_a), len(side_b)],
            "pairs": 2 * len(cross[0]) * len(cross[1]),
            "split_times": sorted(t - fault_at for t in lost.values()) if healed else None,
            "healed": healed,
            "back_times": sorted(back),
        }
    false_deaths = [
        d
        for d in sim.false_dead()
        if not (
            partition is not None
            and d.time >= fault_at
            and d.by in side
            and d.node in side
            and side[d.by] != side[d.node]
        )
    ]
    # A slow node declared dead is arguably a true detection (it does not answer in time);
    # the false deaths that count are those of healthy nodes.
    run["slow_deaths"] = sum(d.node in starved for d in false_deaths)
    run["slow_dead_nodes"] = len({d.node for d in false_deaths if d.node in starved})
    false_deaths = [d for d in false_deaths if d.node not in starved]
    run["false_deaths"] = len(false_deaths)
    run["false_dead_nodes"] = len({d.node for d in false_deaths})
    after = sim.statistics()
    run["traffic"] = {
        "packets": after.packets_sent - before.packets_sent,
        "bytes": after.bytes_sent - before.bytes_sent,
        "stream_bytes": after.stream_bytes_sent - before.stream_bytes_sent,
        "packets_lost": after.packets_lost - before.packets_lost,
        "streams_opened": after.streams_opened - before.streams_opened,
    }
    run["fault_at"] = fault_at - start
    return run


def run_experiment(
    *,
    nodes: int,
    profile: Profile,
    serf: bool,
    seed: int,
    duration: float,
    loss: float,
    latency: float | None,
    crashes: int,
    overrides: dict[str, Any],
    runs: int = 1,
    warmup: float = WARMUP,
    partition: float | None = None,
    partition_for: float = PARTITION_FOR,
    slow: int = 0,
) -> dict[str, Any]:
    """Run the module docstring's experiment ``runs`` times (seeds ``seed``, ``seed + 1``,
    ...) and pool what they measured; the simulated results (no ``wall``), with the pooled
    raw ``samples`` (the command prints them with ``--samples`` and plots them)."""
    from serf_trio.testing.netmodel import LinkProfile

    config = _config(profile, overrides)
    results = [
        run_once(
            nodes=nodes,
            config=config,
            serf=serf,
            seed=seed + i,
            warmup=warmup,
            duration=duration,
            loss=loss,
            latency=latency,
            crashes=crashes,
            partition=partition,
            partition_for=partition_for,
            slow=slow,
        )
        for i in range(runs)
    ]
    link = LinkProfile(loss=loss)
    base_latency = link.base_latency if latency is None else latency
    suspicion_min = config.suspicion_mult * max(1.0, math.log10(nodes)) * config.probe_interval
    model = serf_model_curve(nodes, config.gossip_nodes, config.gossip_interval, loss)

    event: dict[str, Any] | None = None
    event_times: list[float] = []
    if serf:
        event_times = sorted(t for r in results for t in r["event_times"])
        event = {
            "sender": "n0",
            "reached": len(event_times),
            "population": nodes * runs,
            "all_reached": len(event_times) == nodes * runs,
            "runs_all_reached": sum(len(r["event_times"]) == nodes for r in results),
            "percentiles": event_percentiles(event_times, nodes * runs),
            "model": model_percentiles(model),
        }

    detection: dict[str, Any] | None = None
    detection_times: list[float] = []
    detection_pairs = 0
    if crashes:
        detection_times = sorted(t for r in results for t in r["crash"]["times"])
        detection_pairs = sum(r["crash"]["pairs"] for r in results)
        detection = {
            "crashed": results[0]["crash"]["victims"] if runs == 1 else None,
            "crashed_at": _round(results[0]["fault_at"]) if runs == 1 else None,
            "pairs": detection_pairs,
            "detected": len(detection_times),
            "undetected": detection_pairs - len(detection_times),
            **_stats(detection_times),
        }

    split: dict[str, Any] | None = None
    if partition is not None:
        parts = [r["partition"] for r in results]
        healed = all(p["healed"] for p in parts)
        split_times = sorted(t for p in parts for t in (p["split_times"] or ()))
        back_times = sorted(t for p in parts for t in p["back_times"])
        split = {
            "fraction": partition,
            "sizes": parts[0]["sizes"],
            "lasted": partition_for,
            "healed": healed,
            "pairs": sum(p["pairs"] for p in parts),
            "split": {"pairs_dead": len(split_times), **_stats(split_times)} if healed else None,
            "merged": (
                {
                    "pairs_back": len(back_times),
                    "pairs_not_back": len(split_times) - len(back_times),
                    **_stats(back_times),
                }
                if healed
                else None
            ),
        }

    window = nodes * duration * runs
    traffic = {key: sum(r["traffic"][key] for r in results) for key in results[0]["traffic"]}
    return {
        "params": {
            "nodes": nodes,
            "profile": profile.value,
            "cores": "serf" if serf else "memberlist",
            "seed": seed,
            "runs": runs,
            "warmup": warmup,
            "duration": duration,
            "loss": loss,
            "latency": _round(base_latency),
            "jitter": _round(link.jitter),
            "crashes": crashes,
            "partition": partition,
            "partition_for": partition_for if partition is not None else None,
            "slow": slow,
            "gossip_interval": config.gossip_interval,
            "gossip_nodes": config.gossip_nodes,
            "probe_interval": config.probe_interval,
            "suspicion_mult": config.suspicion_mult,
            "retransmit_mult": config.retransmit_mult,
            "suspicion_timeout_min": _round(suspicion_min),
            "suspicion_timeout_max": _round(suspicion_min * config.suspicion_max_timeout_mult),
        },
        "event": event,
        "detection": detection,
        "partition": split,
        "false_deaths": sum(r["false_deaths"] for r in results),
        "false_dead_nodes": sum(r["false_dead_nodes"] for r in results),
        "slow_deaths": sum(r["slow_deaths"] for r in results),
        "slow_dead_nodes": sum(r["slow_dead_nodes"] for r in results),
        "traffic": {
            "packets_per_node_per_second": _round(traffic["packets"] / window),
            "bytes_per_node_per_second": _round(traffic["bytes"] / window),
            "stream_bytes_per_node_per_second": _round(traffic["stream_bytes"] / window),
            "packets_lost": traffic["packets_lost"],
            "streams_opened": traffic["streams_opened"],
        },
        "samples": {
            "event_times": [_round(t) for t in event_times],
            "event_population": nodes * runs,
            "detection_times": [_round(t) for t in detection_times],
            "detection_population": detection_pairs,
            "model_curve": [[t, round(f, 9)] for t, f in model] if serf else None,
        },
    }


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f} s"


def _stat_lines(stats: dict[str, Any]) -> list[str]:
    return [f"  {key:<8} {_seconds(stats[key]):>10}" for key in ("p50", "p99", "max")]


def render_text(result: dict[str, Any]) -> str:
    """The compact human form of ``run_experiment``'s result plus ``wall``."""
    p, wall = result["params"], result["wall"]
    runs = p["runs"]
    lines = [
        f"{p['nodes']:,} nodes, {p['profile']} profile, {p['cores']} cores, seed {p['seed']}"
        + (f", {runs} runs pooled (seeds {p['seed']}-{p['seed'] + runs - 1})" if runs > 1 else "")
        + f": loss {p['loss'] * 100:g} %, latency {p['latency'] * 1000:g} ms one way "
        f"(+ {p['jitter'] * 1000:g} ms mean jitter)",
        f"gossip {p['gossip_interval']:g} s x {p['gossip_nodes']}, "
        f"probe {p['probe_interval']:g} s, "
        f"suspicion mult {p['suspicion_mult']} (timeout {p['suspicion_timeout_min']:g}-"
        f"{p['suspicion_timeout_max']:g} s), retransmit mult {p['retransmit_mult']}",
        f"simulated {p['warmup']:g} s warm-up + {p['duration']:g} s observed"
        + (f" x {runs} runs" if runs > 1 else "")
        + f" in {wall['seconds']:.1f} s wall, peak RSS {wall['peak_rss_mb']:,.0f} MB",
        "",
    ]
    event = result["event"]
    if event is None:
        lines.append("user event            n/a (memberlist cores have no user events)")
    else:
        whom = "nodes" if runs == 1 else "(run, node) deliveries"
        lines.append(
            f"user event from {event['sender']}    reached {event['reached']:,}/"
            f"{event['population']:,} {whom}"
            + ("" if event["all_reached"] else "  (NOT all)")
            + "      Serf's convergence model"
        )
        model = {row["percent"]: row["seconds"] for row in event["model"]}
        for row in event["percentiles"]:
            last = "the last node" if runs == 1 else "the last one"
            who = f"all {row['nodes']:,}: {last}" if row["all"] else f"{row['nodes']:,} {whom}"
            label = f"{row['percent']} %"
            lines.append(
                f"  {label:<8} {_seconds(row['seconds']):>10}   {'(' + who + ')':<34}"
                f"{_seconds(model[row['percent']]):>10}"
            )
    det = result["detection"]
    if det is not None:
        when = f" at +{det['crashed_at']:g} s" if det["crashed_at"] is not None else ""
        lines.append(
            f"crash of {p['crashes']}{when}"
            f"    {det['detected']:,}/{det['pairs']:,} (survivor, crashed) pairs detected dead"
        )
        lines += _stat_lines(det)
        if det["undetected"]:
            lines.append(f"  undetected by the end: {det['undetected']:,} pairs")
    part = result["partition"]
    if part is not None:
        a, b = part["sizes"]
        lines.append(
            f"partition {a:,} | {b:,} nodes for {part['lasted']:g} s"
            + ("" if part["healed"] else "  (not healed within the observed window)")
        )
        if part["split"] is not None:
            lines.append(
                f"  split: {part['split']['pairs_dead']:,}/{part['pairs']:,} cross pairs held "
                "each other dead at the heal, after"
            )
            lines += ["  " + line for line in _stat_lines(part["split"])]
        merged = part["merged"]
        if merged is not None:
            lines.append(
                f"  merged: {merged['pairs_back']:,} of them alive again "
                f"({merged['pairs_not_back']:,} not by the end), after the heal"
            )
            lines += ["  " + line for line in _stat_lines(merged)]
    outside = " outside the partition" if part is not None else ""
    healthy = " healthy" if p["slow"] else ""
    lines.append(
        f"false deaths{outside}   {result['false_deaths']} "
        f"({result['false_dead_nodes']}{healthy} live nodes declared dead)"
    )
    if p["slow"]:
        lines.append(
            f"slow nodes declared dead   {result['slow_deaths']} times "
            f"({result['slow_dead_nodes']} of {p['slow'] * runs} slow nodes)"
        )
    t = result["traffic"]
    lines += [
        "traffic per node      "
        f"{t['packets_per_node_per_second']:,.1f} packets/s, "
        f"{t['bytes_per_node_per_second']:,.0f} B/s datagrams, "
        f"{t['stream_bytes_per_node_per_second']:,.0f} B/s streams",
    ]
    if "plot" in result:
        lines.append(f"plot                  {result['plot']}")
    return "\n".join(lines)


def simulate(
    nodes: Annotated[int, typer.Option(metavar="N", help="Number of nodes.")] = 100,
    profile: Annotated[
        Profile, typer.Option(help="Timing profile of the nodes (as the agent's --profile).")
    ] = Profile.lan,
    gossip_interval: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Override: gossip interval (200ms, 1s, 0.5)."),
    ] = None,
    gossip_nodes: Annotated[
        int | None, typer.Option(metavar="N", help="Override: peers per gossip round.")
    ] = None,
    probe_interval: Annotated[
        str | None, typer.Option(metavar="DURATION", help="Override: probe interval.")
    ] = None,
    suspicion_mult: Annotated[
        int | None, typer.Option(metavar="N", help="Override: suspicion timeout multiplier.")
    ] = None,
    retransmit_mult: Annotated[
        int | None, typer.Option(metavar="N", help="Override: broadcast retransmit multiplier.")
    ] = None,
    loss: Annotated[
        float, typer.Option(metavar="FRACTION", help="Datagram loss probability (0.01 = 1 %).")
    ] = 0.0,
    latency: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="One-way link latency [default: 0.0005]."),
    ] = None,
    crashes: Annotated[
        int, typer.Option(metavar="K", help="Nodes crashed at once once the event has spread.")
    ] = 0,
    slow: Annotated[
        int,
        typer.Option(
            metavar="K",
            help="Nodes that handle their input 0.5-2.5 s late from when the event has spread.",
        ),
    ] = 0,
    partition: Annotated[
        float | None,
        typer.Option(
            metavar="FRACTION",
            help="Cut this fraction of the nodes off from the rest once the event has spread.",
        ),
    ] = None,
    partition_for: Annotated[
        str,
        typer.Option(metavar="DURATION", help="How long the partition lasts before it heals."),
    ] = "30s",
    seed: Annotated[int, typer.Option(metavar="SEED", help="Seed of the (first) run.")] = 1,
    runs: Annotated[
        int,
        typer.Option(
            metavar="R", help="Runs with seeds SEED, SEED+1, ...; their samples are pooled."
        ),
    ] = 1,
    warmup: Annotated[
        str, typer.Option(metavar="DURATION", help="Simulated warm-up before the observed window.")
    ] = "5s",
    duration: Annotated[
        float, typer.Option(metavar="SECONDS", help="Simulated seconds observed after warm-up.")
    ] = 60.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of text.")
    ] = False,
    samples: Annotated[
        bool,
        typer.Option("--samples", help="With --json: include every delivery and detection time."),
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE.png",
            help="Also draw the curves to a PNG (needs the plot extra: serf-trio[plot]).",
            dir_okay=False,
        ),
    ] = None,
    serf: Annotated[
        bool,
        typer.Option("--serf/--memberlist", help="Serf cores (user events) or bare memberlist."),
    ] = True,
) -> None:
    """Simulate a cluster (no network, seeded): event spread, failure detection, traffic.

    N nodes start converged and warm up; then n0 sends one user event and, once it has
    spread, --crashes K random nodes crash and --partition F cuts a fraction of the nodes
    off for --partition-for, and --slow K nodes start answering late; --duration simulated
    seconds are observed.  --runs R pools R seeds.  The same options and seed give the same
    results (JSON: all but "wall").
    """
    _check(2 <= nodes <= MAX_NODES, "--nodes", f"must be from 2 to {MAX_NODES:,}, not {nodes}")
    _check(
        0.0 <= loss < 1.0,
        "--loss",
        f"must be a fraction from 0 up to (not including) 1, not {loss}",
    )
    _check(
        latency is None or (0.0 <= latency < 10.0), "--latency", f"must be 0-10 s, not {latency}"
    )
    _check(0 <= crashes < nodes, "--crashes", f"must be from 0 to {nodes - 1}, not {crashes}")
    _check(1 <= runs <= MAX_RUNS, "--runs", f"must be from 1 to {MAX_RUNS:,}, not {runs}")
    _check(
        0 <= slow <= nodes - crashes,
        "--slow",
        f"must be from 0 to {nodes - crashes} (the nodes not crashed), not {slow}",
    )
    _check(
        partition is None or 0.0 < partition < 1.0,
        "--partition",
        f"must be a fraction between 0 and 1 (exclusive), not {partition}",
    )
    _check(
        partition is None or crashes <= nodes - 2,
        "--crashes",
        "leaves fewer than two live nodes to partition",
    )
    warmup_s = _duration(warmup, "--warmup")
    partition_s = _duration(partition_for, "--partition-for")
    assert warmup_s is not None and partition_s is not None  # both have defaults
    _check(
        0.0 < duration <= 86_400.0 and math.isfinite(duration),
        "--duration",
        f"must be more than 0 and at most a day, not {duration}",
    )
    overrides: dict[str, Any] = {}
    for option, key, text in (
        ("--gossip-interval", "gossip_interval", gossip_interval),
        ("--probe-interval", "probe_interval", probe_interval),
    ):
        seconds = _duration(text, option)
        if seconds is not None:
            overrides[key] = seconds
    for option, key, count in (
        ("--gossip-nodes", "gossip_nodes", gossip_nodes),
        ("--suspicion-mult", "suspicion_mult", suspicion_mult),
        ("--retransmit-mult", "retransmit_mult", retransmit_mult),
    ):
        if count is not None:
            _check(count >= 1, option, f"must be at least 1, not {count}")
            overrides[key] = count

    if plot is not None:
        from .simulate_plot import PlotUnavailable, check_available

        try:
            check_available()  # before the run, not after minutes of it
        except PlotUnavailable as exc:
            raise typer.BadParameter(str(exc), param_hint="'--plot'") from None
        if crashes == 0 and not serf:
            raise typer.BadParameter(
                "nothing to draw: memberlist cores send no user event; add --crashes K",
                param_hint="'--plot'",
            )

    wall_start = time.perf_counter()
    result = run_experiment(
        nodes=nodes,
        profile=profile,
        serf=serf,
        seed=seed,
        duration=duration,
        loss=loss,
        latency=latency,
        crashes=crashes,
        overrides=overrides,
        runs=runs,
        warmup=warmup_s,
        partition=partition,
        partition_for=partition_s,
        slow=slow,
    )
    if plot is not None:
        from .simulate_plot import write_plot

        write_plot(result, plot)
        result["plot"] = str(plot)
    if not samples:
        del result["samples"]
    result["wall"] = {
        "seconds": round(time.perf_counter() - wall_start, 3),
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    typer.echo(json.dumps(result, indent=2) if json_output else render_text(result))
