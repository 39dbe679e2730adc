"""protocol.py without sockets: dialect, schemas, the frame reader's limits, filters; paths.py;
the client's address parsing; and the client's import cost."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import pytest

from serf_trio.rpc import protocol as p
from serf_trio.rpc.api import RpcMember
from serf_trio.rpc.client import DEFAULT_TCP_PORT, ConnectError, RpcClient, parse_tcp_addr
from serf_trio.rpc.paths import candidate_socket_paths, default_socket_path
from serf_trio.rpc.server import filter_members
from serf_trio.serf.coordinate import Coordinate


def test_request_golden_bytes_handshake_and_event() -> None:
    # RPC.md 1.1, 02-user-event: the first RPC connection, byte for byte
    assert p.encode_request("handshake", 1, {"Version": 1}) == bytes.fromhex(
        "82a7436f6d6d616e64a968616e647368616b65a35365710181a756657273696f6e01"
    )
    event = p.encode_request("event", 2, {"Payload": b"v1.2.3", "Name": "deploy", "Coalesce": True})
    assert event == bytes.fromhex(
        "82a7436f6d6d616e64a56576656e74a353657102"
        "83a8436f616c65736365c3a44e616d65a66465706c6f79a75061796c6f6164c40676312e322e33"
    )
    assert p.encode_response(2) == bytes.fromhex("82a54572726f72a0a353657102")


def test_strings_of_32_to_255_bytes_use_str8_and_bytes_use_bin() -> None:
    line = "x" * 0x35
    assert p.pack(p.log_record(line)).startswith(b"\x81\xa3Log\xd9\x35")
    assert p.pack({"Payload": b"ab"}) == b"\x81\xa7Payload\xc4\x02ab"


def test_decode_struct_follows_go_msgpack() -> None:
    schema = p.REQUEST_BODIES[p.QUERY]
    d = p.decode_struct(schema, {"Name": "q", "Payload": "text-as-str", "Extra": 1})
    assert d["Payload"] == b"text-as-str"  # old raw form accepted in a []byte field
    assert d["FilterNodes"] == [] and d["FilterTags"] == {} and d["Timeout"] == 0
    with pytest.raises(p.ProtocolError, match="Name"):
        p.decode_struct(schema, {"Name": b"bin"})  # bin in a string field: refused like Go
    with pytest.raises(p.ProtocolError, match="RelayFactor"):
        p.decode_struct(schema, {"RelayFactor": 256})
    with pytest.raises(p.ProtocolError):
        p.decode_struct(schema, ["Name"])
    assert p.decode_struct({"Coalesce": p.Kind.BOOL}, {"Coalesce": 1}) == {"Coalesce": True}


def test_request_header_needs_a_command() -> None:
    assert p.decode_request_header({"Command": "members", "Seq": 3}) == p.RequestHeader(
        "members", 3
    )
    with pytest.raises(p.ProtocolError):
        p.decode_request_header({"Seq": 3})
    with pytest.raises(p.ProtocolError):
        p.decode_request_header({"Command": "x", "Seq": -1})


def test_member_roundtrip_and_sorted_keys() -> None:
    m = RpcMember("n1", bytes([10, 0, 0, 1]), 7946, {"b": "2", "a": "1"}, "alive")
    wire = p.member_to_wire(m)
    assert list(wire) == sorted(wire)
    assert list(wire["Tags"]) == ["b", "a"]  # a Go map keeps the sender's order
    assert p.member_from_wire(msgpack.unpackb(p.pack(wire), raw=False)) == m


def test_a_member_name_that_was_not_utf8_goes_out_as_the_bytes_it_came_as() -> None:
    """A peer's name with invalid UTF-8 is held with surrogate escapes (wire.codec.text);
    ``members`` must still answer, with the original bytes (found by fuzzing)."""
    name = b"n\xff1".decode("utf-8", "surrogateescape")
    m = RpcMember(name, bytes([10, 0, 0, 1]), 7946, {}, "alive")
    data = p.pack(p.members_body([m]))
    assert b"n\xff1" in data
    assert msgpack.unpackb(data, raw=True)[b"Members"][0][b"Name"] == b"n\xff1"


def test_coordinate_body_for_unknown_node_has_nil_vec() -> None:
    assert p.coordinate_body(None) == {
        "Coord": {"Adjustment": 0.0, "Error": 0.0, "Height": 0.0, "Vec": None},
        "Ok": False,
    }
    c = Coordinate((1.0,) * 8, 0.5, 0.1, 0.01)
    assert p.coordinate_from_body(p.coordinate_body(c)) == c
    assert p.coordinate_from_body(p.coordinate_body(None)) is None


@pytest.mark.parametrize(
    ("spec", "valid"),
    [
        ("", True),
        ("*", True),
        ("member-join,member-leave,member-failed,member-update,member-reap", True),
        ("user", True),
        ("user:deploy,query:load", True),
        ("query", True),
        ("member-joined", False),
        ("users", False),
        ("user,bogus", False),
    ],
)
def test_event_filter_validity(spec: str, valid: bool) -> None:
    assert p.valid_event_filter(spec) is valid


def test_unknown_log_level_text() -> None:
    assert p.err_unknown_log_level("nope") == "Unknown log level: NOPE"


# -- FrameReader -------------------------------------------------------------------------------


def test_reader_splits_concatenated_objects_across_feeds() -> None:
    data = p.pack({"a": 1}) + p.pack("x" * 300) + p.pack(None) + p.pack([1, 2])
    r = p.FrameReader()
    assert r.feed(data[:8]) == [{"a": 1}]  # 4 bytes, then 4 of the 303-byte string
    assert r.pending == 4
    assert r.feed(data[8:]) == ["x" * 300, None, [1, 2]]
    assert r.pending == 0


def test_reader_rejects_an_object_over_the_cap_before_it_completes() -> None:
    r = p.FrameReader(max_object=1000)
    big = p.pack(b"y" * 5000)
    with pytest.raises(p.ProtocolError):
        r.feed(big[:1500])
    with pytest.raises(p.ProtocolError):  # unusable after an error
        r.feed(p.pack(1))


def test_reader_caps_a_container_streamed_item_by_item() -> None:
    r = p.FrameReader(max_object=1000)
    # array16 of 900 arrays of 900 ints: each declared length is within limits
    inner = b"\xdc\x03\x84" + b"\x01" * 900
    assert r.feed(b"\xdc\x03\x84" + inner[:500]) == []
    with pytest.raises(p.ProtocolError, match="larger than 1000"):
        r.feed(inner[500:] + inner)


def test_reader_accepts_many_small_objects_beyond_the_cap_in_total() -> None:
    r = p.FrameReader(max_object=1000)
    data = p.pack({"k": "v" * 100}) * 200  # 21 KB in one feed
    assert len(r.feed(data)) == 200


@pytest.mark.parametrize(
    "bad",
    [b"\xc1", b"\x81\x01\x02", b"\x91" * 5000 + b"\xc0"],
    ids=["reserved", "int-map-key", "deep-nesting"],
)
def test_reader_turns_malformed_input_into_protocol_error(bad: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.FrameReader().feed(bad)


# -- members-filtered --------------------------------------------------------------------------


def test_filter_uses_go_anchoring_without_a_group() -> None:
    ms = [RpcMember(n, b"\x7f\0\0\1", 1, {}, "alive") for n in ("web1", "xdb", "db2")]
    # ipc.go builds "^" + expr + "$": "web.*|db2" is "^web.*" or "db2$" (as in Go)
    assert [m.name for m in filter_members(ms, "web.*|db2", "", {})] == ["web1", "db2"]
    assert [m.name for m in filter_members(ms, "x|web1", "", {})] == ["web1", "xdb"]
    assert filter_members(ms, "db2\n", "", {}) == []  # "$" is end of text, as in Go


# -- paths and addresses -----------------------------------------------------------------------


def test_default_socket_path() -> None:
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/1000"}) == (
        "/run/user/1000/serf-trio/rpc.sock"
    )
    assert default_socket_path({}) == "/run/serf-trio/rpc.sock"
    assert default_socket_path({"XDG_RUNTIME_DIR": ""}) == "/run/serf-trio/rpc.sock"


def test_candidate_paths_in_order() -> None:
    assert candidate_socket_paths({"XDG_RUNTIME_DIR": "/x"}) == [
        "/x/serf-trio/rpc.sock",
        "/run/serf-trio/rpc.sock",
    ]
    assert candidate_socket_paths({"XDG_RUNTIME_DIR": "/run"}) == ["/run/serf-trio/rpc.sock"]


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:7373", ("127.0.0.1", 7373)),
        ("localhost", ("localhost", DEFAULT_TCP_PORT)),
        ("[::1]:8000", ("::1", 8000)),
        (":9000", ("127.0.0.1", 9000)),
    ],
)
def test_parse_tcp_addr(addr: str, expected: tuple[str, int]) -> None:
    assert parse_tcp_addr(addr) == expected


def test_parse_tcp_addr_rejects_a_bad_port() -> None:
    with pytest.raises(ConnectError, match="HOST:PORT"):
        parse_tcp_addr("host:abc")


def test_client_without_agent_raises_connect_error(tmp_path: object) -> None:
    missing = f"{tmp_path}/nothing.sock"
    with pytest.raises(ConnectError, match=r"nothing\.sock"):
        RpcClient(socket_path=missing, timeout=1.0)


def test_client_import_stays_light() -> None:
    code = (
        "import sys, serf_trio.rpc.client; "
        "print(sorted(m for m in ('trio', 'structlog', 'rich', 'typer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
