"""A service registry on serf-trio: who is alive in the cluster, by role.

Each process joins the cluster with tags that describe the service it runs (``role=web``,
``port=8080``) and keeps an in-memory view of its live peers by role, built only from member
events: ``member-join`` adds a peer, ``member-update`` refreshes its tags, ``member-leave``,
``member-failed`` and ``member-reap`` drop it (with a log line saying why).  Ctrl-C or SIGTERM
leaves the cluster gracefully, so the peers log "left" rather than "failed"; a second Ctrl-C
during the leave quits at once.

Run three copies on one machine, each in its own terminal::

    python examples/service_registry.py --name web-1 --bind 127.0.0.1:7946 --role web --port 8080
    python examples/service_registry.py --name web-2 --bind 127.0.0.1:7947 --role web \\
        --port 8081 --join 127.0.0.1:7946
    python examples/service_registry.py --name db-1 --bind 127.0.0.1:7948 --role db \\
        --port 5432 --join 127.0.0.1:7946

Each prints its view whenever it changes.  Stop ``web-2`` with Ctrl-C: the others log that it
left.  Kill it with ``kill -9``: the others log that it failed, once the failure detector's
suspicion timeout has passed (a few seconds).

The pieces are importable: ``Registry`` (the view), ``track`` (feeds a node's member events
into a registry), ``serve`` (a node plus its registry until a stop event) and
``stop_on_signals``; ``tests/examples`` runs them on real sockets and on the in-memory network.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import trio

import serf_trio

log = logging.getLogger("service_registry")

# The member events the registry needs (user events and queries are not delivered to it).
MEMBER_EVENTS = "member-join,member-update,member-leave,member-failed,member-reap"


@dataclass(frozen=True, slots=True)
class Peer:
    """One live peer as the registry sees it."""

    name: str
    role: str
    host: str
    port: int | None  # the service port from the ``port`` tag (None: absent or not a number)
    tags: dict[str, str]

    @classmethod
    def from_member(cls, member: serf_trio.Member) -> Peer:
        port = member.tags.get("port", "")
        return cls(
            name=member.name,
            role=member.tags.get("role", ""),
            host=member.addr.host,
            port=int(port) if port.isdigit() else None,
            tags=dict(member.tags),
        )


class Registry:
    """The live peers of the node ``own_name`` (itself excluded), from its member events."""

    def __init__(self, own_name: str) -> None:
        self.own_name = own_name
        self.peers: dict[str, Peer] = {}
        # The last changes, oldest first, as (event kind, member name).
        self.recent: deque[tuple[str, str]] = deque(maxlen=256)
        self._changed = trio.Event()

    def by_role(self) -> dict[str, list[Peer]]:
        """The live peers grouped by their ``role`` tag, each group sorted by name."""
        roles: dict[str, list[Peer]] = {}
        for peer in sorted(self.peers.values(), key=lambda p: p.name):
            roles.setdefault(peer.role, []).append(peer)
        return roles

    def role(self, role: str) -> list[Peer]:
        return self.by_role().get(role, [])

    def add(self, member: serf_trio.Member) -> None:
        """A peer joined or changed its tags: (re)record it."""
        if member.name != self.own_name:
            self.peers[member.name] = Peer.from_member(member)

    def apply(self, event: serf_trio.MemberEvent) -> None:
        """Apply one member event (under the delivery contract a lagging consumer may see only
        the latest event about a member, which is the one that matters here)."""
        for member in event.members:
            if member.name == self.own_name:
                continue
            if event.kind == "member-join":
                self.add(member)
                log.info("%s joined with tags %s", member.name, member.tags)
            elif event.kind == "member-update":
                self.add(member)
                log.info("%s updated its tags: %s", member.name, member.tags)
            elif event.kind == "member-failed":
                self.peers.pop(member.name, None)
                log.warning("%s failed: dropped", member.name)
            elif event.kind == "member-leave":
                self.peers.pop(member.name, None)
                log.info("%s left: dropped", member.name)
            elif event.kind == "member-reap":
                self.peers.pop(member.name, None)
                log.info("%s was reaped: dropped", member.name)
            self.recent.append((event.kind, member.name))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[Registry], bool]) -> None:
        """Return once ``predicate(self)`` holds (checked now and after each change); bound
        the wait with ``trio.fail_after`` or ``trio.move_on_after``."""
        while not predicate(self):
            await self._changed.wait()

    def describe(self) -> str:
        """One line: ``db=[db-1:5432] web=[web-1:8080, web-2:8081]``."""
        groups = (
            f"{role or '?'}=[{', '.join(f'{p.name}:{p.port}' for p in peers)}]"
            for role, peers in sorted(self.by_role().items())
        )
        return " ".join(groups) or "(no peers)"


async def track(
    node: serf_trio.Node,
    registry: Registry,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``registry`` up to date from ``node``'s member events until the node stops (or
    this task is cancelled).  ``started()`` once subscribed: start it with ``nursery.start``
    before ``node.join`` and no join is missed."""
    async with node.events(MEMBER_EVENTS) as events:
        for member in node.alive_members():  # whoever the node already knew
            registry.add(member)
        task_status.started()
        async for event in events:
            if isinstance(event, serf_trio.MemberEvent):
                registry.apply(event)
                log.info("view: %s", registry.describe())


