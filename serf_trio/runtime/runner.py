"""A minimal process that runs one membership node (the full agent and CLI come later).

    python -m serf_trio.runtime.runner --name N --bind IP:PORT [--advertise IP:PORT]
        [--join IP:PORT ...] [--profile lan|wan|local] [--tag k=v ...] [--members-file PATH]

It owns: Serf-compatible node metadata (``0xFF`` + a msgpack map of tags, so real Serf agents
show our tags, as serf.go encodes them), the members file (rewritten atomically, temp + rename,
whenever the membership view changes: ``{"members": [{"name", "addr", "status"}]}`` with Serf's
status words), and a graceful leave on SIGINT/SIGTERM (a second signal stops at once). Exit
status: 0 after a leave, 1 if the initial join failed, 2 for bad arguments.  Logging is
``logs.configure``, the same as the agent's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
import trio

from serf_trio.swim.api import Address, MemberEvent, MemberInfo, NullDelegate
from serf_trio.swim.config import profile
from serf_trio.wire.codec import pack

from .driver import JoinError, MembershipNode
from .logs import LEVEL_WORDS, LogSettings, configure
from .transport import UdpTcpTransport, parse_hostport

# How long a graceful leave may take before we stop anyway (Serf: BroadcastTimeout 5 s).
LEAVE_TIMEOUT = 5.0
# The members file is re-checked at least this often even without a membership event.
MEMBERS_REFRESH = 0.5


def serf_meta(tags: dict[str, str]) -> bytes:
    """Serf's tag encoding in node meta: ``0xFF`` + msgpack map (``ff 80`` when empty)."""
    return b"\xff" + pack(dict(sorted(tags.items())))


def members_document(members: Sequence[MemberInfo]) -> dict[str, Any]:
    """The members file content, sorted by name; suspect shows alive and dead failed (Serf)."""
    return {
        "members": [
            {"name": m.name, "addr": str(m.addr), "status": m.state.serf_status}
            for m in sorted(members, key=lambda m: m.name)
        ]
    }


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temp file next to ``path`` and rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"tag must be key=value, got {text!r}")
    return key, value


def _addr(text: str) -> Address:
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serf_trio.runtime.runner", description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--bind", required=True, type=_addr, help="IP:PORT for UDP and TCP")
    p.add_argument("--advertise", type=_addr, help="IP:PORT peers should use (default: bind)")
    p.add_argument("--join", action="append", default=[], type=_addr, metavar="IP:PORT")
    p.add_argument("--profile", choices=["lan", "wan", "local"], default="lan")
    p.add_argument("--tag", action="append", default=[], type=_tag, metavar="KEY=VALUE")
    p.add_argument("--members-file", type=Path)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p.parse_args(argv)


class MembersFile:
    """Keeps ``path`` equal to the node's member list; written off the event loop.

    ``changed()`` (called on every membership event) wakes the writer at once; it also
    re-checks every ``MEMBERS_REFRESH`` seconds so that a dropped event cannot leave it stale.
    """

    def __init__(self, node: MembershipNode, path: Path) -> None:
        self.node = node
        self.path = path
        self._wake = trio.Event()
        self.writes = 0

    def changed(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        last = ""
        while True:
            self._wake = trio.Event()
            text = json.dumps(members_document(self.node.members()), indent=1) + "\n"
            if text != last:
                await trio.to_thread.run_sync(write_atomically, self.path, text)
                last = text
                self.writes += 1
            with trio.move_on_after(MEMBERS_REFRESH):
                await self._wake.wait()


async def _watch_events(node: MembershipNode, members_file: MembersFile | None) -> None:
    async for ev in node.events:
        if isinstance(ev, MemberEvent) and members_file is not None:
            members_file.changed()


async def main_async(args: argparse.Namespace) -> int:
    log = structlog.get_logger().bind(node=args.name)
    node = MembershipNode(
        profile(args.profile),
        args.name,
        UdpTcpTransport(args.bind, stream_timeout=profile(args.profile).tcp_timeout, logger=log),
        advertise=args.advertise,
        delegate=NullDelegate(serf_meta(dict(args.tag))),
        logger=log,
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(node.run)
            members_file = None
            if args.members_file is not None:
                members_file = MembersFile(node, args.members_file)
                nursery.start_soon(members_file.run)
            nursery.start_soon(_watch_events, node, members_file)
            log.info("runner_ready", addr=str(addr), profile=args.profile)
            if args.join:
                try:
                    n = await node.join(args.join)
                    log.info("joined", contacted=n)
                except JoinError as exc:
                    log.error("join_failed", errors=list(exc.errors))
                    nursery.cancel_scope.cancel()
                    return 1
            async for signum in signals:
                log.info("signal_received", signal=signal.Signals(signum).name)
                break
            # A second signal while leaving stops at once.
            nursery.start_soon(_second_signal, signals, nursery.cancel_scope)
            with trio.move_on_after(LEAVE_TIMEOUT + 1):
                timed_out = await node.leave(LEAVE_TIMEOUT)
                log.info("left", timed_out=timed_out)
            nursery.cancel_scope.cancel()
    return 0


async def _second_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Logs are JSON lines on stderr (``logs.configure``: console text only on a TTY).
    configure(LogSettings(level=LEVEL_WORDS[args.log_level]))
    return trio.run(main_async, args)


if __name__ == "__main__":
    sys.exit(main())
