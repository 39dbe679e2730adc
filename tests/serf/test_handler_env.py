"""The handler contract, byte-exact with invocations recorded from the real serf agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from serf_trio.serf.effects import SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from serf_trio.serf.handler_env import (
    OutputBuffer,
    handler_env,
    handler_stdin,
    max_response_payload,
    member_line,
    payload_stdin,
    tag_env_name,
)
from serf_trio.serf.members import SerfMember
from serf_trio.swim.api import Address

DATA = Path(__file__).parent.parent / "data" / "serf" / "handler-examples.txt"


def member(name: str, ip: str, tags: dict[str, str]) -> SerfMember:
    return SerfMember(name, Address(ip, 7946), tags, "alive", 1, 5, 5, 2, 5, 5, 0)


N1 = {"role": "lb", "dc": "lab"}
N2 = {"role": "web", "dc": "lab"}
N3 = {"role": "db"}

# The recorded invocations, in file order: (self name, self tags, event).  Member tag order
# follows the recording (Go map order).
CASES: list[tuple[str, dict[str, str], object]] = [
    (
        "n3",
        N3,
        SerfMemberEvent(
            "member-join",
            (
                member("n3", "127.0.0.13", {"role": "db"}),
                member("n2", "127.0.0.12", {"role": "web", "dc": "lab"}),
                member("n1", "127.0.0.11", {"role": "lb", "dc": "lab"}),
            ),
        ),
    ),
    (
        "n1",
        N1,
        SerfMemberEvent(
            "member-update",
            (member("n2", "127.0.0.12", {"role": "web", "dc": "lab", "version": "2"}),),
        ),
    ),
    (
        "n3",
        N3,
        SerfMemberEvent(
            "member-leave",
            (
                member("n3", "127.0.0.13", {"role": "db"}),
                member("n1", "127.0.0.11", {"role": "lb", "dc": "lab"}),
            ),
        ),
    ),
    (
        "n1",
        N1,
        SerfMemberEvent(
            "member-failed",
            (member("n2", "127.0.0.12", {"dc": "lab", "version": "2", "role": "web"}),),
        ),
    ),
    ("n1", N1, SerfUserEvent("deploy", b"v1.2.3", 1, True)),
    ("n1", N1, SerfQueryEvent("load", b"relay", 3, token=7, deadline=0.0)),
    ("n1", N1, SerfUserEvent("ping-empty", b"", 3, True)),
]


def recorded() -> list[tuple[dict[str, str], bytes]]:
    """(SERF_* environment, stdin bytes) of each recorded invocation."""
    out: list[tuple[dict[str, str], bytes]] = []
    env: dict[str, str] = {}
    for line in DATA.read_text().splitlines():
        if line.startswith("=== event="):
            env = {}
        elif line.startswith("SERF_"):
            key, _, value = line.partition("=")
            env[key] = value
        elif line.startswith("--- stdin (hex):"):
            out.append((env, bytes.fromhex(line.split(":", 1)[1].strip())))
    return out


def test_recording_has_every_case() -> None:
    assert len(recorded()) == len(CASES)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_env_and_stdin_match_recording(index: int) -> None:
    self_name, self_tags, event = CASES[index]
    want_env, want_stdin = recorded()[index]
    assert handler_env(self_name, self_tags, event) == want_env
    assert handler_stdin(event) == want_stdin


@pytest.mark.parametrize(
    ("tag", "env"),
    [
        ("dc", "SERF_TAG_DC"),
        ("role", "SERF_TAG_ROLE"),
        ("build-id", "SERF_TAG_BUILD_ID"),
        ("a.b c", "SERF_TAG_A_B_C"),
        ("x_9", "SERF_TAG_X_9"),
        ("straße", "SERF_TAG_STRA_E"),  # one "_" per character, as Go's rune-wise replace
    ],
)
def test_tag_env_name(tag: str, env: str) -> None:
    assert tag_env_name(tag) == env


def test_escapes_tabs_and_newlines_in_member_lines() -> None:
    m = member("we\tird\nname", "10.0.0.1", {"role": "a\tb", "note": "x\ny"})
    assert member_line(m) == b"we\\tird\\nname\t10.0.0.1\ta\\tb\trole=a\\tb,note=x\\ny\n"


def test_ipv6_member_line_has_no_brackets() -> None:
    assert member_line(member("v6", "::1", {})) == b"v6\t::1\t\t\n"


def test_payload_newline_rule() -> None:
    assert payload_stdin(b"") == b""
    assert payload_stdin(b"x") == b"x\n"
    assert payload_stdin(b"x\n") == b"x\n"
    assert payload_stdin(b"\x00\xff") == b"\x00\xff\n"


def test_nul_dropped_from_env_values() -> None:
    env = handler_env("n\x001", {"k": "a\x00b"}, SerfUserEvent("e", b"", 1, False))
    assert env["SERF_SELF_NAME"] == "n1"
    assert env["SERF_TAG_K"] == "ab"


def test_not_an_event_is_refused() -> None:
    with pytest.raises(TypeError):
        handler_env("n", {}, object())
    with pytest.raises(TypeError):
        handler_stdin("member-join")


def test_output_buffer_keeps_last_bytes() -> None:
    buf = OutputBuffer(8)
    buf.write(b"0123")
    assert not buf.truncated
    buf.write(b"456789ab")
    assert buf.getvalue() == b"456789ab"
    assert buf.total == 12 and buf.truncated


def test_max_response_payload_is_conservative() -> None:
    # An encoded queryResponse with a payload this size is at most the limit.
    assert max_response_payload(1024, "n1") == 1024 - 55 - 2
    assert max_response_payload(10, "x" * 50) == 0
