"""Gossip encryption end to end on real ``serf-trio agent`` processes (127.0.0.1, LAN profile):
a secretbox cluster passing events and queries, key rotation with ``serf-trio keys``, the
``--remove`` safety check, a wrong key refused at join, the keyring file, the plaintext ->
encrypted procedure on a live cluster (config edit + SIGHUP node by node), and ``keys`` on an
unencrypted cluster.

The clusters run the LAN profile: key operations are internal queries, and the local
profile's RetransmitMult of 2 lets a query miss a node about once in twenty in a 5-node
cluster (see ``test_serf_layer.five``).  Even on the LAN profile a query misses a member about
once in a few hundred, as the real agent's do, so key operations go through
``conftest.rerun_key_op`` (they are idempotent).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from serf_trio.wire.codec import encode_message
from serf_trio.wire.crypto import NO_KEY_OPENED
from serf_trio.wire.keyring import REMOVE_PRIMARY
from serf_trio.wire.messages import Ping

from .conftest import (
    HOST,
    KEY_OP_ATTEMPTS,
    WAIT,
    Agent,
    Cluster,
    rerun_key_op,
    wait_each,
    wait_for,
)

pytestmark = [pytest.mark.realnet, pytest.mark.timeout(180)]

NAMES = ("n1", "n2", "n3", "n4", "n5")
KEY_ROW = re.compile(r"^(\S+)\s+installed on (\d+) of (\d+) members$")
KEYRING_EMPTY = "Keyring is empty (encryption not enabled)"


def new_key() -> str:
    """A fresh 32-byte key in base64 (what ``serf-trio keygen`` prints)."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


# -- helpers ----------------------------------------------------------------------------------


def cluster_keys(agent: Agent, n: int) -> dict[str, int]:
    """The keys every member reported (key -> members holding it); asserts that all ``n``
    members answered without error."""
    resp = agent.list_keys()
    assert (resp.num_nodes, resp.num_resp, resp.num_err, resp.error) == (n, n, 0, ""), resp
    return dict(resp.keys or {})


def the_key(agent: Agent, n: int) -> str:
    """The one key installed on all ``n`` members (the cluster's state between tests)."""
    keys = cluster_keys(agent, n)
    assert len(keys) == 1 and next(iter(keys.values())) == n, keys
    return next(iter(keys))


def key_rows(stdout: str) -> dict[str, tuple[int, int]]:
    """``keys --list`` rows: key -> (installed on, members)."""
    out = {}
    for line in stdout.splitlines():
        m = KEY_ROW.match(line.strip())
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


def all_alive_everywhere(agents: Sequence[Agent]) -> None:
    """Every agent lists every other one alive right now (no wait: a check, not a converge)."""
    want = {a.name: "alive" for a in agents}
    for a in agents:
        got = a.statuses()
        assert {n: got.get(n) for n in want} == want, f"{a.name} sees {got}"


def assert_never_failed(agents: Sequence[Agent]) -> None:
    """No agent ever marked a member failed: no member-failed handler run, no log line."""
    for a in agents:
        assert not [f for f in a.handler_lines() if f[1] == "member-failed"], a.name
        assert not a.logs_with("member_failed"), (a.name, a.logs_with("member_failed"))
        assert not a.logs_with("declared_dead"), (a.name, a.logs_with("declared_dead"))


def keys_cli(agent: Agent, *args: str) -> subprocess.CompletedProcess[str]:
    """``serf-trio keys ARGS`` through ``agent``, run again if some member did not answer."""
    return rerun_key_op(functools.partial(agent.cli, "keys", *args))


