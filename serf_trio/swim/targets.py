"""Gossip-target selection: a shuffled cycle plus a ring backstop, not independent samples.

What one broadcast costs (memberlist ``state.go`` gossip, ``queue.go`` GetBroadcasts,
``util.go`` retransmitLimit).  Every gossip interval memberlist picks ``GossipNodes`` targets
(``kRandomNodes``: alive, suspect and recently dead nodes, never itself) and calls
``getBroadcasts`` once *per target*; each broadcast put into that packet gets
``transmits + 1`` and leaves the queue once it has been in ``L = RetransmitMult x
ceil(log10(N + 1))`` packets (fewest-transmits first, so a fresh broadcast rides the very next
packets; Serf's event, query and intent queues follow the same rule).  So one node sends a
broadcast to exactly ``L`` targets: the next ``L`` in its target sequence, ``ceil(L / k)``
rounds with fan-out ``k`` (a few fewer when pings and acks, which piggy-back from the same
queue, take some of the ``L``).  LAN: ``L = 8`` for 10-99 nodes, 12 up to 999; ``k = 3``.

1. *The cycle* (``GossipCycle``).  With independent rounds those ``L`` targets may repeat; we
   walk the members in a random order ``k`` at a time, in a new random order each pass, and
   leave unwalked a member picked within the last ``window`` picks (that only happens at the
   start of a pass), so any ``min(L, n)`` consecutive picks are distinct: one sender reaches
   exactly ``min(L, n)`` of the ``n`` other eligible nodes, all of them when ``n <= L``, and
   every eligible node once per pass of ``ceil(n / k)`` rounds.  A new member joins the
   unwalked part at a uniformly random time; reaped ones are dropped when met.

2. *Why the cycle alone has the same tail.*  Every node that learns a broadcast queues it again
   (memberlist aliveNode/suspectNode/deadNode, Serf handleUserEvent/handleQuery) and sends it to
   ``L`` targets of its *own*, independently shuffled cycle.  Node ``x`` is in one sender's
   ``L``-window with probability ``L / n`` whatever the cycle does, independently across the
   ``~N`` senders, so the copies ``x`` receives are about Poisson(``L (1 - loss)``) and
   ``P(some node missed) ~ N e^(-L (1 - loss))``: ~3 % of broadcasts at N = 64, L = 8, 5 %
   loss, left to the next push/pull (30-60 s).  Distinct targets per sender only move the
   per-sender miss from ``(1 - k/n)^(L/k)`` to ``1 - L/n`` (0.884 -> 0.879 at N = 64): no
   independent choice beats Poisson.  The fix needs senders whose choices are correlated.

3. *The ring backstop* (``GossipRing``).  Every node orders the *alive* members by a hash of
   their names (``ring_key``), so all nodes share one ring.  The first target of each round is
   one of our ``r`` alive ring successors, taking turns; the other ``k - 1`` come from the
   cycle (which skips those successors).  A broadcast spans ``~L / k`` rounds, so with
   ``r = min(2, L // k)`` it reaches every ring successor: each node then hears each broadcast
   from each of its ``r`` ring predecessors, who nearly surely have it.  ``x`` is missed only if
   those packets are lost *and* the random targets miss it: about
   ``loss^r x e^(-L (1 - loss) (k - 1) / k)`` per node (~1e-5 at N = 64, 5 % loss).  The random
   targets still carry the epidemic (log N hops) and heal partitions; the ring only sees that
   nobody is left out.  A suspect or recently dead node is off the ring but still gets gossip
   from the cycle, as memberlist sends it.

Within the protocol: the same messages, ``k`` packets per round, the same eligible nodes;
receive load stays ``k`` per round on average (every node has ``r`` ring predecessors).  Cost
per round: O(k) for the cycle (the order is drawn lazily, one Fisher-Yates step per pick, so
no pass ever reshuffles N entries; an ineligible entry costs one predicate call when drawn)
and O(log N + r) for the ring.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

# Draws in a row that may hit recently picked members before falling back to a scan of the
# unwalked part (which only a pass little longer than the window ever needs).
_DEFER_TRIES = 4
# Alive ring successors a node's gossip rounds take turns on (see the module docstring).
RING_SUCCESSORS = 2


class Named(Protocol):
    """What the cycle needs of a member record: its name (``members.NodeRecord`` fits)."""

    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=Named)


class GossipCycle(Generic[R]):
    """One node's gossip-target sequence: the members in a random order, walked ``k`` at a
    time, in a fresh random order each time round, with no repeat inside any ``window``
    consecutive picks.

    The order is drawn lazily (Fisher-Yates one step per pick: the next member is a uniform
    draw from the part not walked yet), so nothing ever reshuffles the whole list and a new
    member, appended to the unwalked part, is as likely as any other to come next.  Ineligible
    members (ourselves, left, dead too long) are judged when drawn and count as walked; a record
    that is no longer *current* (reaped, or replaced under its name) is dropped when drawn.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._order: list[R] = []  # [0, pos): walked this time round; [pos, len): not yet
        self._pos = 0
        self._recent: deque[str] = deque()  # the last picks, oldest first
        self._recent_count: dict[str, int] = {}
        self.cycles = 0  # completed passes (observability and tests)

    def __len__(self) -> int:
        return len(self._order)

    def remaining(self) -> int:
        """Entries not walked yet in this pass (eligible or not)."""
        return len(self._order) - self._pos

    def add(self, rec: R) -> None:
        """A new member joins the unwalked part (O(1), no random draw: draws are lazy)."""
        self._order.append(rec)

    def extend(self, recs: Iterable[R]) -> None:
        """``add`` each of ``recs``."""
        self._order.extend(recs)

    def take(
        self,
        k: int,
        eligible: Callable[[R], bool],
        *,
        window: int,
        current: Callable[[R], bool],
    ) -> list[R]:
        """The next up to ``k`` distinct eligible members.

        ``window``: no member is picked twice within this many consecutive picks (across rounds
        and passes) as long as enough eligible members exist; the caller caps it at their
        number.  ``current(rec)`` says whether a record is still the table's.  Each draw costs
        one ``randrange`` and one ``eligible`` call: O(k) per round plus the ineligible members
        drawn on the way.  At most one wrap per call, so with fewer eligible members than ``k``
        a round returns fewer targets rather than loop.
        """
        out: list[R] = []
        if k <= 0:
            return out
        order, rng = self._order, self._rng
        hold = max(0, window - 1)  # picks a new pick must differ from
        held = self._recent_count
        chosen: set[str] = set()
        wrapped = False
        tries = 0
        while len(out) < k:
            pos = self._pos
            if pos >= len(order):
                if wrapped or not order:
                    break
                self._pos = pos = 0
                self.cycles += 1
                wrapped = True
            j = rng.randrange(pos, len(order))
            rec = order[j]
            order[j] = order[pos]
            order[pos] = rec
            if not current(rec):
                order[pos] = order[-1]
                order.pop()
                continue
            if not eligible(rec):
                self._pos = pos + 1
                continue
            name = rec.name
            if name in chosen or (hold > 0 and name in held):
                if tries < _DEFER_TRIES:
                    tries += 1
                    continue  # leave it unwalked and draw again
                if self._pull_forward(eligible, current, chosen):
                    tries = 0
                    continue
                if name in chosen:
                    break  # fewer eligible members than k: never twice in one round
                # Too few eligible members left this pass to keep the window: repeat one.
            tries = 0
            self._pos = pos + 1
            out.append(rec)
            chosen.add(name)
            self._remember(name, hold)
        return out

    # -- internals ------------------------------------------------------------------------

    def _pull_forward(
        self, eligible: Callable[[R], bool], current: Callable[[R], bool], chosen: set[str]
    ) -> bool:
        """Swap the first unwalked entry that may be picked into the next slot; False if none.

        Only reached after ``_DEFER_TRIES`` draws in a row hit held members, which needs the
        unwalked part to be mostly held members: a pass little longer than the window.
        """
        order, pos = self._order, self._pos
        for j in range(pos + 1, len(order)):
            cand = order[j]
            name = cand.name
            if name in chosen or name in self._recent_count:
                continue
            if current(cand) and eligible(cand):
                order[pos], order[j] = cand, order[pos]
                return True
        return False

    def _remember(self, name: str, hold: int) -> None:
        recent, count = self._recent, self._recent_count
        recent.append(name)
        count[name] = count.get(name, 0) + 1
        while len(recent) > hold:
            old = recent.popleft()
            left = count[old] - 1
            if left:
                count[old] = left
            else:
                del count[old]


