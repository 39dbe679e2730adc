"""The encryption envelope (``wire.crypto``): memberlist's AES-GCM framing and secretbox.

* Go's bytes: every AES-GCM v1 frame the real agent sent is rebuilt byte for byte from its
  plaintext, key and nonce (packets and ``0a | L | ...`` streams), the Python probe's v0 frame
  opens, and the agent's refusal of a plaintext stream is reproduced, text and sealed reply.
* Round trips for both ciphers and every key size, streams fed whole and byte by byte, cipher
  agility between secretbox and aes-gcm nodes, key rotation and the index of the opening key.
* memberlist's verify_incoming / verify_outgoing switches, a node without a keyring, the
  stream size limit, the packet overhead, and the cause of every refusal.
* Fuzzing (Hypothesis, derandomized): garbled, truncated, bit-flipped, random and wrong-key
  frames, whole and in random chunkings, only ever raise ``CryptoError`` / ``DecodeError``,
  never open to anything but the original plaintext, and read the same however chunked.
* The cipher libraries are imported only when a key is used.
"""

from __future__ import annotations

import itertools
import json
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serf_trio.wire.codec import DecodeError, FramingError
from serf_trio.wire.crypto import (
    AES_GCM_V0,
    AES_GCM_V1,
    NO_KEY_OPENED,
    OVERHEAD,
    PLAINTEXT_REFUSED,
    SECRETBOX_V1,
    Algorithm,
    Cause,
    CryptoError,
    Envelope,
    Opened,
    aes_gcm_seal,
    secretbox_seal,
)
from serf_trio.wire.keyring import Keyring, KeyringError, decode_key
from serf_trio.wire.messages import Ping, UserMsg
from serf_trio.wire.stream import (
    ENCRYPTED_BUT_NOT_CONFIGURED,
    MAX_STREAM_BYTES,
    decode_stream_message,
    encode_stream_error,
    encode_stream_message,
)

ROOT = Path(__file__).resolve().parent.parent.parent
VECTORS = ROOT / "tests" / "data" / "vectors"
ENCRYPTED_CAPTURES = ("06-encrypted.jsonl", "09-python-probe.jsonl", "12-stream-error.jsonl")

AES = Algorithm.AES_GCM
BOX = Algorithm.SECRETBOX
CAUSES = get_args(Cause)

# The captures' keys (tests/data/vectors/README.md) and a few more.
K1 = bytes(range(32))
K2 = bytes(range(16, 32))
K16 = b"\x16" * 16
K24 = b"\x24" * 24
K32 = b"\x32" * 32
OTHER32 = b"\x99" * 32

PING = encode_stream_message(Ping(7, "n1", b"\x7f\x00\x00\x01", 7946, "n2"), compress=False)
USER = encode_stream_message(UserMsg(b"hello"), compress=False)
PLAINTEXTS = [b"", b"\x00", USER, PING, bytes(range(256)) * 5]


def _nonces() -> Callable[[int], bytes]:
    """Deterministic, never repeating nonces (a counter), for reproducible frames."""
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def _env(
    algorithm: Algorithm,
    *keys: bytes,
    verify_incoming: bool = True,
    verify_outgoing: bool = True,
) -> Envelope:
    return Envelope(
        Keyring(keys),
        algorithm,
        verify_incoming=verify_incoming,
        verify_outgoing=verify_outgoing,
        nonces=_nonces(),
    )


