"""systemd's notify protocol (sd_notify) and the watchdog tied to membership progress.

Rules this module owns:

* Messages are ``KEY=VALUE`` lines sent as one datagram to ``$NOTIFY_SOCKET`` (an ``AF_UNIX``
  datagram socket; a leading ``@`` names an abstract socket).  Without ``NOTIFY_SOCKET`` every
  call is a no-op, so the agent runs the same outside systemd.
* ``RELOADING=1`` carries ``MONOTONIC_USEC`` (CLOCK_MONOTONIC in microseconds), which
  ``Type=notify-reload`` requires and plain ``Type=notify`` accepts.
* The watchdog (``WATCHDOG_USEC``, for this process if ``WATCHDOG_PID`` says so) is pinged every
  half period, but only while the membership core makes progress: the core driver's counters
  (probes, packets in/out) moved since the last check.  A node alone in its cluster has nothing
  to probe, so there the scheduler being alive is the only progress there is to show.
* A send failure is logged once and never stops the agent.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import trio


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify messages; every method is a no-op when ``NOTIFY_SOCKET`` is unset."""

    def __init__(self, env: Mapping[str, str] | None = None, logger: Any = None) -> None:
        env = os.environ if env is None else env
        self._log = logger
        self._failed = False
        self.sent: list[str] = []  # what was sent, for ``statistics`` and tests
        path = env.get("NOTIFY_SOCKET", "")
        self._addr: str | bytes | None = None
        if path.startswith("@"):
            self._addr = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self._addr = path
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` as one datagram; False if disabled or the send failed."""
        if self._addr is None:
            return False
        message = "\n".join(fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(message.encode(), self._addr)
        except OSError as exc:
            if not self._failed and self._log is not None:
                self._log.warning("sd_notify_failed", error=str(exc))
            self._failed = True
            return False
        self.sent.append(message)
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def reloading(self) -> bool:
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


async def watchdog_loop(
    notifier: Notifier,
    progress: Callable[[], Hashable],
    *,
    alone: Callable[[], bool],
    logger: Any = None,
) -> None:
    """Ping ``WATCHDOG=1`` every half period while ``progress()`` keeps changing.

    ``progress`` returns a snapshot of the core's counters; a ping is sent only if it differs
    from the previous check, or if ``alone()`` (no peer to make progress with).
    """
    interval = notifier.watchdog_interval
    if interval is None or not notifier.enabled:
        return
    last = progress()
    stalled = False
    while True:
        await trio.sleep(interval)
        now = progress()
        if now != last or alone():
            notifier.watchdog()
            if stalled and logger is not None:
                logger.info("watchdog_resumed")
            stalled = False
        elif not stalled:
            stalled = True
            if logger is not None:
                logger.warning("watchdog_stalled", interval=interval)
        last = now
