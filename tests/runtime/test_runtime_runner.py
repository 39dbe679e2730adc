"""The runner's pure helpers: Serf tag meta, the members document, atomic writes, arguments."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest

from serf_trio.runtime.runner import members_document, parse_args, serf_meta, write_atomically
from serf_trio.swim.api import Address, MemberInfo, State


def test_serf_meta_is_ff_plus_msgpack_map() -> None:
    assert serf_meta({}) == b"\xff\x80"
    meta = serf_meta({"role": "web", "dc": "x"})
    assert meta[0] == 0xFF
    assert msgpack.unpackb(meta[1:], raw=True) == {b"dc": b"x", b"role": b"web"}
    assert meta[1:3] == b"\x82\xa2"  # old-spec raw strings, sorted keys (Go's encoding)


@pytest.mark.parametrize(
    ("state", "word"),
    [
        (State.ALIVE, "alive"),
        (State.SUSPECT, "alive"),
        (State.DEAD, "failed"),
        (State.LEFT, "left"),
    ],
)
def test_members_document_uses_serf_status_words(state: State, word: str) -> None:
    m = MemberInfo("b", Address("::1", 7946), b"", 1, state, b"", 0.0)
    a = MemberInfo("a", Address("127.0.0.1", 1), b"", 1, State.ALIVE, b"", 0.0)
    doc = members_document([m, a])
    assert doc == {
        "members": [
            {"name": "a", "addr": "127.0.0.1:1", "status": "alive"},
            {"name": "b", "addr": "[::1]:7946", "status": word},
        ]
    }


def test_write_atomically_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "members.json"
    write_atomically(path, '{"members": []}')
    write_atomically(path, '{"members": [1]}')
    assert json.loads(path.read_text()) == {"members": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["members.json"]


def test_parse_args() -> None:
    args = parse_args(
        ["--name", "n", "--bind", "127.0.0.1:0", "--join", "127.0.0.2:7946", "--tag", "a=b=c"]
    )
    assert args.bind == Address("127.0.0.1", 0)
    assert args.join == [Address("127.0.0.2", 7946)]
    assert args.tag == [("a", "b=c")]
    assert args.profile == "lan" and args.advertise is None
    with pytest.raises(SystemExit):
        parse_args(["--name", "n", "--bind", "example.com:1"])
