"""Agent config values: the parser of each kind of value a config key holds, and its error
wording.

Rules this module owns:

* **Values**: durations take Serf's form (``"5s"``, ``"500ms"``, ``"1m30s"``, ``"24h"``) or a
  number of seconds; addresses are ``HOST[:PORT]`` where HOST is a literal IP (IPv6 in
  brackets) or a host name (7946 for gossip, 7373 for RPC, 8125 for ``statsd_addr`` and
  ``statsite_addr`` when the port is omitted).  Names are
  kept as written: ``bind``/``advertise`` are resolved once when the agent starts
  (``agent.addresses``), join targets on every join attempt (``runtime.resolve``).  Event
  handler specs are ``[FILTER=]COMMAND`` with Serf's filter syntax (``serf_trio.serf.filters``,
  RPC.md section 6).
* **Errors**: a parser raises ``BadValue`` saying what form was expected; the caller
  (``agent.config``) turns it into a one-line ``ConfigError`` naming the file (or "command
  line") and the key.  Nothing here does I/O (no DNS lookup: names are checked for form only).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serf_trio.runtime.logs import LEVEL_WORDS, SYSLOG_FACILITIES
from serf_trio.runtime.resolve import HostPort, join_target, split_hostport
from serf_trio.serf.filters import (
    EventFilter,
    HandlerSpec,
    InvalidHandlerSpec,
    parse_filter,
    parse_handler_spec,
)
from serf_trio.swim.config import PROFILES
from serf_trio.wire.crypto import Algorithm
from serf_trio.wire.keyring import KEY_SIZES, decode_key

DEFAULT_GOSSIP_PORT = 7946
DEFAULT_RPC_PORT = 7373
DEFAULT_METRICS_PORT = 8125  # statsd's and statsite's


class ConfigError(Exception):
    """A bad configuration; ``str(exc)`` is one line naming the source and the key."""


class BadValue(ValueError):
    """Raised by value parsers; the caller adds source and key."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_FORM = 'a duration such as "500ms", "5s", "1m30s" or "24h" (or a number of seconds)'