def _chunks(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    """``data`` cut into pieces of ``sizes`` (cycled), the last piece holding the rest."""
    pos = 0
    for size in itertools.cycle(sizes or [len(data) or 1]):
        if pos >= len(data):
            return
        yield data[pos : pos + size]
        pos += size


def _read_stream(env: Envelope, data: bytes, sizes: list[int]) -> tuple[str, Any]:
    """Feed ``data`` to a fresh stream reader in chunks: ("ok", Opened) once complete,
    ("incomplete", None), ("refused", cause) for ``CryptoError``, ("error", class name)."""
    reader = env.stream_reader()
    try:
        for chunk in _chunks(data, sizes):
            got = reader.feed(chunk)
            if got is not None:
                assert reader.opened is not None
                assert got == reader.opened.data
                assert reader.feed(b"more") == got  # complete: later bytes change nothing
                return "ok", reader.opened
    except CryptoError as exc:
        assert exc.cause in CAUSES
        return "refused", exc.cause
    except DecodeError as exc:
        return "error", type(exc).__name__
    assert reader.opened is None
    return "incomplete", None


def _open_stream(env: Envelope, data: bytes) -> Opened:
    kind, opened = _read_stream(env, data, [])
    assert kind == "ok", (kind, opened)
    assert isinstance(opened, Opened)
    return opened


# ---------------------------------------------------------------------------------------------
# Golden frames from the real agent


@dataclass(frozen=True)
class Captured:
    """One encrypted record of a capture."""

    where: str
    transport: str
    raw: bytes
    key: bytes
    key_index: int
    version: int
    nonce: bytes
    aad: bytes
    plaintext: bytes
    rec: dict[str, Any]


def _captures() -> list[Captured]:
    found: list[Captured] = []
    for name in ENCRYPTED_CAPTURES:
        lines = (VECTORS / name).read_text().splitlines()
        keys = [decode_key(k) for k in json.loads(lines[0])["_meta"]["keys_base64"]]
        for no, line in enumerate(lines[1:], start=1):
            rec = json.loads(line)
            enc = (rec.get("decoded") or {}).get("encrypted")
            if enc is None or "error" in enc:  # "error": a fake frame no key opens
                continue
            found.append(
                Captured(
                    where=f"{name.removesuffix('.jsonl')}:{no}",
                    transport=rec["transport"],
                    raw=bytes.fromhex(rec["hex"]),
                    key=keys[enc["key_index"]],
                    key_index=enc["key_index"],
                    version=enc["version"],
                    nonce=bytes.fromhex(enc["nonce"]),
                    aad=bytes.fromhex(enc.get("aad_hex", "")),
                    plaintext=bytes.fromhex(enc["plaintext_hex"]),
                    rec=rec,
                )
            )
    return found


CAPTURED = _captures()
V1 = [c for c in CAPTURED if c.version == AES_GCM_V1]
V0 = [c for c in CAPTURED if c.version == AES_GCM_V0]


def test_captures_hold_the_frames_these_tests_expect() -> None:
    assert len(V1) == 115
    assert [c.where for c in V0] == ["09-python-probe:21"]
    assert sum(c.transport == "tcp" for c in V1) == 3
    assert {c.key for c in CAPTURED} == {K1, K2}


@pytest.mark.parametrize("cap", V1, ids=[c.where for c in V1])
def test_go_frame_resealed_byte_for_byte(cap: Captured) -> None:
    """Our AES-GCM under Go's key and nonce gives exactly the bytes memberlist sent."""
    env = Envelope(Keyring([cap.key]), AES, nonces=lambda n: cap.nonce)
    if cap.transport == "udp":
        assert aes_gcm_seal(cap.key, cap.plaintext, nonce=cap.nonce) == cap.raw
        assert env.seal_packet(cap.plaintext) == cap.raw
    else:
        header = b"\x0a" + struct.pack(">I", len(cap.raw) - 5)
        assert cap.aad == header == cap.raw[:5]
        frame = aes_gcm_seal(cap.key, cap.plaintext, aad=cap.aad, nonce=cap.nonce)
        assert cap.aad + frame == cap.raw
        assert env.seal_stream(cap.plaintext) == cap.raw


def test_version_0_frame_from_the_probe_opens() -> None:
    """09: the probe sent the agent an AES-GCM v0 (PKCS#7 padded) ping; it was answered."""
    (cap,) = V0
    assert cap.transport == "udp" and cap.raw[0] == AES_GCM_V0
    assert (len(cap.raw) - 1 - 12 - 16) % 16 == 0  # padded to whole blocks
    assert len(cap.raw) - len(cap.plaintext) - 29 in range(1, 17)
    for env, index in [
        (_env(AES, K2), 0),
        (_env(AES, K1, K2), 1),
        (_env(BOX, K1, K2), 1),  # a secretbox node reads aes-gcm with its 16-byte key
    ]:
        opened = env.open_packet(cap.raw)
        assert opened == Opened(cap.plaintext, AES, index)
    # The probe padded as memberlist does, so sealing v0 reproduces its bytes.
    assert aes_gcm_seal(cap.key, cap.plaintext, version=AES_GCM_V0, nonce=cap.nonce) == cap.raw
    # ... and the agent accepted it: its next packet to the probe acks that ping.
    recs = [c.rec for c in CAPTURED if c.where.startswith("09-")]
    ping = cap.rec["decoded"]["inner"]["body"]
    after = recs[recs.index(cap.rec) + 1 :]
    reply = next(r for r in after if r.get("dst_node") == "py-probe")
    assert reply["decoded"]["inner"]["type"] == "ack(2)"
    assert reply["decoded"]["inner"]["body"]["SeqNo"] == ping["SeqNo"]


def _capture_record(name: str, no: int) -> dict[str, Any]:
    line = (VECTORS / name).read_text().splitlines()[no]
    rec: dict[str, Any] = json.loads(line)
    return rec


def test_plaintext_stream_refused_as_the_agent_did() -> None:
    """12: a plaintext ping stream to an encrypted agent; we refuse it with Go's text, and the
    sealed err reply we would write is byte for byte the agent's (same key and nonce)."""
    request = bytes.fromhex(_capture_record("12-stream-error.jsonl", 1)["hex"])
    (reply,) = [c for c in CAPTURED if c.where == "12-stream-error:2"]
    go_text = reply.rec["decoded"]["body"]["Error"]
    env = Envelope(Keyring([K2]), AES, nonces=lambda n: reply.nonce)
    with pytest.raises(CryptoError) as exc:
        env.stream_reader().feed(request)
    assert exc.value.cause == "plaintext"
    assert str(exc.value) == go_text == PLAINTEXT_REFUSED
    assert env.seal_stream(encode_stream_error(str(exc.value), compress=True)) == reply.raw


def test_encrypted_stream_refused_without_keyring_as_the_agent_did() -> None:
    """12: a (fake) encrypted stream to an agent without a keyring."""
    request = bytes.fromhex(_capture_record("12-stream-error.jsonl", 3)["hex"])
    go_reply = _capture_record("12-stream-error.jsonl", 4)
    assert request[0] == 0x0A
    with pytest.raises(FramingError) as exc:
        Envelope(None).stream_reader().feed(request)
    assert str(exc.value) == go_reply["decoded"]["body"]["Error"] == ENCRYPTED_BUT_NOT_CONFIGURED
    assert encode_stream_error(str(exc.value), compress=True).hex() == go_reply["hex"]


# ---------------------------------------------------------------------------------------------
# Round trips

SENDERS = [(AES, K16), (AES, K24), (AES, K32), (BOX, K32)]
SENDER_IDS = ["aes-gcm-128", "aes-gcm-192", "aes-gcm-256", "secretbox"]


@pytest.mark.parametrize(("algorithm", "key"), SENDERS, ids=SENDER_IDS)
@pytest.mark.parametrize("plain", PLAINTEXTS, ids=["empty", "one", "user", "ping", "big"])
def test_packet_round_trip(algorithm: Algorithm, key: bytes, plain: bytes) -> None:
    env = _env(algorithm, key)
    sealed = env.seal_packet(plain)
    version = AES_GCM_V1 if algorithm is AES else SECRETBOX_V1
    nonce_size = 12 if algorithm is AES else 24
    assert sealed[0] == version
    assert sealed[1 : 1 + nonce_size] == (1).to_bytes(nonce_size, "big")  # from env's nonces
    assert len(sealed) == len(plain) + OVERHEAD[algorithm]
    if len(plain) > 8:
        assert plain not in sealed
    assert env.open_packet(sealed) == Opened(plain, algorithm, 0)
    # a second packet gets a fresh nonce, so different bytes
    again = env.seal_packet(plain)
    assert again != sealed
    assert env.open_packet(again) == Opened(plain, algorithm, 0)


@pytest.mark.parametrize(("algorithm", "key"), SENDERS, ids=SENDER_IDS)
@pytest.mark.parametrize("plain", PLAINTEXTS, ids=["empty", "one", "user", "ping", "big"])
def test_stream_round_trip(algorithm: Algorithm, key: bytes, plain: bytes) -> None:
    env = _env(algorithm, key)
    sealed = env.seal_stream(plain)
    assert sealed[0] == 0x0A
    (length,) = struct.unpack(">I", sealed[1:5])
    assert length == len(sealed) - 5 == len(plain) + OVERHEAD[algorithm]
    assert sealed[5] == (AES_GCM_V1 if algorithm is AES else SECRETBOX_V1)
    assert _open_stream(env, sealed) == Opened(plain, algorithm, 0)


@pytest.mark.parametrize(("algorithm", "key"), SENDERS, ids=SENDER_IDS)
def test_stream_fed_one_byte_at_a_time(algorithm: Algorithm, key: bytes) -> None:
    env = _env(algorithm, key)
    sealed = env.seal_stream(PING)
    reader = env.stream_reader()
    for i in range(len(sealed) - 1):
        assert reader.feed(sealed[i : i + 1]) is None, i
        assert reader.opened is None
    assert reader.feed(sealed[-1:]) == PING
    assert reader.opened == Opened(PING, algorithm, 0)
    assert reader.feed(b"") == PING


def test_stream_reader_takes_empty_chunks_and_ignores_bytes_after_the_frame() -> None:
    env = _env(AES, K32)
    sealed = env.seal_stream(USER)
    reader = env.stream_reader()
    assert reader.feed(b"") is None
    assert reader.feed(sealed[:3]) is None
    assert reader.feed(b"") is None
    assert reader.feed(sealed[3:] + b"trailing junk") == USER


def test_aes_gcm_stream_binds_its_header() -> None:
    """The stream header is AES-GCM's associated data: a stream frame is no packet, and a
    packet frame is no stream.  Secretbox has no associated data (its MAC covers the body the
    header delimits)."""
    aes = _env(AES, K32)
    stream = aes.seal_stream(USER)
    with pytest.raises(CryptoError) as exc:
        aes.open_packet(stream[5:])
    assert exc.value.cause == "undecryptable"
    packet = aes.seal_packet(USER)
    rewrapped = b"\x0a" + struct.pack(">I", len(packet)) + packet
    assert _read_stream(aes, rewrapped, []) == ("refused", "undecryptable")
    box = _env(BOX, K32)
    assert box.open_packet(box.seal_stream(USER)[5:]) == Opened(USER, BOX, 0)


# ---------------------------------------------------------------------------------------------
# Cipher agility: a node opens either cipher under any of its keys


@pytest.mark.parametrize(("sender", "receiver"), [(BOX, AES), (AES, BOX), (AES, AES), (BOX, BOX)])
def test_cipher_agility(sender: Algorithm, receiver: Algorithm) -> None:
    out = _env(sender, K32)
    into = _env(receiver, K32)
    assert into.open_packet(out.seal_packet(PING)) == Opened(PING, sender, 0)
    assert _open_stream(into, out.seal_stream(PING)) == Opened(PING, sender, 0)
    # and back
    assert out.open_packet(into.seal_packet(USER)) == Opened(USER, receiver, 0)


def test_secretbox_needs_a_32_byte_key_to_open() -> None:
    box_frame = _env(BOX, K32).seal_packet(PING)
    # an aes-gcm node holding the key second opens it with that key
    assert _env(AES, K16, K32).open_packet(box_frame) == Opened(PING, BOX, 1)
    # ... and one with only 16- and 24-byte keys cannot, whatever their bytes
    short = _env(AES, K32[:16], K32[:24])
    with pytest.raises(CryptoError) as exc:
        short.open_packet(box_frame)
    assert exc.value.cause == "undecryptable"
    assert str(exc.value) == NO_KEY_OPENED == "No installed keys could decrypt the message"


def test_secretbox_node_reads_aes_gcm_with_a_16_byte_key() -> None:
    aes_frame = _env(AES, K16).seal_packet(PING)
    box = _env(BOX, K32, K16)
    assert box.open_packet(aes_frame) == Opened(PING, AES, 1)
    assert _open_stream(box, _env(AES, K16).seal_stream(PING)) == Opened(PING, AES, 1)


@pytest.mark.parametrize("size", [16, 24])
def test_secretbox_cannot_send_with_a_short_primary_key(size: int) -> None:
    with pytest.raises(KeyringError, match="secretbox needs a 32-byte primary key"):
        Envelope(Keyring([bytes(size)]), BOX)
    env = Envelope(Keyring([bytes(size)]), AES)
    env.check_primary(bytes(size))  # aes-gcm sends with any size
    env.algorithm = BOX  # switched under a short primary: the envelope still refuses to seal
    with pytest.raises(KeyringError):
        env.check_primary(bytes(size))
    with pytest.raises(CryptoError) as exc:
        env.seal_packet(b"x")
    assert exc.value.cause == "malformed"


# ---------------------------------------------------------------------------------------------
# Key rotation and key_index


@pytest.mark.parametrize("algorithm", [AES, BOX])
def test_key_rotation(algorithm: Algorithm) -> None:
    old, new = K32, OTHER32
    sender = _env(algorithm, old)
    receiver = _env(algorithm, old)
    before = sender.seal_packet(PING)
    before_stream = sender.seal_stream(PING)
    assert receiver.open_packet(before) == Opened(PING, algorithm, 0)

    assert receiver.keyring is not None and receiver.keyring.install(new)
    assert receiver.open_packet(before) == Opened(PING, algorithm, 0)

    # the sender rotates; its new frames open at the receiver under the key installed second
    assert sender.keyring is not None and sender.keyring.install(new)
    assert sender.keyring.use(new)
    after = sender.seal_packet(PING)
    assert receiver.open_packet(after) == Opened(PING, algorithm, 1)

    assert receiver.keyring.use(new)
    assert receiver.open_packet(after) == Opened(PING, algorithm, 0)
    assert receiver.open_packet(before) == Opened(PING, algorithm, 1)  # old key still there
    assert _open_stream(receiver, before_stream) == Opened(PING, algorithm, 1)

    assert receiver.keyring.remove(old)
    for frame in (before, before_stream[5:]):
        with pytest.raises(CryptoError) as exc:
            receiver.open_packet(frame)
        assert exc.value.cause == "undecryptable"
    assert _read_stream(receiver, before_stream, []) == ("refused", "undecryptable")
    assert receiver.open_packet(after) == Opened(PING, algorithm, 0)


def test_sealing_follows_the_primary_key() -> None:
    env = _env(AES, K16, K24, K32)
    for key, index in [(K16, 0), (K24, 1), (K32, 2)]:
        assert env.keyring is not None
        env.keyring.use(key)
        # the key index in a fixed-order reader tells which key sealed it
        assert _env(AES, K16, K24, K32).open_packet(env.seal_packet(b"x")).key_index == index


def test_replacing_the_keyring_takes_effect() -> None:
    """A new Keyring object (generation 0 again) replaces the ciphers built for the old one."""
    env = _env(AES, K32)
    old_frame = env.seal_packet(PING)
    env.keyring = Keyring([OTHER32])
    assert env.keyring.generation == 0
    with pytest.raises(CryptoError):
        env.open_packet(old_frame)
    new_frame = env.seal_packet(PING)
    assert _env(AES, OTHER32).open_packet(new_frame) == Opened(PING, AES, 0)
    with pytest.raises(CryptoError):
        _env(AES, K32).open_packet(new_frame)


# ---------------------------------------------------------------------------------------------
# memberlist's switches and a node without a keyring


@pytest.mark.parametrize("algorithm", [AES, BOX])
def test_verify_outgoing_off_sends_plaintext(algorithm: Algorithm) -> None:
    env = _env(algorithm, K32, verify_outgoing=False)
    assert env.enabled and not env.sealing
    assert env.overhead == 0
    assert env.seal_packet(PING) == PING
    assert env.seal_stream(USER) == USER
    # it still reads encrypted traffic
    assert env.open_packet(_env(algorithm, K32).seal_packet(PING)) == Opened(PING, algorithm, 0)


@pytest.mark.parametrize("algorithm", [AES, BOX])
def test_verify_incoming_off_accepts_plaintext(algorithm: Algorithm) -> None:
    env = _env(algorithm, K32, verify_incoming=False)
    assert env.open_packet(PING) == Opened(PING, None, -1)
    assert env.open_packet(b"") == Opened(b"", None, -1)
    # a packet no key opens is taken as plaintext, as memberlist does
    foreign = _env(algorithm, OTHER32).seal_packet(PING)
    assert env.open_packet(foreign) == Opened(foreign, None, -1)
    # encrypted packets still open
    assert env.open_packet(_env(algorithm, K32).seal_packet(PING)) == Opened(PING, algorithm, 0)
    # plaintext streams are read until complete (whole and byte by byte)
    assert _open_stream(env, USER) == Opened(USER, None, -1)
    reader = env.stream_reader()
    assert [reader.feed(USER[i : i + 1]) for i in range(len(USER))] == [None] * (len(USER) - 1) + [
        USER
    ]
    assert reader.opened == Opened(USER, None, -1)
    # an encrypted stream no key opens is refused, not read as plaintext
    foreign_stream = _env(algorithm, OTHER32).seal_stream(PING)
    assert _read_stream(env, foreign_stream, []) == ("refused", "undecryptable")


@pytest.mark.parametrize("algorithm", [AES, BOX])
def test_verify_incoming_on_refuses_plaintext_streams(algorithm: Algorithm) -> None:
    env = _env(algorithm, K32)
    for message in (PING, USER, b"\x09anything"):
        reader = env.stream_reader()
        with pytest.raises(CryptoError) as exc:
            reader.feed(message[:1])  # refused on the first byte
        assert exc.value.cause == "plaintext"
        assert str(exc.value) == PLAINTEXT_REFUSED
        assert str(exc.value) == "Encryption is configured but remote state is not encrypted"
        assert isinstance(exc.value, FramingError)  # answered with an err message


@pytest.mark.parametrize("first", [*range(2, 14), 244])
def test_verify_incoming_on_refuses_plaintext_packets(first: int) -> None:
    """A packet starting with a memberlist message type (or the label prefix) is plaintext."""
    env = _env(AES, K32)
    packet = bytes([first]) + PING[1:]
    with pytest.raises(CryptoError) as exc:
        env.open_packet(packet)
    assert exc.value.cause == "plaintext"
    assert str(exc.value) == f"Unsupported encryption version {first}"


@pytest.mark.parametrize(
    ("packet", "cause", "text"),
    [
        (b"", "malformed", "Cannot decrypt empty payload"),
        (b"\x01" + bytes(27), "malformed", "Payload is too small to decrypt: 28"),
        (b"\x01" + bytes(28), "undecryptable", NO_KEY_OPENED),
        (b"\x00" + bytes(43), "malformed", "Payload is too small to decrypt: 44"),
        (b"\x00" + bytes(44), "undecryptable", NO_KEY_OPENED),
        (b"\x53" + bytes(39), "malformed", "Payload is too small to decrypt: 40"),
        (b"\x53" + bytes(40), "undecryptable", NO_KEY_OPENED),
        (b"\x54" + bytes(60), "malformed", "Unsupported encryption version 84"),
        (b"\xff" + bytes(60), "malformed", "Unsupported encryption version 255"),
        # a plaintext ping starts with 0: memberlist too reads it as a v0 frame
        (PING, "undecryptable", NO_KEY_OPENED),
    ],
)
def test_packet_refusals(packet: bytes, cause: str, text: str | None) -> None:
    for env in (_env(AES, K32), _env(BOX, K32, K16)):
        with pytest.raises(CryptoError) as exc:
            env.open_packet(packet)
        assert exc.value.cause == cause
        if text is not None:
            assert str(exc.value) == text
        assert isinstance(exc.value, DecodeError)


def _v0_frame(key: bytes, body: bytes) -> bytes:
    """A version 0 frame whose decrypted body is ``body`` as is (no padding added)."""
    v1 = aes_gcm_seal(key, body, nonce=bytes(12))
    return bytes([AES_GCM_V0]) + v1[1:]  # the version byte is not authenticated


@pytest.mark.parametrize(
    ("body", "plain"),
    [
        (b"hello" + b"\x0b" * 11, b"hello"),
        (b"\x10" * 16, b""),
        (b"x" * 16 + b"\x10" * 16, b"x" * 16),
        (b"x" * 31 + b"\x01", b"x" * 31),
        (b"x" * 16 + b"\x00", None),  # pad byte 0
        (b"x" * 16 + b"\x11" * 17, None),  # more than a block
        (b"x" * 16 + b"\x03\x02\x03", None),  # inconsistent pad bytes
        (b"x" * 15 + b"\x02", None),
    ],
)
def test_version_0_padding(body: bytes, plain: bytes | None) -> None:
    env = _env(AES, K32)
    frame = _v0_frame(K32, body)
    if plain is None:
        with pytest.raises(CryptoError, match="PKCS#7") as exc:
            env.open_packet(frame)
        assert exc.value.cause == "malformed"
    else:
        assert env.open_packet(frame) == Opened(plain, AES, 0)
        assert aes_gcm_seal(K32, plain, version=AES_GCM_V0, nonce=bytes(12)) == frame


@pytest.mark.parametrize("plain", [b"", USER, PING])
def test_version_0_stream_opens(plain: bytes) -> None:
    """memberlist protocol 1 peers seal streams with version 0 too (header as AAD)."""
    body_len = 1 + 12 + (len(plain) // 16 + 1) * 16 + 16
    header = _header(body_len)
    frame = aes_gcm_seal(K16, plain, aad=header, version=AES_GCM_V0, nonce=b"\x05" * 12)
    assert len(frame) == body_len
    for env, index in [(_env(AES, K16), 0), (_env(BOX, K32, K16), 1)]:
        kind, opened = _read_stream(env, header + frame, [1])
        assert (kind, opened) == ("ok", Opened(plain, AES, index))


def test_algorithm_by_name() -> None:
    assert Envelope(Keyring([K32]), "aes-gcm").algorithm is AES  # type: ignore[arg-type]
    assert Envelope(Keyring([K32]), "secretbox").algorithm is BOX  # type: ignore[arg-type]
    assert Envelope(Keyring([K32])).algorithm is BOX  # serf-trio's default
    with pytest.raises(ValueError):
        Envelope(Keyring([K32]), "rot13")  # type: ignore[arg-type]


def test_no_keyring_passes_plaintext_and_refuses_encrypted_streams() -> None:
    env = Envelope(None)
    assert not env.enabled and not env.sealing and env.overhead == 0
    assert env.seal_packet(PING) == PING
    assert env.seal_stream(USER) == USER
    sealed = _env(AES, K32).seal_packet(PING)
    assert env.open_packet(sealed) == Opened(sealed, None, -1)
    assert _open_stream(env, USER) == Opened(USER, None, -1)
    for stream in (_env(AES, K32).seal_stream(PING), _env(BOX, K32).seal_stream(PING), b"\x0a"):
        with pytest.raises(FramingError) as exc:
            env.stream_reader().feed(stream)
        assert str(exc.value) == ENCRYPTED_BUT_NOT_CONFIGURED
        assert str(exc.value) == "Remote state is encrypted and encryption is not configured"


# ---------------------------------------------------------------------------------------------
# The stream size limit


def _header(length: int) -> bytes:
    return b"\x0a" + struct.pack(">I", length)


@pytest.mark.parametrize("algorithm", [AES, BOX])
def test_stream_limit_refused_on_the_header(algorithm: Algorithm) -> None:
    env = _env(algorithm, K32)
    for limit, length in [(MAX_STREAM_BYTES, MAX_STREAM_BYTES + 1), (100, 101), (0, 1)]:
        reader = env.stream_reader(limit) if limit != MAX_STREAM_BYTES else env.stream_reader()
        assert reader.feed(_header(length)[:4]) is None  # not known yet
        with pytest.raises(CryptoError) as exc:
            reader.feed(_header(length)[4:])  # no body byte read
        assert exc.value.cause == "too_large"
        assert str(exc.value) == f"Remote node state is larger than limit ({length})"
    with pytest.raises(CryptoError) as exc:
        env.stream_reader().feed(_header(0xFFFFFFFF))
    assert exc.value.cause == "too_large"


def test_stream_at_the_limit_is_read() -> None:
    env = _env(AES, K32)
    sealed = env.seal_stream(b"x" * 71)
    assert len(sealed) == 5 + 100
    reader = env.stream_reader(100)
    assert reader.feed(sealed[:5]) is None
    assert reader.feed(sealed[5:]) == b"x" * 71
    with pytest.raises(CryptoError, match="larger than limit"):
        env.stream_reader(99).feed(sealed)


@pytest.mark.parametrize(
    ("length", "cause"),
    [(0, "malformed"), (1, "malformed"), (28, "malformed"), (29, "undecryptable")],
)
def test_stream_frame_too_short(length: int, cause: str) -> None:
    frame = _header(length) + b"\x01" + bytes(max(length - 1, 0))
    assert _read_stream(_env(AES, K32), frame, []) == ("refused", cause)


# ---------------------------------------------------------------------------------------------
# Overhead


@pytest.mark.parametrize(("algorithm", "key"), SENDERS, ids=SENDER_IDS)
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1400])
def test_overhead(algorithm: Algorithm, key: bytes, size: int) -> None:
    env = _env(algorithm, key)
    data = bytes(range(256)) * 6
    data = data[:size]
    assert env.overhead == {AES: 29, BOX: 41}[algorithm]
    assert len(env.seal_packet(data)) - len(data) == env.overhead
    assert len(env.seal_stream(data)) - len(data) == env.overhead + 5
    env.verify_outgoing = False
    assert env.overhead == 0
    assert len(env.seal_packet(data)) - len(data) == env.overhead


