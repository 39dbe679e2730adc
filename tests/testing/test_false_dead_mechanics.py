"""The mechanisms that keep a refuted suspicion from becoming a false death, checked one by one.

With memberlist 0.2.2's rules alone, the 10%-loss scenario (``test_scenarios``) produced the
occasional *stale* false dead: a node that missed every copy of a refutation and did no
push/pull before its suspicion timer fired.  The core closes that gap with two rules of its own
(``swim.node``); they only help if every ordinary path that should cancel the timer does cancel
it, and these tests pin those paths on a single core, without the network:

* an ``alive`` with a higher incarnation clears a held suspicion (memberlist aliveNode), and the
  timer then never declares anything;
* a push/pull carrying the node alive at a higher incarnation clears it too (mergeState feeds
  the remote alive through aliveNode);
* the accepted refutation is re-broadcast ``retransmit_limit`` times (every node that accepts
  an alive re-gossips it), piggy-backed on acks as well as on gossip;
* a suspect message at the *same* incarnation from the original accuser is not a confirmation;
* an unconfirmed suspicion gets one last chance before it declares (our rule 2, see
  ``swim.node``); the rules themselves are unit-tested in ``tests/swim/test_swim_false_dead``.
"""

from __future__ import annotations

import random

from serf_trio.swim import formulas
from serf_trio.swim.api import Notice, SendPacket, State
from serf_trio.swim.node import LAST_CHANCES, Memberlist
from serf_trio.testing.sim import SIM_CONFIG, sim_address
from serf_trio.wire.codec import encode_message
from serf_trio.wire.messages import (
    DEFAULT_VSN,
    Ack,
    Alive,
    NodeStateCode,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
)
from serf_trio.wire.packet import decode_packet
from serf_trio.wire.stream import encode_stream_message

N = 10  # members known to the core under test (itself included)


def _alive(i: int, inc: int) -> Alive:
    addr = sim_address(i)
    return Alive(inc, f"n{i}", addr.packed(), addr.port, None, DEFAULT_VSN)


def _core() -> Memberlist:
    """Node n0 that knows n1..n9 alive at incarnation 1."""
    core = Memberlist(SIM_CONFIG, "n0", sim_address(0), rng=random.Random(7), now=0.0)
    for i in range(1, N):
        core.handle_packet(0.0, sim_address(i), encode_message(_alive(i, 1)))
    assert core.num_alive() == N
    return core


def _suspect_n5(core: Memberlist, now: float = 1.0) -> float:
    """Make n0 suspect n5 on n3's word; return the suspicion's deadline."""
    core.handle_packet(now, sim_address(3), encode_message(Suspect(1, "n5", "n3")))
    m = core.member("n5")
    assert m is not None and m.state is State.SUSPECT
    deadline = core.next_deadline()
    assert deadline is not None
    return deadline


def _declared(effects: list[object]) -> list[Notice]:
    return [e for e in effects if isinstance(e, Notice) and e.event == "declared_dead"]


def _run_timers(core: Memberlist, until: float) -> list[object]:
    out: list[object] = []
    while (at := core.next_deadline()) is not None and at <= until:
        out.extend(core.tick(at))
    return out


def test_unrefuted_suspicion_fires_at_the_lifeguard_max_plus_one_last_chance() -> None:
    # The control case: without a refutation the timer does declare (so the tests below
    # assert something that could fail).  Nobody confirmed n3's accusation, so at the max the
    # core first reminds n5 directly and waits a probe timeout (our rule 2), then declares.
    core = _core()
    _suspect_n5(core)
    min_t = formulas.suspicion_timeout(SIM_CONFIG.suspicion_mult, N, SIM_CONFIG.probe_interval)
    at_max = 1.0 + SIM_CONFIG.suspicion_max_timeout_mult * min_t
    fired = _run_timers(core, at_max + 0.001)
    assert _declared(fired) == []
    assert [e.event for e in fired if isinstance(e, Notice)] == ["last_chance"]
    assert [e.addr for e in fired if isinstance(e, SendPacket)] == [sim_address(5)]
    assert abs((core.next_deadline() or 0.0) - (at_max + SIM_CONFIG.probe_timeout)) < 1e-9
    fired = _run_timers(core, at_max + LAST_CHANCES * SIM_CONFIG.probe_timeout + 0.001)
    assert [n.fields["node"] for n in _declared(fired)] == ["n5"]
    assert core.member("n5").state is State.DEAD  # type: ignore[union-attr]


def test_gossiped_refutation_cancels_a_held_suspicion() -> None:
    core = _core()
    deadline = _suspect_n5(core)
    core.handle_packet(2.0, sim_address(5), encode_message(_alive(5, 2)))
    m = core.member("n5")
    assert m is not None and m.state is State.ALIVE and m.incarnation == 2
    assert _declared(_run_timers(core, deadline + 60.0)) == []
    # A late copy of the old accusation changes nothing: its incarnation is stale.
    core.handle_packet(3.0, sim_address(4), encode_message(Suspect(1, "n5", "n4")))
    assert core.member("n5").state is State.ALIVE  # type: ignore[union-attr]


def test_push_pull_with_a_newer_alive_cancels_a_held_suspicion() -> None:
    core = _core()
    deadline = _suspect_n5(core)
    states = tuple(
        PushNodeState(
            f"n{i}",
            sim_address(i).packed(),
            sim_address(i).port,
            None,
            2 if i == 5 else 1,
            NodeStateCode.ALIVE,
            DEFAULT_VSN,
        )
        for i in range(1, N)
    )
    data = encode_stream_message(PushPull(False, states), compress=False)
    reply, _ = core.handle_stream(2.0, data)
    assert reply is not None
    m = core.member("n5")
    assert m is not None and m.state is State.ALIVE and m.incarnation == 2
    assert _declared(_run_timers(core, deadline + 60.0)) == []


def test_accepted_refutation_is_resent_retransmit_limit_times_on_acks_and_gossip() -> None:
    core = _core()
    _suspect_n5(core)
    core.handle_packet(2.0, sim_address(5), encode_message(_alive(5, 2)))
    limit = formulas.retransmit_limit(SIM_CONFIG.retransmit_mult, N)

    def carries_refutation(data: bytes) -> bool:
        msgs = decode_packet(data).messages
        return any(isinstance(x, Alive) and x.node == "n5" and x.incarnation == 2 for x in msgs)

    # First carrier: the ack to a ping (piggy-backing), then gossip rounds until it retires.
    ping = Ping(1, "n0", sim_address(2).packed(), sim_address(2).port, "n2")
    acks = core.handle_packet(2.1, sim_address(2), encode_message(ping))
    sent = [e for e in acks if isinstance(e, SendPacket)]
    assert any(isinstance(x, Ack) for x in decode_packet(sent[0].data).messages)
    count = sum(carries_refutation(e.data) for e in sent)
    assert count == 1
    now = 2.2
    for _ in range(20):
        effects = core.gossip(now)
        count += sum(carries_refutation(e.data) for e in effects if isinstance(e, SendPacket))
        now += SIM_CONFIG.gossip_interval
    assert count == limit


def test_same_accuser_never_confirms_its_own_suspicion() -> None:
    core = _core()
    deadline = _suspect_n5(core)
    core.handle_packet(2.0, sim_address(6), encode_message(Suspect(1, "n5", "n3")))
    assert core.next_deadline() == deadline
    core.handle_packet(2.0, sim_address(6), encode_message(Suspect(1, "n5", "n6")))
    after = core.next_deadline()
    assert after is not None and after < deadline  # a new accuser shortens the timer
