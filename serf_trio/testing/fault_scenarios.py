"""The fault scenarios, each a function of a started :class:`~serf_trio.testing.faults.Cluster`
and its lengths: the CI tests run them short and the ``bench/faults.py`` script full length, for
serf-trio and real Serf alike, so both report the same figures.

What counts as a *false* failure: a ``member-failed`` that an agent logged about a member that
the scenario did not take away from it.  Loss and busy loops take nobody away; a partition takes
the other side away (until it heals); a freeze takes the frozen agent away only when it lasts
longer than the suspicion timeout.  A frozen agent that marks others failed when it thaws counts
too: it is the one that was slow.

Fixed waits are the scenarios' windows (a fault lasts so long, then the tail in which a late
``failed`` would still show up), never a guess at how long something takes: every "until"
is polled with a bound.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from serf_trio.testing.faults import Cluster, Tally, spin, wait_until

HEAL_LIMIT = 120.0
SETTLE_LIMIT = 60.0


@dataclass
class Outcome:
    """What one scenario run measured."""

    scenario: str
    impls: str  # "serf-trio", "serf" or "mixed"
    agents: int
    encrypted: bool
    seconds: float  # length of the fault window
    false_failed: list[tuple[str, str]] = field(default_factory=list)  # (observer, member)
    failed_seen: int = 0  # every member-failed logged, expected ones included
    suspicions: int = 0
    refutations: int = 0
    detect_s: float | None = None  # until every survivor listed the taken member(s) failed
    heal_s: float | None = None  # from the fault's end until every member was alive everywhere
    all_alive_end: bool = False
    stalls: int | None = None  # serf-trio agents' loop stalls during the scenario
    late_wakes: int | None = None  # and their timer wakes 100 ms late or more
    notes: list[str] = field(default_factory=list)

    def false_seen_by(self, impl_of: dict[str, str], impl: str) -> list[tuple[str, str]]:
        """The false failures logged by agents of implementation ``impl``."""
        return [(o, m) for o, m in self.false_failed if impl_of.get(o) == impl]

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d["false_failed"] = [f"{o}->{m}" for o, m in self.false_failed]
        return d


def _kind(c: Cluster) -> str:
    kinds = set(c.impls)
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _outcome(c: Cluster, scenario: str, seconds: float) -> Outcome:
    return Outcome(scenario, _kind(c), len(c), c.key is not None, seconds)


def _count(out: Outcome, tallies: dict[str, Tally], allowed: set[tuple[str, str]]) -> None:
    """Fold the agents' tallies into ``out``; failures not in ``allowed`` are false."""
    for observer, t in sorted(tallies.items()):
        out.failed_seen += len(t.failed)
        out.suspicions += len(t.suspected)
        out.refutations += t.refuted
        out.false_failed += [(observer, m) for m in t.failed if (observer, m) not in allowed]


def _loops(c: Cluster, out: Outcome, before: tuple[int, int]) -> None:
    """Record the serf-trio agents' loop stalls and late wakes since ``before``."""
    if "serf-trio" in c.impls:
        stalls, late = c.loop_counters()
        out.stalls, out.late_wakes = stalls - before[0], late - before[1]


