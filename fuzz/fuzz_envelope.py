"""Fuzz the encrypted envelope: ``Envelope.open_packet`` and ``StreamFrameReader``, with
secretbox and AES-GCM keyrings.

Owns the rules of ``wire.crypto`` for bytes from the network:

* opening is total: a datagram or stream opens, or is refused with ``CryptoError``; a stream
  reader may also raise the ``DecodeError`` of the plaintext ``StreamParser`` behind it (no
  keyring, or ``verify_incoming`` off).  Anything else is a finding;
* with ``verify_incoming`` off a datagram is never refused (it is taken as plaintext), and
  without a keyring it passes through unchanged;
* sealing then opening gives the bytes back, under every cipher and key size, for packets
  and for streams cut into two chunks anywhere; a sealed frame with one byte changed (other
  than the unauthenticated AES-GCM version byte) is refused.

Random bytes rarely get past a MAC, so two modes seal the fuzz input with a known key first:
one round-trips it, the other encrypts it *as the inner plaintext of a version 0 (PKCS#7
padded) AES-GCM frame* without padding it, so the unpadding code sees arbitrary bytes.

Input layout: byte 0 picks the mode (low 2 bits) and the tamper mask (the rest), bytes 1-2
the tamper position or the stream cut, the rest is the payload.
"""

from __future__ import annotations

import contextlib
import struct
import sys

from fuzzkit import Finding, dedupe, golden_wire, instrument, main

with instrument(__name__ == "__main__"):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from serf_trio.wire.codec import DecodeError
    from serf_trio.wire.crypto import (
        AES_GCM_V0,
        Algorithm,
        CryptoError,
        Envelope,
        StreamFrameReader,
    )
    from serf_trio.wire.keyring import Keyring
    from serf_trio.wire.messages import MessageType, Ping
    from serf_trio.wire.packet import encode_packet
    from serf_trio.wire.stream import encode_stream_message

# The golden captures' keys (tests/data/vectors/README.md): K1 is 32 bytes, K2 16.
K1 = bytes(range(32))
K2 = bytes(range(16, 32))
AES = Algorithm.AES_GCM
BOX = Algorithm.SECRETBOX
NONCE = 12


def _zero_nonces(n: int) -> bytes:
    return bytes(n)  # deterministic: a harness seals the same bytes every run


def _env(
    algorithm: Algorithm, *keys: bytes, verify_incoming: bool = True, verify_outgoing: bool = True
) -> Envelope:
    return Envelope(
        Keyring(keys) if keys else None,
        algorithm,
        verify_incoming=verify_incoming,
        verify_outgoing=verify_outgoing,
        nonces=_zero_nonces,
    )


# Receivers: both ciphers under a two-key keyring, a lenient one, and encryption off.
STRICT = [_env(AES, K1, K2), _env(BOX, K1, K2), _env(AES, K2, K1)]
LENIENT = [_env(BOX, K1, K2, verify_incoming=False)]
PLAIN = _env(BOX)
# Senders: every cipher and key size a keyring may send with.
SENDERS = [(_env(AES, K1), 0), (_env(AES, K2), 1), (_env(BOX, K1), 0)]
READER = STRICT[0]  # opens all three senders' frames (AES K1/K2, secretbox K1)


def _open_stream(env: Envelope, chunks: list[bytes]) -> bytes | None:
    reader = StreamFrameReader(env)
    out = None
    for chunk in chunks:
        out = reader.feed(chunk)
    return out


def _raw_packet(payload: bytes) -> None:
    for env in STRICT:
        with contextlib.suppress(CryptoError):
            env.open_packet(payload)
    for env in LENIENT:
        env.open_packet(payload)  # verify_incoming off: never refused
    if PLAIN.open_packet(payload).data != payload:
        raise Finding("no keyring, yet the datagram changed")


