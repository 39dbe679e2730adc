"""Encrypted interop: serf-trio (``--encrypt-algorithm aes-gcm``) and Debian's ``serf`` agent
(``-encrypt``) in one cluster with a 16- and a 32-byte key, key rotation driven from either
side's CLI, and a secretbox serf-trio node next to a real Serf cluster (which cannot read
secretbox: no join, no crash, and a log line saying what to change).

Clusters run the default LAN profile on both sides (key operations are internal queries).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from serf_trio.runtime.crypto import AES_GCM_HINT

from .conftest import WAIT, Agent, Cluster, need_serf, rerun_key_op, wait_each, wait_for

pytestmark = [pytest.mark.realnet, pytest.mark.interop, pytest.mark.timeout(180)]

KEY_ROW = re.compile(r"^(\S+)\s+installed on (\d+) of (\d+) members$")
SERF_KEY_ROW = re.compile(r"^(\S+)\s+\[(\d+)/(\d+)\]$")
GO_CRYPTO_ERRORS = ("Decrypt packet failed", "failed to receive", "No installed keys")


def new_key(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode("ascii")


def serf_keys(agent: Agent, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``serf keys ARGS`` against ``agent``, again if some member did not answer."""
    return rerun_key_op(functools.partial(agent.serf_cli, "keys", *args))


def trio_keys(agent: Agent, *args: str) -> subprocess.CompletedProcess[str]:
    """``serf-trio keys ARGS`` against ``agent``, again if some member did not answer."""
    return rerun_key_op(functools.partial(agent.cli, "keys", *args))


def rows(pattern: re.Pattern[str], stdout: str) -> dict[str, tuple[int, int]]:
    """Key rows of a ``keys -list`` output: key -> (holders, members)."""
    out = {}
    for line in stdout.splitlines():
        m = pattern.match(line.strip())
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


@dataclass
class Mixed:
    """``r1`` (real serf, ``-encrypt=K``); ``t1`` (serf-trio, aes-gcm) joined r1; ``r2`` (real
    serf) joined t1.  ``size`` is the key length in bytes."""

    cluster: Cluster
    r1: Agent
    t1: Agent
    r2: Agent
    size: int

    @property
    def agents(self) -> list[Agent]:
        return [self.r1, self.t1, self.r2]

    def assert_real_agents_read_everything(self) -> None:
        """The Go agents logged no packet or stream they could not decrypt (memberlist's
        "Decrypt packet failed" / "failed to receive")."""
        for a in (self.r1, self.r2):
            bad = [line for line in a.output_lines() if any(e in line for e in GO_CRYPTO_ERRORS)]
            assert not bad, (a.name, bad)

    def the_key(self) -> str:
        """The one key every member holds (asked through the real agent)."""
        resp = self.r1.list_keys()
        assert (resp.num_nodes, resp.num_resp, resp.num_err) == (3, 3, 0), resp
        keys = resp.keys or {}
        assert len(keys) == 1 and next(iter(keys.values())) == 3, keys
        return next(iter(keys))


@pytest.fixture(scope="module", params=[16, 32], ids=["aes128", "aes256"])
def mixed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mixed]:
    need_serf()
    size: int = request.param
    key = new_key(size)
    c = Cluster(tmp_path_factory.mktemp(f"mixed{size}"))
    try:
        r1 = c.serf("r1", f"-encrypt={key}")
        t1 = c.trio(
            "t1",
            f"--encrypt={key}",
            "--encrypt-algorithm=aes-gcm",
            join=[r1],  # serf-trio joins real Serf
            profile=None,
            rpc_addr=True,
        )
        r2 = c.serf("r2", f"-encrypt={key}", join=[t1])  # real Serf joins serf-trio
        c.all_alive([r1, t1, r2])
        yield Mixed(c, r1, t1, r2, size)
    finally:
        c.close()


def test_encrypted_cluster_forms_in_both_join_directions(mixed: Mixed) -> None:
    for a in mixed.agents:
        assert a.sees(r1="alive", t1="alive", r2="alive"), (a.name, a.statuses())
    mixed.assert_real_agents_read_everything()
    proc = mixed.r2.serf_cli("members", "-format=json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {m["name"]: m["status"] for m in json.loads(proc.stdout)["members"]} == {
        "r1": "alive",
        "t1": "alive",
        "r2": "alive",
    }
    crypto = mixed.t1.encryption()
    assert (crypto["encrypted"], crypto["algorithm"], crypto["keys"]) == ("true", "aes-gcm", "1")
    # Everything from the Go agents arrived sealed with AES-GCM; nothing was refused.
    assert int(crypto["received_aes_gcm"]) > 0, crypto
    assert crypto["received_plaintext"] == crypto["received_secretbox"] == "0", crypto
    assert all(crypto[f"dropped_{c}"] == "0" for c in ("plaintext", "undecryptable")), crypto
    assert mixed.r1.stats()["serf"]["encrypted"] == "true"
    assert mixed.t1.stats()["serf"]["encrypted"] == "true"


@pytest.mark.slow
def test_user_events_and_queries_both_ways(mixed: Mixed) -> None:
    r1, t1, r2 = mixed.r1, mixed.t1, mixed.r2
    proc = r1.serf_cli("event", "-coalesce=false", "enc-from-go", "g")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = t1.cli("event", "--no-coalesce", "enc-from-py", "p")
    assert proc.returncode == 0, proc.stderr
    wait_each(
        mixed.agents,
        lambda a: a.user_events("enc-from-go") and a.user_events("enc-from-py"),
        "handlers for enc-from-go and enc-from-py",
    )
    everyone = {n: f"answer-from-{n}" for n in ("r1", "t1", "r2")}
    proc = r2.serf_cli("query", "-format=json", "-timeout=2s", "encq-from-go", "x")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["Responses"] == everyone
    proc = t1.cli("query", "encq-from-py", "y", "--format", "json", "--timeout", "2s")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["Responses"] == everyone
    for a in mixed.agents:
        assert len(a.queries("encq-from-go")) == 1 and len(a.queries("encq-from-py")) == 1
        assert len(a.user_events("enc-from-go")) == 1 and len(a.user_events("enc-from-py")) == 1


