"""A stall of our own event loop: the time we were not running does not count against others.

The driver (``runtime.driver``) notices a late timer wake, calls ``note_stall`` and then reads the
input that piled up before it runs the due timers.  Here the core's half of that, with time as
an input: a probe goes out, the loop stalls for 2 s while the ack waits unread, and the driver
wakes with the probe's timeout and deadline long due.
"""

from __future__ import annotations

import dataclasses
import random

from serf_trio.swim.api import Address, Effect, SendPacket
from serf_trio.swim.config import LAN
from serf_trio.swim.node import Memberlist
from serf_trio.wire.codec import encode_message
from serf_trio.wire.messages import DEFAULT_VSN, Ack, Alive, Ping
from serf_trio.wire.packet import decode_packet

CFG = dataclasses.replace(LAN, disable_tcp_pings=True)  # no TCP fallback to rescue the probe
PEER = Address("127.0.0.1", 7001)


def probing_core() -> tuple[Memberlist, int]:
    """n0 knowing n1 alive, with a probe of n1 sent at t=1; the probe's sequence number."""
    c = Memberlist(CFG, "n0", Address("127.0.0.1", 7000), rng=random.Random(1), now=0.0)
    c.handle_packet(
        0.0, PEER, encode_message(Alive(1, "n1", PEER.packed(), PEER.port, None, DEFAULT_VSN))
    )
    pings = [m for m in sent(c.probe(1.0)) if isinstance(m, Ping)]
    assert len(pings) == 1 and pings[0].node == "n1"
    return c, pings[0].seq_no


def sent(effects: list[Effect]) -> list[object]:
    return [m for e in effects if isinstance(e, SendPacket) for m in decode_packet(e.data).messages]


def run_timers(c: Memberlist, until: float) -> None:
    while (at := c.next_deadline()) is not None and at <= until:
        c.tick(at)


def test_without_note_stall_the_due_timers_judge_the_probe_before_the_ack_is_read() -> None:
    c, seq = probing_core()
    c.tick(3.0)  # woke 2 s late: timeout and deadline are both due
    c.handle_packet(3.0, PEER, encode_message(Ack(seq, None)))  # too late to count
    assert c.statistics().suspicions_raised == 1


def test_note_stall_moves_the_timers_so_the_waiting_ack_still_counts() -> None:
    c, seq = probing_core()
    before = c.health_score()
    c.note_stall(3.0, 2.0)  # what the driver does first after a 2 s late wake
    assert c.health_score() == before + 1  # Lifeguard: we may be the slow one
    c.handle_packet(3.0, PEER, encode_message(Ack(seq, None)))  # read before the timers
    c.tick(3.0)
    run_timers(c, 10.0)
    stats = c.statistics()
    assert stats.suspicions_raised == 0 and stats.probes_failed == 0
    assert stats.stalls == 1


def test_note_stall_delays_a_pending_suspicion_by_the_stall() -> None:
    c, _ = probing_core()
    run_timers(c, 2.5)  # the probe fails: n1 is suspect, its suspicion timer armed
    assert c.statistics().suspicions_raised == 1
    deadline = c.next_deadline()
    assert deadline is not None
    c.note_stall(deadline, 1.5)
    assert c.next_deadline() == deadline + 1.5


def test_a_short_stall_moves_the_timers_without_raising_local_health() -> None:
    c, _ = probing_core()
    before = c.health_score()
    deadline = c.next_deadline()
    assert deadline is not None
    c.note_stall(1.2, CFG.probe_timeout / 2)  # a loaded box, not a stalled process
    assert c.health_score() == before
    assert c.next_deadline() == deadline + CFG.probe_timeout / 2
    assert c.statistics().stalls == 1
