"""``examples/service_registry.py``: the registry's rules, then three services on real sockets
on loopback in this process (ports from the OS): they see each other by role, a tag change
refreshes the view, a stop and a SIGTERM each leave gracefully and the others drop the peer."""

from __future__ import annotations

import os
import signal
from functools import partial

import pytest
import service_registry
import trio
from service_registry import Peer, Registry

import serf_trio
from serf_trio.swim.api import Address

LIMIT = 30.0  # seconds for any one wait on loopback


def member(name: str, status: str = "alive", **tags: str) -> serf_trio.Member:
    return serf_trio.Member(name, Address("10.0.0.1", 7946), tags, status, 1, 5, 2, 2, 5, 5, 0)


def event(kind: str, m: serf_trio.Member) -> serf_trio.MemberEvent:
    return serf_trio.MemberEvent(kind, (m,))


def test_the_registry_follows_member_events() -> None:
    reg = Registry("self")
    reg.apply(event("member-join", member("self", role="web")))  # itself: never a peer
    reg.apply(event("member-join", member("web-1", role="web", port="8080")))
    reg.apply(event("member-join", member("db-1", role="db", port="5432")))
    reg.apply(event("member-join", member("odd", port="none")))
    assert reg.role("web") == [
        Peer("web-1", "web", "10.0.0.1", 8080, {"role": "web", "port": "8080"})
    ]
    assert reg.describe() == "?=[odd:None] db=[db-1:5432] web=[web-1:8080]"

    reg.apply(event("member-update", member("web-1", role="web", port="9090")))
    assert [p.port for p in reg.role("web")] == [9090]
    # A lagging consumer may see only the update (it coalesced the join): still a peer.
    reg.apply(event("member-update", member("web-2", role="web", port="8081")))
    assert [p.name for p in reg.role("web")] == ["web-1", "web-2"]

    reg.apply(event("member-failed", member("web-1", "failed", role="web")))
    reg.apply(event("member-leave", member("db-1", "left", role="db")))
    reg.apply(event("member-reap", member("odd", "left")))
    assert sorted(reg.peers) == ["web-2"]
    assert list(reg.recent)[-3:] == [
        ("member-failed", "web-1"),
        ("member-leave", "db-1"),
        ("member-reap", "odd"),
    ]


@pytest.mark.realnet
def test_three_services_on_loopback() -> None:
    specs = {
        "web-1": {"role": "web", "port": "8080"},
        "web-2": {"role": "web", "port": "8081"},
        "db-1": {"role": "db", "port": "5432"},
    }

    async def body() -> None:
        regs = {name: Registry(name) for name in specs}
        stops = {name: trio.Event() for name in specs}
        nodes: dict[str, serf_trio.Node] = {}
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                for name, tags in specs.items():
                    seeds = [str(nodes["web-1"].address)] if nodes else []
                    run = partial(
                        service_registry.serve, bind="127.0.0.1:0", seeds=seeds, profile="local"
                    )
                    nodes[name] = await nursery.start(run, name, tags, regs[name], stops[name])
                for reg in regs.values():
                    await reg.wait_for(lambda r: len(r.peers) == 2)
                web1 = regs["web-1"]
                assert [(p.name, p.port) for p in web1.role("web")] == [("web-2", 8081)]
                assert [(p.name, p.port) for p in web1.role("db")] == [("db-1", 5432)]
                assert regs["db-1"].describe() == "web=[web-1:8080, web-2:8081]"

                # member-update refreshes the tags.
                await nodes["db-1"].set_tags({"role": "db", "port": "5433"})
                for name in ("web-1", "web-2"):
                    await regs[name].wait_for(lambda r: r.role("db")[0].port == 5433)
                assert ("member-update", "db-1") in web1.recent

                # A stop leaves gracefully: the others log "left" and drop it.
                stops["web-2"].set()
                await web1.wait_for(lambda r: "web-2" not in r.peers)
                assert ("member-leave", "web-2") in web1.recent
                assert ("member-failed", "web-2") not in web1.recent

                # So does SIGTERM, through stop_on_signals (as main() runs it).
                await nursery.start(service_registry.stop_on_signals, stops["db-1"])
                os.kill(os.getpid(), signal.SIGTERM)
                await web1.wait_for(lambda r: not r.peers)
                assert stops["db-1"].is_set()
                assert ("member-leave", "db-1") in web1.recent

                stops["web-1"].set()
            assert not nursery.cancel_scope.cancel_called  # every serve() returned by itself
            assert not any(n.running for n in nodes.values())

    trio.run(body)
