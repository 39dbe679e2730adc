"""The two rules that close memberlist 0.2.2's lone-accuser false-dead gap (``swim.node``).

Rule 1: a stale suspect/dead about us is answered with our current alive, sent straight to the
accuser, rate-limited per destination.  Rule 2: a suspicion whose timer runs out before it was
fully confirmed reminds the suspect directly and waits ``probe_timeout x (health + 1)``, at most
``LAST_CHANCES`` times, before declaring.  Every test here fails on a core without the rules,
except the controls marked as such (memberlist's timing where the rules must not change it).
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from swim_harness import TEST_CONFIG

from serf_trio.swim import formulas
from serf_trio.swim.api import Address, Effect, Notice, SendPacket, State
from serf_trio.swim.config import SwimConfig
from serf_trio.swim.node import LAST_CHANCES, Memberlist
from serf_trio.wire.codec import encode_message
from serf_trio.wire.messages import DEFAULT_VSN, Ack, Alive, Dead, Message, Ping, Suspect
from serf_trio.wire.packet import decode_packet

N = 10  # members known to each core (itself included)
CFG = TEST_CONFIG


def addr(i: int) -> Address:
    return Address("127.0.0.1", 7000 + i)


def alive(i: int, inc: int) -> Alive:
    return Alive(inc, f"n{i}", addr(i).packed(), addr(i).port, None, DEFAULT_VSN)


def core(i: int, config: SwimConfig = CFG) -> Memberlist:
    """Node ``n{i}`` knowing n0..n9 alive at incarnation 1."""
    c = Memberlist(config, f"n{i}", addr(i), rng=random.Random(i), now=0.0)
    for j in range(N):
        if j != i:
            c.handle_packet(0.0, addr(j), encode_message(alive(j, 1)))
    assert c.num_alive() == N
    return c


def packets(effects: list[Effect]) -> list[tuple[Address, list[Message]]]:
    return [(e.addr, decode_packet(e.data).messages) for e in effects if isinstance(e, SendPacket)]


def notices(effects: list[Effect], event: str) -> list[Notice]:
    return [e for e in effects if isinstance(e, Notice) and e.event == event]


def refuted_core() -> Memberlist:
    """n0 after refuting a suspicion at incarnation 1 (so it is at incarnation 2)."""
    c = core(0)
    c.handle_packet(1.0, addr(3), encode_message(Suspect(1, "n0", "n3")))
    assert c.local.incarnation == 2
    return c


def run_timers(c: Memberlist, until: float) -> list[Effect]:
    out: list[Effect] = []
    while (at := c.next_deadline()) is not None and at <= until:
        out.extend(c.tick(at))
    return out


# -- rule 1: answer stale accusations ------------------------------------------------------


def test_stale_suspect_about_us_is_answered_with_our_current_alive() -> None:
    c = refuted_core()
    out = c.handle_packet(5.0, addr(3), encode_message(Suspect(1, "n0", "n3")))
    sent = packets(out)
    assert len(sent) == 1
    dest, msgs = sent[0]
    assert dest == addr(3)
    assert len(msgs) == 1  # just the alive: nothing piggy-backed (no amplification)
    msg = msgs[0]
    assert isinstance(msg, Alive)
    assert (msg.node, msg.incarnation, msg.vsn) == ("n0", 2, c.vsn)
    assert c.local.incarnation == 2  # not bumped: there is nothing new to refute
    assert notices(out, "refuted") == []
    assert len(notices(out, "stale_accusation_answered")) == 1


def test_relayed_stale_accusation_is_answered_at_source_and_accuser() -> None:
    c = refuted_core()
    # n4 relays (gossips) n3's old accusation: answer both the relay and the accuser.
    out = c.handle_packet(5.0, addr(4), encode_message(Suspect(1, "n0", "n3")))
    assert sorted(d.port for d, _ in packets(out)) == [addr(3).port, addr(4).port]


def test_stale_dead_about_us_is_answered_too() -> None:
    c = refuted_core()
    out = c.handle_packet(5.0, addr(3), encode_message(Dead(1, "n0", "n3")))
    sent = packets(out)
    assert [d for d, _ in sent] == [addr(3)]
    assert isinstance(sent[0][1][0], Alive)
    assert c.local.state is State.ALIVE and c.local.incarnation == 2


def test_answers_are_rate_limited_per_destination() -> None:
    c = refuted_core()
    stale = encode_message(Suspect(1, "n0", "n3"))
    assert len(packets(c.handle_packet(5.0, addr(3), stale))) == 1
    half = 5.0 + CFG.probe_timeout / 2
    assert packets(c.handle_packet(half, addr(3), stale)) == []
    assert packets(c.handle_packet(half, addr(3), encode_message(Dead(1, "n0", "n3")))) == []
    assert len(packets(c.handle_packet(5.0 + CFG.probe_timeout, addr(3), stale))) == 1


def test_forged_accusations_cannot_grow_the_rate_limiter_without_bound() -> None:
    c = refuted_core()
    answered = 0
    for port in range(20000, 22000):  # 2000 forged sources in one instant
        src = Address("127.0.0.2", port)
        answered += len(packets(c.handle_packet(5.0, src, encode_message(Suspect(1, "n0", "x")))))
    assert 0 < answered < 2000
    # Once the window passed, the limiter makes room again.
    later = c.handle_packet(7.0, addr(3), encode_message(Suspect(1, "n0", "n3")))
    assert len(packets(later)) == 1


def test_current_accusations_are_refuted_not_answered() -> None:
    c = refuted_core()
    out = c.handle_packet(5.0, addr(3), encode_message(Suspect(2, "n0", "n3")))
    assert c.local.incarnation == 3
    assert len(notices(out, "refuted")) == 1
    assert notices(out, "stale_accusation_answered") == []


def test_no_answer_after_leaving() -> None:
    c = refuted_core()
    c.leave(4.0, 5.0)
    out = c.handle_packet(5.0, addr(3), encode_message(Suspect(1, "n0", "n3")))
    assert notices(out, "stale_accusation_answered") == []
    assert all(not any(isinstance(m, Alive) for m in msgs) for _, msgs in packets(out))


def test_the_answer_clears_the_stale_accusers_suspicion() -> None:
    accused = refuted_core()
    accuser = core(3)
    accuser.handle_packet(1.0, addr(5), encode_message(Suspect(1, "n0", "n5")))
    assert accuser.member("n0").state is State.SUSPECT  # type: ignore[union-attr]
    # The accuser reminds n0 with its stale accusation (as its probe of a suspect does).
    reminder = encode_message(Suspect(1, "n0", "n3"))
    answer = [e for e in accused.handle_packet(5.0, addr(3), reminder) if isinstance(e, SendPacket)]
    for e in answer:
        if e.addr == addr(3):
            accuser.handle_packet(5.0, addr(0), e.data)
    m = accuser.member("n0")
    assert m is not None and m.state is State.ALIVE and m.incarnation == 2
    assert notices(run_timers(accuser, 200.0), "declared_dead") == []


# -- rule 2: one last chance for an unconfirmed suspicion ----------------------------------


def lone_suspicion(c: Memberlist, now: float = 1.0) -> float:
    """``c`` suspects n5 on n3's word alone; return when the Lifeguard max runs out."""
    c.handle_packet(now, addr(3), encode_message(Suspect(1, "n5", "n3")))
    assert c.member("n5").state is State.SUSPECT  # type: ignore[union-attr]
    min_t = formulas.suspicion_timeout(c.config.suspicion_mult, N, c.config.probe_interval)
    return now + c.config.suspicion_max_timeout_mult * min_t