# ---------------------------------------------------------------------------------------------
# Fuzzing

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

RECEIVERS = {
    "aes-gcm": _env(AES, K32, K16),
    "secretbox": _env(BOX, K32, K16),
    "aes-gcm-lenient": _env(AES, K32, K16, verify_incoming=False),
    "secretbox-lenient": _env(BOX, K32, K16, verify_incoming=False),
    "none": Envelope(None),
}
_FUZZ_SENDERS = [_env(AES, K32), _env(AES, K16), _env(BOX, K32)]
GOOD_PACKETS = [(s.seal_packet(p), p) for s in _FUZZ_SENDERS for p in PLAINTEXTS[:4]]
GOOD_STREAMS = [(s.seal_stream(p), p) for s in _FUZZ_SENDERS for p in PLAINTEXTS[:4]]
GOOD_STREAMS += [(p, p) for p in (PING, USER)]  # plaintext streams too

chunk_sizes = st.lists(st.integers(1, 64), max_size=8)


@st.composite
def mutated(draw: st.DrawFn, originals: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """One of ``originals`` truncated, bit-flipped, spliced or extended: (bytes, plaintext)."""
    frame, plain = draw(st.sampled_from(originals))
    data = bytearray(frame)
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "extend"]))
    if kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif kind == "splice":
        i = draw(st.integers(0, len(data)))
        j = draw(st.integers(i, min(len(data), i + 40)))
        data[i:j] = draw(st.binary(max_size=40))
    else:
        data += draw(st.binary(min_size=1, max_size=40))
    return bytes(data), plain


