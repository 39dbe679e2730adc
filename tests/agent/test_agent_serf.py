"""The Serf layer through ``Agent`` (in-process agents on real loopback sockets): user events
and queries running handler scripts, handler timeouts and crashes, tags, force-leave, and a
restart with the same name after a leave."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from agent_harness import make_agent
from helpers import broadcasts_drained, free_port, wait_until
from structlog.testing import capture_logs

from serf_trio.agent import Agent
from serf_trio.rpc.api import (
    MemberEventRecord,
    QueryEventRecord,
    QueryParams,
    QueryRecord,
    UserEventRecord,
)
from serf_trio.serf.messages import UserEvent, encode

pytestmark = [pytest.mark.realnet, pytest.mark.slow]


async def run_agent(agent: Agent, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
    """Run ``agent`` in a cancel scope of its own: cancelling it is a crash (no leave)."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as n:
            await n.start(agent.run)
            task_status.started(scope)


@asynccontextmanager
async def cluster(*agents: Agent) -> AsyncIterator[tuple[trio.Nursery, list[trio.CancelScope]]]:
    """Start the agents, join every one to the first, wait until all see all alive."""
    async with trio.open_nursery() as nursery:
        scopes = [await nursery.start(run_agent, a) for a in agents]
        first = agents[0]
        assert first.addr is not None
        for a in agents[1:]:
            assert await a.join([f"{first.addr.host}:{first.addr.port}"], False) == 1
        names = {a.node_name for a in agents}
        for a in agents:
            await wait_until(lambda a=a: alive(a) == names)  # type: ignore[misc]
        yield nursery, scopes
        nursery.cancel_scope.cancel()


def host_port(agent: Agent) -> str:
    assert agent.addr is not None
    return f"{agent.addr.host}:{agent.addr.port}"


def alive(agent: Agent) -> set[str]:
    return {m.name for m in agent.members() if m.status == "alive"}


def status_of(agent: Agent, name: str) -> str | None:
    return next((m.status for m in agent.members() if m.name == name), None)


def handler_timeouts(agent: Agent, spec: str) -> int:
    return next(s.timeouts for s in agent.supervisor.statistics() if s.spec == spec)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def ran_last(path: Path, suffix: str) -> bool:
    got = lines(path)
    return bool(got) and got[-1].endswith(suffix)


def largest_admitted_payload(name: str, limit: int) -> int:
    """Serf checks name + payload and the encoded message against the limit."""
    size = limit - len(name)
    while len(encode(UserEvent(2**32, name, b"v" * size, False))) > limit:
        size -= 1
    return size


def test_user_event_runs_each_handler_exactly_once(tmp_path: Path) -> None:
    trio.run(user_event_once, tmp_path)


async def user_event_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    # one file per node: "<ltime> <payload>" for every run of the deploy handler
    record = f'echo "$SERF_USER_LTIME $(cat)" >> {runs}/$SERF_SELF_NAME'
    handler = f"--event-handler=user:deploy={record}"
    agents = [make_agent(tmp_path, n, handler) for n in ("a", "b", "c")]
    with trio.fail_after(60):
        async with cluster(*agents) as (nursery, _):
            a = agents[0]
            stream = a.events("user:deploy")
            payload = b"v" * largest_admitted_payload("deploy", 512)
            await a.user_event("deploy", payload, False)
            rec = await stream.__anext__()
            assert isinstance(rec, UserEventRecord) and rec.payload == payload
            await wait_until(lambda: all(len(lines(runs / n)) == 1 for n in ("a", "b", "c")))
            # a late joiner with replay gets the old event once, and its push/pull hands the
            # event back to a, which must not run it again
            d = make_agent(tmp_path, "d", handler)
            await nursery.start(run_agent, d)
            assert a.addr is not None
            await d.join([f"{a.addr.host}:{a.addr.port}"], True)
            await wait_until(lambda: len(lines(runs / "d")) == 1)
            # Every way the event could reach a node again, made to happen now: d pushes/pulls
            # with a, b and c (a join with replay: both ends merge the other's whole event
            # buffer), then no broadcast is left to gossip anywhere.
            assert await d.join([host_port(x) for x in agents], True) == 3
            await wait_until(lambda: broadcasts_drained(x.stats() for x in (*agents, d)))
            # A barrier: a node's handler runs its events one at a time in arrival order, so a
            # second run of the first event would be written before this one.
            await a.user_event("deploy", b"after", False)
            names = ("a", "b", "c", "d")
            await wait_until(lambda: all(ran_last(runs / n, " after") for n in names))
            for n in names:
                got = lines(runs / n)  # exactly two runs: nothing replayed in between
                assert len(got) == 2 and got[0].endswith("v" * 10), (n, got)


