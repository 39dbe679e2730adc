"""Serf's internal queries (names starting with ``_serf_``), answered inside the core.

* ``_serf_ping``: no response; the ack the originator asked for is the answer
  (``serf reachability``).
* ``_serf_conflict``: payload is a contested node name; answer ``06`` + the ``Member`` we know
  by that name, or ``06 c0`` if none.  The node with that name does not answer.
* ``_serf_install-key`` / ``use-key`` / ``remove-key`` / ``list-keys`` (SERF.md 8.6):
  ``answer_key_query`` applies the request to the node's real keyring (the envelope its
  transport seals with, so a change applies to the very next packet) and builds Serf's
  ``nodeKeyResponse``.  Without a keyring the answers are Serf's "encryption not enabled" ones.

The originator sides: ``conflict_outcome`` counts ``_serf_conflict`` answers; ``KeyReport``
aggregates key query responses as Serf's KeyManager does (per-node messages, error count,
key -> number of nodes, and Serf's "N/M nodes reported failure/success" error).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from serf_trio.record import record

from ..swim.api import PacketOverhead
from ..wire.codec import DecodeError
from ..wire.keyring import Keyring, KeyringError, encode_key
from .messages import (
    KeyRequest,
    KeyResponse,
    MemberRecord,
    SerfType,
    decode_conflict_response,
    decode_key_request,
    decode_key_response,
    encode_conflict_response,
    encode_key_request,
    encode_key_response,
)
from .query import QueryParam

INTERNAL_PREFIX = "_serf_"
PING = "_serf_ping"
CONFLICT = "_serf_conflict"
INSTALL_KEY = "_serf_install-key"
USE_KEY = "_serf_use-key"
REMOVE_KEY = "_serf_remove-key"
LIST_KEYS = "_serf_list-keys"

NO_KEYRING_TO_MODIFY = "No keyring to modify (encryption not enabled)"
KEYRING_EMPTY = "Keyring is empty (encryption not enabled)"

# query name <-> the keyring operation it asks for
KEY_QUERIES = {INSTALL_KEY: "install", USE_KEY: "use", REMOVE_KEY: "remove", LIST_KEYS: "list"}
KEY_QUERY_NAMES = {op: name for name, op in KEY_QUERIES.items()}


def is_internal(name: str) -> bool:
    return name.startswith(INTERNAL_PREFIX)


def internal_response(
    name: str, payload: bytes, local_name: str, lookup: Callable[[str], MemberRecord | None]
) -> bytes | None:
    """The response payload for an internal query, or ``None`` to send none.

    ``lookup(name)`` is the member we know by that name; it is called only for a conflict query.
    """
    if name == CONFLICT:
        node = payload.decode("utf-8", "surrogateescape")
        if node == local_name:
            return None  # serf: the contested node itself stays out of the vote
        return encode_conflict_response(lookup(node))
    return None  # _serf_ping and unknown internal names: ack only


# ---------------------------------------------------------------------------------------------
# Key queries: the responder


class KeyHolder(Protocol):
    """The node's keyring as the Serf layer sees it (``wire.crypto.Envelope`` is one)."""

    @property
    def keyring(self) -> Keyring | None: ...

    def check_primary(self, key: bytes) -> None:
        """``KeyringError`` if this node could not send with ``key`` as its primary."""
        ...


class NodeEnvelope(KeyHolder, PacketOverhead, Protocol):
    """What a Serf node holds of its envelope: the keyring and the packet overhead."""


@record
class KeyAnswer:
    """What a key query did here: the response to send and whether the keyring changed."""

    response: KeyResponse
    changed: bool = False


def answer_key_query(name: str, payload: bytes, holder: KeyHolder | None) -> KeyAnswer:
    """Apply one ``_serf_*-key(s)`` query to ``holder``'s keyring (serf internal_query.go)."""
    op = KEY_QUERIES[name]
    key = b""
    if op != "list":
        try:
            key = decode_key_request(payload).key
        except DecodeError:
            return KeyAnswer(KeyResponse(False, ""))  # serf: "Failed to decode key request"
    keyring = holder.keyring if holder is not None else None
    if holder is None or keyring is None:
        text = KEYRING_EMPTY if op == "list" else NO_KEYRING_TO_MODIFY
        return KeyAnswer(KeyResponse(False, text))
    if op == "list":
        keys = tuple(keyring.encoded())
        return KeyAnswer(KeyResponse(True, "", keys, encode_key(keyring.primary)))
    try:
        if op == "install":
            changed = keyring.install(key)
        elif op == "use":
            if key in keyring:
                holder.check_primary(key)  # serf-trio: secretbox cannot send with a 16-byte key
            changed = keyring.use(key)
        else:
            changed = keyring.remove(key)
    except KeyringError as exc:
        return KeyAnswer(KeyResponse(False, str(exc)))
    return KeyAnswer(KeyResponse(True, ""), changed)


