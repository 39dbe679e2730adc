"""Issue 4 interop: serf-trio and Debian's ``serf`` agent (0.9.4) in one cluster, both on the
default LAN profile, each running the same logging handler; plus the real ``serf`` CLI's
``event``, ``query`` and ``tags`` against serf-trio's TCP RPC."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from .conftest import Agent, Cluster, need_serf, wait_drained, wait_each, wait_for

pytestmark = [pytest.mark.realnet, pytest.mark.interop, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Agent, Agent, Cluster]]:
    """``r1`` (real serf) and ``t1`` (serf-trio, TCP RPC on), t1 started with --join r1."""
    need_serf()
    c = Cluster(tmp_path_factory.mktemp("interop"))
    try:
        r1 = c.serf("r1", "-tag", "kind=go")
        t1 = c.trio("t1", "--tag", "kind=py", join=[r1], profile=None, rpc_addr=True)
        c.all_alive([r1, t1])
        yield r1, t1, c
    finally:
        c.close()


def test_user_events_run_handlers_both_ways(pair: tuple[Agent, Agent, Cluster]) -> None:
    r1, t1, _ = pair
    proc = r1.serf_cli("event", "-coalesce=false", "from-go", "p1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = t1.cli("event", "--no-coalesce", "from-py", "p2")
    assert proc.returncode == 0, proc.stderr
    wait_each(
        (r1, t1),
        lambda a: a.user_events("from-go") and a.user_events("from-py"),
        "handlers for from-go and from-py",
    )
    # Exactly once each, although both come back by push/pull: a join with replay each way
    # makes both ends merge the other's whole event buffer now.  Once no broadcast is left on
    # either side, a barrier event: a handler runs its events one at a time in arrival order,
    # so a second run of from-go or from-py would be written before the barrier's.
    assert t1.cli("join", "--replay", r1.addr).returncode == 0
    proc = r1.serf_cli("join", "-replay", t1.addr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wait_drained((r1, t1))
    assert t1.cli("event", "--no-coalesce", "both-ways-barrier").returncode == 0
    wait_each((r1, t1), lambda a: a.user_events("both-ways-barrier"), "the barrier's handler")
    for a in (r1, t1):
        assert [len(a.user_events(n)) for n in ("from-go", "from-py")] == [1, 1]
    # Same LTime on both sides: the Lamport clocks agree.
    assert r1.user_events("from-py")[0][3] == t1.user_events("from-py")[0][3]
    assert r1.user_events("from-go")[0][3] == t1.user_events("from-go")[0][3]


@pytest.mark.slow
def test_queries_answered_both_ways(pair: tuple[Agent, Agent, Cluster]) -> None:
    r1, t1, _ = pair
    proc = r1.serf_cli("query", "-format=json", "-timeout=2s", "q-from-go", "x")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["Responses"] == {"r1": "answer-from-r1", "t1": "answer-from-t1"}
    assert sorted(doc["Acks"]) == ["r1", "t1"]

    proc = t1.cli("query", "q-from-py", "y", "--format", "json", "--timeout", "2s")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["Responses"] == {"r1": "answer-from-r1", "t1": "answer-from-t1"}
    assert sorted(doc["Acks"]) == ["r1", "t1"]


def test_serf_trio_tags_show_in_real_serf_members(pair: tuple[Agent, Agent, Cluster]) -> None:
    r1, t1, _ = pair

    def t1_tags_on_r1() -> dict[str, str]:
        proc = r1.serf_cli("members", "-format=json")
        assert proc.returncode == 0, proc.stderr
        rows = {m["name"]: m for m in json.loads(proc.stdout)["members"]}
        return dict(rows["t1"]["tags"]) if "t1" in rows else {}

    proc = t1.cli("tags", "--set", "role=trio")
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: t1_tags_on_r1() == {"kind": "py", "role": "trio"}, "r1 to see role=trio")
    wait_for(lambda: r1.member_events("member-update", "t1"), "member-update t1 on r1")

    # The real serf CLI's tags command against serf-trio's TCP RPC.
    proc = t1.serf_cli("tags", "-set", "zone=z1", "-delete", "role")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wait_for(lambda: t1_tags_on_r1() == {"kind": "py", "zone": "z1"}, "r1 to see zone=z1")


def test_real_serf_cli_event_and_query_against_serf_trio(
    pair: tuple[Agent, Agent, Cluster],
) -> None:
    r1, t1, _ = pair
    proc = t1.serf_cli("event", "-coalesce=false", "cli-go-on-py", "abc")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Event 'cli-go-on-py' dispatched" in proc.stdout
    wait_each((r1, t1), lambda a: a.user_events("cli-go-on-py"), "handler")

    proc = t1.serf_cli("query", "-format=json", "-timeout=2s", "cli-q", "zz")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["Responses"] == {"r1": "answer-from-r1", "t1": "answer-from-t1"}


def test_user_event_size_limit_matches_real_serf(pair: tuple[Agent, Agent, Cluster]) -> None:
    """The same name/payload sizes pass or fail with the same error text on both agents."""
    r1, t1, _ = pair
    for size in (479, 480, 509, 510):
        payload = "p" * size
        go = r1.serf_cli("event", "-coalesce=false", "big", payload)
        py = t1.serf_cli("event", "-coalesce=false", "big", payload)
        assert (py.returncode, py.stdout + py.stderr) == (go.returncode, go.stdout + go.stderr)


@pytest.mark.slow
def test_graceful_leave_shows_as_left_on_the_other_side(
    pair: tuple[Agent, Agent, Cluster],
) -> None:
    r1, t1, c = pair
    r2 = c.serf("r2", join=[t1])
    t2 = c.trio("t2", join=[r1], profile=None)
    c.all_alive([r1, t1, r2, t2])

    proc = t2.cli("leave")  # serf-trio leaves: the real agents see it left
    assert proc.returncode == 0, proc.stderr
    assert t2.proc.wait(timeout=20) == 0
    c.converge([r1, r2, t1], t2="left")

    proc = r2.serf_cli("leave")  # the real agent leaves: serf-trio sees it left
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert r2.proc.wait(timeout=20) == 0
    c.converge([t1, r1], r2="left")
    wait_for(lambda: t1.member_events("member-leave", "r2"), "member-leave r2 on t1")