leading = st.sampled_from([0x00, 0x01, 0x0A, 0x53, 0x02, 0x07, 0x0C, 0xF4, 0xFF])
random_bytes = st.binary(max_size=300) | st.tuples(leading, st.binary(max_size=300)).map(
    lambda t: bytes([t[0]]) + t[1]
)
random_streams = random_bytes | st.tuples(st.integers(0, 400), st.binary(max_size=400)).map(
    lambda t: _header(t[0]) + t[1]
)


def _check_packet(env: Envelope, data: bytes, plain: bytes | None) -> None:
    """Opening ``data`` gives a CryptoError, the bytes as plaintext where the envelope allows
    that, or (when ``plain`` is the plaintext ``data`` was made from) a prefix of it: AES-GCM
    does not authenticate the version byte, so a v1 frame flipped to v0 may lose padding."""
    try:
        opened = env.open_packet(data)
    except CryptoError as exc:
        assert exc.cause in CAUSES
        assert env.keyring is not None
        return
    if opened.algorithm is None:
        assert opened == Opened(data, None, -1)
        assert env.keyring is None or not env.verify_incoming
    else:
        assert plain is not None and plain.startswith(opened.data), "forged frame opened"
        assert env.keyring is not None and 0 <= opened.key_index < len(env.keyring)


