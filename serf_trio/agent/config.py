"""Agent configuration: Serf's config keys from JSON/TOML files, a config dir and flags.

Rules this module owns (``docs/configuration.md`` lists every key; a test keeps it in step):

* **Sources, in order**: each ``--config-file`` and each ``*.json`` / ``*.toml`` file of
  ``--config-dir`` (lexical order), then the command-line flags.  Later sources override earlier
  ones for scalar keys; ``tags`` merge key by key; the list keys ``start_join``, ``retry_join``
  and ``event_handlers`` append (Serf's ``MergeConfig`` does the same).  Flags may be written
  Serf's way too: ``-bind=...`` is ``--bind=...``, ``-replay=true`` is ``--replay``.
* **Every Serf agent key is accepted** (Serf 0.9's ``config.go``, plus ``validate_node_names``
  and ``mdns`` of later versions).  Each is honoured, or it is in ``IGNORED_KEYS`` and, when its
  value asks for something (``mdns``, ``validate_node_names``, ...), ``load`` returns one
  ``ConfigNotice`` for it, which the agent logs once at start-up (``config_key_ignored``, with
  a ``hint``).  ``role`` is Serf's deprecated spelling of the ``role`` tag (it wins over
  ``tags.role``, as in Serf); ``retry_max_attempts`` and serf-trio's ``retry_max`` are one key.
* **Values**: durations take Serf's form (``"5s"``, ``"500ms"``, ``"1m30s"``, ``"24h"``) or a
  number of seconds; addresses are ``HOST[:PORT]`` where HOST is a literal IP (IPv6 in
  brackets) or a host name (7946 for gossip, 7373 for RPC, 8125 for ``statsd_addr`` and
  ``statsite_addr`` when the port is omitted).  Names are
  kept as written: ``bind``/``advertise`` are resolved once when the agent starts
  (``agent.addresses``), join targets on every join attempt (``runtime.resolve``).  Event
  handler specs are ``[FILTER=]COMMAND`` with Serf's filter syntax (``serf_trio.serf.filters``,
  RPC.md section 6).
* **Encryption** (Serf's rules plus serf-trio's cipher choice): ``encrypt_key`` is one base64
  key, ``keyring_file`` a JSON list of base64 keys (primary first; the agent rewrites it on
  every keyring change), and giving both is refused with Serf's "Encryption key not allowed
  while using a keyring".  ``encrypt_algorithm`` is ``secretbox`` (the default; 32-byte
  primary key) or ``aes-gcm`` (memberlist's cipher, needed to join real Serf agents; 16, 24
  or 32 bytes).  ``encrypt_verify_incoming`` / ``encrypt_verify_outgoing`` are memberlist's
  GossipVerifyIncoming/Outgoing (both true by default; false only while moving a live
  cluster from plaintext to encrypted).  ``load`` reads the keyring file, so a bad key,
  bad base64 or an unreadable file is a config error naming the key or the file.
* **Errors**: every problem raises ``ConfigError`` whose message is one line naming the file (or
  "command line") and the key, and says what form was expected.  Nothing here does I/O beyond
  reading the named files (no DNS lookup: names are checked for form only).

``AgentConfig`` is the frozen result; ``swim_config()`` and friends turn it into the plain
specs the lower layers take.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from serf_trio.runtime.logs import LEVEL_WORDS, SYSLOG_FACILITIES
from serf_trio.runtime.resolve import HostPort, join_target, split_hostport
from serf_trio.serf.config import AGENT_DEFAULTS, SerfConfig
from serf_trio.serf.filters import (
    EventFilter,
    HandlerSpec,
    InvalidHandlerSpec,
    parse_filter,
    parse_handler_spec,
)
from serf_trio.serf.tags import TagsTooLarge, encode_tags
from serf_trio.swim.config import PROFILES, SwimConfig
from serf_trio.wire.crypto import Algorithm
from serf_trio.wire.keyring import KEY_SIZES, decode_key

DEFAULT_GOSSIP_PORT = 7946
DEFAULT_RPC_PORT = 7373
DEFAULT_METRICS_PORT = 8125  # statsd's and statsite's
DEFAULT_BIND = HostPort("0.0.0.0", DEFAULT_GOSSIP_PORT)
KEY_AND_KEYRING = "Encryption key not allowed while using a keyring"  # Serf's text
SERF_PROTOCOL = 5  # the Serf protocol version serf-trio speaks


class ConfigError(Exception):
    """A bad configuration; ``str(exc)`` is one line naming the source and the key."""


class _BadValue(ValueError):
    """Raised by value parsers; the caller adds source and key."""


@dataclass(frozen=True, slots=True)
class ConfigNotice:
    """A key that was accepted but is not honoured (or is deprecated): the agent logs one
    warning per notice at start-up, ``event`` with ``key`` and ``hint``."""

    key: str
    hint: str
    event: str = "config_key_ignored"


# ---------------------------------------------------------------------------------------------
# Value parsers


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
        raise _BadValue(f"expected {_DURATION_FORM}, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise _BadValue(f"a duration must not be negative, got {value!r}")
        return float(value)
    text = value.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise _BadValue(f"{value!r} is not a duration; expected {_DURATION_FORM}")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


def _host_port(value: object, default_port: int) -> HostPort:
    if not isinstance(value, str):
        raise _BadValue(f'expected "HOST[:PORT]" (an IP address or a host name), got {value!r}')
    try:
        return split_hostport(value, default_port)
    except ValueError as exc:
        raise _BadValue(f'expected "HOST[:PORT]": {exc}') from None


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
        raise _BadValue(f'expected "[FILTER=]COMMAND", got {value!r}')
    try:
        return parse_handler_spec(value)
    except InvalidHandlerSpec as exc:
        raise _BadValue(str(exc)) from None


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise _BadValue(f"expected a string, got {value!r}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _BadValue(f"expected true or false, got {value!r}")
    return value


def _int_in(lo: int, hi: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = " (a string: write the number without quotes)" if isinstance(value, str) else ""
            raise _BadValue(f"expected a whole number from {lo} to {hi}, got {value!r}{hint}")
        if not lo <= value <= hi:
            raise _BadValue(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _str_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _BadValue(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _join_list(value: object) -> tuple[str, ...]:
    items = _str_list(value)
    for item in items:
        try:
            parse_join_address(item)
        except ValueError as exc:
            raise _BadValue(f'expected "HOST[:PORT]" join addresses: {exc}') from None
    return items


def _handlers(value: object) -> tuple[HandlerSpec, ...]:
    return tuple(parse_handler(v) for v in _str_list(value))


def _tags(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _BadValue(f"expected a map of strings, got {value!r}")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise _BadValue(f"tag {k!r} must map a string to a string, got {v!r}")
    return dict(value)


def _map(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _BadValue(f"expected a map (a JSON object), got {value!r}")
    return dict(value)


def _log_level(value: object) -> str:
    text = _str(value)
    try:
        return LEVEL_WORDS[text.strip().lower()]
    except KeyError:
        raise _BadValue(
            f"unknown log level {text!r}; expected trace, debug, info, warn, err"
        ) from None


def _log_format(value: object) -> str:
    text = _str(value).lower()
    if text not in ("json", "text"):
        raise _BadValue(f'expected "json" or "text", got {value!r}')
    return text


def _profile(value: object) -> str:
    text = _str(value)
    if text not in PROFILES:
        raise _BadValue(f"unknown profile {text!r}; expected one of lan, wan, local")
    return text


def _path(value: object) -> Path:
    text = _str(value)
    if not text:
        raise _BadValue("expected a path, got an empty string")
    return Path(text)


def _bind(value: object) -> HostPort:
    return _host_port(value, DEFAULT_GOSSIP_PORT)


def _advertise(value: object) -> HostPort:
    # Port 0 = "the bound port" (resolved once bound): Serf advertises the bind port by default.
    return _host_port(value, 0)


def _rpc_addr(value: object) -> HostPort:
    return _host_port(value, DEFAULT_RPC_PORT)


def _metrics_addr(value: object) -> HostPort | None:
    text = _str(value)
    return _host_port(text, DEFAULT_METRICS_PORT) if text.strip() else None  # "": off


def _prometheus_addr(value: object) -> HostPort | None:
    # Port 0 takes a free port (the agent logs metrics_listening with the one it got).
    text = _str(value)
    return _host_port(text, 0) if text.strip() else None  # "": off


def _interface(value: object) -> str | None:
    text = _str(value)
    if len(text) > 15 or "/" in text or any(c.isspace() for c in text):
        raise _BadValue(f"{text!r} is not a network interface name (such as eth0)")
    return text or None


def _discover(value: object) -> str:
    # The cluster name goes into the service type ``_serf_CLUSTER._tcp`` (one DNS label).
    text = _str(value)
    if text and not re.fullmatch(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,55}[A-Za-z0-9_])?", text):
        raise _BadValue(
            f"{text!r} is not an mDNS cluster name (1 to 57 letters, digits, '_' or '-', "
            "not starting or ending with '-')"
        )
    if "--" in text:
        raise _BadValue(f"{text!r}: an mDNS cluster name may not contain '--'")
    return text


def _syslog_facility(value: object) -> str:
    text = _str(value).strip().upper()
    if text not in SYSLOG_FACILITIES:
        raise _BadValue(
            f"unknown syslog facility {value!r}; expected one of {', '.join(SYSLOG_FACILITIES)}"
        )
    return text


def _encrypt_key(value: object) -> bytes:
    try:
        key = decode_key(_str(value))
    except ValueError as exc:
        raise _BadValue(str(exc)) from None
    if len(key) not in KEY_SIZES:
        raise _BadValue(f"a key must be 16, 24 or 32 bytes, this one has {len(key)}")
    return key


def _algorithm(value: object) -> str:
    text = _str(value)
    try:
        return Algorithm(text).value
    except ValueError:
        raise _BadValue(f"unknown cipher {text!r}; expected secretbox or aes-gcm") from None


def _node_name(value: object) -> str:
    text = _str(value)
    if not text or len(text) > 255:
        raise _BadValue("node name must be 1 to 255 characters")
    return text


# key -> parser.  Keys are Serf's JSON names (cmd/serf/command/agent/config.go) unless marked.
_PARSERS: dict[str, Callable[[object], object]] = {
    "node_name": _node_name,
    "role": _str,  # Serf's deprecated spelling of the "role" tag
    "bind": _bind,
    "interface": _interface,
    "discover": _discover,  # mDNS cluster name (agent.discover)
    "advertise": _advertise,
    "rpc_addr": _rpc_addr,
    "rpc_auth": _str,
    "rpc_socket": _path,  # serf-trio: the Unix socket
    "encrypt_key": _encrypt_key,
    "keyring_file": _path,
    # serf-trio: the cipher this node sends with, and memberlist's verification switches.
    "encrypt_algorithm": _algorithm,
    "encrypt_verify_incoming": _bool,
    "encrypt_verify_outgoing": _bool,
    "event_handlers": _handlers,
    "tags": _tags,
    "tags_file": _path,
    "snapshot_path": _path,
    "start_join": _join_list,
    "retry_join": _join_list,
    "retry_interval": parse_duration,
    "retry_max": _int_in(0, 1_000_000),  # Serf's retry_max_attempts (an alias of it)
    "replay_on_join": _bool,
    "rejoin_after_leave": _bool,
    "leave_on_terminate": _bool,
    "skip_leave_on_interrupt": _bool,
    "reconnect_interval": parse_duration,
    "reconnect_timeout": parse_duration,
    "tombstone_timeout": parse_duration,
    "broadcast_timeout": parse_duration,
    "disable_name_resolution": _bool,
    "disable_coordinates": _bool,
    "enable_compression": _bool,
    "enable_syslog": _bool,
    "syslog_facility": _syslog_facility,
    "profile": _profile,
    "protocol": _int_in(2, 5),
    "log_level": _log_level,
    "log_format": _log_format,  # serf-trio: JSON lines or text
    "query_response_size_limit": _int_in(1, 64 * 1024),
    "query_size_limit": _int_in(1, 64 * 1024),
    # Serf caps user events at 9 KiB (UserEventSizeLimit must stay under a UDP packet).
    "user_event_size_limit": _int_in(1, 9 * 1024),
    # serf-trio extensions: limits of one handler run (Serf has no timeout at all).
    "handler_timeout": parse_duration,
    "handler_kill_grace": parse_duration,
    "statsd_addr": _metrics_addr,  # agent.telemetry: UDP, go-metrics' statsd lines
    "statsite_addr": _metrics_addr,  # agent.telemetry: the same lines over TCP
    "metrics_addr": _prometheus_addr,  # serf-trio: Prometheus /metrics (agent.metrics)
    # Serf keys serf-trio accepts and does not honour (IGNORED_KEYS says what to do instead).
    "mdns": _map,
    "validate_node_names": _bool,
}

# Other names of a key (Serf's first): read as the key they stand for.
ALIASES: dict[str, str] = {"retry_max_attempts": "retry_max"}

_LIST_KEYS = frozenset({"start_join", "retry_join", "event_handlers"})

# Serf keys that are accepted and not honoured -> what serf-trio does instead.  A notice is
# given only when the value asks for something (a non-empty string or map, true).
IGNORED_KEYS: dict[str, str] = {
    "mdns": "Serf 0.10's mDNS settings; serf-trio follows Serf 0.9.4: discover names the "
    "cluster and interface picks the multicast interface",
    "validate_node_names": "serf-trio does not check node names; keep them to letters, digits, "
    "'-' and '.' (at most 128 characters) yourself",
}

CONFIG_KEYS: frozenset[str] = frozenset(_PARSERS) | frozenset(ALIASES)
"""Every key a config file may hold (serf-trio's and Serf's, the ignored ones included)."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The agent's effective configuration (defaults are Serf's).  ``bind``, ``advertise``
    and ``rpc_addr`` hold the host as written (an IP or a name, resolved at start-up)."""

    node_name: str
    bind: HostPort = DEFAULT_BIND
    interface: str | None = None  # bind to this interface's address (Serf's -iface)
    discover: str = ""  # mDNS cluster name ("": no mDNS discovery)
    advertise: HostPort | None = None
    rpc_addr: HostPort | None = None  # TCP RPC is off unless set
    rpc_auth: str = ""
    rpc_socket: Path | None = None  # None: serf_trio.rpc.paths.default_socket_path()
    event_handlers: tuple[HandlerSpec, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    tags_file: Path | None = None
    encrypt_key: bytes | None = field(default=None, repr=False)
    keyring_file: Path | None = None
    encrypt_algorithm: str = Algorithm.SECRETBOX.value
    encrypt_verify_incoming: bool = True
    encrypt_verify_outgoing: bool = True
    snapshot_path: Path | None = None
    start_join: tuple[str, ...] = ()
    retry_join: tuple[str, ...] = ()
    retry_interval: float = 30.0
    retry_max: int = 0  # 0 = retry forever
    replay_on_join: bool = False
    rejoin_after_leave: bool = False
    leave_on_terminate: bool = False
    skip_leave_on_interrupt: bool = False
    reconnect_interval: float = 30.0
    reconnect_timeout: float = 24 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    broadcast_timeout: float = 5.0  # how long a graceful leave may take
    disable_name_resolution: bool = False
    disable_coordinates: bool = False
    enable_compression: bool = True
    enable_syslog: bool = False
    syslog_facility: str = "LOCAL0"
    profile: str = "lan"
    protocol: int = SERF_PROTOCOL
    log_level: str = "INFO"
    log_format: str | None = None  # None: text on a TTY, else JSON
    query_response_size_limit: int = 1024
    query_size_limit: int = 1024
    user_event_size_limit: int = 512
    handler_timeout: float = 60.0  # seconds one handler run may take before SIGTERM
    handler_kill_grace: float = 3.0  # seconds between SIGTERM and SIGKILL
    statsd_addr: HostPort | None = None  # metrics to statsd (UDP); None: off
    statsite_addr: HostPort | None = None  # metrics to statsite (TCP); None: off
    metrics_addr: HostPort | None = None  # Prometheus /metrics over HTTP; None: off

    def swim_config(self) -> SwimConfig:
        return dataclasses.replace(
            PROFILES[self.profile], enable_compression=self.enable_compression
        )

    def serf_config(self) -> SerfConfig:
        """The Serf layer's knobs: Serf's agent defaults plus this config's overrides."""
        return dataclasses.replace(
            AGENT_DEFAULTS,
            broadcast_timeout=self.broadcast_timeout,
            reconnect_interval=self.reconnect_interval,
            reconnect_timeout=self.reconnect_timeout,
            tombstone_timeout=self.tombstone_timeout,
            user_event_size_limit=self.user_event_size_limit,
            query_size_limit=self.query_size_limit,
            query_response_size_limit=self.query_response_size_limit,
            enable_name_conflict_resolution=not self.disable_name_resolution,
            disable_coordinates=self.disable_coordinates,
        )


