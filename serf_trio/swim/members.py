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

Shared records (simulation only): a simulated converged cluster hands the *same* record of a
member to every node's table (``shared=True``), so 10,000 nodes hold 10,000 records instead of
10^8.  A table copies a shared record before its first change (``own``: copy-on-write; every
write to a record's fields goes through a record ``own`` returned).  The probe list keeps the
shared object until it is next read, when the table's own copy replaces it (``_current``); the
gossip cycle gets the copy as a new entry and drops the old one when it meets it.  A core that
never copied a shared record pays one integer test per list read.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

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
    # Held by several tables at once (see the module docstring); never written through.
    shared: bool = field(default=False, repr=False, compare=False)

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
        self._stale = 0  # probe-list entries holding a shared record the table has copied

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[NodeRecord]:
        if self._stale:
            # Shared records the table has since copied: replace them all in one pass.
            current = self._map
            self._list = [current[rec.name] if rec.shared else rec for rec in self._list]
            self._stale = 0
        return iter(self._list)

    def _current(self, i: int) -> NodeRecord:
        """The probe list's entry ``i``, after replacing it by the table's copy if it is a
        shared record the table has since copied (``own``)."""
        rec = self._list[i]
        if self._stale and rec.shared:
            mine = self._map[rec.name]
            if mine is not rec:
                self._list[i] = rec = mine
                self._stale -= 1
        return rec

    def own(self, rec: NodeRecord) -> NodeRecord:
        """``rec`` itself, or the table's private copy of it if it is shared (copy-on-write:
        call before changing a record, and use the result)."""
        if not rec.shared:
            return rec
        mine = dataclasses.replace(rec, shared=False)
        self._map[rec.name] = mine
        self._stale += 1  # probe-list entries still holding a copied shared record
        self._gossip.add(mine)  # the shared entry is no longer current: dropped when drawn
        return mine

    def add_converged(self, recs: Sequence[NodeRecord]) -> None:
        """``add`` all of ``recs`` (alive: not checked; none known yet; shared ones may be
        held by other tables too) in bulk: the probe list is shuffled once (a uniformly
        random order, as one-by-one random insertions give) and the ring sorted once, so a
        converged start of N members costs O(N log N) mostly in C, not O(N^2) memmoves."""
        table = self._map
        fresh = {rec.name: rec for rec in recs}
        if len(fresh) != len(recs) or not fresh.keys().isdisjoint(table):
            raise ValueError("add_converged takes distinct members not known yet")
        table.update(fresh)
        probe = self._list
        probe.extend(recs)
        # A uniformly random order, like ``rng.shuffle`` but sorted in C by 64-bit random keys
        # (a converged start of 10,000 nodes shuffles 10^8 entries).
        keys = memoryview(self._rng.randbytes(8 * len(probe))).cast("Q")
        self._list = [probe[i] for i in sorted(range(len(probe)), key=keys.__getitem__)]
        self._counts[State.ALIVE] += len(recs)
        self._gossip.extend(recs)
        self._ring.insert_many(fresh)

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
        assert not rec.shared, "own() the record before changing it"
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
            rec = self._current(self._probe_index)
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
        for rec in self:
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
            pool = [r for r in self if pred(r)]
            return self._rng.sample(pool, min(k, len(pool)))
        chosen: dict[str, NodeRecord] = {}
        for _ in range(16 * k + 64):
            rec = self._current(self._rng.randrange(n))
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
