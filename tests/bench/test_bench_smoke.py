"""The benchmark scripts still run: each one once, at the smallest size, both implementations.

A smoke test, never a speed check: it asserts that a script exits 0 and prints its comparison
table with a value for both implementations, so a change that breaks a benchmark is seen in CI,
not when someone next wants the numbers.  The numbers themselves are for ``bench/README.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realnet,
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("serf") is None, reason="needs the serf binary"),
]


def run(script: str, *args: str, timeout: float = 240) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERF_")}
    r = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCH,
        env=env,
    )
    assert r.returncode == 0, f"{script} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def row(out: str, label: str) -> list[str]:
    """The cells of the table row starting with ``label`` (label words dropped)."""
    for line in out.splitlines():
        if line.startswith(label):
            return line[len(label) :].split()
    raise AssertionError(f"no row {label!r} in:\n{out}")


def test_startup_bench_runs() -> None:
    out = run("startup.py", "--trials", "1")
    cells = row(out, "seed lists it alive")
    assert len(cells) >= 3 and cells[-1] != "-", out  # serf, serf-trio, ratio


def test_cluster_bench_runs() -> None:
    out = run(
        "cluster.py",
        *("--n", "4", "--events", "3", "--spacing", "0.1"),
        *("--straggler-wait", "3", "--reps", "1"),
    )
    for label in ("join convergence from last spawn", "failure detected by all"):
        cells = row(out, label)
        assert len(cells) >= 5 and cells[-1] != "-", (label, out)  # serf, trio, ratio


def test_capacity_bench_runs() -> None:
    out = run("capacity.py", "--n", "4", "--idle", "1", "--impl", "both")
    assert out.count("agents running: 4/4") == 2, out


def test_core_profile_bench_runs() -> None:
    out = run("core_profile.py", "--quick", "--sizes", "16", timeout=120)
    assert "merge" in out and "gossip" in out, out


def test_detect_bench_runs() -> None:
    out = run("detect.py", "--n", "3", "--trials", "1")
    assert "failure detection (all)" in out, out


def test_cli_latency_bench_runs() -> None:
    out = run("cli_latency.py", "--runs", "2")
    assert "serf-trio members -> serf-trio agent" in out, out


def test_sim_throughput_bench_runs() -> None:
    out = run(
        "sim_throughput.py",
        *("--nodes", "20", "--converged", "--warmup", "1", "--seconds", "2"),
    )
    assert "node-seconds/s" in out, out


def test_sim_sweep_bench_runs() -> None:
    out = run("sim_sweep.py", "retransmit", "--nodes", "20", "--runs", "2", "--duration", "3")
    assert "bytes/s per node" in out and row(out, "| 4 |").count("|") == 7, out  # 7 more cells
    out = run("sim_sweep.py", "suspicion", "--nodes", "10", "--runs", "2", "--values", "3,4")
    assert "| 3 |" in out and "| 4 |" in out, out


def test_encryption_bench_runs() -> None:
    out = run("encryption.py", "--n", "2", "--idle", "1", "--rounds", "200")
    assert "secretbox" in out, out


def test_faults_bench_runs(tmp_path: Path) -> None:
    from serf_trio.testing.faults import unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    out = run(
        "faults.py",
        *("--quick", "--impl", "both", "--scenario", "freeze", "--agents", "4"),
        *("--json", str(tmp_path / "out.json")),
    )
    rows = [line for line in out.splitlines() if line.startswith("| SIGSTOP 3 s |")]
    assert [r.split("|")[2].strip() for r in rows] == ["serf", "serf-trio"], out
    assert all(r.split("|")[6].strip() == "0" for r in rows), out  # no false failures
    assert rows[0].split("|")[13].strip() == "-"  # serf has no loop counters
    assert int(rows[1].split("|")[13].split("/")[0]) >= 1  # the thawed agent saw its stall
    assert len(json.loads((tmp_path / "out.json").read_text())) == 2
