"""``Memberlist``: the sans-IO SWIM + Lifeguard state machine (memberlist 0.2.2 semantics).

This module owns the *behaviour* of one member: probe rounds with indirect probes, nacks and
the TCP fallback ping (memberlist state.go probeNode), suspicion with confirmations
(suspicion.go), gossip and piggy-backing (queue.go), push/pull anti-entropy and join, the
incarnation rules for alive/suspect/dead (state.go aliveNode/suspectNode/deadNode) and graceful
leave.  Scaling math is in ``formulas``, the member
table in ``members``, the broadcast queue in ``broadcast``, the suspicion record in
``suspicion`` and local health in ``awareness``.  What remains here (about 1,000 lines) stays one
module on purpose: the alive/suspect/dead rules, the probe round and push/pull merge all read
and write the same member records and incarnations under memberlist's ordering rules, and
splitting those transitions across files would split the invariants they share.

The object never does I/O and never reads a clock: every method takes ``now`` and returns the
effects (``api.Effect``) the driver must carry out.  Internal timers live in one heap of
``(deadline, generation)`` entries; a re-armed or cancelled timer simply leaves a stale entry
behind that is skipped (memberlist likewise re-checks the state-change time when a suspicion
timer fires).  Nothing on the per-packet path is O(cluster size).

Two deliberate improvements over memberlist 0.2.2 close a false-dead gap it has.  A node A that
suspects B alone (nobody confirms, so Lifeguard runs A's timer to its maximum) can miss every
gossiped copy of B's refutation and do no push/pull before the timer fires; A then declares B
dead at the refuted incarnation.  memberlist never recovers in time: A keeps reminding B with
suspect{old incarnation}, and B drops accusations older than its incarnation without a word.

1. *Answer stale accusations* (``_answer_stale_accusation``): a suspect or dead about us with an
   incarnation below ours is answered with our current alive (not bumped) sent straight to the
   packet's source and to the accuser's known address, at most once per destination per
   probe timeout (so spoofed accusations cannot turn us into an amplifier).
2. *Last chances for a weak accusation* (``_suspicion_fired``): a suspicion whose timer runs
   out before all ``k`` confirmations Lifeguard wants came (so the timer did not shrink to the
   minimum) does not declare at once; we send suspect + ping straight to the suspect and wait
   ``probe_timeout x (health + 1)``, up to ``LAST_CHANCES`` times.  A refutation arriving
   meanwhile clears the suspicion through the ordinary alive rule.  Partly confirmed counts as
   weak because memberlist turns a suspect state learnt by push/pull into a fresh accusation
   from the merging node, so our own lone accusation can come back as a "confirmation".
   Fully confirmed suspicions (a real crash in a cluster of more than a few nodes is probed by
   many) and plain SWIM (``k = 0``) keep memberlist's timing exactly.

Both are safe with real memberlist peers and change no wire format: the answer is an ordinary
alive message which any peer that already holds that incarnation ignores (memberlist aliveNode
drops alive messages whose incarnation is not newer), and the last-chance packet is the same
suspect + ping pair memberlist's own probe sends to a suspect node (suspect first here), which
a real peer refutes (current incarnation) or ignores (stale one); its ack, which matches no
probe of ours, is dropped like any late ack.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from serf_trio.record import record

from ..wire.codec import DecodeError, FramingError, encode_message
from ..wire.messages import (
    DEFAULT_VSN,
    META_MAX_SIZE,
    Ack,
    Alive,
    Dead,
    Err,
    IndirectPing,
    Message,
    MessageType,
    Nack,
    NodeStateCode,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
)
from ..wire.packet import (
    COMPOUND_HEADER_OVERHEAD,
    COMPOUND_PART_OVERHEAD,
    MAX_COMPOUND_PARTS,
    decode_packet,
    encode_packet,
)
from ..wire.stream import StreamParser, encode_push_pull, encode_stream_message
from .api import (
    Address,
    Delegate,
    Effect,
    JoinDone,
    LeaveDone,
    MemberEvent,
    MemberEventKind,
    MemberInfo,
    Notice,
    NullDelegate,
    OpenStream,
    PacketOverhead,
    SendPacket,
    State,
    Violation,
)
from .awareness import Awareness
from .broadcast import TransmitLimitedQueue
from .config import SwimConfig
from .formulas import (
    push_pull_scale,
    retransmit_limit,
    suspicion_confirmations_wanted,
    suspicion_timeout,
)
from .members import MemberTable, NodeRecord
from .pushpull import merge_message, node_states, verify_protocol
from .suspicion import Suspicion
from .tally import tally
from .targets import RING_SUCCESSORS

USER_MSG_OVERHEAD = 1  # the 08 type byte in front of a delegate message
MAX_SEQ = 0xFFFF_FFFF
# Destinations remembered by the stale-accusation rate limiter (rule 1) before answers stop.
_STALE_ANSWER_CAP = 1024
# Direct reminders (rule 2) before a not fully confirmed suspicion declares.  One closed the gap
# in the 10%-loss simulation (0 stale declarations in 20 seeds, as with two); more would survive
# a lost datagram at the price of one probe timeout each.
LAST_CHANCES = 1


# Statistics: memberlist message type names (lower case) by type byte and by decoded class.
_TYPE_NAMES: dict[int, str] = {int(t): t.name.lower() for t in MessageType}
_CLASS_NAMES: dict[type, str] = {
    Ping: "ping",
    IndirectPing: "indirect_ping",
    Ack: "ack",
    Nack: "nack",
    Suspect: "suspect",
    Alive: "alive",
    Dead: "dead",
    PushPull: "push_pull",
    UserMsg: "user",
    Err: "err",
}


def _source(src: Address | None) -> str:
    """The ``Violation.source`` of a message that came in a datagram from ``src`` or, when
    ``src`` is None, on a stream."""
    return f"udp {src}" if src is not None else "stream"


@record
class SwimStats:
    """A snapshot of the core's counters (for ``info``, metrics and test assertions)."""

    members: int
    alive: int
    suspect: int
    dead: int
    left: int
    incarnation: int
    health_score: int
    queue_depth: int
    queue_dropped: int
    probes_sent: int
    probes_failed: int
    probes_tcp_only: int
    packets_in: int
    packets_out: int
    violations: int
    probes_indirect: int = 0  # probe rounds that went on to indirect probes
    nacks_received: int = 0  # nacks for our own probe rounds
    degraded_probes: int = 0  # failed probes with fewer nacks than expected (memberlist
    # ``memberlist.degraded.probe``)
    suspicions_raised: int = 0  # a member became suspect in our table
    suspicions_confirmed: int = 0  # a suspect member was declared dead
    suspicions_refuted: int = 0  # a suspect member became alive again
    refutations: int = 0  # we refuted an accusation about ourselves
    push_pulls: int = 0  # push/pull exchanges completed (ours and answered)
    stalls: int = 0  # the driver's loop stalled (``note_stall``): timers moved by the stall
    # By memberlist message type (lower case); compound/compress wrappers count once each
    # and the messages inside them by their own type.  UDP and stream messages alike.
    messages_in: dict[str, int] = field(default_factory=dict)
    messages_out: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Probe:
    target: str
    incarnation: int  # the target's incarnation when the probe started (memberlist copies it)
    seq: int
    sent: float
    deadline: float
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0
    tcp: str = "none"  # none | pending | ok | failed
    waiting_tcp: bool = False


