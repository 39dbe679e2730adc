"""Cluster scenarios run in the discrete-event simulator against the real membership core.

Each scenario states the bound it asserts and where the bound comes from (memberlist's
formulas, WIRE.md 12).  Measured values are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from serf_trio.swim import formulas
from serf_trio.swim.api import State
from serf_trio.swim.config import LOCAL, SwimConfig
from serf_trio.swim.node import LAST_CHANCES, Memberlist
from serf_trio.testing.netmodel import LinkProfile
from serf_trio.testing.sim import SIM_CONFIG, Simulator

CFG = SIM_CONFIG


def joined_cluster(
    n: int, seed: int, *, link: LinkProfile | None = None, **cfg: object
) -> Simulator:
    config = dataclasses.replace(CFG, **cfg)  # type: ignore[arg-type]
    sim = Simulator(seed, config=config, link=link)
    sim.add_nodes(n)
    for i in range(1, n):
        sim.join(f"n{i}", ["n0"])
    t = sim.run_until_condition(Simulator.all_alive_converged, 120.0, step=0.5)
    assert t is not None, "cluster did not converge"
    return sim


def detection_bound(n: int, cfg: SwimConfig = CFG) -> float:
    """A defensible upper bound on crash -> every survivor sees DEAD, for one crashed node.

    * first probe: each survivor probes one node per ``probe_interval`` along its own shuffled
      round robin of ``n`` nodes, so a given node is probed by a given survivor within one
      cycle, and by *someone* much sooner: with s survivors at independent positions
      P(nobody within t s) ~ (1 - t/n)^s; for t = 10 s, s = 195, n = 200 that is 6e-5 per node.
      We allow 10 intervals.
    * the probe itself (direct + indirect + TCP fallback) fails after the probe deadline,
      ``probe_interval x (score + 1)``; we allow score <= 1, i.e. 2 intervals.
    * the suspicion timer: at most the Lifeguard max, ``suspicion_max_timeout_mult x min``
      (no confirmation at all); with confirmations it shrinks to min.  A suspicion not fully
      confirmed then reminds the suspect ``LAST_CHANCES`` times, a probe timeout x (score + 1)
      apart, before declaring (``swim.node`` rule 2); score <= 1 again.
    * dissemination of ``dead``: every holder re-sends it ``retransmit_limit`` times, one
      per gossip round to ``gossip_nodes`` peers; we allow the whole retransmit budget of
      gossip rounds (an epidemic with fan-out 3 covers 200 nodes in ~4-5 rounds).
    """
    t_probe = 10 * cfg.probe_interval + 2 * cfg.probe_interval
    t_suspect = formulas.suspicion_max_timeout(
        cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, n, cfg.probe_interval
    )
    t_last = LAST_CHANCES * 2 * cfg.probe_timeout
    t_spread = formulas.retransmit_limit(cfg.retransmit_mult, n) * cfg.gossip_interval
    return t_probe + t_suspect + t_last + t_spread


@pytest.mark.slow
def test_200_join_through_one_seed_then_5_crash() -> None:
    n = 200
    sim = joined_cluster(n, seed=200)
    print(f"\n200 nodes converged at t={sim.now:.1f}s, {sim.statistics().events} events")
    assert all(sim.nodes[name].core.num_alive() == n for name in sim.nodes)
    assert all(len(sim.view(name)) == n for name in ("n0", "n17", "n199"))
    assert not sim.false_dead()

    crash_at = sim.now
    victims = ["n3", "n50", "n101", "n150", "n199"]
    for v in victims:
        sim.crash(v)
    bound = detection_bound(n)  # 12 + 55.224 + 1 + 2.4 = 70.6 s
    done = sim.run_until_condition(
        lambda s: all(s.dead_seen_at(v) is not None for v in victims), crash_at + bound, step=0.5
    )
    assert done is not None, f"not every survivor saw the crashes within {bound:.1f}s"
    delays = {v: (sim.dead_seen_at(v) or 0.0) - crash_at for v in victims}
    print(
        f"detection bound {bound:.1f}s, measured per victim: "
        + ", ".join(f"{v}={d:.1f}s" for v, d in delays.items())
    )
    assert max(delays.values()) <= bound
    for survivor in ("n0", "n42", "n198"):
        view = sim.view(survivor)
        assert all(view.get(v, State.DEAD) is State.DEAD for v in victims)
    assert not sim.false_dead()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 11, 12])
def test_50_nodes_10pct_loss_no_false_dead(seed: int) -> None:
    """10% loss on every datagram (and late TCP segments) for 10 minutes: no false dead at all.

    Suspicions happen (a probe's direct, indirect and TCP paths all fail) and are refuted.
    memberlist 0.2.2 alone leaves a gap here: a node A whose accusation of B nobody confirms
    runs its timer to the Lifeguard max (40 s at 50 nodes); if A misses every copy of B's
    refutation (~7 expected, all lost with p ~ e^-7) and does no push/pull (period 60 s), it
    declares B dead at the refuted incarnation.  Everyone else ignores that stale ``dead``, but
    A's view is wrong.  Measured over seeds 1-20 on the plain memberlist rules: 7 runs with one
    such declaration (seeds 1, 7, 8, 11, 12, 15, 18; seed 50 had one too).  The core closes the
    gap (``swim.node`` rules 1 and 2): a suspicion not fully confirmed reminds B directly
    before declaring, and B answers a stale accusation with its current alive.  With them:
    0 in seeds 1-20; with memberlist's independent random gossip targets the last chance was
    taken 6 times (seeds 3, 9, 11, 12, 13), every time answered in time.  Since gossip targets
    follow ``swim.targets`` (a ring backstop: every node hears each broadcast from its ring
    predecessors) the refutation reaches the accuser by gossip and the precondition no longer
    occurs at all (0 last chances in seeds 1-20); rule 2 is exercised directly in
    ``tests/swim/test_swim_false_dead.py``.  Asserted on seeds 3, 11 and 12 (11 and 12 had a
    stale declaration before): suspicions happen, not a single ``declared_dead`` about a live
    node, stale or not, and a converged cluster at the end.
    """
    sim = joined_cluster(50, seed=seed, link=LinkProfile(loss=0.10))
    sim.run_for(600.0)
    false = sim.false_dead()
    print(
        f"\n10% loss, 600 s, seed {seed}: suspected {sim.notices['suspected']}, "
        f"refuted {sim.notices['refuted']}, last chances {sim.notices['last_chance']}, "
        f"stale accusations answered {sim.notices['stale_accusation_answered']}, "
        f"false dead {false}"
    )
    assert sim.notices["suspected"] > 0  # the loss does bite
    assert false == []
    assert sim.run_until_condition(Simulator.all_alive_converged, sim.now + 120.0) is not None


def partition_halves(sim: Simulator) -> tuple[list[str], list[str]]:
    names = sorted(sim.nodes, key=lambda s: int(s[1:]))
    half = len(names) // 2
    return names[:half], names[half:]


def test_partition_two_halves_then_heal() -> None:
    """Each half declares the other dead; after healing everyone is alive again.

    memberlist never gossips or push/pulls *to* a node it holds dead (past
    gossip_to_the_dead_time), so after a long full partition the halves need one bridge:
    Serf's reconnect loop joins a failed member; we do that once, from one node, at heal time.
    From there push/pull (one random alive peer per period) carries each side's view of the
    other to it, and each accused node refutes.  Bound: the bridge join + refutations spread in
    seconds; every node still accused must push/pull with a node of the other half at least
    once: we allow 8 push/pull periods (P(a node misses 8 in a row) ~ 2^-8).
    """
    n = 40
    sim = joined_cluster(n, seed=40)
    left, right = partition_halves(sim)
    cut = sim.net.partition([sim.nodes[x].addr for x in left], [sim.nodes[x].addr for x in right])
    start = sim.now

    def split(s: Simulator) -> bool:
        return all(
            s.view(a).get(b, State.DEAD) is State.DEAD
            for side, other in ((left, right), (right, left))
            for a in side
            for b in other
        )

    split_at = sim.run_until_condition(split, start + 300.0, step=1.0)
    assert split_at is not None, "the halves never saw each other dead"
    print(f"\npartition: each side saw the other dead after {split_at - start:.1f}s")
    for side in (left, right):
        assert all(sim.nodes[a].core.num_alive() == n // 2 for a in side)

    sim.net.heal(cut)
    heal_at = sim.now
    sim.join(left[0], [right[0]])  # Serf's reconnect of a failed member
    period = sim.nodes["n0"].core.push_pull_period()
    bound = 8 * period
    healed = sim.run_until_condition(Simulator.all_alive_converged, heal_at + bound, step=1.0)
    assert healed is not None, f"not healed within {bound:.0f}s"
    print(f"healed after {healed - heal_at:.1f}s (bound {bound:.0f}s, push/pull period {period}s)")


def _trace(seed: int) -> list[tuple[float, str, str]]:
    sim = joined_cluster(20, seed=seed, link=LinkProfile(loss=0.05))
    sim.crash("n7")
    sim.run_for(30.0)
    return sim.trace


def test_same_seed_same_trace() -> None:
    a, b, c = _trace(11), _trace(11), _trace(12)
    assert len(a) > 400
    assert a == b
    assert a != c


_DIGEST = textwrap.dedent(
    """
    from serf_trio.testing.netmodel import LinkProfile
    from serf_trio.testing.sim import Simulator
    sim = Simulator(3, link=LinkProfile(loss=0.05))
    sim.add_nodes(12)
    for i in range(1, 12):
        sim.join(f"n{i}", ["n0"])
    sim.run_until(20.0)
    sim.crash("n5")
    sim.run_until(45.0)
    print(len(sim.trace), sim.trace_digest())
    """
)


@pytest.mark.slow
def test_trace_independent_of_hash_seed() -> None:
    """Same seed, same trace even across processes with different string hashing."""
    outs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        res = subprocess.run(
            [sys.executable, "-c", _DIGEST],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        outs.append(res.stdout.strip())
    assert int(outs[0].split()[0]) > 100
    assert outs[0] == outs[1]


# -- the Lifeguard experiment ---------------------------------------------------------------

# memberlist's "local" profile: probe 1 s, probe timeout 0.2 s, gossip 0.1 s, suspicion_mult 3
# (k = 1 confirmation wanted), retransmit_mult 2, one indirect relay.  Its minimum suspicion
# timeout, 3 x log10(24) x 1 s = 4.1 s, is of the order of the starved nodes' 0.5-2.5 s input
# delays, which is the regime the Lifeguard paper studies; with LAN timings (min 6.7 s at 48
# nodes) plain SWIM almost never kills a healthy node in this model.
LG_CONFIG = dataclasses.replace(LOCAL, enable_compression=False)
LG_NODES = 24
LG_STARVED = 4  # every 6th node, the same share as the paper's 8 of 48
LG_SECONDS = 240.0
LG_SEEDS = (1, 2, 3)


@dataclasses.dataclass(frozen=True)
class LifeguardRun:
    healthy_false_dead: int  # declared_dead notices (any declarer) about a healthy up node
    starved_dead: int  # declared_dead notices about a starved node (arguably true detections)
    accusations: int  # suspicions raised by a starved node about a healthy one
    max_health: int  # highest health score among the starved nodes at the end


def lifeguard_run(seed: int, lifeguard: bool) -> LifeguardRun:
    """The Lifeguard paper's slow-message-processing experiment, scaled to the simulator.

    24 nodes, every 6th one starved (each input handled 0.5-2.5 s late, ``NetModel.starve``),
    240 simulated seconds; identical seed and scenario for both runs, only
    ``SwimConfig.lifeguard`` differs.
    """
    config = dataclasses.replace(LG_CONFIG, lifeguard=lifeguard)
    sim = Simulator(seed, config=config)
    sim.add_nodes(LG_NODES)
    for i in range(1, LG_NODES):
        sim.join(f"n{i}", ["n0"])
    assert sim.run_until_condition(Simulator.all_alive_converged, 60.0, step=0.5) is not None
    step = LG_NODES // LG_STARVED
    starved = {f"n{i}" for i in range(1, LG_NODES, step)}
    for name in starved:
        sim.net.starve(sim.nodes[name].addr)
    sim.run_for(LG_SECONDS)
    false = sim.false_dead()  # no node crashes here: every declaration is about an up node
    return LifeguardRun(
        healthy_false_dead=sum(d.node not in starved for d in false),
        starved_dead=sum(d.node in starved for d in false),
        accusations=false_accusations(sim, starved),
        max_health=max(health(sim, s) for s in starved),
    )


def false_accusations(sim: Simulator, starved: set[str]) -> int:
    """``suspected`` notices raised by a starved node about a healthy one."""
    count = 0
    for _, node, summary in sim.trace:
        if node in starved and summary.startswith("notice suspected"):
            about = summary.split("node=", 1)[1].split()[0]
            count += about not in starved
    return count


def health(sim: Simulator, name: str) -> int:
    core = sim.nodes[name].core
    assert isinstance(core, Memberlist)
    return core.health_score()


@pytest.mark.slow
def test_lifeguard_experiment() -> None:
    """Lifeguard cuts false deaths of *healthy* members caused by slow members.

    A starved node S processes a healthy node H's ack too late, suspects H and gossips it;
    every node that hears it starts a timer, and H's refutation must reach each of them in
    time.  Plain SWIM: every timer is the minimum (4.1 s) and a node that misses the refutation
    (4 transmissions per holder in this profile), or hears it late because it is itself
    starved, declares H dead.  Lifeguard: nobody confirms S's lone accusation, so timers start
    at 6 x min and push/pull or a late copy of the refutation arrives first; and S's missing
    nacks raise its health score, stretching its probe deadline so it accuses less.
    The metric (the paper's): ``declared_dead`` notices about a healthy member.  Declarations
    about the starved nodes themselves are reported, not asserted: their probers really get no
    timely ack, and confirmations from independent probers rightly shrink the timer.

    Measured (seed: healthy false dead without -> with Lifeguard): 1: 33 -> 2, 2: 30 -> 0,
    3: 34 -> 1; seeds 4-8: 40 -> 0, 34 -> 1, 33 -> 3, 34 -> 1, 35 -> 0 (273 -> 8 over all
    eight, 34x).  Both arms run the core's answer to stale accusations (``swim.node`` rule 1,
    not a Lifeguard feature); with Lifeguard, a suspicion that was not fully confirmed also
    reminds the suspect once before declaring (rule 2).  Before those rules (memberlist 0.2.2
    behaviour) the same seeds gave 53 -> 5, 55 -> 2, 56 -> 4, 34 -> 4, 60 -> 3, 50 -> 5,
    48 -> 4, 32 -> 3 (388 -> 30, 12.9x): what was left with Lifeguard were declarers that had
    missed the refutation.  Asserted: >= 20 without Lifeguard on every seed, a tenfold cut
    over the three seeds together, at least fivefold on each.
    """
    rows = [(seed, lifeguard_run(seed, False), lifeguard_run(seed, True)) for seed in LG_SEEDS]
    for seed, plain, guarded in rows:
        print(
            f"\nlifeguard seed {seed} ({LG_NODES} nodes, {LG_STARVED} starved 0.5-2.5 s, "
            f"{LG_SECONDS:.0f} s, local profile): healthy false dead {plain.healthy_false_dead}"
            f" -> {guarded.healthy_false_dead}; starved declared dead {plain.starved_dead} -> "
            f"{guarded.starved_dead}; starved nodes' accusations of healthy ones "
            f"{plain.accusations} -> {guarded.accusations}; max health score "
            f"{plain.max_health} -> {guarded.max_health}"
        )
    for _, plain, guarded in rows:
        assert plain.healthy_false_dead >= 20
        assert guarded.healthy_false_dead * 5 <= plain.healthy_false_dead
        # Local health awareness: the starved nodes stop accusing healthy ones so often.
        assert guarded.accusations * 2 <= plain.accusations
        assert plain.max_health == 0  # plain SWIM pins the score
    total_plain = sum(p.healthy_false_dead for _, p, _ in rows)
    total_guarded = sum(g.healthy_false_dead for _, _, g in rows)
    assert total_guarded * 10 <= total_plain
