"""Fuzz the UDP receive path: ``wire.packet.decode_packet`` and a Serf core's ``handle_packet``.

Owns the rule "no exception escapes the receive path" for datagrams.  The runtime
(``runtime.transport`` UDP loop) opens a datagram with the envelope, dropping ``DecodeError``,
and hands the plaintext to the driver, which calls ``core.handle_packet(now, src, data)`` with
no handler around it: anything that escapes kills the node's driver.  So this harness

* decodes the bytes with ``decode_packet``, which is documented total (peer input yields
  messages and error texts, never an exception) and bounded (one shared decompression budget
  per datagram, ``MAX_DECOMPRESSED``): *any* exception is a finding, and so is an overdrawn
  budget;
* feeds the same bytes, as a datagram from a peer, to a fresh ``SerfNode`` (a memberlist core
  with the Serf layer on top, so Serf messages inside user messages are decoded and acted on
  too), built with a fixed clock and seed, then runs its timers once: *any* exception is a
  finding (no error type is allowed out of ``handle_packet`` or ``tick``).

Encryption is left to ``fuzz_envelope``: with no keyring the transport passes the bytes through
unchanged, which is the path taken here.
"""

from __future__ import annotations

import random
import sys

from fuzzkit import Finding, dedupe, golden_wire, instrument, known, main

with instrument(__name__ == "__main__"):
    from serf_trio.serf.config import SerfConfig
    from serf_trio.serf.node import SerfNode
    from serf_trio.swim.api import Address
    from serf_trio.swim.config import SwimConfig
    from serf_trio.wire.codec import encode_message
    from serf_trio.wire.messages import (
        DEFAULT_VSN,
        Ack,
        Alive,
        Dead,
        IndirectPing,
        Message,
        Nack,
        Ping,
        Suspect,
        UserMsg,
    )
    from serf_trio.wire.packet import (
        MAX_DECOMPRESSED,
        DecodedPacket,
        compress_message,
        decode_packet,
        encode_packet,
    )

NAME = "fuzz"
LOCAL = Address("127.0.0.1", 7946)
PEER = Address("127.0.0.2", 7946)
NOW = 1000.0  # the fixed clock every core is built and fed at
LATER = NOW + 60.0  # one tick past every timer a single packet can set (probe, relay, suspicion)
_SERF = SerfConfig()
_SWIM = SwimConfig()


def new_core() -> SerfNode:
    """A fresh, deterministic Serf core (same seed, same clock) for one input."""
    return SerfNode(_SERF, _SWIM, NAME, LOCAL, rng=random.Random(0), now=NOW)


def check(data: bytes) -> None:
    decoded = decode_packet(data)  # total: any exception escapes and is a finding
    if not isinstance(decoded, DecodedPacket):
        raise Finding(f"decode_packet returned {type(decoded).__name__}")
    if not 0 <= decoded.budget <= MAX_DECOMPRESSED:
        raise Finding(f"decompression budget overdrawn: {decoded.budget}")
    core = new_core()
    try:
        core.handle_packet(NOW, PEER, data)  # the receive path: nothing may escape
        core.tick(LATER)
    except Exception as exc:
        if not known(exc):
            raise


def seeds() -> list[bytes]:
    """Golden plaintext datagrams plus one of each packet message, framed every way."""
    peer = PEER.packed()
    msgs: list[Message] = [
        Ping(1, NAME, peer, PEER.port, "peer"),
        IndirectPing(2, LOCAL.packed(), LOCAL.port, NAME, True, peer, PEER.port, "peer"),
        Ack(3, b"payload"),
        Nack(4),
        Alive(1, "peer", peer, PEER.port, b"", DEFAULT_VSN),
        Suspect(1, NAME, "peer"),
        Suspect(1, "peer", "other"),
        Dead(2, "peer", "peer"),
        UserMsg(b"\x01user event payload"),
    ]
    parts = [encode_message(m) for m in msgs]
    out = list(golden_wire("udp"))
    out += parts
    flags = [(crc, c) for crc in (False, True) for c in (False, True)]
    out += [encode_packet(parts, crc=crc, compress=c) for crc, c in flags]
    out.append(compress_message(encode_packet(parts[:3], crc=False, compress=False)))
    return dedupe(out)


if __name__ == "__main__":
    main(check, seeds)
    sys.exit(0)
