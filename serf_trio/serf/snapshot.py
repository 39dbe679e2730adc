"""Serf's snapshot file as data: parse, replay, the lines to append, compaction content.

The file (serf ``snapshot.go``, agent ``-snapshot=PATH``) is an append-only text log:

    alive: NAME IP:PORT      member joined (address as Go prints a TCP address, IPv6 in [])
    not-alive: NAME          member left or failed
    clock: N                 member clock minus 1
    event-clock: N           LTime of the latest user event seen
    query-clock: N           LTime of the latest query seen
    leave                    this node left gracefully
    coordinate: ...          obsolete, ignored
    # ...                    comment

Replay rule: ``alive``/``not-alive`` build the set of known nodes (the name is everything before
the *last* space); the last value of each clock wins.  A line without its final newline is an
interrupted write and is skipped, as Serf's line reader does.  Bad lines never raise: they are
skipped with a warning, so a corrupt or truncated file gives a clean (partial) start.

Deviation from Serf, on purpose: Serf's replay of ``leave`` (without ``-rejoin``) forgets the
nodes *and zeroes the clocks*; a restarted node then re-delivers old user events and its new
join intent loses to its old leave intent (it can stay ``leaving`` elsewhere).  Here clocks
always survive (Lamport clocks may only move forward), and ``SnapshotState.left`` tells the
agent whether to rejoin: ``rejoin_targets(rejoin_after_leave)``.

Writing (buffered, off the event loop, atomic compaction) is the agent's job; ``SnapshotLog``
below decides *what* to write, purely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import field

from serf_trio.record import record
from serf_trio.serf.filters import MemberEventLike, QueryEventLike, UserEventLike
from serf_trio.serf.handler_env import member_ip

# Compaction threshold (serf snapshot.go): the file is rewritten once it grows beyond
# max(128 KiB, 2 x 128 bytes x alive nodes).
SNAPSHOT_BYTES_PER_NODE = 128
SNAPSHOT_COMPACTION_THRESHOLD = 2
SNAPSHOT_MIN_COMPACT_SIZE = 128 * 1024
MAX_WARNINGS = 20  # further bad lines are only counted, so a garbage file cannot flood the log


@record
class SnapshotState:
    """The replay result the Serf core starts from.

    ``alive``: name -> ``ip:port`` of nodes last seen alive (leave records ignored, see module
    docstring); ``left``: the last membership record was this node's graceful ``leave``.
    """

    clock: int = 0
    event_clock: int = 0
    query_clock: int = 0
    alive: dict[str, str] = field(default_factory=dict)
    left: bool = False

    def rejoin_targets(self, rejoin_after_leave: bool) -> dict[str, str]:
        """The nodes to rejoin at start: none after a graceful leave unless asked to."""
        if self.left and not rejoin_after_leave:
            return {}
        return dict(self.alive)


# --- records -------------------------------------------------------------------------------


@record
class Alive:
    name: str
    addr: str  # "ip:port", "[v6]:port"


@record
class NotAlive:
    name: str


@record
class Clock:
    value: int


@record
class EventClock:
    value: int


@record
class QueryClock:
    value: int


@record
class Leave:
    pass


Record = Alive | NotAlive | Clock | EventClock | QueryClock | Leave


def format_record(record: Record) -> str:
    """One snapshot line, newline included."""
    match record:
        case Alive(name, addr):
            return f"alive: {name} {addr}\n"
        case NotAlive(name):
            return f"not-alive: {name}\n"
        case Clock(value):
            return f"clock: {value}\n"
        case EventClock(value):
            return f"event-clock: {value}\n"
        case QueryClock(value):
            return f"query-clock: {value}\n"
        case Leave():
            return "leave\n"


def _valid_addr(addr: str) -> bool:
    host, sep, port = addr.rpartition(":")
    # ASCII digits only (str.isdigit also takes "²", which int() refuses), compared without
    # leading zeros (int() refuses strings of more than 4300 digits).
    digits = port.lstrip("0")
    if not sep or not host or not port.isascii() or not port.isdigit() or len(digits) > 5:
        return False
    if int(digits or "0") > 65535:
        return False
    if host.startswith("["):
        return host.endswith("]") and len(host) > 2
    return ":" not in host


_CLOCKS: tuple[tuple[str, type[Clock] | type[EventClock] | type[QueryClock]], ...] = (
    ("clock: ", Clock),
    ("event-clock: ", EventClock),
    ("query-clock: ", QueryClock),
)


def _parse_line(line: str) -> Record | str | None:
    """A record, ``None`` for an ignored line, or a warning text."""
    if line.startswith("alive: "):
        name, sep, addr = line[len("alive: ") :].rpartition(" ")
        if not sep or not name or not _valid_addr(addr):
            return f"bad alive line: {line!r}"
        return Alive(name, addr)
    if line.startswith("not-alive: "):
        name = line[len("not-alive: ") :]
        return NotAlive(name) if name else f"bad not-alive line: {line!r}"
    for prefix, cls in _CLOCKS:
        if line.startswith(prefix):
            text = line[len(prefix) :]
            # Go ParseUint: decimal digits only, within uint64 (leading zeros allowed; they are
            # dropped before int(), which refuses strings of more than 4300 digits).
            digits = text.lstrip("0") or "0"
            if not text.isascii() or not text.isdigit() or len(digits) > 20:
                return f"bad clock value: {line!r}"
            if int(digits) >= 2**64:
                return f"bad clock value: {line!r}"
            return cls(int(digits))
    if line == "leave":
        return Leave()
    if line.startswith("coordinate: ") or line.startswith("#"):
        return None
    return f"unrecognized snapshot line: {line!r}"


def parse_records(data: bytes) -> tuple[list[Record], list[str]]:
    """Every good record in file order, and warnings for what was skipped.  Never raises."""
    records: list[Record] = []
    warnings: list[str] = []
    bad = 0

    def warn(text: str) -> None:
        nonlocal bad
        bad += 1
        if len(warnings) < MAX_WARNINGS:
            warnings.append(text)

    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            warn(f"line {number}: not UTF-8")
            continue
        parsed = _parse_line(line)
        if isinstance(parsed, str):
            warn(f"line {number}: {parsed}")
        elif parsed is not None:
            records.append(parsed)
    if tail:
        warn(f"line {len(lines) + 1}: truncated last line ignored ({len(tail)} bytes)")
    if bad > len(warnings):
        warnings.append(f"{bad - len(warnings)} more bad lines not shown")
    return records, warnings


def replay_records(records: Iterable[Record]) -> SnapshotState:
    """Fold records into the state to start from (module docstring: leave keeps the clocks)."""
    clock = event_clock = query_clock = 0
    alive: dict[str, str] = {}
    left = False
    for entry in records:
        match entry:
            case Alive(name, addr):
                alive[name] = addr
                left = False
            case NotAlive(name):
                alive.pop(name, None)
            case Clock(value):
                clock = value
            case EventClock(value):
                event_clock = value
            case QueryClock(value):
                query_clock = value
            case Leave():
                left = True
    return SnapshotState(clock, event_clock, query_clock, alive, left)


def replay(data: bytes) -> tuple[SnapshotState, list[str]]:
    """Parse and replay a snapshot file's bytes; never raises on bad content."""
    records, warnings = parse_records(data)
    return replay_records(records), warnings