def test_real_serf_keys_rotate_serf_trio(mixed: Mixed) -> None:
    r1, t1 = mixed.r1, mixed.t1
    old, new = mixed.the_key(), new_key(mixed.size)

    proc = serf_keys(r1, "-install", new)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert t1.encryption()["keys"] == "2"
    proc = trio_keys(t1, "--list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rows(KEY_ROW, proc.stdout) == {old: (3, 3), new: (3, 3)}, proc.stdout

    proc = serf_keys(r1, "-use", new)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = serf_keys(r1, "-remove", old)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Successfully removed key!" in proc.stdout

    proc = serf_keys(r1, "-list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rows(SERF_KEY_ROW, proc.stdout) == {new: (3, 3)}, proc.stdout  # "[3/3]": t1 counted
    crypto = t1.encryption()
    assert crypto["keys"] == "1" and crypto["dropped_undecryptable"] == "0", crypto
    proc = trio_keys(t1, "--list")
    assert rows(KEY_ROW, proc.stdout) == {new: (3, 3)}, proc.stdout
    # Gossip under the new key still flows both ways.
    assert t1.cli("event", "--no-coalesce", "after-go-rotation").returncode == 0
    wait_each(mixed.agents, lambda a: a.user_events("after-go-rotation"), "the handler")
    for a in mixed.agents:
        assert a.sees(r1="alive", t1="alive", r2="alive"), (a.name, a.statuses())
    mixed.assert_real_agents_read_everything()


def test_serf_trio_keys_rotate_the_real_agent(mixed: Mixed) -> None:
    r1, t1, r2 = mixed.r1, mixed.t1, mixed.r2
    old, new = mixed.the_key(), new_key(mixed.size)

    for args, says in (
        (("--install", new), "Successfully installed key!"),
        (("--use", new), "Successfully changed primary key!"),
    ):
        proc = trio_keys(t1, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert says in proc.stdout
    proc = serf_keys(r2, "-list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rows(SERF_KEY_ROW, proc.stdout) == {old: (3, 3), new: (3, 3)}, proc.stdout

    proc = trio_keys(t1, "--remove", old)  # passes the CLI's check: new is everywhere
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Successfully removed key!" in proc.stdout
    proc = serf_keys(r1, "-list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rows(SERF_KEY_ROW, proc.stdout) == {new: (3, 3)}, proc.stdout
    # Each CLI also speaks to the other agent's RPC.
    proc = serf_keys(t1, "-list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rows(SERF_KEY_ROW, proc.stdout) == {new: (3, 3)}, proc.stdout
    proc = trio_keys(r2, "--list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rows(KEY_ROW, proc.stdout) == {new: (3, 3)}, proc.stdout
    # The real agents send under the new primary, and serf-trio reads it.
    assert r2.serf_cli("event", "-coalesce=false", "after-py-rotation").returncode == 0
    wait_each(mixed.agents, lambda a: a.user_events("after-py-rotation"), "the handler")
    for a in mixed.agents:
        assert a.sees(r1="alive", t1="alive", r2="alive"), (a.name, a.statuses())
    mixed.assert_real_agents_read_everything()
    assert t1.encryption()["dropped_undecryptable"] == "0"


def test_secretbox_node_next_to_real_serf_does_not_join(cluster: Cluster) -> None:
    need_serf()
    key = new_key(32)  # a key secretbox can use, so the cipher is the only difference
    r1 = cluster.serf("r1", f"-encrypt={key}")
    r2 = cluster.serf("r2", f"-encrypt={key}", join=[r1])
    real = {"r1": "alive", "r2": "alive"}

    # serf-trio (secretbox) joins the real agent: its start join fails cleanly (exit 1).
    t1 = cluster.trio("t1", f"--encrypt={key}", join=[r1], profile=None, ready=False)
    deadline = time.monotonic() + WAIT
    while t1.alive():
        assert time.monotonic() < deadline, f"t1 kept running\n{t1.describe()}"
        assert r1.statuses() == r2.statuses() == real
        time.sleep(0.05)  # polling interval
    assert t1.proc.wait(timeout=WAIT) == 1, t1.describe()
    (failed,) = t1.logs_with("start_join_failed")
    assert failed["errors"] == [
        f"Failed to join {r1.addr}: remote error: Unsupported encryption version 83"
    ], failed
    (hint,) = t1.logs_with("peer_sends_aes_gcm")  # its err reply came sealed with AES-GCM
    assert hint["hint"] == AES_GCM_HINT and hint["peer"] == "127.0.0.1", hint
    assert "aes-gcm" in hint["hint"]

    # The real agent joins a running secretbox node: the join fails, serf-trio keeps running.
    t2 = cluster.trio("t2", f"--encrypt={key}", profile=None)
    proc = r1.serf_cli("join", t2.addr)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Unsupported encryption version 83" in proc.stdout + proc.stderr
    wait_for(lambda: t2.logs_with("peer_sends_aes_gcm"), "t2's peer_sends_aes_gcm line")
    (hint,) = t2.logs_with("peer_sends_aes_gcm")  # once per peer host, however many packets
    assert hint["hint"] == AES_GCM_HINT
    assert t2.alive() and t2.sees(t2="alive"), t2.describe()
    assert r1.statuses() == r2.statuses() == real
    assert "Unsupported encryption version 83" in "\n".join(r1.output_lines())
