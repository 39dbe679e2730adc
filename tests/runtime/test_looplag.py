"""``runtime.looplag``: the recording function with an injected clock, a node's timers under a
MockClock (no lag: virtual time jumps to each deadline), and a real blocking call in a node on
a real clock."""

from __future__ import annotations

import random
import time

import pytest
import trio
from helpers import mem_addr, run_mock

import serf_trio
from serf_trio.runtime.looplag import LoopLag
from serf_trio.testing.memnet import MemoryNetwork
from serf_trio.testing.netmodel import NetModel


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_record_keeps_last_lag_max_over_window_and_late_wakes() -> None:
    clock = FakeClock()
    lag = LoopLag(window=60.0, threshold=0.1, clock=clock)
    assert lag.record(0.0) == 0.0
    assert lag.record(-0.002) == 0.0  # early (a coarse timer) counts as no lag
    assert lag.record(0.05) == pytest.approx(0.05)
    clock.now = 2.0
    assert lag.record(0.5) == pytest.approx(0.5)
    clock.now = 3.0
    st = lag.statistics()
    assert st.lag_seconds == pytest.approx(0.5) and st.max_lag_seconds == pytest.approx(0.5)
    assert (st.late_wakes, st.wakes) == (1, 4)
    lag.record(0.01)
    clock.now = 70.0  # the 0.5 s wake is now older than the window
    st = lag.statistics()
    assert st.max_lag_seconds == 0.0 and st.late_wakes == 1
    assert st.lag_seconds == pytest.approx(0.01)


def test_node_reports_runtime_lag_and_no_lag_when_idle_under_mockclock() -> None:
    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=2))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            a = serf_trio.Node("n1", bind=mem_addr(1), network=net, rng=random.Random(1))
            await nursery.start(a.run)
            await trio.sleep(10.0)
            st = a.stats()["runtime_lag"]
            assert st["wakes"] >= 9  # the driver's timers: a probe a second, gossip more often
            assert st["lag_seconds"] == 0.0 and st["late_wakes"] == 0
            assert st["max_lag_seconds"] < 0.1
            nursery.cancel_scope.cancel()

    run_mock(body)


@pytest.mark.realnet
def test_a_blocking_call_shows_as_lag_on_the_real_clock() -> None:
    async def body() -> None:
        node = serf_trio.Node("n1", bind=serf_trio.Address("127.0.0.1", 0))
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await trio.sleep(0.5)
            # Block the loop: a gossip timer falls due within 0.2 s, so it runs >= 0.3 s late.
            time.sleep(0.5)  # noqa: ASYNC251 - the point
            await trio.sleep(0.5)
            st = node.stats()["runtime_lag"]
            nursery.cancel_scope.cancel()
        assert isinstance(st["max_lag_seconds"], float) and st["max_lag_seconds"] >= 0.29
        assert isinstance(st["late_wakes"], int) and st["late_wakes"] >= 1

    trio.run(body)