# ---------------------------------------------------------------------------------------------
# Sources


def parse_mapping(raw: Mapping[str, object], source: str) -> dict[str, Any]:
    """Validate one source's raw key/value map (unknown keys and bad values are errors)."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        key = ALIASES.get(name, name)
        parser = _PARSERS.get(key)
        if parser is None:
            raise ConfigError(f"{source}: config key {name!r} is unknown")
        try:
            out[key] = parser(value)
        except _BadValue as exc:
            raise ConfigError(f"{source}: config key {name!r}: {exc}") from None
    if "tags" in out:
        try:
            encode_tags(out["tags"])
        except TagsTooLarge as exc:
            raise ConfigError(f"{source}: config key 'tags': {exc}") from None
    return out


def load_file(path: Path) -> dict[str, Any]:
    """Read and validate one ``.json`` or ``.toml`` file."""
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".toml":
            raw: object = tomllib.loads(data.decode("utf-8"))
        else:
            raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"{source}: invalid {path.suffix.lstrip('.') or 'json'}: {detail}"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config file must hold an object of keys")
    return parse_mapping(raw, source)


def config_dir_files(directory: Path) -> list[Path]:
    """``*.json`` and ``*.toml`` files of ``directory`` in lexical order."""
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot read config dir: {exc.strerror or exc}") from None
    return [p for p in entries if p.suffix in (".json", ".toml") and p.is_file()]


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Serf's merge: scalars override, ``tags`` merge per key, list keys append."""
    out = dict(base)
    for key, value in over.items():
        if key in _LIST_KEYS:
            out[key] = tuple(out.get(key, ())) + tuple(value)
        elif key == "tags":
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def notices(merged: Mapping[str, Any]) -> list[ConfigNotice]:
    """One notice per accepted key that serf-trio does not honour, when its value asks for
    something (``IGNORED_KEYS``), plus the settings that cannot take effect."""
    out = [ConfigNotice(k, hint) for k, hint in IGNORED_KEYS.items() if merged.get(k)]
    if merged.get("role"):
        out.append(
            ConfigNotice(
                "role",
                "deprecated: 'role' sets the tag role (as in Serf); write tags = "
                '{"role": ...} or --tag role=... instead',
                event="config_key_deprecated",
            )
        )
    protocol = merged.get("protocol", SERF_PROTOCOL)
    if protocol != SERF_PROTOCOL:
        out.append(
            ConfigNotice(
                "protocol",
                f"serf-trio always speaks Serf protocol {SERF_PROTOCOL}; "
                f"protocol {protocol} only matters while upgrading old Serf agents",
            )
        )
    if merged.get("rejoin_after_leave") and not merged.get("snapshot_path"):
        out.append(
            ConfigNotice(
                "rejoin_after_leave",
                "has no effect without snapshot_path (the snapshot is what it rejoins from)",
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Command line


def _flag_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes", "on", "t"):
        return True
    if low in ("false", "0", "no", "off", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``ConfigError`` instead of printing usage and exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"command line: {message}")


_DESCRIPTION = (
    "Run a Serf-compatible agent.  Flags override the config files; each flag sets a config "
    "key (docs/configuration.md lists them all, with how they differ from Serf).  Serf's "
    "one-dash spelling works too (-bind=..., -config-file=..., -replay)."
)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="serf-trio agent", description=_DESCRIPTION)

    def flag(name: str, metavar: str, text: str, **kw: Any) -> None:
        p.add_argument(name, metavar=metavar, help=text, **kw)

    def switch(name: str, text: str, dest: str | None = None) -> None:
        """A boolean flag: ``--flag`` alone is true; ``--flag=false`` is accepted too."""
        kw: dict[str, Any] = {"dest": dest} if dest else {}
        p.add_argument(
            name, nargs="?", const=True, type=_flag_bool, metavar="true|false", help=text, **kw
        )

    many: dict[str, Any] = {"action": "append"}
    flag(
        "--node",
        "NAME",
        "node name, unique in the cluster (default: the host name)",
        dest="node_name",
    )
    flag(
        "--bind",
        "HOST[:PORT]",
        "gossip address for UDP and TCP; a host name is resolved "
        "once at start (default 0.0.0.0:7946)",
    )
    flag(
        "--iface",
        "NAME",
        "bind to this network interface's address (with --bind IP: "
        "check that the interface has it)",
        dest="interface",
    )
    flag(
        "--advertise",
        "HOST[:PORT]",
        "address the other members reach this one at "
        "(default: the bound address; the port defaults to the bound port)",
    )
    flag(
        "--join",
        "HOST[:PORT]",
        "join this agent at start, every address of a host name; exit if none answers (repeatable)",
        dest="start_join",
        **many,
    )
    flag(
        "--retry-join",
        "HOST[:PORT]",
        "join this agent in the background, retrying until "
        "it works; names are looked up on every attempt (repeatable)",
        dest="retry_join",
        **many,
    )
    flag("--retry-interval", "DURATION", "time between retry-join attempts (default 30s)")
    flag(
        "--retry-max",
        "N",
        "give up (and exit 1) after N failed retry-join attempts (default 0: never)",
    )
    flag("--rpc-addr", "HOST:PORT", "also serve RPC on this TCP address (off unless given)")
    flag("--rpc-socket", "PATH", "Unix socket for RPC (default: one per user)")
    flag(
        "--metrics-addr",
        "HOST:PORT",
        "serve Prometheus metrics at http://HOST:PORT/metrics (off unless given)",
    )
    flag("--rpc-auth", "TOKEN", "token every RPC client must send (its auth command)")
    flag(
        "--event-handler",
        "[FILTER=]COMMAND",
        "run COMMAND for the events FILTER matches, e.g. user:deploy=./deploy.sh (repeatable)",
        dest="event_handlers",
        **many,
    )
    flag("--tag", "KEY=VALUE", "a tag of this node (repeatable)", dest="tags", **many)
    flag("--tags-file", "PATH", "keep the tags in this JSON file (not with --tag)")
    flag("--role", "ROLE", "deprecated: the same as --tag role=ROLE")
    flag("--encrypt", "KEY", "gossip encryption key (base64)", dest="encrypt_key")
    flag("--keyring-file", "PATH", "JSON list of base64 keys, kept up to date")
    flag(
        "--encrypt-algorithm",
        "secretbox|aes-gcm",
        "cipher to send with (aes-gcm to talk to HashiCorp Serf; default secretbox)",
    )
    flag(
        "--encrypt-verify-incoming",
        "true|false",
        "refuse unencrypted packets (default true)",
        type=_flag_bool,
    )
    flag(
        "--encrypt-verify-outgoing",
        "true|false",
        "encrypt what this node sends (default true)",
        type=_flag_bool,
    )
    flag(
        "--snapshot",
        "PATH",
        "snapshot file: rejoin and skip old events after a restart",
        dest="snapshot_path",
    )
    flag(
        "--config-file",
        "PATH",
        "a JSON or TOML config file (repeatable; later files win)",
        default=[],
        **many,
    )
    flag(
        "--config-dir",
        "DIR",
        "read every .json and .toml file of DIR in name order (repeatable)",
        default=[],
        **many,
    )
    flag("--profile", "lan|wan|local", "timing profile (default lan)")
    flag("--protocol", "N", "Serf protocol version (accepted; serf-trio speaks 5)")
    flag("--log-level", "LEVEL", "trace, debug, info, warn or err (default info)")
    flag("--log-format", "json|text", "log line format (default: text on a terminal, else JSON)")
    switch("--syslog", "also send the log lines to the local syslog", "enable_syslog")
    switch(
        "--replay", "replay old user events when joining (start and retry joins)", "replay_on_join"
    )
    switch("--rejoin", "rejoin after a previous leave (needs --snapshot)", "rejoin_after_leave")
    switch("--leave-on-terminate", "leave the cluster gracefully on SIGTERM")
    switch("--skip-leave-on-interrupt", "stop on SIGINT without leaving the cluster")
    switch("--disable-compression", "do not compress gossip messages")
    flag(
        "--broadcast-timeout",
        "DURATION",
        "how long a leave may take to reach the others (default 5s)",
    )
    flag("--handler-timeout", "DURATION", "kill an event handler run after this long (default 60s)")
    flag(
        "--handler-kill-grace",
        "DURATION",
        "time between SIGTERM and SIGKILL of a handler run (default 3s)",
    )
    flag(
        "--discover",
        "CLUSTER",
        "find and join the peers advertising this mDNS cluster name (needs zeroconf)",
    )
    return p


# Flags whose value is the opposite of their key's; flags whose value is a whole number.
_INVERTED = {"disable_compression": "enable_compression"}
_INT_FLAGS = frozenset({"retry_max", "protocol"})


def flag_keys() -> dict[str, str]:
    """Each flag of ``build_parser`` (``--bind``) -> the config key it sets (``bind``)."""
    out: dict[str, str] = {}
    for action in build_parser()._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.dest not in ("help", "config_file", "config_dir"):
            out[longs[0]] = _INVERTED.get(action.dest, action.dest)
    return out


def _serf_style(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """Serf's (Go's) one-dash flags -> ours: ``-bind=x`` -> ``--bind=x``."""
    longs = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    out = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and "-" + arg.split("=")[0] in longs:
            arg = "-" + arg
        out.append(arg)
    return out


def _flag_values(ns: argparse.Namespace, flags: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dest, value in vars(ns).items():
        if dest in ("config_file", "config_dir") or value is None:
            continue
        flag = flags[dest]
        key = _INVERTED.get(dest, dest)
        if dest in _INVERTED:
            value = not value
        if dest in _INT_FLAGS:
            if not value.strip().isdigit():
                raise ConfigError(f"command line: {flag}: expected a whole number, got {value!r}")
            value = int(value)
        if key == "tags":
            tags: dict[str, str] = {}
            for item in value:
                k, sep, v = item.partition("=")
                if not sep or not k:
                    raise ConfigError(f"command line: {flag}: expected KEY=VALUE, got {item!r}")
                tags[k] = v
            value = tags
        try:
            out.update(parse_mapping({key: value}, "command line"))
        except ConfigError as exc:
            # Name the flag the user typed rather than the config key.
            raise ConfigError(str(exc).replace(f"config key {key!r}", flag, 1)) from None
    return out


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """The effective config plus where it came from (SIGHUP reloads the same sources), the
    keys it names (``None``: no encryption), primary first, and the notices to log."""

    config: AgentConfig
    files: tuple[Path, ...]
    keys: tuple[bytes, ...] | None = field(default=None, repr=False)
    notices: tuple[ConfigNotice, ...] = ()


def read_keyring_file(path: Path) -> list[bytes]:
    """The keys of a Serf keyring file (a JSON list of base64 strings, primary first)."""
    where = f"{path}: config key 'keyring_file'"
    try:
        raw = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read keyring file: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: Failed to decode keyring file: {exc}") from None
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise ConfigError(f"{where}: expected a JSON list of base64 keys")
    if not raw:
        raise ConfigError(f"{where}: Keyring file contains no keys")
    keys: list[bytes] = []
    for i, text in enumerate(raw):
        try:
            key = decode_key(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: key {i + 1}: {exc}") from None
        if len(key) not in KEY_SIZES:
            raise ConfigError(
                f"{where}: key {i + 1} has {len(key)} bytes; keys must be 16, 24 or 32 bytes"
            )
        keys.append(key)
    return keys


def configured_keys(cfg: AgentConfig) -> tuple[bytes, ...] | None:
    """The keys the config names (Serf's rules, see the module docstring), checked against the
    cipher: secretbox sends with a 32-byte primary key.  ``ConfigError`` otherwise."""
    if cfg.encrypt_key is not None and cfg.keyring_file is not None:
        raise ConfigError(f"config keys 'encrypt_key' and 'keyring_file': {KEY_AND_KEYRING}")
    if cfg.keyring_file is not None:
        keys = read_keyring_file(cfg.keyring_file)
        what = f"{cfg.keyring_file}: config key 'keyring_file': the primary (first) key"
    elif cfg.encrypt_key is not None:
        keys = [cfg.encrypt_key]
        what = "config key 'encrypt_key': the key"
    else:
        return None
    if cfg.encrypt_algorithm == Algorithm.SECRETBOX and len(keys[0]) != 32:
        raise ConfigError(
            f"{what} has {len(keys[0])} bytes; secretbox needs 32 "
            '(set encrypt_algorithm = "aes-gcm" for 16- or 24-byte Serf keys)'
        )
    return tuple(keys)


def load(argv: Sequence[str], *, hostname: str | None = None) -> LoadedConfig:
    """Parse ``serf-trio agent`` flags and the files they name into an ``AgentConfig``."""
    parser = build_parser()
    flags = {
        a.dest: next(s for s in a.option_strings if s.startswith("--"))
        for a in parser._actions
        if a.option_strings and a.dest != "help"
    }
    ns = parser.parse_args(_serf_style(argv, parser))
    files: list[Path] = [Path(p) for p in ns.config_file]
    for d in ns.config_dir:
        files.extend(config_dir_files(Path(d)))
    merged: dict[str, Any] = {}
    for path in files:
        merged = merge(merged, load_file(path))
    merged = merge(merged, _flag_values(ns, flags))
    if merged.get("role"):
        # Serf's compatibility rule: 'role' is the tag "role", and it wins over tags.role.
        merged["tags"] = {**merged.get("tags", {}), "role": merged["role"]}
    if merged.get("tags") and merged.get("tags_file"):
        # Serf: the tags file is the source of truth for tags; both at once is refused.
        what = "'role' (a tag)" if merged.get("role") else "'tags'"
        raise ConfigError(f"config key {what} is not allowed together with 'tags_file'")
    merged.setdefault("node_name", hostname if hostname is not None else socket.gethostname())
    known = {f.name for f in dataclasses.fields(AgentConfig)}
    cfg = AgentConfig(**{k: v for k, v in merged.items() if k in known})
    return LoadedConfig(cfg, tuple(files), configured_keys(cfg), tuple(notices(merged)))
