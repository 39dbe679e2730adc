"""Gossip-target selection (``swim.targets`` through ``MemberTable.gossip_targets``).

Properties of the random cycle (distinct windows, full passes, O(k) work, joins, deaths and
reaps mid-pass, never ourselves) and of the ring backstop (one shared ring, every node the
successor of exactly ``r`` others, turns taken round by round, alive members only).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from serf_trio.swim.api import Address, State
from serf_trio.swim.members import MemberTable, NodeRecord
from serf_trio.swim.targets import GossipRing

K = 3


def _rec(name: str, state: State = State.ALIVE, t: float = 0.0) -> NodeRecord:
    return NodeRecord(name, Address("127.0.0.1", 1), b"", 1, state, bytes([1, 5, 2, 2, 5, 5]), t)


def _table(n: int, seed: int = 1) -> MemberTable:
    """``me`` plus ``n`` alive nodes ``n0..``."""
    t = MemberTable(random.Random(seed))
    t.add(_rec("me"))
    for i in range(n):
        t.add(_rec(f"n{i}"))
    return t


def _alive_or_suspect(r: NodeRecord) -> bool:
    return r.name != "me" and r.state in (State.ALIVE, State.SUSPECT)


def _rounds(
    t: MemberTable,
    rounds: int,
    *,
    window: int,
    ring: int = 0,
    pred: Callable[[NodeRecord], bool] = _alive_or_suspect,
) -> list[list[str]]:
    return [
        [r.name for r in t.gossip_targets(K, pred, me="me", window=window, ring=ring)]
        for _ in range(rounds)
    ]


def test_cycle_passes_are_permutations_and_any_window_is_distinct() -> None:
    n, window = 20, 8
    t = _table(n)
    rounds = _rounds(t, 200, window=window)
    assert all(len(r) == K and len(set(r)) == K for r in rounds)
    picks = [name for r in rounds for name in r]
    everyone = {f"n{i}" for i in range(n)}
    # Every pass visits each eligible node exactly once ...
    for start in range(0, len(picks) - n + 1, n):
        assert set(picks[start : start + n]) == everyone
    # ... the first one within ceil(n / k) rounds ...
    assert {x for r in rounds[: math.ceil(n / K)] for x in r} == everyone
    # ... and no node repeats within any ``window`` consecutive picks, across passes too.
    for i in range(len(picks) - window + 1):
        assert len(set(picks[i : i + window])) == window, (i, picks[i : i + window])
    assert t.gossip_cycle.cycles >= len(picks) // n - 1


def test_cycle_order_is_random_per_pass_and_per_node() -> None:
    n = 30
    a = [x for r in _rounds(_table(n, seed=1), 20, window=8) for x in r]
    b = [x for r in _rounds(_table(n, seed=2), 20, window=8) for x in r]
    assert a[:n] != a[n : 2 * n]  # a new order each pass
    assert a[:n] != b[:n]  # and each node its own
    assert a == [x for r in _rounds(_table(n, seed=1), 20, window=8) for x in r]  # seeded


def test_window_as_large_as_the_cluster_covers_everyone_in_any_window() -> None:
    """n <= L: one sender's L consecutive targets are the whole cluster."""
    n = 6
    picks = [x for r in _rounds(_table(n), 100, window=n) for x in r]
    for i in range(len(picks) - n + 1):
        assert len(set(picks[i : i + n])) == n


def test_never_picks_ourselves_left_or_long_dead() -> None:
    t = MemberTable(random.Random(4))
    t.add(_rec("me"))
    for i in range(10):
        t.add(_rec(f"a{i}"))
    t.add(_rec("left", State.LEFT))
    t.add(_rec("old-dead", State.DEAD, t=0.0))
    t.add(_rec("new-dead", State.DEAD, t=95.0))
    t.add(_rec("sus", State.SUSPECT))

    def gossip_ok(r: NodeRecord) -> bool:  # memberlist gossip(): gossip_to_the_dead_time 30 s
        if r.state in (State.ALIVE, State.SUSPECT):
            return True
        return r.state is State.DEAD and 100.0 - r.state_change <= 30.0

    seen = {x for r in _rounds(t, 100, window=8, ring=2, pred=gossip_ok) for x in r}
    assert seen == {f"a{i}" for i in range(10)} | {"new-dead", "sus"}


def test_work_per_round_is_o_k_with_ten_thousand_members() -> None:
    n = 10_000
    t = _table(n, seed=5)
    calls = 0

    def counting(r: NodeRecord) -> bool:
        nonlocal calls
        calls += 1
        return r.state is State.ALIVE

    per_round: list[int] = []
    rounds = 2 * n // (K - 1) + 10  # two full passes of the cycle (k - 1 picks a round)
    for _ in range(rounds):
        before = calls
        got = t.gossip_targets(K, counting, me="me", window=12, ring=2)
        assert len(got) == K
        per_round.append(calls - before)
    # One predicate call per cycle pick (k - 1) and per ring successor (2) plus, rarely, a
    # re-draw that hit a held node: never O(N).
    assert max(per_round) <= 4 * K
    assert sum(per_round) / rounds <= 1.05 * (K - 1 + 2)
    assert t.gossip_cycle.cycles >= 2


