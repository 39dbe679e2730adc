"""Vivaldi network coordinates, as Serf's ``coordinate`` package computes and ships them.

Each node keeps an 8-dimensional Vivaldi coordinate with a height, an error estimate and an
adjustment term.  Every ack it sends to a direct ping carries ``01`` + msgpack coordinate
(SERF.md 11: keys Adjustment, Error, Height, Vec; float64 everywhere), and every ack to one of
its own direct probes updates the coordinate from the measured RTT.  The update follows serf
``coordinate/client.go``: median latency filter per peer (3 samples), Vivaldi step weighted by
the two error estimates, an adjustment term from a 20-sample window, gravity toward the
origin, and a reset when the coordinate stops being finite.

Randomness (the random unit vector for two coincident coordinates) comes from an injected
``random.Random``.  ``NodeCoordinates`` is what a Serf node keeps: its client and the latest
coordinate of every peer that answered its probes (serf ping_delegate.go).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from serf_trio.record import record

if TYPE_CHECKING:
    import random

# The ping-payload codec imports ``wire.codec`` (and msgpack) inside its two functions: the
# ``Coordinate`` record is also the RPC one (``get-coordinate``, ``serf-trio rtt``), and an RPC
# client must not pay for loading the whole wire package to get it.

PING_PAYLOAD_VERSION = 1  # serf ping_delegate.go PingVersion
ZERO_THRESHOLD = 1.0e-6
MAX_RTT = 10.0  # seconds; serf refuses samples outside [0, 10 s]


@record
class VivaldiConfig:
    dimensionality: int = 8
    vivaldi_error_max: float = 1.5
    vivaldi_ce: float = 0.25
    vivaldi_cc: float = 0.25
    adjustment_window_size: int = 20
    height_min: float = 1.0e-5
    latency_filter_size: int = 3
    gravity_rho: float = 150.0


@record
class Coordinate:
    """A Vivaldi network coordinate (8 dimensions in Serf); also the RPC ``Coord`` record."""

    vec: tuple[float, ...]
    error: float
    adjustment: float
    height: float

    def is_valid(self) -> bool:
        vals = (*self.vec, self.error, self.adjustment, self.height)
        return all(math.isfinite(v) for v in vals)

    def raw_distance_to(self, other: Coordinate) -> float:
        return _magnitude(_diff(self.vec, other.vec)) + self.height + other.height

    def distance_to(self, other: Coordinate) -> float:
        """Estimated RTT in seconds; the adjustments count only if they keep it positive."""
        dist = self.raw_distance_to(other)
        adjusted = dist + self.adjustment + other.adjustment
        return adjusted if adjusted > 0.0 else dist


def new_coordinate(cfg: VivaldiConfig) -> Coordinate:
    return Coordinate((0.0,) * cfg.dimensionality, cfg.vivaldi_error_max, 0.0, cfg.height_min)


def _diff(a: tuple[float, ...], b: tuple[float, ...]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _magnitude(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def encode_ping_payload(c: Coordinate) -> bytes:
    """``01`` + msgpack coordinate, byte-identical to Serf's ack payload."""
    body = {
        "Adjustment": float(c.adjustment),
        "Error": float(c.error),
        "Height": float(c.height),
        "Vec": [float(x) for x in c.vec],
    }
    from ..wire.codec import pack

    return bytes([PING_PAYLOAD_VERSION]) + pack(body)


def decode_ping_payload(payload: bytes) -> Coordinate | None:
    """The coordinate in an ack payload, or ``None`` if empty, another version or malformed."""
    import msgpack

    from ..wire.codec import MSGPACK_ERRORS

    if not payload or payload[0] != PING_PAYLOAD_VERSION:
        return None
    try:
        obj = msgpack.unpackb(payload[1:], raw=True, max_array_len=64, max_map_len=16)
    except MSGPACK_ERRORS:
        return None
    if not isinstance(obj, dict):
        return None

    def num(v: object) -> float | None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        return float(v)

    vec_raw = obj.get(b"Vec")
    if not isinstance(vec_raw, list):
        return None
    vec = [num(x) for x in vec_raw]
    vals = [num(obj.get(k, 0.0)) for k in (b"Error", b"Adjustment", b"Height")]
    if any(v is None for v in vec) or any(v is None for v in vals):
        return None
    err, adj, height = (float(v) for v in vals if v is not None)
    return Coordinate(tuple(float(x) for x in vec if x is not None), err, adj, height)


