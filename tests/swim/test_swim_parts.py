"""Unit tests for awareness, suspicion records, the broadcast queue and the member table."""

from __future__ import annotations

import random

import pytest

from serf_trio.swim.api import Address, State
from serf_trio.swim.awareness import Awareness
from serf_trio.swim.broadcast import TransmitLimitedQueue
from serf_trio.swim.members import MemberTable, NodeRecord
from serf_trio.swim.suspicion import Suspicion

# memberlist TestAwareness: (delta, score, scaled 1 s timeout) applied in sequence to max 8
AWARENESS_STEPS = [
    (0, 0, 1.0), (-1, 0, 1.0), (-10, 0, 1.0), (1, 1, 2.0), (-1, 0, 1.0), (10, 7, 8.0),
    (-1, 6, 7.0), (-1, 5, 6.0), (-1, 4, 5.0), (-1, 3, 4.0), (-1, 2, 3.0), (-1, 1, 2.0),
    (-1, 0, 1.0), (-1, 0, 1.0),
]  # fmt: skip


def test_awareness_memberlist_sequence() -> None:
    a = Awareness(8)
    for delta, score, timeout in AWARENESS_STEPS:
        a.apply_delta(delta)
        assert (a.score, a.scale(1.0)) == (score, timeout)


def test_awareness_disabled_stays_zero() -> None:
    a = Awareness(8, enabled=False)
    a.apply_delta(5)
    assert a.score == 0 and a.scale(2.0) == 2.0


def test_suspicion_starts_at_max_and_shrinks_with_new_confirmers() -> None:
    s = Suspicion("a", k=3, min_timeout=2.0, max_timeout=30.0, now=100.0)
    assert s.deadline == 130.0
    assert s.confirm("a", 101.0) == (False, 130.0)  # the original accuser does not count
    counted, deadline = s.confirm("b", 102.0)
    assert counted and deadline == pytest.approx(116.0)  # total 16 s from the start
    counted, deadline = s.confirm("c", 103.0)
    assert counted and deadline == pytest.approx(107.81)  # total 7.81 s
    counted, deadline = s.confirm("d", 104.0)
    assert counted and deadline == pytest.approx(104.0)  # overdue: fires now
    assert s.confirm("e", 105.0)[0] is False  # k reached


def test_suspicion_without_expected_confirmations_uses_min() -> None:
    s = Suspicion("a", k=0, min_timeout=4.0, max_timeout=24.0, now=0.0)
    assert s.deadline == 4.0
    assert s.confirm("b", 1.0) == (False, 4.0)


def test_suspicion_plain_swim_ignores_confirmations() -> None:
    s = Suspicion("a", k=2, min_timeout=4.0, max_timeout=24.0, now=0.0, lifeguard=False)
    assert s.deadline == 4.0
    assert s.confirm("b", 1.0) == (False, 4.0)


def _queue(n: int = 3, mult: int = 4, max_queued: int = 100) -> TransmitLimitedQueue:
    return TransmitLimitedQueue(mult, lambda: n, max_queued)


def test_queue_prefers_fresh_then_largest_then_newest() -> None:
    q = _queue()
    q.queue("a", b"a" * 10)
    q.queue("b", b"b" * 30)
    q.queue("c", b"c" * 10)
    assert q.get_broadcasts(2, 1000) == [b"b" * 30, b"c" * 10, b"a" * 10]
    q.queue("d", b"d" * 5)
    # d was never sent: it goes first even though it is the smallest
    assert q.get_broadcasts(2, 1000)[0] == b"d" * 5


def test_queue_fits_the_largest_item_into_the_budget() -> None:
    q = _queue()
    q.queue("a", b"a" * 50)
    q.queue("b", b"b" * 20)
    q.queue("c", b"c" * 8)
    assert q.get_broadcasts(2, 25) == [b"b" * 20]
    assert q.get_broadcasts(2, 12) == [b"c" * 8]


def test_queue_key_replaces_and_limit_drops() -> None:
    q = _queue(n=3, mult=4)  # limit 4 * ceil(log10(4)) = 4
    q.queue("node", b"old")
    q.queue("node", b"new")
    assert len(q) == 1
    sends = [q.get_broadcasts(2, 100) for _ in range(6)]
    assert sends[:4] == [[b"new"]] * 4 and sends[4:] == [[], []]
    assert len(q) == 0


def test_queue_notifies_when_finished_or_replaced() -> None:
    q = _queue(n=1, mult=1)  # limit 1
    i = q.queue("x", b"leave", notify=True)
    assert q.pop_finished() == []
    q.get_broadcasts(2, 100)
    assert q.pop_finished() == [i]
    j = q.queue("y", b"one", notify=True)
    q.queue("y", b"two")
    assert q.pop_finished() == [j]


def test_queue_bounded_drops_most_sent_oldest() -> None:
    q = _queue(n=100, mult=4, max_queued=3)
    q.queue(None, b"old1")
    q.get_broadcasts(2, 100)  # old1 sent once
    q.queue(None, b"new2")
    q.queue(None, b"new3")
    q.queue(None, b"new4")  # over the bound: old1 (most transmitted) goes
    assert q.dropped == 1
    assert sorted(q.get_broadcasts(2, 100)) == [b"new2", b"new3", b"new4"]


def test_queue_scales_to_many_items() -> None:
    q = _queue(n=10_000, mult=4, max_queued=4096)
    for i in range(10_000):
        q.queue(f"n{i}", bytes(40 + i % 50))
    assert len(q) == 4096
    total = 0
    for _ in range(200):
        got = q.get_broadcasts(2, 1398)
        assert sum(len(m) + 2 for m in got) <= 1398
        total += len(got)
    assert total > 200 * 10


def _rec(name: str, state: State = State.ALIVE, t: float = 0.0) -> NodeRecord:
    return NodeRecord(name, Address("127.0.0.1", 1), b"", 1, state, bytes([1, 5, 2, 2, 5, 5]), t)


def test_member_table_round_robin_skips_self_dead_left_and_reaps() -> None:
    t = MemberTable(random.Random(1))
    for r in [_rec("me"), _rec("a"), _rec("b"), _rec("d", State.DEAD), _rec("l", State.LEFT)]:
        t.add(r)
    seen = [t.next_probe_target("me", 100.0, 30.0) for _ in range(4)]
    assert {r.name for r in seen if r} == {"a", "b"}
    assert "d" not in {r.name for r in t} and "l" not in {r.name for r in t}  # reaped at wrap
    assert t.count(State.DEAD) == 0 and len(t) == 3


def test_member_table_keeps_self_and_recent_dead() -> None:
    t = MemberTable(random.Random(1))
    t.add(_rec("me", State.LEFT))
    t.add(_rec("d", State.DEAD, t=90.0))
    assert t.next_probe_target("me", 100.0, 30.0) is None
    assert {r.name for r in t} == {"me", "d"}


def test_member_table_sample_distinct_and_matching() -> None:
    t = MemberTable(random.Random(2))
    for i in range(1000):
        t.add(_rec(f"n{i}", State.ALIVE if i % 2 else State.DEAD))
    got = t.sample(3, lambda r: r.state is State.ALIVE, expected=t.count(State.ALIVE))
    assert len(got) == 3 and len({r.name for r in got}) == 3
    assert all(r.state is State.ALIVE for r in got)
    rare = t.sample(3, lambda r: r.name == "n7", expected=1)  # falls back to a scan
    assert [r.name for r in rare] == ["n7"]
