"""The delivery contract: how events leave the core driver for the application.

One rule set, used by every consumer (the library's ``Node.events()``, the agent's event
pipeline, tests):

* **The core driver never awaits a consumer.**  ``EventQueue.offer`` never blocks; failure
  detection must not stall behind a slow handler, RPC client or application task.
* **Member events are never dropped.**  A queue holds at most one pending member event per
  member: when the consumer lags, a newer event about the same member replaces the pending one
  in its place in the order (latest state wins, as Serf's coalescer does).  Memory is bounded by
  the number of members, not by the event rate.  Each replacement is counted (``coalesced``).
* **Everything else is bounded and lossy, and counted where it drops.**  User events, queries
  and the runtime's reports (notices, join/leave results, violations) wait in a FIFO of
  ``size`` entries; when it is full the new one is dropped and counted by kind
  (``dropped_user_events``, ``dropped_queries``, ``dropped_other``).  A query that is dropped
  is simply never answered by this node; its originator's timeout covers it.

Order: events come out in the order they were offered, except that a coalesced member event
keeps the place of the one it replaced.

``Subscribers`` fans each event out to every open queue (one per ``subscribe()``); a queue
whose consumer has closed it is forgotten.  The runtime module that owns this (the driver)
imports it; it is not protocol logic, so it may use trio.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

E = TypeVar("E")

DEFAULT_SIZE = 1024  # non-member events buffered per subscriber before drops

# What kind of event this is for the contract: ("member", key) coalesces per key;
# "user_event" / "query" / "other" go to the bounded FIFO and are counted as such when dropped.
Kind = tuple[str, Hashable | None]
Classifier = Callable[[object], Kind]


@dataclass(slots=True)
class DeliveryStats:
    """Counters of one queue (or the sum over a node's queues)."""

    delivered: int = 0
    coalesced: int = 0
    dropped_user_events: int = 0
    dropped_queries: int = 0
    dropped_other: int = 0
    pending: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_user_events + self.dropped_queries + self.dropped_other

    def add(self, other: DeliveryStats) -> None:
        self.delivered += other.delivered
        self.coalesced += other.coalesced
        self.dropped_user_events += other.dropped_user_events
        self.dropped_queries += other.dropped_queries
        self.dropped_other += other.dropped_other
        self.pending += other.pending


class EventQueue(Generic[E]):
    """One consumer's queue under the delivery contract (module docstring).

    Consumer side: ``await receive()``, ``receive_nowait()`` or ``async for``; the end of the
    node (``close()``) ends iteration once what is pending has been read.  ``aclose()`` by the
    consumer unsubscribes.
    """

    def __init__(
        self,
        classify: Classifier,
        size: int = DEFAULT_SIZE,
        accept: Callable[[object], bool] | None = None,
    ) -> None:
        self._classify = classify
        self._size = size
        self._accept = accept  # the consumer's filter: what it never wants is not queued
        self._seq = itertools.count()
        # Pending member events: key -> [seq, event]; the seq keeps the first one's place.
        self._members: dict[Hashable, list[object]] = {}
        self._fifo: deque[tuple[int, E]] = deque()
        self._member_order: deque[tuple[int, Hashable]] = deque()
        self._ready = trio.Event()
        self._closed = False  # the producer ended (node stopped)
        self._abandoned = False  # the consumer closed its end
        self.stats = DeliveryStats()
        self.on_drop: Callable[[str, int], None] | None = None

    # -- producer side (never waits) ----------------------------------------------------------

    def offer(self, ev: E) -> None:
        if self._closed or self._abandoned:
            return
        if self._accept is not None and not self._accept(ev):
            return
        kind, key = self._classify(ev)
        if kind == "member":
            slot = self._members.get(key)
            if slot is not None:
                slot[1] = ev  # latest state wins, in the place of the pending one
                self.stats.coalesced += 1
                return
            seq = next(self._seq)
            self._members[key] = [seq, ev]
            self._member_order.append((seq, key))
        else:
            if len(self._fifo) >= self._size:
                total = self._count_drop(kind)
                if self.on_drop is not None:
                    self.on_drop(kind, total)
                return
            self._fifo.append((next(self._seq), ev))
        self._ready.set()

    def _count_drop(self, kind: str) -> int:
        st = self.stats
        if kind == "user_event":
            st.dropped_user_events += 1
        elif kind == "query":
            st.dropped_queries += 1
        else:
            st.dropped_other += 1
        return st.dropped

    def close(self) -> None:
        """The producer is done: consumers read what is pending, then the iteration ends."""
        self._closed = True
        self._ready.set()

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    # -- consumer side ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._fifo) + len(self._members)

    def receive_nowait(self) -> E:
        """The next event; ``trio.WouldBlock`` if none is pending, ``trio.EndOfChannel`` once
        the node has stopped and everything was read."""
        if self._abandoned:
            raise trio.ClosedResourceError("this event queue was closed")
        fifo, order = self._fifo, self._member_order
        if not fifo and not order:
            if self._closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        if order and (not fifo or order[0][0] < fifo[0][0]):
            _, key = order.popleft()
            ev: E = self._members.pop(key)[1]  # type: ignore[assignment]
        else:
            ev = fifo.popleft()[1]
        self.stats.delivered += 1
        return ev

    async def receive(self) -> E:
        # Trio's rule for a receive: either it is cancelled and takes nothing, or it takes an
        # event and returns it.  So the cancellation point comes before the event leaves the
        # queue, and the schedule point after it is shielded.  (A plain checkpoint after
        # ``receive_nowait`` lost the event to a cancel scope that expired meanwhile, such as
        # the agent pipeline's coalescer deadline: found by the overload bench as user events
        # that vanished uncounted, and it could lose member events too.)
        while True:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                ev = self.receive_nowait()
            except trio.WouldBlock:
                self._ready = trio.Event()
                await self._ready.wait()
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return ev

    def __aiter__(self) -> EventQueue[E]:
        return self

    async def __anext__(self) -> E:
        try:
            return await self.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Unsubscribe: the producer forgets this queue at its next event."""
        self._abandoned = True
        self._fifo.clear()
        self._members.clear()
        self._member_order.clear()
        self._ready.set()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> EventQueue[E]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def statistics(self) -> DeliveryStats:
        st = self.stats
        return DeliveryStats(
            st.delivered,
            st.coalesced,
            st.dropped_user_events,
            st.dropped_queries,
            st.dropped_other,
            len(self),
        )


class Subscribers(Generic[E]):
    """Fan-out of a node's events to every open ``EventQueue`` (never waits)."""

    def __init__(self, classify: Classifier, size: int = DEFAULT_SIZE) -> None:
        self._classify = classify
        self._size = size
        self._queues: list[EventQueue[E]] = []
        self._closed = False
        self._gone = DeliveryStats()  # counters of queues that were closed
        self.on_drop: Callable[[str, int], None] | None = None

    def subscribe(
        self, size: int | None = None, accept: Callable[[object], bool] | None = None
    ) -> EventQueue[E]:
        q: EventQueue[E] = EventQueue(self._classify, self._size if size is None else size, accept)
        q.on_drop = self.on_drop
        if self._closed:
            q.close()
        else:
            self._queues.append(q)
        return q

    def publish(self, ev: E) -> None:
        dead = False
        for q in self._queues:
            if q.abandoned:
                dead = True
            else:
                q.offer(ev)
        if dead:
            for q in self._queues:
                if q.abandoned:
                    self._gone.add(q.statistics())
            self._queues = [q for q in self._queues if not q.abandoned]

    def close(self) -> None:
        self._closed = True
        for q in self._queues:
            q.close()

    def __len__(self) -> int:
        return len(self._queues)

    def statistics(self) -> DeliveryStats:
        """The sum over every queue this node ever had."""
        total = DeliveryStats()
        total.add(self._gone)
        for q in self._queues:
            total.add(q.statistics())
        return total
