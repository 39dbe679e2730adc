"""The snapshot file on disk: read at start, appended while running, compacted atomically.

``serf_trio.serf.snapshot`` decides *what* the file says (``replay`` at start, ``SnapshotLog``
for the lines to append); this module owns the I/O, and keeps it off the event loop:

* **Start** (``load_snapshot``): the file is read in a worker thread; a missing file is a fresh
  start, an unreadable or corrupt one a warning per problem and a clean (partial) start.  A torn
  last line (a kill inside a write) is cut off before the writer appends (``_open_append``).  The
  agent hands the state to the Serf core *before* the node opens its sockets, so no user event
  at or below the saved event clock is ever delivered again.
* **Running** (``SnapshotWriter``): ``record(event)`` / ``clock(t)`` / ``leave()`` are
  synchronous and never wait.  They compute the text with ``SnapshotLog`` on the event loop and
  queue it on a bounded channel (``CHANNEL_SIZE``); the writer task appends each batch in a
  worker thread and flushes it to the OS (``write`` + ``flush``), so a SIGKILLed agent loses
  nothing it has queued for more than a moment.  Full channel policy: drop the text, count it,
  and compact at the next chance - the in-memory ``SnapshotLog`` is the truth, so a rewrite
  heals any dropped line.
* **Durability**: ``fsync`` after a ``leave`` record and at shutdown (Serf syncs on leave too).
* **Compaction**: when the file grows past ``SnapshotLog.needs_compaction``, its content is
  rewritten from ``SnapshotLog.compaction()`` into a temp file in the same directory, which is
  fsynced and renamed over the file (then the directory is fsynced): a crash leaves either the
  old or the new file, never a mix.  A temp file a killed compaction left behind is removed
  before the next one (``files.remove_stale_temps``: the writer is the file's only writer), so
  kill -9 leaves at most one.  Texts queued before the rewrite are discarded (the rewrite
  already contains them); texts queued after it are appended to the new file in order.

Logs: ``snapshot_warning``, ``snapshot_read_failed``, ``snapshot_write_failed``,
``snapshot_dropped``, ``snapshot_compacted``.  A write error never stops the agent: it is
logged and the writer keeps trying at the next record.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any

import trio

from serf_trio.record import record
from serf_trio.serf.snapshot import SnapshotLog, SnapshotState, replay

from .files import remove_stale_temps

CHANNEL_SIZE = 1024  # queued texts before new ones are dropped (and a compaction is due)
SHUTDOWN_FLUSH_LIMIT = 5.0  # seconds the final flush + fsync may take at shutdown


@record
class SnapshotStatistics:
    """The writer's counters (the agent's ``stats`` section ``snapshot``)."""

    dropped: int  # texts dropped on a full channel (healed by the next compaction)
    write_errors: int
    compactions: int
    size: int  # bytes in the file as last written


@record
class _Sync:
    """Marker: fsync the file once everything queued before it is written."""


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


async def load_snapshot(path: Path, log: Any) -> SnapshotState:
    """Read and replay the snapshot; never raises (problems are logged, start is clean)."""
    try:
        data = await trio.to_thread.run_sync(_read_bytes, path)
    except OSError as exc:
        log.warning("snapshot_read_failed", path=str(path), error=str(exc))
        return SnapshotState()
    state, warnings = replay(data)
    for text in warnings:
        log.warning("snapshot_warning", path=str(path), problem=text)
    log.info(
        "snapshot_loaded",
        path=str(path),
        alive=len(state.alive),
        clock=state.clock,
        event_clock=state.event_clock,
        query_clock=state.query_clock,
        left=state.left,
    )
    return state


def _cut_torn_tail(path: Path) -> None:
    """Cut a last line without its newline off the file (see ``_open_append``)."""
    try:
        f = path.open("r+b")
    except FileNotFoundError:
        return
    with f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos = end
        while pos > 0:  # back to the last newline, 64 KiB at a time (the file is finite)
            start = max(0, pos - 65536)
            f.seek(start)
            cut = f.read(pos - start).rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            pos = start
        f.truncate(0)


def _open_append(path: Path) -> IO[str]:
    """Open for appending.  Rule: a kill inside a write can leave a torn last line (SIGKILL
    stops a write between pages; replay skips such a line); appending after it would glue the
    next record onto it and replay would drop that record too (an ``event-clock`` lost so lets
    old events replay after the next restart), so the torn line is cut off first
    (``bench/crash_safety.py`` found it)."""
    _cut_torn_tail(path)
    return path.open("a", encoding="utf-8")


def _append(f: IO[str], text: str) -> int:
    f.write(text)
    f.flush()
    return f.tell()


def _fsync(f: IO[str]) -> None:
    f.flush()
    os.fsync(f.fileno())


def _rewrite(path: Path, content: str) -> None:
    """Atomically replace ``path`` with ``content`` (temp file, fsync, rename, dir fsync)."""
    directory = path.parent
    remove_stale_temps(directory, f".{path.name}.", ".compact")  # left by a killed compaction
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".compact", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class SnapshotWriter:
    """Appends snapshot records from a task of its own; see the module docstring."""

    def __init__(
        self, path: Path, state: SnapshotState, *, rejoin_after_leave: bool, log: Any
    ) -> None:
        self.path = path
        self.log_state = SnapshotLog(state)
        self.rejoin_after_leave = rejoin_after_leave
        self._log = log
        self._send, self._recv = trio.open_memory_channel[str | _Sync](CHANNEL_SIZE)
        self._file: IO[str] | None = None
        self._size = 0
        self._compact_due = False
        self._unwritten: list[str | _Sync] = []
        self.dropped = 0
        self.write_errors = 0
        self.compactions = 0

    def statistics(self) -> SnapshotStatistics:
        return SnapshotStatistics(self.dropped, self.write_errors, self.compactions, self._size)

    # --- producers (never wait) ---------------------------------------------------------

    def record(self, event: object) -> None:
        """A raw Serf event (member/user/query), before any coalescing."""
        self._queue(self.log_state.on_event(event))

    def clock(self, member_clock_time: int) -> None:
        """The member clock now (called every 500 ms and after member events)."""
        self._queue(self.log_state.on_clock(member_clock_time))

    def leave(self) -> None:
        """This node leaves gracefully: the ``leave`` record, synced to disk."""
        self._queue(self.log_state.on_leave(self.rejoin_after_leave))
        self._queue(_Sync())

    def _queue(self, item: str | _Sync) -> None:
        if not item:
            return
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.dropped += 1
            self._compact_due = True  # the rewrite restores whatever was dropped
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                self._log.warning("snapshot_dropped", total=self.dropped)
        except trio.ClosedResourceError:
            pass  # shutting down

    # --- the writer task ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._open()
        task_status.started()
        try:
            while True:
                first = await self._recv.receive()
                # Kept until written: a cancellation inside the write must not lose them
                # (rewriting a line twice is harmless, replay is idempotent).
                self._unwritten = [first, *self._drain()]
                await self._write_batch(self._unwritten)
                self._unwritten = []
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + SHUTDOWN_FLUSH_LIMIT
                self._send.close()
                await self._write_batch([*self._unwritten, *self._drain(), _Sync()])
                await self._close()

    def _drain(self) -> list[str | _Sync]:
        items: list[str | _Sync] = []
        while True:
            try:
                items.append(self._recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return items

    async def _open(self) -> None:
        try:
            self._file = await trio.to_thread.run_sync(_open_append, self.path)
            self._size = await trio.to_thread.run_sync(self._file.tell)
        except OSError as exc:
            self.write_errors += 1
            self._log.error("snapshot_write_failed", path=str(self.path), error=str(exc))
            self._file = None

    async def _close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                await trio.to_thread.run_sync(f.close)

    async def _write_batch(self, items: list[str | _Sync]) -> None:
        if self._file is None:
            await self._open()
            if self._file is None:
                return
        f = self._file
        text = "".join(i for i in items if isinstance(i, str))
        sync = any(isinstance(i, _Sync) for i in items)
        try:
            if text:
                self._size = await trio.to_thread.run_sync(_append, f, text)
            if sync:
                await trio.to_thread.run_sync(_fsync, f)
        except OSError as exc:
            self.write_errors += 1
            self._compact_due = True
            self._log.error("snapshot_write_failed", path=str(self.path), error=str(exc))
            await self._close()
            return
        if self._compact_due or self.log_state.needs_compaction(self._size):
            await self._compact()

    async def _compact(self) -> None:
        # Everything still queued was computed before now and is already in ``log_state``:
        # writing it after the rewrite could reorder alive/not-alive lines, so drop it.
        self._drain()
        self._unwritten = []
        content = self.log_state.compaction()
        await self._close()
        try:
            await trio.to_thread.run_sync(_rewrite, self.path, content)
        except OSError as exc:
            self.write_errors += 1
            self._log.error("snapshot_write_failed", path=str(self.path), error=str(exc))
            return
        self._compact_due = False
        self.compactions += 1
        self._log.info("snapshot_compacted", path=str(self.path), size=len(content.encode()))
        await self._open()
