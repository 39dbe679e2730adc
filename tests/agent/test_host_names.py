"""Host names wherever Serf takes them: the forms, the resolution rules (bind/advertise: one
address at start-up; joins: every address, looked up again on every attempt), the errors that
name the name, ``interface``, and real loopback agents reached as ``localhost``."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
from agent_harness import make_agent
from helpers import mem_addr, run_mock, wait_until

import serf_trio
from serf_trio.agent.addresses import gossip_addresses
from serf_trio.agent.config import AgentConfig, ConfigError, load
from serf_trio.agent.joins import retry_join
from serf_trio.rpc.api import AgentError
from serf_trio.runtime.resolve import (
    HostPort,
    ResolveError,
    interface_addresses,
    resolve_all,
    resolve_joins,
    resolve_one,
    split_hostport,
    system_lookup,
)
from serf_trio.swim.api import Address
from serf_trio.testing.memnet import MemoryNetwork
from serf_trio.testing.netmodel import NetModel

UNRESOLVABLE = "nonexistent.invalid"  # RFC 6761: never resolves


class FakeDns:
    """An injected resolver: ``answers[name]`` is a list of answers, one per lookup (the last
    one repeats); a missing name does not resolve.  Records every lookup."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str) -> Sequence[str]:
        await trio.lowlevel.checkpoint()
        n = sum(1 for c in self.calls if c == host)
        self.calls.append(host)
        if host not in self.answers:
            raise ResolveError(host, "Name or service not known")
        seq = self.answers[host]
        return seq[min(n, len(seq) - 1)]


