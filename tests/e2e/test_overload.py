"""An event flood into a cluster with slow handlers: nothing is lost without being counted.

Runs ``bench/overload.py`` (serf-trio only, short): 500 user events a second for 8 s, then
queries, into 3 agents whose handlers take 50 ms, while a fourth agent joins and leaves.  Every
agent stays up and bounded in memory, marks nobody failed, runs ``member-join`` and
``member-leave`` for the fourth agent (member events are never dropped), and accounts for every
user event and query it received (run by the handler, dropped at a counted place, or still
queued) and for every one it did not (dropped from the sender's full queue or still in it, or
dropped as too old on arrival).
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
RSS_BOUND_MIB = 120  # agent ~40 MiB; queues are bounded by count (pipeline 8192, handler 128)
IN_FLIGHT = 2  # an event the handler is running, one between the pipeline and the handler


def test_a_flood_is_delivered_or_counted_and_member_events_all_arrive(tmp_path: Path) -> None:
    out = tmp_path / "overload.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERF_")}
    argv = [sys.executable, str(BENCH / "overload.py"), "--impl", "serf-trio", "--agents", "3",
            "--rate", "500", "--seconds", "8", "--query-seconds", "4", "--drain", "10",
            "--json", str(out)]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=BENCH, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (res,) = json.loads(out.read_text())
    for phase, sent_key in (("events", "events_sent"), ("queries", "queries_sent")):
        sent = res[sent_key]
        assert sent > 1000, res
        sender = res[phase]["o0"]
        # Never arrived yet: pushed out of the sender's full queue, or still in it (gossip
        # drains 4,096 entries slowly), or arrived too old.
        unsent = sender["sender_queue_dropped"] + sender["queue_now"]
        for name, row in res[phase].items():
            assert row["alive"] and row["member_failed_runs"] == 0, (phase, name, row)
            assert row["member_join_seen"] and row["member_leave_seen"], (phase, name, row)
            assert row["rss_peak_mib"] < RSS_BOUND_MIB, (phase, name, row)
            # What the core received was run, dropped at a counted place or is still queued.
            # (For queries the handler's drop counter, shared by all kinds, also counts user
            # events that arrive late during the query phase: the sum can only come out low.)
            if phase == "events":
                assert 0 <= row["unaccounted"] <= IN_FLIGHT, (phase, name, row)
            else:
                assert row["unaccounted"] <= IN_FLIGHT, (phase, name, row)
            got = row["received_in_core"]
            if name == "o0":  # the sender delivers each of its own events and queries at once
                assert got == sent, (phase, row)
            elif row["packets_dropped_full"] == 0:  # (else whole packets were lost on arrival)
                # Too-old arrivals also count late copies of events delivered before.
                missing = sent - got
                assert missing <= unsent + row["too_old_on_arrival"], (phase, name, row)
