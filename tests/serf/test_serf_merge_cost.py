"""The cheap paths of Serf's push/pull merge (``serf.pushpull.StateExchange``).

A status LTime not newer than the member's and a ring slot whose events we all hold only
witness a clock; the merge recognises them without building intents or events.  These tests
pin down that an unchanged state costs no event, broadcast or status change, that the clocks
are still witnessed exactly as the full path does, and the edges of the event-ring shortcut.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from serf_trio.serf.config import SerfConfig
from serf_trio.serf.effects import SerfMemberEvent, SerfUserEvent
from serf_trio.serf.events import EventBuffer
from serf_trio.serf.messages import EventEntry, EventSlot, PushPullState, encode
from serf_trio.serf.node import SerfNode
from serf_trio.serf.tags import decode_tags, encode_tags
from serf_trio.swim.api import Address
from serf_trio.swim.config import LAN
from serf_trio.wire.messages import DEFAULT_VSN, PushNodeState, PushPull
from serf_trio.wire.stream import encode_stream_message

SWIM = dataclasses.replace(LAN, enable_compression=False)
ME = Address("127.0.0.1", 7946)
NAMES = [f"m{i}" for i in range(6)]
META = encode_tags({"role": "web"})


def _slots(*filled: EventSlot) -> tuple[EventSlot | None, ...]:
    ring: list[EventSlot | None] = [None] * 512
    for s in filled:
        ring[s.ltime % 512] = s
    return tuple(ring)


def _slot(ltime: int, *names: str) -> EventSlot:
    return EventSlot(ltime, tuple(EventEntry(n, b"p") for n in names))


def _stream(state: PushPullState, names: list[str] = NAMES) -> bytes:
    nodes = tuple(
        PushNodeState(n, bytes([10, 0, 0, i + 1]), 7946, META, 1, 0, DEFAULT_VSN)
        for i, n in enumerate(names)
    )
    return encode_stream_message(PushPull(False, nodes, encode(state)), compress=False)


def _state(
    status: dict[str, int], events: tuple[EventSlot | None, ...], *, ltime: int = 20
) -> PushPullState:
    return PushPullState(ltime, status, (), 1, events, 3)  # EventLTime 1 witnesses nothing


def _node() -> tuple[SerfNode, list[Any]]:
    node = SerfNode(SerfConfig(), SWIM, "me", ME, rng=random.Random(1), now=0.0)
    state = _state({n: 5 for n in NAMES}, _slots(_slot(7, "a", "b"), _slot(8, "c")))
    _reply, effects = node.handle_stream(1.0, _stream(state))
    return node, effects


def test_first_merge_delivers_members_and_events() -> None:
    _, effects = _node()
    joined = {m.name for e in effects if isinstance(e, SerfMemberEvent) for m in e.members}
    assert joined == {"me", *NAMES}
    assert sorted(e.name for e in effects if isinstance(e, SerfUserEvent)) == ["a", "b", "c"]


def test_unchanged_state_costs_no_event_no_broadcast_and_still_witnesses() -> None:
    node, _ = _node()
    before = {m.name: (m.status, m.status_ltime) for m in node.members()}
    clock, event_clock = node.clock.time(), node.event_clock.time()
    # Older and equal status times, the same events, a higher *status* time than our clock
    # for one member that is unchanged only at the memberlist level.
    status = {n: 5 for n in NAMES} | {"m0": 4}
    state = _state(status, _slots(_slot(7, "a", "b"), _slot(8, "c")), ltime=1)
    _reply, effects = node.handle_stream(2.0, _stream(state))
    assert effects == []
    assert {m.name: (m.status, m.status_ltime) for m in node.members()} == before
    assert node.serf_statistics().intent_queue == 0
    assert node.serf_statistics().event_queue == 0
    assert node.clock.time() == clock  # nothing newer than what the first merge witnessed
    assert node.event_clock.time() == event_clock == 9  # slot 8 witnessed by the first merge


def test_witnessing_matches_the_full_path_for_high_times() -> None:
    """Known members at status times far past our clock: the shortcut (t <= status) is not
    taken, the intent is applied and witnessed; an all-duplicate slot at a high LTime still
    moves the event clock."""
    node, _ = _node()
    ring = _slots(_slot(7, "a", "b"), _slot(8, "c"), _slot(300, "late"))
    state = _state({"m1": 100}, ring)
    _reply, effects = node.handle_stream(2.0, _stream(state))
    assert [e.name for e in effects if isinstance(e, SerfUserEvent)] == ["late"]
    assert node.member("m1").status_ltime == 100  # type: ignore[union-attr]
    assert node.clock.time() == 101
    assert node.event_clock.time() == 301
    # the same again: nothing new, the clocks stay
    _reply, effects = node.handle_stream(3.0, _stream(state))
    assert effects == [] and node.clock.time() == 101 and node.event_clock.time() == 301


def test_slot_shortcut_edges() -> None:
    node, _ = _node()
    # An empty slot far ahead witnesses nothing (no event to handle); a slot holding one new
    # event beside known ones delivers only the new one.
    ring = _slots(EventSlot(400, ()), _slot(7, "a", "b", "new"))
    _reply, effects = node.handle_stream(2.0, _stream(_state({}, ring)))
    assert [e.name for e in effects if isinstance(e, SerfUserEvent)] == ["new"]
    assert node.event_clock.time() == 9  # slot 8 from the first merge; 400 not witnessed


def test_event_buffer_holds() -> None:
    buf = EventBuffer(8)
    assert buf.accept(0, 3, "a", b"x") == (True, "")
    assert buf.accept(0, 3, "b", b"y") == (True, "")
    held = EventSlot(3, (EventEntry("b", b"y"),))
    assert buf.holds(held)
    assert buf.holds(EventSlot(3, (EventEntry("a", b"x"), EventEntry("b", b"y"))))
    assert not buf.holds(EventSlot(3, (EventEntry("a", b"other"),)))
    assert not buf.holds(EventSlot(11, (EventEntry("a", b"x"),)))  # same index, other LTime
    assert not buf.holds(EventSlot(4, (EventEntry("a", b"x"),)))


def test_decode_tags_hands_out_a_fresh_dict() -> None:
    first = decode_tags(META)
    first["role"] = "changed"
    assert decode_tags(META) == {"role": "web"}
    assert decode_tags(b"") == {"role": ""}
