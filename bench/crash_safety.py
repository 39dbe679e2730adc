"""Crash safety under kill -9 (issue 14, item 3): SIGKILL at random moments while the snapshot
compacts and while the keyring file is rewritten; the files must always stay readable, a
restarted agent must not replay a user event it already handled, and its keyring stays intact.

Two levels, each bounded in iterations and in time:

* **file level** (fast, many iterations): a forked child rewrites the keyring file with
  ``write_keyring_file`` (alternating key sets), or appends to a 500-member snapshot and
  compacts it through the agent's own ``snapshot_writer`` functions, restarting each time from
  what the previous child left, as a restarted agent does.  The child notes each operation in a
  progress log (``P`` before, ``D`` once done) and is SIGKILLed after a random delay.  The
  parent then checks: the file parses with the project's reader with no damage but a torn last
  line (an interrupted append, which the reader skips); its content is the previous or the next
  complete version; the clocks never fall below the last completed write; at most one stray
  temp file exists.
* **agent level** (real processes): two ``serf-trio agent`` processes on 127.0.0.1 with a
  keyring file each and snapshots; agent ``a`` stays up and keeps the events alive in gossip
  and push/pull, agent ``b`` (an event handler logs ``$SERF_USER_LTIME $SERF_USER_EVENT``) is
  SIGKILLed at random moments during heavy user-event traffic (its snapshot is padded with
  member churn to just below the compaction threshold first, so the traffic makes it compact)
  or during a key rotation (``install``, ``use``, ``remove`` through ``a``'s RPC), then
  restarted.  Checks: ``b`` starts again; its keyring file reads and is one of the keyrings the
  cluster went through; its snapshot reads; its handler never sees an event name twice.

Kills during a completed write cannot lose data the kernel already has; what a power cut would
lose (unsynced pages) is outside what kill -9 can show.

Run: ``python bench/crash_safety.py [--iterations N] [--seed S] [--level file|agent|both]``;
``tests/agent/test_crash_safety.py`` runs the same code in its short form.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from serf_trio.agent.config import ConfigError, read_keyring_file
from serf_trio.agent.files import write_keyring_file
from serf_trio.agent.snapshot_writer import _append, _open_append, _rewrite
from serf_trio.rpc.client import RpcClient, RpcError
from serf_trio.serf.snapshot import SnapshotLog, compaction_threshold, replay

HOST = "127.0.0.1"
MEMBERS = 500  # the file-level snapshot's cluster size
STRAY_LIMIT = 1  # temp files a writer may leave behind at any moment (the one it was killed in)
CHILD_OPS = 20_000  # operations a file-level child performs at most before it exits by itself
CHILD_SECONDS = 5.0  # and seconds
TORN = "truncated last line ignored"


@dataclass
class PhaseResult:
    """What one phase did and found."""

    name: str
    iterations: int = 0
    kills: int = 0
    kills_in_flight: int = 0  # the child had announced an operation it had not completed
    files_checked: int = 0
    failures: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def fail(self, iteration: int, text: str) -> None:
        self.failures.append(f"{self.name} #{iteration}: {text}")

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.counters.items()))
        return (
            f"{self.name}: iterations={self.iterations} kills={self.kills} "
            f"in_flight={self.kills_in_flight} files_checked={self.files_checked} "
            f"failures={len(self.failures)} {extra} ({self.seconds:.1f} s)"
        )


# --- file level: the forked child ------------------------------------------------------------


def _note(fd: int, text: str) -> None:
    """One progress line; ``write`` to an O_APPEND file survives the writer's SIGKILL."""
    os.write(fd, (text + "\n").encode())


def keyset(seed: int, version: int) -> tuple[bytes, ...]:
    """Version ``version``'s keys: 1 to 3 distinct 32-byte keys (sets alternate in size)."""
    return tuple(
        hashlib.sha256(f"{seed}/{version}/{j}".encode()).digest() for j in range(1 + version % 3)
    )