class Log:
    """A stand-in structlog logger that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.records.append((level, event, fields))

        return log

    def events(self) -> list[str]:
        return [e for _, e, _ in self.records]


# -- forms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost", HostPort("localhost", 7946)),
        ("seed-1.example.com:8000", HostPort("seed-1.example.com", 8000)),
        ("seeds.example.com.", HostPort("seeds.example.com.", 7946)),
        ("10.0.0.1:0", HostPort("10.0.0.1", 0)),
        ("[::1]:9000", HostPort("::1", 9000)),
        ("[fd00::5]", HostPort("fd00::5", 7946)),
        ("fd00::5", HostPort("fd00::5", 7946)),
    ],
)
def test_address_forms(text: str, expected: HostPort) -> None:
    assert split_hostport(text, 7946) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("bad host", "neither an IP address nor a host name"),
        ("-lead.example", "neither"),
        ("a..b", "neither"),
        ("host:port", "the port in 'host:port' is not a number"),
        ("host:99999", "out of range"),
        (":7946", "has no host"),
        ("[localhost]:1", "not an IPv6 address"),
        ("fd00::5:x:y", "not an address"),
    ],
)
def test_malformed_addresses_say_why(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        split_hostport(text, 7946)
    assert fragment in str(info.value)
    assert "invalid literal" not in str(info.value)


def test_config_keeps_names_as_written() -> None:
    cfg = load(
        [
            "--bind=localhost:7000",
            "--advertise=node-1.example.com",
            "--join=seed.example.com",
            "--retry-join=n2/seeds.example.com:7001",
            "--rpc-addr=localhost:7373",
        ],
        hostname="h",
    ).config
    assert cfg.bind == HostPort("localhost", 7000)
    assert cfg.advertise == HostPort("node-1.example.com", 0)
    assert cfg.start_join == ("seed.example.com",)
    assert cfg.retry_join == ("n2/seeds.example.com:7001",)
    assert cfg.rpc_addr == HostPort("localhost", 7373)


# -- resolution rules ------------------------------------------------------------------------


def test_bind_takes_the_first_ipv4_address_like_go() -> None:
    async def body() -> None:
        dns = FakeDns({"dual": [["fd00::1", "10.0.0.7", "10.0.0.8"]], "v6": [["fd00::2"]]})
        assert await resolve_one(HostPort("dual", 1), dns) == Address("10.0.0.7", 1)
        assert await resolve_one(HostPort("v6", 1), dns) == Address("fd00::2", 1)
        assert await resolve_all(HostPort("dual", 1), dns) == [
            Address("fd00::1", 1),
            Address("10.0.0.7", 1),
            Address("10.0.0.8", 1),
        ]
        # A literal IP is never looked up.
        assert await resolve_one(HostPort("10.1.1.1", 2), dns) == Address("10.1.1.1", 2)
        assert dns.calls == ["dual", "v6", "dual"]

    trio.run(body)


def test_system_resolver_localhost_and_an_unresolvable_name() -> None:
    async def body() -> None:
        assert "127.0.0.1" in await system_lookup("localhost")
        with pytest.raises(ResolveError) as info:
            await system_lookup(UNRESOLVABLE)
        assert UNRESOLVABLE in str(info.value)
        seeds, errors = await resolve_joins([f"{UNRESOLVABLE}:7000", "10.0.0.1"])
        assert seeds == [Address("10.0.0.1", 7946)]
        (error,) = errors
        assert error.startswith(f"Failed to resolve {UNRESOLVABLE}:7000: ")

    trio.run(body)


def test_start_up_addresses_and_their_errors() -> None:
    async def body() -> None:
        dns = FakeDns({"me.test": [["10.0.0.5"]], "pub.test": [["fd00::9", "203.0.113.4"]]})
        log = Log()
        cfg = AgentConfig("n", bind=HostPort("me.test", 7000), advertise=HostPort("pub.test", 0))
        assert await gossip_addresses(cfg, log, lookup=dns) == (
            Address("10.0.0.5", 7000),
            Address("203.0.113.4", 0),
        )
        for field, where in (("bind", "'bind'"), ("advertise", "'advertise'")):
            bad = AgentConfig("n", **{field: HostPort(UNRESOLVABLE, 1)})  # type: ignore[arg-type]
            with pytest.raises(ConfigError) as info:
                await gossip_addresses(bad, log, lookup=dns)
            text = str(info.value)
            assert where in text and repr(UNRESOLVABLE) in text and "\n" not in text

    trio.run(body)


def test_interface_picks_or_checks_the_bind_address() -> None:
    nics = {
        "eth0": ["169.254.1.1", "192.0.2.10", "fe80::1", "fd00::10"],
        "v6only": ["fe80::2", "fd00::20"],
        "empty": ["fe80::3"],
    }

    def interfaces(name: str) -> list[str]:
        if name not in nics:
            raise OSError(19, "No such device")
        return nics[name]

    async def body() -> None:
        log = Log()

        async def addr(bind: str, iface: str) -> Address:
            cfg = AgentConfig("n", bind=split_hostport(bind, 7946), interface=iface)
            bound, _ = await gossip_addresses(cfg, log, interfaces=interfaces)
            return bound

        assert await addr("0.0.0.0:7001", "eth0") == Address("192.0.2.10", 7001)  # not 169.254
        assert await addr("0.0.0.0", "v6only") == Address("fd00::20", 7946)
        assert await addr("192.0.2.10:7002", "eth0") == Address("192.0.2.10", 7002)
        assert await addr("[fd00::10]:7003", "eth0") == Address("fd00::10", 7003)
        assert ("info", "interface_address") in [(lv, e) for lv, e, _ in log.records]
        for bind, iface, fragment in (
            ("10.9.9.9", "eth0", "interface 'eth0' has no address 10.9.9.9"),
            ("0.0.0.0", "empty", "has no usable address"),
            ("0.0.0.0", "eth9", "no usable network interface 'eth9' (No such device)"),
        ):
            with pytest.raises(ConfigError) as info:
                await addr(bind, iface)
            assert fragment in str(info.value)

    trio.run(body)


def test_the_loopback_interface_is_read_from_the_system() -> None:
    assert "127.0.0.1" in interface_addresses("lo")
    with pytest.raises(OSError):
        interface_addresses("nosuchif0")


# -- Node.join and retry_join with an injected resolver (in-memory network) -------------------


def mem_node(net: MemoryNetwork, i: int, **kw: Any) -> serf_trio.Node:
    return serf_trio.Node(f"n{i}", bind=mem_addr(i), network=net, rng=random.Random(i), **kw)


def test_a_name_with_two_addresses_joins_both() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=5))
        dns = FakeDns(
            {
                "both.test": [[mem_addr(2).host, mem_addr(3).host]],
                "half.test": [[mem_addr(9).host, mem_addr(2).host]],  # .9: nobody there
            }
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            a, b, c = mem_node(net, 1, resolver=dns), mem_node(net, 2), mem_node(net, 3)
            for n in (a, b, c):
                await nursery.start(n.run)
            assert await a.join("both.test") == 2  # one push/pull per address, each counted
            assert await a.join("half.test:7946") == 1
            with pytest.raises(serf_trio.JoinError) as info:
                await a.join("gone.test", f"{mem_addr(9).host}:7946")
            errors = info.value.errors
            assert errors[0].startswith("Failed to resolve gone.test: ")
            assert any(mem_addr(9).host in e for e in errors[1:])
            assert dns.calls == ["both.test", "half.test", "gone.test"]
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_retry_join_resolves_the_name_again_on_every_attempt() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=6))
        # The record first points at an address with nobody behind it, then at the seed.
        dns = FakeDns({"seeds.test": [[mem_addr(9).host], [mem_addr(2).host]]})
        log = Log()
        gave_up: list[bool] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            a, b = mem_node(net, 1, resolver=dns), mem_node(net, 2)
            await nursery.start(a.run)
            await nursery.start(b.run)
            cfg = AgentConfig("n1", retry_join=("seeds.test",), retry_interval=5.0, retry_max=3)
            await retry_join(a, cfg, log, lambda: gave_up.append(True))
            assert dns.calls == ["seeds.test", "seeds.test"]
            assert log.events() == ["retry_join_failed", "retry_join_done"]
            assert log.records[-1][2] == {"joined": 1, "attempt": 2}
            assert not gave_up
            await wait_until(lambda: len(a.alive_members()) == 2)
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_retry_join_gives_up_on_a_name_that_never_resolves() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=7))
        dns = FakeDns({})
        log = Log()
        gave_up: list[bool] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            a = mem_node(net, 1, resolver=dns)
            await nursery.start(a.run)
            cfg = AgentConfig("n1", retry_join=("seeds.test",), retry_interval=1.0, retry_max=3)
            await retry_join(a, cfg, log, lambda: gave_up.append(True))
            assert dns.calls == ["seeds.test"] * 3 and gave_up == [True]
            failures = [f for _, e, f in log.records if e == "retry_join_failed"]
            assert [f["errors"] for f in failures] == [
                ["Failed to resolve seeds.test: Name or service not known"]
            ] * 3
            nursery.cancel_scope.cancel()

    run_mock(body)


# -- real loopback agents reached as localhost ---------------------------------------------


@pytest.mark.realnet
def test_agents_bind_advertise_and_join_by_host_name(tmp_path: Path) -> None:
    async def body() -> None:
        a_argv = ["--bind=localhost:0", "--advertise=localhost"]
        a = make_agent(tmp_path, "a", *a_argv)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            assert a.addr is not None and a.addr.host == "127.0.0.1"
            port = a.addr.port
            b = make_agent(tmp_path, "b", f"--join=localhost:{port}")  # start join by name
            await nursery.start(b.run)
            await wait_until(lambda: {m.name for m in a.members()} == {"a", "b"})
            c = make_agent(tmp_path, "c")
            await nursery.start(c.run)
            # `serf-trio join localhost:PORT` reaches the agent as this RPC call.
            assert await c.join([f"localhost:{port}"], False) == 1
            assert await c.join([f"a/localhost:{port}", f"{UNRESOLVABLE}:1"], False) == 1
            with pytest.raises(AgentError) as info:
                await c.join([f"{UNRESOLVABLE}:7946"], False)
            assert f"Failed to resolve {UNRESOLVABLE}:7946" in str(info.value)
            with pytest.raises(AgentError) as info:
                await c.join(["bad host!"], False)
            assert "bad host!" in str(info.value)
            nursery.cancel_scope.cancel()

    trio.run(body)


@pytest.mark.realnet
def test_a_bind_name_that_does_not_resolve_stops_the_start(tmp_path: Path) -> None:
    async def body() -> None:
        with structlog.testing.capture_logs() as logs:
            agent = make_agent(tmp_path, "x", f"--bind={UNRESOLVABLE}:0")
            assert await agent.run() == 1
        (rec,) = [r for r in logs if r["event"] == "config_invalid"]
        assert rec["log_level"] == "error"
        assert f"config key 'bind': cannot resolve host name {UNRESOLVABLE!r}" in rec["error"]

    trio.run(body)
