"""Cluster-wide "who has file X?" with a serf-trio query.

Every node answers the query ``who-has``: its payload is a path relative to the node's data
directory; a node that has that file answers with its name and the file's size, a node that
has not stays silent (a query gathers whatever answers arrive until its timeout).  ``--ask
PATH`` runs the query from one node, prints who has the file and leaves; the exit status is 0
when someone has it, 1 when nobody does.  A path that would leave the data directory
(absolute, ``..``, a symlink pointing outside) is never answered.

Run three copies on one machine (two in the background, data directories under the current
one)::

    mkdir -p data/a data/b data/c && echo hello > data/b/notes.txt && echo hi > data/c/notes.txt
    python examples/who_has.py --name a --bind 127.0.0.1:7946 --data-dir data/a &
    python examples/who_has.py --name b --bind 127.0.0.1:7947 --data-dir data/b \\
        --join 127.0.0.1:7946 &
    python examples/who_has.py --name c --bind 127.0.0.1:7948 --data-dir data/c \\
        --join 127.0.0.1:7946 --ask notes.txt

The last one prints ``b`` (6 bytes) and ``c`` (3 bytes), answering its own query too, then
leaves.  ``kill %1 %2`` (SIGTERM) makes the two others leave gracefully.  Without
``--data-dir`` a node only asks.

The pieces are importable: ``lookup`` (the answer to one path), ``answer_queries`` (a node's
answering task), ``who_has`` (ask the cluster), ``serve`` (a node that answers until a stop
event); ``tests/examples`` runs them on real sockets and on the in-memory network.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import structlog
import trio

import serf_trio

log = logging.getLogger("who_has")

QUERY = "who-has"


@dataclass(frozen=True, slots=True, order=True)
class Holder:
    """A node that has the file, and the file's size there."""

    node: str
    size: int


def lookup(data_dir: Path, name: str) -> int | None:
    """The size of the regular file ``name`` under ``data_dir``; ``None`` if there is none or
    ``name`` would leave the directory (absolute, ``..``, a symlink to elsewhere).

    A stat or two, fast on a local disk, so it is called directly from the answering task; on
    slow storage run it with ``await trio.to_thread.run_sync(lookup, data_dir, name)``."""
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts:
        return None
    try:
        root = data_dir.resolve(strict=True)
        path = (root / rel).resolve(strict=True)
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path.stat().st_size
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte
        return None


def encode_answer(node: str, size: int) -> bytes:
    return json.dumps({"name": node, "size": size}).encode()


def decode_answer(reply: serf_trio.Response) -> Holder | None:
    """The ``Holder`` in one response; ``None`` for a payload this program did not write."""
    try:
        answer = json.loads(reply.payload)
        size = answer["size"]
    except (ValueError, TypeError, KeyError):
        return None
    return Holder(reply.node, size) if isinstance(size, int) else None


