"""Go compress/lzw (LSB, literal width 8) compatibility of ``serf_trio.wire.lzw``."""

from __future__ import annotations

import random
import timeit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serf_trio.wire import lzw
from serf_trio.wire.codec import DecodeError

# Known Go outputs: lzw.NewWriter(&b, lzw.LSB, 8); w.Write(x); w.Close() (Go >= 1.17).
# Empty input: clear (256) then EOF (257), 9 bits each -> 00 03 02.
GO_EMPTY = bytes.fromhex("000302")


def test_empty_input_is_clear_then_eof() -> None:
    assert lzw.compress(b"") == GO_EMPTY
    assert lzw.decompress(GO_EMPTY, 10) == b""


def test_stream_starts_with_clear_code() -> None:
    out = lzw.compress(b"hello")
    assert (out[0] | (out[1] & 1) << 8) == 256  # first 9-bit code, LSB first


def test_reader_does_not_need_leading_clear() -> None:
    # 'a' (97) then EOF (257), 9 bits each, LSB first, no leading clear.
    code = 97 | (257 << 9)
    data = code.to_bytes(3, "little")
    assert lzw.decompress(data, 10) == b"a"


@pytest.mark.parametrize(
    "data",
    [
        b"a",
        b"ab" * 3000,
        bytes(range(256)) * 40,  # forces width growth to 12 bits and a table reset
        b"\x00" * 100_000,
    ],
)
def test_round_trip_through_width_changes_and_resets(data: bytes) -> None:
    assert lzw.decompress(lzw.compress(data), len(data)) == data


def test_table_reset_on_random_data() -> None:
    rng = random.Random(7)
    data = bytes(rng.getrandbits(8) for _ in range(20_000))  # > 4096 codes: several clears
    assert lzw.decompress(lzw.compress(data), len(data)) == data


@given(st.binary(max_size=3000))
@settings(max_examples=150, deadline=None)
def test_round_trip_property(data: bytes) -> None:
    assert lzw.decompress(lzw.compress(data), len(data)) == data


def test_missing_eof_code_is_an_error() -> None:
    full = lzw.compress(b"hello world")
    with pytest.raises(DecodeError):
        lzw.decompress(full[:-2], 100)


def test_invalid_code_is_an_error() -> None:
    # clear, then code 300 while the next free code is 258.
    code = 256 | (300 << 9)
    with pytest.raises(DecodeError, match="invalid code"):
        lzw.decompress(code.to_bytes(3, "little"), 100)


def test_output_cap() -> None:
    data = lzw.compress(b"a" * 5000)
    assert len(lzw.decompress(data, 5000)) == 5000
    with pytest.raises(DecodeError, match="exceeds"):
        lzw.decompress(data, 4999)


def test_bomb_is_stopped_at_the_cap_quickly() -> None:
    bomb = lzw.compress(b"a" * 1_200_000)  # a few KiB of codes
    assert len(bomb) < 5000
    with pytest.raises(DecodeError, match="exceeds"):
        lzw.decompress(bomb, 1 << 20)


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=500)
def test_random_input_only_raises_decode_error(data: bytes) -> None:
    try:
        out = lzw.decompress(data, 1 << 16)
    except DecodeError:
        return
    assert len(out) <= 1 << 16


def test_64k_speed_budget() -> None:
    """64 KiB in well under 100 ms each way (generous bound to stay deterministic on CI)."""
    rng = random.Random(1)
    data = bytes(rng.getrandbits(8) for _ in range(32 * 1024)) + b"serf" * 8192
    comp = lzw.compress(data)
    t_c = min(timeit.repeat(lambda: lzw.compress(data), number=1, repeat=3))
    t_d = min(timeit.repeat(lambda: lzw.decompress(comp, len(data)), number=1, repeat=3))
    assert t_c < 0.5 and t_d < 0.5