async def serve(
    name: str,
    tags: dict[str, str],
    registry: Registry,
    stop: trio.Event,
    *,
    bind: str = "0.0.0.0:7946",
    seeds: Sequence[str] = (),
    task_status: trio.TaskStatus[serf_trio.Node] = trio.TASK_STATUS_IGNORED,
    **node_options: Any,
) -> None:
    """Run the node ``name`` with ``tags``, join ``seeds`` and keep ``registry`` current until
    ``stop`` is set; then leave the cluster gracefully and return.  ``started(node)`` once it
    has joined.  Cancelling it instead stops the node at once, without a leave (peers will see
    it fail).  ``node_options`` go to ``serf_trio.Node`` (e.g. ``network=``, ``profile=``)."""
    async with serf_trio.open_node(name, bind=bind, tags=tags, **node_options) as node:
        async with trio.open_nursery() as nursery:
            await nursery.start(track, node, registry)
            if seeds:
                await node.join(*seeds)
            log.info("%s running at %s with tags %s", name, node.address, tags)
            task_status.started(node)
            await stop.wait()
            nursery.cancel_scope.cancel()
        log.info("%s leaving the cluster", name)
    # Leaving the ``open_node`` block normally made the node leave gracefully.


async def stop_on_signals(
    stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Set ``stop`` at the first SIGINT (Ctrl-C) or SIGTERM; return once ``stop`` is set (by
    a signal or by anyone else).  ``started()`` once the signals are caught.  Afterwards a
    second Ctrl-C raises ``KeyboardInterrupt`` as usual (quit without waiting for the leave)."""
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A service registry: join a cluster with role/port tags and track the live "
        "peers by role from member events.",
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
    parser.add_argument("--role", default="web", help="this service's role tag")
    parser.add_argument("--port", type=int, default=8080, help="this service's port tag")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="another tag (repeatable)"
    )
    parser.add_argument(
        "--profile",
        choices=("lan", "wan", "local"),
        default="lan",
        help="failure-detection timing (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the library's own logs")
    args = parser.parse_args(argv)
    for text in args.tag:
        if "=" not in text:
            parser.error(f"--tag takes KEY=VALUE, got {text!r}")
    return args


def tags_of(args: argparse.Namespace) -> dict[str, str]:
    extra = dict(text.split("=", 1) for text in args.tag)
    return {"role": args.role, "port": str(args.port), **extra}


async def amain(args: argparse.Namespace) -> None:
    registry = Registry(args.name)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(stop_on_signals, stop)
        await serve(
            args.name,
            tags_of(args),
            registry,
            stop,
            bind=args.bind,
            seeds=args.join,
            profile=args.profile,
        )
        stop.set()  # serve can only return after a stop; this ends stop_on_signals too


def quiet_library(verbose: bool) -> None:
    """The library logs with structlog (everything, to stdout, unless configured): keep its
    warnings and errors only."""
    level = logging.DEBUG if verbose else logging.WARNING
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_library(args.verbose)
    try:
        trio.run(amain, args)
    except* (serf_trio.JoinError, OSError, ValueError) as group:
        for exc in leaves(group):
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


if __name__ == "__main__":
    main()