def parse_duration(value: object) -> float:
    """Seconds from a Go duration string (``"1m30s"``) or a number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadValue(f"expected {_DURATION_FORM}, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise BadValue(f"a duration must not be negative, got {value!r}")
        return float(value)
    text = value.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise BadValue(f"{value!r} is not a duration; expected {_DURATION_FORM}")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


def host_port(value: object, default_port: int) -> HostPort:
    if not isinstance(value, str):
        raise BadValue(f'expected "HOST[:PORT]" (an IP address or a host name), got {value!r}')
    try:
        return split_hostport(value, default_port)
    except ValueError as exc:
        raise BadValue(f'expected "HOST[:PORT]": {exc}') from None


def parse_join_address(text: str) -> HostPort:
    """A join target: ``HOST``, ``HOST:PORT`` or Serf's ``NAME/HOST:PORT`` (name dropped);
    HOST is an IP or a host name, looked up when the join runs.  ``ValueError`` otherwise."""
    return join_target(text, DEFAULT_GOSSIP_PORT)


def parse_event_filter(spec: str) -> EventFilter:
    """A Serf event filter (RPC.md 6, ``serf_trio.serf.filters``): words are not trimmed
    (``" member-join"`` is invalid, as in Serf), ``user:`` matches every user event.
    ``InvalidEventFilter`` (a ``ValueError``) for an unknown word."""
    return parse_filter(spec)


def parse_handler(value: object) -> HandlerSpec:
    """Split at the first ``=`` (RPC.md 6): ``deploy.sh``, ``user:deploy=./deploy.sh``."""
    if not isinstance(value, str) or not value.strip():
        raise BadValue(f'expected "[FILTER=]COMMAND", got {value!r}')
    try:
        return parse_handler_spec(value)
    except InvalidHandlerSpec as exc:
        raise BadValue(str(exc)) from None


def string(value: object) -> str:
    if not isinstance(value, str):
        raise BadValue(f"expected a string, got {value!r}")
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise BadValue(f"expected true or false, got {value!r}")
    return value


def int_in(lo: int, hi: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = " (a string: write the number without quotes)" if isinstance(value, str) else ""
            raise BadValue(f"expected a whole number from {lo} to {hi}, got {value!r}{hint}")
        if not lo <= value <= hi:
            raise BadValue(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def str_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadValue(f"expected a list of strings, got {value!r}")
    return tuple(value)


def join_list(value: object) -> tuple[str, ...]:
    items = str_list(value)
    for item in items:
        try:
            parse_join_address(item)
        except ValueError as exc:
            raise BadValue(f'expected "HOST[:PORT]" join addresses: {exc}') from None
    return items


def handlers(value: object) -> tuple[HandlerSpec, ...]:
    return tuple(parse_handler(v) for v in str_list(value))


def tags(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadValue(f"expected a map of strings, got {value!r}")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise BadValue(f"tag {k!r} must map a string to a string, got {v!r}")
    return dict(value)


def mapping(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadValue(f"expected a map (a JSON object), got {value!r}")
    return dict(value)


def log_level(value: object) -> str:
    text = string(value)
    try:
        return LEVEL_WORDS[text.strip().lower()]
    except KeyError:
        raise BadValue(
            f"unknown log level {text!r}; expected trace, debug, info, warn, err"
        ) from None


def log_format(value: object) -> str:
    text = string(value).lower()
    if text not in ("json", "text"):
        raise BadValue(f'expected "json" or "text", got {value!r}')
    return text


def profile(value: object) -> str:
    text = string(value)
    if text not in PROFILES:
        raise BadValue(f"unknown profile {text!r}; expected one of lan, wan, local")
    return text


def path(value: object) -> Path:
    text = string(value)
    if not text:
        raise BadValue("expected a path, got an empty string")
    return Path(text)


def bind(value: object) -> HostPort:
    return host_port(value, DEFAULT_GOSSIP_PORT)


def advertise(value: object) -> HostPort:
    # Port 0 = "the bound port" (resolved once bound): Serf advertises the bind port by default.
    return host_port(value, 0)


def rpc_addr(value: object) -> HostPort:
    return host_port(value, DEFAULT_RPC_PORT)


def metrics_addr(value: object) -> HostPort | None:
    text = string(value)
    return host_port(text, DEFAULT_METRICS_PORT) if text.strip() else None  # "": off


def prometheus_addr(value: object) -> HostPort | None:
    # Port 0 takes a free port (the agent logs metrics_listening with the one it got).
    text = string(value)
    return host_port(text, 0) if text.strip() else None  # "": off


def interface(value: object) -> str | None:
    text = string(value)
    if len(text) > 15 or "/" in text or any(c.isspace() for c in text):
        raise BadValue(f"{text!r} is not a network interface name (such as eth0)")
    return text or None


def discover(value: object) -> str:
    # The cluster name goes into the service type ``_serf_CLUSTER._tcp`` (one DNS label).
    text = string(value)
    if text and not re.fullmatch(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,55}[A-Za-z0-9_])?", text):
        raise BadValue(
            f"{text!r} is not an mDNS cluster name (1 to 57 letters, digits, '_' or '-', "
            "not starting or ending with '-')"
        )
    if "--" in text:
        raise BadValue(f"{text!r}: an mDNS cluster name may not contain '--'")
    return text


def syslog_facility(value: object) -> str:
    text = string(value).strip().upper()
    if text not in SYSLOG_FACILITIES:
        raise BadValue(
            f"unknown syslog facility {value!r}; expected one of {', '.join(SYSLOG_FACILITIES)}"
        )
    return text


def encrypt_key(value: object) -> bytes:
    try:
        key = decode_key(string(value))
    except ValueError as exc:
        raise BadValue(str(exc)) from None
    if len(key) not in KEY_SIZES:
        raise BadValue(f"a key must be 16, 24 or 32 bytes, this one has {len(key)}")
    return key


def algorithm(value: object) -> str:
    text = string(value)
    try:
        return Algorithm(text).value
    except ValueError:
        raise BadValue(f"unknown cipher {text!r}; expected secretbox or aes-gcm") from None


def node_name(value: object) -> str:
    text = string(value)
    if not text or len(text) > 255:
        raise BadValue("node name must be 1 to 255 characters")
    return text
