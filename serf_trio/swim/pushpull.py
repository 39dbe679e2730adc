"""Push/pull state exchange rules (memberlist state.go ``mergeState`` / ``verifyProtocol``).

Pure functions over node states, so the merge rules can be tested without a running node:

* ``verify_protocol``: over every *alive* node of both lists take the highest minimum and the
  lowest maximum protocol (and delegate) version; every node of both lists, whatever its state,
  must speak a current version inside that window, else the whole state is rejected with
  memberlist's error text;
* ``merge_messages`` / ``merge_message``: remote alive -> an ``alive`` message; remote left ->
  ``dead`` from the node itself (a graceful leave); remote dead or suspect -> a ``suspect``
  from *us*: a push/pull never kills a node directly.  (The node skips, before building any
  message, the remote states its handlers would drop unchanged: ``Memberlist._merge_remote``.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..wire.messages import Alive, Dead, NodeStateCode, PushNodeState, Suspect
from .api import State
from .members import NodeRecord


def node_states(records: Iterable[NodeRecord]) -> tuple[PushNodeState, ...]:
    """Our side of a push/pull: every known node, including ourselves and dead/left ones."""
    return tuple(r.node_state() for r in records)


def verify_protocol(remote: Sequence[PushNodeState], local: Iterable[NodeRecord]) -> str | None:
    """``None`` if everyone can understand everyone, else memberlist's error text.

    A cluster holds a handful of distinct version vectors, whatever its size, so the window and
    the check run over the distinct ones; only when one fails are the nodes walked in order
    (remote, then local), because the error names the first offending node.
    """
    local_list = list(local)
    maxpmin = maxdmin = 0
    minpmax = mindmax = 255
    alive = {n.vsn for n in remote if n.state == NodeStateCode.ALIVE and n.vsn}
    alive.update([r.vsn for r in local_list if r.state is State.ALIVE and r.vsn])
    for v in alive:
        maxpmin, minpmax = max(maxpmin, v[0]), min(minpmax, v[1])
        maxdmin, mindmax = max(maxdmin, v[3]), min(mindmax, v[4])
    distinct = {n.vsn for n in remote}
    distinct.update([r.vsn for r in local_list])
    if all(_fits(v, maxpmin, minpmax, maxdmin, mindmax) for v in distinct):
        return None
    everyone = [(n.name, n.vsn) for n in remote] + [(r.name, r.vsn) for r in local_list]
    for name, v in everyone:
        # A node state without Vsn counts as version 0 and fails (memberlist verifyProtocol).
        pcur, dcur = (v[2], v[5]) if len(v) >= 6 else (0, 0)
        if pcur < maxpmin or pcur > minpmax:
            # Go formats the []uint8 window as "[a b]".
            return f"Node '{name}' protocol version ({pcur}) is incompatible: [{maxpmin} {minpmax}]"
        if dcur < maxdmin or dcur > mindmax:
            return (
                f"Node '{name}' delegate protocol version ({dcur}) is incompatible: "
                f"[{maxdmin} {mindmax}]"
            )
    return None


def _fits(v: bytes, maxpmin: int, minpmax: int, maxdmin: int, mindmax: int) -> bool:
    """Whether a version vector's current protocol and delegate versions are in the window."""
    pcur, dcur = (v[2], v[5]) if len(v) >= 6 else (0, 0)
    return maxpmin <= pcur <= minpmax and maxdmin <= dcur <= mindmax


def merge_messages(remote: Iterable[PushNodeState], me: str) -> list[Alive | Dead | Suspect]:
    """The messages memberlist's ``mergeState`` feeds through its normal handlers."""
    return [merge_message(ns, me) for ns in remote]


def merge_message(ns: PushNodeState, me: str) -> Alive | Dead | Suspect:
    """The message memberlist's ``mergeState`` makes of one remote node state."""
    if ns.state == NodeStateCode.ALIVE:
        return Alive(ns.incarnation, ns.name, ns.addr, ns.port, ns.meta, ns.vsn)
    if ns.state == NodeStateCode.LEFT:
        return Dead(ns.incarnation, ns.name, ns.name)
    return Suspect(ns.incarnation, ns.name, me)