async def answer_queries(
    node: serf_trio.Node,
    data_dir: Path,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer every ``who-has`` query ``node`` receives, until the node stops (or this task is
    cancelled); ``started()`` once subscribed."""
    async with node.events(f"query:{QUERY}") as queries:
        task_status.started()
        async for query in queries:
            if not isinstance(query, serf_trio.QueryEvent):
                continue
            try:
                name = query.payload.decode()
            except UnicodeDecodeError:
                continue
            size = lookup(data_dir, name)
            if size is None:
                continue  # no file here: stay silent
            try:
                await node.respond(query, encode_answer(node.name, size))
            except serf_trio.SerfError as exc:  # e.g. the query's deadline has passed
                log.warning("could not answer %s about %r: %s", query.source_node, name, exc)
            else:
                log.info("told %s: %s has %d bytes", query.source_node, name, size)


async def who_has(node: serf_trio.Node, name: str, *, query_timeout: float = 0.0) -> list[Holder]:
    """Ask the cluster through ``node`` who has ``name``; every holder that answered before
    the query's timeout (0: Serf's default, which grows with the cluster), by node name.
    ``SerfError`` if the query is too large (Serf's limit: 1024 bytes)."""
    holders: list[Holder] = []
    async with node.query(QUERY, name.encode(), timeout=query_timeout) as replies:
        async for reply in replies:
            if isinstance(reply, serf_trio.Response):
                holder = decode_answer(reply)
                if holder is not None:
                    holders.append(holder)
    return sorted(holders)


async def serve(
    name: str,
    data_dir: Path | None,
    stop: trio.Event,
    *,
    bind: str = "0.0.0.0:7946",
    seeds: Sequence[str] = (),
    task_status: trio.TaskStatus[serf_trio.Node] = trio.TASK_STATUS_IGNORED,
    **node_options: Any,
) -> None:
    """Run the node ``name`` answering ``who-has`` from ``data_dir`` (``None``: never
    answer), join ``seeds``, and leave gracefully once ``stop`` is set.  ``started(node)``
    once it has joined; ask with ``who_has(node, ...)``.  ``node_options`` go to
    ``serf_trio.Node`` (e.g. ``network=``, ``profile=``, ``tags=``)."""
    async with (
        serf_trio.open_node(name, bind=bind, **node_options) as node,
        trio.open_nursery() as nursery,
    ):
        if data_dir is not None:
            await nursery.start(answer_queries, node, data_dir)
        if seeds:
            await node.join(*seeds)
        task_status.started(node)
        await stop.wait()
        nursery.cancel_scope.cancel()
    # Leaving the ``open_node`` block normally made the node leave gracefully.


async def stop_on_signals(
    stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Set ``stop`` at the first SIGINT or SIGTERM; return once ``stop`` is set."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async with trio.open_nursery() as nursery:

            async def first_signal() -> None:
                async for signum in signals:
                    log.info("%s received", signal.Signals(signum).name)
                    stop.set()
                    return

            nursery.start_soon(first_signal)
            await stop.wait()
            nursery.cancel_scope.cancel()


def report(name: str, holders: Sequence[Holder]) -> str:
    if not holders:
        return f"nobody has {name}"
    width = max(len(h.node) for h in holders)
    lines = [f"{len(holders)} node(s) have {name}:"]
    lines += [f"  {h.node:<{width}}  {h.size} bytes" for h in holders]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Answer the cluster-wide query 'who-has PATH' from a data directory, "
        "or ask it with --ask.",
    )
    parser.add_argument("--name", required=True, help="node name, unique in the cluster")
    parser.add_argument(
        "--bind", default="127.0.0.1:7946", help="gossip address IP:PORT (default: %(default)s)"
    )
    parser.add_argument(
        "--join",
        action="append",
        default=[],
        metavar="ADDR",
        help="an existing member's IP:PORT (repeatable)",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="answer for the files under this directory (default: never)"
    )
    parser.add_argument(
        "--ask", metavar="PATH", help="ask who has PATH (relative to each data dir), then leave"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="seconds to gather answers to --ask (default: Serf's, about 3 s on a LAN)",
    )
    parser.add_argument(
        "--profile",
        choices=("lan", "wan", "local"),
        default="lan",
        help="failure-detection timing (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the library's own logs")
    args = parser.parse_args(argv)
    if args.ask and not args.join and args.data_dir is None:
        parser.error("--ask without --join asks only this node: give it a --data-dir")
    return args


async def amain(args: argparse.Namespace) -> int:
    """The command line's work; the exit status (``--ask``: 0 found, 1 nobody, 2 error)."""
    status = 0
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(stop_on_signals, stop)
        run = partial(serve, bind=args.bind, seeds=args.join, profile=args.profile)
        node: serf_trio.Node = await nursery.start(run, args.name, args.data_dir, stop)
        if args.ask:
            try:
                holders = await who_has(node, args.ask, query_timeout=args.timeout)
            except serf_trio.SerfError as exc:  # e.g. a path past the query size limit
                print(f"error: {exc}", file=sys.stderr)
                status = 2
            else:
                print(report(args.ask, holders), flush=True)
                status = 0 if holders else 1
            stop.set()  # done: leave the cluster (gracefully) and return
    return status


def quiet_library(verbose: bool) -> None:
    """The library logs with structlog (everything, to stdout, unless configured): keep its
    warnings and errors only."""
    level = logging.DEBUG if verbose else logging.WARNING
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_library(args.verbose)
    try:
        status = trio.run(amain, args)
    except* (serf_trio.JoinError, OSError, ValueError) as group:
        for exc in leaves(group):
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status)


if __name__ == "__main__":
    main()
