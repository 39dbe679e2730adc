"""Encryption at the protocol level, on the pure test kit: the packet pump (``SerfPump``, zero
latency, FIFO) and the discrete-event simulator (modelled latency and loss), every node's
traffic sealed and opened by its own ``wire.crypto.Envelope`` with the real transport's rules.

What this file owns:

* an encrypted cluster works (Serf and bare memberlist cores, secretbox and AES-128): it
  forms, passes user events and queries, and nothing crosses the wire in the clear;
* keyring operations through the cluster (Serf's KeyManager: ``_serf_*-key`` queries gathered
  into a ``KeyReport``) on the pump and in the simulator: a key rotation under packet loss
  that fails nobody, a restarted node keeping its keyring, and a keyring write that fails
  answered with Serf's "Failed to write keyring file" text;
* who may not talk: a node with a wrong key, a plaintext node against an encrypted cluster,
  the reverse, and a keyed node that does not seal cannot join (refused streams are answered
  with memberlist's err message); a node that loses the cluster key is declared failed (the
  control showing the "nobody failed" assertions can fail);
* live migrations one node at a time (memberlist's documented procedure): secretbox ->
  aes-gcm, and plaintext -> encrypted through GossipVerifyOutgoing then GossipVerifyIncoming,
  with no member failed and every packet sealed at the end; the wrong order isolates a node;
* budgets: under a large backlog every sealed datagram is its plaintext plus the cipher's
  overhead and no larger than a plaintext one may be (the overhead comes off the packet
  budget, memberlist encryptOverhead).  The strict bound (never past UDPBufferSize) is an
  expected failure: memberlist's own CRC header and compound framing overshoot it by up to
  5 bytes, sealed or not (see ``test_sealed_datagrams_never_exceed_the_udp_buffer``).

Every run is seeded (nonces included: ``SerfPump.envelope`` / ``Simulator.envelope``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from serf_trio.serf.config import SerfConfig
from serf_trio.serf.internal import KeyReport
from serf_trio.serf.query import QueryParam
from serf_trio.testing.netmodel import LinkProfile
from serf_trio.testing.pump import SWIM, SerfPump, SwimPump
from serf_trio.testing.sim import SimQuery, Simulator, serf_factory
from serf_trio.wire.crypto import (
    AES_GCM_V1,
    NO_KEY_OPENED,
    OVERHEAD,
    PLAINTEXT_REFUSED,
    SECRETBOX_V1,
    Algorithm,
    Envelope,
)
from serf_trio.wire.keyring import Keyring, encode_key
from serf_trio.wire.messages import MessageType
from serf_trio.wire.packet import COMPOUND_PART_OVERHEAD, CRC_HEADER_LEN
from serf_trio.wire.stream import ENCRYPTED_BUT_NOT_CONFIGURED

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
WRONG = bytes(range(64, 96))
NAMES = ("a", "b", "c", "d", "e")
FAILURE_KINDS = {"member-failed", "member-leave", "member-reap"}


# ---------------------------------------------------------------------------------------------
# helpers


def pump_cluster(
    seed: int,
    envelope: Callable[[SerfPump], Envelope | None],
    names: tuple[str, ...] = NAMES,
) -> SerfPump:
    """``names`` Serf nodes, each with ``envelope(pump)``, all joined through the first."""
    p = SerfPump(seed=seed)
    for n in names:
        p.add(n, {"role": n}, envelope=envelope(p))
    for n in names[1:]:
        p.join(n, names[0])
    p.run_for(5.0)
    for n in names:
        assert p.statuses(n) == dict.fromkeys(names, "alive"), n
    return p


def sim_cluster(
    seed: int,
    keys: list[bytes] | None,
    *,
    loss: float,
    verify_incoming: bool = True,
    verify_outgoing: bool = True,
) -> Simulator:
    """Five Serf nodes in the simulator, each with an envelope over ``keys`` (None: no
    keyring yet), joined through n0 and converged."""
    sim = Simulator(seed, serf=SerfConfig(), link=LinkProfile(loss=loss))
    sim.add_nodes(
        5,
        envelope=lambda: sim.envelope(
            keys, verify_incoming=verify_incoming, verify_outgoing=verify_outgoing
        ),
    )
    for i in range(1, 5):
        sim.join(f"n{i}", ["n0"])
    assert sim.run_until_condition(Simulator.all_serf_alive_converged, 60.0, step=0.5) is not None
    return sim


def pump_keys(p: SerfPump, name: str) -> tuple[bytes, ...]:
    """``name``'s keyring on the pump, primary first."""
    keyring = p.seals[name].envelope.keyring
    assert keyring is not None
    return keyring.keys


