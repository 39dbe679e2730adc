"""``serf-trio simulate``: determinism, plausible results, a light ``--help``, clear errors."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from serf_trio.cli import app
from serf_trio.cli.simulate import event_percentiles, model_percentiles, serf_model_curve

from .test_fast_start import heavy_loaded


def simulate_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["simulate", "--json", *args])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def without_wall(doc: dict[str, Any]) -> str:
    assert set(doc["wall"]) == {"seconds", "peak_rss_mb"}
    return json.dumps({k: v for k, v in doc.items() if k != "wall"}, sort_keys=True)


def test_same_seed_gives_identical_json_apart_from_wall() -> None:
    args = ("--nodes", "30", "--duration", "15", "--crashes", "1", "--loss", "0.01")
    first = simulate_json(*args, "--seed", "7")
    again = simulate_json(*args, "--seed", "7")
    other = simulate_json(*args, "--seed", "8")
    assert without_wall(first) == without_wall(again)
    assert without_wall(first) != without_wall(other)


def test_event_reaches_every_node_of_a_small_lan_cluster_fast() -> None:
    doc = simulate_json("--nodes", "100", "--duration", "5")
    event = doc["event"]
    assert event["reached"] == 100 and event["all_reached"]
    by_percent = {row["percent"]: row for row in event["percentiles"]}
    # Serf's convergence model: 99.9 % of 1,000 nodes in ~2 s with LAN defaults.
    assert by_percent["99"]["seconds"] < 2.0
    # At N=100, 99.9 % is every node (the last one's time) and 99.99 % says nothing more.
    assert list(by_percent) == ["50", "90", "99", "99.9"]
    assert by_percent["99.9"]["all"] and by_percent["99.9"]["nodes"] == 100
    seconds = [row["seconds"] for row in event["percentiles"]]
    assert seconds == sorted(seconds)
    assert doc["detection"] is None and doc["false_deaths"] == 0
    traffic = doc["traffic"]
    assert traffic["packets_per_node_per_second"] > 0 and traffic["bytes_per_node_per_second"] > 0


def test_crash_detection_follows_the_suspicion_formula_without_false_deaths() -> None:
    nodes = 50
    doc = simulate_json(
        "--nodes", str(nodes), "--crashes", "1", "--loss", "0.01", "--duration", "30"
    )
    # memberlist: suspicion min timeout = suspicion_mult * max(1, log10(N)) * probe_interval.
    suspicion_min = 4 * max(1.0, math.log10(nodes)) * 1.0
    assert doc["params"]["suspicion_timeout_min"] == pytest.approx(suspicion_min, abs=1e-6)
    det = doc["detection"]
    assert det["pairs"] == nodes - 1 and det["undetected"] == 0
    # Lifeguard never shortens suspicion below the min; the crashed node is first suspected
    # within a few probe intervals and the confirmations arrive soon after (margin: 6 s).
    assert suspicion_min <= det["p50"] <= suspicion_min + 6.0
    assert det["p50"] <= det["p99"] <= det["max"] < doc["params"]["suspicion_timeout_max"]
    assert doc["false_deaths"] == 0 and doc["false_dead_nodes"] == 0


def test_memberlist_cores_report_no_event_and_text_says_why() -> None:
    result = CliRunner().invoke(
        app, ["simulate", "--memberlist", "--nodes", "10", "--duration", "12", "--crashes", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "n/a (memberlist cores have no user events)" in result.stdout
    assert "9/9 (survivor, crashed) pairs detected dead" in result.stdout


def test_text_names_the_last_node_percentile() -> None:
    result = CliRunner().invoke(app, ["simulate", "--nodes", "20", "--duration", "2"])
    assert result.exit_code == 0, result.output
    assert "reached 20/20 nodes" in result.stdout
    assert "(all 20: the last node)" in result.stdout
    assert "wall, peak RSS" in result.stdout


def test_percentile_rows_stop_at_the_first_that_needs_every_node() -> None:
    times = [i / 1000 for i in range(1000)]
    rows = event_percentiles(times, 1000)
    assert [(r["percent"], r["nodes"], r["all"]) for r in rows] == [
        ("50", 500, False),
        ("90", 900, False),
        ("99", 990, False),
        ("99.9", 999, False),
        ("99.99", 1000, True),
    ]
    assert rows[-1]["seconds"] == 0.999
    partial = event_percentiles([0.1] * 6, 10)  # only 6 of 10 nodes got it
    assert [(r["percent"], r["seconds"]) for r in partial] == [
        ("50", 0.1),
        ("90", None),
        ("99", None),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "Invalid value for '--nodes': must be from 2 to 65,024, not 0"),
        (["--loss", "1.5"], "Invalid value for '--loss': must be a fraction from 0 up to"),
        (["--crashes", "5", "--nodes", "5"], "Invalid value for '--crashes': must be from 0 to 4"),
        (["--gossip-interval", "abc"], "Invalid value for '--gossip-interval': 'abc' is not a"),
        (["--probe-interval", "0s"], "Invalid value for '--probe-interval': must be more than 0"),
        (["--suspicion-mult", "0"], "Invalid value for '--suspicion-mult': must be at least 1"),
        (["--duration", "-1"], "Invalid value for '--duration': must be more than 0"),
        (["--profile", "mars"], "Invalid value for '--profile'"),
        (["--runs", "0"], "Invalid value for '--runs': must be from 1 to 1,000"),
        (["--partition", "1"], "Invalid value for '--partition': must be a fraction between"),
        (["--nodes", "5", "--slow", "6"], "Invalid value for '--slow': must be from 0 to 5"),
        (["--warmup", "x"], "Invalid value for '--warmup': 'x' is not a duration"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["simulate", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr


def test_durations_take_go_forms_and_plain_seconds() -> None:
    doc = simulate_json(
        "--nodes", "5", "--duration", "1", "--gossip-interval", "100ms", "--probe-interval", "2"
    )
    assert doc["params"]["gossip_interval"] == 0.1
    assert doc["params"]["probe_interval"] == 2.0


@pytest.mark.parametrize(
    "args",
    [["simulate", "--help"], ["simulate", "--nodes", "5", "--duration", "1", "--json"]],
    ids=["help", "run"],
)
def test_simulate_loads_neither_trio_nor_structlog(tmp_path: Path, args: list[str]) -> None:
    """The simulator is pure: neither the help nor a run needs trio (nor rich, structlog)."""
    loaded, proc = heavy_loaded(tmp_path, args)
    heavy = [m for m in loaded if m != "pydantic"]  # Typer's float coercion may use it
    assert heavy == [], f"{' '.join(args)} loaded {heavy}"
    assert proc.stdout.startswith("Usage: serf-trio simulate" if "--help" in args else "{")


# HashiCorp's old convergence simulator, derived from its published formula (the serf.io
# page, _simulator.js): seconds to 50 / 99 / 99.9 / 99.99 % for LAN (0.2 s x 3) unless said.
MODEL_TABLE = [
    ((100, 3, 0.2, 0.0, 0.0), (0.8, 1.4, 1.6, 2.0)),
    ((1_000, 3, 0.2, 0.0, 0.0), (1.0, 1.6, 2.0, 2.2)),
    ((10_000, 3, 0.2, 0.0, 0.0), (1.4, 2.0, 2.2, 2.6)),
    ((1_000, 3, 0.2, 0.1, 0.1), (1.2, 2.0, 2.4, 2.8)),
    ((1_000, 4, 0.5, 0.0, 0.0), (2.0, 3.0, 3.5, 4.5)),
]


@pytest.mark.parametrize(("args", "expected"), MODEL_TABLE)
def test_model_reproduces_the_old_serf_simulator(
    args: tuple[int, int, float, float, float], expected: tuple[float, ...]
) -> None:
    rows = {r["percent"]: r["seconds"] for r in model_percentiles(serf_model_curve(*args))}
    assert tuple(rows[p] for p in ("50", "99", "99.9", "99.99")) == pytest.approx(expected)


def test_simulated_spread_runs_ahead_of_the_model_by_the_phase_it_ignores() -> None:
    """The model counts whole synchronous rounds; real nodes forward on their own phase, half
    a round later on average, so the simulated curve is ahead of it, but not absurdly."""
    doc = simulate_json("--nodes", "100", "--duration", "3", "--runs", "3")
    event = doc["event"]
    sim = {r["percent"]: r["seconds"] for r in event["percentiles"]}
    model = {r["percent"]: r["seconds"] for r in event["model"]}
    for percent in ("50", "90", "99"):
        assert 0.25 * model[percent] <= sim[percent] <= model[percent]


def test_runs_pool_their_samples() -> None:
    doc = simulate_json(
        "--nodes", "20", "--duration", "25", "--crashes", "1", "--runs", "3", "--samples"
    )
    assert doc["params"]["runs"] == 3
    samples = doc["samples"]
    assert samples["event_population"] == 60 == doc["event"]["population"]
    assert len(samples["event_times"]) == doc["event"]["reached"] == 60
    assert samples["event_times"] == sorted(samples["event_times"])
    assert doc["event"]["runs_all_reached"] == 3
    det = doc["detection"]
    assert det["pairs"] == samples["detection_population"] == 3 * 19
    assert len(samples["detection_times"]) == det["detected"]
    assert det["crashed"] is None  # a different node in each run
    assert "samples" not in simulate_json("--nodes", "20", "--duration", "1")
    # Run 1 of the pool is the single run of the same seed: its samples are all in the pool.
    single = simulate_json("--nodes", "20", "--duration", "25", "--crashes", "1", "--samples")[
        "samples"
    ]
    pooled_events = Counter(samples["event_times"])
    pooled_events.subtract(single["event_times"])
    pooled_detections = Counter(samples["detection_times"])
    pooled_detections.subtract(single["detection_times"])
    assert min(pooled_events.values()) >= 0 and min(pooled_detections.values()) >= 0
    assert len(single["event_times"]) == 20


def test_partition_splits_the_sides_and_serf_merges_them_after_the_heal() -> None:
    doc = simulate_json(
        "--nodes", "24", "--partition", "0.25", "--partition-for", "40s", "--duration", "90"
    )
    part = doc["partition"]
    assert part["sizes"] == [6, 18] and part["healed"]
    assert part["pairs"] == 2 * 6 * 18
    # Most cross pairs hold each other dead by the heal, though not all: a node whose probes
    # all fail raises its Lifeguard score and probes up to 8x less often, and the longest
    # suspicion timeout (no confirmations) is 6 x 4 x log10(24) ~ 33 s.
    split = part["split"]
    assert part["pairs"] // 2 <= split["pairs_dead"] <= part["pairs"]
    assert split["max"] <= 40.0
    # Serf's reconnect (every 30 s) or the refutation of a dead message brings them back.
    merged = part["merged"]
    assert merged["pairs_not_back"] == 0 and merged["max"] <= 45.0
    assert doc["false_deaths"] == 0  # cross-partition deaths are not false deaths


def test_partition_with_memberlist_cores_does_not_merge() -> None:
    """memberlist alone never probes a dead node again: without Serf's reconnect the
    sides stay apart (as the real memberlist does)."""
    doc = simulate_json(
        "--memberlist",
        "--nodes",
        "12",
        "--partition",
        "0.5",
        "--partition-for",
        "15s",
        "--duration",
        "40",
    )
    part = doc["partition"]
    assert part["split"]["pairs_dead"] == part["pairs"] == 2 * 6 * 6
    assert part["merged"]["pairs_back"] == 0
    assert part["merged"]["pairs_not_back"] == part["pairs"]


def test_slow_nodes_are_counted_apart_from_false_deaths() -> None:
    """Slow nodes (input handled 0.5-2.5 s late, Lifeguard's case) with an aggressive
    suspicion multiplier get declared dead; those declarations are reported as slow-node
    deaths, not as false deaths of healthy nodes.  The default multiplier spares them."""
    args = ("--nodes", "50", "--slow", "5", "--duration", "60", "--runs", "2")
    aggressive = simulate_json(*args, "--suspicion-mult", "2")
    assert aggressive["params"]["slow"] == 5
    assert aggressive["slow_deaths"] > 0
    assert 0 < aggressive["slow_dead_nodes"] <= 10
    assert aggressive["false_deaths"] == 0
    default = simulate_json(*args)
    assert default["slow_deaths"] < aggressive["slow_deaths"]
    assert default["false_deaths"] == 0


def test_plot_option_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "spread.png"
    result = CliRunner().invoke(
        app,
        ["simulate", "--nodes", "20", "--duration", "25", "--crashes", "1", "--plot", str(png)],
    )
    assert result.exit_code == 0, result.output
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"plot                  {png}" in result.stdout


@pytest.mark.slow
def test_detection_at_100_nodes_with_1_percent_loss_matches_memberlist() -> None:
    """The published real-socket figures for memberlist (100 nodes, 1 % loss, 2 ms delay,
    one kill -9 per run, 30 runs): p50 9.86 s, p99 11.98 s, no false deaths.  The p50 is a
    property of the protocol (first probe of the dead node ~1 s, the failed round 1 s, the
    8 s suspicion minimum once two others confirm); over 100 runs it must not be slower.
    The p99 is the tail of the first probe (the earliest of 99 uniform probe times, ~Exp(1
    s)): 100 runs see ~4.6 s there where 30 runs see ~3 s, so the bound is the formula's."""
    doc = simulate_json(
        "--memberlist",
        "--nodes",
        "100",
        "--loss",
        "0.01",
        "--latency",
        "0.002",
        "--crashes",
        "1",
        "--duration",
        "30",
        "--runs",
        "100",
    )
    det = doc["detection"]
    assert det["undetected"] == 0 and doc["false_deaths"] == 0
    assert det["p50"] <= 9.9
    suspicion_min = doc["params"]["suspicion_timeout_min"]
    # Exp(1 s) first probe: its 99th percentile is ln(100) s; then the failed round, the
    # suspicion minimum and a second for the confirmations and the spread.
    assert det["p99"] <= math.log(100) + 1.0 + suspicion_min + 1.0
