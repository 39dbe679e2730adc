"""``InternalQueries``: the node's side of Serf's internal ``_serf_*`` queries (SERF.md 8.6, 9;
serf internal_query.go, serf.go handleNodeConflict/resolveNodeConflict).

``internal`` has the pure rules (what to answer, how to count a vote, how to change a keyring);
this module connects them to a running node:

* answering: a key query changes our real keyring and is answered from it (after the driver has
  persisted the keyring when ``persist_keyring`` is set: ``KeyringChanged`` with a token, then
  ``SerfNode.key_persisted``); ``_serf_conflict`` is answered with the member we know by the
  contested name; ``_serf_ping`` only with the ack the originator asked for;
* name conflicts: memberlist's ``name_conflict`` notice about another node is reported as
  ``serf_name_conflict``; about *us* it starts one ``_serf_conflict`` query, and when that ends
  the vote is reported as ``name_conflict_resolution`` - losing it shuts the node down.

The queries themselves go through ``Queries`` like any other (``answer`` is its ``internal``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..swim.api import Address, Notice
from .context import NodeContext
from .effects import KeyringChanged, QueryUpdate
from .internal import (
    CONFLICT,
    KEY_QUERIES,
    LIST_KEYS,
    NodeEnvelope,
    answer_key_query,
    conflict_outcome,
    fit_key_list,
    internal_response,
    is_internal,
)
from .messages import KeyResponse, MemberRecord, Query, QueryResponse, encode, encode_key_response
from .queries import Queries
from .query import IncomingQuery, OutgoingQuery


class InternalQueries:
    """Answers internal queries and runs name-conflict resolution; see the module docstring."""

    def __init__(
        self,
        ctx: NodeContext,
        queries: Queries,
        *,
        envelope: NodeEnvelope | None,
        persist_keyring: bool,
        shutdown: Callable[[], None],
    ) -> None:
        self._config = ctx.config
        self._name = ctx.name
        self._addr = ctx.addr
        self._members = ctx.members
        self._out = ctx.out
        self._is_alive = ctx.is_alive
        self._queries = queries
        self._envelope = envelope  # the keyring key queries change (None: no encryption)
        self._persist_keyring = persist_keyring
        self._shutdown = shutdown  # SerfNode.shutdown (a lost name-conflict vote)
        self._conflict_running = False

    # ------------------------------------------------------------------ answering

    def answer(self, now: float, q: Query, dest: Address, deadline: float) -> bool:
        """Answer ``q`` if it is internal (True); False leaves it to the handlers."""
        if q.name in KEY_QUERIES:
            self._answer_key_query(now, q, dest, deadline)
            return True
        if is_internal(q.name):
            payload = internal_response(q.name, q.payload, self._name, self.member_record)
            if payload is not None and now <= deadline:
                self._queries.send_internal_response(q, dest, payload)
            return True
        return False

    def _answer_key_query(self, now: float, q: Query, dest: Address, deadline: float) -> None:
        """SERF.md 8.6: apply a key query to our keyring and answer from it."""
        answer = answer_key_query(q.name, q.payload, self._envelope)
        keyring = self._envelope.keyring if self._envelope is not None else None
        if answer.changed and keyring is not None:  # only a keyring can change
            op = KEY_QUERIES[q.name]
            if self._persist_keyring:
                # Serf writes the keyring file before it answers: wait for key_persisted.
                token = self._queries.register_incoming(q, dest, deadline)
                self._out.emit(KeyringChanged(op, keyring.keys, token))
                return
            self._out.emit(KeyringChanged(op, keyring.keys))
        if now > deadline:
            return
        if q.name == LIST_KEYS:
            limit = self._config.query_response_size_limit

            def fits(payload: bytes) -> bool:
                return len(encode(QueryResponse(q.ltime, q.id, self._name, 0, payload))) <= limit

            payload = fit_key_list(answer.response, fits)
            if payload is None:
                self._out.violation("list-keys: no response fits the response size limit")
                return
        else:
            payload = encode_key_response(answer.response)
        self._queries.send_internal_response(q, dest, payload)

    def send_persisted(self, q: IncomingQuery, error: str) -> None:
        """Answer a key query held for ``key_persisted`` (``Result`` false with ``error`` if the
        write failed, as Serf does)."""
        payload = encode_key_response(KeyResponse(not error, error))
        resp = QueryResponse(q.ltime, q.id, self._name, 0, payload)
        self._queries.send_response(q.dest, q.source_node, q.relay_factor, resp, encode(resp))

    def member_record(self, name: str) -> MemberRecord | None:
        """The member we know by ``name`` as serf's ``Member`` (conflict responses)."""
        m = self._members.get(name)
        if m is None:
            return None
        v = m.view()
        return MemberRecord(
            name=v.name,
            addr=v.addr.packed(),
            port=v.addr.port,
            tags=v.tags,
            status=v.status_code,
            protocol_min=v.protocol_min,
            protocol_max=v.protocol_max,
            protocol_cur=v.protocol_cur,
            delegate_min=v.delegate_min,
            delegate_max=v.delegate_max,
            delegate_cur=v.delegate_cur,
        )

    # ------------------------------------------------------------------ name conflicts (9)

    def on_name_conflict(self, now: float, notice: Notice) -> None:
        """memberlist saw two addresses for one name.  About us (and resolution enabled, none
        running, we are alive): ask everyone who they know by our name (``_serf_conflict``)."""
        node = str(notice.fields.get("node", ""))
        if node != self._name:
            self._out.emit(Notice("serf_name_conflict", dict(notice.fields)))
            return
        if not self._config.enable_name_conflict_resolution or self._conflict_running:
            return
        if not self._is_alive():
            return
        self._conflict_running = True
        q = self._queries.start_internal(now, CONFLICT, self._name.encode(), CONFLICT)
        self._queries.originate(now, q, encode(q))

    def query_done(self, oq: OutgoingQuery) -> None:
        """An internal query we started has ended (``Queries.run_due``)."""
        if oq.internal != CONFLICT:
            self._out.emit(QueryUpdate(oq.query_id, "done"))
            return
        self._conflict_running = False
        res = conflict_outcome(oq.payloads, self._addr.packed(), self._addr.port)
        self._out.emit(
            Notice(
                "name_conflict_resolution",
                {
                    "node": self._name,
                    "matching": res.matching,
                    "responses": res.responses,
                    "won": res.won,
                },
            )
        )
        if not res.won:
            # serf: "minority in name conflict resolution, quitting" - without leaving.
            self._shutdown()


__all__ = ["InternalQueries"]