def envelope_of(sim: Simulator, name: str) -> Envelope:
    wire = sim.nodes[name].wire
    assert wire is not None
    return wire.envelope


def assert_nobody_failed(sim: Simulator) -> None:
    """No node was ever declared dead, no Serf member ever failed, left or was reaped, and
    every node has every node alive now."""
    assert sim.dead_declarations == []
    assert [r for r in sim.serf_member_events if r.kind in FAILURE_KINDS] == []
    assert sim.all_serf_alive_converged()


def finished(q: SimQuery) -> Callable[[Simulator], bool]:
    """A ``run_until_condition`` predicate: ``q``'s collector has closed."""
    return lambda _sim: q.done_at is not None


def sim_key_operation(sim: Simulator, node: str, op: str, key: bytes = b"") -> KeyReport:
    """One key operation, repeated until every node reports success, as an operator repeats
    ``serf keys``: the operations are idempotent, and under loss a response (one direct
    datagram per node) can be lost.  At most 3 attempts."""
    report = KeyReport(0)
    for _ in range(3):
        q = sim.key_operation(node, op, key)
        assert sim.run_until_condition(finished(q), sim.now + 30.0) is not None
        report = q.key_report()
        if report.error == "":
            return report
    raise AssertionError(f"{op}: {report}")


def sent_since(sim: Simulator, before: dict[str, Counter[str]]) -> Counter[str]:
    """Datagrams sent by cipher since the ``before`` snapshot (see ``snapshot``)."""
    total: Counter[str] = Counter()
    for name, node in sim.nodes.items():
        assert node.wire is not None
        total.update(node.wire.sent - before[name])
    return total


def snapshot(sim: Simulator, what: str) -> dict[str, Counter[str]]:
    """A copy of every node's ``WireSeal`` counter ``what`` (``sent``, ``opened``, ...)."""
    out: dict[str, Counter[str]] = {}
    for name, node in sim.nodes.items():
        assert node.wire is not None
        out[name] = Counter(getattr(node.wire, what))
    return out


# ---------------------------------------------------------------------------------------------
# an encrypted cluster works


def test_secretbox_cluster_forms_passes_events_and_queries_sealed() -> None:
    """Five secretbox nodes: the cluster forms, a user event reaches every node exactly once,
    a query is answered by all five; every datagram on the wire is a secretbox frame (first
    byte 0x53) that does not contain the event's payload, and nothing was refused."""
    p = pump_cluster(2, lambda p: p.envelope([K1]))
    p.feed("c", p.by_name["c"].user_event(p.now, "deploy", b"top-secret-v1", False))
    p.run_for(10.0)
    for n in NAMES:
        assert [(u.name, u.payload) for u in p.logs[n].users] == [("deploy", b"top-secret-v1")]

    p.auto_respond = {n: f"pong-{n}".encode() for n in NAMES}
    qid, effs = p.by_name["a"].query(p.now, QueryParam("who", b"", timeout=5.0))
    p.feed("a", effs)
    p.run_for(10.0)
    got = {
        u.from_: u.payload
        for u in p.logs["a"].updates
        if u.query_id == qid and u.record_type == "response"
    }
    assert got == {n: f"pong-{n}".encode() for n in NAMES}

    assert len(p.wire) == len(p.sent) > 100
    assert {w[0] for _, w in p.wire} == {SECRETBOX_V1}
    assert not any(b"top-secret-v1" in w or b"pong-" in w for _, w in p.wire)
    for n, seal in p.seals.items():
        assert set(seal.sent) == {"secretbox"} and set(seal.opened) == {"secretbox"}, n
        assert not seal.dropped, n


