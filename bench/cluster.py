"""Cluster behaviour: serf-trio vs HashiCorp serf, N agents each, the same scenario, one run.

For each ``--n`` and each implementation, start N agents on 127.0.0.1 (LAN profile, the default
of both), each with an event handler script for user events and queries, then measure in order:

1. join convergence: the seed is started and waited for, the other N-1 agents are started at
   once with ``--join`` (serf: ``-join``) to it; time from the last spawn until every agent
   lists N alive members;
2. user event -> last handler: one user event (``coalesce=false``) sent over RPC to the seed;
   time from the send until the handler has run on all N agents (``--reps`` times, median);
3. dissemination: ``--events`` user events, each with a unique name, one every ``--spacing``
   seconds, sent round-robin through the agents; per event the time from its send to its
   handler run on the LAST node.  After the last send, stragglers are waited for up to
   ``--straggler-wait`` seconds (a node that missed the gossip gets the event from the next
   push/pull, every 30 s in the LAN profile); events still not at all N nodes are counted;
4. query -> all N responses: a query over RPC to the seed, every agent's handler answers it;
   time from the request until N distinct responses (``--reps`` times, median);
5. leave seen by all: agent N-1 leaves gracefully (RPC ``leave``); time from the request until
   every other agent lists it ``left``;
6. replacement rejoined: agent N-2 is SIGKILLed and at once a fresh agent with the same name,
   port and RPC port is started with ``--join`` to the seed and the tag ``gen=2``; time from
   its exec until every other running agent lists it alive WITH the new tag (the old instance
   was still listed alive, so the tag is what shows the new one);
7. failure detection: agent N-3 is SIGKILLed; time until every survivor lists it ``failed``.

    python bench/cluster.py --n 5 16 --events 100 --json out.json

The handler (``/bin/sh``) appends ``$(date +%s.%N) $SERF_EVENT $SERF_USER_EVENT
$SERF_SELF_NAME`` to a per-node file for user events and prints the node name for queries
(both agents send a query handler's stdout as its response).  Handler timestamps are wall clock,
and so are the send timestamps (``time.time()``).  Member lists are polled over one kept RPC
connection per agent with the project's in-process client (``serf_trio.rpc.client``, TCP for
both implementations), ``members-filtered`` by name where one member is watched; only agents
that have not yet shown the awaited state are polled, every ``--poll`` seconds (default
0.02 s, 0.003 s x N for large N, so polling does not load the agents), so member-list times
are precise to about that step.

Python agents run with a bytecode cache in the run's temporary directory
(``PYTHONPYCACHEPREFIX``, filled by the seed), as an installed package has its ``.pyc`` files.
Every agent runs in its own process group; every group is SIGKILLed at the end, also on Ctrl-C
or SIGTERM.  Every wait is bounded.  Ratios are serf-trio / serf (below 1.0: serf-trio faster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from _common import (
    HOST,
    IMPLS,
    SERF,
    SERF_TRIO,
    agent_env,
    binaries_present,
    file_tail,
    free_port,
    impls,
    interrupt_on_signals,
    kill_group,
    percentile,
    spawn_group,
)

from serf_trio.rpc.api import QueryParams, RpcMember
from serf_trio.rpc.client import RpcClient, RpcError

RPC_TIMEOUT = 3.0  # one RPC call (members, event)
SEED_READY = 30.0  # seconds for the seed to answer RPC
JOIN_LIMIT = 120.0
EVENT_LIMIT = 15.0  # one user event to reach every handler
QUERY_LIMIT = 20.0
LEAVE_LIMIT = 30.0
REPLACE_LIMIT = 60.0
FAIL_LIMIT = 90.0
LATE = 5.0  # an event whose last handler ran later than this is counted as late
HANDLER = """#!/bin/sh
# bench/cluster.py: log user events with a wall-clock stamp; answer queries with the node name.
out="{dir}/$SERF_SELF_NAME.events"
case "$SERF_EVENT" in
user) echo "$(date +%s.%N) $SERF_EVENT $SERF_USER_EVENT $SERF_SELF_NAME" >> "$out" ;;
query) echo "$SERF_SELF_NAME" ;;
esac
"""

T = TypeVar("T")


# -- agents -------------------------------------------------------------------------------------


@dataclass
class Agent:
    name: str
    port: int
    rpc: str  # host:port of its TCP RPC
    proc: subprocess.Popen[bytes]
    log: Path
    conn: RpcClient | None = None

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 3) -> str:
        return file_tail(self.log, lines, " | ")


def serf_argv(
    name: str, port: int, rpc: str, workdir: Path, handler: Path, join: str | None,
    tags: dict[str, str],
) -> list[str]:  # fmt: skip
    cmd = [
        SERF, "agent", f"-node={name}", f"-bind={HOST}:{port}", f"-rpc-addr={rpc}",
        "-log-level=warn", f"-event-handler=user,query={handler}",
    ]  # fmt: skip
    if join:
        cmd.append(f"-join={join}")
    cmd += [f"-tag={k}={v}" for k, v in tags.items()]
    return cmd


def trio_argv(
    name: str, port: int, rpc: str, workdir: Path, handler: Path, join: str | None,
    tags: dict[str, str],
) -> list[str]:  # fmt: skip
    cmd = [
        str(SERF_TRIO), "agent", "--node", name, "--bind", f"{HOST}:{port}", "--rpc-addr", rpc,
        # Without --rpc-socket every agent would take the same per-user default socket.
        "--rpc-socket", str(workdir / f"{name}.sock"), "--log-level", "warn",
        "--event-handler", f"user,query={handler}",
    ]  # fmt: skip
    if join:
        cmd += ["--join", join]
    for k, v in tags.items():
        cmd += ["--tag", f"{k}={v}"]
    return cmd


ARGV: dict[str, Callable[..., list[str]]] = {"serf": serf_argv, "serf-trio": trio_argv}


class Cluster:
    """N agents of one implementation in ``workdir``, observed over RPC."""

    def __init__(self, impl: str, n: int, workdir: Path) -> None:
        self.impl = impl
        self.n = n
        self.workdir = workdir
        self.env = agent_env(workdir)
        self.events_dir = workdir / "events"
        self.events_dir.mkdir()
        self.handler = workdir / "handler.sh"
        self.handler.write_text(HANDLER.format(dir=self.events_dir))
        self.handler.chmod(0o755)
        self.names = [f"n{i:02d}" for i in range(n)]
        self.ports = [free_port() for _ in range(n)]
        self.rpcs = [f"{HOST}:{free_port()}" for _ in range(n)]
        self.agents: list[Agent | None] = [None] * n
        self.procs: list[subprocess.Popen[bytes]] = []  # every process ever started, to kill

    def spawn(self, i: int, join: str | None = None, tags: dict[str, str] | None = None) -> float:
        """Start agent ``i``; returns ``time.monotonic()`` taken just before the exec."""
        log = self.workdir / f"{self.names[i]}.log"
        argv = ARGV[self.impl](
            self.names[i], self.ports[i], self.rpcs[i], self.workdir, self.handler, join,
            tags or {},
        )  # fmt: skip
        t = time.monotonic()
        proc = spawn_group(argv, self.env, self.workdir, log)
        self.procs.append(proc)
        self.agents[i] = Agent(self.names[i], self.ports[i], self.rpcs[i], proc, log)
        return t

    def addr(self, i: int) -> str:
        return f"{HOST}:{self.ports[i]}"

    def agent(self, i: int) -> Agent:
        a = self.agents[i]
        if a is None:
            raise RuntimeError(f"agent {i} is not running")
        return a

    def ask(self, i: int, fn: Callable[[RpcClient], T]) -> tuple[bool, T | None]:
        """``fn`` on agent ``i``'s kept connection: (True, result), or (False, None) on error."""
        a = self.agent(i)
        try:
            if a.conn is None:
                a.conn = RpcClient(addr=a.rpc, timeout=RPC_TIMEOUT)
            return True, fn(a.conn)
        except (OSError, RpcError):
            self.drop_conn(i)
            return False, None

    def drop_conn(self, i: int) -> None:
        a = self.agents[i]
        if a is not None and a.conn is not None:
            a.conn.close()
            a.conn = None

    def send_event(self, i: int, name: str) -> bool:
        """A user event through agent ``i``, not coalesced, empty payload; False on error."""

        def send(k: RpcClient) -> None:
            k.event(name, b"", coalesce=False)

        return self.ask(i, send)[0]

    def members(self, i: int) -> list[RpcMember] | None:
        return self.ask(i, lambda c: c.members())[1]

    def member(self, i: int, name: str) -> RpcMember | None:
        ms = self.ask(i, lambda c: c.members_filtered(name=name))[1]
        return ms[0] if ms else None

    def kill(self, i: int) -> None:
        a = self.agents[i]
        if a is not None:
            self.drop_conn(i)
            kill_group(a.proc)
            self.agents[i] = None

    def close(self) -> None:
        for i in range(self.n):
            self.drop_conn(i)
        for p in self.procs:
            kill_group(p)


