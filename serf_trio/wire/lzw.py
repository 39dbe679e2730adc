"""LZW as Go's ``compress/lzw`` speaks it (LSB bit order, 8-bit literals): the ``compress`` codec.

memberlist's only compression algorithm (``Algo: 0``) is Go's ``compress/lzw`` in LSB order with
a literal width of 8, i.e. the GIF variant, not TIFF's "early change" one.  This module owns a
byte-exact re-implementation of it, because a Python peer must both read what Go sends and may be
compared byte-for-byte against Go's output:

* codes 0..255 are literals, 256 is *clear*, 257 is *end of data*, the dictionary starts at 258;
* codes are packed least-significant-bit first; the width starts at 9 bits and grows by one when
  the next code to be assigned reaches ``2**width`` (no early change), up to 12 bits;
* the Go writer (1.17+) begins every stream with a clear code, and when its next code would be
  4095 it emits a clear code (at the current width) and starts over at 9 bits;
* the Go reader does not need the leading clear; when its table is full (4096 entries) it stops
  adding entries until a clear code arrives; a stream that ends before the end-of-data code is
  an error (memberlist copies the whole reader and fails on ``unexpected EOF``); bytes after the
  end-of-data code are ignored.

The implementation is pure Python and dict based; a 64 KiB message compresses or decompresses in
a few tens of milliseconds.
"""

from __future__ import annotations

from .codec import DecodeError

_CLEAR = 256
_EOF = 257
_FIRST = 258
_MAX_WIDTH = 12
_MAX_CODE = (1 << _MAX_WIDTH) - 1  # 4095: the Go writer clears when its next code reaches it
_TABLE_SIZE = 1 << _MAX_WIDTH  # 4096: the Go reader stops adding entries here


def compress(data: bytes) -> bytes:
    """Compress ``data`` exactly as Go's ``lzw.NewWriter(w, lzw.LSB, 8)`` + one Write + Close."""
    out = bytearray()
    bits = 0  # pending bits, LSB first
    nbits = 0
    width = 9
    hi = _EOF  # last code assigned; the next entry gets hi + 1
    overflow = 1 << width
    table: dict[int, int] = {}

    # Start with a clear code (Go >= 1.17 does so unconditionally).
    bits |= _CLEAR << nbits
    nbits += width

    if data:
        code = data[0]
        for literal in data[1:]:
            key = (code << 8) | literal
            hit = table.get(key)
            if hit is not None:
                code = hit
                continue
            # Emit the current code; the literal starts the next one.
            bits |= code << nbits
            nbits += width
            while nbits >= 8:
                out.append(bits & 0xFF)
                bits >>= 8
                nbits -= 8
            code = literal
            hi += 1
            if hi == overflow:
                width += 1
                overflow <<= 1
            if hi == _MAX_CODE:
                # Out of codes: clear at the current width, then restart at 9 bits.
                bits |= _CLEAR << nbits
                nbits += width
                width = 9
                hi = _EOF
                overflow = 1 << width
                table.clear()
                continue
            table[key] = hi
        # Close(): flush the pending code (which also advances hi, possibly widening or clearing).
        bits |= code << nbits
        nbits += width
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == _MAX_CODE:
            bits |= _CLEAR << nbits
            nbits += width
            width = 9
    bits |= _EOF << nbits
    nbits += width
    while nbits >= 8:
        out.append(bits & 0xFF)
        bits >>= 8
        nbits -= 8
    if nbits:
        out.append(bits & 0xFF)  # last partial byte, zero padded
    return bytes(out)


def decompress(data: bytes, max_out: int) -> bytes:
    """Decompress a Go LZW (LSB, 8) stream; ``DecodeError`` if malformed or over ``max_out``."""
    out = bytearray()
    entries: list[bytes] = [bytes([i]) for i in range(256)] + [b"", b""]
    width = 9
    hi = _EOF
    overflow = 1 << width
    last: bytes | None = None  # expansion of the previous code; None right after a clear
    bits = 0
    nbits = 0
    pos = 0
    n = len(data)
    while True:
        while nbits < width:
            if pos >= n:
                raise DecodeError("lzw: stream ends before the end-of-data code")
            bits |= data[pos] << nbits
            pos += 1
            nbits += 8
        code = bits & ((1 << width) - 1)
        bits >>= width
        nbits -= width
        if code < _CLEAR:
            cur = entries[code]
        elif code == _CLEAR:
            del entries[_FIRST:]
            width = 9
            hi = _EOF
            overflow = 1 << width
            last = None
            continue
        elif code == _EOF:
            return bytes(out)
        elif code <= hi:
            if code == hi and last is not None:
                # The code being defined right now: previous expansion + its own first byte.
                cur = last + last[:1]
            elif code < len(entries):
                cur = entries[code]
            else:
                raise DecodeError("lzw: invalid code")
        else:
            raise DecodeError("lzw: invalid code")
        out += cur
        if len(out) > max_out:
            raise DecodeError(f"lzw: output exceeds {max_out} bytes")
        if last is not None:
            # Entry hi is the previous expansion followed by this one's first byte.
            entries.append(last + cur[:1])
        hi += 1
        last = cur
        if hi >= overflow:
            if width == _MAX_WIDTH:
                # Table full: keep decoding with the existing entries until a clear code.
                last = None
                hi -= 1
            else:
                width += 1
                overflow <<= 1
