"""CPU cost of the sans-IO core on the paths a join storm hammers, in µs per call.

Usage::

    python bench/core_profile.py [--sizes 128 1000] [--seed 1] [--quick]
                                 [--only SUBSTRING ...] [--profile [N]]

Everything runs in-process on cores built directly (``swim.node.Memberlist``,
``serf.node.SerfNode``) and fed stream messages and datagrams with ``now`` as a float; no
sockets, no simulator, no driver.  What is measured (``N`` = members in the message/table):

* ``swim merge fresh N`` / ``swim merge known N``: ``Memberlist.handle_stream`` of a push/pull
  carrying N alive members into a node that knows none of them, or that already merged the very
  same state (anti-entropy, the common case in a storm).  This is the whole responder path:
  decode, our reply (``local_state``), then memberlist's mergeRemoteState;
* ``serf merge fresh N`` / ``serf merge known N``: the same through ``SerfNode.handle_stream``,
  whose push/pull also carries Serf's state (member status LTimes, the 512-slot user-event
  ring, the three clocks);
* ``swim gossip 1000`` / ``serf gossip 1000``: one ``gossip()`` round with the broadcast queue
  full (the 1,000 alive broadcasts a fresh merge queues; for Serf also 200 queued user
  events).  200 rounds send each broadcast about 11 times, below its transmit limit (16 at
  1,000 members), so the queue stays full throughout;
* ``serf packet ...``: one incoming datagram at 1,000 members: a new user event (delivered,
  rebroadcast), an alive with a newer incarnation (rebroadcast), an alive already known
  (dropped), and at the memberlist level the two alive cases;
* ``wire push/pull decode|encode N``: ``StreamParser`` / ``encode_stream_message`` of an N-member
  push/pull (node states only), and ``serf state decode|encode N`` for Serf's user state.

Each figure is the median of the per-call times (``time.perf_counter`` around one call; any
setup such as building a fresh node is outside the timed region).  ``--profile`` runs every
selected measurement once more under cProfile and prints the top functions by cumulative time.
The default run takes well under a minute on a 2-core box.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import pstats
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from serf_trio.serf.config import SerfConfig
from serf_trio.serf.messages import EventEntry, EventSlot, PushPullState, UserEvent
from serf_trio.serf.messages import decode as serf_decode
from serf_trio.serf.messages import encode as serf_encode
from serf_trio.serf.node import SerfNode
from serf_trio.serf.tags import encode_tags
from serf_trio.swim.api import Address
from serf_trio.swim.config import LAN
from serf_trio.swim.node import Memberlist
from serf_trio.wire.codec import encode_message
from serf_trio.wire.messages import DEFAULT_VSN, Alive, NodeStateCode, PushNodeState, PushPull
from serf_trio.wire.packet import encode_packet
from serf_trio.wire.stream import StreamParser, encode_stream_message

# Compression off, as in the simulator: the pure-Python LZW codec would dwarf everything else
# and is not what a storm on a LAN profile spends its time on (memberlist compresses streams
# only when configured).
SWIM_CONFIG = dataclasses.replace(LAN, enable_compression=False)
SERF_CONFIG = SerfConfig()
TARGET = Address("10.255.255.1", 7946)
SENDER = Address("10.255.255.2", 7946)
TAGS = {"role": "web", "dc": "dc1", "build": "0.1.0"}
EVENT_SLOTS = 64  # filled slots of the 512-slot user-event ring in a Serf push/pull


# ------------------------------------------------------------------------------ fixtures


def member_addr(i: int) -> Address:
    return Address(f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}", 7946)


def member_name(i: int) -> str:
    return f"member-{i:05d}"


def node_states(n: int, meta: bytes | None) -> tuple[PushNodeState, ...]:
    """The sender plus ``n - 1`` other alive members, as a push/pull lists them."""
    out = [
        PushNodeState(
            "sender", SENDER.packed(), SENDER.port, meta, 1, NodeStateCode.ALIVE, DEFAULT_VSN
        )
    ]
    for i in range(n - 1):
        a = member_addr(i)
        out.append(
            PushNodeState(
                member_name(i), a.packed(), a.port, meta, 1, NodeStateCode.ALIVE, DEFAULT_VSN
            )
        )
    return tuple(out)


def serf_state(names: list[str]) -> PushPullState:
    """Serf's push/pull state: a status LTime per member and a partly filled event ring."""
    slots: list[EventSlot | None] = [None] * SERF_CONFIG.event_buffer
    for t in range(1, EVENT_SLOTS + 1):
        slots[t % len(slots)] = EventSlot(t, (EventEntry("deploy", f"v{t}".encode()),))
    return PushPullState(
        ltime=len(names) + 10,
        status_ltimes={name: i + 1 for i, name in enumerate(names)},
        left_members=(),
        event_ltime=EVENT_SLOTS + 1,
        events=tuple(slots),
        query_ltime=3,
    )


