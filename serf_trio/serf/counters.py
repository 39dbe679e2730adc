"""``SerfCounters``: the Serf layer's running counters (read through ``SerfNode.serf_statistics``).

One mutable record shared by the components through ``NodeContext``.  Counting never changes
behaviour: no randomness is drawn, no clock read, nothing emitted.  The dicts keyed by name are
bounded (``swim.tally``): event and query names come from the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..swim.tally import tally


@dataclass(slots=True)
class SerfCounters:
    member_events: dict[str, int] = field(default_factory=dict)  # by kind (member-join, ...)
    flaps: int = 0  # a failed member came back within flap_timeout
    user_events_sent: int = 0
    user_events_received: int = 0  # delivered here (after dedupe)
    user_events_by_name: dict[str, int] = field(default_factory=dict)  # received
    # Dropped on arrival as older than the event buffer's window or the snapshot floor (serf
    # handleUserEvent: "received old event"); duplicates are not drops (already delivered).
    user_events_too_old: int = 0
    queries_sent: int = 0
    queries_received: int = 0  # delivered here
    queries_by_name: dict[str, int] = field(default_factory=dict)  # received
    queries_too_old: int = 0  # dropped on arrival, as for user events
    query_acks: int = 0  # received by us as the originator
    query_responses: int = 0  # received by us as the originator
    messages_sent: int = 0  # Serf messages: each broadcast transmission and direct packet
    messages_received: int = 0  # Serf messages decoded from memberlist user messages

    def member_event(self, kind: str, n: int = 1) -> None:
        tally(self.member_events, kind, n)

    def user_event_received(self, name: str) -> None:
        self.user_events_received += 1
        tally(self.user_events_by_name, name)

    def query_received(self, name: str) -> None:
        self.queries_received += 1
        tally(self.queries_by_name, name)


__all__ = ["SerfCounters"]
