"""The transmit-limited broadcast queue (memberlist ``queue.go`` ``TransmitLimitedQueue``).

Rules (memberlist queue.go, broadcast.go):

* each broadcast is sent at most ``retransmit_limit(retransmit_mult, n)`` times, ``n`` read at
  send time;
* selection prefers the fewest transmissions so far, then the largest message that still fits
  the packet budget, then the newest;
* a broadcast with a key (memberlist's alive/suspect/dead are keyed by node name) replaces the
  queued one with the same key;
* the queue is bounded (``max_queued``): past the bound the "largest" item in selection order
  goes first, i.e. the most-transmitted, then the smallest, then the oldest (memberlist
  ``Prune`` drops from the same end).

Data structure: one sorted list per transmit count ("tier") of ranks, ``len << 64 | id`` (ids
count up from 1 and never reach 2**64), so a tier is in selection order read backwards and a
bisect finds the largest, newest item that fits.  ``get_broadcasts`` costs
O(T log m + s log m + m) where T <= retransmit limit is the number of tiers, m the tier size and
s the messages picked (the ``m`` term is C-level work on lists of ints: slices, a memmove, a
merge of the sent items into their next tier); queueing costs O(log m + m) likewise.  Nothing
scans the whole queue in Python per packet.

Items may ask to be *notified* when they finish (sent the last time, replaced or dropped);
their ids show up in ``pop_finished()``.  The node uses this for its leave broadcast, which is
how memberlist's ``Leave`` knows its dead message went out.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from .formulas import retransmit_limit


@dataclass(slots=True, eq=False)
class _Item:
    id: int
    key: str | None
    data: bytes
    transmits: int
    notify: bool

    def rank(self) -> int:
        """Ascending order of a tier: smallest first, then oldest (selection order reversed)."""
        return (len(self.data) << _ID_BITS) | self.id


_ID_BITS = 64
_ID_MASK = (1 << _ID_BITS) - 1


class TransmitLimitedQueue:
    def __init__(
        self, retransmit_mult: int, num_nodes: Callable[[], int], max_queued: int = 4096
    ) -> None:
        self._mult = retransmit_mult
        self._num_nodes = num_nodes
        self._max = max(1, max_queued)
        self._ids = itertools.count(1)
        self._items: dict[int, _Item] = {}
        self._by_key: dict[str, int] = {}
        self._tiers: dict[int, list[int]] = {}
        self._finished: list[int] = []
        self.dropped = 0  # items pruned because the queue was full

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: str | None, data: bytes, *, notify: bool = False) -> int:
        """Add a broadcast (replacing a queued one with the same key); return its id."""
        if key is not None:
            old = self._by_key.get(key)
            if old is not None:
                self._finish(self._items[old])
        item = _Item(next(self._ids), key, data, 0, notify)
        self._insert(item)
        while len(self._items) > self._max:
            self._drop_last()
        return item.id

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Messages fitting in ``limit`` bytes, each counted with ``overhead`` extra bytes."""
        if not self._items:
            return []
        tlimit = retransmit_limit(self._mult, self._num_nodes())
        tiers = self._tiers
        items = self._items
        free = limit - overhead  # room for the next message: limit - used - overhead
        out: list[bytes] = []
        # Ranks sent again, by their next tier: re-tiered after the walk, or they would be
        # picked again from the next tier.
        bumped: list[tuple[int, list[int]]] = []
        for tier_no in sorted(tiers):
            if free <= 0:
                break
            tier = tiers[tier_no]
            i = bisect.bisect_right(tier, (free << _ID_BITS) | _ID_MASK)
            if i == 0:
                continue  # nothing of this tier fits
            # Walk down from the largest newest item that fits, taking each item that still fits
            # (what picking "the largest that fits" again and again takes) and jumping over those
            # too large for what is left with a bisect.  Taken items are runs of the tier, moved
            # out with slices when the walk ends.
            top = end = i
            taken: list[int] = []  # in selection order
            kept: list[int] = []
            while i > 0:
                size = tier[i - 1] >> _ID_BITS
                if size > free:
                    taken += tier[i:end][::-1]
                    end = bisect.bisect_right(tier, (free << _ID_BITS) | _ID_MASK, 0, i)
                    kept[:0] = tier[end:i]
                    i = end
                    continue
                i -= 1
                free -= size + overhead
                if free <= 0:
                    break
            taken += tier[i:end][::-1]
            tier[i:top] = kept
            if not tier:
                del tiers[tier_no]
            if not taken:
                continue
            picked = [items[rank & _ID_MASK] for rank in taken]
            out += [item.data for item in picked]
            sent = tier_no + 1  # every item of tier n has been sent n times
            if sent >= tlimit:
                for item in picked:
                    self._forget(item)
                    if item.notify:
                        self._finished.append(item.id)
            else:
                for item in picked:
                    item.transmits = sent
                bumped.append((sent, taken))
        for tier_no, up in bumped:
            up.reverse()
            dest = tiers.get(tier_no)
            if dest is None:
                tiers[tier_no] = up
            else:
                dest += up
                if up[0] < dest[-len(up) - 1]:
                    dest.sort()  # two sorted runs: a linear merge
        return out

    def pop_finished(self) -> list[int]:
        """Ids of notify-items that finished since the last call."""
        done, self._finished = self._finished, []
        return done

    def reset(self) -> None:
        """Forget everything (notify-items count as finished)."""
        for item in list(self._items.values()):
            self._finish(item)

    # -- internals ------------------------------------------------------------------------

    def _insert(self, item: _Item) -> None:
        self._items[item.id] = item
        if item.key is not None:
            self._by_key[item.key] = item.id
        bisect.insort(self._tiers.setdefault(item.transmits, []), item.rank())

    def _forget(self, item: _Item) -> None:
        """Drop ``item`` from the id and key maps (its tier entry is the caller's business)."""
        del self._items[item.id]
        if item.key is not None and self._by_key.get(item.key) == item.id:
            del self._by_key[item.key]

    def _remove(self, item: _Item) -> None:
        self._forget(item)
        tier = self._tiers[item.transmits]
        pos = bisect.bisect_left(tier, item.rank())
        del tier[pos]
        if not tier:
            del self._tiers[item.transmits]

    def _finished_item(self, item: _Item) -> None:
        if item.notify:
            self._finished.append(item.id)

    def _finish(self, item: _Item) -> None:
        self._remove(item)
        self._finished_item(item)

    def _drop_last(self) -> None:
        top = max(self._tiers)
        self._finish(self._items[self._tiers[top][0] & _ID_MASK])
        self.dropped += 1