def _keyring_child(path: Path, progress: int, seed: int, start: int) -> None:
    version = start
    t0 = time.monotonic()
    for _ in range(CHILD_OPS):
        if time.monotonic() - t0 > CHILD_SECONDS:
            return
        version += 1
        _note(progress, f"P {version}")
        write_keyring_file(path, keyset(seed, version))
        _note(progress, f"D {version}")


@dataclass(frozen=True)
class _Member:
    name: str
    addr: _Addr
    port: int


@dataclass(frozen=True)
class _Addr:
    host: str
    port: int


@dataclass(frozen=True)
class _MemberEvent:
    kind: str
    members: tuple[_Member, ...]


@dataclass(frozen=True)
class _UserEvent:
    name: str
    payload: bytes
    ltime: int
    coalesce: bool


def _member(i: int) -> _Member:
    host = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
    return _Member(f"node-{i:04d}.rack-{i % 17:02d}.example.internal", _Addr(host, 7946), 7946)


def _digest(log: SnapshotLog) -> str:
    """The log's state in one progress field: the three clocks and a hash of the alive set."""
    alive = hashlib.sha256(repr(sorted(log.alive.items())).encode()).hexdigest()[:16]
    return f"{log.clock} {log.event_clock} {log.query_clock} {alive}"


def _snapshot_batch(log: SnapshotLog, rng: random.Random) -> str:
    """One batch as the agent's pipeline produces it: user events, member churn, rejoin storms
    (every member again: a large write that spans pages), and the member clock."""
    parts: list[str] = []
    roll = rng.random()
    if roll < 0.7:
        for _ in range(rng.randint(1, 30)):
            parts.append(log.on_event(_UserEvent("deploy", b"", log.event_clock + 1, False)))
    elif roll < 0.9:
        gone = [_member(rng.randrange(MEMBERS)) for _ in range(rng.randint(1, 10))]
        parts.append(log.on_event(_MemberEvent("member-failed", tuple(gone))))
        parts.append(log.on_event(_MemberEvent("member-join", tuple(gone))))
    else:
        parts.append(
            log.on_event(_MemberEvent("member-join", tuple(_member(i) for i in range(MEMBERS))))
        )
    parts.append(log.on_clock(log.clock + 2 + rng.randint(0, 3)))
    return "".join(parts)


def _snapshot_child(path: Path, progress: int, seed: int) -> None:
    """The agent's writer loop (``SnapshotWriter._write_batch`` / ``_compact``) on the module's
    own functions, from what is on disk now, as a restarted agent starts."""
    rng = random.Random(seed)
    data = path.read_bytes() if path.exists() else b""
    state, _ = replay(data)
    log = SnapshotLog(state)
    f = _open_append(path)
    size = f.tell()
    if not log.alive:  # the first start: every member joins
        text = log.on_event(_MemberEvent("member-join", tuple(map(_member, range(MEMBERS)))))
        _note(progress, f"P A {_digest(log)}")
        size = _append(f, text)
        _note(progress, f"D A {_digest(log)}")
    t0 = time.monotonic()
    for _ in range(CHILD_OPS):
        if time.monotonic() - t0 > CHILD_SECONDS:
            return
        text = _snapshot_batch(log, rng)
        _note(progress, f"P A {_digest(log)}")
        size = _append(f, text)
        _note(progress, f"D A {_digest(log)}")
        if log.needs_compaction(size):
            f.close()
            _note(progress, f"P C {_digest(log)}")
            content = log.compaction()
            _rewrite(path, content)
            _note(progress, f"D C {_digest(log)}")
            f = _open_append(path)
            size = f.tell()