def test_query_collects_every_handler_response(tmp_path: Path) -> None:
    trio.run(query_all, tmp_path)


async def query_all(tmp_path: Path) -> None:
    handler = '--event-handler=query:load=echo "load of $SERF_SELF_NAME"'
    agents = [make_agent(tmp_path, n, handler) for n in ("a", "b", "c")]
    with trio.fail_after(60):
        async with cluster(*agents):
            a = agents[0]
            stream = b_stream = agents[1].events("query")
            recs: list[QueryRecord] = []
            async for rec in a.query(QueryParams("load", b"", request_ack=True, timeout=2.0)):
                recs.append(rec)
            acks = {r.from_ for r in recs if r.type == "ack"}
            responses = {r.from_: r.payload for r in recs if r.type == "response"}
            assert acks == {"a", "b", "c"}
            assert responses == {n: f"load of {n}\n".encode() for n in ("a", "b", "c")}
            assert [r.type for r in recs].count("done") == 1 and recs[-1].type == "done"
            # RPC streams see the query with a token; the handler answered first
            qrec = await stream.__anext__()
            assert isinstance(qrec, QueryEventRecord) and qrec.name == "load"
            assert b_stream is stream
            # a node filter limits who answers
            only_c = [
                r async for r in a.query(QueryParams("load", b"", filter_nodes=("c",), timeout=1.0))
            ]
            assert {r.from_ for r in only_c if r.type == "response"} == {"c"}


def test_hanging_handler_is_killed_and_membership_carries_on(tmp_path: Path) -> None:
    trio.run(hanging_handler, tmp_path)


async def hanging_handler(tmp_path: Path) -> None:
    marker = tmp_path / "after"
    a = make_agent(
        tmp_path,
        "a",
        "--event-handler=user:hang=sleep 600",
        f"--event-handler=user:next=echo ran >> {marker}",
        "--handler-timeout=1s",
        "--handler-kill-grace=200ms",
    )
    b = make_agent(tmp_path, "b")
    with trio.fail_after(60), capture_logs() as logs:
        async with cluster(a, b) as (nursery, _):
            t0 = trio.current_time()
            await a.user_event("hang", b"", False)
            # while the script hangs, membership works: a third node joins and is seen
            c = make_agent(tmp_path, "c")
            await nursery.start(run_agent, c)
            assert a.addr is not None
            await c.join([f"{a.addr.host}:{a.addr.port}"], False)
            await wait_until(lambda: alive(a) == {"a", "b", "c"})
            await a.user_event("next", b"", False)  # another handler is not held up
            await wait_until(lambda: lines(marker) == ["ran"])
            await wait_until(lambda: handler_timeouts(a, "user:hang=sleep 600") == 1)
            assert trio.current_time() - t0 < 10
            timeouts = [e for e in logs if e["event"] == "handler_timeout"]
            assert len(timeouts) == 1 and timeouts[0]["timeout"] == 1.0


def test_crashing_handler_is_logged_and_the_next_event_runs(tmp_path: Path) -> None:
    trio.run(crashing_handler, tmp_path)


