"""The cheap paths of a push/pull merge and of our own push/pull state.

``Memberlist._merge_remote`` skips the remote node states its handlers would drop unchanged
(``_merge_unchanged``), and ``_encode_local_state`` reuses each member's cached node-state bytes
(``NodeRecord.push_state``).  Both must be invisible: these tests pin down that an unchanged
member costs no broadcast, event or notice, and that the shortcuts give exactly what the full
path gives - effects, member table, queue, timers, statistics and bytes - for arbitrary
remote states against a table holding alive, suspect, dead and left members.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from swim_harness import TEST_CONFIG

from serf_trio.swim.api import Address, MemberEvent, Notice, State
from serf_trio.swim.members import NodeRecord
from serf_trio.swim.node import Memberlist
from serf_trio.swim.pushpull import node_states
from serf_trio.wire.codec import encode_message, encode_node_state
from serf_trio.wire.messages import DEFAULT_VSN, NodeStateCode, PushNodeState, PushPull, Suspect
from serf_trio.wire.packet import encode_packet
from serf_trio.wire.stream import encode_stream_message

ME = Address("127.0.0.1", 7946)
NAMES = [f"n{i}" for i in range(8)]


def _addr(i: int) -> Address:
    return Address(f"10.0.0.{i + 1}", 7946)


def _ns(
    i: int, state: int = NodeStateCode.ALIVE, inc: int = 2, vsn: bytes = DEFAULT_VSN
) -> PushNodeState:
    a = _addr(i)
    return PushNodeState(f"n{i}", a.packed(), a.port, b"meta", inc, state, vsn)


def _stream(*states: PushNodeState, join: bool = False) -> bytes:
    return encode_stream_message(PushPull(join, tuple(states), b""), compress=False)


def _local(seed: int = 1) -> Memberlist:
    """``me`` knowing n0..n7 at incarnation 2: n5 dead, n4 left, n2 and n3 suspected by us and
    n6 by n7 (suspicion timers running), the rest alive; its broadcast queue drained."""
    node = Memberlist(TEST_CONFIG, "me", ME, rng=random.Random(seed), now=0.0)
    node.handle_stream(1.0, _stream(*(_ns(i) for i in range(8))))
    node.handle_stream(2.0, _stream(_ns(5, NodeStateCode.SUSPECT)))
    node.tick(200.0)  # the suspicion runs out: a last chance, then dead
    node.tick(400.0)
    node.handle_stream(401.0, _stream(_ns(4, NodeStateCode.LEFT)))
    node.handle_stream(402.0, _stream(_ns(2, NodeStateCode.SUSPECT), _ns(3, NodeStateCode.DEAD)))
    # n6 accused by n7, not by us: our own accusation would confirm it.
    accusation = encode_packet([encode_message(Suspect(2, "n6", "n7"))], crc=False, compress=False)
    node.handle_packet(403.0, _addr(7), accusation)
    _drain(node)
    return node


def _drain(node: Memberlist) -> list[bytes]:
    """Every transmission the queue still has in it (each broadcast up to its limit)."""
    out: list[bytes] = []
    while True:
        got = node._queue.get_broadcasts(2, 1400)
        if not got:
            return out
        out.extend(got)


def _snapshot(node: Memberlist) -> dict[str, Any]:
    """Everything a merge could change, in comparable form."""
    stats = node.statistics()
    return {
        "members": node.members(),
        "suspicions": {
            k: (s.deadline, s.n, sorted(s.confirmers), s.last_chances)
            for k, s in sorted(node._suspicions.items())
        },
        "deadline": node.next_deadline(),
        "stats": dataclasses.replace(stats, messages_in={}, messages_out={}),
        "queue": _drain(node),
    }


def test_local_table_has_every_state() -> None:
    states = {m.name: m.state for m in _local().members()}
    assert states["n5"] is State.DEAD and states["n4"] is State.LEFT
    assert states["n2"] is State.SUSPECT and states["n3"] is State.SUSPECT
    assert states["n6"] is State.SUSPECT
    assert states["n0"] is State.ALIVE


def test_unchanged_members_queue_nothing_and_raise_nothing() -> None:
    node = _local()
    before = _snapshot(node)
    again = tuple(_ns(i, state) for i, state in [(0, 0), (1, 0), (4, 3), (5, 2), (6, 0), (7, 0)])
    reply, effects = node.handle_stream(500.0, _stream(*again))
    assert reply is not None
    assert [e for e in effects if isinstance(e, MemberEvent | Notice)] == []
    after = _snapshot(node)
    assert after["queue"] == []  # no broadcast queued
    assert after["members"] == before["members"]
    assert after["stats"].push_pulls == before["stats"].push_pulls + 1


def test_the_shortcut_is_not_taken_for_news() -> None:
    """A newer incarnation, another address and a suspect claim about an alive member still
    take the handlers."""
    node = _local()
    news = (
        _ns(0, inc=3),  # newer: re-broadcast
        dataclasses.replace(_ns(1), port=9999),  # another address: a name conflict
        _ns(7, NodeStateCode.SUSPECT),  # we start suspecting n7
        _ns(6, NodeStateCode.DEAD),  # we confirm n7's accusation of n6
    )
    _reply, effects = node.handle_stream(500.0, _stream(*news))
    assert [e.event for e in effects if isinstance(e, Notice)] == ["name_conflict"]
    assert node.member("n0") is not None and node.member("n0").incarnation == 3  # type: ignore[union-attr]
    assert node.member("n7").state is State.SUSPECT  # type: ignore[union-attr]
    assert node._suspicions["n6"].confirmers == {"n7", "me"}
    assert len(set(_drain(node))) == 3  # alive n0, suspect n7, suspect n6 (confirmation)


_VSNS = [DEFAULT_VSN, DEFAULT_VSN, bytes([1, 5, 3, 2, 5, 5]), bytes([0, 5, 2, 2, 5, 5]), b""]


@st.composite
def _remote_state(draw: st.DrawFn) -> PushNodeState:
    """A remote node state, mostly about members we know at their address and versions (the
    states that decide between the shortcut and the handlers), sometimes not."""
    i = draw(st.integers(0, 9))  # n8, n9 are unknown; "me" below
    name = "me" if i == 9 else f"n{i}"
    a = ME if name == "me" else _addr(i)
    addr = a.packed() if draw(st.integers(0, 4)) else _addr(20).packed()
    port = draw(st.sampled_from([a.port, a.port, 0, 9999]))
    vsn = draw(st.sampled_from(_VSNS[:4] if draw(st.integers(0, 9)) else _VSNS))
    meta = draw(st.sampled_from([b"meta", None, b"other"]))
    state = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))
    return PushNodeState(name, addr, port, meta, draw(st.integers(0, 4)), state, vsn)


@settings(max_examples=300, deadline=None)
@given(st.lists(_remote_state(), max_size=12), st.booleans())
def test_merge_shortcut_matches_the_full_handlers(remote: list[PushNodeState], join: bool) -> None:
    """The same push/pull into two identical nodes, one forced through the handlers for every
    state: identical reply, effects, table, suspicions, timers, statistics and queue."""
    fast, full = _local(), _local()
    full._merge_unchanged = lambda ns, rec: False  # type: ignore[method-assign]
    data = _stream(*remote, join=join)
    assert fast.handle_stream(500.0, data) == full.handle_stream(500.0, data)
    assert _snapshot(fast) == _snapshot(full)
    assert fast.tick(10_000.0) == full.tick(10_000.0)  # same timers armed
    assert _snapshot(fast) == _snapshot(full)


def test_encoded_local_state_is_the_encoded_push_pull() -> None:
    node = _local()
    for join in (False, True):
        assert node._encode_local_state(join) == encode_stream_message(
            node._local_state(join), compress=False
        )
    compressing = Memberlist(
        dataclasses.replace(TEST_CONFIG, enable_compression=True),
        "c",
        ME,
        rng=random.Random(1),
        now=0.0,
    )
    compressing.handle_stream(1.0, _stream(*(_ns(i) for i in range(3))))
    assert compressing._encode_local_state(True) == encode_stream_message(
        compressing._local_state(True), compress=True
    )


def test_push_state_cache_follows_every_field() -> None:
    rec = NodeRecord("x", Address("127.0.0.1", 1), b"m", 1, State.ALIVE, DEFAULT_VSN, 0.0)

    def expected() -> bytes:
        (ns,) = node_states([rec])
        return encode_node_state(ns)

    assert rec.push_state() == expected()
    first = rec.push_state()
    assert rec.push_state() is first  # cached
    for change in (
        {"incarnation": 2},
        {"state": State.SUSPECT},
        {"meta": b""},
        {"addr": Address("127.0.0.2", 1)},
        {"addr": Address("127.0.0.2", 2)},
        {"vsn": bytes([1, 5, 3, 2, 5, 5])},
    ):
        for field, value in change.items():
            setattr(rec, field, value)
        assert rec.push_state() == expected(), change


def test_stale_accusations_in_a_merge_still_skip_only_when_harmless() -> None:
    """A remote suspect about a member we suspect ourselves goes to the suspicion (it may
    confirm), even at our incarnation."""
    node = _local()
    assert node._merge_unchanged(_ns(2, NodeStateCode.SUSPECT), node._members.get("n2")) is False  # type: ignore[arg-type]
    assert (
        node._merge_unchanged(_ns(2, NodeStateCode.SUSPECT, inc=1), node._members.get("n2")) is True
    )  # type: ignore[arg-type]
    # the accusation our own probe would make is unaffected
    assert node._on_suspect(500.0, Suspect(2, "n7", "me")) is True