def _fork_child(work: Callable[..., None], *args: object) -> int:
    """Run ``work(*args)`` in a forked child that never returns into the caller's code."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            work(*args)
            code = 0
        finally:
            os._exit(code)
    return pid


def _kill_and_reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _strays(directory: Path, keep: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


def _progress_lines(progress_path: Path) -> list[str]:
    lines = progress_path.read_text().splitlines()
    progress_path.write_text("")
    return lines


# --- file level: the parent's checks ---------------------------------------------------------


def keyring_phase(iterations: int, seed: int, workdir: Path, max_delay: float) -> PhaseResult:
    """SIGKILL a child that rewrites the keyring file in a loop, ``iterations`` times."""
    res = PhaseResult("keyring-file")
    rng = random.Random(seed)
    directory = workdir / "keyring"
    directory.mkdir()
    path = directory / "keyring.json"
    progress_path = workdir / "keyring.progress"
    progress_path.write_text("")
    write_keyring_file(path, keyset(seed, 0))
    done = 0
    t0 = time.monotonic()
    for i in range(iterations):
        progress = os.open(progress_path, os.O_WRONLY | os.O_APPEND)
        try:
            start = done
            pid = _fork_child(_keyring_child, path, progress, seed, start)
        finally:
            os.close(progress)
        try:
            time.sleep(rng.uniform(0.0, max_delay))
        finally:
            _kill_and_reap(pid)
        res.iterations += 1
        res.kills += 1
        lines = _progress_lines(progress_path)
        done_versions = [int(x.split()[1]) for x in lines if x.startswith("D ")]
        pending_versions = [int(x.split()[1]) for x in lines if x.startswith("P ")]
        last_done = max(done_versions, default=done)
        pending = max(pending_versions, default=last_done)
        if pending > last_done:
            res.kills_in_flight += 1
        res.count("writes_completed", len(done_versions))
        res.files_checked += 1
        try:
            keys = tuple(read_keyring_file(path))
        except ConfigError as exc:
            res.fail(i, f"unreadable keyring file: {exc}")
            continue
        if keys == keyset(seed, last_done):
            done = last_done
            res.count("found_previous" if pending > last_done else "found_done")
        elif pending > last_done and keys == keyset(seed, pending):
            done = pending
            res.count("found_next")
        else:
            res.fail(i, f"keyring is neither version {last_done} nor {pending}: {keys!r}")
            continue
        if path.stat().st_mode & 0o777 != 0o600:
            res.fail(i, f"keyring file mode {oct(path.stat().st_mode & 0o777)}")
        strays = _strays(directory, path.name)
        res.counters["max_strays"] = max(res.counters.get("max_strays", 0), len(strays))
        if len(strays) > STRAY_LIMIT:
            res.fail(i, f"{len(strays)} temp files left beside the keyring: {strays[:3]}")
    res.counters["final_strays"] = len(_strays(directory, path.name))
    res.seconds = time.monotonic() - t0
    return res


def _at_least(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    return (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]))


def _parse_digest(text: str) -> tuple[tuple[int, int, int], str]:
    c, e, q, alive = text.split()
    return (int(c), int(e), int(q)), alive


def _restart_appends(path: Path, scratch: Path) -> str:
    """What a restarted writer does to the file as the kill left it (a copy): open it for
    appending, append a record; replay must then see that record.  "" or the problem."""
    scratch.write_bytes(path.read_bytes())
    before, _ = replay(scratch.read_bytes())
    mark = before.query_clock + 1_000_000
    f = _open_append(scratch)
    try:
        _append(f, f"query-clock: {mark}\n")
    finally:
        f.close()
    after, warnings = replay(scratch.read_bytes())
    if after.query_clock != mark:
        return f"a record appended after the restart is lost: {warnings[-1:]}"
    return ""


def snapshot_phase(iterations: int, seed: int, workdir: Path, max_delay: float) -> PhaseResult:
    """SIGKILL a child that appends to and compacts a 500-member snapshot, ``iterations``
    times; each child starts from the file the previous one left."""
    res = PhaseResult("snapshot-file")
    rng = random.Random(seed)
    directory = workdir / "snapshot"
    directory.mkdir()
    path = directory / "snapshot"
    progress_path = workdir / "snapshot.progress"
    progress_path.write_text("")
    floor = (0, 0, 0)  # the clocks of the last completed write, and of the last check
    t0 = time.monotonic()
    for i in range(iterations):
        progress = os.open(progress_path, os.O_WRONLY | os.O_APPEND)
        try:
            child_seed = rng.getrandbits(32)
            pid = _fork_child(_snapshot_child, path, progress, child_seed)
        finally:
            os.close(progress)
        try:
            time.sleep(rng.uniform(0.0, max_delay))
        finally:
            _kill_and_reap(pid)
        res.iterations += 1
        res.kills += 1
        lines = _progress_lines(progress_path)
        done = [x for x in lines if x.startswith("D ")]
        last_p = lines[-1] if lines and lines[-1].startswith("P ") else None
        res.count("appends_completed", sum(1 for x in done if x.startswith("D A")))
        res.count("compactions_completed", sum(1 for x in done if x.startswith("D C")))
        if last_p is not None:
            res.kills_in_flight += 1
            res.count("killed_in_compaction" if last_p.startswith("P C") else "killed_in_append")
        res.files_checked += 1
        if not path.exists():
            if done:
                res.fail(i, "the snapshot file is gone")
            continue
        state, warnings = replay(path.read_bytes())
        bad = [w for w in warnings if TORN not in w]
        if bad:
            res.fail(i, f"snapshot damaged: {bad[:3]}")
        if len(warnings) > len(bad):
            res.count("torn_last_line")
        clocks = (state.clock, state.event_clock, state.query_clock)
        log = SnapshotLog(state)
        alive = _digest(log).split()[3]
        if done:
            floor_done, alive_done = _parse_digest(done[-1][4:])
            floor = _at_least(floor, floor_done)
        else:
            alive_done = None
        if any(c < f for c, f in zip(clocks, floor, strict=True)):
            res.fail(i, f"clocks went back: {clocks} below {floor}")
        if last_p is None and alive_done is not None and alive != alive_done:
            res.fail(i, "alive set differs from the last completed write")
        if last_p is not None:
            next_clocks, alive_next = _parse_digest(last_p[4:])
            if any(c > n for c, n in zip(clocks, next_clocks, strict=True)):
                res.fail(i, f"clocks {clocks} beyond the write under way {next_clocks}")
            # A compaction rewrites the state the log already has: old file or new, the same.
            if last_p.startswith("P C") and (clocks != next_clocks or alive != alive_next):
                res.fail(
                    i, f"killed in a compaction: state {clocks} is not the log's {next_clocks}"
                )
        floor = _at_least(floor, clocks)
        problem = _restart_appends(path, workdir / "restart-check")
        if problem:
            res.fail(i, problem)
        strays = _strays(directory, path.name)
        res.counters["max_strays"] = max(res.counters.get("max_strays", 0), len(strays))
        if len(strays) > STRAY_LIMIT:
            res.fail(i, f"{len(strays)} temp files left beside the snapshot: {strays[:3]}")
    res.counters["final_strays"] = len(_strays(directory, path.name))
    res.seconds = time.monotonic() - t0
    return res


# --- agent level -----------------------------------------------------------------------------


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


RingState = tuple[bytes, frozenset[bytes]]  # (primary, every key)


def _ring_state(keys: Sequence[bytes]) -> RingState:
    return keys[0], frozenset(keys)


def _agent_env(workdir: Path) -> dict[str, str]:
    """No inherited RPC settings or systemd socket, bytecode cached in ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERF_")}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def _free_port() -> int:
    """A port free for both TCP and UDP on ``HOST`` right now."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def _poll(cond: Callable[[], bool], limit: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, RpcError):
            if cond():
                return True
        time.sleep(step)
    return False


@dataclass
class _Agent:
    """One agent's files and, while it runs, its process."""

    name: str
    directory: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def sock(self) -> Path:
        return self.directory / "rpc.sock"

    @property
    def keyring(self) -> Path:
        return self.directory / "keyring.json"

    @property
    def snapshot(self) -> Path:
        return self.directory / "snapshot"

    @property
    def handled(self) -> Path:
        return self.directory / "handled.txt"

    @property
    def log(self) -> Path:
        return self.directory / f"agent-{self.starts}.log"

    def start(self, join: int | None) -> None:
        self.starts += 1
        handler = self.directory / "handler.sh"
        argv = [
            sys.executable,
            "-m",
            "serf_trio.agent",
            f"--node={self.name}",
            f"--bind={HOST}:{self.port}",
            "--profile=local",
            f"--rpc-socket={self.sock}",
            f"--keyring-file={self.keyring}",
            f"--snapshot={self.snapshot}",
            f"--event-handler=user={handler}",
            "--log-format=json",
        ]
        if join is not None:
            argv.append(f"--join={HOST}:{join}")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.directory,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the agent's process group (its handlers too) and reap it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def rpc(self, timeout: float = 5.0) -> RpcClient:
        return RpcClient(socket_path=str(self.sock), timeout=timeout)

    def sees_alive(self, names: set[str]) -> bool:
        with self.rpc() as c:
            return names <= {m.name for m in c.members() if m.status == "alive"}

    def tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _write_handler(agent: _Agent) -> None:
    handler = agent.directory / "handler.sh"
    out = str(agent.handled).replace("'", "'\\''")
    handler.write_text(f"#!/bin/sh\necho \"$SERF_USER_LTIME $SERF_USER_EVENT\" >> '{out}'\n")
    handler.chmod(0o755)


