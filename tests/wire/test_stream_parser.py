"""``StreamParser``: incremental, linear-time reading of one stream message."""

from __future__ import annotations

from typing import Any

import pytest

from serf_trio.wire import codec, stream
from serf_trio.wire.codec import DecodeError, pack
from serf_trio.wire.messages import DEFAULT_VSN, Ack, Ping, PushNodeState, PushPull, UserMsg
from serf_trio.wire.packet import compress_message
from serf_trio.wire.stream import (
    ENCRYPTED_BUT_NOT_CONFIGURED,
    MAX_STREAM_BYTES,
    StreamParser,
    decode_stream_message,
    encode_stream_message,
)


def _push_pull(n_nodes: int, user_state: bytes = b"serf") -> PushPull:
    nodes = tuple(
        PushNodeState(f"node-{i}", b"\x7f\x00\x00\x01", 7946, b"\xff\x80", 1, 0, DEFAULT_VSN)
        for i in range(n_nodes)
    )
    return PushPull(False, nodes, user_state)


def test_each_node_state_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """4 KiB chunks of a large push/pull: work is linear (no re-parse from the start)."""
    msg = _push_pull(3000)
    data = encode_stream_message(msg, compress=False)
    assert len(data) > 40 * 4096
    calls = 0
    real = codec.decode_node_state

    def counting(obj: object) -> PushNodeState:
        nonlocal calls
        calls += 1
        return real(obj)

    monkeypatch.setattr(stream, "decode_node_state", counting)
    parser = StreamParser()
    results = [parser.feed(data[i : i + 4096]) for i in range(0, len(data), 4096)]
    assert results[-1] == msg and all(r is None for r in results[:-1])
    assert calls == 3000


def test_one_byte_chunks() -> None:
    for compress in (False, True):
        msg = _push_pull(5, b"user-state" * 10)
        data = encode_stream_message(msg, compress=compress)
        parser = StreamParser()
        got = [parser.feed(data[i : i + 1]) for i in range(len(data))]
        assert got[-1] == msg and got.count(None) == len(data) - 1
        assert parser.compressed is compress


def test_message_complete_before_eof_and_trailing_bytes_ignored() -> None:
    data = encode_stream_message(Ack(7, None), compress=False)
    parser = StreamParser()
    assert parser.feed(data + b"junk") == Ack(7, None)
    assert parser.feed(b"more") == Ack(7, None)
    assert parser.finish() == Ack(7, None)


def test_incomplete_at_eof() -> None:
    data = encode_stream_message(UserMsg(b"hello"), compress=False)
    parser = StreamParser()
    assert parser.feed(data[:-1]) is None
    with pytest.raises(DecodeError, match="closed mid-message"):
        parser.finish()
    with pytest.raises(DecodeError, match="closed mid-message"):
        StreamParser().finish()


def test_truncated_compressed_message_is_an_error() -> None:
    inner = encode_stream_message(UserMsg(b"hello"), compress=False)[:-2]
    with pytest.raises(DecodeError, match="incomplete"):
        decode_stream_message(compress_message(inner))


def test_encrypted_stream_without_keyring_gives_memberlist_text() -> None:
    with pytest.raises(DecodeError) as info:
        StreamParser().feed(b"\x0a\x00\x00\x00\x1d" + bytes(29))
    assert str(info.value) == ENCRYPTED_BUT_NOT_CONFIGURED
    assert str(info.value) == "Remote state is encrypted and encryption is not configured"


@pytest.mark.parametrize("t", [1, 3, 4, 5, 7, 11, 12, 244])
def test_non_stream_types_are_refused(t: int) -> None:
    with pytest.raises(DecodeError, match="not supported"):
        StreamParser().feed(bytes([t]) + pack({"SeqNo": 1}))


def test_compress_inside_compress_is_refused() -> None:
    inner = encode_stream_message(Ping(1, "n"), compress=True)
    with pytest.raises(DecodeError, match="not supported"):
        decode_stream_message(compress_message(inner))


class _CountingUnpacker:
    """Wraps the parser's msgpack unpacker and counts the work it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fed = 0
        self.unpacks = 0

    def feed(self, chunk: bytes) -> None:
        self.fed += len(chunk)
        self.inner.feed(chunk)

    def unpack(self) -> Any:
        self.unpacks += 1
        return self.inner.unpack()

    def skip(self) -> None:
        self.unpacks += 1
        self.inner.skip()

    def tell(self) -> int:
        return int(self.inner.tell())

    def read_bytes(self, n: int) -> bytes:
        return bytes(self.inner.read_bytes(n))


def test_20mib_push_pull_in_4k_chunks_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every byte reaches the unpacker once and each unpack attempt either yields an object
    or stops the feed (quadratic re-parsing of the growing buffer took minutes here)."""
    counters: list[_CountingUnpacker] = []
    real = stream._new_unpacker

    def counting(max_bytes: int) -> _CountingUnpacker:
        counters.append(_CountingUnpacker(real(max_bytes)))
        return counters[-1]

    monkeypatch.setattr(stream, "_new_unpacker", counting)
    msg = _push_pull(20_000, b"u" * (MAX_STREAM_BYTES - 3 * 1024 * 1024))
    data = encode_stream_message(msg, compress=False)
    assert len(data) < MAX_STREAM_BYTES
    parser = StreamParser()
    feeds = 0
    for i in range(0, len(data), 4096):
        out = parser.feed(data[i : i + 4096])
        feeds += 1
    assert out == msg
    (unpacker,) = counters
    assert unpacker.fed == len(data) - 1  # all but the type byte, exactly once
    assert unpacker.unpacks <= 1 + len(msg.nodes) + feeds  # header + nodes + one miss per feed


def test_push_pull_node_states_seen_before_are_not_decoded_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node state whose exact bytes were decoded before comes from the cache: the second
    push/pull of the same members decodes nothing, and gives an equal message."""
    monkeypatch.setattr(stream, "_node_states", {})
    calls: list[object] = []
    real = stream.decode_node_state

    def counting(obj: object) -> PushNodeState:
        calls.append(obj)
        return real(obj)

    monkeypatch.setattr(stream, "decode_node_state", counting)
    msg = _push_pull(50, b"state")
    data = encode_stream_message(msg, compress=False)
    first = StreamParser().feed(data)
    assert first == msg and len(calls) == 50
    # Fed one byte at a time: entries are still sliced out whole.
    parser = StreamParser()
    out = None
    for i in range(len(data)):
        out = parser.feed(data[i : i + 1])
    assert out == msg and len(calls) == 50
    # A bad entry is still an error, and is not cached.
    bad = bytearray(data)
    pos = bad.index(b"Incarnation") + len(b"Incarnation")
    bad[pos] = 0xC1  # never used in msgpack
    with pytest.raises(DecodeError):
        StreamParser().feed(bytes(bad))
    assert len(stream._node_states) == 50
