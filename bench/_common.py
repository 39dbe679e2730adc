"""What the benchmark scripts share: the loopback host, a port picker and a bounded poll.

The scripts run as ``python bench/<name>.py``, so this module is imported as ``_common``.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from serf_trio.testing.faults import agent_env as agent_env  # re-exported for the scripts

HOST = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")
SERF_TRIO = Path(sys.executable).parent / "serf-trio"  # the console script of this venv
SERF = shutil.which("serf") or "/usr/bin/serf"
IMPLS = ("serf-trio", "serf", "both")  # the --impl choices

_handed_out: set[int] = set()


def free_port() -> int:
    """A port free on ``HOST`` for both TCP and UDP (agents bind both), never handed out twice
    by this process."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((HOST, 0))
            port = int(t.getsockname()[1])
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((HOST, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port")


def wait_for(pred: Callable[[], bool], limit: float, step: float = 0.05) -> float | None:
    """Seconds until ``pred()`` held, or None after ``limit``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return None


# -- agent processes (added for cluster.py and startup.py) ---------------------------------------


def spawn_group(
    argv: Sequence[str], env: dict[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group (pgid == pid), stdout and stderr to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen[bytes], wait: float = 5.0) -> None:
    """SIGKILL the process group of ``proc`` (started by :func:`spawn_group`) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(wait)


def group_cpu_seconds(pgid: int) -> float:
    """utime+stime (and reaped children's cutime+cstime) of every process in group ``pgid``."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # the process went away while we looked
            continue
        # After the parenthesised command name: pgrp is field 5, utime..cstime 14-17 (proc(5)).
        rest = stat.rpartition(")")[2].split()
        if int(rest[2]) == pgid:
            ticks += sum(int(v) for v in rest[11:15])
    return ticks / TICK


def proc_cpu_seconds(pid: int) -> float | None:
    """utime+stime of one process from ``/proc/PID/stat`` (None if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat.rpartition(")")[2].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def proc_cpu_clock(pid: int) -> float | None:
    """CPU seconds of process ``pid`` (all its threads) from its POSIX CPU-time clock, with ns
    resolution where ``/proc/PID/stat`` counts 10 ms ticks (None if it is gone).  The clock id
    is glibc's ``clock_getcpuclockid``: ``(~pid << 3) | CPUCLOCK_SCHED``."""
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:
        return None


def rss_mib(pid: int) -> float | None:
    """VmRSS of process ``pid`` in MiB (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sequence."""
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def interrupt_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so ``finally`` blocks kill every agent."""
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored


def impls(choice: str) -> Iterator[str]:
    """The implementations an ``--impl`` choice runs, serf first."""
    if choice in ("serf", "both"):
        yield "serf"
    if choice in ("serf-trio", "both"):
        yield "serf-trio"


def binaries_present(choice: str) -> bool:
    """Whether the agents of ``choice`` can be started; if not, says why on stderr."""
    if choice != "serf-trio" and not os.access(SERF, os.X_OK):
        print("serf is not installed (apt-get install serf)", file=sys.stderr)
        return False
    if choice != "serf" and not SERF_TRIO.exists():
        print(f"{SERF_TRIO} not found: run with the venv's python", file=sys.stderr)
        return False
    return True


def file_tail(path: Path, lines: int, sep: str) -> str:
    """The last ``lines`` lines of a log file joined by ``sep`` ("" if it cannot be read)."""
    try:
        return sep.join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