def _pad_snapshot(path: Path, rng: random.Random) -> bool:
    """Member churn up to just below the compaction threshold, so the next traffic makes the
    agent compact; False (nothing written) when the last line is torn: the agent's own restart
    must deal with that."""
    data = path.read_bytes() if path.exists() else b""
    if data and not data.endswith(b"\n"):
        return False
    state, _ = replay(data)
    target = compaction_threshold(len(state.alive)) - rng.randint(100, 3000)
    lines: list[str] = []
    size = len(data)
    n = 0
    while size < target:
        pair = f"alive: ghost-{n} 127.0.0.2:7946\nnot-alive: ghost-{n}\n"
        lines.append(pair)
        size += len(pair)
        n += 1
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(lines))
    return True


_TEMP = re.compile(r"\.(keyring\.json\.[a-z0-9_]{8}|snapshot\.[a-z0-9_]{8}\.compact)\Z")


def _rotation(k0: bytes, k1: bytes, seed: int) -> Iterator[tuple[str, bytes]]:
    """Endless rotation rounds that keep ``k0`` and ``k1`` on every keyring and one of them
    primary, so any keyring a killed agent kept still talks to the cluster: install a new extra
    key, switch the primary, remove the previous extra key."""
    previous: bytes | None = None
    for r in range(1_000_000):
        extra = hashlib.sha256(f"{seed}/extra/{r}".encode()).digest()
        yield "install", extra
        yield "use", (k0, k1)[r % 2]
        if previous is not None:
            yield "remove", previous
        else:
            yield "list", k0
        previous = extra


