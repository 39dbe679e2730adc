"""``TransmitLimitedQueue`` against a naive model of memberlist's queue rules.

The queue keeps tiers of bisectable lists so that neither queueing nor picking scans it; the
model below is the rule book written as plain scans over a list (memberlist queue.go): pick,
among the items not sent yet in this call, the fewest transmissions, then the largest that
fits, then the newest; retire an item once sent ``retransmit_limit`` times; a keyed item
replaces the queued one with the same key; past the bound drop the most-sent, smallest,
oldest.  Random operation sequences must give the same packets, the same finished
notifications (in order), the same depth and the same drop count.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from serf_trio.swim.broadcast import TransmitLimitedQueue
from serf_trio.swim.formulas import retransmit_limit


@dataclass
class _ModelItem:
    id: int
    key: str | None
    data: bytes
    transmits: int
    notify: bool


class _Model:
    def __init__(self, mult: int, n: int, max_queued: int) -> None:
        self.limit = retransmit_limit(mult, n)
        self.max = max_queued
        self.items: list[_ModelItem] = []
        self.finished: list[int] = []
        self.dropped = 0
        self.next_id = 1

    def _finish(self, item: _ModelItem) -> None:
        self.items.remove(item)
        if item.notify:
            self.finished.append(item.id)

    def queue(self, key: str | None, data: bytes, notify: bool) -> int:
        for old in [i for i in self.items if key is not None and i.key == key]:
            self._finish(old)
        item = _ModelItem(self.next_id, key, data, 0, notify)
        self.next_id += 1
        self.items.append(item)
        while len(self.items) > self.max:
            self._finish(max(self.items, key=lambda i: (i.transmits, -len(i.data), -i.id)))
            self.dropped += 1
        return item.id

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        used = 0
        out: list[bytes] = []
        picked: list[_ModelItem] = []
        while True:
            free = limit - used - overhead
            if free <= 0:
                break
            fits = [i for i in self.items if i not in picked and len(i.data) <= free]
            if not fits:
                break
            item = min(fits, key=lambda i: (i.transmits, -len(i.data), -i.id))
            picked.append(item)
            out.append(item.data)
            used += overhead + len(item.data)
        for item in picked:
            if item.transmits + 1 >= self.limit:
                self._finish(item)
            else:
                item.transmits += 1
        return out


_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("queue"),
            st.sampled_from([None, None, "a", "b", "c"]),
            st.integers(1, 120),
            st.booleans(),
        ),
        st.tuples(st.just("get"), st.integers(0, 3), st.integers(0, 400), st.just(False)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(_ops, st.integers(1, 12), st.integers(1, 4), st.integers(1, 20))
def test_queue_matches_the_model(
    ops: list[tuple[str, object, int, bool]], n: int, mult: int, max_queued: int
) -> None:
    real = TransmitLimitedQueue(mult, lambda: n, max_queued)
    model = _Model(mult, n, max_queued)
    for i, (op, a, b, notify) in enumerate(ops):
        if op == "queue":
            key = a if isinstance(a, str) else None
            data = bytes([i % 256]) * b  # distinct contents per operation
            assert real.queue(key, data, notify=notify) == model.queue(key, data, notify)
        else:
            assert isinstance(a, int)
            assert real.get_broadcasts(a, b) == model.get_broadcasts(a, b)
        assert len(real) == len(model.items)
        assert real.pop_finished() == model.finished
        model.finished = []
        assert real.dropped == model.dropped