def _sealed_packet(payload: bytes, pos: int, mask: int) -> None:
    for sender, _ in SENDERS:
        frame = sender.seal_packet(payload)
        opened = READER.open_packet(frame)
        if opened.data != payload or opened.algorithm is not sender.algorithm:
            raise Finding(f"sealed packet came back as {opened!r}")
        at = pos % len(frame)
        tampered = bytearray(frame)
        tampered[at] ^= mask
        try:
            got = READER.open_packet(bytes(tampered))
        except CryptoError:
            continue
        if at != 0:  # the AES-GCM version byte is not authenticated (memberlist's format)
            raise Finding(f"frame with byte {at} changed opened as {got!r}")


def _streams(payload: bytes, cut: int) -> None:
    at = cut % (len(payload) + 1)
    for env in [*STRICT, *LENIENT, PLAIN]:
        with contextlib.suppress(DecodeError):  # CryptoError is one
            _open_stream(env, [payload[:at], payload[at:]])
    for sender, _ in SENDERS:
        frame = sender.seal_stream(payload)
        at = cut % (len(frame) + 1)
        got = _open_stream(READER, [frame[:at], frame[at:]])
        if got != payload:
            raise Finding(f"sealed stream cut at {at} came back as {got!r}")


def _v0_frames(inner: bytes) -> None:
    """``inner`` as the decrypted body of version 0 frames (no padding added)."""
    aes = AESGCM(K1)
    nonce = bytes(NONCE)
    packet = bytes([AES_GCM_V0]) + nonce + aes.encrypt(nonce, inner, None)
    header = bytes([MessageType.ENCRYPT]) + struct.pack(">I", len(packet))
    stream = header + bytes([AES_GCM_V0]) + nonce + aes.encrypt(nonce, inner, header)
    try:
        opened = READER.open_packet(packet).data
    except CryptoError:
        opened = None
    try:
        streamed = _open_stream(READER, [stream])
    except CryptoError:
        streamed = None
    if opened != streamed:
        raise Finding(f"v0 packet opened as {opened!r}, stream as {streamed!r}")
    if opened is not None:
        n = len(inner) - len(opened)
        if not 1 <= n <= 16 or inner != opened + bytes([n]) * n:
            raise Finding(f"v0 unpadding of {inner!r} gave {opened!r}")


def check(data: bytes) -> None:
    if len(data) < 3:
        _raw_packet(data)
        return
    mode, mask = data[0] & 3, (data[0] >> 2) | 1
    pos = int.from_bytes(data[1:3], "big")
    payload = data[3:]
    if mode == 0:
        _raw_packet(payload)
    elif mode == 1:
        _sealed_packet(payload, pos, mask)
    elif mode == 2:
        _streams(payload, pos)
    else:
        _v0_frames(payload)


def seeds() -> list[bytes]:
    """Golden encrypted captures (raw and stream modes), and plaintext sealed each way."""
    ping = encode_packet([bytes([MessageType.PING]) + b"\x80"], crc=False, compress=False)
    stream = encode_stream_message(Ping(1, "fuzz"), compress=False)
    out = [b"\x00\x00\x00" + p for p in golden_wire("udp", encrypted=True)]
    out += [b"\x02\x00\x10" + s for s in golden_wire("tcp", encrypted=True)]
    out += [b"\x02\x00\x00" + s for s in golden_wire("tcp", encrypted=False)[:10]]
    for sender, _ in SENDERS:
        out.append(b"\x00\x00\x00" + sender.seal_packet(ping))
        out.append(b"\x02\x00\x07" + sender.seal_stream(stream))
    out += [b"\x05\x00\x05" + ping, b"\x06\x00\x09" + stream]
    out += [b"\x03\x00\x00" + b"sixteen bytes!!" + b"\x01", b"\x03\x00\x00" + bytes([16] * 16)]
    return dedupe(out)


if __name__ == "__main__":
    main(check, seeds)
    sys.exit(0)