def test_joins_mid_pass_are_visited_in_the_same_pass() -> None:
    t = _table(30, seed=6)
    _rounds(t, 3, window=8)
    cycles = t.gossip_cycle.cycles
    for i in range(5):
        t.add(_rec(f"new{i}"))
    seen: set[str] = set()
    while t.gossip_cycle.cycles == cycles:
        seen.update(_rounds(t, 1, window=8)[0])
    assert {f"new{i}" for i in range(5)} <= seen


def test_deaths_and_reaps_mid_pass() -> None:
    t = _table(30, seed=7)
    _rounds(t, 2, window=8)
    for i in range(10):
        rec = t.get(f"n{i}")
        assert rec is not None
        t.set_state(rec, State.LEFT, 0.0)
    later = {x for r in _rounds(t, 40, window=8) for x in r}
    assert later == {f"n{i}" for i in range(10, 30)}
    # Reaped (probe-list wrap) and one name re-used by a new node: the old records are
    # dropped from the cycle when met, the new one is picked like any other.
    assert len(t.reset(100.0, 30.0, keep="me")) == 10
    t.add(_rec("n0"))
    later = {x for r in _rounds(t, 40, window=8) for x in r}
    assert later == {"n0"} | {f"n{i}" for i in range(10, 30)}
    assert len(t.gossip_cycle) == 22  # me + n0 + n10..n29: the 10 reaped records dropped


def test_fewer_eligible_nodes_than_fan_out() -> None:
    t = _table(2)
    for ring in (0, 2):
        for r in _rounds(t, 10, window=2, ring=ring):
            assert sorted(r) == ["n0", "n1"]
    assert _rounds(_table(0), 3, window=8, ring=2) == [[], [], []]


def test_ring_is_shared_and_every_node_has_r_predecessors() -> None:
    names = [f"node-{i}" for i in range(50)]
    a, b = GossipRing(), GossipRing()
    for name in names:
        a.insert(name)
    for name in reversed(names):
        b.insert(name)
    for r in (1, 2):
        assert all(a.successors(x, r) == b.successors(x, r) for x in names)
        indegree = {x: 0 for x in names}
        for x in names:
            succ = a.successors(x, r)
            assert len(succ) == r and x not in succ
            for s in succ:
                indegree[s] += 1
        assert set(indegree.values()) == {r}
    a.discard("node-3")
    assert "node-3" not in a and len(a) == 49
    assert all("node-3" not in a.successors(x, 2) for x in names)
    assert a.successors("node-3", 2) == b.successors("node-3", 2)  # outsiders find their place
    assert a.successors("x", 0) == [] and GossipRing().successors("x", 2) == []


def test_ring_slot_takes_turns_and_the_cycle_skips_the_successors() -> None:
    t = _table(40, seed=8)
    ring = GossipRing()
    for r in t:
        ring.insert(r.name)
    succ = ring.successors("me", 2)
    rounds = _rounds(t, 60, window=8, ring=2)
    assert [r[0] for r in rounds] == [succ[i % 2] for i in range(60)]
    assert all(x not in succ for r in rounds for x in r[1:])
    # A window of L = 8 targets (~3 rounds) always holds both successors.
    assert all(set(succ) <= {r[0] for r in rounds[i : i + 2]} for i in range(59))
    # Only alive nodes are on the ring: a suspect successor is replaced by the next alive one.
    first = t.get(succ[0])
    assert first is not None
    t.set_state(first, State.SUSPECT, 1.0)
    firsts = {r[0] for r in _rounds(t, 4, window=8, ring=2)}
    assert succ[0] not in firsts and succ[1] in firsts
    t.set_state(first, State.ALIVE, 2.0)
    assert {r[0] for r in _rounds(t, 4, window=8, ring=2)} == set(succ)


def test_ring_bulk_insert_equals_one_by_one_and_owns_its_lists() -> None:
    names = [f"node-{i}" for i in range(300)]
    one = GossipRing()
    for name in names[:10]:
        one.insert(name)
    bulk = GossipRing()
    for name in names[:10]:
        bulk.insert(name)
    for name in names[10:]:
        one.insert(name)
    bulk.insert_many(names[10:])
    assert len(bulk) == len(one) == 300
    for name in ("node-0", "node-150", "not-a-member"):
        assert bulk.successors(name, 2) == one.successors(name, 2)
    # A second ring built from the same names (the cached sort) is a copy, not an alias.
    other = GossipRing()
    other.insert_many(names)
    other.discard("node-7")
    assert "node-7" in bulk and "node-7" not in other
    assert all(n in bulk for n in names)
