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
