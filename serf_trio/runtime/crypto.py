"""The transport's encryption: a ``wire.crypto.Envelope`` behind the ``WireCrypto`` seam, with
the counters and log lines an operator needs.

``EnvelopeCrypto`` seals what the transport sends and opens what it receives, and owns the
policy around refusals (the envelope itself only says *why* it refused):

* every refused packet or stream is counted by cause (``plaintext``, ``undecryptable``,
  ``malformed``, ``too_large``) and logged as ``packet_dropped`` / ``stream_rejected`` naming
  the source, at most once per cause and source host every ``log_interval`` seconds (the
  next line carries the number suppressed meanwhile), so a flood of foreign packets cannot
  flood the log.  memberlist's first bytes 0 and 1 are both message types (ping, indirect
  ping) and AES-GCM versions, so the envelope calls a plaintext ping "too small to decrypt"
  (or undecryptable); a refused datagram that decodes whole as a memberlist packet is counted
  and logged as ``plaintext``, which is what it is;
* a node that sends secretbox and receives aes-gcm from a peer logs once per peer host that
  Serf agents cannot read secretbox and that ``encrypt_algorithm = "aes-gcm"`` is needed to
  join them (``peer_sends_aes_gcm``);
* what was opened is counted by cipher (``aes-gcm``, ``secretbox``, ``plaintext``).

Counters are read by ``stats()`` (the agent's ``info`` / RPC ``stats``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
import trio

from serf_trio.swim.api import Address
from serf_trio.wire.crypto import Algorithm, Cause, CryptoError, Envelope, StreamFrameReader
from serf_trio.wire.packet import decode_packet

from .transport import StreamReader

AES_GCM_HINT = (
    "this node sends secretbox and the peer sends aes-gcm; if the peer is a Serf agent it "
    'cannot read secretbox: set encrypt_algorithm = "aes-gcm" (--encrypt-algorithm aes-gcm) '
    "on every serf-trio node to join Serf agents (serf-trio peers read both ciphers)"
)
_MAX_TRACKED = 4096  # sources remembered for rate limiting / notices before starting over
CAUSES = ("plaintext", "undecryptable", "malformed", "too_large")


class _RateLimiter:
    """At most one line per key every ``interval`` seconds; counts what it held back."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def allow(self, key: tuple[str, str]) -> int | None:
        """``None`` to stay quiet, else the number of lines suppressed since the last one."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if len(self._last) >= _MAX_TRACKED:
            self._last.clear()
        self._last[key] = (now, 0)
        return last[1] if last is not None else 0


class EnvelopeCrypto:
    """``WireCrypto`` over an ``Envelope`` (see the module docstring)."""

    def __init__(
        self,
        envelope: Envelope,
        logger: Any = None,
        *,
        log_interval: float = 10.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.envelope = envelope
        self._log: Any = logger if logger is not None else structlog.get_logger()
        self._limiter = _RateLimiter(log_interval, clock)
        self._aes_peers: set[str] = set()
        self.dropped: dict[str, int] = dict.fromkeys(CAUSES, 0)
        self.opened: dict[str, int] = {"aes-gcm": 0, "secretbox": 0, "plaintext": 0}

    @property
    def overhead(self) -> int:
        return self.envelope.overhead

    # -- WireCrypto ---------------------------------------------------------------------------

    def seal_packet(self, data: bytes) -> bytes:
        return self.envelope.seal_packet(data)

    def open_packet(self, data: bytes, src: Address) -> bytes:
        try:
            opened = self.envelope.open_packet(data)
        except CryptoError as exc:
            self._refused("packet_dropped", exc, src.host, str(src), _packet_cause(exc, data))
            raise
        self._count(opened.algorithm, src.host)
        return opened.data

    def seal_stream(self, data: bytes) -> bytes:
        return self.envelope.seal_stream(data)

    def stream_reader(self, peer: str) -> StreamReader:
        return _CountingReader(self, self.envelope.stream_reader(), peer)

    # -- views --------------------------------------------------------------------------------

    def stats(self) -> dict[str, str]:
        env = self.envelope
        keyring = env.keyring
        out = {
            "encrypted": str(env.enabled).lower(),
            "algorithm": env.algorithm.value if env.enabled else "none",
            "keys": str(len(keyring) if keyring is not None else 0),
            "verify_incoming": str(env.verify_incoming).lower(),
            "verify_outgoing": str(env.verify_outgoing).lower(),
        }
        out.update({f"received_{k.replace('-', '_')}": str(v) for k, v in self.opened.items()})
        out.update({f"dropped_{k}": str(v) for k, v in self.dropped.items()})
        return out

    # -- internals ----------------------------------------------------------------------------

    def _count(self, algorithm: Algorithm | None, host: str) -> None:
        self.opened[algorithm.value if algorithm is not None else "plaintext"] += 1
        if (
            algorithm is Algorithm.AES_GCM
            and self.envelope.algorithm is Algorithm.SECRETBOX
            and host not in self._aes_peers
        ):
            if len(self._aes_peers) >= _MAX_TRACKED:
                self._aes_peers.clear()
            self._aes_peers.add(host)
            self._log.warning("peer_sends_aes_gcm", peer=host, hint=AES_GCM_HINT)

    def _refused(
        self, event: str, exc: CryptoError, host: str, src: str, cause: Cause | None = None
    ) -> None:
        cause = cause or exc.cause
        self.dropped[cause] += 1
        suppressed = self._limiter.allow((cause, host))
        if suppressed is not None:
            detail = str(exc)
            if cause != exc.cause:
                detail = f"plaintext memberlist packet refused ({detail})"
            self._log.warning(event, reason=cause, detail=detail, src=src, suppressed=suppressed)


def _packet_cause(exc: CryptoError, data: bytes) -> Cause:
    """Why a datagram was refused: the envelope's cause, except that a frame starting with 0 or
    1 (an AES-GCM version, but also memberlist's ping and indirect-ping types) that decodes
    whole as a plaintext memberlist packet was plaintext."""
    if exc.cause in ("malformed", "undecryptable") and data[:1] in (b"\x00", b"\x01"):
        decoded = decode_packet(data)
        if decoded.messages and not decoded.errors:
            return "plaintext"
    return exc.cause


class _CountingReader:
    """A stream reader that counts and reports what the envelope refused or opened."""

    def __init__(self, owner: EnvelopeCrypto, inner: StreamFrameReader, peer: str) -> None:
        self._owner = owner
        self._inner = inner
        self._peer = peer
        self._host = peer.rpartition(":")[0].strip("[]") or peer

    def feed(self, chunk: bytes) -> bytes | None:
        try:
            msg = self._inner.feed(chunk)
        except CryptoError as exc:
            self._owner._refused("stream_rejected", exc, self._host, self._peer)
            raise
        if msg is not None and self._inner.opened is not None:
            self._owner._count(self._inner.opened.algorithm, self._host)
        return msg


__all__ = ["AES_GCM_HINT", "CAUSES", "EnvelopeCrypto"]