def test_memberlist_nodes_with_an_aes128_key_converge_sealed() -> None:
    """Bare memberlist cores (``SwimPump``) with a 16-byte key, which only aes-gcm can use
    (AES-128): three nodes converge and every datagram is a version 1 AES-GCM frame."""
    key = bytes(range(16))
    p = SwimPump(seed=8)
    for n in "abc":
        p.add(n, envelope=p.envelope([key], Algorithm.AES_GCM))
    p.join("b", "a")
    p.join("c", "a")
    p.run_for(10.0)
    for n in "abc":
        assert p.states(n) == dict.fromkeys("abc", "ALIVE"), n
    assert p.wire and {w[0] for _, w in p.wire} == {AES_GCM_V1}
    assert all(set(s.opened) == {"aes-gcm"} and not s.dropped for s in p.seals.values())


# ---------------------------------------------------------------------------------------------
# keyring operations through the cluster


def test_key_operations_through_the_pump_report_every_node() -> None:
    """install, use, remove and list run from different nodes, each gathered into a
    ``KeyReport`` over all five nodes; the keyrings change everywhere as Serf's do, and a
    refused operation (removing the primary key) reports memberlist's text from every node."""
    p = pump_cluster(3, lambda p: p.envelope([K1]))
    report = p.key_operation("a", "install", K2)
    assert (report.num_nodes, report.num_resp, report.error) == (5, 5, "")
    assert all(pump_keys(p, n) == (K1, K2) for n in NAMES)

    report = p.key_operation("b", "remove", K1)
    assert report.error == "5/5 nodes reported failure"
    assert set(report.messages.values()) == {"Removing the primary key is not allowed"}

    assert p.key_operation("c", "use", K2).error == ""
    assert p.key_operation("d", "remove", K1).error == ""
    listed = p.key_operation("e", "list")
    assert listed.error == ""
    assert listed.keys == {encode_key(K2): 5} and listed.primary_keys == {encode_key(K2): 5}
    for n in NAMES:
        assert pump_keys(p, n) == (K2,), n
        assert [k.op for k in p.logs[n].keyrings] == ["install", "use", "remove"], n
    assert all(p.statuses(n) == dict.fromkeys(NAMES, "alive") for n in NAMES)


def test_a_failed_keyring_write_is_answered_with_serfs_text() -> None:
    """Nodes that persist their keyring answer only after the write; node c's write fails:
    it answers Result false with "Failed to write keyring file: ..." (serf
    internal_query.go), the others succeed, and the writer saw every node's new keyring."""
    writes: list[tuple[str, tuple[bytes, ...]]] = []

    def writer(node: str, keys: tuple[bytes, ...]) -> None:
        writes.append((node, keys))
        if node == "c":
            raise OSError("read-only file system")

    p = SerfPump(seed=4)
    p.keyring_writer = writer
    for n in NAMES:
        p.add(n, envelope=p.envelope([K1]), persist_keyring=True)
    for n in NAMES[1:]:
        p.join(n, "a")
    p.run_for(5.0)
    report = p.key_operation("a", "install", K2)
    assert report.num_resp == 5 and report.error == "1/5 nodes reported failure"
    assert report.messages == {"c": "Failed to write keyring file: read-only file system"}
    assert sorted(writes) == [(n, (K1, K2)) for n in NAMES]
    assert all(k.token is not None for n in NAMES for k in p.logs[n].keyrings)


@pytest.mark.parametrize("seed", [11, 12])
def test_key_rotation_under_loss_fails_nobody(seed: int) -> None:
    """install K2 -> use K2 -> remove K1 from different nodes, 5% datagram loss both ways: each
    step reports success from all five nodes (repeated if a response was lost), every keyring
    ends as exactly [K2], and no member was ever declared dead or failed meanwhile.

    The order is what keeps everyone talking: K2 is installed everywhere before anyone sends
    with it, and K1 leaves only once nobody sends with it any more.
    """
    sim = sim_cluster(seed, [K1], loss=0.05)
    for node, op, key in (("n1", "install", K2), ("n2", "use", K2), ("n3", "remove", K1)):
        report = sim_key_operation(sim, node, op, key)
        assert (report.num_nodes, report.num_resp, report.num_err) == (5, 5, 0), op
        sim.run_for(20.0)  # more than a suspicion timeout: a broken step would show
    listed = sim_key_operation(sim, "n4", "list")
    assert listed.keys == {encode_key(K2): 5}
    for name in sim.nodes:
        keyring = envelope_of(sim, name).keyring
        assert keyring is not None and keyring.keys == (K2,), name
    sim.run_for(30.0)
    assert_nobody_failed(sim)
    assert sim.statistics().packets_refused == 0


