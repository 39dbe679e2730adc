"""The README's "Use it as a library" example: two cluster members in one trio program.

``alice`` and ``bob`` bind free ports on 127.0.0.1, ``bob`` joins ``alice``, ``alice`` sends a
user event that reaches ``bob``, and leaving the ``async with`` block makes both leave the
cluster gracefully (this takes a second or two: a leave waits until it has spread)::

    python examples/quickstart.py

It is one process; to see nodes in separate processes, run two or three copies of
``service_registry.py`` or ``who_has.py`` (their docstrings show how).  The README shows this
file without its docstring, ``--help`` and log settings (``tests/examples`` checks that it
shows nothing else).
"""

from __future__ import annotations

import argparse
import logging

import structlog
import trio

import serf_trio


async def main() -> None:
    async with (
        serf_trio.open_node("alice", bind="127.0.0.1:0", tags={"role": "web"}) as alice,
        serf_trio.open_node("bob", bind="127.0.0.1:0") as bob,
    ):
        events = bob.events("user:hello")  # subscribe first: nothing is missed
        await bob.join(alice.address)
        await alice.user_event("hello", b"world")  # gossiped to every member
        event = await events.receive()
        assert isinstance(event, serf_trio.UserEvent)
        print(f"bob got {event.name}: {event.payload!r}")
        print(sorted((m.name, m.status, m.tags) for m in alice.members()))
    # Leaving the block made both nodes leave the cluster gracefully.


if __name__ == "__main__":
    argparse.ArgumentParser(description="Two serf-trio nodes in one trio program.").parse_args()
    # The library logs with structlog (everything, to stdout): keep its warnings only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    trio.run(main)
