"""The Serf core's timers: ``serf.timers.TimerHeap`` and ``SerfNode.next_deadline``.

``next_deadline`` peeks a few heaps (memberlist's, the reaper's, the queries', the leaving
watch's) instead of walking members, leaving members or queries; these tests pin that down with
10,000 "leaving" members, check that obsolete entries are skipped, and that every kind of timer
fires exactly when ``next_deadline`` says, in the order the core has always used.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import Any

from serf_trio.serf.config import SerfConfig
from serf_trio.serf.effects import QueryUpdate, SerfMemberEvent
from serf_trio.serf.messages import PushPullState, encode
from serf_trio.serf.node import SerfNode
from serf_trio.serf.query import QueryParam
from serf_trio.serf.timers import TimerHeap
from serf_trio.swim.api import Address, Notice
from serf_trio.swim.config import LAN
from serf_trio.wire.messages import DEFAULT_VSN, PushNodeState, PushPull
from serf_trio.wire.stream import encode_stream_message

SWIM = dataclasses.replace(LAN, enable_compression=False)
ADDR = Address("127.0.0.1", 7946)
LEAVING_TIMEOUT = 5.0
QUIET = SerfConfig(reap_interval=600.0, reconnect_interval=900.0, leaving_timeout=LEAVING_TIMEOUT)


# ---------------------------------------------------------------------------------------------
# TimerHeap


def test_peek_is_the_earliest_armed_deadline_and_skips_stale_entries() -> None:
    h: TimerHeap[str] = TimerHeap()
    assert h.peek() is None
    h.set("a", 5.0)
    h.set("b", 3.0)
    h.set("c", 4.0)
    assert h.peek() == 3.0
    h.set("b", 10.0)  # re-armed: its 3.0 entry is stale now
    h.cancel("c")
    assert h.peek() == 5.0
    assert len(h) == 2 and "c" not in h and h.deadline("b") == 10.0
    assert h.pop_due(6.0) == ["a"]
    assert h.peek() == 10.0
    assert h.pop_due(9.999) == []
    assert h.pop_due(10.0) == ["b"]  # due at its deadline exactly
    assert h.peek() is None and len(h) == 0


def test_pop_due_returns_keys_in_the_order_they_were_first_armed() -> None:
    """The order of the dicts of deadlines the core used before: re-arming keeps a key's place,
    firing or cancelling frees it."""
    h: TimerHeap[str] = TimerHeap()
    h.set("x", 3.0)
    h.set("y", 1.0)
    h.set("z", 2.0)
    h.set("x", 2.5)  # keeps its first place
    assert h.pop_due(10.0) == ["x", "y", "z"]
    h.set("p", 1.0)
    h.set("q", 1.0)
    h.cancel("p")
    h.set("p", 0.5)  # a new place, after q
    assert h.pop_due(10.0) == ["q", "p"]


def test_peek_with_a_liveness_test_disarms_dead_keys() -> None:
    h: TimerHeap[str] = TimerHeap()
    for i, key in enumerate("abcd"):
        h.set(key, float(i))
    gone = {"a", "b"}
    assert h.peek(lambda k: k not in gone) == 2.0
    assert "a" not in h and "b" not in h and len(h) == 2
    assert h.pop_due(10.0) == ["c", "d"]


def test_stale_entries_do_not_pile_up() -> None:
    h: TimerHeap[int] = TimerHeap()
    for key in range(10):
        h.set(key, 1_000.0 + key)
    for i in range(100_000):  # re-armed over and over, never due
        h.set(i % 10, 2_000.0 - i * 1e-3)
    assert len(h) == 10
    assert len(h._heap) <= 2 * len(h) + 64 + 1  # rebuilt from the armed keys when stale
    assert h.peek() == min(2_000.0 - i * 1e-3 for i in range(100_000 - 10, 100_000))


# ---------------------------------------------------------------------------------------------
# SerfNode


def _node(cfg: SerfConfig = QUIET, now: float = 0.0) -> SerfNode:
    return SerfNode(cfg, SWIM, "me", ADDR, rng=random.Random(7), now=now)


def _names(start: int, count: int) -> list[str]:
    return [f"node-{i}" for i in range(start, start + count)]


def _push_pull(
    now: float,
    node: SerfNode,
    names: Sequence[str],
    *,
    left: Iterable[str] = (),
    ltime: int = 2,
) -> list[Any]:
    """A peer's push/pull: memberlist learns ``names`` alive; the Serf state gives each the
    status LTime ``ltime``, as a leave for those in ``left`` (so they become "leaving")."""
    nodes = tuple(
        PushNodeState(n, bytes([10, 1, int(n[5:]) // 256, int(n[5:]) % 256]), 7946, None, 1, 0,
                      DEFAULT_VSN)
        for n in names
    )  # fmt: skip
    state = PushPullState(
        ltime=ltime + 10,
        status_ltimes={n: ltime for n in names},
        left_members=tuple(left),
        event_ltime=1,
        events=(None,) * 512,
        query_ltime=1,
    )
    data = encode_stream_message(PushPull(False, nodes, encode(state)), compress=False)
    _reply, effects = node.handle_stream(now, data)
    return effects


def _calls_during(fn: Callable[[], object]) -> int:
    """Python and builtin calls made while ``fn`` runs (a scan over n members makes >= n)."""
    count = 0

    def prof(frame: FrameType, event: str, arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def _expected(node: SerfNode, *serf_deadlines: float) -> float:
    ml = node.memberlist.next_deadline()
    return min([*serf_deadlines, *([ml] if ml is not None else [])])


def _cleared(effects: Iterable[object]) -> list[str]:
    return [
        str(e.fields["node"])
        for e in effects
        if isinstance(e, Notice) and e.event == "leaving_cleared"
    ]


def test_next_deadline_does_not_scan_10000_leaving_members() -> None:
    node = _node()
    a, b = _names(0, 5_000), _names(5_000, 5_000)
    _push_pull(1.0, node, a, left=a)
    _push_pull(2.0, node, b, left=b)
    assert node.serf_statistics().leaving == 10_000
    assert node.next_deadline() == _expected(node, 1.0 + LEAVING_TIMEOUT)
    assert _calls_during(node.next_deadline) < 100

    # The first half comes back (newer join intents): their heap entries are obsolete.
    _push_pull(3.0, node, a, ltime=50)
    assert node.serf_statistics().leaving == 5_000
    assert node.next_deadline() == _expected(node, 2.0 + LEAVING_TIMEOUT)
    assert _calls_during(node.next_deadline) < 100

    # The leaving timeout fires when next_deadline says, not a moment before.
    deadline = 2.0 + LEAVING_TIMEOUT
    assert _cleared(node.tick(deadline - 1e-6)) == []
    cleared = _cleared(node.tick(deadline))
    assert cleared == b  # in the order they became leaving
    assert node.serf_statistics().leaving == 0
    assert node.next_deadline() == _expected(node, QUIET.reap_interval)


def test_a_tick_at_the_reported_leaving_deadline_always_clears_it() -> None:
    """``since + timeout`` can round above ``since`` by less than ``timeout``
    (31.565095214955026 + 0.5): the tick at the reported deadline must still clear the member,
    or the node would be woken at that same instant forever."""
    since, timeout = 31.565095214955026, 0.5
    assert (since + timeout) - since < timeout
    node = _node(dataclasses.replace(QUIET, leaving_timeout=timeout), now=since)
    _push_pull(since, node, ["node-1"], left=["node-1"])
    at = node.next_deadline()
    assert at == since + timeout
    assert _cleared(node.tick(at)) == ["node-1"]
    assert node.next_deadline() != at


def test_reap_and_reconnect_timers_rearm_from_when_they_fired() -> None:
    cfg = SerfConfig(reap_interval=15.0, reconnect_interval=30.0)
    node = _node(cfg)
    assert node.next_deadline() == _expected(node, 15.0)
    node.tick(15.0)
    assert node.next_deadline() == _expected(node, 30.0)
    node.tick(31.0)  # both due: reconnect at 31 + 30, reap at 31 + 15
    assert node.next_deadline() == _expected(node, 46.0)


def test_query_deadlines_fire_on_time_and_in_the_order_the_queries_started() -> None:
    node = _node()
    q1, _ = node.query(1.0, QueryParam("slow", timeout=3.0))
    q2, _ = node.query(1.5, QueryParam("fast", timeout=1.0))
    assert node.next_deadline() == _expected(node, 2.5)
    assert node.tick(2.4) == []
    done = [e for e in node.tick(2.5) if isinstance(e, QueryUpdate)]
    assert done == [QueryUpdate(q2, "done")]
    assert node.next_deadline() == _expected(node, 4.0)

    # Due work runs at the end of every entry point, not only in ticks.
    q3, effects = node.query(10.0, QueryParam("slow", timeout=3.0))
    assert [e for e in effects if isinstance(e, QueryUpdate)] == [QueryUpdate(q1, "done")]

    # Both past their deadline in one call: finished in the order they were started (the
    # order Serf's core always used), not by deadline.
    q4, _ = node.query(10.5, QueryParam("fast", timeout=1.0))
    done = [e.query_id for e in node.tick(20.0) if isinstance(e, QueryUpdate)]
    assert done == [q3, q4]


def test_force_leave_prune_waits_for_the_members_own_leave() -> None:
    cfg = dataclasses.replace(QUIET, broadcast_timeout=1.0, leave_propagate_delay=0.5)
    node = _node(cfg)
    _push_pull(1.0, node, ["node-1", "node-2"], left=["node-1", "node-2"])
    node.force_leave(2.0, "node-2", prune=True)
    node.force_leave(2.2, "node-1", prune=True)
    node.force_leave(2.4, "node-2", prune=True)  # re-armed: 3.9, and still first in line
    assert node.next_deadline() == _expected(node, 3.7)
    reaped = [
        e.members[0].name
        for e in node.tick(4.0)
        if isinstance(e, SerfMemberEvent) and e.kind == "member-reap"
    ]
    assert reaped == ["node-2", "node-1"]
    assert node.member("node-1") is None and node.member("node-2") is None
    assert node.next_deadline() == _expected(node, QUIET.reap_interval)
