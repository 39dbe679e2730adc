"""What the benchmark scripts share: the loopback host, a port picker and a bounded poll.

The scripts run as ``python bench/<name>.py``, so this module is imported as ``_common``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

HOST = "127.0.0.1"

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
