"""``SerfConfig``: the knobs of the Serf layer, with Serf 0.9.4's ``DefaultConfig`` values.

Memberlist's own timing lives in ``swim.config.SwimConfig``; this record holds what Serf adds on
top (serf config.go ``DefaultConfig``; the agent overrides the coalescing periods).  Every field
says what it changes and what the trade-off is.
"""

from __future__ import annotations

from serf_trio.record import record

MAX_USER_EVENT_SIZE_LIMIT = 9216  # serf: UserEventSizeLimit may be raised up to this


@record
class SerfConfig:
    # Seconds to wait for a leave/force-leave/tag broadcast to be fully transmitted.
    broadcast_timeout: float = 5.0
    # Seconds a leaving agent stays up after the memberlist leave (the runtime waits this).
    leave_propagate_delay: float = 1.0
    # Dedupe window of user events (also the size of the push/pull Events array).  Changing it
    # breaks push/pull compatibility with real agents, which always send 512 slots.
    event_buffer: int = 512
    # Dedupe window of queries, by Lamport time.
    query_buffer: int = 512
    # len(name) + len(payload) of a user event, and its encoded size (max 9216).
    user_event_size_limit: int = 512
    # Encoded query message limit (type byte included).
    query_size_limit: int = 1024
    # Encoded query response (and relay) message limit.
    query_response_size_limit: int = 1024
    # Seconds between reaper runs (failed members past reconnect_timeout, left members past
    # tombstone_timeout are removed with a member-reap event).
    reap_interval: float = 15.0
    # Seconds between reconnect attempts to a random failed member.
    reconnect_interval: float = 30.0
    # Seconds a failed member is kept (and retried) before it is reaped.
    reconnect_timeout: float = 24 * 3600.0
    # Seconds a left member is kept (as a tombstone, so a stale alive cannot resurrect it).
    tombstone_timeout: float = 24 * 3600.0
    # Seconds an intent about a not-yet-known member is remembered.
    recent_intent_timeout: float = 300.0
    # Seconds within which a failed member coming back counts as a flap (statistics only).
    flap_timeout: float = 60.0
    # Seconds between queue depth checks; queues past max_queue_depth drop their oldest.
    queue_check_interval: float = 30.0
    queue_depth_warning: int = 128
    max_queue_depth: int = 4096
    # Default query timeout = gossip_interval * mult * ceil(log10(alive + 1)).
    query_timeout_mult: int = 16
    # Run _serf_conflict when another node claims our name; the minority shuts down.
    enable_name_conflict_resolution: bool = True
    # Skip Vivaldi: acks carry no payload and RTTs are not recorded.
    disable_coordinates: bool = False
    # Member event coalescing (0 = off; agent 3 s / 1 s).  Used by the runtime's event queue.
    coalesce_period: float = 0.0
    quiescent_period: float = 0.0
    # User event coalescing for events sent with coalesce=true (0 = off; agent 3 s / 1 s).
    user_coalesce_period: float = 0.0
    user_quiescent_period: float = 0.0
    # serf-trio extension: a member that stays "leaving" while memberlist still reports it
    # alive for this long is taken back to alive.  Serf can leave a restarted node stuck in
    # leaving when a stale leave intent outranks its join; a real leave finishes (memberlist
    # dead/left) well within broadcast_timeout + leave_propagate_delay.
    leaving_timeout: float = 15.0

    def __post_init__(self) -> None:
        if not 0 < self.user_event_size_limit <= MAX_USER_EVENT_SIZE_LIMIT:
            raise ValueError(
                f"user_event_size_limit must be 1..{MAX_USER_EVENT_SIZE_LIMIT}, "
                f"got {self.user_event_size_limit}"
            )
        if self.event_buffer <= 0 or self.query_buffer <= 0:
            raise ValueError("event_buffer and query_buffer must be positive")


AGENT_DEFAULTS = SerfConfig(
    coalesce_period=3.0,
    quiescent_period=1.0,
    user_coalesce_period=3.0,
    user_quiescent_period=1.0,
)
"""The agent's overrides: member and user event coalescing 3 s / 1 s."""