def _hold(c: Cluster, seconds: float) -> None:
    """Let ``seconds`` pass, watching that no agent process died (RuntimeError if one did)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        dead = [c.names[i] for i, a in enumerate(c.agents) if a is not None and not a.running()]
        if dead:
            raise RuntimeError(f"agents exited: {dead}: " + c.tail(c.names.index(dead[0])))


def _settle(c: Cluster, out: Outcome, limit: float = SETTLE_LIMIT) -> None:
    took = wait_until(c.converged, limit, step=0.5)
    out.all_alive_end = took is not None
    if took is None:
        out.notes.append("not all alive at the end: " + c.describe())


def lossy(c: Cluster, share: float, seconds: float) -> Outcome:
    """``share`` loss on every link for ``seconds``: nobody should be marked failed."""
    out = _outcome(c, f"loss {share:.0%}", seconds)
    mark, lag0 = c.mark(), c.loop_counters()
    c.fabric.set_loss(share)
    try:
        _hold(c, seconds)
    finally:
        c.fabric.set_loss(0)
    _settle(c, out)
    _count(out, c.tallies(since=mark), set())
    _loops(c, out, lag0)
    return out


def partitioned(
    c: Cluster,
    seconds: float,
    heal_limit: float = HEAL_LIMIT,
    split_limit: float = 90.0,
    lead: float = 0.0,
) -> Outcome:
    """Cut the cluster in two halves (even and odd hosts, so a mixed cluster mixes each side)
    for ``seconds``, or until each side lists the other failed if that takes longer (at most
    ``split_limit``), then heal.  Each side should mark the other failed, nobody a member of its
    own side, and every member should be alive everywhere again with no restart.

    What heals a cut is Serf's reconnect: every ``reconnect_interval`` (30 s) each agent tries
    to join one random failed member.  The agents' tickers start with them, so the heal time is
    set by where the heal falls in their phase; ``lead`` seconds of waiting before the cut
    moves it (pass a random lead to sample the phases)."""
    out = _outcome(c, "partition", seconds)
    _hold(c, lead)
    n = len(c)
    sides = [list(range(0, n, 2)), list(range(1, n, 2))]
    side_of = {c.names[i]: k for k, s in enumerate(sides) for i in s}
    allowed = {(o, m) for o in side_of for m in side_of if side_of[o] != side_of[m]}

    def split() -> bool:
        return all(c.all_see(m, "failed", sides[1 - k]) for k in (0, 1) for m in sides[k])

    mark, lag0 = c.mark(), c.loop_counters()
    t0 = time.monotonic()
    c.fabric.partition(*sides)
    try:
        out.detect_s = wait_until(split, max(seconds, split_limit), step=0.5)
        _hold(c, seconds - (time.monotonic() - t0))
    finally:
        c.fabric.heal()
    out.seconds = round(time.monotonic() - t0, 1)
    if out.detect_s is None:
        out.notes.append(f"the sides did not mark each other failed within {split_limit:.0f} s")
    healed = c.mark()
    out.heal_s = wait_until(c.converged, heal_limit, step=0.5)
    out.all_alive_end = out.heal_s is not None
    if out.heal_s is None:
        out.notes.append(f"not healed within {heal_limit:.0f} s: " + c.describe())
    _count(out, c.tallies(since=mark, until=healed), allowed)
    # After the heal nobody may be marked failed.  (A member one side still holds dead can
    # reach the other side as suspect through push/pull, since memberlist merges a remote
    # "dead" as "suspect", and time out there if its refutation is slow.)
    before = len(out.false_failed)
    _count(out, c.tallies(since=healed), set())
    if len(out.false_failed) > before:
        out.notes.append(f"{len(out.false_failed) - before} of the false failures after the heal")
    _loops(c, out, lag0)
    return out


def frozen(c: Cluster, victim: int, seconds: float, tail: float = 15.0) -> Outcome:
    """SIGSTOP agent ``victim`` for ``seconds``, then SIGCONT.  A short freeze must be refuted
    (no ``failed`` at all); a long one must be detected by every other agent, and the victim
    must be alive everywhere again after it thaws.  ``tail`` is the window after the thaw in
    which a late ``failed`` would still show up."""
    out = _outcome(c, f"SIGSTOP {seconds:g} s", seconds)
    others = [i for i in range(len(c)) if i != victim]
    name = c.names[victim]
    mark, lag0 = c.mark(), c.loop_counters()
    t0 = time.monotonic()
    c.freeze(victim)
    try:
        out.detect_s = wait_until(lambda: c.all_see(victim, "failed", others), seconds, step=0.2)
        _hold(c, seconds - (time.monotonic() - t0))
    finally:
        c.thaw(victim)
    allowed = {(c.names[o], name) for o in others} if out.detect_s is not None else set()
    t_thaw = time.monotonic()
    if out.detect_s is not None:
        back = wait_until(lambda: c.all_see(victim, "alive", others), HEAL_LIMIT, step=0.2)
        out.heal_s = back
        if back is None:
            out.notes.append("the thawed agent was not alive everywhere within "
                             f"{HEAL_LIMIT:.0f} s")  # fmt: skip
    _hold(c, max(0.0, tail - (time.monotonic() - t_thaw)))
    _settle(c, out)
    _count(out, c.tallies(since=mark), allowed)
    _loops(c, out, lag0)
    return out


def starved(c: Cluster, phases: Sequence[tuple[int, float]], tail: float = 15.0) -> Outcome:
    """Busy loops saturating the box, ``(loops, seconds)`` per phase, then ``tail`` seconds:
    nobody should be marked failed."""
    total = sum(s for _, s in phases)
    label = ", then ".join(f"{k} loops {s:g} s" for k, s in phases)
    out = _outcome(c, f"busy: {label}", total)
    mark, lag0 = c.mark(), c.loop_counters()
    for loops, seconds in phases:
        with spin(loops, seconds):
            _hold(c, seconds)
    _hold(c, tail)
    _settle(c, out)
    _count(out, c.tallies(since=mark), set())
    _loops(c, out, lag0)
    return out