def swim_push_pull(n: int, *, serf: bool) -> bytes:
    states = node_states(n, encode_tags(TAGS) if serf else None)
    user = serf_encode(serf_state([s.name for s in states])) if serf else b""
    return encode_stream_message(PushPull(False, states, user), compress=False)


def new_swim(seed: int) -> Memberlist:
    return Memberlist(SWIM_CONFIG, "target", TARGET, rng=random.Random(seed), now=0.0)


def new_serf(seed: int) -> SerfNode:
    node = SerfNode(
        SERF_CONFIG, SWIM_CONFIG, "target", TARGET, rng=random.Random(seed), now=0.0, tags=TAGS
    )
    node.tick(0.0)  # the local member-join, delivered on the first call
    return node


class Clock:
    """Core time for the fixtures: a little later at every call, never a wall clock read."""

    def __init__(self, start: float = 1.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


# ------------------------------------------------------------------------------ measurements


@dataclass
class Case:
    """One measurement: ``prepare()`` (untimed) returns the call to time once."""

    name: str
    prepare: Callable[[], Callable[[], object]]
    reps: int


def _fresh_merge(kind: str, n: int, seed: int) -> Callable[[], Callable[[], object]]:
    data = swim_push_pull(n, serf=kind == "serf")
    make = new_serf if kind == "serf" else new_swim

    def prepare() -> Callable[[], object]:
        node = make(seed)
        return lambda: node.handle_stream(1.0, data)

    return prepare


def _known_merge(kind: str, n: int, seed: int) -> Callable[[], Callable[[], object]]:
    data = swim_push_pull(n, serf=kind == "serf")
    node = new_serf(seed) if kind == "serf" else new_swim(seed)
    clock = Clock()
    node.handle_stream(clock(), data)

    def prepare() -> Callable[[], object]:
        now = clock()
        return lambda: node.handle_stream(now, data)

    return prepare


def _gossip(kind: str, n: int, seed: int) -> Callable[[], Callable[[], object]]:
    data = swim_push_pull(n, serf=kind == "serf")
    clock = Clock()
    node: Memberlist | SerfNode
    if kind == "serf":
        snode = new_serf(seed)
        snode.handle_stream(clock(), data)
        for i in range(200):
            snode.user_event(clock(), f"ev{i}", b"payload", False)
        node = snode
    else:
        node = new_swim(seed)
        node.handle_stream(clock(), data)

    def prepare() -> Callable[[], object]:
        now = clock()
        return lambda: node.gossip(now)

    return prepare


def _packet(kind: str, what: str, n: int, seed: int) -> Callable[[], Callable[[], object]]:
    data = swim_push_pull(n, serf=kind == "serf")
    clock = Clock()
    node = new_serf(seed) if kind == "serf" else new_swim(seed)
    node.handle_stream(clock(), data)
    meta = encode_tags(TAGS) if kind == "serf" else None
    counter = iter(range(2, 1 << 30))

    def alive_packet(i: int, incarnation: int) -> bytes:
        a = member_addr(i)
        msg = Alive(incarnation, member_name(i), a.packed(), a.port, meta, DEFAULT_VSN)
        return encode_packet([encode_message(msg)], crc=False, compress=False)

    def prepare() -> Callable[[], object]:
        now = clock()
        k = next(counter)
        if what == "user event":
            ev = UserEvent(1000 + k, "deploy", b"payload", False)
            pkt = encode_packet([b"\x08" + serf_encode(ev)], crc=False, compress=False)
        elif what == "alive new":
            pkt = alive_packet(k % (n - 1), k)  # a newer incarnation every time
        else:
            pkt = alive_packet(k % (n - 1), 1)  # what the node already holds
        return lambda: node.handle_packet(now, SENDER, pkt)

    return prepare


def _wire(what: str, n: int) -> Callable[[], Callable[[], object]]:
    states = node_states(n, encode_tags(TAGS))
    msg = PushPull(False, states, b"")
    data = encode_stream_message(msg, compress=False)
    state = serf_state([s.name for s in states])
    raw_state = serf_encode(state)
    calls: dict[str, Callable[[], object]] = {
        "wire push/pull decode": lambda: StreamParser().feed(data),
        "wire push/pull encode": lambda: encode_stream_message(msg, compress=False),
        "serf state decode": lambda: serf_decode(raw_state),
        "serf state encode": lambda: serf_encode(state),
    }
    call = calls[what]
    return lambda: call


def cases(sizes: list[int], seed: int, quick: bool) -> Iterator[Case]:
    big = max(sizes)

    def reps(n: int, base: int) -> int:
        r = max(3, base * 128 // max(n, 128))
        return max(3, r // 3) if quick else r

    for kind in ("swim", "serf"):
        for n in sizes:
            yield Case(f"{kind} merge fresh {n}", _fresh_merge(kind, n, seed), reps(n, 120))
            yield Case(f"{kind} merge known {n}", _known_merge(kind, n, seed), reps(n, 240))
    for kind in ("swim", "serf"):
        yield Case(f"{kind} gossip {big}", _gossip(kind, big, seed), 60 if quick else 200)
    for what in ("user event", "alive new", "alive known"):
        yield Case(
            f"serf packet {what} {big}", _packet("serf", what, big, seed), 100 if quick else 2000
        )
    for what in ("alive new", "alive known"):
        yield Case(
            f"swim packet {what} {big}", _packet("swim", what, big, seed), 100 if quick else 2000
        )
    for what in (
        "wire push/pull decode",
        "wire push/pull encode",
        "serf state decode",
        "serf state encode",
    ):
        yield Case(f"{what} {big}", _wire(what, big), reps(big, 240))


def run(case: Case) -> list[float]:
    """Per-call seconds over ``case.reps`` calls (setup untimed)."""
    out: list[float] = []
    for _ in range(case.reps):
        call = case.prepare()
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def profile(case: Case, top: int) -> str:
    prof = cProfile.Profile()
    for _ in range(max(1, min(case.reps, 20))):
        call = case.prepare()
        prof.enable()
        call()
        prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 1000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--only", nargs="+", default=[], help="run cases whose name has a substring")
    ap.add_argument("--profile", type=int, nargs="?", const=15, default=0, metavar="N")
    args = ap.parse_args(argv)

    start = time.perf_counter()
    print(f"{'measurement':<36} {'reps':>5} {'median µs':>12} {'min µs':>12}")
    print("-" * 68)
    for case in cases(args.sizes, args.seed, args.quick):
        if args.only and not any(s in case.name for s in args.only):
            continue
        times = run(case)
        med, low = statistics.median(times) * 1e6, min(times) * 1e6
        print(f"{case.name:<36} {case.reps:>5} {med:>12,.1f} {low:>12,.1f}", flush=True)
        if args.profile:
            print(profile(case, args.profile))
    print(f"\n({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