def keys_cli_ok(agent: Agent, *args: str, says: str) -> None:
    """``serf-trio keys ARGS`` succeeded on every member and printed ``says``."""
    proc = keys_cli(agent, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert says in proc.stdout, proc.stdout


def keys_cli_refused_by(
    agent: Agent, *args: str, n: int
) -> tuple[list[tuple[str, str]], subprocess.CompletedProcess[str]]:
    """``serf-trio keys ARGS`` that every one of ``n`` members refuses: the ``(member,
    message)`` of its ``failed:`` lines and the run, again while fewer than ``n`` answered."""
    for _ in range(KEY_OP_ATTEMPTS):
        proc = agent.cli("keys", *args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        failed = re.findall(r"^failed:\s+(\S+)\s+(.*)$", proc.stdout, re.M)
        if len(failed) >= n:
            break
    assert f"{n}/{n} nodes reported failure" in proc.stderr, proc.stdout + proc.stderr
    return sorted(failed), proc


def plaintext_ping(port: int) -> None:
    """One plaintext memberlist ping datagram from a throwaway UDP socket."""
    packet = encode_message(Ping(seq_no=4242, node="", source_node="probe"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(packet, (HOST, port))


# -- a secretbox cluster with keyring files ---------------------------------------------------


@dataclass
class Encrypted:
    """Five serf-trio agents on secretbox, each with its own keyring file (``dir/NAME.keyring``,
    Serf's format), n2..n5 started with ``--join n1``."""

    cluster: Cluster
    agents: list[Agent]

    def keyring_file(self, name: str) -> Path:
        return self.cluster.dir / f"{name}.keyring"


@pytest.fixture(scope="module")
def enc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Encrypted]:
    c = Cluster(tmp_path_factory.mktemp("enc"))
    key = new_key()
    try:
        agents: list[Agent] = []
        for name in NAMES:
            path = c.dir / f"{name}.keyring"
            path.write_text(json.dumps([key]))
            path.chmod(0o600)
            join = agents[:1]
            agents.append(c.trio(name, f"--keyring-file={path}", join=join, profile=None))
        c.all_alive(agents)
        yield Encrypted(c, agents)
    finally:
        c.close()


def test_secretbox_cluster_passes_events_and_queries(enc: Encrypted) -> None:
    agents = enc.agents
    for a in agents:
        crypto = a.encryption()
        assert (crypto["encrypted"], crypto["algorithm"], crypto["keys"]) == (
            "true",
            "secretbox",
            "1",
        )
    proc = agents[1].cli("event", "--no-coalesce", "enc-event", "sealed")
    assert proc.returncode == 0, proc.stderr
    wait_each(agents, lambda a: a.user_events("enc-event"), "the enc-event handler")
    everyone = {n: f"answer-from-{n}" for n in NAMES}
    # A query reaches each member by gossip and may miss one now and then, as Serf's does
    # (conftest.rerun_key_op): ask again under a new name.
    for attempt in range(KEY_OP_ATTEMPTS):
        query = f"enc-query-{attempt}"
        proc = agents[3].cli("query", query, "q", "--format", "json", "--timeout", "2s")
        assert proc.returncode == 0, proc.stderr
        responses = json.loads(proc.stdout)["Responses"]
        if responses == everyone:
            break
    assert responses == everyone
    for a in agents:
        assert len(a.user_events("enc-event")) == 1 and len(a.queries(query)) == 1, a.name
        crypto = a.encryption()
        # Everything arrived sealed with secretbox; nothing was refused.
        assert int(crypto["received_secretbox"]) > 0, crypto
        assert crypto["received_plaintext"] == crypto["received_aes_gcm"] == "0", crypto
        assert all(crypto[f"dropped_{c}"] == "0" for c in ("plaintext", "undecryptable")), crypto
    all_alive_everywhere(agents)


def test_key_rotation_reaches_every_member(enc: Encrypted) -> None:
    agents = enc.agents
    n1, n3 = agents[0], agents[2]
    old, new = the_key(n1, 5), new_key()
    all_alive_everywhere(agents)

    keys_cli_ok(n1, "--install", new, says="Successfully installed key!")
    assert cluster_keys(n3, 5) == {old: 5, new: 5}
    assert {a.name: a.encryption()["keys"] for a in agents} == dict.fromkeys(NAMES, "2")
    all_alive_everywhere(agents)

    keys_cli_ok(n3, "--use", new, says="Successfully changed primary key!")
    assert cluster_keys(n1, 5) == {old: 5, new: 5}
    all_alive_everywhere(agents)
    # Gossip sealed with the new primary still reaches everyone.
    assert agents[4].cli("event", "--no-coalesce", "after-use").returncode == 0
    wait_each(agents, lambda a: a.user_events("after-use"), "the after-use handler")

    keys_cli_ok(n1, "--remove", old, says="Successfully removed key!")
    proc = keys_cli(n1, "--list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert key_rows(proc.stdout) == {new: (5, 5)}, proc.stdout
    assert {a.name: a.encryption()["keys"] for a in agents} == dict.fromkeys(NAMES, "1")
    all_alive_everywhere(agents)

    # Nothing sealed with the removed key is left in flight, and the cluster still works.
    assert agents[1].cli("event", "--no-coalesce", "after-remove").returncode == 0
    wait_each(agents, lambda a: a.user_events("after-remove"), "the after-remove handler")
    for a in agents:
        crypto = a.encryption()
        assert crypto["dropped_undecryptable"] == "0", (a.name, crypto)
    all_alive_everywhere(agents)
    assert_never_failed(agents)


def test_removing_the_only_key_is_refused(enc: Encrypted) -> None:
    n2 = enc.agents[1]
    key = the_key(n2, 5)
    proc = keys_cli(n2, "--remove", key)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"Refusing to remove {key}: no other key is installed on every alive member." in (
        proc.stdout
    )
    assert f"{key}  installed on 5 of 5 members" in proc.stdout
    assert "==> Removing key..." not in proc.stdout  # the agents were never asked
    assert f"Error removing key: {key} may still be needed by some members" in proc.stderr

    # --force goes through to the agents, which refuse as memberlist does.
    refused, proc = keys_cli_refused_by(n2, "--remove", key, "--force", n=5)
    assert refused == [(n, REMOVE_PRIMARY) for n in NAMES]
    assert "==> Removing key..." in proc.stdout
    assert "Error removing key: 5/5 nodes reported failure" in proc.stderr
    assert the_key(n2, 5) == key  # nothing changed anywhere
    all_alive_everywhere(enc.agents)


def test_a_node_with_the_wrong_key_cannot_join(enc: Encrypted) -> None:
    n1 = enc.agents[0]
    # Nothing refused so far, so the first refusal below is logged (not rate-limited away).
    before = int(n1.encryption()["dropped_undecryptable"])
    assert before == 0
    intruder = enc.cluster.trio(
        "intruder", f"--encrypt={new_key()}", join=[n1], profile=None, ready=False
    )
    deadline = time.monotonic() + WAIT
    while intruder.alive():  # it exits by itself; meanwhile nobody may list it
        assert time.monotonic() < deadline, f"the intruder kept running\n{intruder.describe()}"
        for a in enc.agents:
            assert "intruder" not in a.statuses(), a.name
        time.sleep(0.05)  # polling interval
    # A failed start join is fatal (Serf), with a clean exit 1.
    assert intruder.proc.wait(timeout=20) == 1, intruder.describe()
    failed = intruder.logs_with("start_join_failed")
    assert len(failed) == 1, intruder.describe()
    (error,) = failed[0]["errors"]
    assert n1.addr in error and NO_KEY_OPENED in error, error
    # The reply n1 sealed with its key is logged as refused, naming n1 as the source.
    rejected = intruder.logs_with("stream_rejected")
    assert [(r["reason"], r["src"]) for r in rejected] == [("undecryptable", n1.addr)], rejected
    # n1 refused the intruder's push/pull and says where it came from.
    refused = [r for r in n1.logs_with("stream_rejected") if r["reason"] == "undecryptable"]
    assert refused and all(r["src"].startswith(f"{HOST}:") for r in refused), refused
    assert int(n1.encryption()["dropped_undecryptable"]) > 0
    for a in enc.agents:
        assert "intruder" not in a.statuses(), a.name
    all_alive_everywhere(enc.agents)


@pytest.mark.slow
def test_keyring_file_follows_rotation_and_restarts(enc: Encrypted) -> None:
    agents = enc.agents
    n1 = agents[0]
    old, new = the_key(n1, 5), new_key()

    def file_keys(name: str) -> list[str]:
        doc = json.loads(enc.keyring_file(name).read_text())
        assert isinstance(doc, list) and all(isinstance(k, str) for k in doc), doc
        return doc

    keys_cli_ok(n1, "--install", new, says="Successfully installed key!")
    keys_cli_ok(n1, "--use", new, says="Successfully changed primary key!")
    # Written before each member answered the key query: no waiting needed.
    for name in NAMES:
        assert file_keys(name) == [new, old], name  # primary first
        mode = stat.S_IMODE(enc.keyring_file(name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    keys_cli_ok(n1, "--remove", old, says="Successfully removed key!")
    for name in NAMES:
        assert file_keys(name) == [new], name
        assert not list(enc.cluster.dir.glob(f".{name}.keyring.*")), "a temp file was left"

    # n5 leaves, then starts again from the same command line: it reads the rotated file.
    n5 = agents[4]
    proc = n5.cli("leave")
    assert proc.returncode == 0, proc.stderr
    assert n5.proc.wait(timeout=20) == 0
    enc.cluster.converge(agents[:4], n5="left")
    n5 = agents[4] = enc.cluster.restart(n5)
    enc.cluster.all_alive(agents)
    assert n5.encryption()["keys"] == "1"
    proc = keys_cli(n5, "--list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert key_rows(proc.stdout) == {new: (5, 5)}, proc.stdout
    assert file_keys("n5") == [new]
    assert not n5.logs_with("stream_rejected") and not n5.logs_with("packet_dropped")
    assert_never_failed(agents)


# -- a plaintext cluster: keys on an unencrypted agent, then the live move to encryption -------


@dataclass
class Plain:
    """Five unencrypted serf-trio agents (p2..p5 --join p1), each reading ``dir/NAME.json``
    (SIGHUP re-reads it).  The procedure test, which encrypts them, runs last."""

    cluster: Cluster
    agents: list[Agent]

    def configure(self, agent: Agent, **keys: object) -> None:
        (self.cluster.dir / f"{agent.name}.json").write_text(json.dumps(keys))


PLAIN = ("p1", "p2", "p3", "p4", "p5")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plain]:
    c = Cluster(tmp_path_factory.mktemp("plain"))
    try:
        agents: list[Agent] = []
        for name in PLAIN:
            conf = c.dir / f"{name}.json"
            conf.write_text("{}")
            join = agents[:1]
            agents.append(c.trio(name, f"--config-file={conf}", join=join, profile=None))
        c.all_alive(agents)
        yield Plain(c, agents)
    finally:
        c.close()


def test_keys_on_an_unencrypted_cluster_answer_as_serf_does(plain: Plain) -> None:
    p1 = plain.agents[0]
    failed, proc = keys_cli_refused_by(p1, "--list", n=5)
    assert failed == [(n, KEYRING_EMPTY) for n in PLAIN]
    assert "Failed to gather member keys: 5/5 nodes reported failure" in proc.stderr
    resp = plain.agents[3].list_keys()
    assert (resp.num_nodes, resp.num_resp, resp.num_err) == (5, 5, 5)
    assert resp.messages == dict.fromkeys(PLAIN, KEYRING_EMPTY)
    assert not resp.keys
    assert p1.encryption()["encrypted"] == "false"
    assert p1.stats()["serf"]["encrypted"] == "false"


CAUSES = ("plaintext", "undecryptable", "malformed", "too_large")


def dropped(agent: Agent) -> dict[str, int]:
    crypto = agent.encryption()
    return {c: int(crypto[f"dropped_{c}"]) for c in CAUSES}


def _reload_each(
    plain: Plain, settings: dict[str, object], applied: dict[str, str], step: str
) -> None:
    """Write ``settings`` to each agent's config file and SIGHUP it, one node at a time, each
    waiting until its stats show ``applied``; after each node, every node still lists every
    other one alive and has refused nothing."""

    def done(agent: Agent) -> bool:
        crypto = agent.encryption()
        return all(crypto[k] == v for k, v in applied.items())

    for a in plain.agents:
        plain.configure(a, **settings)
        a.sighup()
        wait_for(functools.partial(done, a), f"{step}: {a.name} to apply {applied}")
        all_alive_everywhere(plain.agents)
        for b in plain.agents:
            assert not any(dropped(b).values()), (step, a.name, b.name, dropped(b))


def traffic_flows(agents: Sequence[Agent], received: str, step: str) -> None:
    """Every agent keeps receiving (probes, acks, gossip) as ``received`` (a cipher counter)
    and refuses nothing."""
    base = {a.name: int(a.encryption()[received]) for a in agents}
    wait_each(
        agents,
        lambda a: int(a.encryption()[received]) >= base[a.name] + 3,
        f"{step}: {received} to keep growing",
    )
    for a in agents:
        assert not any(dropped(a).values()), (step, a.name, dropped(a))


@pytest.mark.slow
def test_plaintext_to_encrypted_on_a_live_cluster(plain: Plain) -> None:
    agents = plain.agents
    key = new_key()
    p1 = agents[0]
    # Step 1: the key on, sending plaintext and accepting plaintext.
    step1 = {
        "encrypt_key": key,
        "encrypt_verify_incoming": False,
        "encrypt_verify_outgoing": False,
    }
    _reload_each(
        plain,
        step1,
        {"encrypted": "true", "verify_incoming": "false", "verify_outgoing": "false"},
        "step 1",
    )
    traffic_flows(agents, "received_plaintext", "step 1")
    # Step 2: send sealed (everyone can open it), still accept plaintext.
    _reload_each(
        plain,
        {**step1, "encrypt_verify_outgoing": True},
        {"verify_incoming": "false", "verify_outgoing": "true"},
        "step 2",
    )
    traffic_flows(agents, "received_secretbox", "step 2")
    # Still accepted: a plaintext ping is read as plaintext.
    before = p1.encryption()
    plaintext_ping(p1.port)
    wait_for(
        lambda: int(p1.encryption()["received_plaintext"]) > int(before["received_plaintext"]),
        "p1 to read a plaintext ping while verify_incoming is off",
    )
    # Step 3: refuse plaintext.
    _reload_each(
        plain,
        {**step1, "encrypt_verify_outgoing": True, "encrypt_verify_incoming": True},
        {"verify_incoming": "true", "verify_outgoing": "true"},
        "step 3",
    )
    # Nobody sends plaintext any more: it would be refused (and counted) now.
    traffic_flows(agents, "received_secretbox", "step 3")

    for a in agents:
        proc = a.cli("info", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        info = json.loads(proc.stdout)
        crypto = info["encryption"]
        assert (crypto["encrypted"], crypto["verify_incoming"], crypto["verify_outgoing"]) == (
            "true",
            "true",
            "true",
        ), (a.name, crypto)
        assert crypto["keys"] == "1" and crypto["algorithm"] == "secretbox", crypto
        assert info["serf"]["encrypted"] == "true"
        assert not a.logs_with("reload_failed"), a.name
        assert not a.logs_with("reload_needs_restart"), a.name
        # Each step applied without a restart warning about plaintext peers being cut off.
        assert not a.logs_with("encryption_enabled_verifying"), a.name

    # Plaintext is refused now: a plaintext ping is dropped, counted and logged as such.
    before = p1.encryption()
    plaintext_ping(p1.port)
    wait_for(lambda: dropped(p1)["plaintext"] == 1, "p1 to drop a plaintext ping")
    assert p1.encryption()["received_plaintext"] == before["received_plaintext"]
    (log,) = [r for r in p1.logs_with("packet_dropped") if r.get("reason") == "plaintext"]
    assert log["src"].startswith(f"{HOST}:"), log

    # The encrypted cluster still passes an event, and the key is everywhere.
    assert agents[2].cli("event", "--no-coalesce", "now-sealed").returncode == 0
    wait_each(agents, lambda a: a.user_events("now-sealed"), "the now-sealed handler")
    assert the_key(agents[4], 5) == key
    all_alive_everywhere(agents)
    for a in agents[1:]:
        assert not any(dropped(a).values()), (a.name, dropped(a))

    # Another key in the config of an encrypted node is not swapped in behind the cluster's
    # back (that would cut the node off): the reload says it kept the live keyring.
    plain.configure(p1, encrypt_key=new_key())
    p1.sighup()
    (ignored,) = wait_for(lambda: p1.logs_with("reload_keys_ignored"), "the reload warning")
    assert "serf-trio keys" in ignored["hint"]
    assert p1.encryption()["keys"] == "1" and the_key(p1, 5) == key
    all_alive_everywhere(agents)
    assert_never_failed(agents)
