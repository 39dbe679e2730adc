"""RPC misuse against a real agent: only the offending connections suffer.

Runs ``bench/rpc_misuse.py`` (serf-trio only, short phases): 200 concurrent clients, garbage,
oversized requests, subscribers that never read, clients that leave mid-query or mid-stream,
connection churn, and 300 connections held without a handshake.  Through all of it a
well-behaved client keeps its connection answered, every fresh client is served, the agent
stays up and its memory stays under the bound the RPC server's caps give.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.realnet, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "bench"
RSS_BOUND_MIB = 150  # agent baseline ~40 MiB + input buffers < 50 MiB (server.MAX_REQUEST)


def test_misuse_leaves_the_agent_up_and_every_good_client_served(tmp_path: Path) -> None:
    out = tmp_path / "misuse.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERF_")}
    r = subprocess.run(
        [
            sys.executable,
            str(BENCH / "rpc_misuse.py"),
            "--impl",
            "serf-trio",
            "--seconds",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=BENCH,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [row["misuse"] for row in rows] == [
        "idle", "clients", "garbage", "oversized", "nonreader", "abandon", "churn", "hold",
    ]  # fmt: skip
    for row in rows:
        kind = row["misuse"]
        assert row["alive"], kind
        assert row["errors"] == 0 and row["calls"] > 0, row  # the kept connection never failed
        ok, tried = (int(x) for x in row["fresh"].split("/"))
        assert tried > 0 and ok == tried, row  # every fresh client was served
        assert row["rss_after"] < RSS_BOUND_MIB, row
    # The misuse really happened (the worker's own counts).
    by = {row["misuse"]: row["worker"] for row in rows}
    assert by["clients"]["requests"] > 200
    assert by["hold"]["connections"] == 300
    assert by["churn"]["connections"] > 100
