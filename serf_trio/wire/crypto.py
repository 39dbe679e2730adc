"""Encrypted framing of packets and streams: memberlist's AES-GCM and serf-trio's secretbox.

``Envelope`` is what a node puts around every byte it sends and takes off every byte it
receives: a keyring (``wire.keyring``), the cipher this node *sends* with, and memberlist's two
verification switches.  Pure code (no sockets, no clock): the transport calls it, the
in-memory network and the simulator call it too, so protocol tests run encrypted.

Frames (WIRE.md 7; ``docs``-level description in the README's encryption section):

* **aes-gcm** (memberlist security.go, what real Serf speaks)::

      UDP:    version(1) | nonce(12) | ciphertext | tag(16)         no associated data
      stream: 0a | L(u32 BE) | version(1) | nonce(12) | ciphertext | tag(16)
              with the 5 header bytes as associated data, L = the length of what follows

  We send version 1 (no padding).  Version 0 (PKCS#7 padding to 16 bytes, memberlist
  protocol 1) is accepted.  Keys are 16, 24 or 32 bytes (AES-128/192/256), through
  ``cryptography``'s AESGCM (pynacl's AES-GCM takes only 32-byte keys and needs AES-NI).
* **secretbox** (serf-trio's own, the default; NaCl XSalsa20-Poly1305 through pynacl)::

      UDP:    53 | nonce(24) | MAC(16) + ciphertext                 (NaCl's box layout)
      stream: 0a | L(u32 BE) | 53 | nonce(24) | MAC(16) + ciphertext

  ``0x53`` ("S") is a first byte memberlist never uses: its message types are 0-13, its
  label prefix 244 and its encryption versions 0 and 1, so a Go agent answers a secretbox
  frame with "Unsupported encryption version 83" instead of misreading it.  Secretbox has no
  associated data; the stream length is still authenticated, since a changed length changes
  the bytes the MAC covers.  Only 32-byte keys can seal or open secretbox.

The rules (memberlist net.go, plus serf-trio's cipher agility):

* a node **sends** with its own cipher under the primary key when ``verify_outgoing``
  (memberlist GossipVerifyOutgoing) is on, and plaintext otherwise;
* it **opens either cipher** under any key of its keyring (primary first), so a serf-trio
  cluster can change cipher one node at a time;
* with ``verify_incoming`` (GossipVerifyIncoming) off, a packet no key opens is taken as
  plaintext, and a plaintext stream is accepted; with it on both are refused;
* every refusal is a ``CryptoError`` (a ``wire.codec.FramingError``, so a stream refusal is
  answered with memberlist's ``err`` message) whose ``cause`` tells the counters why.

The packet budget shrinks by ``Envelope.overhead`` (29 bytes for aes-gcm v1, 41 for secretbox)
whenever we seal, as memberlist's does by encryptOverhead, so no sealed packet outgrows it.
The cipher libraries are imported the first time a key is used, so an agent without
encryption never loads them.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from typing import Any, Literal

from serf_trio.record import record

from .codec import FramingError
from .keyring import Keyring, KeyringError
from .messages import MessageType
from .stream import MAX_STREAM_BYTES, StreamParser


class Algorithm(enum.StrEnum):
    SECRETBOX = "secretbox"
    AES_GCM = "aes-gcm"


AES_GCM_V0 = 0  # PKCS#7 padded (memberlist protocol 1); accepted, never sent
AES_GCM_V1 = 1  # what memberlist 0.2.2 sends
SECRETBOX_V1 = 0x53
AES_NONCE = 12
SECRETBOX_NONCE = 24
TAG = 16
BLOCK = 16
SECRETBOX_KEY = 32
STREAM_HEADER = 5  # 0a + u32 length

# Bytes a sealed packet adds (memberlist encryptOverhead: 29 for v1, 45 for v0).
OVERHEAD = {
    Algorithm.AES_GCM: 1 + AES_NONCE + TAG,
    Algorithm.SECRETBOX: 1 + SECRETBOX_NONCE + TAG,
}
_MIN_FRAME = {AES_GCM_V0: 1 + AES_NONCE + BLOCK + TAG, AES_GCM_V1: 1 + AES_NONCE + TAG}

# memberlist's texts, where it has one.
NO_KEY_OPENED = "No installed keys could decrypt the message"
PLAINTEXT_REFUSED = "Encryption is configured but remote state is not encrypted"

Cause = Literal["plaintext", "undecryptable", "malformed", "too_large"]
_PLAINTEXT_FIRST_BYTES = frozenset(range(2, 14)) | {244}  # memberlist types (not 0/1), label


class CryptoError(FramingError):
    """A frame refused by the envelope; ``cause`` is one of ``Cause`` (for counters)."""

    def __init__(self, cause: Cause, text: str) -> None:
        super().__init__(text)
        self.cause: Cause = cause


@record
class Opened:
    """What ``open_packet`` / a stream reader found: the plaintext, the cipher that opened it
    (``None``: it arrived as plaintext) and the index of the key that did (-1: none)."""

    data: bytes
    algorithm: Algorithm | None
    key_index: int


# ---------------------------------------------------------------------------------------------
# The two ciphers (the libraries are imported on first use)


def _aesgcm(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _secretbox(key: bytes) -> Any:
    from nacl.secret import SecretBox

    return SecretBox(key)


def _aes_failure() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


def _box_failure() -> type[Exception]:
    from nacl.exceptions import CryptoError as NaclError

    return NaclError


def _pkcs7_pad(data: bytes) -> bytes:
    n = BLOCK - len(data) % BLOCK
    return data + bytes([n]) * n


def _pkcs7_unpad(data: bytes) -> bytes:
    n = data[-1] if data else 0
    if not 1 <= n <= BLOCK or n > len(data) or data[-n:] != bytes([n]) * n:
        raise CryptoError("malformed", "bad PKCS#7 padding in a version 0 frame")
    return data[:-n]


class _Ciphers:
    """Cipher objects per key, rebuilt only when the keyring changes (AESGCM key setup is
    not free, and every packet would otherwise pay it once per key tried)."""

    def __init__(self) -> None:
        self._generation = -1
        self._keyring: Keyring | None = None
        self._aes: dict[bytes, Any] = {}
        self._box: dict[bytes, Any] = {}

    def _sync(self, keyring: Keyring) -> None:
        if keyring is not self._keyring or keyring.generation != self._generation:
            self._keyring, self._generation = keyring, keyring.generation
            self._aes.clear()
            self._box.clear()

    def aes(self, keyring: Keyring, key: bytes) -> Any:
        self._sync(keyring)
        c = self._aes.get(key)
        if c is None:
            c = self._aes[key] = _aesgcm(key)
        return c

    def box(self, keyring: Keyring, key: bytes) -> Any:
        self._sync(keyring)
        c = self._box.get(key)
        if c is None:
            c = self._box[key] = _secretbox(key)
        return c


def aes_gcm_seal(
    key: bytes, plaintext: bytes, *, aad: bytes = b"", version: int = AES_GCM_V1, nonce: bytes
) -> bytes:
    """One memberlist AES-GCM frame (``version | nonce | ciphertext+tag``)."""
    body = _pkcs7_pad(plaintext) if version == AES_GCM_V0 else plaintext
    return bytes([version]) + nonce + bytes(_aesgcm(key).encrypt(nonce, body, aad or None))


def secretbox_seal(key: bytes, plaintext: bytes, *, nonce: bytes) -> bytes:
    """One serf-trio secretbox frame (``53 | nonce | MAC+ciphertext``)."""
    return bytes([SECRETBOX_V1]) + bytes(_secretbox(key).encrypt(plaintext, nonce))


def check_primary(algorithm: Algorithm, key: bytes) -> None:
    """``KeyringError`` if ``algorithm`` cannot send with ``key`` as the primary key: secretbox
    takes only 32-byte keys (aes-gcm any size the keyring accepts)."""
    if algorithm is Algorithm.SECRETBOX and len(key) != SECRETBOX_KEY:
        raise KeyringError(
            f"secretbox needs a 32-byte primary key, this one has {len(key)} bytes "
            '(encrypt_algorithm = "aes-gcm" takes 16, 24 or 32)'
        )


# ---------------------------------------------------------------------------------------------
# The envelope


class Envelope:
    """A node's keyring, sending cipher and verification switches (see the module docstring).

    ``keyring=None`` means encryption is off: everything passes through as plaintext, and an
    encrypted stream is refused with memberlist's "Remote state is encrypted and encryption is
    not configured".  Attributes may be changed at run time (SIGHUP reload, key rotation).
    ``nonces(n)`` returns n random bytes (``os.urandom``; the simulator passes a seeded one).
    """

    def __init__(
        self,
        keyring: Keyring | None,
        algorithm: Algorithm = Algorithm.SECRETBOX,
        *,
        verify_incoming: bool = True,
        verify_outgoing: bool = True,
        nonces: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.keyring = keyring
        self.algorithm = Algorithm(algorithm)
        self.verify_incoming = verify_incoming
        self.verify_outgoing = verify_outgoing
        self._nonces = nonces
        self._ciphers = _Ciphers()
        if keyring is not None:
            self.check_primary(keyring.primary)

    # -- views --------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Serf's EncryptionEnabled: a keyring is configured (whatever the switches say)."""
        return self.keyring is not None

    @property
    def sealing(self) -> bool:
        return self.keyring is not None and self.verify_outgoing

    @property
    def overhead(self) -> int:
        """Bytes each sent packet grows by: what the core takes off its packet budget."""
        return OVERHEAD[self.algorithm] if self.sealing else 0

    def check_primary(self, key: bytes) -> None:
        """``KeyringError`` if this node could not send with ``key`` as its primary key."""
        check_primary(self.algorithm, key)

    # -- packets ------------------------------------------------------------------------------

    def seal_packet(self, data: bytes) -> bytes:
        if not self.sealing:
            return data
        return self._seal(data, b"")

    def open_packet(self, data: bytes) -> Opened:
        """The plaintext of a received datagram, or ``CryptoError``."""
        keyring = self.keyring
        if keyring is None:
            return Opened(data, None, -1)
        try:
            return self._open(keyring, data, b"")
        except CryptoError:
            if not self.verify_incoming:
                return Opened(data, None, -1)  # memberlist: "treat the message as plaintext"
            raise

    # -- streams ------------------------------------------------------------------------------

    def seal_stream(self, data: bytes) -> bytes:
        """One stream message as written: ``0a | L | frame`` when sealing, else ``data``."""
        if not self.sealing:
            return data
        header = bytes([MessageType.ENCRYPT]) + struct.pack(
            ">I", len(data) + OVERHEAD[self.algorithm]
        )
        return header + self._seal(data, header)

    def stream_reader(self, max_bytes: int = MAX_STREAM_BYTES) -> StreamFrameReader:
        return StreamFrameReader(self, max_bytes)

    # -- internals ----------------------------------------------------------------------------

    def _seal(self, data: bytes, aad: bytes) -> bytes:
        keyring = self.keyring
        assert keyring is not None
        key = keyring.primary
        if self.algorithm is Algorithm.AES_GCM:
            nonce = self._nonces(AES_NONCE)
            sealed = self._ciphers.aes(keyring, key).encrypt(nonce, data, aad or None)
            return bytes([AES_GCM_V1]) + nonce + bytes(sealed)
        if len(key) != SECRETBOX_KEY:
            # check_primary guards every way a key becomes primary; this is the last line.
            raise CryptoError("malformed", "secretbox needs a 32-byte primary key")
        nonce = self._nonces(SECRETBOX_NONCE)
        return bytes([SECRETBOX_V1]) + bytes(self._ciphers.box(keyring, key).encrypt(data, nonce))

    def _open(self, keyring: Keyring, frame: bytes, aad: bytes) -> Opened:
        if not frame:
            raise CryptoError("malformed", "Cannot decrypt empty payload")
        vsn = frame[0]
        if vsn in _MIN_FRAME:
            if len(frame) < _MIN_FRAME[vsn]:
                raise CryptoError("malformed", f"Payload is too small to decrypt: {len(frame)}")
            nonce, body = frame[1 : 1 + AES_NONCE], frame[1 + AES_NONCE :]
            failure = _aes_failure()
            for i, key in enumerate(keyring.keys):
                try:
                    plain = self._ciphers.aes(keyring, key).decrypt(nonce, body, aad or None)
                except failure:
                    continue
                if vsn == AES_GCM_V0:
                    plain = _pkcs7_unpad(plain)
                return Opened(plain, Algorithm.AES_GCM, i)
            raise CryptoError("undecryptable", NO_KEY_OPENED)
        if vsn == SECRETBOX_V1:
            if len(frame) < OVERHEAD[Algorithm.SECRETBOX]:
                raise CryptoError("malformed", f"Payload is too small to decrypt: {len(frame)}")
            nonce, body = frame[1 : 1 + SECRETBOX_NONCE], frame[1 + SECRETBOX_NONCE :]
            failure = _box_failure()
            for i, key in enumerate(keyring.keys):
                if len(key) != SECRETBOX_KEY:
                    continue
                try:
                    plain = self._ciphers.box(keyring, key).decrypt(body, nonce)
                except failure:
                    continue
                return Opened(bytes(plain), Algorithm.SECRETBOX, i)
            raise CryptoError("undecryptable", NO_KEY_OPENED)
        cause: Cause = "plaintext" if vsn in _PLAINTEXT_FIRST_BYTES else "malformed"
        raise CryptoError(cause, f"Unsupported encryption version {vsn}")