# ---------------------------------------------------------------------------------------------
# who may not talk


def test_a_node_with_a_wrong_key_cannot_join() -> None:
    """The intruder's push/pull does not open at the seed, which answers with memberlist's
    err sealed under the cluster key; the intruder cannot open that either, so its join fails
    with "No installed keys could decrypt the message", and nobody ever lists it."""
    p = pump_cluster(5, lambda p: p.envelope([K1]), names=("a", "b", "c"))
    p.add("x", envelope=p.envelope([WRONG]))
    p.join("x", "a")
    p.run_for(30.0)
    (done,) = p.logs["x"].joins
    assert done.joined == 0 and NO_KEY_OPENED in done.errors[0]
    for n in "abc":
        assert "x" not in p.statuses(n), n
    assert p.statuses("x") == {"x": "alive"}
    assert p.seals["a"].dropped["undecryptable"] >= 1  # the refused join stream
    assert p.seals["x"].dropped["undecryptable"] >= 1  # the err it could not read


@pytest.mark.parametrize(
    ("cluster_keys", "joiner_keys", "joiner_seals", "error"),
    [
        # the seed refuses plaintext and answers err sealed; the joiner's core cannot read it
        ([K1], None, True, ENCRYPTED_BUT_NOT_CONFIGURED),
        # the seed's core answers err in plaintext; the joiner's envelope refuses it
        (None, [K1], True, f"bad reply from 127.0.0.1:7001: {PLAINTEXT_REFUSED}"),
        # the joiner has the key but sends plaintext: it reads the seed's sealed err
        ([K1], [K1], False, f"remote error: {PLAINTEXT_REFUSED}"),
    ],
    ids=["plaintext-node", "plaintext-cluster", "node-not-sealing"],
)
def test_plaintext_and_encrypted_nodes_cannot_join_each_other(
    cluster_keys: list[bytes] | None,
    joiner_keys: list[bytes] | None,
    joiner_seals: bool,
    error: str,
) -> None:
    """A stream the receiver's envelope refuses is answered with memberlist's err message
    (net.go handleConn), sealed by the receiver: a node without a keyring cannot join an
    encrypted cluster ("Remote state is encrypted and encryption is not configured"), a node
    verifying incoming traffic cannot join a plaintext one, and a node holding the key but
    not sealing (GossipVerifyOutgoing off) is told "Encryption is configured but remote state
    is not encrypted" by a seed that verifies incoming traffic.  Nobody lists the joiner."""

    def env(p: SerfPump, keys: list[bytes] | None, seals: bool = True) -> Envelope | None:
        return p.envelope(keys, verify_outgoing=seals) if keys is not None else None

    p = pump_cluster(6, lambda p: env(p, cluster_keys), names=("a", "b"))
    p.add("x", envelope=env(p, joiner_keys, joiner_seals))
    p.join("x", "a")
    p.run_for(30.0)
    (done,) = p.logs["x"].joins
    assert done.joined == 0 and error in done.errors[0], done.errors
    assert "x" not in p.statuses("a") and "x" not in p.statuses("b")


def test_a_node_that_loses_the_cluster_key_is_declared_failed() -> None:
    """The control for every "nobody failed" assertion here: n4's keyring is replaced by one
    without K1 (a wrong keyring file), so nothing it sends opens anywhere and nothing reaches
    it; the others declare it failed within a minute, and its packets are counted refused."""
    sim = sim_cluster(21, [K1], loss=0.0)
    envelope_of(sim, "n4").keyring = Keyring([WRONG])
    sim.run_for(60.0)
    for name in ("n0", "n1", "n2", "n3"):
        assert sim.serf_view(name)["n4"] == "failed", name
    stats = sim.statistics()
    assert stats.packets_refused > 0 and stats.streams_refused > 0


