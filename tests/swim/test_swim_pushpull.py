"""Push/pull merge rules: version verification and the state-to-message mapping."""

from __future__ import annotations

import pytest

from serf_trio.swim.api import Address, State
from serf_trio.swim.members import NodeRecord
from serf_trio.swim.pushpull import merge_messages, node_states, verify_protocol
from serf_trio.wire.messages import Alive, Dead, PushNodeState, Suspect

V = bytes([1, 5, 2, 2, 5, 5])


def _ns(name: str, state: int = 0, vsn: bytes = V) -> PushNodeState:
    return PushNodeState(name, bytes([127, 0, 0, 1]), 7946, None, 3, state, vsn)


def _rec(name: str, vsn: bytes = V, state: State = State.ALIVE) -> NodeRecord:
    return NodeRecord(name, Address("127.0.0.1", 7946), b"m", 2, state, vsn, 0.0)


@pytest.mark.parametrize(
    ("remote", "local", "error"),
    [
        ([_ns("a")], [_rec("me")], None),
        # a peer that only speaks protocol 3..5 rejects our pcur 2
        ([_ns("a", vsn=bytes([3, 5, 3, 2, 5, 5]))], [_rec("me")],
         "Node 'me' protocol version (2) is incompatible: [3 5]"),
        # the window comes from alive nodes only: a dead node's pmin does not count
        ([_ns("a", 2, bytes([3, 5, 3, 2, 5, 5]))], [_rec("me")], None),
        ([_ns("a", vsn=bytes([1, 5, 2, 2, 4, 5]))], [_rec("me")],
         "Node 'a' delegate protocol version (5) is incompatible: [2 4]"),
        ([_ns("a", vsn=b"")], [_rec("me")], "Node 'a' protocol version (0) is incompatible: [1 5]"),
        # ... but every node, dead or not, must fit the window
        ([_ns("a", vsn=bytes([2, 5, 2, 2, 5, 5]))],
         [_rec("me"), _rec("old", bytes([1, 1, 1, 2, 5, 5]), State.DEAD)],
         "Node 'old' protocol version (1) is incompatible: [2 5]"),
    ],
)  # fmt: skip
def test_verify_protocol(
    remote: list[PushNodeState], local: list[NodeRecord], error: str | None
) -> None:
    assert verify_protocol(remote, local) == error


def test_merge_messages_never_kill_directly() -> None:
    msgs = merge_messages([_ns("a", 0), _ns("b", 1), _ns("c", 2), _ns("d", 3)], "me")
    assert msgs == [
        Alive(3, "a", bytes([127, 0, 0, 1]), 7946, None, V),
        Suspect(3, "b", "me"),
        Suspect(3, "c", "me"),
        Dead(3, "d", "d"),
    ]


def test_node_states_round_trip_fields() -> None:
    (ns,) = node_states([_rec("x", state=State.LEFT)])
    assert ns == PushNodeState("x", bytes([127, 0, 0, 1]), 7946, b"m", 2, 3, V)