class StreamFrameReader:
    """Reads one stream message as it arrives: an encrypted frame (``0a | L | frame``, at most
    ``max_bytes``) is opened once complete; anything else is plaintext, refused when the
    envelope verifies incoming traffic, else read by ``StreamParser`` until complete.

    ``feed(chunk)`` returns the plaintext message once complete (``None`` before), and raises
    ``DecodeError`` (``CryptoError`` for the envelope's refusals).  ``opened`` then tells which
    cipher and key opened it.
    """

    def __init__(self, envelope: Envelope, max_bytes: int = MAX_STREAM_BYTES) -> None:
        self._env = envelope
        self._max = max_bytes
        self._buf = bytearray()
        self._need = -1  # total bytes of an encrypted frame, once its header is read
        self._plain: StreamParser | None = None
        self.opened: Opened | None = None

    def feed(self, chunk: bytes) -> bytes | None:
        if self.opened is not None:
            return self.opened.data
        if self._plain is not None:
            return self._feed_plain(chunk)
        self._buf += chunk
        if not self._buf:
            return None
        env = self._env
        if self._buf[0] != MessageType.ENCRYPT or env.keyring is None:
            if env.keyring is not None and env.verify_incoming:
                raise CryptoError("plaintext", PLAINTEXT_REFUSED)
            # Plaintext (or, without a keyring, StreamParser's "encrypted but not configured").
            self._plain = StreamParser(self._max)
            first, self._buf = bytes(self._buf), bytearray()
            return self._feed_plain(first)
        if self._need < 0:
            if len(self._buf) < STREAM_HEADER:
                return None
            (length,) = struct.unpack_from(">I", self._buf, 1)
            if length > self._max:
                raise CryptoError("too_large", f"Remote node state is larger than limit ({length})")
            self._need = STREAM_HEADER + length
        if len(self._buf) < self._need:
            return None
        frame = bytes(self._buf[: self._need])
        self._buf = bytearray()
        self.opened = env._open(env.keyring, frame[STREAM_HEADER:], frame[:STREAM_HEADER])
        return self.opened.data

    def _feed_plain(self, chunk: bytes) -> bytes | None:
        assert self._plain is not None
        self._buf += chunk
        if self._plain.feed(chunk) is None:
            return None
        self.opened = Opened(bytes(self._buf), None, -1)
        return self.opened.data


__all__ = [
    "AES_GCM_V0",
    "AES_GCM_V1",
    "NO_KEY_OPENED",
    "OVERHEAD",
    "PLAINTEXT_REFUSED",
    "SECRETBOX_V1",
    "Algorithm",
    "CryptoError",
    "Envelope",
    "Opened",
    "StreamFrameReader",
    "aes_gcm_seal",
    "check_primary",
    "secretbox_seal",
]
