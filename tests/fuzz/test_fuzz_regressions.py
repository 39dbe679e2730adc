"""Inputs the fuzzers under ``fuzz/`` (or the review that wrote them) found, replayed in CI.

Each test feeds one minimised input to the decoder it broke and to that harness's ``check``
(no atheris needed), so the bug cannot come back unnoticed.  ``fuzz/README.md`` lists them with
the exception each raised before its fix.  A finding in code outside the decoders that is not
fixed yet goes in ``fuzzkit.KNOWN`` and here as a strict ``xfail`` (its fix turns that into an
XPASS failure, which says to drop the marker).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import msgpack
import pytest
from fuzz_harnesses import harness

from serf_trio.agent.config import ConfigError, load_file, read_keyring_file
from serf_trio.rpc.protocol import ProtocolError, key_response_from_body
from serf_trio.serf.config import SerfConfig
from serf_trio.serf.node import SerfNode
from serf_trio.serf.snapshot import replay
from serf_trio.swim.api import Address
from serf_trio.swim.config import SwimConfig
from serf_trio.wire.codec import decode_message, encode_message, pack
from serf_trio.wire.messages import Alive

# -- invalid UTF-8 in a member name (stream fuzzer) ---------------------------------------------

# An alive for a node named b"\xff" (Go strings are bytes; we keep the byte as a surrogate
# escape), as a UDP packet and as the one node of a push/pull.
ALIVE_BAD_NAME = (
    b"\x04\x85\xa4Addr\xa4\x7f\x00\x00\x02\xabIncarnation\x01\xa4Node\xa1\xff\xa4Port\xcd\x1f\n"
    b"\xa3Vsn\xa6\x01\x05\x02\x02\x05\x05"
)
PUSH_PULL_BAD_NAME = (
    b"\x06\x83\xa4Join\xc2\xa5Nodes\x01\xacUserStateLen\x00\x86\xa4Addr\xa4\x7f\x00\x00\x02"
    b"\xabIncarnation\x01\xa4Name\xa1\xff\xa4Port\xcd\x1f\n\xa5State\x00\xa3Vsn"
    b"\xa6\x01\x05\x02\x02\x05\x05"
)


def test_gossip_encoder_writes_back_invalid_utf8_names() -> None:
    # Was: UnicodeEncodeError out of wire.codec.pack when the core re-gossiped the alive.
    msg = decode_message(ALIVE_BAD_NAME)
    assert isinstance(msg, Alive) and msg.node == "\udcff"
    again = encode_message(msg)
    assert b"\xa4Node\xa1\xff" in again  # the byte goes back out as it came
    assert decode_message(again) == msg
    assert pack("a\udcffb") == b"\xa3a\xffb"
    assert pack("ok") == b"\xa2ok"  # valid text: unchanged


def _core() -> SerfNode:
    return SerfNode(
        SerfConfig(), SwimConfig(), "fuzz", Address("127.0.0.1", 7946),
        rng=random.Random(0), now=1000.0,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["packet", "stream"])
def test_harness_passes_invalid_utf8_names(name: str) -> None:
    data = ALIVE_BAD_NAME if name == "packet" else PUSH_PULL_BAD_NAME
    harness(name).check(data)


@pytest.mark.parametrize("kind", ["packet", "stream"])
def test_core_takes_a_member_with_an_invalid_utf8_name(kind: str) -> None:
    # Was (after the codec fix): UnicodeEncodeError out of swim.targets.ring_key.
    core = _core()
    if kind == "packet":
        core.handle_packet(1000.0, Address("127.0.0.2", 7946), ALIVE_BAD_NAME)
    else:
        core.handle_stream(1000.0, PUSH_PULL_BAD_NAME)
    assert "\udcff" in {m.name for m in core.members()}


# -- snapshot file: digits int() refuses ------------------------------------------------------

SNAPSHOT_BAD_LINES = [
    b"alive: a 1.2.3.4:\xc2\xb2\n",  # "²": str.isdigit() is true, int() raises ValueError
    b"clock: " + b"1" * 5000 + b"\n",  # int() refuses more than 4300 digits
    b"alive: a 1.2.3.4:" + b"7" * 5000 + b"\n",
]


@pytest.mark.parametrize("data", SNAPSHOT_BAD_LINES, ids=["superscript", "clock", "port"])
def test_snapshot_bad_digits_are_skipped_lines(data: bytes) -> None:
    # Was: ValueError out of serf.snapshot.replay, which must never raise.
    state, warnings = replay(data)
    assert state.alive == {} and state.clock == 0
    assert len(warnings) == 1
    harness("snapshot").check(data)


def test_snapshot_leading_zeros_still_read() -> None:
    zeros = b"0" * 5000
    state, warnings = replay(b"clock: " + zeros + b"7\nalive: a 1.2.3.4:" + zeros + b"7946\n")
    assert warnings == []
    assert state.clock == 7 and state.alive == {"a": "1.2.3.4:" + "0" * 5000 + "7946"}


# -- RPC client: key response Keys values ------------------------------------------------------


@pytest.mark.parametrize("value", [None, "7", [1], {"a": 1}, 1.5])
def test_key_response_keys_must_be_integers(value: object) -> None:
    # Was: TypeError (nil, list, map) out of key_response_from_body, or a silent int().
    body = {"Keys": {"k": value}, "Messages": {}, "NumErr": 0, "NumNodes": 1, "NumResp": 1}
    if value is None:  # Go decodes nil into an int as 0
        assert key_response_from_body(body).keys == {"k": 0}
    else:
        with pytest.raises(ProtocolError):
            key_response_from_body(body)
    harness("rpc").check(b"\x00" + msgpack.packb(body))


# -- config and keyring files nested deeper than the recursion limit ---------------------------

DEEP_JSON = b"[" * 100_000
DEEP_TOML = b"a = " + b"[" * 5_000


@pytest.mark.parametrize(("suffix", "data"), [(".json", DEEP_JSON), (".toml", DEEP_TOML)])
def test_deep_config_file_is_a_config_error(tmp_path: Path, suffix: str, data: bytes) -> None:
    # Was: RecursionError out of agent.config.load_file.
    path = tmp_path / f"agent{suffix}"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match="invalid"):
        load_file(path)
    harness("config").check((b"t" if suffix == ".toml" else b"j") + data)


def test_deep_keyring_file_is_a_config_error(tmp_path: Path) -> None:
    # Was: RecursionError out of agent.config.read_keyring_file.
    path = tmp_path / "keyring.json"
    path.write_bytes(DEEP_JSON)
    with pytest.raises(ConfigError, match="Failed to decode keyring file"):
        read_keyring_file(path)
    harness("keyring").check(DEEP_JSON)
    path.write_text(json.dumps(["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]))
    assert read_keyring_file(path) == [bytes(range(32))]
