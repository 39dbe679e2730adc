"""Serf's event filter syntax and handler spec parsing."""

from __future__ import annotations

import pytest

from serf_trio.serf.effects import SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from serf_trio.serf.filters import (
    MATCH_ALL,
    FilterTerm,
    InvalidEventFilter,
    InvalidHandlerSpec,
    event_type_and_name,
    parse_filter,
    parse_handler_spec,
    parse_handler_specs,
)

JOIN = SerfMemberEvent("member-join", ())
REAP = SerfMemberEvent("member-reap", ())
DEPLOY = SerfUserEvent("deploy", b"v1", 3, True)
OTHER_USER = SerfUserEvent("restart", b"", 4, False)
LOAD = SerfQueryEvent("load", b"", 5, token=1, deadline=10.0)


@pytest.mark.parametrize(
    ("text", "event", "expected"),
    [
        ("", JOIN, True),
        ("*", LOAD, True),
        ("member-join", JOIN, True),
        ("member-join", REAP, False),
        ("member-join,member-reap", REAP, True),
        ("user", DEPLOY, True),
        ("user", LOAD, False),
        ("user:deploy", DEPLOY, True),
        ("user:deploy", OTHER_USER, False),
        ("user:", OTHER_USER, True),  # empty name = any user event
        ("query", LOAD, True),
        ("query:load", LOAD, True),
        ("query:uptime", LOAD, False),
        ("query:deploy", DEPLOY, False),  # same name, other event type
        ("member-leave,member-failed", JOIN, False),
    ],
)
def test_filter_matches(text: str, event: object, expected: bool) -> None:
    assert parse_filter(text).match(event) is expected


def test_empty_filter_is_star() -> None:
    assert parse_filter("") == MATCH_ALL


@pytest.mark.parametrize(
    "text", ["member-joined", "users", "user,bogus", " member-join", "query:x,"]
)
def test_invalid_filter_has_serf_text(text: str) -> None:
    with pytest.raises(InvalidEventFilter) as info:
        parse_filter(text)
    assert str(info.value) == "Invalid event filter"


def test_non_events_never_match() -> None:
    assert event_type_and_name(object()) is None
    assert not MATCH_ALL.match("member-join")


def test_event_type_and_name() -> None:
    assert event_type_and_name(JOIN) == ("member-join", "")
    assert event_type_and_name(DEPLOY) == ("user", "deploy")
    assert event_type_and_name(LOAD) == ("query", "load")


@pytest.mark.parametrize(
    ("spec", "terms", "command"),
    [
        ("deploy.sh", (FilterTerm("*"),), "deploy.sh"),
        (
            "member-join,member-leave=./members.sh",
            (FilterTerm("member-join"), FilterTerm("member-leave")),
            "./members.sh",
        ),
        ("user:deploy=./deploy.sh", (FilterTerm("user", "deploy"),), "./deploy.sh"),
        ("query:load=uptime", (FilterTerm("query", "load"),), "uptime"),
        # Split at the first "=": the command keeps its own "=".
        ("*=FOO=1 ./x.sh", (FilterTerm("*"),), "FOO=1 ./x.sh"),
        ("=./x.sh", (FilterTerm("*"),), "./x.sh"),
    ],
)
def test_handler_spec(spec: str, terms: tuple[FilterTerm, ...], command: str) -> None:
    parsed = parse_handler_spec(spec)
    assert parsed.filter.terms == terms
    assert parsed.command == command
    assert str(parsed) == spec


def test_command_with_equals_needs_explicit_filter() -> None:
    # Serf's rule: "FOO=1 ./x.sh" reads as filter "FOO" and is refused like the agent does.
    with pytest.raises(InvalidHandlerSpec) as info:
        parse_handler_spec("FOO=1 ./x.sh")
    assert str(info.value) == "Invalid event script: Event 'FOO' invoking '1 ./x.sh'"


def test_named_invalid_word_in_spec_message() -> None:
    with pytest.raises(InvalidHandlerSpec, match=r"Event 'users:x' invoking 'a\.sh'"):
        parse_handler_spec("users:x=a.sh")


def test_empty_command_refused() -> None:
    with pytest.raises(InvalidHandlerSpec):
        parse_handler_spec("user=")


def test_parse_specs_all_or_nothing() -> None:
    assert len(parse_handler_specs(["a.sh", "user=b.sh"])) == 2
    with pytest.raises(InvalidHandlerSpec):
        parse_handler_specs(["a.sh", "nope=b.sh"])