class _Killer:
    """The timer's action: SIGKILL ``b``, noting whether a key operation was under way."""

    def __init__(self, agent: _Agent) -> None:
        self.agent = agent
        self.killed = threading.Event()
        self.in_key_op = threading.Event()
        self.during_key_op = False

    def __call__(self) -> None:
        self.during_key_op = self.in_key_op.is_set()
        self.agent.kill()
        self.killed.set()


def _key_op(agent: _Agent, op: str, key: bytes) -> None:
    """One key operation through ``agent``'s RPC; a member that does not answer (the killed
    one) makes it report an error, which is expected here."""
    with contextlib.suppress(RpcError, OSError), agent.rpc(timeout=10.0) as c:
        if op == "install":
            c.install_key(_b64(key))
        elif op == "use":
            c.use_key(_b64(key))
        elif op == "remove":
            c.remove_key(_b64(key))
        else:
            c.list_keys()


def agent_phase(
    iterations: int, seed: int, workdir: Path, max_delay: float, deadline: float
) -> list[PhaseResult]:
    """Two agents; ``b`` is SIGKILLed ``iterations`` times (alternately during user-event
    traffic and during a key rotation) and restarted.  Stops early at ``deadline``
    (``time.monotonic()``), reported as a failure."""
    events = PhaseResult("agent-events")
    keys = PhaseResult("agent-keys")
    rng = random.Random(seed)
    env = _agent_env(workdir)
    k0 = hashlib.sha256(f"{seed}/k0".encode()).digest()
    k1 = hashlib.sha256(f"{seed}/k1".encode()).digest()
    agents = {}
    for name in ("a", "b"):
        directory = workdir / name
        directory.mkdir()
        agents[name] = _Agent(name, directory, _free_port(), env)
        write_keyring_file(agents[name].keyring, (k0, k1))
        _write_handler(agents[name])
    a, b = agents["a"], agents["b"]
    history: list[RingState] = [_ring_state((k0, k1))]
    rotation = _rotation(k0, k1, seed)
    step = 0  # rotation steps done (three per round)
    sent = 0
    event_clock = 0
    t0 = time.monotonic()
    try:
        a.start(join=None)
        if not _poll(lambda: a.sees_alive({"a"}), 30):
            events.fail(0, f"agent a did not start: {a.tail()}")
            return [events, keys]
        b.start(join=a.port)
        for i in range(iterations):
            res = events if i % 2 == 0 else keys
            if time.monotonic() > deadline:
                res.fail(i, "out of time")
                break
            if not _poll(lambda: b.sees_alive({"a", "b"}) and a.sees_alive({"a", "b"}), 30):
                res.fail(i, f"agent b did not start or join again: {b.tail()}")
                break
            sync_from = _sync_keyring(a, b, history)
            if sync_from is None:
                res.fail(i, f"b's keyring could not be brought to a's: {b.tail()}")
                break
            logged = len(b.log.read_text(errors="replace").splitlines())
            res.iterations += 1
            killer = _Killer(b)
            killed, in_key_op = killer.killed, killer.in_key_op
            timer = threading.Timer(rng.uniform(0.05, max_delay), killer)
            timer.start()
            try:
                stop = time.monotonic() + max_delay + 15.0
                if res is events:
                    with a.rpc() as c:
                        while not killed.is_set() and time.monotonic() < stop:
                            sent += 1
                            c.event(f"ev{sent}", b"", coalesce=False)
                            time.sleep(0.002)
                else:
                    # Finish the round the kill fell in, so a rests with k0/k1 primary.
                    while (not killed.is_set() or step % 3) and time.monotonic() < stop:
                        op, key = next(rotation)
                        in_key_op.set()
                        _key_op(a, op, key)
                        in_key_op.clear()
                        step += 1
                        history.append(_ring_state(read_keyring_file(a.keyring)))
            finally:
                timer.cancel()
                timer.join()
                if not killed.is_set():
                    b.kill()
                    res.fail(i, "b was not killed by the timer")
            res.kills += 1
            res.kills_in_flight += int(killer.during_key_op)
            text = b.log.read_text(errors="replace").splitlines()[logged:]
            if any("snapshot_compacted" in line for line in text):
                res.count("compacted_before_kill")
            event_clock = _check_b(res, i, b, history[sync_from:], event_clock)
            if _pad_snapshot(b.snapshot, rng):
                res.count("snapshot_padded")
            else:
                res.count("torn_tail_left_for_restart")
            b.start(join=None)
        # The last restart: b must come up and must not replay what it handled.
        final = keys if iterations % 2 else events
        if not _poll(lambda: b.sees_alive({"a", "b"}), 30):
            final.fail(iterations, f"agent b did not start after the last kill: {b.tail()}")
        time.sleep(1.0)  # push/pull and gossip bring a's buffered events
        _check_replay(final, iterations, b)
    finally:
        b.kill()
        a.kill()
    events.counters["events_sent"] = sent
    events.counters["handled_by_b"] = len(_handled(b))
    events.seconds = keys.seconds = (time.monotonic() - t0) / 2
    return [events, keys]


