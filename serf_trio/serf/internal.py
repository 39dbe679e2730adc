"""Serf's internal queries (names starting with ``_serf_``), answered inside the core.

* ``_serf_ping``: no response; the ack the originator asked for is the answer
  (``serf reachability``).
* ``_serf_conflict``: payload is a contested node name; answer ``06`` + the ``Member`` we know
  by that name, or ``06 c0`` if none.  The node with that name does not answer.
* ``_serf_install-key`` / ``use-key`` / ``remove-key`` / ``list-keys``: answered as an agent
  without encryption answers them (``Result: false`` and Serf's message), since the keyring
  lives in the driver, not in this core.

The originator side of ``_serf_conflict`` (counting matching responses) is ``conflict_outcome``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..wire.codec import DecodeError
from .messages import (
    KeyResponse,
    MemberRecord,
    decode_conflict_response,
    encode_conflict_response,
    encode_key_response,
)

INTERNAL_PREFIX = "_serf_"
PING = "_serf_ping"
CONFLICT = "_serf_conflict"
INSTALL_KEY = "_serf_install-key"
USE_KEY = "_serf_use-key"
REMOVE_KEY = "_serf_remove-key"
LIST_KEYS = "_serf_list-keys"

NO_KEYRING_TO_MODIFY = "No keyring to modify (encryption not enabled)"
KEYRING_EMPTY = "Keyring is empty (encryption not enabled)"


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
    if name in (INSTALL_KEY, USE_KEY, REMOVE_KEY):
        return encode_key_response(KeyResponse(False, NO_KEYRING_TO_MODIFY))
    if name == LIST_KEYS:
        return encode_key_response(KeyResponse(False, KEYRING_EMPTY))
    return None  # _serf_ping and unknown internal names: ack only


@dataclass(frozen=True, slots=True)
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