def wait_all(
    idx: Iterable[int], ok: Callable[[int], bool], t0: float, limit: float, step: float
) -> tuple[float | None, list[int]]:
    """Poll ``ok(i)`` for every pending ``i`` until all held: (seconds after ``t0`` when the
    last one did, []), or (None, the pending ones) after ``limit``."""
    pending = list(idx)
    last = 0.0
    while True:
        for i in list(pending):
            if ok(i):
                pending.remove(i)
                last = time.monotonic() - t0
        if not pending:
            return last, []
        if time.monotonic() - t0 >= limit:
            return None, pending
        time.sleep(step)


# -- handler output -----------------------------------------------------------------------------


class HandlerLog:
    """The handlers' per-node files, read incrementally: event name -> node -> wall time."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.offsets: dict[Path, int] = {}
        self.seen: dict[str, dict[str, float]] = {}
        self.duplicates = 0  # a handler that ran twice on one node for one event

    def poll(self) -> None:
        for f in self.dir.glob("*.events"):
            off = self.offsets.get(f, 0)
            with f.open("rb") as fh:
                fh.seek(off)
                data = fh.read()
            cut = data.rfind(b"\n") + 1
            self.offsets[f] = off + cut
            for line in data[:cut].decode(errors="replace").splitlines():
                parts = line.split()
                if len(parts) != 4 or parts[1] != "user":
                    continue
                ts, _, event, node = parts
                nodes = self.seen.setdefault(event, {})
                if node in nodes:
                    self.duplicates += 1
                else:
                    nodes[node] = float(ts)

    def complete(self, event: str, n: int) -> bool:
        return len(self.seen.get(event, ())) >= n

    def wait(self, events: list[str], n: int, limit: float, step: float = 0.01) -> bool:
        deadline = time.monotonic() + limit
        while True:
            self.poll()
            if all(self.complete(e, n) for e in events):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(step)

    def last_arrival(self, event: str) -> float:
        return max(self.seen[event].values())


# -- the scenario -------------------------------------------------------------------------------


@dataclass
class Trial:
    impl: str
    n: int
    spawn_s: float = 0.0  # starting the N-1 agents after the seed
    join_s: float | None = None  # from the last spawn
    event_one_s: list[float | None] = field(default_factory=list)
    dissem_s: list[float] = field(default_factory=list)  # events that reached all N
    dissem_sent: int = 0
    dissem_send_errors: int = 0
    dissem_incomplete: int = 0  # events not at all N nodes after the straggler wait
    dissem_missing: int = 0  # (event, node) pairs missing then
    dissem_late: int = 0  # events whose last handler ran more than LATE s after the send
    duplicates: int = 0
    query_s: list[float | None] = field(default_factory=list)
    query_responses: list[int] = field(default_factory=list)
    leave_s: float | None = None
    leaver_exited: bool | None = None
    replace_s: float | None = None
    fail_s: float | None = None
    notes: list[str] = field(default_factory=list)


def note(tr: Trial, text: str) -> None:
    tr.notes.append(text)
    print(f"    note: {text}", flush=True)


def wait_status(
    c: Cluster, idx: Iterable[int], name: str, status: str, t0: float, limit: float, step: float
) -> tuple[float | None, list[int]]:
    """``wait_all`` until every agent in ``idx`` lists ``name`` with ``status``."""
    return wait_all(
        idx, lambda i: (m := c.member(i, name)) is not None and m.status == status, t0, limit, step
    )


def describe_pending(c: Cluster, pending: list[int], name: str | None) -> str:
    out = []
    for i in pending:
        if name is None:
            ms = c.members(i)
            seen = "no answer" if ms is None else f"{sum(m.status == 'alive' for m in ms)} alive"
        else:
            m = c.member(i, name)
            seen = "no answer" if m is None else f"{m.status} {m.tags}"
        out.append(f"{c.names[i]}: {seen}")
    return "; ".join(out)


def run_query(c: Cluster, i: int, n: int) -> tuple[float | None, int]:
    """One query through agent ``i``: (seconds until N distinct responses or None, responses)."""
    out: dict[str, Any] = {"froms": set()}

    def body() -> None:
        with contextlib.suppress(OSError, RpcError), RpcClient(addr=c.agent(i).rpc) as k:
            t0 = time.monotonic()
            for rec in k.query(QueryParams(name="bench", payload=b"")):
                if rec.type == "response":
                    out["froms"].add(rec.from_)
                    if len(out["froms"]) >= n:
                        out["t"] = time.monotonic() - t0
                        return
                elif rec.type == "done":
                    return

    # A daemon thread, so the wait is bounded even if the agent never ends the query; its
    # connection closes when the agents are killed.
    th = threading.Thread(target=body, daemon=True)
    th.start()
    th.join(QUERY_LIMIT)
    return out.get("t"), len(out["froms"])


def trial(impl: str, n: int, args: argparse.Namespace, step: float) -> Trial:
    tr = Trial(impl, n)
    with tempfile.TemporaryDirectory(prefix="cluster-") as tmp:
        c = Cluster(impl, n, Path(tmp))
        try:
            scenario(c, tr, args, step)
        finally:
            for i, a in enumerate(c.agents):
                if a is not None and not a.running():
                    note(tr, f"{a.name} exited unexpectedly: {a.log_tail()!r}")
                    c.agents[i] = None
            c.close()
    return tr


def scenario(c: Cluster, tr: Trial, args: argparse.Namespace, step: float) -> None:
    n = c.n
    label = f"  {c.impl} N={n}:"

    # 1. join convergence
    c.spawn(0)
    seed = c.names[0]
    ready, _ = wait_all([0], lambda i: (m := c.member(i, seed)) is not None
                        and m.status == "alive", time.monotonic(), SEED_READY, 0.05)  # fmt: skip
    if ready is None:
        note(tr, f"seed did not answer RPC within {SEED_READY:.0f} s: {c.agent(0).log_tail()!r}")
        return
    t_storm = time.monotonic()
    for i in range(1, n):
        c.spawn(i, join=c.addr(0))
    t_last = time.monotonic()
    tr.spawn_s = t_last - t_storm

    def converged(i: int) -> bool:
        ms = c.members(i)
        return ms is not None and sum(m.status == "alive" for m in ms) == n

    tr.join_s, pending = wait_all(range(n), converged, t_last, JOIN_LIMIT, step)
    if tr.join_s is None:
        seen = describe_pending(c, pending, None)
        note(tr, f"join did not converge in {JOIN_LIMIT:.0f} s: {seen}")
        return
    print(f"{label} converged {tr.join_s:.2f} s after the last spawn", flush=True)
    log = HandlerLog(c.events_dir)

    # 2. one user event to the last handler
    for r in range(args.reps):
        name = f"one-{r}"
        t = time.time()
        if not c.send_event(0, name):
            note(tr, f"user event {name} not accepted by {seed}")
            tr.event_one_s.append(None)
            continue
        if log.wait([name], n, EVENT_LIMIT):
            tr.event_one_s.append(log.last_arrival(name) - t)
        else:
            tr.event_one_s.append(None)
            note(tr, f"{name} reached {len(log.seen.get(name, ()))}/{n} within {EVENT_LIMIT:.0f} s")
        time.sleep(0.5)
    print(f"{label} user event -> last handler {fmt_list(tr.event_one_s)}", flush=True)

    # 3. dissemination of --events user events
    sent: dict[str, float] = {}
    t0 = time.monotonic()
    for k in range(args.events):
        name = f"ev-{k:04d}"
        delay = t0 + k * args.spacing - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = time.time()
        if c.send_event(k % n, name):
            sent[name] = t
        else:
            tr.dissem_send_errors += 1
    tr.dissem_sent = len(sent)
    log.wait(list(sent), n, args.straggler_wait)
    for name, t in sent.items():
        if log.complete(name, n):
            lat = log.last_arrival(name) - t
            tr.dissem_s.append(lat)
            tr.dissem_late += lat > LATE
        else:
            tr.dissem_incomplete += 1
            tr.dissem_missing += n - len(log.seen.get(name, ()))
    tr.duplicates = log.duplicates
    if tr.dissem_s:
        print(f"{label} {len(sent)} events: median {statistics.median(tr.dissem_s):.3f} s, "
              f"max {max(tr.dissem_s):.3f} s, {tr.dissem_incomplete} never at all N, "
              f"{tr.dissem_late} later than {LATE:g} s", flush=True)  # fmt: skip
    if tr.dissem_send_errors:
        note(tr, f"{tr.dissem_send_errors} events not accepted over RPC")

    # 4. query, all N responses
    for _ in range(args.reps):
        t_q, got = run_query(c, 0, n)
        tr.query_s.append(t_q)
        tr.query_responses.append(got)
        if t_q is None:
            note(tr, f"query: {got}/{n} responses")
        time.sleep(0.5)
    print(f"{label} query -> {n} responses {fmt_list(tr.query_s)}", flush=True)

    # 5. leave seen by all
    leaver = n - 1
    lname = c.names[leaver]
    others = [i for i in range(n) if i != leaver]
    c.drop_conn(leaver)
    result: dict[str, str] = {}

    def leave() -> None:
        try:
            with RpcClient(addr=c.agent(leaver).rpc, timeout=LEAVE_LIMIT) as k:
                k.leave()
        except (OSError, RpcError) as exc:
            result["error"] = str(exc)

    t0 = time.monotonic()
    th = threading.Thread(target=leave, daemon=True)
    th.start()
    tr.leave_s, pending = wait_status(c, others, lname, "left", t0, LEAVE_LIMIT, step)
    if tr.leave_s is None:
        note(tr, f"leave not seen by all: {describe_pending(c, pending, lname)}")
    th.join(LEAVE_LIMIT)
    if "error" in result:
        note(tr, f"leave RPC: {result['error']}")
    try:
        c.agent(leaver).proc.wait(10)
        tr.leaver_exited = True
    except subprocess.TimeoutExpired:
        tr.leaver_exited = False
        note(tr, f"{lname} still running 10 s after its leave")
    c.kill(leaver)
    print(f"{label} leave seen by all {fmt_s(tr.leave_s)}", flush=True)

    # 6. replacement: SIGKILL, then a fresh agent with the same name and ports, a new tag
    victim = n - 2
    vname = c.names[victim]
    c.kill(victim)
    t0 = c.spawn(victim, join=c.addr(0), tags={"gen": "2"})
    others = [i for i in range(n) if i not in (victim, leaver)]

    def replaced(i: int) -> bool:
        m = c.member(i, vname)
        return m is not None and m.status == "alive" and m.tags.get("gen") == "2"

    tr.replace_s, pending = wait_all(others, replaced, t0, REPLACE_LIMIT, step)
    if tr.replace_s is None:
        note(tr, f"replacement not seen by all: {describe_pending(c, pending, vname)}")
    print(f"{label} replacement alive (gen=2) at all {fmt_s(tr.replace_s)}", flush=True)

    # 7. failure detection
    victim = n - 3
    fname = c.names[victim]
    t0 = time.monotonic()
    c.kill(victim)
    survivors = [i for i in range(n) if i not in (victim, leaver)]
    tr.fail_s, pending = wait_status(c, survivors, fname, "failed", t0, FAIL_LIMIT, step)
    if tr.fail_s is None:
        note(tr, f"failure not seen by all: {describe_pending(c, pending, fname)}")
    print(f"{label} failure detected by all {fmt_s(tr.fail_s)}", flush=True)


# -- reporting ----------------------------------------------------------------------------------


def fmt_s(x: float | None) -> str:
    return "timeout" if x is None else f"{x:.3f} s"


def fmt_list(xs: list[float | None]) -> str:
    return ", ".join(fmt_s(x) for x in xs)


def med(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def summary(trials: list[Trial]) -> dict[str, Any]:
    """Medians over the trials (and over the reps within them); dissemination pooled."""
    lat = [x for t in trials for x in t.dissem_s]
    sent = sum(t.dissem_sent for t in trials)
    s: dict[str, Any] = {
        "join": med(t.join_s for t in trials),
        "event_one": med(x for t in trials for x in t.event_one_s),
        "query": med(x for t in trials for x in t.query_s),
        "leave": med(t.leave_s for t in trials),
        "replace": med(t.replace_s for t in trials),
        "fail": med(t.fail_s for t in trials),
        "events_sent": sent,
        "events_incomplete": sum(t.dissem_incomplete for t in trials),
        "events_missing_pairs": sum(t.dissem_missing for t in trials),
        "events_late": sum(t.dissem_late for t in trials),
        "duplicates": sum(t.duplicates for t in trials),
    }
    if lat:
        s |= {
            "ev_median": statistics.median(lat),
            "ev_p90": percentile(lat, 90),
            "ev_p99": percentile(lat, 99),
            "ev_max": max(lat),
        }
        s["ev_p99_over_median"] = s["ev_p99"] / s["ev_median"] if s["ev_median"] > 0 else None
    return s


ROWS = [
    ("join", "join convergence from last spawn"),
    ("event_one", "user event -> last handler"),
    ("ev_median", "events -> last node, median"),
    ("ev_p90", "events -> last node, p90"),
    ("ev_p99", "events -> last node, p99"),
    ("ev_max", "events -> last node, max"),
    ("ev_p99_over_median", "events: p99 / median"),
    ("events_incomplete", "events never at all N"),
    ("events_late", f"events later than {LATE:g} s"),
    ("query", "query -> all N responses"),
    ("leave", "leave seen by all"),
    ("replace", "replacement alive (new tag) at all"),
    ("fail", "failure detected by all"),
]


def cell(key: str, s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    v = s.get(key)
    if key in ("events_incomplete", "events_late"):
        return f"{v}/{s['events_sent']}"
    if key == "ev_p99_over_median":
        return "-" if v is None else f"{v:.1f}"
    return "-" if v is None and key.startswith("ev_") else fmt_s(v)


def table(n: int, sums: dict[str, dict[str, Any]], trials: int, args: argparse.Namespace,
          step: float) -> None:  # fmt: skip
    print(
        f"\nN={n}: {trials} trial(s); single event and query: median of {args.reps}; "
        f"{args.events} events {args.spacing:g} s apart, stragglers waited for up to "
        f"{args.straggler_wait:g} s; member lists polled every {step:.3f} s"
    )
    a, b = sums.get("serf"), sums.get("serf-trio")
    print(f"{'metric':36} {'serf':>10} {'serf-trio':>10} {'ratio':>6}")
    for key, title in ROWS:
        ratio = ""
        if a and b and key not in ("events_incomplete", "events_late"):
            x, y = a.get(key), b.get(key)
            ratio = f"{y / x:.2f}" if x and y is not None else "-"
        print(f"{title:36} {cell(key, a):>10} {cell(key, b):>10} {ratio:>6}")
    for label, s in sums.items():
        if s["events_missing_pairs"] or s["duplicates"]:
            print(f"  {label}: {s['events_missing_pairs']} (event, node) pairs missing after the "
                  f"wait; {s['duplicates']} duplicate handler runs")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[5, 16, 32], help="cluster sizes")
    ap.add_argument("--impl", choices=IMPLS, default="both")
    ap.add_argument("--events", type=int, default=100, help="events for the distribution")
    ap.add_argument("--spacing", type=float, default=0.3, help="seconds between those events")
    ap.add_argument("--straggler-wait", type=float, default=35.0,
                    help="seconds to wait after the last event for late arrivals")  # fmt: skip
    ap.add_argument("--reps", type=int, default=5, help="single events and queries per trial")
    ap.add_argument("--trials", type=int, default=1, help="whole scenario per N and impl")
    ap.add_argument("--poll", type=float, help="member-list poll step (default: by N)")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    args = ap.parse_args()
    if min(args.n) < 4:
        ap.error("--n must be at least 4 (a leaver, a replaced and a failed agent, 2 more)")
    if not binaries_present(args.impl):
        return 1
    interrupt_on_signals()
    out: dict[str, Any] = {}
    try:
        for n in args.n:
            step = args.poll if args.poll else max(0.02, 0.003 * n)
            sums: dict[str, dict[str, Any]] = {}
            out[str(n)] = {}
            for impl in impls(args.impl):
                trials = []
                for t in range(args.trials):
                    time.sleep(2)  # let the machine settle after the previous cluster
                    print(f"{impl} N={n} trial {t + 1}/{args.trials}", flush=True)
                    trials.append(trial(impl, n, args, step))
                sums[impl] = summary(trials)
                out[str(n)][impl] = {"summary": sums[impl], "trials": [asdict(t) for t in trials]}
            table(n, sums, args.trials, args, step)
            if args.json:
                args.json.write_text(json.dumps(out, indent=1))
    except KeyboardInterrupt:
        print("interrupted; every agent was killed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