@functools.lru_cache(maxsize=1 << 16)
def ring_key(name: str) -> int:
    """A member's position on the gossip ring: a hash of its name, the same at every node.

    Cached process-wide: a simulator holds thousands of rings over the same names, and one
    int per name instead of one per ring and name is most of what a ring costs.
    """
    # A name from the wire that is not valid UTF-8 is held with surrogate escapes
    # (``wire.codec.text``); hashing its original bytes keeps a stranger's bad name from
    # raising out of the core's packet handler (found by fuzz_stream).
    raw = name.encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


# The last ring ``insert_many`` sorted: (its members, keys, names).
_last_ring: tuple[frozenset[str], list[int], list[str]] | None = None


class GossipRing:
    """The alive members in ``(ring_key, name)`` order: every node computes the same ring from
    the same membership, so "my next ``r`` alive successors" is a deterministic cover of the
    ring.

    Two parallel sorted lists (keys, names) rather than a list of tuples: 16 bytes per member
    on top of the shared key and name objects, which matters when a simulator holds one ring
    per node of a 10,000-node cluster.  Insertion and removal are a bisect plus a list
    memmove; membership and ``successors`` are O(log N + r).
    """

    def __init__(self) -> None:
        self._hashes: list[int] = []
        self._names: list[str] = []

    def __len__(self) -> int:
        return len(self._names)

    def _find(self, name: str) -> tuple[int, bool]:
        """Where ``name`` is (True) or would be inserted (False)."""
        key = ring_key(name)
        hashes, names = self._hashes, self._names
        i = bisect.bisect_left(hashes, key)
        # Equal keys (a 64-bit collision) are ordered by name.
        while i < len(hashes) and hashes[i] == key and names[i] < name:
            i += 1
        return i, i < len(hashes) and hashes[i] == key and names[i] == name

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name)[1]

    def insert(self, name: str) -> None:
        i, present = self._find(name)
        if not present:
            self._hashes.insert(i, ring_key(name))
            self._names.insert(i, name)

    def insert_many(self, names: Iterable[str]) -> None:
        """``insert`` each of ``names`` at once: one sort, O((N + M) log (N + M))."""
        global _last_ring
        merged = frozenset(self._names).union(names)
        if _last_ring is None or _last_ring[0] != merged:
            pairs = sorted((ring_key(name), name) for name in merged)
            _last_ring = merged, [key for key, _ in pairs], [name for _, name in pairs]
        # A converged start gives every node the same members: the last ring is copied.
        self._hashes = list(_last_ring[1])
        self._names = list(_last_ring[2])

    def discard(self, name: str) -> None:
        i, present = self._find(name)
        if present:
            del self._hashes[i]
            del self._names[i]

    def successors(self, name: str, r: int) -> list[str]:
        """The up to ``r`` members following ``name`` on the ring (wrapping; never ``name``),
        whether or not ``name`` itself is on it."""
        names = self._names
        size = len(names)
        if r <= 0 or not size:
            return []
        i, present = self._find(name)
        start = i + 1 if present else i
        out: list[str] = []
        for j in range(min(size, r + 1)):
            succ = names[(start + j) % size]
            if succ != name:
                out.append(succ)
                if len(out) >= r:
                    break
        return out
