"""``serf-trio simulate``: one seeded what-if run of the real cores in the simulator.

Answers "how would a cluster of N nodes with these settings behave?" without a cluster:
``N`` nodes start converged (``Simulator.bootstrap_converged``), run a short warm-up, and then,
over ``--duration`` observed simulated seconds,

1. node ``n0`` sends one user event (Serf cores only); reported: the simulated time until
   50 / 90 / 99 / 99.9 / 99.99 % of the nodes delivered it, for the percentiles that mean
   something at this N (the first one that needs every node is the last node's time; the ones
   beyond it are left out), and whether every node got it;
2. once every node has the event (or ``EVENT_PHASE_MAX`` seconds have passed), ``--crashes K``
   seeded random nodes crash at once; reported: per (survivor, crashed node) pair the time
   until the survivor held the crashed node dead (p50 / p99 / max, and the pairs not
   detected by the end of the window), and the false deaths of the whole run (live nodes
   declared dead by anyone);
3. traffic: datagram packets and bytes, and stream bytes, sent per node (all ``N``, crashed
   ones included) per simulated second of the observed window.

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

import json
import math
import random
import resource
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import parse_duration

if TYPE_CHECKING:
    from serf_trio.testing.sim import Simulator

WARMUP = 5.0  # simulated seconds before the observed window (the first push/pulls settle)
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
) -> dict[str, Any]:
    """Run the experiment of the module docstring; the simulated results (no ``wall``)."""
    import dataclasses

    from serf_trio.serf.config import SerfConfig
    from serf_trio.swim.config import PROFILES
    from serf_trio.testing.netmodel import LinkProfile
    from serf_trio.testing.sim import NodeStatus, Simulator

    config = dataclasses.replace(PROFILES[profile.value], enable_compression=False, **overrides)
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
    sim.run_for(WARMUP)
    start = sim.now
    end = start + duration
    before = sim.statistics()

    event: dict[str, Any] | None = None
    if serf:
        sim.user_event("n0", EVENT_NAME)

        def delivered(s: Simulator) -> bool:
            return len({r.node for r in s.user_events if r.name == EVENT_NAME}) >= nodes

        sim.run_until_condition(delivered, min(end, start + EVENT_PHASE_MAX), step=0.1)
        first: dict[str, float] = {}
        for r in sim.user_events:
            if r.name == EVENT_NAME and r.node not in first:
                first[r.node] = r.time - start
        times = sorted(first.values())
        event = {
            "sender": "n0",
            "reached": len(times),
            "all_reached": len(times) == nodes,
            "percentiles": event_percentiles(times, nodes),
        }

    detection: dict[str, Any] | None = None
    if crashes:
        crash_at = sim.now
        victims = sorted(
            random.Random(f"simulate/crashes/{seed}").sample(list(sim.nodes), crashes),
            key=lambda name: sim.nodes[name].index,
        )
        for name in victims:
            sim.crash(name)
        sim.run_until(end)
        observers = [n.name for n in sim.nodes.values() if n.status is NodeStatus.RUNNING]
        found: list[float] = []
        for victim in victims:
            seen = sim.dead_seen_by(victim)
            for observer in observers:
                t = seen.get(observer)
                if t is not None and t >= crash_at:
                    found.append(t - crash_at)
        found.sort()
        pairs = len(victims) * len(observers)
        detection = {
            "crashed": victims,
            "crashed_at": _round(crash_at - start),
            "pairs": pairs,
            "detected": len(found),
            "undetected": pairs - len(found),
            "p50": _round(_nearest_rank(found, 50_000)) if found else None,
            "p99": _round(_nearest_rank(found, 99_000)) if found else None,
            "max": _round(found[-1]) if found else None,
        }
    sim.run_until(end)

    after = sim.statistics()
    rate = 1.0 / (nodes * duration)
    false = sim.false_dead()
    suspicion_min = config.suspicion_mult * max(1.0, math.log10(nodes)) * config.probe_interval
    return {
        "params": {
            "nodes": nodes,
            "profile": profile.value,
            "cores": "serf" if serf else "memberlist",
            "seed": seed,
            "warmup": WARMUP,
            "duration": duration,
            "loss": loss,
            "latency": _round(link.base_latency),
            "jitter": _round(link.jitter),
            "crashes": crashes,
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
        "false_deaths": len(false),
        "false_dead_nodes": len({d.node for d in false}),
        "traffic": {
            "packets_per_node_per_second": _round(
                (after.packets_sent - before.packets_sent) * rate
            ),
            "bytes_per_node_per_second": _round((after.bytes_sent - before.bytes_sent) * rate),
            "stream_bytes_per_node_per_second": _round(
                (after.stream_bytes_sent - before.stream_bytes_sent) * rate
            ),
            "packets_lost": after.packets_lost - before.packets_lost,
            "streams_opened": after.streams_opened - before.streams_opened,
        },
    }


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f} s"


def render_text(result: dict[str, Any]) -> str:
    """The compact human form of ``run_experiment``'s result plus ``wall``."""
    p, wall = result["params"], result["wall"]
    lines = [
        f"{p['nodes']} nodes, {p['profile']} profile, {p['cores']} cores, seed {p['seed']}: "
        f"loss {p['loss'] * 100:g} %, latency {p['latency'] * 1000:g} ms one way "
        f"(+ {p['jitter'] * 1000:g} ms mean jitter)",
        f"gossip {p['gossip_interval']:g} s x {p['gossip_nodes']}, "
        f"probe {p['probe_interval']:g} s, "
        f"suspicion mult {p['suspicion_mult']} (timeout {p['suspicion_timeout_min']:g}-"
        f"{p['suspicion_timeout_max']:g} s), retransmit mult {p['retransmit_mult']}",
        f"simulated {p['warmup']:g} s warm-up + {p['duration']:g} s observed in "
        f"{wall['seconds']:.1f} s wall, peak RSS {wall['peak_rss_mb']:,.0f} MB",
        "",
    ]
    event = result["event"]
    if event is None:
        lines.append("user event            n/a (memberlist cores have no user events)")
    else:
        lines.append(
            f"user event from {event['sender']}    reached {event['reached']}/{p['nodes']} nodes"
            + ("" if event["all_reached"] else "  (NOT all)")
        )
        for row in event["percentiles"]:
            who = f"all {row['nodes']}: the last node" if row["all"] else f"{row['nodes']} nodes"
            label = f"{row['percent']} %"
            lines.append(f"  {label:<8} {_seconds(row['seconds']):>10}   ({who})")
    det = result["detection"]
    if det is not None:
        lines += [
            f"crash of {len(det['crashed'])} at +{det['crashed_at']:g} s"
            f"    {det['detected']}/{det['pairs']} (survivor, crashed) pairs detected dead",
            f"  p50      {_seconds(det['p50']):>10}",
            f"  p99      {_seconds(det['p99']):>10}",
            f"  max      {_seconds(det['max']):>10}",
        ]
        if det["undetected"]:
            lines.append(f"  undetected by the end: {det['undetected']} pairs")
    lines.append(
        f"false deaths          {result['false_deaths']} "
        f"({result['false_dead_nodes']} live nodes declared dead)"
    )
    t = result["traffic"]
    lines += [
        "traffic per node      "
        f"{t['packets_per_node_per_second']:,.1f} packets/s, "
        f"{t['bytes_per_node_per_second']:,.0f} B/s datagrams, "
        f"{t['stream_bytes_per_node_per_second']:,.0f} B/s streams",
    ]
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
    seed: Annotated[int, typer.Option(metavar="SEED", help="Seed of the whole run.")] = 1,
    duration: Annotated[
        float, typer.Option(metavar="SECONDS", help="Simulated seconds observed after warm-up.")
    ] = 60.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of text.")
    ] = False,
    serf: Annotated[
        bool,
        typer.Option("--serf/--memberlist", help="Serf cores (user events) or bare memberlist."),
    ] = True,
) -> None:
    """Simulate a cluster (no network, seeded): event spread, failure detection, traffic.

    N nodes start converged and warm up 5 s; then n0 sends one user event, --crashes K
    random nodes crash once it has spread, and --duration simulated seconds are observed.
    The same options and seed give the same results (JSON: all but "wall").
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
    )
    result["wall"] = {
        "seconds": round(time.perf_counter() - wall_start, 3),
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    typer.echo(json.dumps(result, indent=2) if json_output else render_text(result))
