"""Snapshots: the writer's file I/O (append, fsync on leave, atomic compaction, bad files) and,
with real processes, a SIGKILLed agent that restarts from its snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from helpers import Procs, free_port, wait_for
from structlog.testing import capture_logs

import serf_trio.serf.snapshot as snapshot_rules
from serf_trio.agent.snapshot_writer import SnapshotWriter, load_snapshot
from serf_trio.rpc.client import ConnectError, RpcClient
from serf_trio.serf.effects import SerfMemberEvent, SerfUserEvent
from serf_trio.serf.members import SerfMember
from serf_trio.serf.snapshot import SnapshotState, replay
from serf_trio.swim.api import Address

WAIT = 20.0


def member(name: str, port: int) -> SerfMember:
    return SerfMember(name, Address("127.0.0.1", port), {}, "alive", 1, 5, 2, 2, 5, 5, 0)


def join(name: str, port: int) -> SerfMemberEvent:
    return SerfMemberEvent("member-join", (member(name, port),))


def test_writer_appends_syncs_and_compacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "snap"
    log = structlog_null()

    async def body() -> None:
        w = SnapshotWriter(path, SnapshotState(), rejoin_after_leave=False, log=log)
        async with trio.open_nursery() as n:
            await n.start(w.run)
            w.record(join("a", 7001))
            w.record(SerfUserEvent("deploy", b"", 7, False))
            w.clock(5)
            await wait_file(lambda: "clock: 4\n" in path.read_text())
            assert path.read_text() == "alive: a 127.0.0.1:7001\nevent-clock: 7\nclock: 4\n"
            # past the threshold the file is rewritten with the current state only
            monkeypatch.setattr(snapshot_rules, "SNAPSHOT_MIN_COMPACT_SIZE", 200)
            for i in range(20):
                w.record(join(f"n{i}", 8000 + i))
                w.record(SerfMemberEvent("member-failed", (member(f"n{i}", 8000 + i),)))
            await wait_file(lambda: w.compactions >= 1)
            w.leave()
            n.cancel_scope.cancel()
        state, warnings = replay(path.read_bytes())
        assert warnings == []
        assert state.event_clock == 7 and state.clock == 4 and state.left
        assert state.rejoin_targets(False) == {}
        assert state.rejoin_targets(True) == {"a": "127.0.0.1:7001"}

    trio.run(body)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".compact")]


def test_bad_snapshot_files_give_a_clean_start(tmp_path: Path) -> None:
    async def body() -> None:
        corrupt = tmp_path / "corrupt"
        corrupt.write_bytes(b"alive: a 127.0.0.1:7001\n\xff\xfe garbage\nevent-clock: 9\nclock: 1")
        with capture_logs() as logs:
            state = await load_snapshot(corrupt, structlog_logger())
            missing = await load_snapshot(tmp_path / "none", structlog_logger())
            unreadable = await load_snapshot(tmp_path, structlog_logger())  # a directory
        assert state.event_clock == 9 and state.alive == {"a": "127.0.0.1:7001"}
        assert state.clock == 0  # the truncated last line is ignored
        problems = [e["problem"] for e in logs if e["event"] == "snapshot_warning"]
        assert len(problems) == 2 and "truncated" in problems[1]
        assert missing == SnapshotState() and unreadable == SnapshotState()
        assert [e["event"] for e in logs].count("snapshot_read_failed") == 1

    trio.run(body)


def structlog_logger() -> object:
    import structlog

    return structlog.get_logger()


def structlog_null() -> object:
    return structlog_logger()


async def wait_file(cond: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not cond():  # noqa: ASYNC110 - the file has no change signal
            await trio.sleep(0.01)


# --- real processes ---------------------------------------------------------------------------


def spawn(procs: Procs, tmp_path: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    argv = [sys.executable, "-m", "serf_trio.agent", f"--node={name}", "--profile=local", *args]
    return procs.start(name, argv, env=env, cwd=tmp_path)


def wait_until(cond: Callable[[], bool], what: str) -> None:
    # OSError / ConnectError: the RPC socket is not there yet
    wait_for(cond, what, WAIT, ignore=(OSError, ConnectError))


def statuses(sock: Path) -> dict[str, str]:
    with RpcClient(socket_path=str(sock)) as c:
        return {m.name: m.status for m in c.members()}


@pytest.mark.realnet
@pytest.mark.slow
def test_sigkill_restart_rejoins_from_snapshot_and_replays_nothing(
    tmp_path: Path, procs: Procs
) -> None:
    pa, pb = free_port(), free_port()
    sa, sb = tmp_path / "a.sock", tmp_path / "b.sock"
    runs = tmp_path / "runs"
    snap = tmp_path / "b.snapshot"
    b_args = (
        f"--bind=127.0.0.1:{pb}",
        f"--rpc-socket={sb}",
        f"--snapshot={snap}",
        f"--event-handler=user=echo $SERF_USER_EVENT >> {runs}",
    )
    spawn(procs, tmp_path, "a", f"--bind=127.0.0.1:{pa}", f"--rpc-socket={sa}")
    wait_until(lambda: statuses(sa) == {"a": "alive"}, "a is up")  # before b's start join
    b = spawn(procs, tmp_path, "b", *b_args, f"--join=127.0.0.1:{pa}")
    wait_until(lambda: statuses(sa) == {"a": "alive", "b": "alive"}, "b joined")
    with RpcClient(socket_path=str(sa)) as c:
        c.event("first", b"", coalesce=False)
    wait_until(lambda: runs.exists() and runs.read_text() == "first\n", "handler ran once")
    wait_until(lambda: "event-clock:" in snap.read_text(), "event clock recorded")

    b.send_signal(signal.SIGKILL)
    b.wait(timeout=WAIT)
    # restart without --join: the snapshot's members are rejoined
    spawn(procs, tmp_path, "b", *b_args)
    wait_until(lambda: statuses(sb) == {"a": "alive", "b": "alive"}, "b rejoined")
    wait_until(lambda: statuses(sa) == {"a": "alive", "b": "alive"}, "a sees b")
    assert '"snapshot_rejoined"' in (tmp_path / "b.log").read_text()
    time.sleep(2.0)  # a push/pull or gossip replay would have run the old event by now
    assert runs.read_text() == "first\n"
    with RpcClient(socket_path=str(sa)) as c:
        c.event("second", b"", coalesce=False)
    wait_until(lambda: runs.read_text() == "first\nsecond\n", "the new event runs")
