"""The library's lifecycle and delivery rules (``serf_trio.Node`` / ``open_node``), on the
in-memory network under a MockClock unless said otherwise: independence of two nodes in one
process, cancellation (stop at once, no leave) against a normal or exceptional exit (leave),
no task outliving its nursery, ``leave()`` ending ``run``, errors before ``run`` and for bad
arguments, several ``events()`` subscribers, a subscriber that never reads, coalescing of
member events for a lagging one, and ``import serf_trio`` staying free of trio."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import pytest
import trio
from helpers import mem_addr, run_mock

import serf_trio
from serf_trio.testing.memnet import MemoryNetwork
from serf_trio.testing.netmodel import NetModel


def node(net: MemoryNetwork, i: int, **kw: object) -> serf_trio.Node:
    return serf_trio.Node(
        f"n{i}",
        bind=mem_addr(i),
        network=net,
        rng=random.Random(i),
        **kw,  # type: ignore[arg-type]
    )


def open_node(net: MemoryNetwork, i: int) -> AbstractAsyncContextManager[serf_trio.Node]:
    return serf_trio.open_node(f"n{i}", bind=mem_addr(i), network=net, rng=random.Random(i))


async def until(cond: Callable[[], bool], limit: float = 60.0) -> None:
    """Poll a view (virtual seconds; every wait is bounded)."""
    with trio.fail_after(limit):
        while not cond():  # noqa: ASYNC110 - polls a view
            await trio.sleep(0.1)


async def next_event(queue: serf_trio.EventQueue[serf_trio.Event], limit: float = 60.0) -> object:
    with trio.fail_after(limit):
        return await queue.receive()


def status(n: serf_trio.Node, name: str) -> str:
    m = n.member(name)
    return m.status if m is not None else "unknown"


def tags(n: serf_trio.Node, name: str) -> dict[str, str] | None:
    m = n.member(name)
    return m.tags if m is not None else None


def tasks_of(*owners: object) -> list[trio.lowlevel.Task]:
    """Every live task in this run whose coroutine is a method of one of ``owners``."""
    found: list[trio.lowlevel.Task] = []

    def walk(task: trio.lowlevel.Task) -> None:
        frame = getattr(task.coro, "cr_frame", None)
        if frame is not None and any(frame.f_locals.get("self") is o for o in owners):
            found.append(task)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    walk(root)
    return found


def test_two_nodes_in_one_process_are_independent() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=11))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            a, b = node(net, 1, tags={"role": "web"}), node(net, 2, tags={"role": "db"})
            await nursery.start(a.run)
            await nursery.start(b.run)
            events = b.events("user")
            await b.join(a.address)
            await until(lambda: len(a.alive_members()) == 2 == len(b.alive_members()))
            assert (a.tags, b.tags) == ({"role": "web"}, {"role": "db"})
            await b.set_tags({"role": "cache"})
            assert a.tags == {"role": "web"}

            # Each node has its own stats registry and counters.
            a.registry.register("app", lambda: {"requests": 7})
            assert a.stats()["app"] == {"requests": 7} and "app" not in b.stats()
            await a.user_event("ping")
            assert isinstance(await next_event(events), serf_trio.UserEvent)
            assert b.stats()["delivery"]["delivered"] == 1
            assert a.stats()["delivery"]["delivered"] == 0  # a has no subscriber at all
            assert a.stats()["transport"] != b.stats()["transport"]

            # Stopping one does not stop the other.
            a.stop()
            await a.wait_stopped()
            assert b.running and not a.running
            await until(lambda: status(b, "n1") == "failed")
            nursery.cancel_scope.cancel()

    run_mock(body)


@pytest.mark.parametrize("inner_nursery", [False, True], ids=["plain", "block-with-nursery"])
def test_cancelling_around_open_node_stops_at_once_without_a_leave(inner_nursery: bool) -> None:
    """The peer sees ``failed``, never ``left``; also when the cancellation reaches
    ``open_node`` inside an exception group from the block's own nursery."""

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=12))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            b = node(net, 2)
            await nursery.start(b.run)
            seen = b.events("member-leave,member-failed")
            with trio.CancelScope() as scope:
                async with open_node(net, 1) as a:
                    await a.join(mem_addr(2))
                    await until(lambda: len(b.alive_members()) == 2)
                    cancelled_at = trio.current_time()
                    scope.cancel()
                    if inner_nursery:
                        async with trio.open_nursery() as inner:
                            inner.start_soon(trio.sleep_forever)
                            await trio.sleep_forever()
                    else:
                        await trio.sleep_forever()
            assert scope.cancelled_caught
            # At once: a leave would have taken at least Serf's leave propagation delay.
            assert trio.current_time() == cancelled_at
            assert not a.running
            ev = await next_event(seen)
            assert isinstance(ev, serf_trio.MemberEvent)
            assert (ev.kind, ev.member.name) == ("member-failed", "n1")
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_stop_inside_the_open_node_block_exits_at_once_without_a_leave() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=21))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            b = node(net, 2)
            await nursery.start(b.run)
            seen = b.events("member-leave,member-failed")
            async with open_node(net, 1) as a:
                await a.join(mem_addr(2))
                await until(lambda: len(b.alive_members()) == 2)
                stopped_at = trio.current_time()
                a.stop()
            assert trio.current_time() == stopped_at  # no leave was attempted
            assert not a.running
            ev = await next_event(seen)
            assert isinstance(ev, serf_trio.MemberEvent)
            assert (ev.kind, ev.member.name) == ("member-failed", "n1")
            nursery.cancel_scope.cancel()

    run_mock(body)


