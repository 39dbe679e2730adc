"""Helpers the tests share: free ports, polling with a deadline, child processes that are
always reaped, running a trio test under an autojumping ``MockClock`` on the in-memory
network's addresses, and the "nothing left to gossip" signal absence checks wait for.

Importable as ``helpers`` from any test folder: ``pyproject.toml`` puts ``tests/`` on
``sys.path`` (``pythonpath``), since most test folders are not packages.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import trio
import trio.testing

from serf_trio.swim.api import Address

T = TypeVar("T")

HOST = "127.0.0.1"

_handed_out: set[int] = set()


def free_port(host: str = HOST) -> int:
    """A port free on ``host`` for both TCP and UDP right now (agents bind both), never handed
    out twice in one test run."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on {host}")


def wait_for(
    cond: Callable[[], T | None],
    what: str,
    timeout: float,
    interval: float = 0.05,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Poll ``cond`` until it returns a truthy value (returned) or ``timeout`` seconds pass.

    Exceptions of the ``ignore`` types count as "not yet" (a socket that is not there yet).
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        try:
            last = cond()
        except ignore:
            last = None
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


async def wait_until(
    cond: Callable[[], bool], within: float = 15.0, interval: float = 0.02
) -> None:
    """Poll a read-only view inside trio (there is no event for "the view now says X")."""
    with trio.fail_after(within):
        while not cond():  # noqa: ASYNC110 - polling a read-only view with a deadline
            await trio.sleep(interval)


SERF_QUEUES = ("intent_queue", "event_queue", "query_queue")


def broadcasts_drained(stats: Iterable[Mapping[str, Mapping[str, str]]]) -> bool:
    """Whether none of these agents has a Serf broadcast (intent, user event, query) queued.

    ``stats`` are RPC ``stats`` answers (``Agent.stats()`` in process; the real ``serf`` has the
    same keys).  A broadcast leaves its queue after its last retransmission, and a node queues
    only what is new to it, so once every node of a cluster is drained at the same time no
    gossip about anything sent before can still arrive: the positive signal a check that
    something does *not* happen (a replayed event, a stale leave) waits for.
    """
    return all(s["serf"][q] == "0" for s in stats for q in SERF_QUEUES)


class Procs:
    """Starts processes with their output in ``<tmp>/<name>.log``; kills what is left on close."""

    def __init__(self, tmp: Path, stop_timeout: float = 10.0) -> None:
        self.tmp = tmp
        self.stop_timeout = stop_timeout
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv``; a restart under the same name appends to the same log."""
        log = self.tmp / f"{name}.log"
        with log.open("ab") as f:
            p = subprocess.Popen(
                list(argv),
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
            )
        self.started.append((p, log))
        return p

    def close(self) -> None:
        for p, _log in self.started:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=self.stop_timeout)

    def logs(self) -> str:
        """The tail of every log, for a failure message."""
        return "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for _, log in self.started)


def run_mock(fn: Callable[[], Awaitable[None]], limit: float = 120.0) -> None:
    """Run ``fn`` under ``MockClock(autojump_threshold=0)``; ``limit`` is virtual seconds."""

    async def main() -> None:
        with trio.fail_after(limit):
            await fn()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def mem_addr(i: int) -> Address:
    """Node ``i``'s address on the in-memory network: ``127.0.0.i:7946``."""
    return Address(f"127.0.0.{i}", 7946)
