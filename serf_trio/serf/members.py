"""The Serf member table: status, intent bookkeeping and the views handed out.

Serf's member status (``alive``, ``leaving``, ``left``, ``failed``) is separate from
memberlist's state: it combines memberlist events with join/leave *intents* ordered by the
member Lamport clock.  Each member keeps ``status_ltime`` (the LTime of the last intent
accepted about it); intents about names memberlist has not reported yet are remembered in
``recent_intents`` (serf recentIntents, kept ``recent_intent_timeout``) and applied when the
member appears.  Failed and left members stay (for reconnects and as tombstones) until the
reaper removes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serf_trio.record import record

from ..swim.api import Address

STATUS_CODES = {"none": 0, "alive": 1, "leaving": 2, "left": 3, "failed": 4}
# What a member without (complete) versions is shown as: memberlist 1..5 speaking 2, Serf 2..5
# speaking 5.
_DEFAULT_VSN = bytes([1, 5, 2, 2, 5, 5])


@record
class SerfMember:
    """A read-only view of one Serf member."""

    name: str
    addr: Address
    tags: dict[str, str]
    status: str  # alive | leaving | left | failed
    protocol_min: int
    protocol_max: int
    protocol_cur: int
    delegate_min: int
    delegate_max: int
    delegate_cur: int
    status_ltime: int

    @property
    def status_code(self) -> int:
        return STATUS_CODES.get(self.status, 0)


@dataclass(slots=True)
class MemberState:
    """Mutable record behind a ``SerfMember``."""

    name: str
    addr: Address
    tags: dict[str, str]
    status: str
    vsn: bytes
    status_ltime: int = 0
    leave_time: float = 0.0  # core time it became failed/left (for reaping)
    leaving_since: float = 0.0  # core time a leave intent made it "leaving"
    leaving_incarnation: int = 0  # memberlist incarnation when it became "leaving"
    # Held by several nodes' tables at once (simulation only: ``SerfNode.assume_converged``);
    # never written through: ``Membership`` copies it first (copy-on-write).
    shared: bool = field(default=False, repr=False, compare=False)

    @property
    def protocol_max(self) -> int:
        """``view().protocol_max`` without building a view (which copies the tags): the
        relay of a query response checks it for every member."""
        return self.vsn[1] if len(self.vsn) >= 6 else _DEFAULT_VSN[1]

    def view(self) -> SerfMember:
        v = self.vsn if len(self.vsn) >= 6 else _DEFAULT_VSN
        return SerfMember(
            self.name,
            self.addr,
            dict(self.tags),
            self.status,
            v[0],
            v[1],
            v[2],
            v[3],
            v[4],
            v[5],
            self.status_ltime,
        )


@dataclass(slots=True)
class Intent:
    """A remembered intent about a member we do not know yet."""

    kind: str  # "join" | "leave"
    ltime: int
    seen: float


class RecentIntents:
    """serf recentIntents: the newest intent per unknown node, expiring after a timeout."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._by_node: dict[str, Intent] = {}

    def upsert(self, node: str, kind: str, ltime: int, now: float) -> bool:
        """Remember the intent if newer than what we hold; True if it was news (rebroadcast)."""
        old = self._by_node.get(node)
        if old is None or ltime > old.ltime:
            self._by_node[node] = Intent(kind, ltime, now)
            return True
        return False

    def get(self, node: str, kind: str) -> int | None:
        it = self._by_node.get(node)
        return it.ltime if it is not None and it.kind == kind else None

    def expire(self, now: float) -> None:
        stale = [n for n, it in self._by_node.items() if now - it.seen > self.timeout]
        for n in stale:
            del self._by_node[n]