@pytest.mark.parametrize("exit_by", ["normal", "exception"])
def test_leaving_the_open_node_block_leaves_gracefully(exit_by: str) -> None:
    """A normal exit and an exception both leave (the peer sees ``left``); the block's own
    exception comes out as itself, not inside an ExceptionGroup."""

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=13))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            b = node(net, 2)
            await nursery.start(b.run)
            seen = b.events("member-leave,member-failed")
            if exit_by == "normal":
                async with open_node(net, 1) as a:
                    await a.join(mem_addr(2))
                    await until(lambda: len(b.alive_members()) == 2)
            else:
                with pytest.raises(KeyError, match="mine"):
                    async with open_node(net, 1) as a:
                        await a.join(mem_addr(2))
                        await until(lambda: len(b.alive_members()) == 2)
                        raise KeyError("mine")
            assert not a.running
            ev = await next_event(seen)
            assert isinstance(ev, serf_trio.MemberEvent)
            assert (ev.kind, ev.member.name) == ("member-leave", "n1")
            assert status(b, "n1") == "left"
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_no_task_outlives_the_node() -> None:
    """``leave()`` makes ``run`` return: the nursery that ran it exits by itself (it is never
    cancelled), and no task of the node is left anywhere in the run; the same for
    ``open_node``."""

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=14))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            b = node(net, 2)
            await nursery.start(b.run)
            a = node(net, 1)
            owners = (a, a.runtime, a.runtime.transport)
            with trio.fail_after(60):
                async with trio.open_nursery() as mine:
                    await mine.start(a.run)
                    await a.join(mem_addr(2))
                    await until(lambda: status(b, "n1") == "alive")
                    assert (
                        len(tasks_of(*owners)) >= 3
                    )  # the probe sees the node's tasks (driver, sender, ...)
                    assert await a.leave() is False
                    assert not a.running
            assert not mine.cancel_scope.cancel_called
            assert tasks_of(*owners) == []
            await a.wait_stopped()  # returns at once: the node has stopped
            assert status(b, "n1") == "left"
            with pytest.raises(serf_trio.NotRunningError):
                await a.user_event("late")
            assert {m.name for m in a.members()} == {"n1", "n2"}  # the views stay readable
            with pytest.raises(RuntimeError, match="already run"):
                await nursery.start(a.run)  # a node runs once

            async with open_node(net, 3) as c:
                await c.join(mem_addr(2))
                owners = (c, c.runtime, c.runtime.transport)
                assert tasks_of(*owners)
            assert tasks_of(*owners) == []
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_calls_before_run_raise_not_running_error() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=15))
        a = node(net, 1, tags={"role": "web"})
        assert (a.running, a.addr, a.members(), a.num_alive()) == (False, None, [], 0)
        assert a.tags == {"role": "web"}
        assert "delivery" in a.stats() and "serf" not in a.stats()
        with pytest.raises(serf_trio.NotRunningError):
            _ = a.address
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: a.join(mem_addr(2)),
            lambda: a.user_event("e"),
            lambda: a.set_tags({"role": "db"}),
            lambda: a.force_leave("n9"),
            lambda: a.leave(),
            lambda: a.list_keys(),
            lambda: a.query("q").collect(),
        ]
        for call in calls:
            with pytest.raises(serf_trio.NotRunningError):
                await call()
        # A failed leave() did not count as a leave: open_node-style callers still leave.
        assert not a._ending

    run_mock(body)


