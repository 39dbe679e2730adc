"""A seeded, pure model of an unreliable network, for the discrete-event simulator.

The model owns *decisions* only: given the current simulated time it says when (and whether) a
datagram or a stream request reaches its destination.  It never holds packets and never keeps a
clock: every method takes ``now`` and returns absolute delivery times.  All randomness comes
from its own ``random.Random(seed)``, so a scenario replays exactly.

What it models:

* **Links** – one-way latency ``base + jitter`` where the jitter is exponentially distributed
  with mean ``LinkProfile.jitter`` (a long right tail, like queueing delay) and capped at
  ``LinkProfile.max_jitter``; independent loss and duplication probabilities per datagram.
  One default profile plus per-pair overrides (symmetric).
* **Partitions** – a *cut* is two address sets that cannot reach each other in either
  direction; several cuts may be active at once; ``heal`` removes one or all.  Datagrams across
  a cut vanish; stream connects across a cut get no answer (the caller's timeout fires).
* **Dead hosts** – datagrams to them vanish; stream connects to them fail with
  ``connection refused`` after one round trip (the host answers with a reset, as a crashed
  process on a live machine does).
* **Starved nodes** – the Lifeguard paper's *slow message processing*: every inbound datagram,
  stream request and stream reply of a starved node is *handled* late by a uniform random
  ``0.5 - 2.5 s`` (configurable per node).  Decision: only input handling is delayed, the
  node's own timers and periodic rounds stay on time.  That is the situation Lifeguard's local
  health awareness is built to detect (a node whose timeouts fire before it has read the acks
  and nacks already sent to it); delaying timers as well would partly hide the slowness from
  the node's own probe timeouts and make the experiment depend on timer-vs-input races.
  Per-packet delays are independent, so a starved node may also reorder its input.

Streams are reliable (TCP): a lost segment is not lost but *late*.  Each segment of the
exchange (SYN, SYN-ACK, request, reply) is lost with the link's loss probability and then
retransmitted after an RTO that doubles per retry (Linux: 1 s for the handshake, 200 ms
minimum for data).  A link with loss 1.0 never connects.  Duplication applies to datagrams only.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from serf_trio.record import record

from ..swim.api import Address

CONNECTION_REFUSED = "connection refused"
SYN_RTO = 1.0  # Linux initial retransmission timeout for SYN / SYN-ACK
DATA_RTO = 0.2  # Linux minimum RTO for data segments


@record
class LinkProfile:
    """Behaviour of one direction of a link (applied to both directions of a pair)."""

    base_latency: float = 0.0005  # seconds, one way (LAN-ish: 1 ms RTT)
    jitter: float = 0.0002  # mean of the exponential extra delay, seconds
    max_jitter: float = 0.05  # cap of the extra delay, seconds
    loss: float = 0.0  # probability a datagram vanishes
    duplicate: float = 0.0  # probability a delivered datagram arrives twice

    def __post_init__(self) -> None:
        if self.base_latency < 0 or self.jitter < 0 or self.max_jitter < 0:
            raise ValueError("latencies must be >= 0")
        if not (0.0 <= self.loss <= 1.0 and 0.0 <= self.duplicate <= 1.0):
            raise ValueError("loss and duplicate are probabilities in [0, 1]")


LAN_LINK = LinkProfile()


@record
class Starvation:
    """Inbound handling delay range of a starved node, seconds."""

    min_delay: float = 0.5
    max_delay: float = 2.5


@record
class StreamConnect:
    """Outcome of opening a stream.

    ``handle_at`` is when the target handles the request (``None`` if it never gets it);
    ``fail_at``/``error`` say when and how the initiator learns it failed (``None`` = it only
    learns through its own timeout).  ``connected_at`` is when the request bytes arrived at
    the target's socket (before any starvation delay): a no-reply stream completes then.
    """

    handle_at: float | None
    connected_at: float | None
    fail_at: float | None
    error: str


class NetModel:
    """Seeded latency/loss/duplication/partition/dead-host/starvation decisions."""

    def __init__(self, seed: int | str, default: LinkProfile = LAN_LINK) -> None:
        self.rng = random.Random(seed)
        self.default = default
        self._links: dict[tuple[Address, Address], LinkProfile] = {}
        self._cuts: dict[int, tuple[frozenset[Address], frozenset[Address]]] = {}
        self._next_cut = 1
        self._dead: set[Address] = set()
        self._starved: dict[Address, Starvation] = {}

    # -- configuration -------------------------------------------------------------------

    def set_link(self, a: Address, b: Address, profile: LinkProfile) -> None:
        """Override the profile of the pair ``a <-> b`` (both directions)."""
        self._links[(a, b)] = profile
        self._links[(b, a)] = profile

    def link(self, src: Address, dst: Address) -> LinkProfile:
        if not self._links:
            return self.default
        return self._links.get((src, dst), self.default)

    def partition(self, side_a: Iterable[Address], side_b: Iterable[Address]) -> int:
        """Cut every path between ``side_a`` and ``side_b``; returns the cut's id for ``heal``."""
        a, b = frozenset(side_a), frozenset(side_b)
        if a & b:
            raise ValueError("an address cannot be on both sides of a partition")
        cut = self._next_cut
        self._next_cut += 1
        self._cuts[cut] = (a, b)
        return cut

    def heal(self, cut: int | None = None) -> None:
        """Remove one cut, or every cut when ``cut`` is None."""
        if cut is None:
            self._cuts.clear()
        else:
            self._cuts.pop(cut, None)

    def kill(self, addr: Address) -> None:
        """The host at ``addr`` is dead: datagrams vanish, connects are refused."""
        self._dead.add(addr)

    def revive(self, addr: Address) -> None:
        self._dead.discard(addr)

    def is_dead(self, addr: Address) -> bool:
        return addr in self._dead

    def starve(self, addr: Address, starvation: Starvation | None = None) -> None:
        """Make ``addr`` handle its input late (see the module docstring)."""
        self._starved[addr] = starvation or Starvation()

    def unstarve(self, addr: Address) -> None:
        self._starved.pop(addr, None)

    def is_starved(self, addr: Address) -> bool:
        return addr in self._starved

    # -- decisions -----------------------------------------------------------------------

    def reachable(self, src: Address, dst: Address) -> bool:
        """False if an active cut separates the two addresses."""
        for a, b in self._cuts.values():
            if (src in a and dst in b) or (src in b and dst in a):
                return False
        return True

    def latency(self, src: Address, dst: Address) -> float:
        """One sampled one-way transit time."""
        p = self.link(src, dst)
        if p.jitter <= 0.0:
            return p.base_latency
        return p.base_latency + min(p.max_jitter, self.rng.expovariate(1.0 / p.jitter))

    def processing_delay(self, addr: Address) -> float:
        """Extra time before ``addr`` handles an input (0 unless starved)."""
        s = self._starved.get(addr)
        if s is None:
            return 0.0
        return self.rng.uniform(s.min_delay, s.max_delay)

    def packet(self, now: float, src: Address, dst: Address) -> list[float]:
        """Times at which ``dst`` handles a datagram sent now: [] lost, two entries duplicated."""
        if dst in self._dead or not self.reachable(src, dst):
            return []
        p = self.link(src, dst)
        rng = self.rng
        if p.loss > 0.0 and rng.random() < p.loss:
            return []
        times = [now + self.latency(src, dst) + self.processing_delay(dst)]
        if p.duplicate > 0.0 and rng.random() < p.duplicate:
            times.append(now + self.latency(src, dst) + self.processing_delay(dst))
        return times

    def _segment(self, src: Address, dst: Address, rto: float) -> float:
        """Transit time of one TCP segment, retransmissions (doubling RTO) included."""
        loss = self.link(src, dst).loss
        extra = 0.0
        if loss > 0.0:
            while self.rng.random() < loss:
                extra += rto
                rto *= 2
        return extra + self.latency(src, dst)

    def stream_connect(self, now: float, src: Address, dst: Address) -> StreamConnect:
        """Open a stream now and write one request message on it."""
        if not self.reachable(src, dst) or self.link(src, dst).loss >= 1.0:
            # SYNs vanish: the initiator only finds out through its timeout.
            return StreamConnect(None, None, None, "")
        if dst in self._dead:
            rtt = self.latency(src, dst) + self.latency(dst, src)
            return StreamConnect(None, None, now + rtt, CONNECTION_REFUSED)
        # Handshake (SYN, SYN-ACK) then the request's one-way trip.
        arrive = (
            now
            + self._segment(src, dst, SYN_RTO)
            + self._segment(dst, src, SYN_RTO)
            + self._segment(src, dst, DATA_RTO)
        )
        return StreamConnect(arrive + self.processing_delay(dst), arrive, None, "")

    def stream_reply(self, now: float, src: Address, dst: Address) -> float | None:
        """When the initiator ``dst`` handles a reply written now by ``src`` (None = lost)."""
        if dst in self._dead or not self.reachable(src, dst) or self.link(src, dst).loss >= 1.0:
            return None
        return now + self._segment(src, dst, DATA_RTO) + self.processing_delay(dst)
