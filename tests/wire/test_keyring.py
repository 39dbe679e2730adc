"""The gossip keyring (``wire.keyring``): memberlist keyring.go's rules, as tables.

Key sizes (16, 24 or 32 bytes), the primary key at index 0, ``install`` / ``use`` / ``remove``
with memberlist's error texts and no-op cases, a ``generation`` that moves only when the keyring
changes, base64 key text as Serf prints it, fingerprints, and a ``repr`` that never shows key
material.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import pytest

from serf_trio.wire.keyring import (
    BAD_KEY_SIZE,
    EMPTY_KEYRING,
    KEY_SIZES,
    NOT_IN_KEYRING,
    REMOVE_PRIMARY,
    Keyring,
    KeyringError,
    decode_key,
    encode_key,
    fingerprint,
    validate_key,
)

# The keys of the golden captures (tests/data/vectors/README.md): K1 = 0x00..0x1f, K2 = 0x10..0x1f.
K1 = bytes(range(32))
K2 = bytes(range(16, 32))
K1_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
K2_B64 = "EBESExQVFhcYGRobHB0eHw=="
A = b"\xaa" * 32
B = b"\xbb" * 16
C = b"\xcc" * 24
D = b"\xdd" * 32


# ---------------------------------------------------------------------------------------------
# Key sizes


@pytest.mark.parametrize("size", [0, 1, 8, 15, 16, 17, 23, 24, 25, 31, 32, 33, 48, 64])
def test_validate_key_accepts_only_aes_sizes(size: int) -> None:
    key = bytes(size)
    if size in (16, 24, 32):
        validate_key(key)  # no error
    else:
        with pytest.raises(KeyringError) as exc:
            validate_key(key)
        assert str(exc.value) == BAD_KEY_SIZE == "key size must be 16, 24 or 32 bytes"


def test_key_sizes_and_error_type() -> None:
    assert KEY_SIZES == (16, 24, 32)
    assert issubclass(KeyringError, ValueError)


# ---------------------------------------------------------------------------------------------
# Construction


def _gen(keys: list[bytes]) -> Iterator[bytes]:
    yield from keys


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([A], (A,)),
        ([B], (B,)),
        ([C], (C,)),
        ([A, B, C], (A, B, C)),
        ([B, A], (B, A)),  # the first key given is primary, whatever its size
        ([A, B, A], (A, B)),  # duplicates dropped, first position kept
        ([B, B, B], (B,)),
        ([A, B, C, B, A, D], (A, B, C, D)),
        (_gen([C, A]), (C, A)),  # any iterable
        ([bytearray(A), memoryview(B)], (A, B)),  # copied to bytes
    ],
)
def test_keyring_construction(given: Iterable[bytes], expected: tuple[bytes, ...]) -> None:
    ring = Keyring(given)
    assert ring.keys == expected
    assert all(type(k) is bytes for k in ring.keys)
    assert ring.primary == expected[0]
    assert len(ring) == len(expected)
    assert ring.generation == 0
    for k in expected:
        assert k in ring


@pytest.mark.parametrize(
    ("given", "text"),
    [
        ([], EMPTY_KEYRING),
        ([b"short"], BAD_KEY_SIZE),
        ([A, bytes(20)], BAD_KEY_SIZE),
        ([A, b""], BAD_KEY_SIZE),
        ([bytes(33)], BAD_KEY_SIZE),
    ],
)
def test_keyring_construction_refused(given: list[bytes], text: str) -> None:
    with pytest.raises(KeyringError) as exc:
        Keyring(given)
    assert str(exc.value) == text


def test_keyring_does_not_alias_its_inputs() -> None:
    source = [A, B]
    mutable = bytearray(C)
    ring = Keyring(source)
    source.append(D)
    assert ring.install(mutable)  # type: ignore[arg-type]  # a caller passing a buffer
    mutable[:] = bytes(24)
    assert ring.keys == (A, B, C)
    assert isinstance(ring.keys, tuple)


@pytest.mark.parametrize("other", ["not bytes", 42, None, A.hex(), bytes(32)])
def test_contains_is_false_for_anything_not_installed(other: object) -> None:
    assert other not in Keyring([A, B])


# ---------------------------------------------------------------------------------------------
# install / use / remove (memberlist AddKey / UseKey / RemoveKey)


@pytest.mark.parametrize(
    ("start", "op", "key", "expected", "changed", "error"),
    [
        # install: appended if absent, a no-op if present; the size is checked first.
        ([A], "install", B, (A, B), True, None),
        ([A, B], "install", C, (A, B, C), True, None),
        ([A, B], "install", D, (A, B, D), True, None),
        ([A, B], "install", B, (A, B), False, None),
        ([A, B], "install", A, (A, B), False, None),
        ([A], "install", bytes(20), (A,), False, BAD_KEY_SIZE),
        ([A], "install", b"", (A,), False, BAD_KEY_SIZE),
        ([A], "install", bytes(64), (A,), False, BAD_KEY_SIZE),
        # use: the key moves to the front, the others keep their order.
        ([A, B, C], "use", C, (C, A, B), True, None),
        ([A, B, C], "use", B, (B, A, C), True, None),
        ([A, B], "use", A, (A, B), False, None),
        ([A], "use", A, (A,), False, None),
        ([A], "use", B, (A,), False, NOT_IN_KEYRING),
        ([A, B], "use", D, (A, B), False, NOT_IN_KEYRING),
        ([A], "use", b"short", (A,), False, NOT_IN_KEYRING),  # UseKey does not check sizes
        # remove: never the primary; an absent key is a no-op.
        ([A, B, C], "remove", B, (A, C), True, None),
        ([A, B, C], "remove", C, (A, B), True, None),
        ([A, B], "remove", A, (A, B), False, REMOVE_PRIMARY),
        ([A], "remove", A, (A,), False, REMOVE_PRIMARY),
        ([A, B], "remove", D, (A, B), False, None),
        ([A], "remove", b"short", (A,), False, None),
    ],
)
def test_keyring_operation(
    start: list[bytes],
    op: str,
    key: bytes,
    expected: tuple[bytes, ...],
    changed: bool,
    error: str | None,
) -> None:
    ring = Keyring(start)
    method = {"install": ring.install, "use": ring.use, "remove": ring.remove}[op]
    if error is None:
        assert method(key) is changed
    else:
        with pytest.raises(KeyringError) as exc:
            method(key)
        assert str(exc.value) == error
    assert ring.keys == expected
    assert ring.primary == expected[0]
    assert len(ring) == len(expected)
    # the generation moves exactly when the keyring changed
    assert ring.generation == (1 if changed else 0)


def test_error_texts_are_memberlists() -> None:
    assert NOT_IN_KEYRING == "Requested key is not in the keyring"
    assert REMOVE_PRIMARY == "Removing the primary key is not allowed"
    assert EMPTY_KEYRING == "Keyring file contains no keys"


def test_rotation_as_serf_keys_does_it() -> None:
    """06-encrypted: K1 alone, ``install`` K2, ``use`` K2, ``remove`` K1 -> K2 alone."""
    ring = Keyring([K1])
    steps = [
        (ring.install, K2, (K1, K2), 1),
        (ring.install, K2, (K1, K2), 1),  # repeated: no change
        (ring.use, K2, (K2, K1), 2),
        (ring.use, K2, (K2, K1), 2),  # already primary: no change
        (ring.remove, K1, (K2,), 3),
        (ring.remove, K1, (K2,), 3),  # already gone: no change
    ]
    for method, key, keys, generation in steps:
        method(key)
        assert ring.keys == keys
        assert ring.generation == generation
    assert ring.encoded() == [K2_B64]
    with pytest.raises(KeyringError, match=REMOVE_PRIMARY):
        ring.remove(K2)
    assert ring.generation == 3


def test_generation_counts_every_change() -> None:
    ring = Keyring([A])
    changes = 0
    for key in (B, C, D):
        assert ring.install(key)
        changes += 1
        assert ring.generation == changes
    for key in (D, C, A):
        assert ring.use(key)
        changes += 1
        assert ring.generation == changes
    assert ring.remove(B)
    changes += 1
    assert ring.generation == changes
    assert ring.keys == (A, C, D)  # D, then C, then A moved to the front


# ---------------------------------------------------------------------------------------------
# Key text and names


def test_encoded_lists_base64_primary_first() -> None:
    ring = Keyring([K1, K2])
    assert ring.encoded() == [K1_B64, K2_B64]
    ring.use(K2)
    assert ring.encoded() == [K2_B64, K1_B64]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (K1_B64, K1),
        (K2_B64, K2),
        ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", bytes(range(24))),
        (f"  {K2_B64}\n", K2),  # surrounding whitespace (a keyring file line) is stripped
        ("", b""),  # the length is the keyring's business, not the decoder's
        ("AAEC", b"\x00\x01\x02"),
    ],
)
def test_decode_key(text: str, key: bytes) -> None:
    assert decode_key(text) == key


@pytest.mark.parametrize(
    "text",
    [
        "EBESExQVFhcYGRobHB0eHw",  # padding missing
        "EBESExQVFhcYGRobHB0eHw=",  # padding short
        "EBESExQVFhcYGRob-B0eHw==",  # URL-safe alphabet
        "EBESExQVFhcYGRob_B0eHw==",
        "EBESExQV FhcYGRobHB0eHw==",  # space inside
        "EBESExQVFhcYGRobHB0eHw==!",
        "EBESExQVFhcYGRobHB0eHé==",  # not ASCII
        "A",
    ],
)
def test_decode_key_refuses_bad_base64(text: str) -> None:
    with pytest.raises(ValueError, match=r"^illegal base64 data") as exc:
        decode_key(text)
    assert not isinstance(exc.value, KeyringError)


@pytest.mark.parametrize("size", KEY_SIZES)
def test_encode_key_round_trips(size: int) -> None:
    key = bytes(range(100, 100 + size))
    text = encode_key(key)
    assert text.isascii()
    assert len(text) == 4 * ((size + 2) // 3)  # standard, padded
    assert decode_key(text) == key


def test_encode_key_matches_serf() -> None:
    assert encode_key(K1) == K1_B64
    assert encode_key(K2) == K2_B64


def test_fingerprint() -> None:
    assert fingerprint(K1) == "630dcd29"
    assert fingerprint(K2) == "fc2e2c73"
    for key in (A, B, C, D):
        fp = fingerprint(key)
        assert fp == hashlib.sha256(key).hexdigest()[:8]
        assert len(fp) == 8
        assert int(fp, 16) >= 0
    assert len({fingerprint(k) for k in (A, B, C, D, K1, K2)}) == 6


@pytest.mark.parametrize("keys", [[K1], [K2, K1], [A, B, C, D]])
def test_repr_shows_fingerprints_not_keys(keys: list[bytes]) -> None:
    ring = Keyring(keys)
    text = repr(ring)
    assert text == "Keyring([" + ", ".join(fingerprint(k) for k in keys) + "])"
    for key in keys:
        assert encode_key(key) not in text
        assert key.hex() not in text
        assert repr(key) not in text
    assert str(ring) == text