@dataclass(slots=True)
class _Relay:
    requester: Address
    seq: int  # the requester's sequence number, echoed in the forwarded ack/nack
    nack: bool


@dataclass(slots=True)
class _JoinRequest:
    pending: dict[int, Address]
    joined: int = 0
    errors: list[str] = field(default_factory=list)


class Memberlist:
    """One memberlist node as a pure state machine; see ``api`` for the driver contract.

    Notices it emits (``Notice.event``: fields): ``suspected`` (node, incarnation, by) when a
    failed probe makes us suspect a node; ``declared_dead`` (node, incarnation) when our
    suspicion timer fires; ``refuted`` (incarnation, accuser; "" for an alive about us with
    other meta) when we refute an accusation; ``name_conflict`` (node, existing, claimed);
    ``probe_tcp_only`` (node) when only the TCP fallback ping reached a node;
    ``push_pull_failed`` (node, error) when a periodic push/pull fails;
    ``last_chance`` (node, incarnation) when a not fully confirmed suspicion reminds the
    suspect instead of declaring (rule 2 in the module docstring);
    ``stale_accusation_answered`` (accuser, to, incarnation) when we answer a stale accusation
    about us (rule 1).

    No JOIN event is emitted for the local node (it exists from construction: read
    ``local``); LEAVE and UPDATE events are emitted for it on ``leave`` / ``update_meta``.
    """

    def __init__(
        self,
        config: SwimConfig,
        name: str,
        addr: Address,
        *,
        rng: random.Random,
        now: float,
        delegate: Delegate | None = None,
        vsn: bytes = DEFAULT_VSN,
        sealer: PacketOverhead | None = None,
    ) -> None:
        self.config = config
        # memberlist sendMsg/gossip: the packet budget shrinks by the encryption overhead.
        self._sealer = sealer
        self.name = name
        self.addr = addr
        self.vsn = vsn
        self._rng = rng
        self._delegate: Delegate = delegate if delegate is not None else NullDelegate()
        self._packed_addr = addr.packed()
        self._members = MemberTable(rng)
        self._queue = TransmitLimitedQueue(
            config.retransmit_mult, lambda: len(self._members), config.max_queued_broadcasts
        )
        self._awareness = Awareness(config.awareness_max_multiplier, enabled=config.lifeguard)
        self._suspicions: dict[str, Suspicion] = {}
        self._seq = 0
        self._ids = itertools.count(1)
        self._timers: list[tuple[float, int, str, str | int]] = []
        self._timer_gen: dict[tuple[str, str | int], int] = {}
        self._timer_counter = itertools.count()
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        # Outstanding OpenStream effects by stream id, one map per purpose.
        self._tcp_pings: dict[int, int] = {}  # -> probe seq
        self._syncs: dict[int, str] = {}  # -> peer name (periodic push/pull)
        self._join_streams: dict[int, int] = {}  # -> join request id
        self._joins: dict[int, _JoinRequest] = {}
        self._leaving = False
        self._leave_broadcast: int | None = None
        self._leave_done = False
        self._out: list[Effect] = []
        self._probes_sent = 0
        self._probes_failed = 0
        self._probes_tcp_only = 0
        self._packets_in = 0
        self._packets_out = 0
        self._violations = 0
        self._probes_indirect = 0
        self._nacks_received = 0
        self._degraded_probes = 0
        self._stalls = 0
        self._suspicions_raised = 0
        self._suspicions_confirmed = 0
        self._suspicions_refuted = 0
        self._refutations = 0
        self._push_pulls = 0
        self._messages_in: dict[str, int] = {}
        self._messages_out: dict[str, int] = {}
        # Rule 1's rate limiter: when we last answered a stale accusation, by destination.
        self._stale_answers: dict[Address, float] = {}
        meta = self._delegate.node_meta(META_MAX_SIZE)[:META_MAX_SIZE]
        me = NodeRecord(name, addr, meta, 1, State.ALIVE, vsn, now)
        self._members.add(me)
        self._me = me
        # memberlist setAlive: our own alive is queued like any other broadcast.
        self._queue.queue(name, encode_message(self._alive_msg()))

    def assume_converged(
        self,
        now: float,
        members: Sequence[MemberInfo],
        shared: dict[str, NodeRecord] | None = None,
    ) -> None:
        """Start as a node of a cluster whose join has already converged: every one of
        ``members`` (other nodes, each as its own ``local`` reads: incarnation, address, meta,
        versions; state ALIVE) is known from ``now``, and nothing is queued to broadcast,
        not even our own alive (everybody has heard everything).

        For simulation and tests only (``testing.sim.Simulator.bootstrap_converged``):
        simulating the join storm of a thousand nodes takes minutes, and this table is what
        it leaves.  Call it right after construction, before any other call.  It emits no
        effects (a converged cluster has delivered its join events); new members take random
        probe-list positions from the core's RNG, as members learnt by a join do.

        ``shared``, one dict the caller hands to every core of the same bootstrap, makes them
        share each member's record (``members`` module docstring: copy-on-write), built by
        the first core and found by the others under the member's name, with its encoded
        push/pull state: one record and one encoding per member instead of one per member and
        node (10,000 nodes: 10^4 records, not 10^8).  Every core of the bootstrap must be
        given the same ``members`` and ``now`` (the first one's records are taken as they are).
        """
        table = self._members
        if len(table) != 1:
            raise RuntimeError("assume_converged must come before any other member is known")
        recs: list[NodeRecord] = []
        for info in members:
            if info.name == self.name:
                continue
            if info.state is not State.ALIVE:
                raise ValueError(f"assume_converged takes alive members, not {info!r}")
            rec = shared.get(info.name) if shared is not None else None
            if rec is None:
                rec = NodeRecord(
                    info.name, info.addr, info.meta, info.incarnation, State.ALIVE, info.vsn, now
                )
                if shared is not None:
                    rec.shared = True
                    rec.push_state()
                    shared[info.name] = rec
            recs.append(rec)
        table.add_converged(recs)
        self._queue.reset()
        self._queue.pop_finished()

    # ------------------------------------------------------------------ views

    @property
    def memberlist(self) -> Memberlist:
        """This core itself (a Serf core answers its own memberlist): lets one driver read
        memberlist views from either core without asking which one it drives."""
        return self

    @property
    def local(self) -> MemberInfo:
        return self._me.info()

    def members(self) -> list[MemberInfo]:
        return [r.info() for r in self._members]

    def member(self, name: str) -> MemberInfo | None:
        rec = self._members.get(name)
        return rec.info() if rec is not None else None

    def num_alive(self) -> int:
        return self._members.count(State.ALIVE) + self._members.count(State.SUSPECT)

    def health_score(self) -> int:
        return self._awareness.score

    def statistics(self) -> SwimStats:
        m = self._members
        return SwimStats(
            members=len(m),
            alive=m.count(State.ALIVE),
            suspect=m.count(State.SUSPECT),
            dead=m.count(State.DEAD),
            left=m.count(State.LEFT),
            incarnation=self._me.incarnation,
            health_score=self._awareness.score,
            queue_depth=len(self._queue),
            queue_dropped=self._queue.dropped,
            probes_sent=self._probes_sent,
            probes_failed=self._probes_failed,
            probes_tcp_only=self._probes_tcp_only,
            packets_in=self._packets_in,
            packets_out=self._packets_out,
            violations=self._violations,
            probes_indirect=self._probes_indirect,
            nacks_received=self._nacks_received,
            degraded_probes=self._degraded_probes,
            stalls=self._stalls,
            suspicions_raised=self._suspicions_raised,
            suspicions_confirmed=self._suspicions_confirmed,
            suspicions_refuted=self._suspicions_refuted,
            refutations=self._refutations,
            push_pulls=self._push_pulls,
            messages_in=dict(self._messages_in),
            messages_out=dict(self._messages_out),
        )

    def push_pull_period(self) -> float:
        return push_pull_scale(self.config.push_pull_interval, len(self._members))

    def note_stall(self, now: float, seconds: float) -> None:
        """The driver's event loop did not run for ``seconds`` (a GC pause, a busy host, a
        blocking call): our pending timers move by ``seconds``, and, for a stall of at least a
        probe timeout, Lifeguard's local health goes up by one, as for a missed nack, so our
        probe timeouts and intervals stretch and our own accusations slow down while we are
        the slow one.  Successful probes bring it back down.  (Not in memberlist, whose Go
        runtime does not stall like a Python process; memberlist raises the score only on
        missed nacks and refutations.)"""
        del now
        self._stalls += 1
        if seconds >= self.config.probe_timeout:
            # Long enough to have failed a probe of ours: one step per stall, however long.
            # Shorter ones (a loaded box) only move the timers.
            self._awareness.apply_delta(1)
        if seconds <= 0:
            return
        # The time we were not running does not count against anyone: the ack or refutation
        # sent to us meanwhile was waiting unread (the driver reads it right after this).  So
        # the probe in flight and every pending timer move by the stall.  A suspicion keeps its
        # start (it identifies the suspicion), so a later confirmation recomputes its
        # deadline from the real elapsed time, as a new signal should.
        p = self._probe
        if p is not None:
            p.sent += seconds
            p.deadline += seconds
        for sus in self._suspicions.values():
            sus.deadline += seconds
        self._timers = [(at + seconds, gen, kind, key) for at, gen, kind, key in self._timers]
        heapq.heapify(self._timers)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        while self._timers:
            at, gen, kind, key = self._timers[0]
            if self._timer_gen.get((kind, key)) == gen:
                return at
            heapq.heappop(self._timers)
        return None

    def tick(self, now: float) -> list[Effect]:
        self._out = []
        self._run_timers(now)
        return self._finish()

    def _set_timer(self, kind: str, key: str | int, at: float) -> None:
        gen = next(self._timer_counter)
        self._timer_gen[(kind, key)] = gen
        heapq.heappush(self._timers, (at, gen, kind, key))

    def _cancel_timer(self, kind: str, key: str | int) -> None:
        self._timer_gen.pop((kind, key), None)

    def _run_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, gen, kind, key = heapq.heappop(self._timers)
            if self._timer_gen.get((kind, key)) != gen:
                continue
            del self._timer_gen[(kind, key)]
            self._fire(now, kind, key)

    def _fire(self, now: float, kind: str, key: str | int) -> None:
        if kind == "suspicion":
            assert isinstance(key, str)
            self._suspicion_fired(now, key)
            return
        assert isinstance(key, int)
        if kind == "probe_timeout":
            self._probe_indirect(now, key)
        elif kind in ("probe_deadline", "probe_grace"):
            self._probe_deadline(now, key, force=kind == "probe_grace")
        elif kind == "relay":
            self._relay_expired(key)
        elif kind == "leave":
            self._leave_finished(timed_out=True)

    def _finish(self) -> list[Effect]:
        """Common tail of every entry point: deliver queue notifications, hand over effects."""
        if (
            self._leave_broadcast is not None
            and self._leave_broadcast in self._queue.pop_finished()
        ):
            self._leave_finished(timed_out=False)
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------------ sending helpers

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < MAX_SEQ else 1
        return self._seq

    def _violation(self, source: str, reason: str) -> None:
        self._violations += 1
        self._out.append(Violation(source, reason))

    def _packet(self, addr: Address, parts: list[bytes], *, crc: bool) -> SendPacket:
        self._packets_out += 1
        data = encode_packet(parts, crc=crc, compress=self.config.enable_compression)
        out = self._messages_out
        if (data[5] if crc else data[0]) == MessageType.COMPRESS:
            tally(out, "compress")
        if len(parts) > 1:
            tally(out, "compound")
        for part in parts:
            tally(out, _TYPE_NAMES.get(part[0], "unknown"))
        return SendPacket(addr, data)

    def _count_in(self, msg: Message) -> None:
        tally(self._messages_in, _CLASS_NAMES.get(type(msg), "unknown"))

    def _count_out(self, msg: Message) -> None:
        tally(self._messages_out, _CLASS_NAMES.get(type(msg), "unknown"))

    def _send_raw(self, addr: Address, parts: list[bytes], *, crc: bool) -> None:
        self._out.append(self._packet(addr, parts, crc=crc))

    def _udp_budget(self) -> int:
        """Bytes a packet may have before sealing (memberlist: UDPBufferSize - encryptOverhead)."""
        sealer = self._sealer
        return self.config.udp_buffer_size - (sealer.overhead if sealer is not None else 0)

    def _send_msg(self, addr: Address, msg: Message) -> None:
        """memberlist ``sendMsg``: one message plus piggy-backed broadcasts, no CRC."""
        raw = encode_message(msg)
        avail = self._udp_budget() - len(raw) - COMPOUND_HEADER_OVERHEAD
        extra = self._get_broadcasts(COMPOUND_PART_OVERHEAD, avail, MAX_COMPOUND_PARTS - 1)
        self._send_raw(addr, [raw, *extra], crc=False)

    def _get_broadcasts(self, overhead: int, limit: int, max_parts: int) -> list[bytes]:
        """memberlist ``getBroadcasts``: our queue first, then the delegate's in what is left."""
        msgs = self._queue.get_broadcasts(overhead, limit) if limit > 0 else []
        used = sum(len(m) + overhead for m in msgs)
        avail = limit - used
        if avail > overhead + USER_MSG_OVERHEAD and len(msgs) < max_parts:
            for payload in self._delegate.get_broadcasts(overhead + USER_MSG_OVERHEAD, avail):
                msgs.append(encode_message(UserMsg(payload)))
        return msgs[:max_parts]

    def has_broadcasts(self) -> bool:
        """Whether a gossip round has anything to send (our queue or the delegate's)."""
        return len(self._queue) > 0 or self._delegate.has_broadcasts()

    def _queue_broadcast(self, node: str, msg: Message, *, notify: bool = False) -> int:
        return self._queue.queue(node, encode_message(msg), notify=notify)

    def _alive_msg(self) -> Alive:
        me = self._me
        return Alive(
            me.incarnation, me.name, self._packed_addr, self.addr.port, me.meta or None, self.vsn
        )

    def _ping(self, seq: int, node: str) -> Ping:
        return Ping(seq, node, self._packed_addr, self.addr.port, self.name)

    def _event(self, kind: MemberEventKind, rec: NodeRecord) -> None:
        self._out.append(MemberEvent(kind, rec.info()))

    # ------------------------------------------------------------------ probe (memberlist state.go)

    def probe(self, now: float) -> list[Effect]:
        self._out = []
        # A deadline due at this very instant belongs to the previous round.
        self._run_timers(now)
        if self._probe is None:
            self._start_probe(now)
        return self._finish()

    def _start_probe(self, now: float) -> None:
        target = self._members.next_probe_target(
            self.name, now, self.config.gossip_to_the_dead_time
        )
        if target is None:
            return
        seq = self._next_seq()
        ping = self._ping(seq, target.name)
        deadline = now + self._awareness.scale(self.config.probe_interval)
        if target.state is State.ALIVE:
            self._send_msg(target.addr, ping)
        else:
            # Remind a suspect node that it is accused, so it can refute (memberlist probeNode).
            sus = Suspect(target.incarnation, target.name, self.name)
            self._send_raw(
                target.addr, [encode_message(ping), encode_message(sus)], crc=target.pmax >= 5
            )
        self._probes_sent += 1
        self._probe = _Probe(target.name, target.incarnation, seq, now, deadline)
        self._set_timer("probe_timeout", seq, now + self.config.probe_timeout)
        self._set_timer("probe_deadline", seq, deadline)

    def _probe_indirect(self, now: float, seq: int) -> None:
        p = self._probe
        if p is None or p.seq != seq:
            return
        target = self._members.get(p.target)
        if target is None:
            self._end_probe()
            return
        p.indirect = True
        self._probes_indirect += 1
        me = self.name
        relays = self._members.sample(
            self.config.indirect_checks,
            lambda r: r.name != me and r.name != p.target and r.state is State.ALIVE,
            expected=self._members.count(State.ALIVE),
        )
        for peer in relays:
            want_nack = self.config.lifeguard and peer.pmax >= 4
            if want_nack:
                p.expected_nacks += 1
            req = IndirectPing(
                seq_no=p.seq,
                target=target.addr.packed(),
                port=target.addr.port,
                node=target.name,
                nack=want_nack,
                source_addr=self._packed_addr,
                source_port=self.addr.port,
                source_node=self.name,
            )
            self._send_msg(peer.addr, req)
        if not self.config.disable_tcp_pings and target.pmax >= 3:
            sid = next(self._ids)
            self._tcp_pings[sid] = p.seq
            p.tcp = "pending"
            tcp_ping = self._ping(p.seq, target.name)
            self._count_out(tcp_ping)
            data = encode_stream_message(tcp_ping, compress=self.config.enable_compression)
            self._out.append(
                OpenStream(
                    sid, target.addr, data, expect_reply=True, timeout=max(0.0, p.deadline - now)
                )
            )

    def _probe_acked(self, now: float, payload: bytes | None) -> None:
        p = self._probe
        assert p is not None
        if not p.indirect:
            self._delegate.notify_ping_complete(p.target, now - p.sent, payload or b"")
        self._awareness.apply_delta(-1)
        self._end_probe()

    def _probe_deadline(self, now: float, seq: int, *, force: bool) -> None:
        p = self._probe
        if p is None or p.seq != seq:
            return
        if p.tcp == "pending" and not force:
            # memberlist waits for the fallback ping to report before judging the probe.
            p.waiting_tcp = True
            self._set_timer("probe_grace", p.seq, now + self.config.probe_timeout)
            return
        self._judge_probe(now)

    def _judge_probe(self, now: float) -> None:
        p = self._probe
        assert p is not None
        self._end_probe()
        if p.tcp == "ok":
            self._probes_tcp_only += 1
            self._awareness.apply_delta(-1)
            self._out.append(Notice("probe_tcp_only", {"node": p.target}))
            return
        self._probes_failed += 1
        if p.expected_nacks > 0 and p.nacks < p.expected_nacks:
            self._degraded_probes += 1
        if p.expected_nacks > 0:
            self._awareness.apply_delta(max(0, p.expected_nacks - p.nacks))
        else:
            self._awareness.apply_delta(1)
        if self._on_suspect(now, Suspect(p.incarnation, p.target, self.name)):
            self._out.append(
                Notice(
                    "suspected", {"node": p.target, "incarnation": p.incarnation, "by": self.name}
                )
            )

    def _end_probe(self) -> None:
        p = self._probe
        if p is None:
            return
        for kind in ("probe_timeout", "probe_deadline", "probe_grace"):
            self._cancel_timer(kind, p.seq)
        self._probe = None

    def _tcp_ping_result(self, now: float, seq: int, reply: bytes | None) -> None:
        ok = False
        if reply:
            try:
                msg = StreamParser().feed(reply)
            except DecodeError as exc:
                self._violation("stream", f"tcp ping reply: {exc}")
                msg = None
            if msg is not None:
                self._count_in(msg)
            ok = isinstance(msg, Ack) and msg.seq_no == seq
        p = self._probe
        if p is None or p.seq != seq:
            return
        p.tcp = "ok" if ok else "failed"
        if p.waiting_tcp:
            self._judge_probe(now)

    def _relay_expired(self, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and relay.nack:
            self._send_msg(relay.requester, Nack(relay.seq))

    # ---------------------------------------------------------------- gossip (memberlist state.go)

    def gossip(self, now: float) -> list[Effect]:
        """One gossip round: queued broadcasts to the next ``gossip_nodes`` targets.

        memberlist gossip() picks alive, suspect and recently dead nodes (``kRandomNodes``) and
        calls getBroadcasts once per target, so each broadcast reaches ``retransmit_limit``
        consecutive targets.  We take the first target of a round from our alive successors on
        a ring every node shares, in turn, and the rest from a random cycle (``targets``): those
        targets are distinct whenever there are that many eligible nodes, and every node hears
        each broadcast from its ring predecessors.  Same fan-out, same packets.
        """
        self._out = []
        me = self.name
        gttd = self.config.gossip_to_the_dead_time

        def wanted(r: NodeRecord) -> bool:
            if r.name == me:
                return False
            if r.state is State.ALIVE or r.state is State.SUSPECT:
                return True
            return r.state is State.DEAD and now - r.state_change <= gttd

        members = self._members
        k = self.config.gossip_nodes
        # memberlist queue.go: each broadcast goes into this many packets (one per target).
        limit = retransmit_limit(self.config.retransmit_mult, len(members))
        # Ring successors that every broadcast's ~limit/k rounds reach at least once (1 or 2).
        ring = min(RING_SUCCESSORS, max(1, limit // k))
        # Upper bound on the eligible nodes (dead ones past gttd still counted): ourselves out.
        others = sum(members.count(s) for s in (State.ALIVE, State.SUSPECT, State.DEAD)) - 1
        window = min(limit, others - ring)
        peers = members.gossip_targets(k, wanted, me=me, window=window, ring=ring)
        avail = self._udp_budget() - COMPOUND_HEADER_OVERHEAD
        for peer in peers:
            msgs = self._get_broadcasts(COMPOUND_PART_OVERHEAD, avail, MAX_COMPOUND_PARTS)
            if not msgs:
                break
            self._send_raw(peer.addr, msgs, crc=peer.pmax >= 5)
        return self._finish()

    # ------------------------------------------------------------------ packets (memberlist net.go)

    def handle_packet(self, now: float, src: Address, data: bytes) -> list[Effect]:
        self._out = []
        self._packets_in += 1
        if data:
            decoded = decode_packet(data)
            for err in decoded.errors:
                self._violation(_source(src), err)
            counts = self._messages_in
            for t in decoded.wrappers:
                tally(counts, _TYPE_NAMES[t])
            for msg in decoded.messages:
                cls = type(msg)
                tally(counts, _CLASS_NAMES.get(cls, "unknown"))  # ``_count_in``
                # Alive straight to its handler: most of a join storm's traffic (each member
                # hears each alive ~retransmit_limit times).
                if type(msg) is Alive:
                    self._on_alive(now, msg, src=src)
                else:
                    self._dispatch(now, src, msg)
        return self._finish()

    def _dispatch(self, now: float, src: Address, msg: Message) -> None:
        if isinstance(msg, Ping):
            self._on_ping(src, msg)
        elif isinstance(msg, IndirectPing):
            self._on_indirect_ping(now, src, msg)
        elif isinstance(msg, Ack):
            self._on_ack(now, msg)
        elif isinstance(msg, Nack):
            p = self._probe
            if p is not None and p.seq == msg.seq_no:
                p.nacks += 1
                self._nacks_received += 1
        elif isinstance(msg, Suspect):
            self._on_suspect(now, msg, src=src)
        elif isinstance(msg, Alive):
            self._on_alive(now, msg, src=src)
        elif isinstance(msg, Dead):
            self._on_dead(now, msg, src=src)
        elif isinstance(msg, UserMsg):
            self._delegate.notify_msg(now, msg.payload)
        else:
            self._violation(_source(src), f"{type(msg).__name__} is not valid in a packet")

    def _reply_addr(self, src: Address, addr: bytes, port: int) -> Address | None:
        if addr and port > 0:
            try:
                return Address.from_packed(addr, port)
            except ValueError:
                self._violation(_source(src), "bad SourceAddr")
                return None
        return src

    def _on_ping(self, src: Address, msg: Ping) -> None:
        # A ping meant for another name gets no answer (a restarted node at our address).
        if msg.node and msg.node != self.name:
            return
        dest = self._reply_addr(src, msg.source_addr, msg.source_port)
        if dest is not None:
            self._send_msg(dest, Ack(msg.seq_no, self._delegate.ack_payload() or None))

    def _on_indirect_ping(self, now: float, src: Address, msg: IndirectPing) -> None:
        requester = self._reply_addr(src, msg.source_addr, msg.source_port)
        if requester is None:
            return
        try:
            target = Address.from_packed(msg.target, msg.port or self.addr.port)
        except ValueError:
            self._violation(_source(src), "indirect ping: bad Target")
            return
        local = self._next_seq()
        self._relays[local] = _Relay(requester, msg.seq_no, msg.nack)
        self._set_timer("relay", local, now + self.config.probe_timeout)
        self._send_msg(target, self._ping(local, msg.node))

    def _on_ack(self, now: float, msg: Ack) -> None:
        relay = self._relays.pop(msg.seq_no, None)
        if relay is not None:
            self._cancel_timer("relay", msg.seq_no)
            self._send_msg(relay.requester, Ack(relay.seq, None))
            return
        p = self._probe
        if p is not None and p.seq == msg.seq_no and now <= p.deadline:
            self._probe_acked(now, msg.payload)

    # ------------------------------------------------------------------ state rules (12.5)

    def _on_alive(self, now: float, msg: Alive, *, src: Address | None = None) -> None:
        """Apply an alive message (``src``: the datagram's source; None from a push/pull)."""
        is_local = msg.node == self.name
        if is_local and self._leaving:
            return  # after leaving we never come back through a stale alive
        vsn = msg.vsn
        if len(vsn) >= 3 and (vsn[0] == 0 or vsn[1] == 0 or vsn[0] > vsn[1]):
            self._violation(_source(src), f"alive for {msg.node!r} with invalid protocol versions")
            return
        try:
            addr = Address.from_packed(msg.addr, msg.port or self.addr.port)
        except ValueError:
            self._violation(_source(src), f"alive for {msg.node!r} with invalid Addr")
            return
        rec = self._members.get(msg.node)
        if (
            rec is not None
            and msg.incarnation <= rec.incarnation
            and not is_local
            and rec.addr is addr  # Address.from_packed shares its results: usually this one
        ):
            # The usual case, an alive already known (each member hears it ~retransmit_limit
            # times): what the rules below decide for it, without their bookkeeping.
            return
        meta = msg.meta or b""
        created = False
        updates_node = False
        if rec is None:
            if msg.incarnation == 0:
                return  # memberlist would keep a dead placeholder; nothing to learn from it
            rec = NodeRecord(msg.node, addr, meta, 0, State.DEAD, msg.vsn, now)
            self._members.add(rec)
            created = True
        elif rec.addr != addr:
            reclaim = self.config.dead_node_reclaim_time
            can_reclaim = reclaim > 0 and now - rec.state_change > reclaim
            if rec.state is State.LEFT or (rec.state is State.DEAD and can_reclaim):
                updates_node = True
            else:
                self._out.append(
                    Notice(
                        "name_conflict",
                        {"node": msg.node, "existing": str(rec.addr), "claimed": str(addr)},
                    )
                )
                return
        if not is_local and not updates_node and not created and msg.incarnation <= rec.incarnation:
            return
        if is_local and msg.incarnation < rec.incarnation:
            return
        self._drop_suspicion(msg.node)
        old_state, old_meta = rec.state, rec.meta
        if is_local:
            if msg.incarnation == rec.incarnation and meta == rec.meta and msg.vsn == self.vsn:
                return
            self._refute(msg.incarnation, accuser="")
            return
        self._queue_broadcast(msg.node, msg)
        rec = self._members.own(rec)
        if msg.vsn:
            rec.vsn = msg.vsn
        rec.incarnation = msg.incarnation
        rec.meta = meta
        rec.addr = addr
        self._members.set_state(rec, State.ALIVE, now)
        if old_state is State.SUSPECT:
            self._suspicions_refuted += 1
        if old_state is State.DEAD or old_state is State.LEFT:
            self._event(MemberEventKind.JOIN, rec)
        elif old_meta != rec.meta:
            self._event(MemberEventKind.UPDATE, rec)

    def _on_suspect(self, now: float, msg: Suspect, *, src: Address | None = None) -> bool:
        """Apply a suspect message (``src``: the datagram's source); True if the node just
        became suspect."""
        rec = self._members.get(msg.node)
        if rec is None:
            return False
        if msg.incarnation < rec.incarnation:
            # memberlist suspectNode: a stale accusation is ignored (rule 1 answers it).
            if msg.node == self.name and src is not None:
                self._answer_stale_accusation(now, src, msg.from_)
            return False
        sus = self._suspicions.get(msg.node)
        if sus is not None:
            counted, deadline = sus.confirm(msg.from_, now)
            if counted:
                # Lifeguard: a new independent confirmation is worth re-gossiping.
                self._queue_broadcast(msg.node, msg)
                self._set_timer("suspicion", msg.node, deadline)
            return False
        if rec.state is not State.ALIVE:
            return False
        if msg.node == self.name:
            self._refute(msg.incarnation, accuser=msg.from_)
            return False
        self._queue_broadcast(msg.node, msg)
        rec = self._members.own(rec)
        rec.incarnation = msg.incarnation
        self._members.set_state(rec, State.SUSPECT, now)
        self._suspicions_raised += 1
        n = len(self._members)
        cfg = self.config
        k = suspicion_confirmations_wanted(cfg.suspicion_mult, n)
        min_t = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        max_t = cfg.suspicion_max_timeout_mult * min_t
        sus = Suspicion(msg.from_, k, min_t, max_t, now, lifeguard=cfg.lifeguard)
        self._suspicions[msg.node] = sus
        self._set_timer("suspicion", msg.node, sus.deadline)
        return True

    def _suspicion_fired(self, now: float, node: str) -> None:
        sus = self._suspicions.get(node)
        rec = self._members.get(node)
        if sus is None or rec is None:
            return
        if rec.state is State.SUSPECT and rec.state_change == sus.start:
            if not sus.fully_confirmed and sus.last_chances < LAST_CHANCES:
                # Rule 2 (not in memberlist 0.2.2): the accusation was not confirmed by all
                # the independent probers Lifeguard wants, a hint that the others hear from the
                # node (a confirmation can also be our own accusation coming back through a
                # push/pull, which memberlist re-issues as the merging node's).  Before
                # declaring it dead, remind it directly and wait one probe timeout, at most
                # LAST_CHANCES times.  suspect goes first so that a node refuting it (a real
                # memberlist peer at this incarnation) piggy-backs its new alive on the ack to
                # the ping; a node already past this incarnation answers with its alive
                # (rule 1).
                sus.last_chances += 1
                sus.deadline = now + self._awareness.scale(self.config.probe_timeout)
                self._set_timer("suspicion", node, sus.deadline)
                sus_msg = Suspect(rec.incarnation, node, self.name)
                ping = self._ping(self._next_seq(), node)
                self._send_raw(
                    rec.addr,
                    [encode_message(sus_msg), encode_message(ping)],
                    crc=rec.pmax >= 5,
                )
                self._out.append(
                    Notice("last_chance", {"node": node, "incarnation": rec.incarnation})
                )
                return
            self._out.append(
                Notice("declared_dead", {"node": node, "incarnation": rec.incarnation})
            )
            self._on_dead(now, Dead(rec.incarnation, node, self.name))
        else:
            self._drop_suspicion(node)

    def _drop_suspicion(self, node: str) -> None:
        if self._suspicions.pop(node, None) is not None:
            self._cancel_timer("suspicion", node)

    def _on_dead(self, now: float, msg: Dead, *, src: Address | None = None) -> None:
        rec = self._members.get(msg.node)
        if rec is None:
            return
        if msg.incarnation < rec.incarnation:
            # memberlist deadNode: a stale death is ignored (rule 1 answers it).
            if msg.node == self.name and src is not None:
                self._answer_stale_accusation(now, src, msg.from_)
            return
        self._drop_suspicion(msg.node)
        if rec.dead_or_left:
            return
        if msg.node == self.name:
            if not self._leaving:
                self._refute(msg.incarnation, accuser=msg.from_)
                return
            self._leave_broadcast = self._queue_broadcast(msg.node, msg, notify=True)
        else:
            self._queue_broadcast(msg.node, msg)
        rec = self._members.own(rec)
        rec.incarnation = msg.incarnation
        if rec.state is State.SUSPECT and msg.from_ != msg.node:
            self._suspicions_confirmed += 1
        # A dead message sent by the node about itself is a graceful leave.
        self._members.set_state(rec, State.LEFT if msg.from_ == msg.node else State.DEAD, now)
        self._event(MemberEventKind.LEAVE, rec)

    def _answer_stale_accusation(self, now: float, src: Address, accuser: str) -> None:
        """Rule 1 (not in memberlist 0.2.2): tell a node still accusing an older incarnation of
        ours what our current one is.

        The accuser may have missed every copy of our refutation; memberlist would leave it
        to its timer.  We send our current alive (same incarnation: nothing new to refute)
        to the datagram's source and to the accuser's known address.  A peer that already
        holds this incarnation ignores it (aliveNode); the stale one accepts it, which clears
        its suspicion.  At most one answer per destination per probe interval, and no more
        than ``_STALE_ANSWER_CAP`` destinations in flight, so forged accusations cannot make
        us an amplifier.
        """
        if self._leaving:
            return  # we are on our way out; our left state must not be contradicted
        dests = [src]
        rec = self._members.get(accuser) if accuser and accuser != self.name else None
        if rec is not None and rec.addr != src:
            dests.append(rec.addr)
        # One answer per destination per probe timeout: an honest accuser reminds us at most
        # once per probe round or last chance (rule 2), each at least a probe timeout apart.
        window = self.config.probe_timeout
        answers = self._stale_answers
        if len(answers) >= _STALE_ANSWER_CAP:
            for addr in [a for a, t in answers.items() if now - t >= window]:
                del answers[addr]
        raw = encode_message(self._alive_msg())
        for dest in dests:
            last = answers.get(dest)
            if last is not None and now - last < window:
                continue
            if last is None and len(answers) >= _STALE_ANSWER_CAP:
                continue
            answers[dest] = now
            self._send_raw(dest, [raw], crc=False)
            self._out.append(
                Notice(
                    "stale_accusation_answered",
                    {"accuser": accuser, "to": str(dest), "incarnation": self._me.incarnation},
                )
            )

    def _refute(self, accused: int, *, accuser: str) -> None:
        """memberlist refute: beat the accusation's incarnation and broadcast alive."""
        inc = self._me.incarnation + 1
        if accused >= inc:
            inc = accused + 1
        self._me.incarnation = inc
        self._refutations += 1
        self._awareness.apply_delta(1)
        self._queue_broadcast(self.name, self._alive_msg())
        self._out.append(Notice("refuted", {"incarnation": inc, "accuser": accuser}))

    # ------------------------------------------------------------------ push/pull (8.2, 12.4)

    def _local_state(self, join: bool) -> PushPull:
        return PushPull(join, node_states(self._members), self._delegate.local_state(join))

    def _encode_local_state(self, join: bool) -> bytes:
        """``_local_state(join)`` as stream bytes (the same bytes), built from each member's
        cached node-state encoding (``NodeRecord.push_state``): a push/pull lists every
        member, and between two exchanges almost none of them changes."""
        nodes = [r.push_state() for r in self._members]
        user_state = self._delegate.local_state(join)
        tally(self._messages_out, _CLASS_NAMES[PushPull])
        return encode_push_pull(join, nodes, user_state, compress=self.config.enable_compression)

    def _encode_stream(self, msg: Message) -> bytes:
        self._count_out(msg)
        return encode_stream_message(msg, compress=self.config.enable_compression)

    def _merge_remote(self, now: float, pp: PushPull) -> str | None:
        """memberlist mergeRemoteState: verify versions, merge nodes, then the user state.

        Each remote state becomes the message memberlist's mergeState feeds its handlers
        (``pushpull.merge_message``), except the ones those handlers would drop without a
        trace (``_merge_unchanged``): in a storm's anti-entropy that is nearly every member,
        and they cost a lookup and a few comparisons instead of a message and a handler run.
        """
        err = verify_protocol(pp.nodes, self._members)
        if err is not None:
            return err
        me = self.name
        get = self._members.get
        for ns in pp.nodes:
            rec = get(ns.name)
            if rec is not None and ns.name != me and self._merge_unchanged(ns, rec):
                continue
            msg = merge_message(ns, me)
            if isinstance(msg, Alive):
                self._on_alive(now, msg)
            elif isinstance(msg, Dead):
                self._on_dead(now, msg)
            else:
                self._on_suspect(now, msg)
        if pp.user_state:
            self._delegate.merge_remote_state(now, pp.user_state, pp.join)
        return None

    def _merge_unchanged(self, ns: PushNodeState, rec: NodeRecord) -> bool:
        """Whether merging ``ns`` about ``rec`` (another node we know) changes nothing: no
        state, no broadcast, no event, no notice, no violation.  Mirrors the early returns of
        the handlers ``_merge_remote`` would call; anything else goes through them.
        """
        inc = ns.incarnation
        if ns.state == NodeStateCode.ALIVE:
            # aliveNode: an alive that is not newer is ignored, provided it claims the address
            # we hold (else: name conflict or reclaim) and carries the versions we hold (which
            # passed the version check when we took them).
            return (
                inc <= rec.incarnation
                and ns.vsn == rec.vsn
                and ns.addr == rec.addr.packed()
                and (ns.port or self.addr.port) == rec.addr.port
            )
        if inc < rec.incarnation:
            return True  # suspectNode / deadNode: older than what we know
        if ns.name in self._suspicions:
            return False  # a suspicion to confirm or to drop
        if ns.state == NodeStateCode.LEFT:
            return rec.dead_or_left  # deadNode: already dead or left
        return rec.state is not State.ALIVE  # suspectNode: only an alive node becomes suspect

    def join(self, now: float, seeds: Sequence[Address]) -> tuple[int, list[Effect]]:
        self._out = []
        rid = next(self._ids)
        if not seeds:
            self._out.append(JoinDone(rid, 0, ()))
            return rid, self._finish()
        req = _JoinRequest({})
        self._joins[rid] = req
        for seed in seeds:
            sid = next(self._ids)
            req.pending[sid] = seed
            self._join_streams[sid] = rid
            data = self._encode_local_state(True)
            self._out.append(OpenStream(sid, seed, data, True, self.config.tcp_timeout))
        return rid, self._finish()

    def push_pull(self, now: float) -> list[Effect]:
        self._out = []
        me = self.name
        peers = self._members.sample(
            1,
            lambda r: r.name != me and r.state is State.ALIVE,
            expected=self._members.count(State.ALIVE),
        )
        if peers:
            sid = next(self._ids)
            self._syncs[sid] = peers[0].name
            data = self._encode_local_state(False)
            self._out.append(OpenStream(sid, peers[0].addr, data, True, self.config.tcp_timeout))
        return self._finish()

    def _push_pull_reply(self, now: float, reply: bytes | None, error: str) -> str | None:
        """Merge a push/pull reply; the error text on failure."""
        if reply is None:
            return error or "stream failed"
        try:
            msg = StreamParser(max_nodes=self.config.max_push_pull_nodes).feed(reply)
        except DecodeError as exc:
            self._violation("stream", f"push/pull reply: {exc}")
            return str(exc)
        if msg is not None:
            self._count_in(msg)
        if isinstance(msg, Err):
            return f"remote error: {msg.error}"
        if not isinstance(msg, PushPull):
            reason = "truncated reply" if msg is None else f"unexpected {type(msg).__name__}"
            self._violation("stream", f"push/pull reply: {reason}")
            return reason
        return self._merge_remote(now, msg)

    def stream_result(
        self, now: float, stream_id: int, reply: bytes | None, error: str = ""
    ) -> list[Effect]:
        self._out = []
        if stream_id in self._tcp_pings:
            self._tcp_ping_result(now, self._tcp_pings.pop(stream_id), reply)
        elif stream_id in self._syncs:
            peer = self._syncs.pop(stream_id)
            err = self._push_pull_reply(now, reply, error)
            if err is None:
                self._push_pulls += 1
            else:
                self._out.append(Notice("push_pull_failed", {"node": peer, "error": err}))
        elif stream_id in self._join_streams:
            rid = self._join_streams.pop(stream_id)
            req = self._joins[rid]
            addr = req.pending.pop(stream_id)
            err = self._push_pull_reply(now, reply, error)
            if err is None:
                req.joined += 1
                self._push_pulls += 1
            else:
                req.errors.append(f"Failed to join {addr}: {err}")
            if not req.pending:
                del self._joins[rid]
                self._out.append(JoinDone(rid, req.joined, tuple(req.errors)))
        return self._finish()

    def handle_stream(self, now: float, data: bytes) -> tuple[bytes | None, list[Effect]]:
        self._out = []
        reply: bytes | None = None
        try:
            parser = StreamParser(max_nodes=self.config.max_push_pull_nodes)
            parser.feed(data)
            msg = parser.finish()
        except DecodeError as exc:
            text = str(exc)
            self._violation("stream", text)
            if isinstance(exc, FramingError):
                # memberlist answers first-stage read failures with an err message.
                reply = self._encode_stream(Err(text))
            return reply, self._finish()
        if msg is not None:
            self._count_in(msg)
        if isinstance(msg, PushPull):
            # The responder answers first, then merges (memberlist handleConn).
            reply = self._encode_local_state(msg.join)
            err = self._merge_remote(now, msg)
            if err is not None:
                self._violation("stream", f"push/pull merge failed: {err}")
            else:
                self._push_pulls += 1
        elif isinstance(msg, Ping):
            if not msg.node or msg.node == self.name:
                reply = self._encode_stream(Ack(msg.seq_no, None))
        elif isinstance(msg, UserMsg):
            self._delegate.notify_msg(now, msg.payload)
        else:
            self._violation("stream", f"{type(msg).__name__} is not a valid stream request")
        return reply, self._finish()

    # ------------------------------------------------------------------ commands

    def leave(self, now: float, timeout: float) -> list[Effect]:
        """Broadcast dead{From: us}; ``LeaveDone`` once it was sent its last time (memberlist
        notifies when the queue retires the broadcast), at once if nobody else is alive, or
        ``LeaveDone(timed_out=True)`` after ``timeout`` seconds (``timeout <= 0``: no limit)."""
        self._out = []
        if self._leaving:
            if self._leave_done:
                self._out.append(LeaveDone(False))
            return self._finish()
        self._leaving = True
        self._on_dead(now, Dead(self._me.incarnation, self.name, self.name))
        others = self.num_alive()  # we are left now, so this counts only other nodes
        if others == 0:
            self._leave_finished(timed_out=False)
        elif timeout > 0:
            self._set_timer("leave", 0, now + timeout)
        return self._finish()

    def _leave_finished(self, *, timed_out: bool) -> None:
        if self._leave_done:
            return
        self._leave_done = True
        self._cancel_timer("leave", 0)
        self._out.append(LeaveDone(timed_out))

    def user_packet(self, addr: Address, payload: bytes) -> SendPacket:
        """A bare user-message datagram (``08`` + ``payload``) to ``addr`` (memberlist
        ``SendToAddress``): no compound, LZW only if shorter, no CRC (the destination is
        addressed by IP, not by a known node name).  The caller emits the effect."""
        return self._packet(addr, [encode_message(UserMsg(payload))], crc=False)

    def update_meta(self, now: float) -> list[Effect]:
        """Re-read the delegate's metadata, bump our incarnation and broadcast alive."""
        self._out = []
        me = self._me
        old = me.meta
        me.meta = self._delegate.node_meta(META_MAX_SIZE)[:META_MAX_SIZE]
        me.incarnation += 1
        self._queue_broadcast(self.name, self._alive_msg())
        if me.meta != old:
            self._event(MemberEventKind.UPDATE, me)
        return self._finish()


__all__ = ["Memberlist", "SwimStats"]
