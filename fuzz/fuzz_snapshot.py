"""Fuzz the snapshot file reader: ``serf.snapshot.replay`` (what ``agent.snapshot_writer``'s
``load_snapshot`` runs on the file's bytes at start-up).

Owns the rules ``serf.snapshot`` documents for a corrupt or truncated file:

* ``replay`` never raises: bad lines are skipped with a warning, so *any* exception is a
  finding (no error type is allowed);
* the warnings stay bounded (``MAX_WARNINGS`` texts plus one "more bad lines" summary), so a
  garbage file cannot flood the log;
* what it returns is what the file says, in a form the agent can write back: the compacted
  file (``compaction_content``) of the replayed state replays to the same state, without
  warnings (``left`` excepted: compaction drops the ``leave`` record, as Serf's does), and
  ``rejoin_targets`` answers for both settings.
"""

from __future__ import annotations

import sys

from fuzzkit import DATA, Finding, dedupe, instrument, main

with instrument(__name__ == "__main__"):
    from serf_trio.serf.snapshot import (
        MAX_WARNINGS,
        Alive,
        Clock,
        EventClock,
        Leave,
        NotAlive,
        QueryClock,
        Record,
        compaction_content,
        format_addr,
        format_record,
        replay,
    )


def check(data: bytes) -> None:
    state, warnings = replay(data)  # never raises: any exception is a finding
    if len(warnings) > MAX_WARNINGS + 1:
        raise Finding(f"{len(warnings)} warnings (cap {MAX_WARNINGS} + 1)")
    compacted = compaction_content(
        state.alive, state.clock, state.event_clock, state.query_clock
    ).encode("utf-8", "surrogateescape")
    again, problems = replay(compacted)
    if problems or again.alive != state.alive or again.clock != state.clock:
        raise Finding(f"compacted file replays as {again!r} ({problems}), not {state!r}")
    if (again.event_clock, again.query_clock) != (state.event_clock, state.query_clock):
        raise Finding(f"compacted file replays as {again!r}, not {state!r}")
    for rejoin in (False, True):
        state.rejoin_targets(rejoin)


def seeds() -> list[bytes]:
    """The example snapshot under ``tests/data/serf`` plus one line of each record type."""
    records: list[Record] = [
        Alive("n1", format_addr("127.0.0.1", 7946)),
        Alive("with space", format_addr("::1", 7947)),
        NotAlive("n1"),
        Clock(7),
        EventClock(3),
        QueryClock(2**64 - 1),
        Leave(),
    ]
    lines = "".join(format_record(r) for r in records).encode()
    example = (DATA / "serf" / "snapshot-example.txt").read_bytes()
    return dedupe([example, lines, lines + b"# comment\ncoordinate: {}\n", lines + b"alive: trunc"])


if __name__ == "__main__":
    main(check, seeds)
    sys.exit(0)