def _check_stream(env: Envelope, data: bytes, plain: bytes | None, sizes: list[int]) -> None:
    """As ``_check_packet`` for a stream, and the outcome does not depend on the chunking."""
    whole = _read_stream(env, data, [])
    chunked = _read_stream(env, data, sizes)
    kind, value = whole
    assert chunked[0] == kind
    if kind == "ok":
        assert isinstance(value, Opened) and isinstance(chunked[1], Opened)
        if value.algorithm is None:
            assert chunked[1].algorithm is None
            assert env.keyring is None or not env.verify_incoming
            # plaintext: the bytes read so far; the message in them is the same
            assert data.startswith(value.data) and data.startswith(chunked[1].data)
            assert decode_stream_message(value.data) == decode_stream_message(chunked[1].data)
        else:
            assert chunked[1] == value
            assert plain is not None and plain.startswith(value.data), "forged frame opened"
    elif kind == "refused":
        assert chunked == whole
        assert env.keyring is not None
    else:
        assert chunked == whole


@FUZZ
@given(case=mutated(GOOD_PACKETS))
def test_fuzz_mutated_packets(case: tuple[bytes, bytes]) -> None:
    data, plain = case
    for env in RECEIVERS.values():
        _check_packet(env, data, plain)


@FUZZ
@given(case=mutated(GOOD_STREAMS), sizes=chunk_sizes)
def test_fuzz_mutated_streams(case: tuple[bytes, bytes], sizes: list[int]) -> None:
    data, plain = case
    for env in RECEIVERS.values():
        _check_stream(env, data, plain, sizes)


