"""The gossip keyring: an ordered list of symmetric keys, the first of which is primary.

memberlist keyring.go rules, kept exactly because Serf's key queries report their error texts:

* keys are 16, 24 or 32 bytes (``key size must be 16, 24 or 32 bytes``); the length selects
  AES-128/192/256 for aes-gcm, and secretbox can use only 32-byte keys (checked by the envelope
  that sends with it, not here: a secretbox node may still hold a 16-byte key to read aes-gcm);
* the **primary** key (index 0) seals everything sent; every key, primary first, is tried to
  open what arrives;
* ``install`` appends a key that is not there yet (installing a present key is a no-op),
  ``use`` moves an installed key to the front (``Requested key is not in the keyring``),
  ``remove`` drops a non-primary key (``Removing the primary key is not allowed``; removing an
  absent key is a no-op, as in memberlist).

``generation`` increases on every change, so ciphers built from the keys can be cached and
rebuilt only when the keyring changed.  Pure code: no I/O (the agent persists the keyring).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable

KEY_SIZES = (16, 24, 32)

# memberlist's error texts (they travel in Serf's key query responses).
BAD_KEY_SIZE = "key size must be 16, 24 or 32 bytes"
NOT_IN_KEYRING = "Requested key is not in the keyring"
REMOVE_PRIMARY = "Removing the primary key is not allowed"
EMPTY_KEYRING = "Keyring file contains no keys"


class KeyringError(ValueError):
    """A refused keyring operation; ``str(exc)`` is memberlist's text."""


def validate_key(key: bytes) -> None:
    """memberlist ValidateKey: 16, 24 or 32 bytes."""
    if len(key) not in KEY_SIZES:
        raise KeyringError(BAD_KEY_SIZE)


def decode_key(text: str) -> bytes:
    """A base64 key (standard alphabet, padded, as Serf prints them) -> bytes.

    ``ValueError`` with a short reason for bad base64; the length is not checked here.
    """
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"illegal base64 data ({exc})") from None


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def fingerprint(key: bytes) -> str:
    """A short, non-secret name for a key in logs: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:8]


class Keyring:
    """Ordered keys, index 0 primary (memberlist Keyring).  Never empty once built."""

    __slots__ = ("_keys", "generation")

    def __init__(self, keys: Iterable[bytes]) -> None:
        """``keys[0]`` becomes primary; duplicates are dropped; ``KeyringError`` for a bad
        size or no keys at all."""
        ordered: list[bytes] = []
        for key in keys:
            key = bytes(key)
            validate_key(key)
            if key not in ordered:
                ordered.append(key)
        if not ordered:
            raise KeyringError(EMPTY_KEYRING)
        self._keys: tuple[bytes, ...] = tuple(ordered)
        self.generation = 0

    @property
    def keys(self) -> tuple[bytes, ...]:
        return self._keys

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def install(self, key: bytes) -> bool:
        """Add ``key`` for decryption; True if the keyring changed."""
        validate_key(key)
        if key in self._keys:
            return False
        self._set((*self._keys, bytes(key)))
        return True

    def use(self, key: bytes) -> bool:
        """Make an installed ``key`` primary; True if the keyring changed."""
        if key not in self._keys:
            raise KeyringError(NOT_IN_KEYRING)
        if key == self._keys[0]:
            return False
        self._set((bytes(key), *(k for k in self._keys if k != key)))
        return True

    def remove(self, key: bytes) -> bool:
        """Drop a non-primary ``key``; True if the keyring changed."""
        if key == self._keys[0]:
            raise KeyringError(REMOVE_PRIMARY)
        if key not in self._keys:
            return False
        self._set(tuple(k for k in self._keys if k != key))
        return True

    def encoded(self) -> list[str]:
        """The keys in base64, primary first: the keyring file's content (Serf's format)."""
        return [encode_key(k) for k in self._keys]

    def _set(self, keys: tuple[bytes, ...]) -> None:
        self._keys = keys
        self.generation += 1

    def __repr__(self) -> str:  # never print key material
        prints = ", ".join(fingerprint(k) for k in self._keys)
        return f"Keyring([{prints}])"


__all__ = [
    "BAD_KEY_SIZE",
    "EMPTY_KEYRING",
    "KEY_SIZES",
    "NOT_IN_KEYRING",
    "REMOVE_PRIMARY",
    "Keyring",
    "KeyringError",
    "decode_key",
    "encode_key",
    "fingerprint",
    "validate_key",
]
