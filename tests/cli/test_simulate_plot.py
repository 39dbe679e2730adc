"""``serf_trio.cli.simulate_plot``: PNGs from synthetic results, thinning, a missing extra."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from serf_trio.cli.simulate_plot import PlotUnavailable, thin_step_curve, write_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_result(
    *,
    nodes: int = 50,
    runs: int = 2,
    event: bool = True,
    crashes: int = 1,
    model: bool = True,
    missed: int = 0,
    seed: int = 1,
) -> dict[str, Any]:
    """A ``simulate --json`` document with pooled samples: ``missed`` deliveries never happen."""
    rng = random.Random(seed)
    event_times: list[float] = []
    if event:
        population = nodes * runs
        event_times = sorted(rng.uniform(0.0, 2.0) for _ in range(population - missed))
    pairs = crashes * (nodes - crashes) * runs
    detection_times = sorted(rng.uniform(2.0, 6.0) for _ in range(pairs))
    curve = [[t / 10, 1 - math.exp(-t / 5)] for t in range(31)] if model and event else None
    detection = None
    if crashes:
        detection = {
            "crashed": [f"n{i + 1}" for i in range(crashes)],
            "pairs": pairs // runs,
            "p50": detection_times[len(detection_times) // 2],
            "p99": detection_times[-1],
            "max": detection_times[-1],
        }
    return {
        "params": {
            "nodes": nodes,
            "profile": "lan",
            "cores": "serf" if event else "memberlist",
            "seed": seed,
            "runs": runs,
            "loss": 0.01,
            "crashes": crashes,
            "gossip_interval": 0.2,
            "gossip_nodes": 3,
            "probe_interval": 1.0,
            "suspicion_mult": 4,
            "retransmit_mult": 4,
        },
        "event": {"percentiles": []} if event else None,
        "detection": detection,
        "samples": {
            "event_times": event_times,
            "event_population": nodes * runs,
            "detection_times": detection_times,
            "detection_population": pairs,
            "model_curve": curve,
        },
    }


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert 10_000 < len(data) < 2_000_000
    assert b"Matplotlib version" not in data  # no Software chunk naming the version


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="event-and-detection"),
        pytest.param({"crashes": 0}, id="event-only"),
        pytest.param({"event": False}, id="detection-only"),
        pytest.param({"crashes": 0, "model": False, "missed": 3}, id="event-not-all-no-model"),
        pytest.param({"nodes": 2, "runs": 1, "crashes": 1}, id="two-nodes-one-run"),
    ],
)
def test_write_plot_writes_a_png(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "simulate.png"
    write_plot(make_result(**kwargs), path)
    assert_png(path)


def test_write_plot_accepts_a_str_path_and_is_repeatable(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = make_result()
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    write_plot(result, str(first))
    write_plot(result, second)
    assert first.read_bytes() == second.read_bytes()


def test_nothing_to_plot_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "simulate.png"
    with pytest.raises(ValueError, match="nothing to plot"):
        write_plot(make_result(event=False, crashes=0), path)
    assert not path.exists()


def test_large_event_curve_plots_fast(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    # 10,000 nodes x 30 runs: the thinning keeps this well under the budget.
    result = make_result(nodes=10_000, runs=30, crashes=0)
    path = tmp_path / "large.png"
    write_plot(make_result(), tmp_path / "warm.png")  # the imports and font cache, once
    started = time.perf_counter()
    write_plot(result, path)
    assert time.perf_counter() - started < 5.0  # ~0.3 s here; generous for slow CI machines
    assert_png(path)


def test_thinning_keeps_the_ends_and_the_exact_tail() -> None:
    rng = random.Random(3)
    times = sorted(rng.expovariate(1.0) for _ in range(300_000))
    population = 300_010  # ten never reached
    xs, fractions = thin_step_curve(times, population, max_points=2_000)
    assert len(xs) == len(fractions) <= 2_000
    assert (xs[0], fractions[0]) == (times[0], 1 / population)
    assert (xs[-1], fractions[-1]) == (times[-1], len(times) / population)
    assert xs == sorted(xs) and fractions == sorted(fractions)
    # The last corners are every step, exactly: one delivery each.
    ranks = [round(f * population) for f in fractions]
    assert ranks[-100:] == list(range(len(times) - 99, len(times) + 1))
    assert xs[-100:] == times[-100:]
    # Every corner is a real one: (times[i], (i + 1) / population).
    assert all(times[r - 1] == x for r, x in zip(ranks, xs, strict=True))


def test_thinning_keeps_short_curves_whole() -> None:
    times = [0.1, 0.2, 0.2, 0.5]
    assert thin_step_curve(times, 5) == (times, [0.2, 0.4, 0.6, 0.8])
    xs, fractions = thin_step_curve([float(i) for i in range(10)], 10, max_points=2)
    assert (xs, fractions) == ([0.0, 9.0], [0.1, 1.0])


def test_thinning_rejects_a_population_smaller_than_the_samples() -> None:
    with pytest.raises(ValueError, match="population"):
        thin_step_curve([0.1, 0.2, 0.3], 2)


def test_missing_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes ``import`` fail even where matplotlib is installed.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = tmp_path / "simulate.png"
    with pytest.raises(PlotUnavailable, match=r"pip install 'serf-trio\[plot\]'") as info:
        write_plot(make_result(), path)
    assert isinstance(info.value, RuntimeError)
    assert not path.exists()


def test_importing_the_module_does_not_import_matplotlib() -> None:
    probe = (
        "import sys, serf_trio.cli.simulate_plot; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.strip() == "[]"
