"""mDNS discovery's pieces without a network: names and records (as Serf's), which found
peers are joined (once, never ourselves, a failed one again), the config key, the install
hint, and that an agent without ``discover`` never imports zeroconf."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import structlog
import trio
from agent_harness import make_agent

from serf_trio.agent.config import ConfigError, load
from serf_trio.agent.discover import (
    Discovery,
    Found,
    Gone,
    PeerTracker,
    host_name,
    instance_name,
    join_address,
    pick_address,
    require_zeroconf,
    service_type,
    txt_record,
)
from serf_trio.api import Node


def test_names_are_serfs() -> None:
    assert service_type("testcluster") == "_serf_testcluster._tcp.local."
    assert instance_name("web-1", "testcluster") == "web-1._serf_testcluster._tcp.local."
    text = b"Serf 'testcluster' cluster"
    assert txt_record("testcluster") == bytes([len(text)]) + text


def test_host_names_are_dns_labels_and_differ_per_node() -> None:
    names = {host_name(n) for n in ("a", "A", "a b", "a.b", "x" * 200, "ünï")}
    assert len(names) == 6
    for name in names:
        label, _, rest = name.partition(".")
        assert rest == "local." and 0 < len(label) <= 63
        assert all(c.isascii() and (c.isalnum() or c == "-") for c in label)


def test_join_address_and_the_address_picked() -> None:
    assert join_address("10.0.0.1", 7946) == "10.0.0.1:7946"
    assert join_address("fd00::1", 7946) == "[fd00::1]:7946"
    assert pick_address(["fd00::1", "10.0.0.1"]) == "10.0.0.1"
    assert pick_address(["fe80::1", "fd00::1"]) == "fd00::1"
    assert pick_address(["fe80::1", "junk"]) is None


def test_tracker_offers_each_address_once_and_never_our_own() -> None:
    t = PeerTracker(own="10.0.0.1:7946")
    assert not t.offer("10.0.0.1:7946")
    assert t.offer("10.0.0.2:7946") and t.offer("10.0.0.3:7946")
    assert not t.offer("10.0.0.2:7946")  # already queued
    assert t.take() == ["10.0.0.2:7946", "10.0.0.3:7946"]
    assert not t.offer("10.0.0.3:7946")  # joined
    assert t.take() == []


def test_tracker_offers_a_failed_batch_again() -> None:
    t = PeerTracker(own="10.0.0.1:7946")
    t.offer("10.0.0.2:7946")
    batch = t.take()
    t.failed(batch)
    assert t.offer("10.0.0.2:7946")


def discovery(**kw: Any) -> Discovery:
    return Discovery(
        "testcluster",
        cast(Node, None),
        node_name="a",
        bind_host="10.0.0.1",
        interface=None,
        replay=False,
        log=structlog.get_logger(),
        **kw,
    )


def test_found_services_are_deduplicated_and_ours_is_skipped() -> None:
    d = discovery()
    t = PeerTracker(own="10.0.0.1:7946")
    ours = instance_name("a", "testcluster")
    b = instance_name("b", "testcluster")
    assert not d._handle(Found(ours, "10.0.0.1:7999"), t)  # our name, any address
    assert d._handle(Found(b, "10.0.0.2:7946"), t)
    assert not d._handle(Found(b, "10.0.0.2:7946"), t)  # an update, the same address
    assert d.known == {b: "10.0.0.2:7946"}
    assert not d._handle(Gone(b), t)
    assert d.known == {}


def test_the_service_info_holds_serfs_records() -> None:
    pytest.importorskip("zeroconf")

    class Addr:
        host, port = "10.0.0.1", 7946

    info = discovery()._service_info(Addr())
    assert info.type == "_serf_testcluster._tcp.local."
    assert info.name == "a._serf_testcluster._tcp.local."
    assert (info.port, info.server) == (7946, host_name("a"))
    assert info.parsed_addresses() == ["10.0.0.1"]
    assert info.text == txt_record("testcluster")


def test_the_config_key_and_its_flag() -> None:
    assert load(["--discover=testcluster"], hostname="h").config.discover == "testcluster"
    assert load([], hostname="h").config.discover == ""
    for bad in ("-x", "x-", "a--b", "a.b", "x" * 58, "a b"):
        with pytest.raises(ConfigError, match="discover"):
            load([f"--discover={bad}"], hostname="h")


def test_without_zeroconf_the_agent_refuses_to_start_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "zeroconf", None)  # import zeroconf -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'serf-trio\[mdns\]'"):
        require_zeroconf()
    agent = make_agent(tmp_path, "a", "--discover=testcluster")
    with structlog.testing.capture_logs() as logs:
        assert trio.run(agent.run) == 1
    [error] = [r for r in logs if r["event"] == "config_invalid"]
    assert "zeroconf" in error["error"] and "serf-trio[mdns]" in error["error"]


SCRIPT = """
import sys, trio
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from agent_harness import make_agent

async def main():
    agent = make_agent(Path(sys.argv[1]), "a")
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        nursery.cancel_scope.cancel()

trio.run(main)
print("zeroconf" in sys.modules)
"""


def test_an_agent_without_discover_never_imports_zeroconf(tmp_path: Path) -> None:
    here = str(Path(__file__).parent)
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), here],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "False"