def test_a_restarted_node_keeps_its_keyring() -> None:
    """After a rotation to K2, n4 crashes and restarts (a fresh core, as an agent restarting
    with its keyring file): it comes back with [K2], rejoins through n0 and the cluster
    converges; had it come back without its envelope it could not join."""
    sim = sim_cluster(22, [K1], loss=0.0)
    for op, key in (("install", K2), ("use", K2), ("remove", K1)):
        sim_key_operation(sim, "n0", op, key)
    sim.crash("n4")
    sim.run_for(30.0)
    sim.restart("n4", ["n0"])
    assert sim.run_until_condition(Simulator.all_serf_alive_converged, sim.now + 30.0)
    assert [r.joined for r in sim.join_results["n4"]][-1] == 1
    keyring = envelope_of(sim, "n4").keyring
    assert keyring is not None and keyring.keys == (K2,)


def test_simulated_keyring_writes_answer_key_queries() -> None:
    """Serf cores built to persist their keyring answer only once the simulator's
    ``keyring_writer`` has run; a write that raises is answered Result false with Serf's
    "Failed to write keyring file" text, and the rest succeed."""
    writes: list[tuple[str, tuple[bytes, ...]]] = []

    def writer(node: str, keys: tuple[bytes, ...]) -> None:
        writes.append((node, keys))
        if node == "n2":
            raise PermissionError("keyring file is read-only")

    sim = Simulator(
        23, core_factory=serf_factory(SerfConfig(), persist_keyring=True), keyring_writer=writer
    )
    sim.add_nodes(3, envelope=lambda: sim.envelope([K1]))
    for i in (1, 2):
        sim.join(f"n{i}", ["n0"])
    assert sim.run_until_condition(Simulator.all_serf_alive_converged, 30.0) is not None
    q = sim.key_operation("n1", "install", K2)
    assert sim.run_until_condition(finished(q), sim.now + 30.0) is not None
    report = q.key_report()
    assert sorted(writes) == [(n, (K1, K2)) for n in ("n0", "n1", "n2")]
    assert report.messages == {"n2": "Failed to write keyring file: keyring file is read-only"}
    assert report.error == "1/3 nodes reported failure"


# ---------------------------------------------------------------------------------------------
# live migrations, one node at a time


def test_cipher_change_node_by_node_fails_nobody() -> None:
    """secretbox -> aes-gcm one node every 15 s under 2% loss.  A node opens either cipher
    under any key, so a mixed cluster keeps talking; no member fails, and in the end every
    datagram is aes-gcm (memberlist's version 1 frame) and nothing is opened as secretbox."""
    sim = sim_cluster(31, [K1], loss=0.02)
    for name in sim.nodes:
        envelope_of(sim, name).algorithm = Algorithm.AES_GCM
        sim.run_for(15.0)
    mixed = snapshot(sim, "opened")
    assert sum(c["secretbox"] for c in mixed.values()) > 0  # both ciphers were in the air
    assert sum(c["aes-gcm"] for c in mixed.values()) > 0
    sent, opened = snapshot(sim, "sent"), snapshot(sim, "opened")
    sim.run_for(30.0)
    assert set(sent_since(sim, sent)) == {"aes-gcm"}
    for name, node in sim.nodes.items():
        assert node.wire is not None
        assert set(node.wire.opened - opened[name]) == {"aes-gcm"}, name
    assert_nobody_failed(sim)


def test_plaintext_to_encrypted_on_a_live_cluster_fails_nobody() -> None:
    """memberlist's procedure for turning encryption on without downtime, on five running
    plaintext nodes under 2% loss: every node gets the key with GossipVerifyIncoming and
    GossipVerifyOutgoing off (it still sends plaintext and takes plaintext), then outgoing on
    one node at a time (it seals; everyone already opens sealed frames), then incoming on one
    node at a time (nobody sends plaintext any more).  No member fails, and at the end every
    datagram is sealed and nothing is opened as plaintext."""
    sim = sim_cluster(41, None, loss=0.02, verify_incoming=False, verify_outgoing=False)
    envs = [envelope_of(sim, name) for name in sim.nodes]
    for env in envs:
        env.keyring = Keyring([K1])
        sim.run_for(5.0)
    assert set(sent_since(sim, {n: Counter() for n in sim.nodes})) == {"plaintext"}
    for env in envs:
        env.verify_outgoing = True
        sim.run_for(15.0)
    for env in envs:
        env.verify_incoming = True
        sim.run_for(15.0)
    sent, opened = snapshot(sim, "sent"), snapshot(sim, "opened")
    sim.run_for(30.0)
    assert set(sent_since(sim, sent)) == {"secretbox"}
    for name, node in sim.nodes.items():
        assert node.wire is not None
        assert set(node.wire.opened - opened[name]) == {"secretbox"}, name
    assert_nobody_failed(sim)
    assert sim.statistics().packets_refused == 0


