"""Prometheus ``/metrics`` (``agent.metrics``): the mapping, the HTTP handler, the lazy import,
and three real agents on loopback whose counters move when things happen."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from agent_harness import make_agent
from helpers import wait_until
from prometheus_client.parser import text_string_to_metric_families

from serf_trio.agent.config import load
from serf_trio.agent.metrics import FAMILIES, PREFIX, answer, make_registry
from serf_trio.rpc.api import QueryParams

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """{(sample name, sorted labels): value} and {family name: type}."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((PREFIX + name, tuple(sorted(labels.items()))), 0.0)


SNAPSHOT = {
    "serf": {"alive": 2, "failed": 1, "member_events.member-join": 3, "user_events_sent": 4},
    "memberlist": {
        "probes_sent": 10,
        "health_score": 1,
        "queue_depth": 2,
        "messages_in.ping": 5,
        "messages_out.ack": 6,
    },
    "transport": {"bytes_in": 100, "tcp_bytes_out": 7, "packets_dropped_full": 1},
    "driver": {"violations": 2, "outgoing_dropped": 3},
    "encryption": {"encrypted": "true", "dropped_plaintext": "4", "dropped_malformed": "1"},
    "runtime_lag": {"lag_seconds": 0.01, "max_lag_seconds": 0.2, "late_wakes": 1},
}


def test_collector_maps_the_snapshot_into_prefixed_families_with_help() -> None:
    text = generate(SNAPSHOT)
    samples, types = parse(text)
    assert value(samples, "members", status="alive") == 2
    assert value(samples, "members", status="failed") == 1
    assert value(samples, "member_events_total", kind="member-join") == 3
    assert value(samples, "probes_sent_total") == 10
    assert value(samples, "messages_received_total", type="ping") == 5
    assert value(samples, "messages_sent_total", type="ack") == 6
    assert value(samples, "bytes_received_total", transport="udp") == 100
    assert value(samples, "bytes_sent_total", transport="tcp") == 7
    assert value(samples, "packets_dropped_total", cause="decode") == 2
    assert value(samples, "packets_dropped_total", cause="crypto") == 5
    assert value(samples, "packets_dropped_total", cause="overload") == 4
    assert value(samples, "broadcast_queue_depth", queue="memberlist") == 2
    assert value(samples, "health_score") == 1
    assert value(samples, "loop_lag_max_seconds") == 0.2
    assert types[PREFIX + "probes_sent"] == "counter"
    assert types[PREFIX + "health_score"] == "gauge"
    # every family is described, sampled or not (a missing section just has no samples)
    for fam in FAMILIES:
        assert f"# HELP {PREFIX}{fam.name}" in text, fam.name
        assert fam.help
    assert (PREFIX + "rpc_connections", ()) not in samples  # no rpc section: no sample


def generate(snapshot: dict[str, dict[str, object]]) -> str:
    reply = answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", make_registry(lambda: snapshot))  # type: ignore[arg-type,return-value]
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/plain; version=" in head
    return body.decode()


