"""The Serf layer of the runtime: the Serf core on the generic driver, and Serf's commands.

``SerfRuntime`` is a ``driver.CoreDriver`` whose core is ``serf.node.SerfNode``.  What it adds
to the driver, and nothing else:

* the Serf commands (``user_event``, ``query``, ``respond``, ``set_tags``, ``force_leave``,
  ``key_operation``), each run in the driver as a ``Call``; the core's refusals
  (``SerfError``, ``TagsTooLarge``) come back as ``SerfError`` with Serf's text;
* **query routing**: each ``QueryUpdate`` goes to the ``QueryStream`` of the query it belongs
  to (never waiting: acks/responses past ``QUERY_BUFFER`` unread ones are dropped and counted;
  the single "done" is a flag and cannot be lost, also when the node stops first);
* **keyring persistence**: a ``KeyringChanged`` with a token is written by the persister
  (in order, off the driver) before the core answers the key query that made it, with the
  write's error if it failed (as Serf does);
* the name-conflict rule: the minority of a name-conflict resolution stops without leaving
  (Serf: "minority in name conflict resolution, quitting");
* ``leave`` answers only ``leave_propagate_delay`` after the core's ``LeaveDone`` (Serf's
  LeavePropagateDelay: the node keeps gossiping meanwhile so its leave spreads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from serf_trio.serf.config import SerfConfig
from serf_trio.serf.coordinate import Coordinate
from serf_trio.serf.effects import KeyringChanged, QueryUpdate
from serf_trio.serf.internal import KeyReport, key_query, keyring_write_failed
from serf_trio.serf.members import SerfMember
from serf_trio.serf.node import RestoredState, SerfError, SerfNode, SerfStats
from serf_trio.serf.query import QueryParamsLike
from serf_trio.serf.tags import TagsTooLarge
from serf_trio.swim.api import Address, State
from serf_trio.swim.config import SwimConfig
from serf_trio.wire.keyring import fingerprint

from .driver import CoreDriver, NotRunningError
from .report import is_name_conflict_loss
from .transport import Transport

QUERY_BUFFER = 512  # records buffered per running query before acks/responses are dropped
_REFUSALS = (SerfError, TagsTooLarge)

# Writes the keyring (primary first) somewhere durable; raises on failure.
KeyringPersister = Callable[[tuple[bytes, ...]], Awaitable[None]]


class QueryStream:
    """The records of one query we started: ``QueryUpdate`` acks/responses, then exactly one
    ``done`` (also when the node stops first).  Iterate it with ``async for``.

    The driver feeds it without waiting: acks and responses beyond ``QUERY_BUFFER`` unread ones
    are dropped (counted in ``dropped``); "done" is a flag plus the end of the channel, so it
    can never be lost.
    """

    def __init__(self, size: int = QUERY_BUFFER) -> None:
        self._send, self._recv = trio.open_memory_channel[QueryUpdate](size)
        self.query_id = 0
        self.dropped = 0
        self._yielded_done = False

    # driver side (never waits)
    def _offer(self, upd: QueryUpdate) -> None:
        if upd.record_type == "done":
            self._finish()
            return
        try:
            self._send.send_nowait(upd)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the consumer went away; "done" still ends the entry

    def _finish(self) -> None:
        self._send.close()

    # consumer side
    def __aiter__(self) -> QueryStream:
        return self

    async def __anext__(self) -> QueryUpdate:
        if self._yielded_done:
            raise StopAsyncIteration
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._yielded_done = True
            return QueryUpdate(self.query_id, "done")

    async def aclose(self) -> None:
        self._recv.close()
        await trio.lowlevel.checkpoint()


class SerfRuntime(CoreDriver[SerfNode]):
    """The Serf core on trio (module docstring).

    ``tags`` are the initial tags and ``restored`` the clocks read from a snapshot; both may
    also be set as ``initial_tags`` / ``restored`` before ``run``: the core witnesses the
    restored clocks before it handles any packet, so no event older than them is delivered
    again.  ``events`` carries Serf's member, user and query events (plus the runtime's
    notices and join/leave results).
    """

    def __init__(
        self,
        config: SwimConfig,
        name: str,
        transport: Transport,
        *,
        serf: SerfConfig | None = None,
        tags: Mapping[str, str] | None = None,
        restored: RestoredState | None = None,
        persist_keyring: KeyringPersister | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, name, transport, **kwargs)
        self.serf_config = serf if serf is not None else SerfConfig()
        self.initial_tags: dict[str, str] = dict(tags or {})
        self.restored = restored
        self._persist_keyring = persist_keyring
        self._keyring_lock = trio.Lock()  # keyring writes land in the order of the changes
        self._queries: dict[int, QueryStream] = {}

    def _make_core(self, adv: Address, now: float) -> SerfNode:
        # The restored clocks are witnessed before the first packet can arrive: the transport
        # is bound but the driver, the only reader of its input, has not started yet.
        return SerfNode(
            self.serf_config,
            self.config,
            self.name,
            adv,
            rng=self._rng,
            now=now,
            tags=self.initial_tags,
            restored=self.restored,
            envelope=self.envelope,
            persist_keyring=self._persist_keyring is not None,
        )

    def _on_stopped(self) -> None:
        # Every running query still gets its single "done".
        for stream in self._queries.values():
            stream._finish()
        self._queries.clear()

    def _consume(self, eff: object) -> bool:
        if isinstance(eff, QueryUpdate):
            stream = self._queries.get(eff.query_id)
            if stream is not None:
                if eff.record_type == "done":
                    del self._queries[eff.query_id]
                stream._offer(eff)
            return True
        if isinstance(eff, KeyringChanged):
            self._log.info(
                "keyring_changed",
                op=eff.op,
                keys=len(eff.keys),
                primary=fingerprint(eff.keys[0]) if eff.keys else "",
            )
            if eff.token is not None:
                self._spawn(self._save_keyring, eff.keys, eff.token)
            return True
        if is_name_conflict_loss(eff):
            self.request_stop("name_conflict")
        return False

    # -- Serf commands (``SerfError`` carries Serf's text) ------------------------------------

    async def _serf_call(
        self,
        fn: Callable[[SerfNode, float], tuple[int, Sequence[object]]],
        on_value: Callable[[int], None] | None = None,
    ) -> int:
        outcome = await self.call(fn, refusals=_REFUSALS, on_value=on_value)
        if outcome.error:
            raise SerfError(outcome.error)
        return outcome.value

    async def join(self, seeds: Sequence[Address], *, replay: bool = False) -> int:
        """Push/pull with each seed; the number synced (``JoinError`` if none could be).
        ``replay``: deliver the user events the cluster already had."""
        return await self._join(lambda core, now: core.join(now, seeds, replay=replay))

    async def leave(self, timeout: float) -> bool:  # noqa: ASYNC109 - a protocol timer
        timed_out = await super().leave(timeout)
        # Serf LeavePropagateDelay: keep gossiping a moment so the leave reaches everyone.
        await trio.sleep(self.serf_config.leave_propagate_delay)
        return timed_out

    async def user_event(self, name: str, payload: bytes, coalesce: bool = False) -> None:
        """Send a user event (delivered here too); ``SerfError`` past the size limit."""
        await self._serf_call(lambda c, now: (0, c.user_event(now, name, payload, coalesce)))

    async def query(self, params: QueryParamsLike) -> QueryStream:
        """Start a query; iterate the returned stream for acks, responses and one "done"."""
        stream = QueryStream()
        stream.query_id = await self._serf_call(
            lambda c, now: c.query(now, params),
            on_value=lambda qid: self._queries.__setitem__(qid, stream),
        )
        return stream

    async def respond(self, token: int, payload: bytes) -> None:
        """Answer a delivered ``SerfQueryEvent``; ``SerfError``: late, second, too large."""
        await self._serf_call(lambda c, now: (0, c.respond(now, token, payload)))

    async def set_tags(self, tags: Mapping[str, str]) -> None:
        """Replace our tags (peers see member-update); ``SerfError`` past 512 encoded bytes."""
        new = dict(tags)
        await self._serf_call(lambda c, now: (0, c.set_tags(now, new)))

    async def force_leave(self, node: str, prune: bool = False) -> None:
        """Broadcast a leave intent for ``node``: failed -> left, ``prune`` erases it."""
        await self._serf_call(lambda c, now: (0, c.force_leave(now, node, prune)))

    async def key_operation(self, op: str, key: bytes = b"") -> KeyReport:
        """Run one keyring operation (install | use | remove | list) on every member, as
        Serf's KeyManager does: an internal query with default parameters, one response per
        node gathered until all ``NumMembers`` answered or the query times out."""
        stream = await self.query(key_query(op, key))
        serf = self._core
        report = KeyReport(num_nodes=serf.num_alive() if serf is not None else 0)
        answered: set[str] = set()
        try:
            async for upd in stream:
                if upd.record_type == "response":
                    answered.add(upd.from_)
                    report.add(upd.from_, upd.payload)
                    if report.complete:
                        break  # serf: return early once every node has answered
        finally:
            await stream.aclose()
        if not report.complete:
            # Which keyrings may now differ: the members that never answered.
            silent = sorted(
                m.name
                for m in self.members()
                if m.state in (State.ALIVE, State.SUSPECT) and m.name not in answered
            )
            self._log.warning("key_query_incomplete", op=op, nodes=report.num_nodes, silent=silent)
        return report

    async def _save_keyring(self, keys: tuple[bytes, ...], token: int) -> None:
        """Persist a changed keyring, then let the core answer the key query that changed it
        (with the write's error, as Serf does)."""
        persist = self._persist_keyring
        error = ""
        async with self._keyring_lock:
            try:
                if persist is not None:
                    await persist(keys)
            except Exception as exc:  # any failure to write is reported, never fatal
                error = keyring_write_failed(exc)
                self._log.error("keyring_write_failed", error=str(exc))
        # When stopping, the query's originator counts us as not answering.
        with contextlib.suppress(NotRunningError, trio.ClosedResourceError):
            await self._serf_call(lambda c, now: (0, c.key_persisted(now, token, error)))

    # -- views ---------------------------------------------------------------------------

    @property
    def serf(self) -> SerfNode | None:
        """The Serf core for read-only views (``None`` before ``run``)."""
        return self._core

    def serf_members(self) -> list[SerfMember]:
        core = self._core
        return core.members() if core is not None else []

    def get_coordinate(self, name: str) -> Coordinate | None:
        core = self._core
        return core.get_coordinate(name) if core is not None else None

    def serf_statistics(self) -> SerfStats | None:
        core = self._core
        return core.serf_statistics() if core is not None else None