def test_bad_arguments_raise_value_error() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=16))
        for bind in ("nonsense", "example.com:7946", "10.0.0.1:70000", "10.0.0.1:x", ""):
            with pytest.raises(ValueError):
                serf_trio.Node("a", bind=bind, network=net)
        bad_options: list[dict[str, object]] = [
            {"advertise": "host:1"},
            {"profile": "fast"},
            {"encrypt_algorithm": "rot13"},
        ]
        for options in bad_options:
            with pytest.raises(ValueError):
                serf_trio.Node("a", bind=mem_addr(1), network=net, **options)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            serf_trio.Node("", bind=mem_addr(1), network=net)
        a = node(net, 1)
        with pytest.raises(ValueError):
            await a.join("not an address!")  # refused before the call reaches the node
        with pytest.raises(ValueError):
            await a.join()
        with pytest.raises(ValueError):
            a.events("member-join,member-explode")

    run_mock(body)


def test_an_address_in_use_raises_os_error_itself() -> None:
    """Failing to bind is an ``OSError`` from ``run`` and ``open_node``, not an
    ExceptionGroup around one; ``open_node``'s block does not run."""

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=17))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            await nursery.start(node(net, 1).run)
            with pytest.raises(OSError, match="in use"):
                await nursery.start(serf_trio.Node("dup", bind=mem_addr(1), network=net).run)
            ran = False
            with pytest.raises(OSError, match="in use"):
                async with serf_trio.open_node("dup", bind=mem_addr(1), network=net):
                    ran = True
            assert not ran
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_a_second_subscriber_gets_the_same_events() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=18))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            a, b = node(net, 1), node(net, 2)
            queues = (b.events(), b.events())
            got: tuple[list[object], list[object]] = ([], [])

            async def read(queue: serf_trio.EventQueue[serf_trio.Event], out: list[object]) -> None:
                async for ev in queue:
                    out.append(ev)
                    if isinstance(ev, serf_trio.MemberEvent) and ev.kind == "member-leave":
                        return

            await nursery.start(a.run)
            await nursery.start(b.run)
            with trio.fail_after(60):
                async with trio.open_nursery() as readers:
                    for queue, out in zip(queues, got, strict=True):
                        readers.start_soon(read, queue, out)
                    await b.join(mem_addr(1))
                    await a.user_event("deploy", b"v1")
                    await until(lambda: len(got[0]) == 3 == len(got[1]))  # n2, n1, deploy
                    await a.set_tags({"role": "web"})
                    await until(lambda: len(got[0]) == 4 == len(got[1]))
                    await a.leave()
            assert got[0] == got[1]
            assert all(x is y for x, y in zip(*got, strict=True))  # the same records, no copies
            assert [getattr(e, "kind", "user") for e in got[0]] == [
                "member-join",  # b itself, as Serf delivers it
                "member-join",
                "user",
                "member-update",
                "member-leave",
            ]
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_a_subscriber_that_never_reads_blocks_nothing_and_its_drops_are_counted() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=19))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            a, b, c = node(net, 1), node(net, 2), node(net, 3)
            stuck = b.events(buffer=4)  # never read
            live = b.events("user")
            for n in (a, b, c):
                await nursery.start(n.run)
            await b.join(mem_addr(1))
            for i in range(20):
                await a.user_event("tick", str(i).encode())
            with trio.fail_after(60):
                received = [(await live.receive()) for _ in range(20)]
            payloads = sorted(int(getattr(ev, "payload", b"-1")) for ev in received)
            assert payloads == list(range(20))  # all of them (gossip may reorder them)
            # Membership goes on: a third node joins and b sees it.
            await c.join(mem_addr(1))
            await until(lambda: status(b, "n3") == "alive")

            delivery = b.stats()["delivery"]
            assert delivery["dropped_user_events"] == 16
            assert delivery["dropped_queries"] == delivery["dropped_other"] == 0
            st = stuck.statistics()
            assert (st.dropped_user_events, st.delivered) == (16, 0)
            # Pending: the 4 user events that fit, and one member event per member (n1, n3 and
            # b's own member-join, which Serf delivers too).
            assert len(stuck) == 4 + 3
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_member_events_coalesce_for_a_lagging_subscriber() -> None:
    """Latest state wins, in the place of the first pending event about the member."""

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=20))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            a, b = node(net, 1), node(net, 2)
            lagging = b.events("member-join,member-update,member-leave,user")
            await nursery.start(a.run)
            await nursery.start(b.run)
            await b.join(mem_addr(1))
            await a.user_event("after-join")
            for version in ("1", "2"):
                await a.set_tags({"v": version})
                await until(lambda v=version: tags(b, "n1") == {"v": v})  # type: ignore[misc]
            # b's own member-join, one member event about n1, one user event
            assert len(lagging) == 3
            assert lagging.statistics().coalesced == 2
            assert b.stats()["delivery"]["coalesced"] == 2
            ev = await next_event(lagging)
            assert isinstance(ev, serf_trio.MemberEvent)
            assert (ev.kind, ev.member.name) == ("member-join", "n2")
            ev = await next_event(lagging)
            assert isinstance(ev, serf_trio.MemberEvent)
            assert (ev.kind, ev.member.tags) == ("member-update", {"v": "2"})
            assert isinstance(await next_event(lagging), serf_trio.UserEvent)
            assert len(lagging) == 0
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_import_serf_trio_loads_no_trio() -> None:
    """``import serf_trio`` (what the command-line client imports first) loads neither trio
    nor structlog, as ``-X importtime`` reports; asking for ``serf_trio.Node`` does.  The
    client commands themselves: ``tests/cli/test_fast_start.py``."""

    def imported(code: str) -> set[str]:
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        # Lines: "import time: self [us] | cumulative | imported package" (names indented).
        return {
            line.rsplit("|", 1)[1].strip()
            for line in proc.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2
        }

    light = imported("import serf_trio; serf_trio.__all__")
    assert "serf_trio" in light
    assert not {m for m in light if m.split(".")[0] in ("trio", "structlog")}
    assert "trio" in imported("import serf_trio; serf_trio.Node")  # the probe can see trio


def test_the_package_exports_exactly_the_library_api() -> None:
    """``serf_trio`` lists its lazy exports by hand (importing ``serf_trio.api`` to read them
    would load trio); they must stay the library's."""
    import serf_trio.api

    assert sorted(serf_trio.__all__) == sorted(serf_trio.api.__all__)
    assert all(getattr(serf_trio, n) is getattr(serf_trio.api, n) for n in serf_trio.__all__)
