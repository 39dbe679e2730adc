"""Crash safety under kill -9 (issue 14, item 3): the CI form of ``bench/crash_safety.py``.

The script owns the harness (a forked writer SIGKILLed at random moments, then the file checked
with the project's own readers; two real agents, one SIGKILLed during user-event traffic and
key rotations and restarted); these tests run it with short counts (about a minute in all) and
assert it found nothing.  The first two tests pin the fixes the harness led to: a rewrite
removes the temp file a killed writer of the same file left behind, so kills cannot pile them
up; a snapshot writer cuts off a torn last line before it appends, so its first record is not
glued onto the torn one and lost.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from serf_trio.agent.config import read_keyring_file
from serf_trio.agent.files import write_keyring_file
from serf_trio.agent.snapshot_writer import _append, _open_append, _rewrite
from serf_trio.serf.snapshot import replay

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "crash_safety.py"
SEED = 14


def _harness() -> ModuleType:
    """``bench/crash_safety.py`` as a module (bench is not a package)."""
    name = "crash_safety"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_rewrites_remove_temp_files_a_killed_writer_left(tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    snapshot = tmp_path / "snapshot"
    left = [
        ".keyring.json.ab_3xy9q",  # mkstemp names of earlier, killed writers
        ".keyring.json.zz00aa11",
        ".snapshot.k2m9_x0p.compact",
    ]
    kept = [".keyring.json.bak", ".snapshot.old", "keyring.json.ab_3xy9q", ".tags.json.ab_3xy9q"]
    for name in left + kept:
        (tmp_path / name).write_text("partial")
    write_keyring_file(keyring, (b"k" * 32,))
    _rewrite(snapshot, "clock: 1\n")
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"keyring.json", "snapshot", *kept}
    assert read_keyring_file(keyring) == [b"k" * 32]


@pytest.mark.parametrize(
    "torn",
    [b"alive: node-1 10.0.0.1:79", b"event-clo", b"x" * 70_000, b""],
    ids=["alive", "clock", "long", "whole"],
)
def test_a_restarted_snapshot_writer_cuts_a_torn_last_line(tmp_path: Path, torn: bytes) -> None:
    path = tmp_path / "snapshot"
    path.write_bytes(b"alive: node-0 10.0.0.0:7946\nevent-clock: 7\n" + torn)
    f = _open_append(path)
    try:
        _append(f, "event-clock: 9\n")
    finally:
        f.close()
    state, warnings = replay(path.read_bytes())
    assert warnings == []
    assert state.event_clock == 9
    assert state.alive == {"node-0": "10.0.0.0:7946"}


def test_the_harness_restart_check_passes_on_a_torn_file(tmp_path: Path) -> None:
    """The harness's restart check passes on a torn file (the writer cuts the tail)."""
    path = tmp_path / "snapshot"
    path.write_bytes(b"clock: 5\nalive: node-1 10.0.0.1:79")
    assert _harness()._restart_appends(path, tmp_path / "copy") == ""


@pytest.mark.slow
def test_keyring_and_snapshot_files_survive_kill_9(tmp_path: Path) -> None:
    cs = _harness()
    for phase in (
        cs.keyring_phase(100, SEED, tmp_path, 0.03),
        cs.snapshot_phase(100, SEED, tmp_path, 0.06),
    ):
        print(phase.line())
        assert phase.failures == [], phase.failures[:5]
        assert phase.kills == 100
        assert phase.kills_in_flight > 0, "no kill fell inside a write"
        assert phase.counters["max_strays"] <= 1


@pytest.mark.realnet
@pytest.mark.slow
def test_agent_killed_during_events_and_key_rotation_restarts_without_replay(
    tmp_path: Path,
) -> None:
    cs = _harness()
    phases = cs.agent_phase(6, SEED, tmp_path, 2.0, time.monotonic() + 75.0)
    for phase in phases:
        print(phase.line())
    assert [f for p in phases for f in p.failures] == []
    events, keys = phases
    assert events.kills == keys.kills == 3
    assert events.counters["handled_by_b"] > 0, "b handled no user event: nothing to replay"