def test_verifying_incoming_before_everyone_seals_isolates_the_node() -> None:
    """The control for the procedure: n0 turns GossipVerifyIncoming on while the others still
    send plaintext, so it refuses everything they send (pings, acks, refutations, push/pull
    replies): every other node declares it failed, and it declares every other node failed.
    (What it sends still opens elsewhere, so a later push/pull of its own can revive it in
    their views for a while: a half-open node flaps, it does not heal.)"""
    sim = sim_cluster(42, [K1], loss=0.0, verify_incoming=False, verify_outgoing=False)
    envelope_of(sim, "n0").verify_incoming = True
    sim.run_for(60.0)
    failed = {(r.node, r.member) for r in sim.serf_member_events if r.kind == "member-failed"}
    others = ("n1", "n2", "n3", "n4")
    assert {(name, "n0") for name in others} <= failed
    assert {("n0", name) for name in others} <= failed
    wire = sim.nodes["n0"].wire
    assert wire is not None and wire.dropped["plaintext"] > 0


# ---------------------------------------------------------------------------------------------
# budgets


def backlog(p: SerfPump, seed: int) -> None:
    """80 user events of 50-480 bytes from all five nodes and a 100-400 byte tag on each:
    far more than one packet's worth of broadcasts at once."""
    rng = random.Random(seed)
    for i in range(80):
        n = NAMES[i % len(NAMES)]
        payload = rng.randbytes(rng.randrange(50, 480))
        p.feed(n, p.by_name[n].user_event(p.now, f"ev{i}", payload, False))
    for n in NAMES:
        p.feed(n, p.by_name[n].set_tags(p.now, {"role": n, "blob": "x" * rng.randrange(100, 400)}))
    p.run_for(60.0)
    for n in NAMES:
        assert len(p.logs[n].users) == 80, n


def memberlist_allowance(plain: bytes) -> int:
    """What memberlist itself may add past UDPBufferSize to a full packet (sealing aside): the
    CRC header of a gossip packet to a protocol-5 peer (rawSendMsgPacket adds it after the
    packet was filled), or the first part's length of a sendMsg compound (its budget leaves
    out that part's own length).  serf-trio keeps this memberlist behaviour (at most 1,405
    bytes with the default 1,400, well inside a 1,500-byte MTU's 1,472-byte payload)."""
    if plain[0] == MessageType.HAS_CRC:
        return CRC_HEADER_LEN
    if plain[0] == MessageType.COMPOUND:
        return COMPOUND_PART_OVERHEAD
    return 0


@pytest.mark.parametrize("algorithm", [Algorithm.SECRETBOX, Algorithm.AES_GCM])
def test_sealing_overhead_comes_off_the_packet_budget(algorithm: Algorithm) -> None:
    """Under a backlog of user events and tag updates every sealed datagram is its plaintext
    plus exactly the cipher's overhead (29 aes-gcm, 41 secretbox), and fits the UDP buffer as
    a plaintext packet does: the core packs ``overhead`` bytes less (memberlist
    encryptOverhead), so sealing never pushes a packet past UDPBufferSize + what memberlist's
    own framing adds.  The largest datagram comes within 50 bytes of the limit: the backlog
    did fill packets."""
    limit = SWIM.udp_buffer_size
    p = pump_cluster(7, lambda p: p.envelope([K1], algorithm))
    backlog(p, seed=7)
    assert len(p.wire) == len(p.sent)
    largest = 0
    for (_, packet), (_, sealed) in zip(p.sent, p.wire, strict=True):
        assert sealed[0] == (SECRETBOX_V1 if algorithm is Algorithm.SECRETBOX else AES_GCM_V1)
        assert len(sealed) == len(packet.data) + OVERHEAD[algorithm]
        assert len(sealed) <= limit + memberlist_allowance(packet.data), len(sealed)
        largest = max(largest, len(sealed))
    assert largest > limit - 50
