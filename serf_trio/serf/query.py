"""Queries: the dedupe buffer, filters, the default timeout, and both ends' bookkeeping.

Receiving (serf handleQuery): witness the query clock, drop queries under ``min_time`` or
outside the 512-entry window, dedupe by ``(LTime, ID)`` in a ring of ``query_buffer`` slots.
Filters are ANDed: a node filter lists names, a tag filter is an RE2 regex searched (not
anchored) in one tag's value ("" when absent); an unknown filter type makes the node skip.

Responding: one response per query, before the deadline, within the size limit; each ack and
response also goes through ``RelayFactor`` random alive members (type 9).

Originating: responses are matched by LTime then ID, after the deadline everything is ignored,
and acks and responses are each de-duplicated by sender.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Protocol

from serf_trio.record import record

from ..swim.api import Address
from ..wire.codec import DecodeError
from .messages import NodeFilter, TagFilter, decode_filter


class QueryParamsLike(Protocol):
    """The fields ``SerfNode.query`` reads (``rpc.api.QueryParams`` has them all)."""

    @property
    def name(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def filter_nodes(self) -> tuple[str, ...]: ...
    @property
    def filter_tags(self) -> dict[str, str]: ...
    @property
    def request_ack(self) -> bool: ...
    @property
    def relay_factor(self) -> int: ...
    @property
    def timeout(self) -> float: ...


@record
class QueryParam:
    """A plain ``QueryParamsLike`` for callers below the RPC layer."""

    name: str
    payload: bytes = b""
    filter_nodes: tuple[str, ...] = ()
    filter_tags: dict[str, str] = field(default_factory=dict)
    request_ack: bool = False
    relay_factor: int = 0
    timeout: float = 0.0  # seconds; 0 = default formula


def default_query_timeout(gossip_interval: float, mult: int, alive: int) -> float:
    """serf DefaultQueryTimeout: gossip_interval * mult * ceil(log10(n + 1)), n alive members."""
    return gossip_interval * mult * math.ceil(math.log10(alive + 1))


def filters_match(filters: tuple[bytes, ...], name: str, tags: dict[str, str]) -> bool:
    """serf shouldProcessQuery: every filter must match; undecodable filters never do."""
    for raw in filters:
        try:
            f = decode_filter(raw)
        except DecodeError:
            return False
        if isinstance(f, NodeFilter):
            if name not in f.names:
                return False
        elif isinstance(f, TagFilter):
            try:
                if re.search(f.expr, tags.get(f.tag, "")) is None:
                    return False
            except re.error:
                return False  # serf: an invalid regexp skips the query
    return True


class QueryBuffer:
    """serf queryBuffer: the IDs seen per LTime slot."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.min_time = 0  # serf queryMinTime (snapshot floor)
        self._slots: list[tuple[int, set[int]] | None] = [None] * size

    def accept(self, clock_time: int, ltime: int, qid: int) -> tuple[bool, str]:
        if ltime < self.min_time:
            return False, "older than the query floor"
        if clock_time > self.size and ltime < clock_time - self.size:
            return False, "received old query"
        idx = ltime % self.size
        slot = self._slots[idx]
        if slot is not None and slot[0] == ltime:
            if qid in slot[1]:
                return False, "duplicate"
            slot[1].add(qid)
        else:
            self._slots[idx] = (ltime, {qid})
        return True, ""


@dataclass(slots=True)
class OutgoingQuery:
    """A query we started (serf QueryResponse)."""

    query_id: int
    ltime: int
    id: int
    deadline: float
    acks: set[str] = field(default_factory=set)
    responses: set[str] = field(default_factory=set)
    # the conflict resolver reads responses itself: kept here when set
    internal: str = ""
    payloads: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class IncomingQuery:
    """A query delivered to this node, awaiting ``respond`` (serf Query)."""

    token: int
    name: str
    ltime: int
    id: int
    dest: Address  # the originator's
    source_node: str
    relay_factor: int
    deadline: float
    responded: bool = False