def test_http_handler_answers_404_405_and_400() -> None:
    reg = make_registry(lambda: {})
    assert answer(b"GET / HTTP/1.1\r\n\r\n", reg).startswith(b"HTTP/1.1 404")
    assert answer(b"GET /metricsx HTTP/1.1\r\n\r\n", reg).startswith(b"HTTP/1.1 404")
    assert answer(b"POST /metrics HTTP/1.1\r\n\r\n", reg).startswith(b"HTTP/1.1 405")
    assert answer(b"garbage\r\n\r\n", reg).startswith(b"HTTP/1.1 400")
    assert answer(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", reg).startswith(b"HTTP/1.1 200")
    head = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", reg)
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")


def test_metrics_addr_key_and_flag() -> None:
    assert load(["--node=n"]).config.metrics_addr is None
    cfg = load(["--node=n", "--metrics-addr=127.0.0.1:9105"]).config
    assert cfg.metrics_addr is not None and cfg.metrics_addr.port == 9105


NO_IMPORT = """
import sys
import structlog, trio
from serf_trio.agent import Agent
from serf_trio.agent.config import load
from serf_trio.agent.notify import Notifier
from serf_trio.runtime.logs import LogSettings

argv = ["--node=solo", "--bind=127.0.0.1:0", "--profile=local", "--rpc-socket=" + sys.argv[1]]
argv += sys.argv[2:]
agent = Agent(load(argv), argv, settings=LogSettings(), notifier=Notifier({}),
              logger=structlog.get_logger())

async def main():
    async with trio.open_nursery() as n:
        await n.start(agent.run)  # ready: every configured service has started
        n.cancel_scope.cancel()

trio.run(main)
print("prometheus_client" in sys.modules)
"""


@pytest.mark.realnet
def test_agent_without_metrics_addr_never_imports_prometheus_client(tmp_path: Path) -> None:
    for extra, want in (([], "False"), (["--metrics-addr=127.0.0.1:0"], "True")):
        r = subprocess.run(
            [sys.executable, "-c", NO_IMPORT, str(tmp_path / "s.sock"), *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines()[-1] == want, (extra, r.stderr[-2000:])


async def scrape(host: str, port: int) -> str:
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


@pytest.mark.realnet
def test_three_agents_counters_move_on_failure_events_queries_handlers_and_garbage(
    tmp_path: Path,
) -> None:
    trio.run(three_agents, tmp_path)


async def three_agents(tmp_path: Path) -> None:
    a = make_agent(tmp_path, "a", "--metrics-addr=127.0.0.1:0", "--event-handler=user:boom=exit 3")
    b, c = make_agent(tmp_path, "b"), make_agent(tmp_path, "c")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            c_scope = trio.CancelScope()

            async def run_c(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with c_scope:
                    await c.run(task_status=task_status)

            await nursery.start(run_c)
            assert a.addr is not None and a.metrics_bound is not None
            host, port = a.metrics_bound
            seed = f"{a.addr.host}:{a.addr.port}"
            assert await b.join([seed], False) == 1 and await c.join([seed], False) == 1
            await wait_until(lambda: sum(m.status == "alive" for m in a.members()) == 3)

            before, types = parse(await scrape(host, port))
            assert value(before, "members", status="alive") == 3
            for gauge in ("broadcast_queue_depth", "health_score", "loop_lag_seconds"):
                assert types[PREFIX + gauge] == "gauge"
            assert any(k[0] == PREFIX + "broadcast_queue_depth" for k in before)
            assert (PREFIX + "health_score", ()) in before
            assert (PREFIX + "loop_lag_seconds", ()) in before
            assert value(before, "rpc_connections") >= 0

            # a user event (handler exits 3) and a query
            await a.user_event("boom", b"x", False)
            records = [r async for r in a.query(QueryParams("ping-q", b"", timeout=1.0))]
            assert records[-1].type == "done"
            # a garbage datagram to the gossip port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"\xfe\xff garbage", (a.addr.host, a.addr.port))
            # c dies without leaving
            c_scope.cancel()
            await wait_until(
                lambda: any(m.name == "c" and m.status == "failed" for m in a.members()),
                within=30,
            )
            await wait_until(lambda: a.stats()["handlers"]["failures"] != "0", within=10)

            after, _ = parse(await scrape(host, port))
            assert value(after, "members", status="failed") == 1
            assert value(after, "member_events_total", kind="member-failed") >= 1
            assert value(after, "suspicions_raised_total") > value(
                before, "suspicions_raised_total"
            )
            failed_probes = value(after, "probes_failed_total") + value(
                after, "probes_indirect_total"
            )
            assert failed_probes > 0 or value(after, "messages_received_total", type="suspect") > 0
            assert value(after, "user_events_sent_total") == 1
            assert value(after, "user_events_received_total") >= 1
            assert value(after, "queries_sent_total") == 1
            assert value(after, "handler_runs_total") >= 1
            assert value(after, "handler_failures_total") >= 1
            assert value(after, "packets_dropped_total", cause="decode") > value(
                before, "packets_dropped_total", cause="decode"
            )
            assert value(after, "bytes_received_total", transport="udp") > value(
                before, "bytes_received_total", transport="udp"
            )
            # the same counters in RPC stats (serf-trio info, text and JSON)
            st = a.stats()
            assert st["serf_counters"]["user_events_sent"] == "1"
            assert st["serf_counters"]["queries_sent"] == "1"
            assert st["serf_counters"]["member_events.member-failed"] == "1"
            assert "member_events" not in st["serf"]  # Serf's own keys only
            assert int(st["memberlist"]["suspicions_raised"]) >= 1
            assert int(st["memberlist"]["messages_in.ping"]) > 0
            assert int(st["transport"]["bytes_in"]) > 0
            assert "lag_seconds" in st["runtime_lag"]
            nursery.cancel_scope.cancel()


def test_docs_list_every_exported_family() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    for f in FAMILIES:
        name = f"{PREFIX}{f.name}" + ("_total" if f.kind == "counter" else "")
        assert f"`{name}`" in doc, name
