"""Snapshots: the writer's file I/O (append, fsync on leave, atomic compaction, bad files) and,
with real processes, an agent that restarts from its snapshot after a SIGKILL or a leave."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from helpers import Procs, broadcasts_drained, free_port, wait_for
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


def stats(sock: Path) -> dict[str, dict[str, str]]:
    with RpcClient(socket_path=str(sock)) as c:
        return c.stats()


def replay_join(sock: Path, port: int) -> int:
    """An RPC join with replay: the push/pull delivers every event in the seed's buffer that is
    newer than this agent's event clock (which only the snapshot restored)."""
    with RpcClient(socket_path=str(sock)) as c:
        return c.join([f"127.0.0.1:{port}"], replay=True)


def send_event(sock: Path, name: str) -> None:
    with RpcClient(socket_path=str(sock)) as c:
        c.event(name, b"", coalesce=False)


@pytest.mark.realnet
@pytest.mark.slow
def test_sigkill_restart_rejoins_from_snapshot_and_replays_nothing(
    tmp_path: Path, procs: Procs
) -> None:
    """A SIGKILLed agent and, later, one that left gracefully restart from their snapshot and
    run no old event again, although a join with replay hands them every old event.

    After the SIGKILL the snapshot rejoin (a join without replay) also raises the event floor
    to a's clock; after the leave there is no rejoin, so the restored event clock is the only
    thing that keeps "first" and "second" from running again (checked: with the snapshot's
    ``event-clock`` lines removed before that restart, both run again and the test fails)."""
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
    send_event(sa, "first")
    wait_until(lambda: runs.exists() and runs.read_text() == "first\n", "handler ran once")
    wait_until(lambda: "event-clock:" in snap.read_text(), "event clock recorded")

    def replays_nothing_then_runs(new: str, ran: str) -> None:
        # The join's push/pull has carried a's whole event buffer to b by the time it returns,
        # and once both queues are drained no gossip of an old event can still arrive.  b's
        # handler runs its events one at a time in arrival order, so an old event delivered
        # again would be written before ``new``.
        assert replay_join(sb, pa) == 1
        wait_until(
            lambda: broadcasts_drained([stats(sa), stats(sb)]), "no broadcast left to gossip"
        )
        send_event(sa, new)
        wait_until(lambda: runs.read_text().endswith(f"{new}\n"), f"{new} runs")
        assert runs.read_text() == ran

    b.send_signal(signal.SIGKILL)
    b.wait(timeout=WAIT)
    # restart without --join: the snapshot's members are rejoined
    b = spawn(procs, tmp_path, "b", *b_args)
    wait_until(lambda: statuses(sb) == {"a": "alive", "b": "alive"}, "b rejoined")
    wait_until(lambda: statuses(sa) == {"a": "alive", "b": "alive"}, "a sees b")
    assert '"snapshot_rejoined"' in (tmp_path / "b.log").read_text()
    replays_nothing_then_runs("second", "first\nsecond\n")

    # Across a graceful leave the snapshot keeps the clocks too (it only stops the rejoin).
    with RpcClient(socket_path=str(sb)) as c:
        c.leave()
    wait_until(lambda: statuses(sa) == {"a": "alive", "b": "left"}, "b left")
    assert b.wait(timeout=WAIT) == 0
    spawn(procs, tmp_path, "b", *b_args)
    wait_until(lambda: statuses(sb) == {"b": "alive"}, "b is up alone (no rejoin after a leave)")
    replays_nothing_then_runs("third", "first\nsecond\nthird\n")
    wait_until(lambda: statuses(sa) == {"a": "alive", "b": "alive"}, "b alive again")
