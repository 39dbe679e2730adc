"""The member table: every known node, the probe round-robin and random peer selection.

Rules owned here (memberlist ``state.go``):

* a new node is inserted at a random position of the probe list (memberlist swaps it with a
  random slot), so failure-detection time stays uniform;
* when the probe index wraps, the list is reshuffled and nodes that have been dead *or left*
  for longer than ``gossip_to_the_dead_time`` are forgotten.  memberlist 0.2.2 never forgets
  left nodes; we reap them like dead ones, as memberlist master does, so a long-lived cluster
  with churn does not grow without bound;
* random selection of ``k`` nodes matching a predicate never scans the table when matches are
  common: it rejection-samples the indexable probe list (expected O(k)); only when the caller's
  estimate says matches are rare (< 1/8 of the table) or the table is small does it scan.
  Indirect-probe relays and the push/pull peer use it;
* gossip targets come from a separate random cycle (``targets.GossipCycle``) and the ring of
  alive members (``targets.GossipRing``, kept here at every state change); reasoning in
  ``targets``.  A new node joins the cycle's unwalked part; reaped nodes are dropped when met.

Records are mutable and private to the core; the outside sees frozen ``MemberInfo`` copies.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

from ..wire.codec import encode_node_state
from ..wire.messages import PushNodeState
from .api import Address, MemberInfo, State
from .targets import GossipCycle, GossipRing

_SCAN_BELOW = 64  # tables this small are scanned outright
# A record's encoded push/pull state: (the field values it was built from, the bytes).
_PushCache = tuple[tuple[int, State, bytes, Address, bytes], bytes]


@dataclass(slots=True)
class NodeRecord:
    name: str
    addr: Address
    meta: bytes
    incarnation: int
    state: State
    vsn: bytes
    state_change: float
    # The encoded pushNodeState last built for this record and the field values it was built
    # from (see ``push_state``); the core mutates records in place, so validity is checked by
    # comparing those values instead of invalidating at every write.
    _push: _PushCache | None = field(default=None, repr=False, compare=False)

    def push_state(self) -> bytes:
        """This record as an encoded push/pull ``pushNodeState`` (memberlist sendLocalState).

        Every push/pull lists every member, and between two of them almost none changes: the
        bytes are rebuilt only when incarnation, state, metadata, address or versions differ
        from those they were built from.
        """
        key = (self.incarnation, self.state, self.meta, self.addr, self.vsn)
        cached = self._push
        if cached is not None and cached[0] == key:
            return cached[1]
        data = encode_node_state(self.node_state())
        self._push = (key, data)
        return data

    def share_push_state(self, shared: dict[str, object]) -> None:
        """Take this member's encoded push/pull state from ``shared`` (keyed by name), where a
        record of the same member in another core left it, or build it and leave it there.
        The cache is keyed by the fields it encodes, so it stays valid for every record that
        holds those values (simulated clusters: one encoding per member, not per node)."""
        cached = shared.get(self.name)
        if cached is None:
            self.push_state()
            shared[self.name] = self._push
        else:
            self._push = cast(_PushCache, cached)

    def node_state(self) -> PushNodeState:
        """This record as a push/pull ``pushNodeState``."""
        return PushNodeState(
            name=self.name,
            addr=self.addr.packed(),
            port=self.addr.port,
            meta=self.meta or None,
            incarnation=self.incarnation,
            state=self.state.value,
            vsn=self.vsn,
        )

    def info(self) -> MemberInfo:
        return MemberInfo(
            name=self.name,
            addr=self.addr,
            meta=self.meta,
            incarnation=self.incarnation,
            state=self.state,
            vsn=self.vsn,
            state_change=self.state_change,
        )

    def _v(self, i: int) -> int:
        return self.vsn[i] if len(self.vsn) > i else 0

    @property
    def pmin(self) -> int:
        return self._v(0)

    @property
    def pmax(self) -> int:
        return self._v(1)

    @property
    def pcur(self) -> int:
        return self._v(2)

    @property
    def dmin(self) -> int:
        return self._v(3)

    @property
    def dmax(self) -> int:
        return self._v(4)

    @property
    def dcur(self) -> int:
        return self._v(5)

    @property
    def dead_or_left(self) -> bool:
        return self.state in (State.DEAD, State.LEFT)


class MemberTable:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._map: dict[str, NodeRecord] = {}
        self._list: list[NodeRecord] = []  # probe order; also the indexable sampling pool
        self._probe_index = 0
        self._counts: dict[State, int] = {s: 0 for s in State}
        self._gossip: GossipCycle[NodeRecord] = GossipCycle(rng)
        self._ring = GossipRing()  # alive members in ring order (gossip backstop)
        self._ring_turn = 0  # which ring successor this gossip round's first target is

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[NodeRecord]:
        return iter(self._list)

    def get(self, name: str) -> NodeRecord | None:
        return self._map.get(name)

    def count(self, state: State) -> int:
        return self._counts[state]

    def add(self, rec: NodeRecord) -> None:
        """Insert a new node at a random position of the probe list."""
        if rec.name in self._map:
            raise ValueError(f"node {rec.name!r} already known")
        self._map[rec.name] = rec
        n = len(self._list)
        self._list.append(rec)
        offset = self._rng.randrange(n) if n > 0 else 0
        self._list[offset], self._list[n] = self._list[n], self._list[offset]
        self._counts[rec.state] += 1
        self._gossip.add(rec)
        if rec.state is State.ALIVE:
            self._ring.insert(rec.name)

    def set_state(self, rec: NodeRecord, state: State, now: float) -> None:
        """Change a node's state and stamp the change time (keeps the per-state counts)."""
        if rec.state is not state:
            self._counts[rec.state] -= 1
            self._counts[state] += 1
            rec.state = state
            rec.state_change = now
            if state is State.ALIVE:
                self._ring.insert(rec.name)
            else:
                self._ring.discard(rec.name)

    def next_probe_target(self, self_name: str, now: float, reap_after: float) -> NodeRecord | None:
        """The next node to probe (skipping self, dead and left), or None if there is none.

        Wrapping around the list reshuffles it and reaps long-dead/left nodes.
        """
        checked = 0
        while checked < len(self._list) + 1:
            if self._probe_index >= len(self._list):
                self.reset(now, reap_after, keep=self_name)
                self._probe_index = 0
                checked += 1
                if not self._list:
                    return None
                continue
            rec = self._list[self._probe_index]
            self._probe_index += 1
            if rec.name == self_name or rec.dead_or_left:
                checked += 1
                continue
            return rec
        return None

    def reset(self, now: float, reap_after: float, keep: str = "") -> list[NodeRecord]:
        """Forget nodes dead/left for longer than ``reap_after`` and reshuffle; return them.

        The node named ``keep`` (ourselves, possibly left) is never forgotten.
        """
        kept: list[NodeRecord] = []
        gone: list[NodeRecord] = []
        for rec in self._list:
            if rec.dead_or_left and rec.name != keep and now - rec.state_change > reap_after:
                gone.append(rec)
            else:
                kept.append(rec)
        for rec in gone:
            del self._map[rec.name]
            self._counts[rec.state] -= 1
        self._rng.shuffle(kept)
        self._list = kept
        return gone

    def sample(
        self, k: int, pred: Callable[[NodeRecord], bool], expected: int | None = None
    ) -> list[NodeRecord]:
        """Up to ``k`` distinct random nodes for which ``pred`` holds.

        ``expected`` is the caller's estimate of how many nodes match (from the state counts);
        it decides between rejection sampling (expected O(k)) and a full scan.
        """
        n = len(self._list)
        if k <= 0 or n == 0:
            return []
        if n <= _SCAN_BELOW or (expected is not None and expected * 8 < n):
            pool = [r for r in self._list if pred(r)]
            return self._rng.sample(pool, min(k, len(pool)))
        chosen: dict[str, NodeRecord] = {}
        for _ in range(16 * k + 64):
            rec = self._list[self._rng.randrange(n)]
            if rec.name not in chosen and pred(rec):
                chosen[rec.name] = rec
                if len(chosen) >= k:
                    break
        return list(chosen.values())

    def gossip_targets(
        self,
        k: int,
        pred: Callable[[NodeRecord], bool],
        *,
        me: str,
        window: int,
        ring: int = 0,
    ) -> list[NodeRecord]:
        """The next up to ``k`` gossip targets: distinct, never ``me``, each matching ``pred``
        (see ``targets`` for why this shape).

        With ``ring > 0`` the first target is one of our ``ring`` alive successors on the
        gossip ring, taking turns round by round, and the others come from the gossip cycle,
        which then skips those successors; without, all come from the cycle.  No cycle pick
        repeats within ``window`` consecutive cycle picks.  If the cycle runs short (a tiny
        cluster) the other ring successors fill in, so the fan-out stays memberlist's.
        O(k + log N) amortised per call, however large the table.
        """
        current = self._map
        if k <= 0:
            return []
        succ = [
            rec
            for name in self._ring.successors(me, ring)
            if (rec := current.get(name)) is not None and pred(rec)
        ]
        reserved = {rec.name for rec in succ}
        out: list[NodeRecord] = []
        if succ:
            out.append(succ[self._ring_turn % len(succ)])
            self._ring_turn += 1

        def eligible(rec: NodeRecord) -> bool:
            name = rec.name
            return name != me and name not in reserved and pred(rec)

        out += self._gossip.take(
            k - len(out), eligible, window=window, current=lambda rec: current.get(rec.name) is rec
        )
        for rec in succ:
            if len(out) >= k:
                break
            if all(rec is not o for o in out):
                out.append(rec)
        return out

    @property
    def gossip_cycle(self) -> GossipCycle[NodeRecord]:
        """The gossip-target cycle (read-only use: statistics and tests)."""
        return self._gossip
