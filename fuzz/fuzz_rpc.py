"""Fuzz Serf's RPC protocol decoders: ``FrameReader`` and every request and response decoder.

Owns the rule that bytes from an RPC peer give objects or ``ProtocolError``, never anything
else, on both ends of ``rpc.protocol``:

* the agent side, as ``rpc.server`` reads a connection: ``FrameReader.feed`` (the input cut
  into two chunks at a point taken from it), then ``decode_request_header`` for each header
  and ``decode_request_body`` for the body of every command that has one; and, since a body
  may follow any header, every object is also decoded as the body of *every* command;
* the client side (``rpc.client`` reading an agent): ``decode_response_header`` and the
  decoders of every response body and stream record (members, key responses, coordinates,
  stats, query and event records).

``ProtocolError`` is the only error type allowed out of any of them.  Memory is bounded by the
reader's object cap (``DEFAULT_MAX_OBJECT``) and msgpack's container limits, which
``-rss_limit_mb`` checks.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

from fuzzkit import Finding, dedupe, golden_records, instrument, main

with instrument(__name__ == "__main__"):
    from serf_trio.rpc import protocol as p
    from serf_trio.rpc.api import KeyResponse, QueryRecord, RpcMember, UserEventRecord

MAX_OBJECTS = 64  # objects decoded per input (bounded work; an input is at most a few KiB)

_CLIENT_DECODERS: list[Callable[[Any], object]] = [
    p.decode_response_header,
    p.members_from_body,
    p.key_response_from_body,
    p.coordinate_from_body,
    p.stats_from_body,
    p.query_record_from_wire,
    p.event_record_from_wire,
    p.member_from_wire,
]


def read_objects(data: bytes) -> list[Any]:
    """The objects a server connection reads from ``data`` (cut in two at a point ``data``
    names), up to the first ``ProtocolError``."""
    reader = p.FrameReader()
    cut = data[0] % (len(data) + 1) if data else 0
    objs: list[Any] = []
    for chunk in (data[:cut], data[cut:]):
        try:
            objs += reader.feed(chunk)
        except p.ProtocolError:
            break
    if reader.pending > reader.max_object:
        raise Finding(f"reader holds {reader.pending} bytes past its cap")
    return objs[:MAX_OBJECTS]


def serve(objs: list[Any]) -> None:
    """Header, then body when the command has one: ``rpc.server``'s read loop, minus I/O."""
    it = iter(objs)
    for obj in it:
        try:
            header = p.decode_request_header(obj)
        except p.ProtocolError:
            return  # the server closes the connection
        if not isinstance(header.command, str) or not isinstance(header.seq, int):
            raise Finding(f"request header decoded as {header!r}")
        if header.command in p.REQUEST_BODIES:
            body = next(it, None)
            if body is None:
                return
            try:
                p.decode_request_body(header.command, body)
            except p.ProtocolError:
                return


def check(data: bytes) -> None:
    objs = read_objects(data)
    serve(objs)
    for obj in objs:
        for command in p.REQUEST_BODIES:
            with contextlib.suppress(p.ProtocolError):
                p.decode_request_body(command, obj)
        for decode in _CLIENT_DECODERS:
            with contextlib.suppress(p.ProtocolError):
                decode(obj)
        if isinstance(obj, str):
            p.valid_event_filter(obj)


QUERY_BODY = {
    "Name": "q",
    "FilterTags": {"role": "web"},
    "FilterNodes": ["n1"],
    "Timeout": 10**9,
    "RelayFactor": 2,
    "RequestAck": True,
}


def seeds() -> list[bytes]:
    """The golden RPC connections (both directions) plus encoded requests and responses."""
    out: list[bytes] = []
    for rec in golden_records("rpc"):
        if rec.get("transport") == "rpc":
            out += [bytes.fromhex(rec[k]) for k in ("c2s_hex", "s2c_hex") if rec.get(k)]
    member = RpcMember(
        name="n1", addr=b"\x7f\x00\x00\x01", port=7946, tags={"role": "web"}, status="alive",
        protocol_min=1, protocol_max=5, protocol_cur=2, delegate_min=2, delegate_max=5,
        delegate_cur=4,
    )  # fmt: skip
    keys = KeyResponse(keys={"a2V5": 2}, messages={"n2": "err"}, num_nodes=2, num_resp=2, num_err=1)
    out += [
        p.encode_request(p.HANDSHAKE, 1, {"Version": 1}),
        p.encode_request(p.EVENT, 2, {"Name": "deploy", "Payload": b"v1", "Coalesce": True}),
        p.encode_request(p.QUERY, 3, QUERY_BODY),
        p.encode_request(p.STREAM, 4, {"Type": "member-join,user:deploy"}),
        p.encode_request(p.MEMBERS, 5),
        p.encode_response(5, "", p.members_body([member]), has_body=True),
        p.encode_response(6, "", p.key_response_body(keys), has_body=True),
        p.encode_response(7, "", p.coordinate_body(None), has_body=True),
        p.encode_response(8, "", p.stats_body({"agent": {"name": "n1"}}), has_body=True),
        p.pack(p.query_record_to_wire(QueryRecord("response", "n1", b"ok"))),
        p.pack(p.event_record_to_wire(UserEventRecord("deploy", b"v1", 3, False))),
    ]
    return dedupe(out)


if __name__ == "__main__":
    main(check, seeds)
    sys.exit(0)
