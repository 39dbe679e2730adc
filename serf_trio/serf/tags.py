"""Serf tags inside memberlist node metadata.

Serf protocol >= 3 encodes tags as ``0xFF`` followed by a msgpack map of string to string
(gossip dialect: raw strings).  Protocol 2 put the bare role string in the metadata, so meta
that is empty or does not start with the magic byte decodes as ``{"role": meta}``.  The encoded
form, magic byte included, must fit memberlist's 512-byte metadata limit.
"""

from __future__ import annotations

import functools

from serf_trio.wire.codec import DecodeError, pack, unpack_one
from serf_trio.wire.messages import META_MAX_SIZE

TAG_MAGIC = 0xFF


class TagsTooLarge(ValueError):
    """Encoded tags over the metadata limit (Serf's error text)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"Encoded length of tags exceeds limit of {META_MAX_SIZE} bytes")
        self.size = size


def encode_tags(tags: dict[str, str]) -> bytes:
    """``0xFF`` + msgpack map, keys sorted for stable bytes; ``TagsTooLarge`` past 512 bytes."""
    data = bytes([TAG_MAGIC]) + pack(dict(sorted(tags.items())))
    if len(data) > META_MAX_SIZE:
        raise TagsTooLarge(len(data))
    return data


def decode_tags(meta: bytes | None) -> dict[str, str]:
    """Tags from node metadata; undecodable maps give ``{}`` (never raises on peer input).

    A new dict every call (the caller owns it), copied from a cache keyed by the metadata
    bytes: a join storm decodes the same few tag sets once per member and per node.
    """
    return dict(_decode_tags(meta))


@functools.lru_cache(maxsize=4096)
def _decode_tags(meta: bytes | None) -> dict[str, str]:
    # Never handed out: ``decode_tags`` copies it.
    if not meta or meta[0] != TAG_MAGIC:
        return {"role": (meta or b"").decode("utf-8", "replace")}
    try:
        obj = unpack_one(meta[1:], "tags")
    except DecodeError:
        return {}
    if not isinstance(obj, dict):
        return {}
    out: dict[str, str] = {}
    for k, v in obj.items():
        if isinstance(k, bytes) and isinstance(v, bytes):
            out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return out
