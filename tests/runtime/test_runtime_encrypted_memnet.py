"""Encryption through the real runtime: ``SerfRuntime`` driving ``SerfNode`` cores on the
in-memory network (MockClock), each transport sealing and opening with
``runtime.crypto.EnvelopeCrypto`` over the node's ``wire.crypto.Envelope``.

What this file owns: an encrypted cluster passing user events and queries through the real
tasks, a node with a wrong key refused at join; keyring operations through
``SerfRuntime.key_operation`` (Serf's KeyManager) with the driver's keyring persister: the
answer waits for the write and carries its failure ("Failed to write keyring file: ..."); and
Serf's answers on a cluster without encryption.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from helpers import mem_addr as addr
from helpers import run_mock

from serf_trio.runtime.crypto import EnvelopeCrypto
from serf_trio.runtime.driver import JoinError, NodeEvent
from serf_trio.runtime.serf_runtime import KeyringPersister, SerfRuntime
from serf_trio.runtime.transport import PLAINTEXT, WireCrypto
from serf_trio.serf.config import SerfConfig
from serf_trio.serf.effects import SerfQueryEvent, SerfUserEvent
from serf_trio.serf.internal import KEYRING_EMPTY, NO_KEYRING_TO_MODIFY
from serf_trio.serf.query import QueryParam
from serf_trio.swim.config import LAN
from serf_trio.testing.memnet import MemoryNetwork
from serf_trio.testing.netmodel import NetModel
from serf_trio.wire.crypto import NO_KEY_OPENED, Algorithm, Envelope
from serf_trio.wire.keyring import Keyring

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
WRONG = bytes(range(64, 96))


class Lines:
    """A structlog stand-in keeping ``(event, fields)`` of what ``EnvelopeCrypto`` logs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


class Node:
    """One ``SerfRuntime`` with its envelope, crypto and the events it delivered."""

    def __init__(
        self,
        net: MemoryNetwork,
        i: int,
        keys: list[bytes] | None,
        persist: KeyringPersister | None = None,
    ) -> None:
        self.envelope: Envelope | None = None
        self.crypto: EnvelopeCrypto | None = None
        self.log = Lines()
        crypto: WireCrypto = PLAINTEXT
        if keys is not None:
            nonces = random.Random(f"nonces/{i}")
            self.envelope = Envelope(Keyring(keys), Algorithm.SECRETBOX, nonces=nonces.randbytes)
            self.crypto = crypto = EnvelopeCrypto(self.envelope, self.log)
        self.node = SerfRuntime(
            LAN,
            f"n{i}",
            net.transport(addr(i), stream_timeout=LAN.tcp_timeout, crypto=crypto),
            rng=random.Random(i),
            serf=SerfConfig(),
            envelope=self.envelope,
            persist_keyring=persist,
        )
        self.events: list[NodeEvent] = []

    @property
    def keys(self) -> tuple[bytes, ...]:
        assert self.envelope is not None and self.envelope.keyring is not None
        return self.envelope.keyring.keys

    def has_query(self) -> bool:
        return any(isinstance(e, SerfQueryEvent) for e in self.events)

    async def collect(self) -> None:
        async for ev in self.node.events:
            self.events.append(ev)


async def wait_until(cond: Callable[[], bool], step: float = 0.1) -> None:
    while not cond():  # noqa: ASYNC110 - polls a view that has no change signal
        await trio.sleep(step)


async def start_cluster(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    count: int,
    keys: list[bytes] | None,
    persist: Callable[[int], KeyringPersister | None] = lambda i: None,
) -> list[Node]:
    """``count`` nodes (n1..), all joined through n1 and seeing each other alive."""
    nodes = [Node(net, i, keys, persist(i)) for i in range(1, count + 1)]
    for n in nodes:
        await nursery.start(n.node.run)
        nursery.start_soon(n.collect)
    for n in nodes[1:]:
        assert await n.node.join([addr(1)]) == 1
    names = {f"n{i}" for i in range(1, count + 1)}

    def converged() -> bool:
        return all(
            {m.name for m in n.node.serf_members() if m.status == "alive"} == names for n in nodes
        )

    await wait_until(converged)
    return nodes


