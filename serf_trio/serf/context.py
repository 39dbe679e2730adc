"""``NodeContext``: what every component of one ``SerfNode`` shares.

The node is a façade over components that each own one concern (``membership``, ``reaper``,
``queries``, ``internal_queries``, ``events``, ``pushpull``, ``leave``).  They all need the
same few things - the config, who we are, the seeded RNG, where effects go, the member table
and whether we are still alive - and get them here; anything more specific (a clock, a queue,
another component, a memberlist call) is passed to each one explicitly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import field

from serf_trio.record import record

from ..swim.api import Address
from .config import SerfConfig
from .counters import SerfCounters
from .effects import Outbox
from .members import MemberState


@record
class NodeContext:
    config: SerfConfig
    name: str  # the local node
    addr: Address
    rng: random.Random  # the node's only randomness: draws happen in a fixed order
    out: Outbox
    members: dict[str, MemberState]  # the Serf member table (the local node included)
    is_alive: Callable[[], bool]  # our own lifecycle is "alive" (not leaving/left/shutdown)
    counters: SerfCounters = field(default_factory=SerfCounters)  # statistics only
    # The members whose status is failed or left, in the order they went down: the reaper and
    # reconnect walk these every few seconds instead of the whole table (10,000 members).
    # Membership adds and removes them; the reaper's erase forgets them.
    down: dict[str, None] = field(default_factory=dict)


__all__ = ["NodeContext"]
