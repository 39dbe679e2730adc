"""RPC misuse: how a well-behaved client fares while others abuse the agent's RPC, serf-trio
beside HashiCorp serf, one run.

For each implementation, three agents on 127.0.0.1 (a seed and two joined to it, TCP RPC on
the seed), then one phase per misuse, each ``--seconds`` long.  During every phase a prober
(this process, the project's RPC client) measures:

* ``members`` round trips over one kept connection (p50, p99, max, count, errors);
* fresh clients: every 0.25 s a new connection, handshake and ``members`` (served / tried);
* the agent's RSS before and after the phase, and whether it is still running.

The misuse runs in a child process (``--worker KIND``, trio, raw sockets), so it does not share
the prober's interpreter:

* ``idle``       nothing: the baseline;
* ``clients``    ``--clients`` (200) concurrent connections, each looping handshake-once +
                 ``members``;
* ``garbage``    connections that send 1 KiB of random bytes, in a loop;
* ``oversized``  connections that handshake, then send a 4 MiB ``event`` body, in a loop;
* ``nonreader``  10 ``stream`` and 10 ``monitor`` (debug) subscribers that never read, while
                 another connection sends 200 user events a second;
* ``abandon``    connections that start a ``query`` or a ``stream`` and close at once, in a loop;
* ``churn``      connect, handshake, close, as fast as possible;
* ``hold``       300 connections opened and held without a handshake (serf-trio caps
                 connections at 256 and closes a connection not admitted in 10 s; serf has
                 neither).

    python bench/rpc_misuse.py --seconds 5
    python bench/rpc_misuse.py --impl serf-trio --seconds 2 --json out.json   # (CI smoke)

Ratios are serf-trio / serf of the kept connection's p50 (below 1.0: serf-trio faster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import deque
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
    percentile,
    rss_mib,
    spawn_group,
    wait_for,
)

from serf_trio.rpc import protocol as p
from serf_trio.rpc.client import RpcClient, RpcError

MISUSES = ("idle", "clients", "garbage", "oversized", "nonreader", "abandon", "churn", "hold")
FRESH_EVERY = 0.25
RPC_TIMEOUT = 5.0


# -- the misuse workers (child process) -----------------------------------------------------------


async def _worker(kind: str, host: str, port: int, seconds: float, clients: int) -> dict[str, int]:
    import trio

    counts = {"connections": 0, "requests": 0, "errors": 0}
    end = trio.current_time() + seconds
    rng = random.Random(1)

    async def connect() -> trio.SocketStream:
        counts["connections"] += 1
        return await trio.open_tcp_stream(host, port)

    async def handshake(s: trio.SocketStream, seq: int = 0) -> None:
        await s.send_all(p.encode_request(p.HANDSHAKE, seq, {"Version": p.IPC_VERSION}))

    async def drain(s: trio.SocketStream) -> None:
        with trio.move_on_after(1):
            while await s.receive_some(65536):
                pass

    async def drain_forever(s: trio.SocketStream) -> None:
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            while await s.receive_some(65536):
                pass

    async def looped(body: Any) -> None:
        while trio.current_time() < end:
            try:
                await body()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                counts["errors"] += 1
                await trio.sleep(0.01)

    async def one_client() -> None:
        s = await connect()
        async with s:
            reader = p.FrameReader(p.DEFAULT_MAX_OBJECT)
            pending: deque[Any] = deque()

            async def take(k: int) -> None:  # k answer objects (a header, or header + body)
                while len(pending) < k:
                    data = await s.receive_some(65536)
                    if not data:
                        raise trio.ClosedResourceError("closed by the agent")
                    pending.extend(reader.feed(data))
                for _ in range(k):
                    pending.popleft()

            await handshake(s)
            await take(1)
            seq = 1
            while trio.current_time() < end:
                await s.send_all(p.encode_request("members", seq))
                await take(2)
                counts["requests"] += 1
                seq += 1

    async def garbage() -> None:
        s = await connect()
        async with s:
            await s.send_all(rng.randbytes(1024))
            await drain(s)

    async def oversized() -> None:
        s = await connect()
        async with s:
            await handshake(s)
            blob = p.pack({"Name": "x", "Payload": b"\0" * (4 << 20), "Coalesce": False})
            await s.send_all(p.pack({"Command": p.EVENT, "Seq": 1}) + blob)
            await drain(s)

    async def abandon() -> None:
        s = await connect()
        async with s:
            await handshake(s)
            if rng.random() < 0.5:
                body = {
                    "FilterNodes": [], "FilterTags": {}, "RequestAck": True,
                    "Timeout": 5 * 10**9, "Name": "q", "Payload": b"", "RelayFactor": 0,
                }  # fmt: skip
                await s.send_all(p.encode_request(p.QUERY, 1, body))
            else:
                await s.send_all(p.encode_request(p.STREAM, 1, {"Type": "*"}))
            counts["requests"] += 1

    async def churn() -> None:
        s = await connect()
        async with s:
            await handshake(s)
            await s.receive_some(64)
            counts["requests"] += 1

    async with trio.open_nursery() as nursery:
        if kind == "clients":
            for _ in range(clients):
                nursery.start_soon(looped, one_client)
        elif kind in ("garbage", "oversized", "abandon", "churn"):
            body = {"garbage": garbage, "oversized": oversized, "abandon": abandon,
                    "churn": churn}[kind]  # fmt: skip
            for _ in range(4):
                nursery.start_soon(looped, body)
        elif kind == "nonreader":
            held = []
            for i in range(20):
                s = await connect()
                held.append(s)
                await handshake(s)
                cmd, body = (
                    (p.STREAM, {"Type": "*"}) if i % 2 == 0 else (p.MONITOR, {"LogLevel": "DEBUG"})
                )
                await s.send_all(p.encode_request(cmd, 1, body))
            sender = await connect()
            await handshake(sender)
            nursery.start_soon(drain_forever, sender)  # the sender itself reads its answers
            n = 0
            while trio.current_time() < end:
                n += 1
                ev = {"Name": f"e{n}", "Payload": b"x" * 100, "Coalesce": False}
                await sender.send_all(p.encode_request(p.EVENT, n, ev))
                counts["requests"] += 1
                await trio.sleep(0.005)
            for s in [*held, sender]:
                await s.aclose()
            nursery.cancel_scope.cancel()
        elif kind == "hold":
            held = []
            for _ in range(300):
                try:
                    held.append(await connect())
                except OSError:
                    counts["errors"] += 1
            await trio.sleep(max(0.0, end - trio.current_time()))
            for s in held:
                await s.aclose()
        else:
            await trio.sleep(max(0.0, end - trio.current_time()))
    return counts


def worker_main(args: argparse.Namespace) -> int:
    import trio

    host, port = args.addr.rsplit(":", 1)
    counts = trio.run(_worker, args.worker, host, int(port), args.seconds, args.clients)
    print(json.dumps(counts))
    return 0


# -- the prober and the agents --------------------------------------------------------------------


def agent_argv(
    impl: str, name: str, port: int, rpc: str, workdir: Path, join: str | None
) -> list[str]:
    if impl == "serf":
        cmd = [SERF, "agent", f"-node={name}", f"-bind={HOST}:{port}", f"-rpc-addr={rpc}",
               "-log-level=warn"]  # fmt: skip
        return cmd + ([f"-join={join}"] if join else [])
    cmd = [str(SERF_TRIO), "agent", "--node", name, "--bind", f"{HOST}:{port}", "--rpc-addr", rpc,
           "--rpc-socket", str(workdir / f"{name}.sock"), "--log-level", "warn"]  # fmt: skip
    return cmd + (["--join", join] if join else [])


def phase(impl: str, kind: str, rpc: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    rss0 = rss_mib(pid)
    worker = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--worker",
            kind,
            "--addr",
            rpc,
            "--seconds",
            str(args.seconds),
            "--clients",
            str(args.clients),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    lat: list[float] = []
    errors = fresh_ok = fresh_tried = 0
    kept: RpcClient | None = None
    t_end = time.monotonic() + args.seconds
    next_fresh = time.monotonic()
    try:
        time.sleep(min(0.3, args.seconds / 5))  # let the misuse get going
        while time.monotonic() < t_end:
            try:
                if kept is None:
                    kept = RpcClient(addr=rpc, timeout=RPC_TIMEOUT)
                t0 = time.perf_counter()
                kept.members()
                lat.append(time.perf_counter() - t0)
            except (OSError, RpcError):
                errors += 1
                if kept is not None:
                    kept.close()
                    kept = None
            if time.monotonic() >= next_fresh:
                next_fresh += FRESH_EVERY
                fresh_tried += 1
                with contextlib.suppress(OSError, RpcError), RpcClient(addr=rpc, timeout=2.0) as c:
                    c.members()
                    fresh_ok += 1
            time.sleep(0.01)
        out, _ = worker.communicate(timeout=args.seconds + 30)
    finally:
        if kept is not None:
            kept.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    alive = rss_mib(pid) is not None
    return {
        "impl": impl, "misuse": kind, "p50_ms": percentile(lat, 50) * 1000 if lat else None,
        "p99_ms": percentile(lat, 99) * 1000 if lat else None,
        "max_ms": max(lat) * 1000 if lat else None, "calls": len(lat), "errors": errors,
        "fresh": f"{fresh_ok}/{fresh_tried}", "rss_before": rss0, "rss_after": rss_mib(pid),
        "alive": alive, "worker": json.loads(out.strip().splitlines()[-1]) if out.strip() else {},
    }  # fmt: skip


def run_impl(impl: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="serf-trio-misuse-") as d:
        workdir = Path(d)
        env = agent_env(workdir)
        ports = [free_port() for _ in range(3)]
        rpc = f"{HOST}:{free_port()}"
        procs = []
        try:
            for i, port in enumerate(ports):
                join = None if i == 0 else f"{HOST}:{ports[0]}"
                own_rpc = rpc if i == 0 else f"{HOST}:{free_port()}"
                argv = agent_argv(impl, f"m{i}", port, own_rpc, workdir, join)
                procs.append(spawn_group(argv, env, workdir, workdir / f"m{i}.log"))
                if i == 0 and wait_for(lambda: _answers(rpc), 30) is None:
                    raise RuntimeError(f"{impl}: the seed never answered RPC")
            if wait_for(lambda: _members(rpc) == 3, 30) is None:
                raise RuntimeError(f"{impl}: no 3-member cluster")
            rows = []
            for kind in args.misuse:
                row = phase(impl, kind, rpc, procs[0].pid, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
                if not row["alive"]:
                    break
            return rows
        finally:
            for proc in procs:
                kill_group(proc)


def _answers(rpc: str) -> bool:
    with contextlib.suppress(OSError, RpcError), RpcClient(addr=rpc, timeout=1.0) as c:
        c.members()
        return True
    return False


def _members(rpc: str) -> int:
    with contextlib.suppress(OSError, RpcError), RpcClient(addr=rpc, timeout=1.0) as c:
        return sum(1 for m in c.members() if m.status == "alive")
    return 0


def table(rows: list[dict[str, Any]], misuses: list[str]) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    by = {(r["impl"], r["misuse"]): r for r in rows}
    out = ["| misuse | serf p50 / p99 ms | serf fresh | serf-trio p50 / p99 ms | serf-trio fresh "
           "| serf-trio RSS MiB before -> after | alive | ratio p50 |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for kind in misuses:
        s, t = by.get(("serf", kind)), by.get(("serf-trio", kind))

        def cell(r: dict[str, Any] | None) -> tuple[str, str]:
            if r is None:
                return "-", "-"
            return f"{f(r['p50_ms'])} / {f(r['p99_ms'])}", r["fresh"]

        ratio = "-"
        if s and t and s["p50_ms"] and t["p50_ms"]:
            ratio = f"{t['p50_ms'] / s['p50_ms']:.2f}"
        rss = f"{f(t['rss_before'])} -> {f(t['rss_after'])}" if t else "-"
        alive = " / ".join(str(r["alive"]) for r in (s, t) if r)
        out.append(f"| {kind} | {' | '.join(cell(s))} | {' | '.join(cell(t))} | {rss} | {alive} "
                   f"| {ratio} |")  # fmt: skip
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impl", choices=("serf-trio", "serf", "both"), default="both")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--misuse", default=",".join(MISUSES), help=f"some of {','.join(MISUSES)}")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", choices=MISUSES, help=argparse.SUPPRESS)
    ap.add_argument("--addr", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args)
    args.misuse = args.misuse.split(",")
    if set(args.misuse) - set(MISUSES):
        raise SystemExit(f"unknown misuse: {set(args.misuse) - set(MISUSES)}")
    if not binaries_present(args.impl):
        return 2
    interrupt_on_signals()
    rows: list[dict[str, Any]] = []
    for impl in impls(args.impl):
        rows += run_impl(impl, args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows, args.misuse))
    return 0 if all(r["alive"] for r in rows) else 1


if __name__ == "__main__":
    os.environ.pop("SERF_RPC_ADDR", None)
    sys.exit(main())
