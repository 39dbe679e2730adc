"""serf-trio: a HashiCorp Serf compatible cluster-membership agent and library on trio.

The library API (``Node``, ``open_node`` and their records, see ``serf_trio.api``) is exported
here lazily: ``import serf_trio`` itself imports nothing, so the command-line client, which
lives in this package too, starts without loading trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serf_trio.api import (
        Ack,
        Address,
        DeliveryStats,
        Event,
        EventQueue,
        JoinError,
        KeyReport,
        KeyringError,
        Member,
        MemberEvent,
        Network,
        Node,
        NotRunningError,
        QueryEvent,
        QueryReplies,
        Response,
        SerfConfig,
        SerfError,
        StatsRegistry,
        SwimConfig,
        UserEvent,
        open_node,
    )

__all__ = [
    "Ack",
    "Address",
    "DeliveryStats",
    "Event",
    "EventQueue",
    "JoinError",
    "KeyReport",
    "KeyringError",
    "Member",
    "MemberEvent",
    "Network",
    "Node",
    "NotRunningError",
    "QueryEvent",
    "QueryReplies",
    "Response",
    "SerfConfig",
    "SerfError",
    "StatsRegistry",
    "SwimConfig",
    "UserEvent",
    "open_node",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from serf_trio import api

        return getattr(api, name)
    raise AttributeError(f"module 'serf_trio' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