def reminder_of(effects: list[Effect]) -> tuple[Suspect, Ping]:
    sent = packets(effects)
    assert len(sent) == 1 and sent[0][0] == addr(5)
    sus, ping = sent[0][1][:2]
    assert isinstance(sus, Suspect) and isinstance(ping, Ping)
    return sus, ping


def test_unconfirmed_suspicion_reminds_the_suspect_before_declaring() -> None:
    c = core(0)
    at_max = lone_suspicion(c)
    pt = CFG.probe_timeout
    seqs = set()
    for i in range(LAST_CHANCES):
        fired = run_timers(c, at_max + i * pt)
        assert notices(fired, "declared_dead") == []
        assert [n.fields for n in notices(fired, "last_chance")] == [
            {"node": "n5", "incarnation": 1}
        ]
        sus, ping = reminder_of(fired)
        assert (sus.node, sus.incarnation, sus.from_) == ("n5", 1, "n0")
        assert ping.node == "n5"
        seqs.add(ping.seq_no)
        assert c.next_deadline() == pytest.approx(at_max + (i + 1) * pt)
    assert len(seqs) == LAST_CHANCES
    # No refutation: declared after the last grace period, exactly once.
    fired = run_timers(c, at_max + LAST_CHANCES * pt)
    assert [n.fields["node"] for n in notices(fired, "declared_dead")] == ["n5"]
    assert c.member("n5").state is State.DEAD  # type: ignore[union-attr]
    assert notices(run_timers(c, at_max + 100.0), "last_chance") == []


def test_partly_confirmed_suspicion_gets_its_last_chances_too() -> None:
    # k = 2 here; one confirmation (possibly our own accusation back through a push/pull)
    # shortens the timer but is not full confirmation.
    c = core(0)
    c.handle_packet(1.0, addr(3), encode_message(Suspect(1, "n5", "n3")))
    c.handle_packet(2.0, addr(4), encode_message(Suspect(1, "n5", "n4")))
    deadline = c.next_deadline()
    assert deadline is not None
    fired = run_timers(c, deadline)
    assert notices(fired, "declared_dead") == []
    assert len(notices(fired, "last_chance")) == 1
    fired = run_timers(c, deadline + LAST_CHANCES * CFG.probe_timeout)
    assert [n.fields["node"] for n in notices(fired, "declared_dead")] == ["n5"]


