"""mDNS discovery end to end, in network namespaces: agents that are given no seed find each
other through ``--discover``, and a real HashiCorp Serf agent (``serf agent -discover``)
finds them and is found by them.

Network: one namespace holds a Linux bridge; four namespaces each hold one end of a veth pair
(``eth0``, 10.254.X.N/24, multicast on, a route for 224.0.0.0/4) whose other end is on the
bridge, so mDNS (224.0.0.251:5353) reaches all of them and nothing else.  Needs root and
``ip``; skipped otherwise.  Everything (processes, namespaces, bridge) goes in ``finally``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for

pytestmark = [pytest.mark.realnet, pytest.mark.slow]

CLUSTER = "testcluster"
WAIT = 20.0  # bound of every single wait
SERF = shutil.which("serf")
BIN = Path(sys.executable).parent


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


class Net:
    """The namespaces: ``ns[0]`` holds the bridge, ``ns[1..4]`` the hosts 10.254.X.1..4."""

    def __init__(self) -> None:
        tag = f"{random.getrandbits(24):06x}"
        self.subnet = random.randrange(1, 250)
        self.ns = [f"st-mdns-{tag}-{i}" for i in range(5)]
        self.made: list[str] = []

    def ip(self, n: int) -> str:
        return f"10.254.{self.subnet}.{n}"

    def setup(self) -> None:
        br = self.ns[0]
        for ns in self.ns:
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("link", "set", "lo", "up", ns=ns)
        _ip("link", "add", "br0", "type", "bridge", "mcast_snooping", "0", ns=br)
        _ip("link", "set", "br0", "multicast", "on", "up", ns=br)
        for n in range(1, 5):
            ns = self.ns[n]
            # The veth is made in the bridge's namespace, its peer moved straight into ns.
            _ip("link", "add", f"p{n}", "type", "veth", "peer", "name", "eth0", "netns", ns, ns=br)
            _ip("link", "set", f"p{n}", "master", "br0", "multicast", "on", "up", ns=br)
            _ip("addr", "add", f"{self.ip(n)}/24", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "multicast", "on", "up", ns=ns)
            _ip("route", "add", "224.0.0.0/4", "dev", "eth0", ns=ns)

    def cleanup(self) -> None:
        for ns in reversed(self.made):  # deleting a namespace deletes its links (and bridge)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _can_make_namespaces() -> str | None:
    if shutil.which("ip") is None:
        return "no `ip` command"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"st-mdns-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


@pytest.fixture
def net() -> Iterator[Net]:
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("zeroconf")
    n = Net()
    try:
        n.setup()
        yield n
    finally:
        n.cleanup()


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, ns: str, argv: list[str]) -> Path:
        log = self.tmp / f"{name}.log"
        with log.open("ab") as out:
            self.procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
            )
        return log

    def stop(self, name: str) -> int | None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # a graceful leave
            try:
                return proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def trio_agent(net: Net, procs: Procs, name: str, n: int) -> Path:
    return procs.start(
        name,
        net.ns[n],
        [
            str(BIN / "serf-trio"),
            "agent",
            f"--node={name}",
            f"--bind={net.ip(n)}",
            f"--discover={CLUSTER}",
            f"--rpc-socket={procs.tmp / (name + '.sock')}",
            "--log-format=json",
        ],
    )


def alive(net: Net, n: int, argv: list[str]) -> set[str]:
    r = subprocess.run(
        ["ip", "netns", "exec", net.ns[n], *argv],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if r.returncode != 0:
        return set()
    return {m["name"] for m in json.loads(r.stdout)["members"] if m["status"] == "alive"}


def trio_alive(net: Net, procs: Procs, name: str, n: int) -> set[str]:
    sock = procs.tmp / (name + ".sock")
    return alive(
        net, n, [str(BIN / "serf-trio"), "members", f"--rpc-socket={sock}", "--format=json"]
    )


def serf_alive(net: Net) -> set[str]:
    return alive(net, 4, [str(SERF), "members", "-rpc-addr=127.0.0.1:7373", "-format=json"])


def events(log: Path, event: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                out.append(record)
    return out


def test_agents_find_each_other_without_seeds(net: Net, tmp_path: Path) -> None:
    """Three serf-trio agents, no --join: each lists the three alive."""
    procs = Procs(tmp_path)
    names = {"a": 1, "b": 2, "c": 3}
    try:
        logs = {name: trio_agent(net, procs, name, n) for name, n in names.items()}
        for name, n in names.items():
            wait_for(
                lambda name=name, n=n: trio_alive(net, procs, name, n) == set(names),
                f"{name} to list a, b and c alive",
                WAIT,
            )
        joined = [r for log in logs.values() for r in events(log, "discover_joined")]
        assert joined  # at least one side joined through mDNS (the others were joined)
        own = {f"{net.ip(n)}:7946" for n in names.values()}
        for name, n in names.items():  # nobody joined itself
            for r in events(logs[name], "discover_joined"):
                assert f"{net.ip(n)}:7946" not in r["addrs"]
                assert set(r["addrs"]) <= own
    finally:
        procs.stop_all()
    for name in names:
        assert events(logs[name], "discover_stopped"), f"{name} did not withdraw its service"


@pytest.mark.interop
@pytest.mark.skipif(SERF is None, reason="the HashiCorp serf binary is not installed")
def test_real_serf_finds_serf_trio_and_is_found(net: Net, tmp_path: Path) -> None:
    """Three serf-trio agents find each other; a real ``serf agent -discover`` started next
    joins them (Serf's mDNS client accepted our records); a serf-trio agent restarted after
    it joins it (we accepted Serf's records)."""
    procs = Procs(tmp_path)
    names = {"a": 1, "b": 2, "c": 3}
    started = time.monotonic()
    try:
        logs = {name: trio_agent(net, procs, name, n) for name, n in names.items()}
        for name, n in names.items():
            wait_for(
                lambda name=name, n=n: trio_alive(net, procs, name, n) == set(names),
                f"{name} to list a, b and c alive",
                WAIT,
            )
        serf_log = procs.start(
            "d",
            net.ns[4],
            [
                str(SERF),
                "agent",
                "-node=d",
                f"-bind={net.ip(4)}",
                f"-discover={CLUSTER}",
                "-rpc-addr=127.0.0.1:7373",
            ],
        )
        everyone = {*names, "d"}
        wait_for(lambda: serf_alive(net) == everyone, "serf to list all four alive", WAIT)
        text = serf_log.read_text(errors="replace")
        assert "agent.mdns: Joined" in text, text[-3000:]  # Serf joined what it found
        for name, n in names.items():
            wait_for(
                lambda name=name, n=n: trio_alive(net, procs, name, n) == everyone,
                f"{name} to list all four alive",
                WAIT,
            )
        # The other direction: c starts again, after Serf, and finds Serf's advertisement.
        assert procs.stop("c") == 0
        logs["c"].rename(tmp_path / "c-first.log")
        logs["c"] = trio_agent(net, procs, "c", 3)
        serf_addr = f"{net.ip(4)}:7946"
        wait_for(
            lambda: any(serf_addr in r["addrs"] for r in events(logs["c"], "discover_joined")),
            "the restarted c to join Serf's advertised address",
            WAIT,
        )
        wait_for(lambda: serf_alive(net) == everyone, "serf to list c alive again", WAIT)
        wait_for(lambda: trio_alive(net, procs, "c", 3) == everyone, "c to list all four", WAIT)
    finally:
        procs.stop_all()
    assert time.monotonic() - started < 60