def _sync_keyring(a: _Agent, b: _Agent, history: list[RingState]) -> int | None:
    """Bring b's keyring (as its kill left it) to a's through b's RPC; the index into
    ``history`` from which b's keyring must be found at its next kill."""
    want = read_keyring_file(a.keyring)
    have = read_keyring_file(b.keyring)
    if _ring_state(have) != _ring_state(want):
        for key in want:
            if key not in have:
                _key_op(b, "install", key)
        _key_op(b, "use", want[0])
        for key in have:
            if key not in want:
                _key_op(b, "remove", key)
        if not _poll(lambda: _ring_state(read_keyring_file(b.keyring)) == _ring_state(want), 10):
            return None
    return len(history) - 1


def _handled(agent: _Agent) -> list[tuple[int, str]]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in agent.handled.read_text().splitlines():
            ltime, _, name = line.partition(" ")
            if ltime.isdigit() and name:
                out.append((int(ltime), name))
    return out


def _check_replay(res: PhaseResult, i: int, b: _Agent) -> None:
    seen: set[str] = set()
    twice = []
    for _, name in _handled(b):
        if name in seen:
            twice.append(name)
        seen.add(name)
    if twice:
        res.fail(i, f"{len(twice)} user events delivered again after a restart: {twice[:5]}")