def compaction_content(
    alive: Mapping[str, str], clock: int, event_clock: int, query_clock: int
) -> str:
    """The compacted file: current alive lines, then the three clocks (Serf's ``compact``)."""
    lines = [format_record(Alive(n, a)) for n, a in alive.items()]
    lines += [
        format_record(Clock(clock)),
        format_record(EventClock(event_clock)),
        format_record(QueryClock(query_clock)),
    ]
    return "".join(lines)


def compaction_threshold(alive_count: int) -> int:
    """File size beyond which Serf compacts: max(128 KiB, 2 x 128 bytes x alive nodes)."""
    return max(
        SNAPSHOT_MIN_COMPACT_SIZE,
        SNAPSHOT_COMPACTION_THRESHOLD * SNAPSHOT_BYTES_PER_NODE * alive_count,
    )


def format_addr(host: str, port: int) -> str:
    """An address as Go's ``net.TCPAddr.String()``: ``ip:port``, ``[v6]:port``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SnapshotLog:
    """What the snapshotter appends, decided purely (serf ``snapshot.go`` processing rules).

    Feed it Serf events and clock readings; each method returns the text to append (maybe "").
    ``needs_compaction(file_size)`` / ``compaction()`` give the rewrite rule and content.
    """

    def __init__(self, state: SnapshotState | None = None) -> None:
        st = state or SnapshotState()
        self.alive: dict[str, str] = dict(st.alive)
        self.clock = st.clock
        self.event_clock = st.event_clock
        self.query_clock = st.query_clock

    def on_event(self, event: object) -> str:
        """Lines for a member event, user event or query; "" for anything else."""
        if isinstance(event, QueryEventLike):
            if event.ltime <= self.query_clock:
                return ""
            self.query_clock = event.ltime
            return format_record(QueryClock(event.ltime))
        if isinstance(event, MemberEventLike):
            out: list[str] = []
            if event.kind == "member-join":
                for m in event.members:
                    port = getattr(getattr(m, "addr", None), "port", getattr(m, "port", None))
                    if not isinstance(port, int):
                        continue
                    addr = format_addr(member_ip(m), port)
                    self.alive[m.name] = addr
                    out.append(format_record(Alive(m.name, addr)))
            elif event.kind in ("member-leave", "member-failed"):
                for m in event.members:
                    self.alive.pop(m.name, None)
                    out.append(format_record(NotAlive(m.name)))
            return "".join(out)
        if isinstance(event, UserEventLike):
            if event.ltime <= self.event_clock:
                return ""
            self.event_clock = event.ltime
            return format_record(EventClock(event.ltime))
        return ""

    def on_clock(self, member_clock_time: int) -> str:
        """Record ``clock - 1`` if it advanced (after member events and every 500 ms)."""
        last_seen = member_clock_time - 1
        if last_seen <= self.clock:
            return ""
        self.clock = last_seen
        return format_record(Clock(last_seen))

    def on_leave(self, rejoin_after_leave: bool) -> str:
        """This node leaves gracefully; Serf forgets the nodes unless it will rejoin."""
        if not rejoin_after_leave:
            self.alive.clear()
        return format_record(Leave())

    def needs_compaction(self, file_size: int) -> bool:
        return file_size > compaction_threshold(len(self.alive))

    def compaction(self) -> str:
        return compaction_content(self.alive, self.clock, self.event_clock, self.query_clock)
