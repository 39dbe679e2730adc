"""Fuzz the TCP stream receive path: ``StreamParser``, ``decode_stream_message`` and a Serf
core's ``handle_stream``.

Owns three rules for plaintext stream messages (encrypted frames are ``fuzz_envelope``'s):

* the decoders are total: ``StreamParser.feed`` / ``finish`` and ``decode_stream_message``
  return a message or raise ``DecodeError`` (``FramingError`` is one); anything else is a
  finding;
* the parser is chunking-independent: the stream cut in two at a point taken from the input
  gives the same message, or fails too, as the whole stream decoded at once
  (``decode_stream_message``; the driver feeds whatever the socket returns);
* the core never raises: ``SerfNode.handle_stream`` (the driver calls it with no handler
  around it) turns every decode failure into a violation and maybe an ``err`` reply, so *any*
  exception out of it, or out of the timers it set, is a finding.

Memory stays bounded by the parser's caps (``MAX_STREAM_BYTES``, ``MAX_PUSH_NODES``, 64-entry
containers, the LZW output budget): libFuzzer's ``-rss_limit_mb`` checks it.
"""

from __future__ import annotations

import sys

from fuzzkit import Finding, dedupe, golden_wire, instrument, known, main

# The LZW decoder is ``fuzz_packet``'s to explore; uninstrumented here, it no longer takes most
# of each execution (a compressed stream is inflated three times per input).
with instrument(__name__ == "__main__", exclude=("serf_trio.wire.lzw",)):
    from fuzz_packet import LATER, NOW, new_core

    from serf_trio.wire.codec import DecodeError
    from serf_trio.wire.messages import (
        DEFAULT_VSN,
        Ack,
        Err,
        Message,
        Ping,
        PushNodeState,
        PushPull,
        UserMsg,
    )
    from serf_trio.wire.stream import StreamParser, decode_stream_message, encode_stream_message


def parse(chunks: list[bytes]) -> Message | None:
    """The message ``chunks`` make, or ``None`` if the parser refused them (``DecodeError``)."""
    parser = StreamParser()
    try:
        for chunk in chunks:
            parser.feed(chunk)
        return parser.finish()
    except DecodeError:
        return None


def check(data: bytes) -> None:
    try:
        whole: Message | None = decode_stream_message(data)
    except DecodeError:
        whole = None
    cut = data[0] % len(data) if data else 0
    if cut:  # a cut at 0 is the whole stream again
        split = parse([data[:cut], data[cut:]])
        if whole != split:
            raise Finding(f"chunking changes the result: whole {whole!r}, cut at {cut}: {split!r}")
    core = new_core()
    try:
        core.handle_stream(NOW, data)  # the receive path: nothing may escape
        core.tick(LATER)
    except Exception as exc:
        if not known(exc):
            raise


def seeds() -> list[bytes]:
    """Golden plaintext streams plus each stream message type, plain and compressed."""
    node = PushNodeState("peer", b"\x7f\x00\x00\x02", 7946, b"", 3, 0, DEFAULT_VSN)
    left = PushNodeState("gone", b"\x7f\x00\x00\x03", 7946, None, 9, 3, DEFAULT_VSN)
    msgs: list[Message] = [
        PushPull(True, (node, left), b"\x00serf user state"),
        PushPull(False, (), b""),
        UserMsg(b"\x01stream user message"),
        Ping(7, "fuzz"),
        Ack(7, None),
        Err("boom"),
    ]
    out = list(golden_wire("tcp"))
    out += [encode_stream_message(m, compress=c) for m in msgs for c in (False, True)]
    return dedupe(out)


if __name__ == "__main__":
    main(check, seeds)
    sys.exit(0)
