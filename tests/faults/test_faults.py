"""Real serf-trio agents under real faults: the CI forms of the fault scenarios (the full-length
runs, beside real Serf and encrypted, are ``bench/faults.py``), and the fault kit itself.

Each agent runs in a network namespace the test makes (:mod:`serf_trio.testing.faults`), loss
and partitions come from nftables rules on the hosts, freezes from SIGSTOP and starvation from
busy loops.  Needs root, ``ip`` and ``nft``; skipped otherwise.  Together these take about
three minutes: the scenarios' windows are their lengths, every "until" is bounded.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from serf_trio.testing import fault_scenarios as scenarios
from serf_trio.testing.faults import Cluster, Fabric, entered, unavailable

pytestmark = [pytest.mark.realnet, pytest.mark.slow]

AGENTS = 8


@pytest.fixture(scope="module")
def can_fault() -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)


@contextlib.contextmanager
def cluster(tmp: Path, agents: int = AGENTS) -> Iterator[Cluster]:
    with Fabric(agents) as fabric, Cluster(fabric, ["serf-trio"] * agents, tmp) as c:
        c.start()
        yield c


def _udp_through(fabric: Fabric, count: int) -> int:
    """Datagrams host 1 receives of ``count`` that host 0 sends it."""
    with entered(fabric.ns[1]):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with entered(fabric.ns[0]):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind((fabric.ip(1), 9999))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for i in range(count):
            tx.sendto(i.to_bytes(4, "big"), (fabric.ip(1), 9999))
        tx.sendto(b"end", (fabric.hub_ip, 9))  # a datagram to nowhere, as a pause
        rx.settimeout(0.5)
        got = 0
        with contextlib.suppress(TimeoutError):
            while True:
                rx.recv(16)
                got += 1
        return got


def test_the_kit_drops_the_share_it_is_told_and_cuts_and_heals(can_fault: None) -> None:
    with Fabric(2) as fabric:
        assert _udp_through(fabric, 1000) == 1000
        fabric.set_loss(0.5)
        # Binomial(1000, 0.5): 400..600 is more than six standard deviations either side.
        assert 400 <= _udp_through(fabric, 1000) <= 600
        fabric.set_loss(0)
        fabric.partition([0], [1])
        assert _udp_through(fabric, 200) == 0
        fabric.heal()
        assert _udp_through(fabric, 200) == 200


def test_ten_percent_loss_for_a_minute_marks_nobody_failed(can_fault: None, tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        out = scenarios.lossy(c, 0.10, 60.0)
    assert out.false_failed == [], out.row()
    assert out.all_alive_end, out.notes


def test_a_partition_splits_both_ways_and_heals_without_a_restart(
    can_fault: None, tmp_path: Path
) -> None:
    with cluster(tmp_path) as c:
        out = scenarios.partitioned(c, 20.0, heal_limit=120.0)
    assert out.detect_s is not None, out.notes  # each side listed the other failed
    assert out.failed_seen >= AGENTS * AGENTS // 2  # every agent marked the 4 others failed
    assert out.false_failed == [], out.row()  # nobody marked its own side failed
    assert out.heal_s is not None and out.all_alive_end, out.notes


def test_a_three_second_freeze_is_refuted_never_failed(can_fault: None, tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        victim = c.names[AGENTS - 1]
        out = scenarios.frozen(c, AGENTS - 1, 3.0)
        tallies = c.tallies()
    assert out.false_failed == [] and out.failed_seen == 0, out.row()
    assert out.all_alive_end, out.notes
    assert out.stalls is not None and out.stalls >= 1  # the thawed agent knew it had stalled
    # An accusation can only be withdrawn by the accused's refutation: if anyone suspected
    # the frozen agent, it refuted once it ran again.
    if any(victim in t.suspected for t in tallies.values()):
        assert tallies[victim].refuted >= 1


def test_two_busy_loops_on_the_box_mark_nobody_failed(can_fault: None, tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        out = scenarios.starved(c, [(2, 20.0)])
    assert out.false_failed == [], out.row()
    assert out.all_alive_end, out.notes
