"""``EventQueue.receive`` follows trio's rule for a receive: cancelled, it takes nothing.

The agent pipeline waits for events under a cancel scope that expires at the coalescer's next
deadline.  A receive that took an event and was then cancelled at its schedule point lost it,
uncounted (found by ``bench/overload.py``: a few user events per thousand vanished between the
core and the handlers); a member event could be lost the same way.
"""

from __future__ import annotations

import trio

from serf_trio.runtime.delivery import EventQueue


def _queue() -> EventQueue[str]:
    return EventQueue(lambda ev: ("user_event", None), size=8)


def test_a_cancelled_receive_takes_nothing() -> None:
    async def main() -> None:
        q = _queue()
        q.offer("a")
        q.offer("b")
        with trio.CancelScope() as cs:
            cs.cancel()
            await q.receive()
        assert cs.cancelled_caught
        assert q.receive_nowait() == "a"
        assert await q.receive() == "b"

    trio.run(main)


def test_receives_under_expiring_deadlines_lose_nothing() -> None:
    """Many receives whose deadline has passed, as the pipeline's are when the coalescer is
    due: every event offered is received exactly once, in order."""

    async def main() -> None:
        q = _queue()
        got: list[str] = []
        for i in range(500):
            q.offer(f"e{i}")
            with trio.move_on_at(trio.current_time() if i % 2 else trio.current_time() + 1):
                got.append(await q.receive())
            while True:  # what the expired receives left behind
                try:
                    got.append(q.receive_nowait())
                except trio.WouldBlock:
                    break
        assert got == [f"e{i}" for i in range(500)]

    trio.run(main)