@FUZZ
@given(data=random_bytes)
def test_fuzz_random_packets(data: bytes) -> None:
    for name, env in RECEIVERS.items():
        _check_packet(env, data, None)
        if name in ("aes-gcm", "secretbox"):
            with pytest.raises(CryptoError):
                env.open_packet(data)


@FUZZ
@given(data=random_streams, sizes=chunk_sizes)
def test_fuzz_random_streams(data: bytes, sizes: list[int]) -> None:
    for env in RECEIVERS.values():
        _check_stream(env, data, None, sizes)


@st.composite
def foreign_frames(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(packet frame, stream frame) sealed honestly under a key no receiver holds."""
    cipher = draw(st.sampled_from(["aes-v1", "aes-v0", "secretbox"]))
    size = 32 if cipher == "secretbox" else draw(st.sampled_from([16, 24, 32]))
    key = draw(st.binary(min_size=size, max_size=size).filter(lambda k: k not in (K32, K16)))
    plain = draw(st.binary(max_size=200))
    if cipher == "secretbox":
        nonce = draw(st.binary(min_size=24, max_size=24))
        frame = secretbox_seal(key, plain, nonce=nonce)
        return frame, _header(len(frame)) + frame
    version = AES_GCM_V1 if cipher == "aes-v1" else AES_GCM_V0
    nonce = draw(st.binary(min_size=12, max_size=12))
    frame = aes_gcm_seal(key, plain, version=version, nonce=nonce)
    header = _header(len(frame))  # the stream frame has the same length, with its AAD
    return frame, header + aes_gcm_seal(key, plain, aad=header, version=version, nonce=nonce)


@FUZZ
@given(case=foreign_frames(), sizes=chunk_sizes)
def test_fuzz_wrong_key_frames(case: tuple[bytes, bytes], sizes: list[int]) -> None:
    frame, stream = case
    for name, env in RECEIVERS.items():
        if env.keyring is None:
            assert env.open_packet(frame) == Opened(frame, None, -1)
            assert _read_stream(env, stream, sizes) == ("error", "FramingError")
            continue
        if env.verify_incoming:
            with pytest.raises(CryptoError) as exc:
                env.open_packet(frame)
            assert exc.value.cause == "undecryptable", name
        else:
            assert env.open_packet(frame) == Opened(frame, None, -1)
        assert _read_stream(env, stream, sizes) == ("refused", "undecryptable"), name


@FUZZ
@given(
    sender=st.sampled_from(_FUZZ_SENDERS),
    plain=st.binary(max_size=600),
    sizes=chunk_sizes,
)
def test_fuzz_round_trip_in_any_chunking(sender: Envelope, plain: bytes, sizes: list[int]) -> None:
    assert sender.keyring is not None
    index = (K32, K16).index(sender.keyring.primary)  # the receivers' keyring
    for name in ("aes-gcm", "secretbox", "aes-gcm-lenient", "secretbox-lenient"):
        env = RECEIVERS[name]
        assert env.open_packet(sender.seal_packet(plain)) == Opened(plain, sender.algorithm, index)
        kind, opened = _read_stream(env, sender.seal_stream(plain), sizes)
        assert (kind, opened) == ("ok", Opened(plain, sender.algorithm, index))


# ---------------------------------------------------------------------------------------------
# Lazy imports


def _loaded_after(code: str) -> list[str]:
    """The cipher library modules loaded after running ``code`` in a fresh interpreter."""
    script = (
        "import json, sys\n" + code + "\nprint(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('cryptography', 'nacl'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


_PRELUDE = (
    "from serf_trio.wire.crypto import Envelope, Algorithm\n"
    "from serf_trio.wire.keyring import Keyring\n"
)


def test_no_cipher_library_without_a_key() -> None:
    loaded = _loaded_after(
        _PRELUDE + "e = Envelope(None)\n"
        "assert e.seal_packet(b'x') == b'x' and e.open_packet(b'x').data == b'x'\n"
        "assert e.seal_stream(b'\\x08\\x81') == b'\\x08\\x81'\n"
        "Envelope(Keyring([bytes(32)]), Algorithm.SECRETBOX)\n"  # building is not using
        "Envelope(Keyring([bytes(16)]), Algorithm.AES_GCM)\n"
    )
    assert loaded == []


def test_each_cipher_loads_only_its_library() -> None:
    aes = _loaded_after(
        _PRELUDE + "e = Envelope(Keyring([bytes(16)]), Algorithm.AES_GCM)\n"
        "assert e.open_packet(e.seal_packet(b'x')).data == b'x'\n"
    )
    assert any(m.startswith("cryptography") for m in aes)
    assert not any(m.startswith("nacl") for m in aes)
    box = _loaded_after(
        _PRELUDE + "e = Envelope(Keyring([bytes(32)]), Algorithm.SECRETBOX)\n"
        "assert e.open_packet(e.seal_packet(b'x')).data == b'x'\n"
    )
    assert any(m.startswith("nacl") for m in box)
    assert not any(m.startswith("cryptography") for m in box)
