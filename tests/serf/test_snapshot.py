"""Serf's snapshot file: parse and replay (real file, corrupt and truncated ones), writing."""

from __future__ import annotations

from pathlib import Path

import pytest

from serf_trio.serf.effects import SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from serf_trio.serf.members import SerfMember
from serf_trio.serf.snapshot import (
    MAX_WARNINGS,
    Alive,
    Clock,
    EventClock,
    Leave,
    NotAlive,
    QueryClock,
    SnapshotLog,
    SnapshotState,
    compaction_threshold,
    format_record,
    parse_records,
    replay,
)
from serf_trio.swim.api import Address

REAL = (Path(__file__).parent.parent / "data" / "serf" / "snapshot-example.txt").read_bytes()


def test_real_snapshot_replays() -> None:
    state, warnings = replay(REAL)
    assert warnings == []
    assert state == SnapshotState(
        clock=24,
        event_clock=6,
        query_clock=8,
        alive={"s1": "127.0.0.14:7950", "n1": "127.0.0.11:7946", "n3": "127.0.0.13:7948"},
        left=True,
    )
    # The real session ended with a graceful leave: no rejoin unless asked to.
    assert state.rejoin_targets(rejoin_after_leave=False) == {}
    assert set(state.rejoin_targets(rejoin_after_leave=True)) == {"s1", "n1", "n3"}


def test_real_snapshot_round_trips_through_format() -> None:
    records, _ = parse_records(REAL)
    assert "".join(format_record(r) for r in records).encode() == REAL


def test_not_alive_comments_and_coordinates() -> None:
    data = (
        b"# written by hand\n"
        b"alive: a 10.0.0.1:7946\n"
        b"alive: b c 10.0.0.2:7946\n"  # name is everything before the last space
        b"alive: v6 [::1]:7946\n"
        b"coordinate: {}\n"
        b"not-alive: a\n"
        b"clock: 9\nclock: 4\n"  # the last value wins, as in Serf
    )
    state, warnings = replay(data)
    assert warnings == []
    assert state.alive == {"b c": "10.0.0.2:7946", "v6": "[::1]:7946"}
    assert state.clock == 4
    assert not state.left


def test_alive_after_leave_clears_left() -> None:
    state, _ = replay(b"leave\nalive: a 10.0.0.1:1\n")
    assert not state.left
    assert state.rejoin_targets(False) == {"a": "10.0.0.1:1"}


def test_truncated_tail_is_ignored_with_warning() -> None:
    cut = REAL[: REAL.index(b"event-clock: 6") + len(b"event-cl")]
    state, warnings = replay(cut)
    assert state.alive == {
        "s1": "127.0.0.14:7950",
        "n1": "127.0.0.11:7946",
        "n3": "127.0.0.13:7948",
    }
    assert state.clock == 22 and state.event_clock == 0
    assert len(warnings) == 1 and "truncated" in warnings[0]


@pytest.mark.parametrize(
    "garbage",
    [
        b"clock: -1\n",
        b"clock: 18446744073709551616\n",
        b"event-clock: 1e3\n",
        b"alive: nospace\n",
        b"alive: a 10.0.0.1\n",
        b"alive: a 10.0.0.1:99999\n",
        b"alive: a ::1:7946\n",
        b"not-alive: \n",
        b"\xff\xfe\x00\x00\n",
        b"\x00" * 300 + b"\n",
        b"whatever\n",
    ],
)
def test_corrupt_lines_warn_and_keep_the_rest(garbage: bytes) -> None:
    state, warnings = replay(b"alive: a 10.0.0.1:7946\n" + garbage + b"query-clock: 5\n")
    assert len(warnings) == 1
    assert state.alive == {"a": "10.0.0.1:7946"}
    assert state.query_clock == 5


def test_garbage_file_warnings_are_capped() -> None:
    state, warnings = replay(b"junk\n" * 1000 + bytes(range(256)))
    assert state == SnapshotState()
    assert len(warnings) == MAX_WARNINGS + 1
    assert "more bad lines" in warnings[-1]


def test_empty_file() -> None:
    assert replay(b"") == (SnapshotState(), [])


def _member(name: str, host: str, port: int) -> SerfMember:
    return SerfMember(name, Address(host, port), {}, "alive", 1, 5, 5, 2, 5, 5, 0)


def test_snapshot_log_writes_serf_lines_and_replays_to_same_state() -> None:
    log = SnapshotLog()
    text = log.on_event(
        SerfMemberEvent("member-join", (_member("a", "10.0.0.1", 7946), _member("b", "::1", 1)))
    )
    text += log.on_clock(5)
    text += log.on_clock(5)  # no advance, nothing written
    text += log.on_event(SerfUserEvent("deploy", b"", 3, True))
    text += log.on_event(SerfUserEvent("deploy", b"", 2, True))  # old: ignored
    text += log.on_event(SerfQueryEvent("load", b"", 7, token=1, deadline=0.0))
    text += log.on_event(SerfMemberEvent("member-failed", (_member("a", "10.0.0.1", 7946),)))
    text += log.on_event(SerfMemberEvent("member-update", (_member("b", "::1", 1),)))
    assert text == (
        "alive: a 10.0.0.1:7946\nalive: b [::1]:1\nclock: 4\nevent-clock: 3\n"
        "query-clock: 7\nnot-alive: a\n"
    )
    state, warnings = replay(text.encode())
    assert warnings == []
    assert state == SnapshotState(4, 3, 7, {"b": "[::1]:1"}, False)
    compact = log.compaction()
    assert compact == "alive: b [::1]:1\nclock: 4\nevent-clock: 3\nquery-clock: 7\n"
    assert replay(compact.encode())[0] == state
    leave = log.on_leave(rejoin_after_leave=False)
    assert leave == "leave\n" and log.alive == {}
    assert replay((text + leave).encode())[0].left


def test_snapshot_log_resumes_from_state() -> None:
    log = SnapshotLog(SnapshotState(10, 5, 6, {"a": "10.0.0.1:1"}, False))
    assert log.on_clock(11) == ""
    assert log.on_event(SerfUserEvent("x", b"", 5, False)) == ""
    assert log.needs_compaction(compaction_threshold(1) + 1)
    assert not log.needs_compaction(128 * 1024)
    assert compaction_threshold(1000) == 256_000


def test_record_formats() -> None:
    assert [
        format_record(r)
        for r in (
            Alive("n", "1.2.3.4:5"),
            NotAlive("n"),
            Clock(1),
            EventClock(2),
            QueryClock(3),
            Leave(),
        )
    ] == [
        "alive: n 1.2.3.4:5\n",
        "not-alive: n\n",
        "clock: 1\n",
        "event-clock: 2\n",
        "query-clock: 3\n",
        "leave\n",
    ]