@dataclass(slots=True)
class VivaldiClient:
    """Our coordinate and the state needed to update it (serf coordinate.Client)."""

    rng: random.Random
    config: VivaldiConfig = field(default_factory=VivaldiConfig)
    coord: Coordinate = field(init=False)
    _origin: Coordinate = field(init=False)
    _adjustment: list[float] = field(init=False)
    _adjustment_index: int = 0
    _samples: dict[str, list[float]] = field(default_factory=dict)
    resets: int = 0

    def __post_init__(self) -> None:
        self.coord = new_coordinate(self.config)
        self._origin = new_coordinate(self.config)
        self._adjustment = [0.0] * self.config.adjustment_window_size

    def forget(self, node: str) -> None:
        self._samples.pop(node, None)

    def update(self, node: str, other: Coordinate, rtt: float) -> Coordinate | None:
        """Fold one RTT sample (seconds) to ``node`` at ``other`` in; ``None`` if refused."""
        if len(other.vec) != self.config.dimensionality or not other.is_valid():
            return None
        if not 0.0 <= rtt <= MAX_RTT:
            return None
        rtt = self._latency_filter(node, rtt)
        self._update_vivaldi(other, rtt)
        self._update_adjustment(other, rtt)
        self._update_gravity()
        if not self.coord.is_valid():
            self.resets += 1
            self.coord = new_coordinate(self.config)
        return self.coord

    def _latency_filter(self, node: str, rtt: float) -> float:
        samples = self._samples.setdefault(node, [])
        samples.append(rtt)
        if len(samples) > self.config.latency_filter_size:
            del samples[0]
        ordered = sorted(samples)
        return ordered[len(ordered) // 2]

    def _update_vivaldi(self, other: Coordinate, rtt: float) -> None:
        cfg = self.config
        rtt = max(rtt, ZERO_THRESHOLD)
        dist = self.coord.distance_to(other)
        wrongness = abs(dist - rtt) / rtt
        total = max(self.coord.error + other.error, ZERO_THRESHOLD)
        weight = self.coord.error / total
        error = cfg.vivaldi_ce * weight * wrongness + self.coord.error * (
            1.0 - cfg.vivaldi_ce * weight
        )
        error = min(error, cfg.vivaldi_error_max)
        force = cfg.vivaldi_cc * weight * (rtt - dist)
        c = self.coord
        self.coord = self._apply_force(
            Coordinate(c.vec, error, c.adjustment, c.height), force, other
        )

    def _update_adjustment(self, other: Coordinate, rtt: float) -> None:
        n = self.config.adjustment_window_size
        if n == 0:
            return
        self._adjustment[self._adjustment_index] = rtt - self.coord.raw_distance_to(other)
        self._adjustment_index = (self._adjustment_index + 1) % n
        c = self.coord
        self.coord = Coordinate(c.vec, c.error, sum(self._adjustment) / (2.0 * n), c.height)

    def _update_gravity(self) -> None:
        dist = self._origin.distance_to(self.coord)
        force = -1.0 * (dist / self.config.gravity_rho) ** 2
        self.coord = self._apply_force(self.coord, force, self._origin)

    def _apply_force(self, c: Coordinate, force: float, other: Coordinate) -> Coordinate:
        unit, mag = self._unit_vector_at(c.vec, other.vec)
        vec = tuple(x + u * force for x, u in zip(c.vec, unit, strict=True))
        height = c.height
        if mag > ZERO_THRESHOLD:
            height = max((c.height + other.height) * force / mag + c.height, self.config.height_min)
        return Coordinate(vec, c.error, c.adjustment, height)

    def _unit_vector_at(
        self, a: tuple[float, ...], b: tuple[float, ...]
    ) -> tuple[list[float], float]:
        d = _diff(a, b)
        mag = _magnitude(d)
        if mag > ZERO_THRESHOLD:
            return [x / mag for x in d], mag
        # Coincident points: push apart in a random direction (serf unitVectorAt).
        d = [self.rng.random() - 0.5 for _ in d]
        mag = _magnitude(d)
        if mag > ZERO_THRESHOLD:
            return [x / mag for x in d], 0.0
        d = [0.0] * len(d)
        d[0] = 1.0
        return d, 0.0


class NodeCoordinates:
    """A node's Vivaldi state (serf ping_delegate.go): our client, the peers' coordinates."""

    __slots__ = ("_enabled", "_peers", "client")

    def __init__(self, client: VivaldiClient, *, enabled: bool = True) -> None:
        self.client = client
        self._enabled = enabled  # SerfConfig.disable_coordinates turns it all off
        self._peers: dict[str, Coordinate] = {}

    def get(self, name: str, local_name: str) -> Coordinate | None:
        return self.client.coord if name == local_name else self._peers.get(name)

    def ack_payload(self) -> bytes:
        """What our acks carry: ``01`` + our coordinate (nothing when disabled)."""
        return encode_ping_payload(self.client.coord) if self._enabled else b""

    def ping_complete(self, node: str, rtt: float, payload: bytes) -> None:
        """An ack to our direct probe of ``node`` came back after ``rtt`` with ``payload``."""
        if not self._enabled:
            return
        coord = decode_ping_payload(payload)
        if coord is None:
            return
        if self.client.update(node, coord, rtt) is not None:
            self._peers[node] = coord

    def forget(self, name: str) -> None:
        """A member was erased: its coordinate and samples go."""
        self._peers.pop(name, None)
        self.client.forget(name)
