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

Data structure: one sorted list per transmit count ("tier") holding ``(-len, -id)`` so that a
bisect finds the largest item that fits.  ``get_broadcasts`` costs
O(T log m + s * m) where T <= retransmit limit is the number of tiers, m the tier size and s the
messages picked (the ``m`` term is a C-level ``list`` memmove, not a Python loop); queueing costs
O(log m + m) likewise.  Nothing scans the whole queue per packet.

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


@dataclass(slots=True)
class _Item:
    id: int
    key: str | None
    data: bytes
    transmits: int
    notify: bool

    def order(self) -> tuple[int, int]:
        # Ascending order inside a tier: largest first, then newest first.
        return (-len(self.data), -self.id)


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
        self._tiers: dict[int, list[tuple[int, int]]] = {}
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
        used = 0
        out: list[bytes] = []
        bumped: list[_Item] = []
        items = self._items
        for tier_no in sorted(self._tiers):
            tier = self._tiers[tier_no]
            while tier:
                free = limit - used - overhead
                if free <= 0:
                    break
                pos = bisect.bisect_left(tier, (-free, -(1 << 62)))
                if pos >= len(tier):
                    break  # nothing of this tier fits any more
                # Taken out of its tier where the search found it (no second search); an item
                # sent again stays queued and only changes tier.
                item = items[-tier.pop(pos)[1]]
                out.append(item.data)
                used += overhead + len(item.data)
                if item.transmits + 1 >= tlimit:
                    self._forget(item)
                    self._finished_item(item)
                else:
                    item.transmits += 1
                    # Re-tiered after the walk, or it would be picked again from the next tier.
                    bumped.append(item)
            if not tier:
                del self._tiers[tier_no]
            if limit - used - overhead <= 0:
                break
        for item in bumped:
            bisect.insort(self._tiers.setdefault(item.transmits, []), item.order())
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
        bisect.insort(self._tiers.setdefault(item.transmits, []), item.order())

    def _forget(self, item: _Item) -> None:
        """Drop ``item`` from the id and key maps (its tier entry is the caller's business)."""
        del self._items[item.id]
        if item.key is not None and self._by_key.get(item.key) == item.id:
            del self._by_key[item.key]

    def _remove(self, item: _Item) -> None:
        self._forget(item)
        tier = self._tiers[item.transmits]
        pos = bisect.bisect_left(tier, item.order())
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
        _, neg_id = self._tiers[top][-1]
        self._finish(self._items[-neg_id])
        self.dropped += 1