def test_grace_period_scales_with_local_health() -> None:
    c = core(0)
    at_max = lone_suspicion(c)
    # Two refutations of our own raise our health score to 2 (Lifeguard: we may be the slow one).
    c.handle_packet(2.0, addr(4), encode_message(Suspect(1, "n0", "n4")))
    c.handle_packet(2.0, addr(4), encode_message(Suspect(2, "n0", "n4")))
    assert c.health_score() == 2
    run_timers(c, at_max)
    assert c.next_deadline() == pytest.approx(at_max + 3 * CFG.probe_timeout)


def test_refutation_during_the_grace_period_clears_the_suspicion() -> None:
    c = core(0)
    at_max = lone_suspicion(c)
    assert notices(run_timers(c, at_max), "declared_dead") == []
    c.handle_packet(at_max + 0.1, addr(5), encode_message(alive(5, 2)))
    assert c.member("n5").state is State.ALIVE  # type: ignore[union-attr]
    assert notices(run_timers(c, at_max + 100.0), "declared_dead") == []


def test_stale_suspect_meets_rule_1_end_to_end() -> None:
    """The traced failure: n0 missed n5's refutation; the reminder brings the answer."""
    c = core(0)
    suspect = core(5)
    suspect.handle_packet(1.0, addr(3), encode_message(Suspect(1, "n5", "n3")))
    assert suspect.local.incarnation == 2
    for t in range(40):  # n5's own queue retires its refutation: nothing left to piggy-back
        suspect.gossip(2.0 + t * CFG.gossip_interval)
    at_max = lone_suspicion(c)
    reminder = [e for e in run_timers(c, at_max) if isinstance(e, SendPacket)]
    replies = suspect.handle_packet(at_max, addr(0), reminder[0].data)
    got = [m for d, msgs in packets(replies) if d == addr(0) for m in msgs if isinstance(m, Alive)]
    assert [(m.node, m.incarnation) for m in got] == [("n5", 2)]
    assert any(isinstance(m, Ack) for d, msgs in packets(replies) for m in msgs)
    for e in replies:
        if isinstance(e, SendPacket) and e.addr == addr(0):
            c.handle_packet(at_max + 0.01, addr(5), e.data)
    assert c.member("n5").state is State.ALIVE  # type: ignore[union-attr]
    assert notices(run_timers(c, at_max + 100.0), "declared_dead") == []


def test_fully_confirmed_suspicion_keeps_memberlists_timing() -> None:
    # Control: the real-crash case (k = 2 independent confirmations) fires at memberlist's time.
    c = core(0)
    c.handle_packet(1.0, addr(3), encode_message(Suspect(1, "n5", "n3")))
    c.handle_packet(2.0, addr(4), encode_message(Suspect(1, "n5", "n4")))
    c.handle_packet(3.0, addr(6), encode_message(Suspect(1, "n5", "n6")))
    min_t = formulas.suspicion_timeout(CFG.suspicion_mult, N, CFG.probe_interval)
    deadline = c.next_deadline()
    assert deadline == pytest.approx(1.0 + min_t)
    assert deadline is not None
    fired = run_timers(c, deadline)
    assert notices(fired, "last_chance") == []
    assert [n.fields["node"] for n in notices(fired, "declared_dead")] == ["n5"]


def test_plain_swim_keeps_memberlists_timing() -> None:
    # Control: without Lifeguard nothing is ever confirmed (k = 0); the timer is min, as is.
    c = core(0, dataclasses.replace(CFG, lifeguard=False))
    c.handle_packet(1.0, addr(3), encode_message(Suspect(1, "n5", "n3")))
    min_t = formulas.suspicion_timeout(CFG.suspicion_mult, N, CFG.probe_interval)
    fired = run_timers(c, 1.0 + min_t)
    assert notices(fired, "last_chance") == []
    assert [n.fields["node"] for n in notices(fired, "declared_dead")] == ["n5"]


def test_full_confirmation_during_the_grace_period_declares_at_once() -> None:
    c = core(0)
    at_max = lone_suspicion(c)
    run_timers(c, at_max)
    c.handle_packet(at_max + 0.1, addr(4), encode_message(Suspect(1, "n5", "n4")))
    c.handle_packet(at_max + 0.1, addr(6), encode_message(Suspect(1, "n5", "n6")))
    assert c.next_deadline() == pytest.approx(at_max + 0.1)
    fired = run_timers(c, at_max + 0.1)
    assert [n.fields["node"] for n in notices(fired, "declared_dead")] == ["n5"]
