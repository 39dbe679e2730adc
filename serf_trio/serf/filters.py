"""Serf's event filter syntax and the ``[FILTER=]COMMAND`` handler spec.

Rule 1: a filter is a comma-separated list of words from ``member-join``, ``member-leave``,
``member-failed``, ``member-update``, ``member-reap``, ``user``, ``user:NAME``, ``query``,
``query:NAME`` and ``*``; the empty string means ``*``.  ``user:NAME`` / ``query:NAME`` match
exactly that event or query name, ``user:`` (empty name) is the same as ``user``.  Any other word
is refused with Serf's error text (``Invalid event filter`` for RPC streams, ``Invalid event
script: ...`` for handlers, where Serf's agent refuses to start).

Rule 2: a handler spec is split at the *first* ``=`` (serf agent ``ParseEventScript``): text
before it is the filter, text after it the shell command.  A command that itself contains ``=``
therefore needs an explicit filter (``*=FOO=1 ./x.sh``).

Improvement over Serf: Serf expands ``member-join,member-join=x.sh`` into two scripts and runs
``x.sh`` twice per event; here one spec is one handler and runs at most once per event.

Events are matched structurally (the ``*EventLike`` protocols below) so this module does not
depend on the concrete effect records of the Serf core; ``event_type_and_name`` is the one
place that tells a member event, a user event and a query apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, cast, runtime_checkable

from serf_trio.record import record

MEMBER_EVENT_TYPES = (
    "member-join",
    "member-leave",
    "member-failed",
    "member-update",
    "member-reap",
)
EVENT_TYPES = (*MEMBER_EVENT_TYPES, "user", "query")
_VALID_WORDS = frozenset((*EVENT_TYPES, "*"))

INVALID_EVENT_FILTER = "Invalid event filter"


class InvalidEventFilter(ValueError):
    """A filter word Serf does not know; ``str(exc)`` is Serf's RPC error text."""

    def __init__(self, word: str) -> None:
        super().__init__(INVALID_EVENT_FILTER)
        self.word = word


class InvalidHandlerSpec(ValueError):
    """A handler spec with an unknown filter word, worded like the serf agent's refusal."""


@runtime_checkable
class MemberLike(Protocol):
    """What the pipeline reads from a Serf member (``SerfMember`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def tags(self) -> Mapping[str, str]: ...


@runtime_checkable
class MemberEventLike(Protocol):
    """``SerfMemberEvent``: ``kind`` is one of ``MEMBER_EVENT_TYPES``."""

    @property
    def kind(self) -> str: ...

    @property
    def members(self) -> Sequence[MemberLike]: ...


class _NamedEventLike(Protocol):
    """What user events and queries share: a name, a payload and a Lamport time."""

    @property
    def name(self) -> str: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def ltime(self) -> int: ...


@runtime_checkable
class UserEventLike(_NamedEventLike, Protocol):
    """``SerfUserEvent``."""

    @property
    def coalesce(self) -> bool: ...


@runtime_checkable
class QueryEventLike(_NamedEventLike, Protocol):
    """``SerfQueryEvent``: answered through the core's ``respond(token, payload)``."""

    @property
    def token(self) -> object: ...


# The shape of each event class, found once: ``isinstance`` against a runtime-checkable
# protocol inspects every attribute (several microseconds), and this runs for every event and
# every subscriber's filter.  Event classes are few, so the cache stays small.
_SHAPES: dict[type, str | None] = {}


def _shape(cls: type, event: object) -> str | None:
    # A query also has name/payload/ltime, so it is recognised (by its token) before user events.
    if isinstance(event, QueryEventLike):
        shape: str | None = "query"
    elif isinstance(event, MemberEventLike):
        shape = "member"
    elif isinstance(event, UserEventLike):
        shape = "user"
    else:
        shape = None
    if len(_SHAPES) < 256:
        _SHAPES[cls] = shape
    return shape


def event_type_and_name(event: object) -> tuple[str, str] | None:
    """``(SERF_EVENT value, user event / query name or "")``, or ``None`` for other effects."""
    cls = type(event)
    shape = _SHAPES[cls] if cls in _SHAPES else _shape(cls, event)
    if shape == "query":
        return "query", cast(QueryEventLike, event).name
    if shape == "member":
        return cast(MemberEventLike, event).kind, ""
    if shape == "user":
        return "user", cast(UserEventLike, event).name
    return None


@record
class FilterTerm:
    """One word of a filter: ``event`` is an event type or ``*``; ``name`` "" matches any."""

    event: str
    name: str = ""

    def matches(self, event_type: str, name: str) -> bool:
        if self.event == "*":
            return True
        if self.event != event_type:
            return False
        return not self.name or self.name == name

    def __str__(self) -> str:
        return f"{self.event}:{self.name}" if self.name else self.event


@record
class EventFilter:
    """A parsed filter list; matches an event if any term does."""

    terms: tuple[FilterTerm, ...]

    def matches(self, event_type: str, name: str = "") -> bool:
        return any(t.matches(event_type, name) for t in self.terms)

    def match(self, event: object) -> bool:
        """Whether ``event`` (a Serf event record) passes; non-events never do."""
        kind = event_type_and_name(event)
        return kind is not None and self.matches(*kind)

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)


MATCH_ALL = EventFilter((FilterTerm("*"),))


def _split_terms(text: str) -> list[FilterTerm]:
    # serf agent ParseEventFilter: "" means "*"; "user:NAME"/"query:NAME" carry a name.
    terms: list[FilterTerm] = []
    for word in (text or "*").split(","):
        for prefix in ("user:", "query:"):
            if word.startswith(prefix):
                terms.append(FilterTerm(prefix[:-1], word[len(prefix) :]))
                break
        else:
            terms.append(FilterTerm(word))
    return terms


def parse_filter(text: str) -> EventFilter:
    """Parse a filter list; ``InvalidEventFilter`` (Serf's text) for an unknown word."""
    terms = _split_terms(text)
    for term in terms:
        if term.event not in _VALID_WORDS:
            raise InvalidEventFilter(str(term))
    return EventFilter(tuple(terms))


@record
class HandlerSpec:
    """One ``-event-handler`` value: run ``command`` with ``/bin/sh -c`` for matching events."""

    filter: EventFilter
    command: str
    raw: str = ""

    @property
    def text(self) -> str:
        """The spec as written (identity of a handler across reloads; used in logs)."""
        return self.raw or f"{self.filter}={self.command}"

    def __str__(self) -> str:
        return self.text


def parse_handler_spec(text: str) -> HandlerSpec:
    """``[FILTER=]COMMAND`` split at the first ``=``; ``InvalidHandlerSpec`` if invalid.

    The error text follows the serf agent: ``Invalid event script: Event 'foo' invoking 'x.sh'``.
    An empty command is refused too (Serf would start and fail on every event).
    """
    filter_text, sep, command = text.partition("=")
    if not sep:
        filter_text, command = "", text
    terms = _split_terms(filter_text)
    for term in terms:
        if term.event not in _VALID_WORDS:
            raise InvalidHandlerSpec(f"Invalid event script: Event '{term}' invoking '{command}'")
    if not command.strip():
        raise InvalidHandlerSpec(f"Invalid event script: empty command in {text!r}")
    return HandlerSpec(EventFilter(tuple(terms)), command, text)


def parse_handler_specs(texts: Sequence[str]) -> tuple[HandlerSpec, ...]:
    """Parse every spec; the first invalid one raises (the agent refuses to start)."""
    return tuple(parse_handler_spec(t) for t in texts)
