"""sd_notify over a real AF_UNIX datagram socket, and the progress-tied watchdog."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from serf_trio.agent.notify import Notifier, watchdog_loop


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def test_messages(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready(status="3 members")
    assert sock.recv(4096) == b"READY=1\nSTATUS=3 members"
    assert n.reloading()
    msg = sock.recv(4096).decode().split("\n")
    assert msg[0] == "RELOADING=1" and msg[1].startswith("MONOTONIC_USEC=")
    assert int(msg[1].split("=")[1]) > 0
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket_name() -> None:
    name = f"serf-trio-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    with sock:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"


def test_no_socket_is_noop_and_dead_socket_is_survivable(tmp_path: Path) -> None:
    assert not Notifier({}).ready()
    assert not Notifier({}).enabled
    assert Notifier({}).watchdog_interval is None
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    assert gone.enabled and not gone.ready()


def test_watchdog_interval_and_pid() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    other = Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert os.getpid() == 1 or other.watchdog_interval is None


def test_watchdog_pings_only_on_progress(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    sock.setblocking(False)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})  # ping every 1 s
    counter = [0]
    alone = [False]

    def pings() -> int:
        got = 0
        while True:
            try:
                assert sock.recv(100) == b"WATCHDOG=1"
            except BlockingIOError:
                return got
            got += 1

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: watchdog_loop(n, lambda: counter[0], alone=lambda: alone[0]))
            await trio.sleep(0.5)  # checks at t = 1, 2, 3 ...; progress between them
            for _ in range(3):  # progress every second -> a ping every second
                counter[0] += 1
                await trio.sleep(1.0)
            assert pings() == 3
            await trio.sleep(3.0)  # the core is stuck: no pings, systemd will restart us
            assert pings() == 0
            alone[0] = True  # nothing to make progress with: liveness alone counts
            await trio.sleep(2.0)
            assert pings() == 2
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