def fit_key_list(resp: KeyResponse, fits: Callable[[bytes], bool]) -> bytes | None:
    """The encoded list-keys response, its key list truncated until ``fits`` accepts it
    (serf keyListResponseWithCorrectSize); ``None`` if not even an empty list fits.

    A response without a key list (``keys`` None: no keyring) keeps it absent, so ``Keys`` is
    encoded as nil as Go encodes its nil slice, not as an empty array."""
    keys = resp.keys or ()
    total = len(keys)
    for n in range(total, -1, -1):
        message = resp.message
        if n < total:
            message = f"truncated key list response, showing first {n} of {total} keys"
        shown = keys[:n] if resp.keys is not None else None
        raw = encode_key_response(KeyResponse(resp.result, message, shown, resp.primary_key))
        if fits(raw):
            return raw
    return None


def keyring_write_failed(exc: BaseException) -> str:
    """Serf's answer text when writing the keyring file failed (internal_query.go)."""
    return f"Failed to write keyring file: {exc}"


# ---------------------------------------------------------------------------------------------
# Key queries: the originator (serf KeyManager)


def key_query(op: str, key: bytes = b"") -> QueryParam:
    """The internal query Serf's KeyManager sends for ``op`` (default parameters, no ack)."""
    return QueryParam(KEY_QUERY_NAMES[op], encode_key_request(KeyRequest(key)))


@dataclass(slots=True)
class KeyReport:
    """Responses to one key query, gathered as serf streamKeyResp does.

    ``num_nodes`` is memberlist's NumMembers (alive and suspect, ourselves included) when the
    query started; ``complete`` once that many nodes have answered.
    """

    num_nodes: int
    num_resp: int = 0
    num_err: int = 0
    messages: dict[str, str] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    primary_keys: dict[str, int] = field(default_factory=dict)

    def add(self, node: str, payload: bytes) -> None:
        self.num_resp += 1
        go_bytes = "[" + " ".join(str(b) for b in payload) + "]"  # Go's %v of a []byte
        if not payload or payload[0] != SerfType.KEY_RESPONSE:
            self.messages[node] = f"Invalid key query response type: {go_bytes}"
            self.num_err += 1
            return
        try:
            resp = decode_key_response(payload)
        except DecodeError:
            self.messages[node] = f"Failed to decode key query response: {go_bytes}"
            self.num_err += 1
            return
        if not resp.result:
            self.messages[node] = resp.message
            self.num_err += 1
        elif resp.message:
            self.messages[node] = resp.message  # a warning (e.g. a truncated key list)
        for k in resp.keys or ():
            self.keys[k] = self.keys.get(k, 0) + 1
        if resp.primary_key:
            self.primary_keys[resp.primary_key] = self.primary_keys.get(resp.primary_key, 0) + 1

    @property
    def complete(self) -> bool:
        return self.num_resp >= self.num_nodes

    @property
    def error(self) -> str:
        """Serf's error for the report ("" when every node answered and succeeded)."""
        if self.num_err:
            return f"{self.num_err}/{self.num_nodes} nodes reported failure"
        if self.num_resp != self.num_nodes:
            return f"{self.num_resp}/{self.num_nodes} nodes reported success"
        return ""


@record
class ConflictOutcome:
    matching: int
    responses: int

    @property
    def majority(self) -> int:
        return self.responses // 2 + 1

    @property
    def won(self) -> bool:
        """serf resolveNodeConflict: we stay with at least responses/2 + 1 matching answers."""
        return self.matching >= self.majority


def conflict_outcome(payloads: list[bytes], addr: bytes, port: int) -> ConflictOutcome:
    """Count ``_serf_conflict`` responses naming our address (a nil member counts as a no)."""
    responses = matching = 0
    for p in payloads:
        try:
            member = decode_conflict_response(p)
        except DecodeError:
            continue
        responses += 1
        if member is not None and member.addr == addr and member.port == port:
            matching += 1
    return ConflictOutcome(matching, responses)