def _check_b(
    res: PhaseResult, i: int, b: _Agent, history: Sequence[RingState], event_clock: int
) -> int:
    """b is dead: its files must read, its keyring be one the cluster had, its event clock
    not move back, at most one temp file per file; the event clock read."""
    res.files_checked += 2
    try:
        ring = read_keyring_file(b.keyring)
    except ConfigError as exc:
        res.fail(i, f"b's keyring file unreadable: {exc}")
    else:
        if _ring_state(ring) not in history:
            res.fail(i, f"b's keyring is none the cluster had: {[_b64(k)[:8] for k in ring]}")
        if len(ring[0]) != 32:
            res.fail(i, "b's primary key is not a secretbox key")
    state, warnings = replay(b.snapshot.read_bytes() if b.snapshot.exists() else b"")
    bad = [w for w in warnings if TORN not in w]
    if bad:
        res.fail(i, f"b's snapshot damaged: {bad[:3]}")
    if len(warnings) > len(bad):
        res.count("torn_last_line")
    if state.event_clock < event_clock:
        res.fail(i, f"b's event clock went back: {state.event_clock} < {event_clock}")
    temps = [p.name for p in b.directory.iterdir() if _TEMP.search(p.name)]
    if len(temps) > 2 * STRAY_LIMIT:
        res.fail(i, f"temp files pile up beside b's files: {temps[:4]}")
    _check_replay(res, i, b)
    return max(event_clock, state.event_clock)


# --- the script ------------------------------------------------------------------------------


def run(
    level: str,
    file_iterations: int,
    agent_iterations: int,
    seed: int,
    workdir: Path,
    time_limit: float,
) -> list[PhaseResult]:
    """Every phase of ``level`` (``file``, ``agent`` or ``both``) in ``workdir``."""
    deadline = time.monotonic() + time_limit
    results: list[PhaseResult] = []
    if level in ("file", "both"):
        results.append(keyring_phase(file_iterations, seed, workdir, 0.03))
        results.append(snapshot_phase(file_iterations, seed, workdir, 0.06))
    if level in ("agent", "both"):
        results.extend(agent_phase(agent_iterations, seed, workdir, 2.0, deadline))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--iterations", type=int, default=2000, help="kills per file kind")
    ap.add_argument("--agent-iterations", type=int, default=50, help="kills of the agent")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--level", choices=("file", "agent", "both"), default="both")
    ap.add_argument("--time-limit", type=float, default=1800.0, help="seconds for the agent level")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="crash-safety-") as tmp:
        results = run(
            args.level,
            args.iterations,
            args.agent_iterations,
            args.seed,
            Path(tmp),
            args.time_limit,
        )
    for r in results:
        print(r.line())
        for text in r.failures[:10]:
            print("  FAIL", text)
    total = sum(len(r.failures) for r in results)
    kills = sum(r.kills for r in results)
    print(f"total: kills={kills} failures={total} seed={args.seed} ({time.monotonic() - t0:.0f} s)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
