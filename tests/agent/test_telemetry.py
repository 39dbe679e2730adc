"""``statsd_addr`` / ``statsite_addr``: go-metrics' line format and Serf's names (checked against
lines captured from the real Serf agent), the counter deltas, datagram packing, both sinks on
loopback (never blocking, reconnecting), and an agent cluster whose datagrams say what happened."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from agent_harness import make_agent
from helpers import wait_until

from serf_trio.agent import telemetry as t
from serf_trio.agent.config import IGNORED_KEYS, ConfigError, load
from serf_trio.rpc.api import QueryParams
from serf_trio.runtime.resolve import HostPort
from serf_trio.runtime.stats import StatsRegistry

# Lines of the real Serf 0.9.4 agent (statsd_addr set; two agents, a user event `hello`, a
# query `q1`, the peer SIGKILLed), the first line seen for each name; its host was `vm`.
SERF_CAPTURE = """\
serf-agent.agent.ipc.accept:1.000000|c
serf-agent.agent.ipc.command:1.000000|c
serf-agent.memberlist.degraded.probe:1.000000|c
serf-agent.memberlist.gossip:0.173488|ms
serf-agent.memberlist.msg.alive:1.000000|c
serf-agent.memberlist.msg.dead:1.000000|c
serf-agent.memberlist.msg.suspect:1.000000|c
serf-agent.memberlist.probeNode:1.603984|ms
serf-agent.memberlist.pushPullNode:0.948581|ms
serf-agent.memberlist.tcp.connect:1.000000|c
serf-agent.memberlist.tcp.sent:216.000000|c
serf-agent.memberlist.udp.received:133.000000|c
serf-agent.memberlist.udp.sent:152.000000|c
serf-agent.runtime.gc_pause_ns:105307.000000|ms
serf-agent.serf.coordinate.adjustment-ms:0.236208|ms
serf-agent.serf.events:1.000000|c
serf-agent.serf.events.hello:1.000000|c
serf-agent.serf.member.failed:1.000000|c
serf-agent.serf.member.join:1.000000|c
serf-agent.serf.msgs.received:18.000000|ms
serf-agent.serf.msgs.sent:18.000000|ms
serf-agent.serf.queries:1.000000|c
serf-agent.serf.queries.q1:1.000000|c
serf-agent.serf.query_acks:1.000000|c
serf-agent.vm.memberlist.health.score:1.000000|g
serf-agent.vm.runtime.alloc_bytes:1786736.000000|g
serf-agent.vm.runtime.free_count:385.000000|g
serf-agent.vm.runtime.heap_objects:4964.000000|g
serf-agent.vm.runtime.malloc_count:5349.000000|g
serf-agent.vm.runtime.num_goroutines:23.000000|g
serf-agent.vm.runtime.sys_bytes:13220880.000000|g
serf-agent.vm.runtime.total_gc_pause_ns:0.000000|g
serf-agent.vm.runtime.total_gc_runs:0.000000|g
""".splitlines()

CAPTURE_LINE = re.compile(r"^serf-agent\.(?P<name>[^:]+):(?P<value>[0-9.]+)\|(?P<kind>c|g|ms)$")
# go-metrics' line: prefix, a name without ':' or spaces, %f (six decimals), a type.
LINE = re.compile(r"^serf-agent\.(?P<name>[^:|\s]+):(?P<value>-?\d+\.\d{6})\|(?P<kind>c|g|ms)$")

# Timers and samples (|ms) are not sent; the Go runtime gauges have no Python counterpart.
NOT_SENT = {
    "memberlist.gossip",
    "memberlist.probeNode",
    "memberlist.pushPullNode",
    "runtime.gc_pause_ns",
    "serf.coordinate.adjustment-ms",
    "serf.msgs.received",
    "serf.msgs.sent",
}


# -- format ---------------------------------------------------------------------------------


def test_our_lines_are_byte_for_byte_the_captured_ones() -> None:
    for line in SERF_CAPTURE:
        m = CAPTURE_LINE.match(line)
        assert m, line
        assert LINE.match(line), line  # the capture fits the pattern the agent test uses
        name, value, kind = m["name"], float(m["value"]), m["kind"]
        if kind == "c":
            assert t.counter_line(name, value) == line
        elif kind == "g":
            host, _, gauge = name.partition(".")
            assert t.gauge_line(host, gauge, value) == line


def test_the_name_table_covers_every_captured_counter_and_serf_gauge() -> None:
    ours_c = set(t.COUNTERS.values()) | {"serf.events.hello", "serf.queries.q1"}
    ours_g = set(t.GAUGES.values())
    for line in SERF_CAPTURE:
        m = CAPTURE_LINE.match(line)
        assert m
        name, kind = m["name"], m["kind"]
        if kind == "c":
            assert name in ours_c, name
        elif kind == "g":
            gauge = name.partition(".")[2]
            assert gauge in ours_g or gauge.startswith("runtime."), gauge
        else:
            assert name in NOT_SENT, name
    # names Serf has that the capture did not trigger
    for name in ("serf.member.update", "serf.member.left", "serf.member.flap"):
        assert name in ours_c
    assert {"serf.queue.Intent", "serf.queue.Event", "serf.queue.Query"} <= ours_g


def test_values_are_float32_with_six_decimals_and_names_are_flattened() -> None:
    assert t.format_value(1) == "1.000000"
    assert t.format_value(0.5) == "0.500000"
    assert t.format_value(123456789) == "123456792.000000"  # float32, as go-metrics sends it
    assert t.counter_line("serf.events.a b:c", 2) == "serf-agent.serf.events.a_b_c:2.000000|c"
    assert t.counter_line("serf.events.x|y\nz", 1) == "serf-agent.serf.events.x_y_z:1.000000|c"
    assert t.gauge_line("host.example.com", "serf.queue.Event", 0) == (
        "serf-agent.host.example.com.serf.queue.Event:0.000000|g"
    )


def test_pack_keeps_lines_whole_and_datagrams_within_1400_bytes() -> None:
    lines = [t.counter_line(f"serf.events.name-{i:03d}", i + 1) for i in range(200)]
    datagrams = t.pack(lines)
    assert len(datagrams) > 1
    assert all(len(d) <= t.MAX_DATAGRAM and d.endswith(b"\n") for d in datagrams)
    assert b"".join(datagrams).decode().splitlines() == lines
    long = "serf.events." + "x" * 2000
    assert t.pack([t.counter_line(long, 1), "a"]) == [
        (t.counter_line(long, 1) + "\n").encode(),
        b"a\n",
    ]
    assert t.pack([]) == []


# -- deltas -----------------------------------------------------------------------------------


def test_counters_are_sent_as_nonzero_increases_and_gauges_as_values() -> None:
    state: dict[str, dict[str, object]] = {
        "serf": {
            "user_events_received": 2,
            "user_events_by_name": {"hello": 2},
            "member_events": {"member-join": 1},
            "intent_queue": 3,
            "members": 9,  # not in the table: not sent
        },
        "memberlist": {"health_score": 0, "messages_in": {"alive": 4}},
    }
    reg = StatsRegistry()
    reg.register("serf", lambda: state["serf"])
    reg.register("memberlist", lambda: state["memberlist"])
    tel = t.Telemetry(reg, hostname="h")

    def sent() -> dict[str, str]:
        out = {}
        for line in tel.collect():
            m = LINE.match(line)
            assert m, line
            out[m["name"]] = f"{m['value']}|{m['kind']}"
        return out

    first = sent()
    assert first["serf.events"] == first["serf.events.hello"] == "2.000000|c"
    assert first["serf.member.join"] == "1.000000|c"
    assert first["memberlist.msg.alive"] == "4.000000|c"
    assert first["h.serf.queue.Intent"] == "3.000000|g"
    assert first["h.memberlist.health.score"] == "0.000000|g"
    assert "h.runtime.cpu_seconds" in first and "h.runtime.num_threads" in first
    assert not any("members" in n for n in first)
    # nothing happened: no counter line, the gauges again
    second = sent()
    assert not [n for n, v in second.items() if v.endswith("|c")]
    assert second["h.serf.queue.Intent"] == "3.000000|g"
    state["serf"] = {
        "user_events_received": 5,
        "user_events_by_name": {"hello": 2, "deploy": 3},
        "member_events": {"member-join": 1, "member-failed": 1},
        "intent_queue": 0,
    }
    third = sent()
    assert third["serf.events"] == "3.000000|c" and third["serf.events.deploy"] == "3.000000|c"
    assert "serf.events.hello" not in third and "serf.member.join" not in third
    assert third["serf.member.failed"] == "1.000000|c"
    assert third["h.serf.queue.Intent"] == "0.000000|g"
    state["serf"] = {"user_events_received": 1}  # went down: a reset, its value is the increase
    assert sent()["serf.events"] == "1.000000|c"


def test_a_missing_section_or_field_is_skipped_and_a_failing_one_costs_one_flush() -> None:
    reg = StatsRegistry()
    reg.register("serf", lambda: None)  # the core is not there yet
    tel = t.Telemetry(reg, hostname="h")
    assert all(line.endswith("|g") for line in tel.collect())

    def broken() -> dict[str, int]:
        raise RuntimeError("boom")

    reg.register("rpc", broken)
    tel.flush()
    assert tel.statistics().flush_errors == 1 and tel.statistics().flushes == 0


# -- config -----------------------------------------------------------------------------------


def test_config_keys_parse_addresses_and_empty_is_off(tmp_path: Path) -> None:
    assert "statsd_addr" not in IGNORED_KEYS and "statsite_addr" not in IGNORED_KEYS
    doc = {"statsd_addr": "metrics.example:9125", "statsite_addr": "127.0.0.1"}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    loaded = load(["--config-file", str(path)], hostname="h")
    assert loaded.config.statsd_addr == HostPort("metrics.example", 9125)
    assert loaded.config.statsite_addr == HostPort("127.0.0.1", 8125)
    assert not [n for n in loaded.notices if n.key.startswith("stats")]
    path.write_text(json.dumps({"statsd_addr": ""}))
    cfg = load(["--config-file", str(path)], hostname="h").config
    assert cfg.statsd_addr is None and t.from_config(cfg, StatsRegistry()) is None
    path.write_text(json.dumps({"statsd_addr": "bad host:1"}))
    with pytest.raises(ConfigError, match="statsd_addr"):
        load(["--config-file", str(path)], hostname="h")


# -- sinks on loopback ------------------------------------------------------------------------


def counting_registry() -> tuple[StatsRegistry, Callable[[], None]]:
    """A registry whose one counter (``serf.events``) goes up by one per ``bump``."""
    n = [0]
    reg = StatsRegistry()
    reg.register("serf", lambda: {"user_events_received": n[0]})

    def bump() -> None:
        n[0] += 1

    return reg, bump


@pytest.mark.realnet
def test_statsite_gets_the_lines_over_tcp_and_the_sink_reconnects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(t, "BACKOFF_MIN", 0.05)
    trio.run(statsite_reconnects)


async def statsite_reconnects() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    reg, bump = counting_registry()
    tel = t.Telemetry(reg, statsite=HostPort("127.0.0.1", port), hostname="h", interval=0.05)
    assert tel.statsite is not None
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(tel.run)
            for round_ in (1, 2):
                stream = await listeners[0].accept()
                bump()
                buf = b""
                while b"serf-agent.serf.events:1.000000|c\n" not in buf:
                    buf += await stream.receive_some(65536)
                lines = buf.decode().splitlines()
                assert all(LINE.match(line) for line in lines[:-1]), lines
                assert tel.statsite.stats.connects == round_
                await stream.aclose()  # statsite goes away: the sink connects again
            stats = reg.read("telemetry")
            assert tel.statsite.stats.lines_sent > 0 and tel.statistics().flushes > 0
            assert stats["statsite.lines_sent"] == tel.statsite.stats.lines_sent
            nursery.cancel_scope.cancel()
    for listener in listeners:
        await listener.aclose()


@pytest.mark.realnet
def test_nobody_listening_drops_and_counts_and_never_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(t, "BACKOFF_MIN", 0.05)
    monkeypatch.setattr(t, "BACKOFF_MAX", 0.1)
    trio.run(nobody_listening)


async def nobody_listening() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there (TCP or UDP)
    reg, bump = counting_registry()
    closed = HostPort("127.0.0.1", port)
    tel = t.Telemetry(reg, statsd=closed, statsite=closed, hostname="h", interval=0.02)
    assert tel.statsd is not None and tel.statsite is not None
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(tel.run)
            for _ in range(30):
                bump()
                await trio.sleep(0.02)
            await wait_until(lambda: tel.statsd is not None and tel.statsd.stats.send_errors > 0)
            await wait_until(
                lambda: tel.statsite is not None and tel.statsite.stats.connect_failures > 1
            )
            assert tel.statsite.stats.lines_dropped > 0 and tel.statsite.stats.lines_sent == 0
            assert tel.statsd.stats.lines_dropped > 0
            nursery.cancel_scope.cancel()


# -- the agent ------------------------------------------------------------------------------


class Collector:
    """A statsd server on 127.0.0.1: every datagram received, and its lines."""

    def __init__(self) -> None:
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.datagrams: list[bytes] = []

    async def bind(self) -> int:
        await self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    async def run(self) -> None:
        while True:
            data, _ = await self.sock.recvfrom(65536)
            self.datagrams.append(data)

    @property
    def lines(self) -> list[str]:
        return [line for d in self.datagrams for line in d.decode().splitlines()]

    def values(self, name: str, kind: str = "c") -> list[float]:
        out = []
        for line in self.lines:
            m = LINE.match(line)
            if m and m["name"] == name and m["kind"] == kind:
                out.append(float(m["value"]))
        return out

    def total(self, name: str) -> float:
        return sum(self.values(name))


@pytest.mark.realnet
def test_agent_sends_serf_names_to_statsd(tmp_path: Path) -> None:
    trio.run(agent_to_statsd, tmp_path)


async def agent_to_statsd(tmp_path: Path) -> None:
    host = socket.gethostname()
    statsd = Collector()
    port = await statsd.bind()
    config = tmp_path / "telemetry.json"
    config.write_text(json.dumps({"statsd_addr": f"127.0.0.1:{port}"}))
    a = make_agent(tmp_path, "a", f"--config-file={config}")
    b = make_agent(tmp_path, "b")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(statsd.run)
            await nursery.start(a.run)
            # the first flush (with a's own join, if it is counted) comes before b's join
            await wait_until(lambda: bool(statsd.datagrams))
            own_join = statsd.total("serf.member.join")
            assert a.addr is not None
            b_scope = trio.CancelScope()
            nursery.start_soon(run_in, b_scope, b)
            await wait_until(lambda: b.addr is not None)
            assert await b.join([f"{a.addr.host}:{a.addr.port}"], replay=False) == 1
            await wait_until(lambda: statsd.total("serf.member.join") >= own_join + 1)
            await b.user_event("hello", b"x", False)
            async for rec in b.query(QueryParams("q1", b"", timeout=1.0)):
                if rec.type == "done":
                    break
            await wait_until(lambda: statsd.total("serf.queries.q1") >= 1)
            await wait_until(lambda: statsd.total("serf.events.hello") >= 1)
            # b stops without leaving (its task is cancelled): a sees it fail
            b_scope.cancel()
            await wait_until(lambda: statsd.total("serf.member.failed") >= 1, within=30)
            await trio.to_thread.run_sync(rpc_members, tmp_path / "a.sock")
            await wait_until(lambda: statsd.total("agent.ipc.command") >= 2)
            # Two more flushes, and every line sent so far received: nothing below may still
            # be on its way (the exact totals would otherwise pass or fail by timing).
            flushes = int(a.stats()["telemetry"]["flushes"])
            await wait_until(lambda: int(a.stats()["telemetry"]["flushes"]) >= flushes + 2)
            await wait_until(
                lambda: len(statsd.lines) >= int(a.stats()["telemetry"]["statsd.lines_sent"])
            )
            telemetry = a.stats()["telemetry"]
            nursery.cancel_scope.cancel()

    lines = statsd.lines
    assert lines and all(LINE.match(line) for line in lines), [
        line for line in lines if not LINE.match(line)
    ]
    assert all(len(d) <= t.MAX_DATAGRAM and d.endswith(b"\n") for d in statsd.datagrams)
    for line in (
        "serf-agent.serf.member.join:1.000000|c",
        "serf-agent.serf.events.hello:1.000000|c",
        "serf-agent.serf.queries.q1:1.000000|c",
        "serf-agent.serf.member.failed:1.000000|c",
        "serf-agent.agent.ipc.accept:1.000000|c",
    ):
        assert line in lines, line
    assert statsd.total("serf.member.join") == own_join + 1  # (a itself, then) b
    assert statsd.total("serf.events.hello") == 1 and statsd.total("serf.events") == 1
    assert statsd.total("serf.queries.q1") == 1 and statsd.total("serf.queries") == 1
    assert statsd.total("serf.member.failed") == 1
    assert statsd.total("agent.ipc.accept") == 1 and statsd.total("agent.ipc.command") >= 2
    assert statsd.total("memberlist.msg.alive") >= 1
    assert statsd.total("memberlist.udp.sent") > 0 and statsd.total("memberlist.udp.received") > 0
    assert statsd.total("memberlist.tcp.accept") >= 1  # b's join: a push/pull to a
    # counters carry no host name; gauges do
    assert not [line for line in lines if line.endswith("|c") and f".{host}." in line[:-2]]
    assert statsd.values(f"{host}.memberlist.health.score", "g")
    for q in ("Intent", "Event", "Query"):
        assert statsd.values(f"{host}.serf.queue.{q}", "g")
    for g in ("cpu_seconds", "max_rss_bytes", "gc_collections", "num_threads", "num_tasks"):
        assert statsd.values(f"{host}.runtime.{g}", "g"), g
    assert int(telemetry["statsd.lines_sent"]) > 0
    assert telemetry["statsd.lines_dropped"] == "0"


async def run_in(scope: trio.CancelScope, agent: object) -> None:
    with scope:
        await agent.run()  # type: ignore[attr-defined]


def rpc_members(path: Path) -> None:
    from serf_trio.rpc.client import RpcClient

    with RpcClient(socket_path=str(path), timeout=5.0) as client:
        assert {m.name for m in client.members()} >= {"a"}


def test_docs_metrics_lists_every_name_of_the_table() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    for name in [*t.COUNTERS.values(), *t.GAUGES.values(), *t.COUNTERS, *t.GAUGES]:
        assert f"| `{name}` |" in doc, name
    for prefix in t.COUNTER_FAMILIES:
        assert f"`{prefix}NAME`" in doc, prefix
    for gauge in t.process_gauges():
        assert f"| `{gauge}` |" in doc, gauge
