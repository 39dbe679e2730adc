"""``TimerHeap``: keyed one-shot timers in a binary heap, for the Serf core's components.

The mechanism is the memberlist core's (``swim.node.Memberlist`` keeps ``(deadline,
generation)`` entries and skips superseded ones), made generic so each Serf component owns the
timers of its concern: ``queries`` (query deadlines), ``reaper`` (prune, reap, reconnect) and
``membership`` (when a "leaving" member times out).  ``SerfNode.next_deadline`` is then the
minimum of a few heap tops, never a scan over members or queries.

* ``set(key, at)`` arms or re-arms ``key``: it pushes a new entry with a fresh generation; the
  old entry stays in the heap, stale, and is dropped when it reaches the top (lazy deletion).
* ``cancel(key)`` just forgets the key's generation, so its entry becomes stale the same way.
* ``peek()`` is the earliest *armed* deadline: amortised O(log n), since each stale entry is
  popped once.  An optional ``live(key)`` test lets the owner drop entries whose subject has
  changed without telling the heap (a member that stopped being "leaving").
* ``pop_due(now)`` disarms and returns every key due at ``now`` (``at <= now``), ordered by
  when each key was *first* armed - which is exactly the iteration order of the dict of
  deadlines the Serf core kept before (re-arming a key keeps its place; firing or cancelling
  it frees the place).  Owners that used several dicts sort the result by kind first, so the
  timers due within one call fire in the same order as before.

Stale entries are bounded: when they outnumber the armed keys the heap is rebuilt from the
armed ones (amortised O(1) per ``set``).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_REBUILD_SLACK = 64  # stale entries tolerated before a rebuild is considered


@dataclass(slots=True)
class _Armed:
    gen: int
    at: float
    order: int  # when the key was first armed (kept when it is re-armed)


class TimerHeap(Generic[K]):
    """One-shot timers by key; see the module docstring."""

    __slots__ = ("_armed", "_gens", "_heap", "_orders")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._armed: dict[K, _Armed] = {}
        self._gens = itertools.count()
        self._orders = itertools.count()

    def __len__(self) -> int:
        """Armed timers (stale heap entries are not counted)."""
        return len(self._armed)

    def __contains__(self, key: K) -> bool:
        return key in self._armed

    def deadline(self, key: K) -> float | None:
        armed = self._armed.get(key)
        return armed.at if armed is not None else None

    def set(self, key: K, at: float) -> None:
        """Arm ``key`` to fire at ``at``, replacing any deadline it had."""
        gen = next(self._gens)
        old = self._armed.get(key)
        order = old.order if old is not None else next(self._orders)
        self._armed[key] = _Armed(gen, at, order)
        heapq.heappush(self._heap, (at, gen, key))
        if len(self._heap) > 2 * len(self._armed) + _REBUILD_SLACK:
            self._rebuild()

    def cancel(self, key: K) -> None:
        self._armed.pop(key, None)

    def peek(self, live: Callable[[K], bool] | None = None) -> float | None:
        """The earliest armed deadline, or ``None``.  A key for which ``live`` is False is
        disarmed on the way (its owner must ``set`` it again to bring it back)."""
        heap = self._heap
        while heap:
            at, gen, key = heap[0]
            armed = self._armed.get(key)
            if armed is not None and armed.gen == gen:
                if live is None or live(key):
                    return at
                del self._armed[key]
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[K]:
        """Disarm and return every key with a deadline at or before ``now``, in the order the
        keys were first armed."""
        heap = self._heap
        due: list[tuple[int, K]] = []
        while heap and heap[0][0] <= now:
            _, gen, key = heapq.heappop(heap)
            armed = self._armed.get(key)
            if armed is None or armed.gen != gen:
                continue
            del self._armed[key]
            due.append((armed.order, key))
        due.sort(key=lambda item: item[0])
        return [key for _, key in due]

    def _rebuild(self) -> None:
        self._heap = [(a.at, a.gen, key) for key, a in self._armed.items()]
        heapq.heapify(self._heap)


__all__ = ["TimerHeap"]