async def crashing_handler(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = tmp_path / "h.sh"
    script.write_text(
        f'read p\nif [ "$p" = boom ]; then echo "it broke" >&2; exit 3; fi\necho "$p" >> {out}\n'
    )
    a = make_agent(tmp_path, "a", f"--event-handler=user:job=sh {script}")
    with trio.fail_after(30), capture_logs() as logs:
        async with cluster(a):
            await a.user_event("job", b"boom", False)
            await a.user_event("job", b"fine", False)
            await wait_until(lambda: lines(out) == ["fine"])
            failed = [e for e in logs if e["event"] == "handler_failed"]
            assert len(failed) == 1
            assert failed[0]["exit_code"] == 3 and "it broke" in failed[0]["output_tail"]
            assert alive(a) == {"a"}


def test_tags_change_is_a_member_update_everywhere(tmp_path: Path) -> None:
    trio.run(tags_update, tmp_path)


async def tags_update(tmp_path: Path) -> None:
    agents = [make_agent(tmp_path, n) for n in ("a", "b", "c")]
    with trio.fail_after(60):
        async with cluster(*agents):
            a, b, c = agents
            streams = [b.events("member-update"), c.events("member-update")]
            await a.set_tags({"role": "db"}, [])
            for stream in streams:
                rec = await stream.__anext__()
                assert isinstance(rec, MemberEventRecord)
                assert [(m.name, m.tags) for m in rec.members] == [("a", {"role": "db"})]
            assert a.stats()["tags"] == {"role": "db"}


def test_force_leave_turns_failed_into_left(tmp_path: Path) -> None:
    trio.run(force_leave, tmp_path)


async def force_leave(tmp_path: Path) -> None:
    agents = [make_agent(tmp_path, n) for n in ("a", "b", "c")]
    with trio.fail_after(90):
        async with cluster(*agents) as (_, scopes):
            a, b, _c = agents
            scopes[2].cancel()  # c crashes: no leave
            await wait_until(lambda: status_of(a, "c") == "failed", within=40)
            await wait_until(lambda: status_of(b, "c") == "failed", within=40)
            await a.force_leave("c", False)
            await wait_until(lambda: status_of(a, "c") == "left")
            await wait_until(lambda: status_of(b, "c") == "left")
            assert a.stats()["serf"]["left"] == "1"


def test_leave_then_restart_with_the_same_name_is_alive_everywhere(tmp_path: Path) -> None:
    trio.run(leave_restart, tmp_path)


async def leave_restart(tmp_path: Path) -> None:
    port = free_port()
    agents = [make_agent(tmp_path, "a"), make_agent(tmp_path, "b", port=port)]
    agents.append(make_agent(tmp_path, "c"))
    with trio.fail_after(90):
        async with cluster(*agents) as (nursery, _):
            a, b, c = agents
            await b.leave()
            await wait_until(lambda: status_of(a, "b") == "left")
            await wait_until(lambda: status_of(c, "b") == "left")
            await trio.sleep(1.0)  # the scenario: restart one second after the leave
            b2 = make_agent(tmp_path, "b", port=port)
            await nursery.start(run_agent, b2)
            assert a.addr is not None
            t0 = trio.current_time()
            await b2.join([f"{a.addr.host}:{a.addr.port}"], False)
            for ag in (a, b2, c):
                await wait_until(lambda ag=ag: alive(ag) == {"a", "b", "c"})  # type: ignore[misc]
            assert trio.current_time() - t0 < 10
            # ...and it stays alive: no stale leave intent wins later.  Wait until no intent is
            # left to gossip anywhere, then push/pull every pair (a join: both ends merge the
            # other's member clocks and left members).
            await wait_until(lambda: broadcasts_drained(x.stats() for x in (a, b2, c)))
            assert await b2.join([host_port(a), host_port(c)], False) == 2
            assert await c.join([host_port(a)], False) == 1
            for ag in (a, b2, c):
                assert alive(ag) == {"a", "b", "c"}, (ag.node_name, ag.members())
