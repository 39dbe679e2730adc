"""``runtime.crypto.EnvelopeCrypto``: what refused packets are counted and logged as."""

from __future__ import annotations

import os
from typing import Any

import pytest

from serf_trio.runtime.crypto import EnvelopeCrypto
from serf_trio.swim.api import Address
from serf_trio.wire.codec import encode_message
from serf_trio.wire.crypto import Algorithm, CryptoError, Envelope, aes_gcm_seal
from serf_trio.wire.keyring import Keyring
from serf_trio.wire.messages import IndirectPing, Ping

SRC = Address("127.0.0.1", 4000)


class Lines:
    """A structlog stand-in that keeps ``(event, fields)`` of every warning."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def crypto(log: Lines) -> EnvelopeCrypto:
    env = Envelope(Keyring([os.urandom(32)]), Algorithm.SECRETBOX)
    return EnvelopeCrypto(env, log, clock=lambda: 0.0)


@pytest.mark.parametrize(
    "msg",
    [
        Ping(seq_no=7, node="", source_node="probe"),  # 34 bytes: "too small to decrypt"
        Ping(seq_no=7, node="n" * 60, source_node="probe"),  # long enough to be tried
        IndirectPing(seq_no=7, target=b"\x7f\x00\x00\x01", port=4001, node="n2", nack=True),
    ],
    ids=["short-ping", "long-ping", "indirect-ping"],
)
def test_a_plaintext_ping_is_refused_as_plaintext(msg: Ping | IndirectPing) -> None:
    # memberlist's ping (0) and indirect ping (1) share their first byte with AES-GCM versions.
    log = Lines()
    c = crypto(log)
    with pytest.raises(CryptoError):
        c.open_packet(encode_message(msg), SRC)
    assert c.dropped == {"plaintext": 1, "undecryptable": 0, "malformed": 0, "too_large": 0}
    ((event, fields),) = log.lines
    assert (event, fields["reason"], fields["src"]) == ("packet_dropped", "plaintext", str(SRC))


def test_a_frame_under_another_key_stays_undecryptable() -> None:
    log = Lines()
    c = crypto(log)
    frame = aes_gcm_seal(os.urandom(16), b"\x00" * 40, nonce=os.urandom(12))
    with pytest.raises(CryptoError):
        c.open_packet(frame, SRC)
    assert c.dropped["undecryptable"] == 1 and c.dropped["plaintext"] == 0
    assert log.lines[0][1]["reason"] == "undecryptable"


def test_short_garbage_stays_malformed() -> None:
    c = crypto(Lines())
    with pytest.raises(CryptoError):
        c.open_packet(b"\x00\x01\x02", SRC)
    assert c.dropped["malformed"] == 1 and c.dropped["plaintext"] == 0


class Clock:
    """A settable clock for the rate limiter."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_refusals_are_logged_once_per_cause_and_source_per_interval() -> None:
    """A flood from one source gives one line per 10 s, carrying the count it held back;
    another source or another cause gets its own line at once; every refusal is counted."""
    log, clock = Lines(), Clock()
    env = Envelope(Keyring([os.urandom(32)]), Algorithm.SECRETBOX)
    c = EnvelopeCrypto(env, log, clock=clock, log_interval=10.0)
    foreign = aes_gcm_seal(os.urandom(16), b"\x00" * 40, nonce=os.urandom(12))
    other = Address("127.0.0.2", 4000)
    for _ in range(50):
        with pytest.raises(CryptoError):
            c.open_packet(foreign, SRC)
    with pytest.raises(CryptoError):
        c.open_packet(foreign, other)  # another source
    with pytest.raises(CryptoError):
        c.open_packet(b"\x00\x01\x02", SRC)  # another cause
    assert [(f["src"], f["reason"], f["suppressed"]) for _, f in log.lines] == [
        (str(SRC), "undecryptable", 0),
        (str(other), "undecryptable", 0),
        (str(SRC), "malformed", 0),
    ]
    clock.now = 9.9
    with pytest.raises(CryptoError):
        c.open_packet(foreign, SRC)
    assert len(log.lines) == 3
    clock.now = 10.0
    with pytest.raises(CryptoError):
        c.open_packet(foreign, SRC)
    assert log.lines[-1][1]["suppressed"] == 50  # 49 of the flood + the one at 9.9 s
    assert c.dropped["undecryptable"] == 53 and c.dropped["malformed"] == 1


def test_a_secretbox_node_hearing_aes_gcm_says_so_once_per_peer() -> None:
    """The packet is accepted (serf-trio opens either cipher) and counted as aes-gcm; the hint
    about Serf agents is logged once per peer host, not per packet."""
    key = os.urandom(32)
    log = Lines()
    c = EnvelopeCrypto(Envelope(Keyring([key]), Algorithm.SECRETBOX), log, clock=lambda: 0.0)
    sender = Envelope(Keyring([key]), Algorithm.AES_GCM)
    ping = encode_message(Ping(seq_no=1, node="n1", source_node="peer"))
    for port in (4000, 4001, 4002):
        assert c.open_packet(sender.seal_packet(ping), Address("127.0.0.9", port)) == ping
    assert c.open_packet(sender.seal_packet(ping), Address("127.0.0.10", 4000)) == ping
    hints = [(e, f["peer"]) for e, f in log.lines]
    assert hints == [("peer_sends_aes_gcm", "127.0.0.9"), ("peer_sends_aes_gcm", "127.0.0.10")]
    assert c.opened == {"aes-gcm": 4, "secretbox": 0, "plaintext": 0}
    stats = c.stats()
    assert (stats["encrypted"], stats["algorithm"], stats["received_aes_gcm"]) == (
        "true",
        "secretbox",
        "4",
    )
    # An aes-gcm node hearing aes-gcm has nothing to say.
    quiet = Lines()
    c2 = EnvelopeCrypto(Envelope(Keyring([key]), Algorithm.AES_GCM), quiet, clock=lambda: 0.0)
    c2.open_packet(sender.seal_packet(ping), SRC)
    assert quiet.lines == []


def test_stats_without_a_keyring() -> None:
    c = EnvelopeCrypto(Envelope(None), Lines(), clock=lambda: 0.0)
    assert c.open_packet(b"\x07plain", SRC) == b"\x07plain"
    stats = c.stats()
    assert (stats["encrypted"], stats["algorithm"], stats["keys"]) == ("false", "none", "0")
    assert stats["received_plaintext"] == "1"