def test_encrypted_cluster_passes_events_and_queries_and_refuses_a_wrong_key() -> None:
    """Five secretbox nodes through the real tasks: a user event reaches all five once, a query
    gets five responses; a node with another key fails to join (memberlist's "No installed
    keys could decrypt the message"), nobody lists it, and the seed logged the refusal."""

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=5))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            nodes = await start_cluster(nursery, net, 5, [K1])

            await nodes[2].node.user_event("deploy", b"v1")
            await trio.sleep(5)
            for n in nodes:
                users = [e for e in n.events if isinstance(e, SerfUserEvent)]
                assert [(u.name, u.payload) for u in users] == [("deploy", b"v1")]

            stream = await nodes[0].node.query(QueryParam("who", timeout=3.0))
            for n in nodes:
                await wait_until(n.has_query)
                q = next(e for e in n.events if isinstance(e, SerfQueryEvent))
                await n.node.respond(q.token, n.node.name.encode())
            records = [r async for r in stream]
            got = sorted(r.payload for r in records if r.record_type == "response")
            assert got == [f"n{i}".encode() for i in range(1, 6)]

            intruder = Node(net, 9, [WRONG])
            await nursery.start(intruder.node.run)
            with pytest.raises(JoinError) as info:
                await intruder.node.join([addr(1)])
            assert NO_KEY_OPENED in str(info.value.errors)
            await trio.sleep(10)
            for n in nodes:
                assert "n9" not in {m.name for m in n.node.serf_members()}
            seed = nodes[0].crypto
            assert seed is not None and seed.dropped["undecryptable"] >= 1
            assert ("stream_rejected", "undecryptable") in {
                (event, fields["reason"]) for event, fields in nodes[0].log.lines
            }
            for n in nodes:
                assert n.crypto is not None and n.crypto.opened["plaintext"] == 0
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_a_failed_keyring_write_answers_false_with_serfs_text() -> None:
    """n3's persister raises: n3 answers the install with Result false and "Failed to write
    keyring file: <error>" (Serf writes its keyring file before answering and reports a
    failed write); the report counts it as one failure of three.  The key is installed in
    n3's memory all the same, as in Serf."""

    def persister(i: int) -> KeyringPersister:
        async def write(keys: tuple[bytes, ...]) -> None:
            if i == 3:
                raise OSError("No space left on device")

        return write

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=6))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            nodes = await start_cluster(nursery, net, 3, [K1], persister)
            report = await nodes[0].node.key_operation("install", K2)
            assert (report.num_nodes, report.num_resp, report.num_err) == (3, 3, 1)
            assert report.messages == {
                "n3": "Failed to write keyring file: No space left on device"
            }
            assert report.error == "1/3 nodes reported failure"
            assert all(n.keys == (K1, K2) for n in nodes)
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_the_keyring_is_persisted_with_the_new_keys_before_the_answer() -> None:
    """Every node's persister is called with the changed keyring (primary first) and holds
    the write open: no answer comes while it does, so the key operation is still running a
    second later; once the writes complete every node answers success."""
    written: dict[int, tuple[bytes, ...]] = {}
    gate = trio.Event()

    def persister(i: int) -> KeyringPersister:
        async def write(keys: tuple[bytes, ...]) -> None:
            written[i] = keys
            await gate.wait()

        return write

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=7))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            nodes = await start_cluster(nursery, net, 3, [K1], persister)
            result: list[Any] = []

            async def operate() -> None:
                result.append(await nodes[1].node.key_operation("install", K2))

            nursery.start_soon(operate)
            await wait_until(lambda: len(written) == 3)
            assert written == {1: (K1, K2), 2: (K1, K2), 3: (K1, K2)}
            await trio.sleep(1.0)  # well inside the query's timeout
            assert result == []  # nobody answered while its write was pending
            gate.set()
            await wait_until(lambda: bool(result))
            (report,) = result
            assert (report.num_resp, report.num_err, report.error) == (3, 0, "")

            # use: what is written has the new primary first
            report = await nodes[2].node.key_operation("use", K2)
            assert report.error == ""
            assert written == {1: (K2, K1), 2: (K2, K1), 3: (K2, K1)}
            nursery.cancel_scope.cancel()

    run_mock(body)


def test_key_operations_on_an_unencrypted_cluster_report_serfs_texts() -> None:
    """Without encryption every node answers list-keys with "Keyring is empty (encryption
    not enabled)" and install with "No keyring to modify (encryption not enabled)"; the
    report's error is Serf's "N/N nodes reported failure"."""

    async def body() -> None:
        net = MemoryNetwork(NetModel(seed=8))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            nodes = await start_cluster(nursery, net, 3, None)
            report = await nodes[0].node.key_operation("list")
            assert (report.num_nodes, report.num_resp, report.num_err) == (3, 3, 3)
            assert report.messages == {f"n{i}": KEYRING_EMPTY for i in (1, 2, 3)}
            assert report.error == "3/3 nodes reported failure"
            assert report.keys == {} and report.primary_keys == {}
            report = await nodes[1].node.key_operation("install", K2)
            assert report.messages == {f"n{i}": NO_KEYRING_TO_MODIFY for i in (1, 2, 3)}
            assert report.error == "3/3 nodes reported failure"
            nursery.cancel_scope.cancel()

    run_mock(body)
