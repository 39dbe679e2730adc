"""Timing and sizing knobs of the membership core, with memberlist's three profiles.

Every field documents its effect and the trade-off; the values are memberlist 0.2.2's
``DefaultLANConfig`` / ``DefaultWANConfig`` / ``DefaultLocalConfig`` (memberlist
config.go).  The formulas that turn them into timeouts live in ``formulas.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from serf_trio.record import record

Profile = Literal["lan", "wan", "local"]


@record
class SwimConfig:
    # Seconds between failure probes of one node.  Lower = faster detection, more traffic
    # (one ping per interval per node, cluster-wide N pings per interval).
    probe_interval: float = 1.0
    # Seconds to wait for a direct ack before starting indirect probes.  Should sit near the
    # 99th percentile RTT; too low gives spurious indirect probes.
    probe_timeout: float = 0.5
    # Seconds between gossip rounds (piggy-backed broadcasts to ``gossip_nodes`` peers).
    gossip_interval: float = 0.2
    # Peers per gossip round.  More = faster spread, more packets.
    gossip_nodes: int = 3
    # Suspicion min timeout = suspicion_mult * max(1, log10(n)) * probe_interval:
    # 10k nodes -> 4 * 4 * 1 s = 16 s min, 96 s max with suspicion_max_timeout_mult 6.
    suspicion_mult: int = 4
    # Lifeguard: the suspicion timer starts at this multiple of the min timeout and shrinks
    # as independent confirmations arrive.
    suspicion_max_timeout_mult: int = 6
    # Broadcast transmit limit = retransmit_mult * ceil(log10(n + 1)); 10k nodes -> 4 * 5 = 20.
    retransmit_mult: int = 4
    # Seconds between full-state push/pull syncs with one random node (scaled past 32 nodes).
    # 0 disables periodic sync (join still pushes/pulls).
    push_pull_interval: float = 30.0
    # Seconds a TCP exchange (push/pull, fallback ping) may take in total.
    tcp_timeout: float = 10.0
    # Relays asked for an indirect probe after a missed direct ack.
    indirect_checks: int = 3
    # Lifeguard local-health multiplier cap: probe interval scales up to this factor.
    awareness_max_multiplier: int = 8
    # Seconds after which dead nodes stop receiving gossip and may be forgotten.
    gossip_to_the_dead_time: float = 30.0
    # Seconds after death that a node may re-join with a new address (0 = never).
    dead_node_reclaim_time: float = 0.0
    # Packet budget for piggy-backed broadcasts (memberlist UDPBufferSize).
    udp_buffer_size: int = 1400
    # LZW-compress outgoing packets when that makes them shorter, and every stream (what
    # arrives compressed is always accepted).  Compression only where it pays: LZW in Python
    # costs ~0.15 µs of CPU per byte sent and ~0.06 per byte received, while a LAN moves a
    # byte in ~0.008 µs (1 Gbit/s); a 1,000-member push/pull is 83 KB, 14 KB compressed, for
    # 13 ms of CPU on the two ends against 0.6 ms of LAN wire time saved.  So the LAN and local
    # profiles send plain; the WAN profile (slow links) compresses, as memberlist does.
    enable_compression: bool = False
    # Also ping over TCP during a probe, so UDP-only trouble is not mistaken for death.
    disable_tcp_pings: bool = False
    # Lifeguard switches.  Off = plain SWIM: fixed suspicion timeout (the min), awareness
    # ignored, no nack requests.  Only useful for experiments and the Lifeguard benchmark.
    lifeguard: bool = True
    # Max messages kept in the broadcast queue before the oldest, most-sent are dropped.
    max_queued_broadcasts: int = 4096
    # Cap on node states accepted in one push/pull (defends memory; memberlist master uses 10k+).
    max_push_pull_nodes: int = 100_000


LAN = SwimConfig()
WAN = replace(
    LAN,
    probe_interval=5.0,
    probe_timeout=3.0,
    gossip_interval=0.5,
    gossip_nodes=4,
    suspicion_mult=6,
    push_pull_interval=60.0,
    tcp_timeout=30.0,
    gossip_to_the_dead_time=60.0,
    enable_compression=True,
)
LOCAL = replace(
    LAN,
    probe_interval=1.0,
    probe_timeout=0.2,
    gossip_interval=0.1,
    suspicion_mult=3,
    retransmit_mult=2,
    push_pull_interval=15.0,
    tcp_timeout=1.0,
    indirect_checks=1,
    gossip_to_the_dead_time=15.0,
)

PROFILES: dict[str, SwimConfig] = {"lan": LAN, "wan": WAN, "local": LOCAL}


def profile(name: str) -> SwimConfig:
    """The config of a named profile; ``ValueError`` names the valid ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; expected one of lan, wan, local") from None
