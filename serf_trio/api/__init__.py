"""The library API: run a Serf cluster member inside a trio program (``node.Node``)."""

from __future__ import annotations

from serf_trio.runtime.delivery import DeliveryStats, EventQueue
from serf_trio.runtime.driver import JoinError, NotRunningError
from serf_trio.runtime.stats import StatsRegistry
from serf_trio.serf.config import SerfConfig
from serf_trio.serf.node import SerfError
from serf_trio.swim.api import Address
from serf_trio.swim.config import SwimConfig
from serf_trio.wire.keyring import KeyringError

from .events import Ack, Event, KeyReport, Member, MemberEvent, QueryEvent, Response, UserEvent
from .node import Network, Node, QueryReplies, open_node

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
