"""Overload: a flood of user events (then queries) into a cluster whose handlers are slow, and
where every event that was not delivered went.  serf-trio beside HashiCorp serf, one run.

For each implementation: ``--agents`` (5) agents on 127.0.0.1, each with one handler script for
every event that takes ``--handler-ms`` (50 ms) for user events and queries and logs what it
ran.  Then, over one RPC connection to agent 0 (pipelined, a thread draining the answers):

1. ``--rate`` (1,000) user events a second, each with its own name and ``coalesce=false``, for
   ``--seconds`` (60).  A third of the way in a sixth agent joins; two thirds in it leaves
   gracefully.  After the flood, ``--drain`` (15) seconds for queues to empty.
2. The same rate of queries (no ack, 1 s timeout) for ``--query-seconds`` (30), then a drain.

Reported per implementation: events sent; per agent the handler runs (from the handler's log),
whether it ran ``member-join`` and ``member-leave`` for the sixth agent (member events must
all be delivered), member-failed runs (must be 0), the agent's peak RSS; and for serf-trio the
counters of every place an event can drop (RPC ``stats``): the sender's full broadcast queue
(``serf_counters.event_queue_dropped``), arrival as too old for the event window
(``user_events_too_old``), the pipeline's subscription (``pipeline.queue.dropped_user_events``)
and the handler queue (``handlers.dropped``).  ``unaccounted`` is what the agent's counters leave
unexplained of what its core received: received - (handler runs + dropped in the pipeline or at
the handler queue + still waiting there); it should be 0 once the queues have drained.  An
event an agent never received was pushed out of the sender's full queue or dropped on arrival
as too old (a counter that also counts late copies of events delivered before), or is still
in the sender's broadcast queue (``queue_now``: gossip drains thousands of entries slowly).

    python bench/overload.py                       # both implementations, full length
    python bench/overload.py --impl serf-trio --seconds 10 --query-seconds 5 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    HOST,
    SERF,
    SERF_TRIO,
    agent_env,
    binaries_present,
    free_port,
    impls,
    interrupt_on_signals,
    kill_group,
    rss_mib,
    spawn_group,
    wait_for,
)

from serf_trio.rpc import protocol as p
from serf_trio.rpc.client import RpcClient, RpcError

HANDLER = """#!/bin/sh
# bench/overload.py: slow user events and queries, member events logged one line per member.
out="{dir}/$SERF_SELF_NAME.runs"
case "$SERF_EVENT" in
user) sleep {sleep}; echo "user $SERF_USER_EVENT" >> "$out" ;;
query) sleep {sleep}; echo "query $SERF_QUERY_NAME" >> "$out"; echo ok ;;
*) while read -r name rest; do echo "$SERF_EVENT $name" >> "$out"; done ;;
esac
"""


class Agents:
    def __init__(self, impl: str, workdir: Path, handler: Path) -> None:
        self.impl, self.workdir, self.handler = impl, workdir, handler
        self.env = agent_env(workdir)
        self.procs: dict[str, Any] = {}
        self.rpc: dict[str, str] = {}
        self.seed = ""

    def start(self, name: str) -> None:
        port, rpc = free_port(), f"{HOST}:{free_port()}"
        join = [] if not self.seed else [self.seed]
        if self.impl == "serf":
            argv = [SERF, "agent", f"-node={name}", f"-bind={HOST}:{port}", f"-rpc-addr={rpc}",
                    "-log-level=warn", f"-event-handler={self.handler}",
                    *(f"-join={j}" for j in join)]  # fmt: skip
        else:
            argv = [str(SERF_TRIO), "agent", "--node", name, "--bind", f"{HOST}:{port}",
                    "--rpc-addr", rpc, "--rpc-socket", str(self.workdir / f"{name}.sock"),
                    "--log-level", "warn", "--event-handler", str(self.handler)]  # fmt: skip
            for j in join:
                argv += ["--join", j]
        log = self.workdir / f"{name}.log"
        self.procs[name] = spawn_group(argv, self.env, self.workdir, log)
        self.rpc[name] = rpc
        if not self.seed:
            self.seed = f"{HOST}:{port}"
            if wait_for(lambda: self.call(name, lambda c: c.members()) is not None, 30) is None:
                raise RuntimeError(f"{self.impl}: the seed never answered RPC")

    def call(self, name: str, fn: Any) -> Any:
        with contextlib.suppress(OSError, RpcError), RpcClient(addr=self.rpc[name], timeout=5) as c:
            return fn(c)
        return None

    def alive(self, name: str) -> int:
        ms = self.call(name, lambda c: c.members())
        return sum(1 for m in ms or () if m.status == "alive")

    def close(self) -> None:
        for proc in self.procs.values():
            kill_group(proc)


def flood(
    rpc: str, kind: str, rate: float, seconds: float, on_tick: Any
) -> tuple[int, float | None]:
    """Send ``rate`` requests a second for ``seconds`` on one pipelined connection; a thread
    drains the answers.  Returns how many were sent, and when (seconds in) the agent stopped
    reading them for 10 s, if it did (the flood then ends there)."""
    host, port = rpc.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    stop = threading.Event()

    def drain() -> None:
        sock.settimeout(0.5)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                if not sock.recv(1 << 20):
                    return

    reader = threading.Thread(target=drain, daemon=True)
    sock.sendall(p.encode_request(p.HANDSHAKE, 0, {"Version": p.IPC_VERSION}))
    reader.start()
    sent = 0
    stalled: float | None = None
    t0 = time.monotonic()
    try:
        while (elapsed := time.monotonic() - t0) < seconds:
            on_tick(elapsed)
            due = int(elapsed * rate) + 1
            batch = b""
            while sent < due:
                sent += 1
                if kind == "user":
                    body = {"Name": f"e{sent}", "Payload": b"", "Coalesce": False}
                    batch += p.encode_request(p.EVENT, sent, body)
                else:
                    body = {"FilterNodes": [], "FilterTags": {}, "RequestAck": False,
                            "Timeout": 10**9, "Name": f"q{sent}", "Payload": b"",
                            "RelayFactor": 0}  # fmt: skip
                    batch += p.encode_request(p.QUERY, sent, body)
            try:
                sock.sendall(batch)
            except OSError:  # TimeoutError included: the agent stopped reading requests
                stalled = round(time.monotonic() - t0 - 10, 1)
                break
            time.sleep(0.01)
    finally:
        stop.set()
        reader.join(5)
        sock.close()
    return sent, stalled


def runs_of(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def run_impl(impl: str, args: argparse.Namespace) -> dict[str, Any]:
    # Handler scripts the agents started may still write for a moment after the agents die.
    with tempfile.TemporaryDirectory(prefix="serf-trio-overload-", ignore_cleanup_errors=True) as d:
        workdir = Path(d)
        handler = workdir / "handler.sh"
        handler.write_text(HANDLER.format(dir=workdir, sleep=args.handler_ms / 1000))
        handler.chmod(0o755)
        a = Agents(impl, workdir, handler)
        names = [f"o{i}" for i in range(args.agents)]
        try:
            for name in names:
                a.start(name)
            if wait_for(lambda: a.alive(names[0]) == len(names), 60) is None:
                raise RuntimeError(f"{impl}: no convergence")
            peak: dict[str, float] = {}
            rss0 = {n: rss_mib(a.procs[n].pid) for n in names}
            state = {"joined": False, "left": False, "next_rss": 0.0}

            def tick(elapsed: float) -> None:
                if elapsed >= state["next_rss"]:
                    state["next_rss"] = elapsed + 2.0
                    for n in names:
                        r = rss_mib(a.procs[n].pid) or 0.0
                        peak[n] = max(peak.get(n, 0.0), r)
                if not state["joined"] and elapsed > args.seconds / 3:
                    state["joined"] = True
                    a.start("joiner")
                if state["joined"] and not state["left"] and elapsed > 2 * args.seconds / 3:
                    state["left"] = True
                    threading.Thread(target=a.call, args=("joiner", lambda c: c.leave()),
                                     daemon=True).start()  # fmt: skip

            result: dict[str, Any] = {"impl": impl, "agents": args.agents}
            sent, stalled = flood(a.rpc[names[0]], "user", args.rate, args.seconds, tick)
            result["events_sent"], result["events_rpc_stalled_after_s"] = sent, stalled
            time.sleep(args.drain)
            result["events"] = collect(a, names, workdir, "user", peak, rss0)
            if args.query_seconds > 0:
                state["joined"] = state["left"] = True
                sent, stalled = flood(a.rpc[names[0]], "query", args.rate, args.query_seconds, tick)
                result["queries_sent"], result["queries_rpc_stalled_after_s"] = sent, stalled
                time.sleep(args.drain)
                before = {n: r.get("handler_dropped_total", 0) for n, r in result["events"].items()}
                result["queries"] = collect(a, names, workdir, "query", peak, rss0, before)
            return result
        finally:
            a.close()


def collect(
    a: Agents, names: list[str], workdir: Path, kind: str, peak: dict[str, float],
    rss0: dict[str, float | None], before: dict[str, int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Per agent: what its handler ran, what it saw of the joiner, its memory, and (serf-trio)
    the drop counters for ``kind``; ``before`` holds the handler drops of an earlier phase."""
    per: dict[str, Any] = {}
    for n in names:
        lines = runs_of(workdir / f"{n}.runs")
        row: dict[str, Any] = {
            "handler_runs": sum(1 for x in lines if x.startswith(kind + " ")),
            "member_join_seen": "member-join joiner" in lines,
            "member_leave_seen": "member-leave joiner" in lines,
            "member_failed_runs": sum(1 for x in lines if x.startswith("member-failed")),
            "joiner_status": next(
                (m.status for m in a.call(n, lambda c: c.members()) or () if m.name == "joiner"),
                None,
            ),
            "rss_start_mib": rss0.get(n),
            "rss_peak_mib": peak.get(n),
            "alive": a.procs[n].poll() is None,
        }
        if a.impl == "serf-trio":
            st = a.call(n, lambda c: c.stats()) or {}
            sc, pipe, hand = (
                st.get("serf_counters", {}),
                st.get("pipeline", {}),
                st.get("handlers", {}),
            )
            if kind == "user":
                row["received_in_core"] = int(sc.get("user_events_received", 0))
                row["too_old_on_arrival"] = int(sc.get("user_events_too_old", 0))
                row["sender_queue_dropped"] = int(sc.get("event_queue_dropped", 0))
                row["queue_now"] = int(st.get("serf", {}).get("event_queue", 0))
                row["pipeline_dropped"] = int(pipe.get("queue.dropped_user_events", 0))
            else:
                row["received_in_core"] = int(sc.get("queries_received", 0))
                row["too_old_on_arrival"] = int(sc.get("queries_too_old", 0))
                row["sender_queue_dropped"] = int(sc.get("query_queue_dropped", 0))
                row["queue_now"] = int(st.get("serf", {}).get("query_queue", 0))
                row["pipeline_dropped"] = int(pipe.get("queue.dropped_queries", 0))
            row["handler_dropped_total"] = int(hand.get("dropped", 0))
            row["handler_dropped"] = row["handler_dropped_total"] - (before or {}).get(n, 0)
            row["handler_queued_now"] = int(hand.get("queued", 0))
            row["pipeline_pending_now"] = int(pipe.get("queue.pending", 0))
            row["unaccounted"] = row["received_in_core"] - (
                row["handler_runs"] + row["handler_dropped"] + row["handler_queued_now"]
                + row["pipeline_dropped"] + row["pipeline_pending_now"]
            )  # fmt: skip
            # Runs the agent counted (every event kind) and those that did not end well.
            row["handler_runs_all_kinds"] = int(hand.get("runs", 0))
            row["handler_failures"] = int(hand.get("failures", 0)) + int(hand.get("timeouts", 0))
            row["packets_dropped_full"] = int(
                st.get("transport", {}).get("packets_dropped_full", 0)
            )
        per[n] = row
    return per


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impl", choices=("serf-trio", "serf", "both"), default="both")
    ap.add_argument("--agents", type=int, default=5)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--query-seconds", type=float, default=30.0)
    ap.add_argument("--handler-ms", type=float, default=50.0)
    ap.add_argument("--drain", type=float, default=15.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not binaries_present(args.impl):
        return 2
    interrupt_on_signals()
    results = [run_impl(impl, args) for impl in impls(args.impl)]
    for r in results:
        print(json.dumps(r, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
