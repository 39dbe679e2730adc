"""RpcServer with a fake agent on a temporary Unix socket, driven by RpcClient (in a worker
thread) and by raw msgpack connections.  Every test is bounded by ``trio.fail_after``."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from serf_trio.rpc import protocol as p
from serf_trio.rpc.api import (
    MemberEventRecord,
    QueryEventRecord,
    QueryParams,
    QueryRecord,
    UserEventRecord,
)
from serf_trio.rpc.client import RpcClient, RpcError
from serf_trio.rpc.server import RpcServeError, RpcServer
from serf_trio.serf.coordinate import Coordinate

from .fake_agent import FakeAgent, default_members
from .rpc_harness import EOF, Raw, client, in_thread, running_server

LIMIT = 10  # seconds: every test finishes far sooner


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        with trio.fail_after(LIMIT):
            await body()

    trio.run(main)


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "rpc.sock"


# -- commands through the client -----------------------------------------------------------------


def test_client_commands_reach_the_agent(sock_path: Path) -> None:
    agent = FakeAgent()
    agent.coordinates["n2"] = Coordinate((0.5,) * 8, 0.25, 0.001, 1e-5)

    async def body() -> None:
        async with running_server(agent, sock_path):
            c = await client(sock_path)
            try:
                members = await in_thread(c.members)
                assert [m.name for m in members] == ["n1", "n2", "n3"]
                assert members[0].addr == bytes([127, 0, 0, 11]) and members[0].port == 7946
                assert await in_thread(lambda: c.join(["127.0.0.12:7947"], True)) == 1
                await in_thread(lambda: c.tags(set={"env": "prod"}, delete=["dc"]))
                await in_thread(lambda: c.event("deploy", b"v1", coalesce=False))
                await in_thread(lambda: c.force_leave("n3", prune=True))
                assert (await in_thread(c.stats))["serf"] == {"members": "3"}
                assert await in_thread(lambda: c.get_coordinate("n2")) == agent.coordinates["n2"]
                assert await in_thread(lambda: c.get_coordinate("zz")) is None
                kr = await in_thread(c.list_keys)
                assert kr.error == "1/1 nodes reported failure"
                assert kr.messages == {"n1": "Keyring is empty (encryption not enabled)"}
                kr = await in_thread(lambda: c.install_key("a2V5"))
                assert kr.num_err == 1
            finally:
                c.close()

    run(body)
    assert agent.calls == [
        ("join", (["127.0.0.12:7947"], True)),
        ("set_tags", ({"env": "prod"}, ["dc"])),
        ("user_event", ("deploy", b"v1", False)),
        ("force_leave", ("n3", True)),
        ("key", ("list", "")),
        ("key", ("install", "a2V5")),
    ]


@pytest.mark.parametrize(
    ("name", "status", "tags", "expected"),
    [
        ("", "", {}, ["n1", "n2", "n3"]),
        ("n[12]", "", {}, ["n1", "n2"]),
        ("n", "", {}, []),  # anchored: "n" does not match "n1"
        ("", "alive", {}, ["n1", "n2"]),
        ("", "ali", {}, []),
        ("", "", {"role": "w.*"}, ["n2"]),
        ("", "", {"dc": ""}, ["n3"]),  # a missing tag is tested as ""
        ("", "", {"role": "lb|db"}, ["n1", "n3"]),
        ("n1|n3", "failed", {}, ["n3"]),
    ],
)
def test_members_filtered(
    sock_path: Path, name: str, status: str, tags: dict[str, str], expected: list[str]
) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path):
            c = await client(sock_path)
            with c:
                got = await in_thread(lambda: c.members_filtered(name, status, tags))
            assert [m.name for m in got] == expected

    run(body)


def test_agent_errors_are_passed_verbatim(sock_path: Path) -> None:
    agent = FakeAgent(join_result="1 error occurred: dial tcp: connection refused")
    agent.event_error = "user event exceeds configured limit of 512 bytes before encoding"
    agent.query_error = "Feature not supported"

    async def body() -> None:
        async with running_server(agent, sock_path):
            c = await client(sock_path)
            with c:
                with pytest.raises(RpcError, match=r"^1 error occurred: dial tcp"):
                    await in_thread(lambda: c.join(["x"]))
                with pytest.raises(RpcError, match=r"^user event exceeds"):
                    await in_thread(lambda: c.event("e", b"x" * 600))
                with pytest.raises(RpcError, match=r"^Feature not supported$"):
                    await in_thread(lambda: c.query(QueryParams("q", b"")))
                with pytest.raises(RpcError, match=r"^No pending queries matching ID$"):
                    await in_thread(lambda: c.respond(7, b"x"))
                with pytest.raises(RpcError, match=r"^Unknown log level: NOPE$"):
                    await in_thread(lambda: c.monitor("nope"))
                with pytest.raises(RpcError, match=r"^Invalid event filter$"):
                    await in_thread(lambda: c.stream("member-join,bogus"))
                # the connection is still usable after errors
                assert len(await in_thread(c.members)) == 3

    run(body)


def test_query_streams_acks_responses_and_one_done(sock_path: Path) -> None:
    agent = FakeAgent()
    agent.query_records = [
        QueryRecord("ack", "n2"),
        QueryRecord("response", "n2", b"load-of-n2"),
        QueryRecord("done"),
    ]

    async def body() -> None:
        async with running_server(agent, sock_path):
            c = await client(sock_path)
            with c:
                params = QueryParams(
                    "load", b"p", ("n2",), {"role": "web"}, True, relay_factor=1, timeout=2.5
                )
                recs = await in_thread(lambda: list(c.query(params)))
                assert recs == agent.query_records
                assert len(await in_thread(c.members)) == 3

    run(body)
    assert agent.calls == [
        ("query", QueryParams("load", b"p", ("n2",), {"role": "web"}, True, 1, 2.5))
    ]


def test_query_without_done_from_the_agent_still_ends_with_done(sock_path: Path) -> None:
    agent = FakeAgent()
    agent.query_records = [QueryRecord("response", "n1", b"x")]

    async def body() -> None:
        async with running_server(agent, sock_path):
            c = await client(sock_path)
            with c:
                recs = await in_thread(lambda: list(c.query(QueryParams("q", b""))))
                assert [r.type for r in recs] == ["response", "done"]

    run(body)


def test_stream_records_respond_mapping_and_stop(sock_path: Path) -> None:
    agent = FakeAgent()
    member = default_members()[1]

    async def body() -> None:
        async with running_server(agent, sock_path):
            c = await client(sock_path)
            with c:
                events = await in_thread(lambda: c.stream("member-join,query:load,user"))
                assert agent.calls == [("events", "member-join,query:load,user")]
                await trio.testing.wait_all_tasks_blocked()
                agent.push_event(MemberEventRecord("member-join", (member,)))
                agent.push_event(QueryEventRecord("load", b"q1", 7, token=900))
                agent.push_event(QueryEventRecord("load", b"q2", 8, token=901))
                agent.push_event(UserEventRecord("deploy", b"v2", 9, True))
                got = [await in_thread(lambda: next(events)) for _ in range(4)]
                assert got[0] == MemberEventRecord("member-join", (member,))
                # per-connection query IDs 1, 2 stand for the agent's tokens 900, 901
                assert got[1] == QueryEventRecord("load", b"q1", 7, token=1)
                assert got[2] == QueryEventRecord("load", b"q2", 8, token=2)
                assert got[3] == UserEventRecord("deploy", b"v2", 9, True)
                await in_thread(lambda: c.respond(2, b"answer"))
                await in_thread(events.close)  # sends stop
                await trio.testing.wait_all_tasks_blocked()
                assert agent.live_event_subscribers() == 0
                assert len(await in_thread(c.members)) == 3

    run(body)
    assert ("respond", (901, b"answer")) in agent.calls


def test_monitor_replays_backlog_then_live_lines_and_only_one_per_connection(
    sock_path: Path,
) -> None:
    agent = FakeAgent(log_backlog=["2026/11/29 04:59:18 [INFO] agent: Serf agent starting"])

    async def body() -> None:
        async with running_server(agent, sock_path):
            c = await client(sock_path)
            with c:
                lines = await in_thread(lambda: c.monitor("debug"))
                assert agent.calls == [("logs", "DEBUG")]
                assert (await in_thread(lambda: next(lines))).endswith("Serf agent starting")
                agent.push_log("2026/11/29 04:59:19 [DEBUG] memberlist: probe")
                assert (await in_thread(lambda: next(lines))).endswith("probe")
                with pytest.raises(RpcError, match=r"^Monitor already exists$"):
                    await in_thread(lambda: c.monitor("info"))
                await in_thread(lines.close)
                again = await in_thread(lambda: c.monitor("info"))  # stop freed the slot
                await in_thread(again.close)

    run(body)


def test_leave_replies_then_calls_agent_leave(sock_path: Path) -> None:
    agent = FakeAgent()

    async def body() -> None:
        async with running_server(agent, sock_path):
            c = await client(sock_path)
            with c:
                await in_thread(c.leave)
                await agent.left.wait()
                with pytest.raises(
                    RpcError, match=r"closed the connection|connection to the agent failed"
                ):
                    await in_thread(c.members)

    run(body)
    assert agent.calls == [("leave", None)]


# -- connection rules (raw) ------------------------------------------------------------------


def test_pipelined_requests_are_answered_by_seq(sock_path: Path) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path):
            raw = await Raw.open(sock_path)
            await raw.send(
                {"Command": "handshake", "Seq": 10}, {"Version": 1},
                {"Command": "members", "Seq": 11},
                {"Command": "stats", "Seq": 12},
                {"Command": "stop", "Seq": 13}, {"Stop": 99},
            )  # fmt: skip
            assert await raw.recv() == {"Error": "", "Seq": 10}
            assert await raw.recv() == {"Error": "", "Seq": 11}
            assert len((await raw.recv())["Members"]) == 3
            assert await raw.recv() == {"Error": "", "Seq": 12}
            assert (await raw.recv())["agent"] == {"name": "n1"}
            assert await raw.recv() == {"Error": "", "Seq": 13}
            await raw.aclose()

    run(body)


def test_handshake_required_closes_the_connection(sock_path: Path) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path):
            raw = await Raw.open(sock_path)
            await raw.send({"Command": "members", "Seq": 1})
            assert await raw.recv() == {"Error": "Handshake required", "Seq": 1}
            assert await raw.recv() is EOF

    run(body)


def test_handshake_errors_keep_the_connection(sock_path: Path) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path):
            raw = await Raw.open(sock_path)
            await raw.send({"Command": "handshake", "Seq": 1}, {"Version": 2})
            assert await raw.recv() == {"Error": "Unsupported IPC version", "Seq": 1}
            await raw.handshake()
            await raw.send({"Command": "handshake", "Seq": 3}, {"Version": 1})
            assert await raw.recv() == {"Error": "Handshake already performed", "Seq": 3}
            await raw.send({"Command": "bogus-command", "Seq": 4}, {"X": 1})
            assert await raw.recv() == {"Error": "Unsupported command", "Seq": 4}
            assert await raw.recv() is EOF

    run(body)


def test_auth(sock_path: Path) -> None:
    agent = FakeAgent(rpc_auth="s3cr3t")

    async def body() -> None:
        async with running_server(agent, sock_path):
            with pytest.raises(RpcError, match=r"^Invalid authentication token$"):
                await client(sock_path, auth="wrong")
            c = await client(sock_path)
            with c, pytest.raises(RpcError, match=r"^Authentication required$"):
                await in_thread(c.members)
            c = await client(sock_path, auth="s3cr3t")
            with c:
                assert len(await in_thread(c.members_filtered)) == 3
            # raw: one "Authentication required" (the body is consumed), connection kept
            raw = await Raw.open(sock_path)
            await raw.handshake()
            await raw.send(
                {"Command": "members-filtered", "Seq": 2}, {"Name": "", "Status": "", "Tags": {}}
            )
            assert await raw.recv() == {"Error": "Authentication required", "Seq": 2}
            await raw.send({"Command": "auth", "Seq": 3}, {"AuthKey": "s3cr3t"})
            assert await raw.recv() == {"Error": "", "Seq": 3}
            await raw.aclose()

    run(body)
    assert agent.calls == []


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(p.pack(["not", "a", "map"]), id="array-header"),
        pytest.param(p.pack({"Command": 5, "Seq": 1}), id="int-command"),
        pytest.param(
            p.pack({"Command": "event", "Seq": 1}) + p.pack({"Name": b"bin"}), id="bin-str"
        ),
        pytest.param(
            p.pack({"Command": "members-filtered", "Seq": 1}) + p.pack({"Name": "("}), id="regex"
        ),
    ],
)
def test_bad_input_closes_only_that_connection(sock_path: Path, bad: bytes) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path) as (server, _):
            good = await Raw.open(sock_path)
            await good.handshake()
            raw = await Raw.open(sock_path)
            await raw.handshake()
            await raw.send_bytes(bad)
            assert await raw.recv() is EOF  # closed without any answer
            await good.send({"Command": "members", "Seq": 5})
            assert await good.recv() == {"Error": "", "Seq": 5}
            assert len((await good.recv())["Members"]) == 3
            assert server.statistics().protocol_errors == 1
            await good.aclose()

    run(body)


def test_oversized_frame_closes_that_connection(sock_path: Path) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path, max_object=64 * 1024) as (server, _):
            good = await client(sock_path)
            raw = await Raw.open(sock_path)
            await raw.handshake()
            # a 100 KiB event payload: bigger than this server's 64 KiB per-object cap
            huge = p.pack({"Command": "event", "Seq": 1}) + p.pack(
                {"Coalesce": True, "Name": "big", "Payload": b"x" * 100_000}
            )
            with contextlib.suppress(trio.BrokenResourceError):  # the server may hang up first
                await raw.send_bytes(huge)
            assert await raw.recv() is EOF
            with good:
                assert len(await in_thread(good.members)) == 3
            assert server.statistics().protocol_errors == 1

    run(body)


def test_object_over_the_default_request_cap_closes_the_connection(sock_path: Path) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path) as (server, _):
            raw = await Raw.open(sock_path)
            await raw.handshake()
            # an event whose payload is a bin32 that declares 3 MiB: refused once more than the
            # 128 KiB cap of it is buffered
            head = p.pack({"Command": "event", "Seq": 2}) + b"\x83\xa4Name\xa1x\xa8Coalesce\xc2"
            head += b"\xa7Payload\xc6" + (3 << 20).to_bytes(4, "big")
            with contextlib.suppress(trio.BrokenResourceError):
                await raw.send_bytes(head + b"x" * (server.max_object + 100_000))
            assert await raw.recv() is EOF
            assert server.statistics().protocol_errors == 1

    run(body)


def test_slow_stream_consumer_drops_records_without_blocking_the_agent(sock_path: Path) -> None:
    agent = FakeAgent()
    member = default_members()[0]

    async def body() -> None:
        async with running_server(agent, sock_path, out_queue=8) as (server, _):
            raw = await Raw.open(sock_path)
            await raw.handshake()
            await raw.send({"Command": "stream", "Seq": 2}, {"Type": "*"})
            assert await raw.recv() == {"Error": "", "Seq": 2}
            # never read again: kernel buffers and the 8-frame queue fill, then records drop
            for _ in range(100):
                for _ in range(200):  # < the agent's 512-deep subscriber queue
                    agent.push_event(MemberEventRecord("member-update", (member,) * 8))
                await trio.testing.wait_all_tasks_blocked()
            assert agent.dropped == 0  # the agent side never filled up
            assert server.statistics().records_dropped > 0
            other = await client(sock_path)  # and the server still serves others
            with other:
                assert len(await in_thread(other.members)) == 3
            await raw.aclose()

    run(body)


def test_connection_cap(sock_path: Path) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path, max_connections=2) as (server, _):
            a, b = await Raw.open(sock_path), await Raw.open(sock_path)
            await a.handshake()
            await b.handshake()
            c = await Raw.open(sock_path)
            assert await c.recv() is EOF
            assert server.statistics().connections_rejected == 1
            await a.aclose()
            await trio.testing.wait_all_tasks_blocked()
            d = await Raw.open(sock_path)
            await d.handshake()

    run(body)


def test_at_the_cap_a_newcomer_evicts_the_oldest_stranger_never_an_admitted_client(
    sock_path: Path,
) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path, max_connections=3) as (server, _):
            admitted = await Raw.open(sock_path)
            await admitted.handshake()
            old, young = await Raw.open(sock_path), await Raw.open(sock_path)  # never handshake
            await trio.testing.wait_all_tasks_blocked()
            newcomer = await Raw.open(sock_path)
            await newcomer.handshake()  # served: it took the oldest stranger's slot
            assert await old.recv() is EOF
            for raw, seq in ((newcomer, 5), (admitted, 6)):
                await raw.send({"Command": "members", "Seq": seq})
                assert (await raw.recv())["Seq"] == seq
                assert len((await raw.recv())["Members"]) == 3
            # Now three admitted-or-stranger slots: the next newcomer evicts ``young``.
            last = await Raw.open(sock_path)
            await last.handshake()
            assert await young.recv() is EOF
            # Only admitted connections left: a stranger is refused.
            await trio.testing.wait_all_tasks_blocked()
            refused = await Raw.open(sock_path)
            assert await refused.recv() is EOF
            assert server.statistics().connections_rejected == 3

    run(body)


@pytest.mark.parametrize("auth", ["", "s3cr3t"])
def test_a_connection_not_admitted_in_time_is_closed_and_an_admitted_one_kept(
    sock_path: Path, auth: str
) -> None:
    """A stranger that connects and never handshakes (or, with rpc_auth, never authenticates)
    is closed after ``admit_timeout``: idle strangers cannot hold every connection slot."""

    async def body() -> None:
        agent = FakeAgent(rpc_auth=auth)
        async with running_server(agent, sock_path, admit_timeout=0.3) as (server, _):
            kept = await Raw.open(sock_path)
            await kept.handshake()
            if auth:
                await kept.send({"Command": "auth", "Seq": 2}, {"AuthKey": auth})
                assert await kept.recv() == {"Error": "", "Seq": 2}
            idle = await Raw.open(sock_path)
            half = await Raw.open(sock_path)  # handshakes, but never authenticates
            await half.handshake()
            assert await idle.recv() is EOF  # after the deadline (the test's LIMIT bounds it)
            if auth:
                assert await half.recv() is EOF
            # Both deadlines of the admitted connection have passed: it still works.
            await kept.send({"Command": "members", "Seq": 3})
            assert (await kept.recv())["Seq"] == 3
            assert len((await kept.recv())["Members"]) == 3
            assert server.statistics().protocol_errors == (2 if auth else 1)

    run(body)


# -- the socket file -----------------------------------------------------------------------------


def test_socket_file_mode_parent_dir_and_cleanup(sock_path: Path) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path) as (_, bound):
            assert bound.socket_path == str(sock_path) and bound.tcp_addr is None
            st = os.stat(sock_path)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o600
            assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) & 0o077 == 0
            assert sorted(os.listdir(sock_path.parent)) == ["rpc.sock"]  # no temp left

    run(body)
    assert not sock_path.exists()


def test_stale_socket_is_replaced(sock_path: Path) -> None:
    sock_path.parent.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))
    dead.close()  # the file stays, nobody listens
    assert sock_path.exists()

    async def body() -> None:
        async with running_server(FakeAgent(), sock_path):
            c = await client(sock_path)
            with c:
                assert len(await in_thread(c.members)) == 3

    run(body)


def test_live_socket_is_refused(sock_path: Path) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path):
            second = RpcServer(FakeAgent(), socket_path=str(sock_path))
            with pytest.raises(
                RpcServeError,
                match=rf"^cannot listen on the RPC socket {sock_path}: "
                r"another agent is listening on it \(",
            ):
                await second.serve()
            # the first server is untouched
            c = await client(sock_path)
            with c:
                assert len(await in_thread(c.members)) == 3

    run(body)


def test_a_regular_file_is_not_replaced(sock_path: Path) -> None:
    sock_path.parent.mkdir()
    sock_path.write_text("precious")

    async def body() -> None:
        with pytest.raises(RpcServeError, match="is not a socket"):
            await RpcServer(FakeAgent(), socket_path=str(sock_path)).serve()

    run(body)
    assert sock_path.read_text() == "precious"


@pytest.mark.realnet
def test_tcp_listener(sock_path: Path) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), sock_path, tcp=True) as (_, bound):
            assert bound.tcp_addr is not None
            host, port = bound.tcp_addr
            c = await in_thread(lambda: RpcClient(addr=f"{host}:{port}", timeout=5.0))
            with c:
                assert len(await in_thread(c.members)) == 3

    run(body)


def test_an_agent_bug_closes_only_that_connection(sock_path: Path) -> None:
    """An unexpected exception behind one command is logged; the server keeps serving."""

    class BuggyAgent(FakeAgent):
        def stats(self) -> dict[str, dict[str, str]]:
            raise KeyError("oops")

    async def body() -> None:
        async with running_server(BuggyAgent(), sock_path) as (server, _):
            good = await Raw.open(sock_path)
            await good.handshake()
            raw = await Raw.open(sock_path)
            await raw.handshake()
            await raw.send({"Command": "stats", "Seq": 2})
            assert await raw.recv() is EOF
            await good.send({"Command": "members", "Seq": 5})
            assert await good.recv() == {"Error": "", "Seq": 5}
            assert len((await good.recv())["Members"]) == 3
            assert server.statistics().protocol_errors == 1
            await good.aclose()

    run(body)
