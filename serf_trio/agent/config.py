"""Agent configuration: Serf's config keys from JSON/TOML files, a config dir and flags.

Rules this module owns:

* **Sources, in order**: each ``--config-file`` and each ``*.json`` / ``*.toml`` file of
  ``--config-dir`` (lexical order), then the command-line flags.  Later sources override earlier
  ones for scalar keys; ``tags`` merge key by key; the list keys ``start_join``, ``retry_join``
  and ``event_handlers`` append (Serf's ``MergeConfig`` does the same).
* **Values**: durations take Serf's form (``"5s"``, ``"500ms"``, ``"1m30s"``, ``"24h"``) or a
  number of seconds; addresses are literal IPs with an optional port (7946 for gossip, 7373 for
  RPC when omitted).  Event handler specs are ``[FILTER=]COMMAND`` with Serf's filter syntax
  (``serf_trio.serf.filters``, RPC.md section 6).
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
  "command line") and the key.  Nothing here does I/O beyond reading the named files.

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

from serf_trio.runtime.logs import LEVEL_WORDS
from serf_trio.runtime.transport import parse_hostport
from serf_trio.serf.config import AGENT_DEFAULTS, SerfConfig
from serf_trio.serf.filters import (
    EventFilter,
    HandlerSpec,
    InvalidHandlerSpec,
    parse_filter,
    parse_handler_spec,
)
from serf_trio.serf.tags import TagsTooLarge, encode_tags
from serf_trio.swim.api import Address
from serf_trio.swim.config import PROFILES, SwimConfig
from serf_trio.wire.crypto import Algorithm
from serf_trio.wire.keyring import KEY_SIZES, decode_key

DEFAULT_GOSSIP_PORT = 7946
DEFAULT_RPC_PORT = 7373
DEFAULT_BIND = Address("0.0.0.0", DEFAULT_GOSSIP_PORT)
KEY_AND_KEYRING = "Encryption key not allowed while using a keyring"  # Serf's text


class ConfigError(Exception):
    """A bad configuration; ``str(exc)`` is one line naming the source and the key."""


class _BadValue(ValueError):
    """Raised by value parsers; the caller adds source and key."""


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


def parse_duration(value: object) -> float:
    """Seconds from a Go duration string (``"1m30s"``) or a number of seconds."""
    if isinstance(value, bool):
        raise _BadValue(f'expected a duration such as "5s", got {value!r}')
    if isinstance(value, int | float):
        if value < 0:
            raise _BadValue(f"duration must not be negative, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise _BadValue(f'expected a duration such as "5s", got {value!r}')
    text = value.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise _BadValue(f"invalid duration {value!r} (use forms like 500ms, 5s, 1m30s, 24h)")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


def _parse_hostport(text: object, default_port: int) -> Address:
    if not isinstance(text, str):
        raise _BadValue(f'expected "IP[:PORT]", got {text!r}')
    try:
        return parse_hostport(text, default_port)
    except ValueError as exc:
        raise _BadValue(f'expected "IP[:PORT]" with a literal IP, got {text!r} ({exc})') from None


def parse_join_address(text: str) -> Address:
    """A join target: ``host``, ``host:port`` or Serf's ``name/host:port`` (name dropped)."""
    _, _, rest = text.rpartition("/")
    return _parse_hostport(rest, DEFAULT_GOSSIP_PORT)


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
            raise _BadValue(f"expected an integer, got {value!r}")
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
        parse_join_address(item)
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


def _bind(value: object) -> Address:
    return _parse_hostport(value, DEFAULT_GOSSIP_PORT)


def _advertise(value: object) -> Address:
    # Port 0 = "the bound port" (resolved once bound): Serf advertises the bind port by default.
    return _parse_hostport(value, 0)


def _rpc_addr(value: object) -> Address:
    return _parse_hostport(value, DEFAULT_RPC_PORT)


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


# key -> parser.  Keys are Serf's JSON names (cmd/serf/command/agent/config.go).
_PARSERS: dict[str, Callable[[object], object]] = {
    "node_name": _node_name,
    "bind": _bind,
    "advertise": _advertise,
    "rpc_addr": _rpc_addr,
    "rpc_auth": _str,
    "rpc_socket": _path,
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
    "retry_max": _int_in(0, 1_000_000),
    "replay_on_join": _bool,
    "rejoin_after_leave": _bool,
    "leave_on_terminate": _bool,
    "skip_leave_on_interrupt": _bool,
    "reconnect_interval": parse_duration,
    "reconnect_timeout": parse_duration,
    "tombstone_timeout": parse_duration,
    "broadcast_timeout": parse_duration,
    "profile": _profile,
    "protocol": _int_in(2, 5),
    "log_level": _log_level,
    "log_format": _log_format,
    "query_response_size_limit": _int_in(1, 64 * 1024),
    "query_size_limit": _int_in(1, 64 * 1024),
    # Serf caps user events at 9 KiB (UserEventSizeLimit must stay under a UDP packet).
    "user_event_size_limit": _int_in(1, 9 * 1024),
    # serf-trio extensions: limits of one handler run (Serf has no timeout at all).
    "handler_timeout": parse_duration,
    "handler_kill_grace": parse_duration,
}

_LIST_KEYS = frozenset({"start_join", "retry_join", "event_handlers"})

# Serf keys this agent does not implement: named as such rather than "unknown".
_UNSUPPORTED = frozenset(
    {
        "discover",
        "interface",
        "enable_syslog",
        "syslog_facility",
        "mdns",
        "role",
        "disable_coordinates",
        "statsite_addr",
        "statsd_addr",
        "enable_compression",
        "query_timeout_mult",
        "disable_name_resolution",
    }
)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The agent's effective configuration (defaults are Serf's)."""

    node_name: str
    bind: Address = DEFAULT_BIND
    advertise: Address | None = None
    rpc_addr: Address | None = None  # TCP RPC is off unless set
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
    profile: str = "lan"
    protocol: int = 5
    log_level: str = "INFO"
    log_format: str | None = None  # None: text on a TTY, else JSON
    query_response_size_limit: int = 1024
    query_size_limit: int = 1024
    user_event_size_limit: int = 512
    handler_timeout: float = 60.0  # seconds one handler run may take before SIGTERM
    handler_kill_grace: float = 3.0  # seconds between SIGTERM and SIGKILL

    def swim_config(self) -> SwimConfig:
        return PROFILES[self.profile]

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
        )

    def join_addresses(self, which: Sequence[str]) -> list[Address]:
        return [parse_join_address(a) for a in which]


# ---------------------------------------------------------------------------------------------
# Sources


def parse_mapping(raw: Mapping[str, object], source: str) -> dict[str, Any]:
    """Validate one source's raw key/value map (unknown keys and bad values are errors)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        parser = _PARSERS.get(key)
        if parser is None:
            why = "is not supported" if key in _UNSUPPORTED else "is unknown"
            raise ConfigError(f"{source}: config key {key!r} {why}")
        try:
            out[key] = parser(value)
        except _BadValue as exc:
            raise ConfigError(f"{source}: config key {key!r}: {exc}") from None
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


# ---------------------------------------------------------------------------------------------
# Command line


def _flag_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``ConfigError`` instead of printing usage and exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"command line: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="serf-trio agent", description="Run a Serf-compatible agent.")
    a = p.add_argument
    a("--node", dest="node_name", metavar="NAME", help="node name (default: hostname)")
    a("--bind", metavar="IP[:PORT]", help="gossip address (default 0.0.0.0:7946)")
    a("--advertise", metavar="IP[:PORT]", help="address peers use to reach us")
    a("--join", dest="start_join", action="append", metavar="HOST[:PORT]", help="join at start")
    a("--retry-join", dest="retry_join", action="append", metavar="HOST[:PORT]")
    a("--retry-interval", metavar="DURATION")
    a("--retry-max", type=int, metavar="N")
    a("--rpc-addr", metavar="IP:PORT", help="also serve RPC on TCP (off unless given)")
    a("--rpc-socket", metavar="PATH", help="Unix socket for RPC")
    a("--rpc-auth", metavar="TOKEN", help="token TCP RPC clients must send")
    a("--event-handler", dest="event_handlers", action="append", metavar="[FILTER=]SCRIPT")
    a("--tag", dest="tags", action="append", metavar="KEY=VALUE")
    a("--tags-file", metavar="PATH")
    a("--encrypt", dest="encrypt_key", metavar="KEY", help="gossip encryption key (base64)")
    a("--keyring-file", metavar="PATH", help="JSON list of base64 keys, kept up to date")
    a("--encrypt-algorithm", metavar="secretbox|aes-gcm", help="cipher to send with")
    a("--encrypt-verify-incoming", type=_flag_bool, metavar="true|false")
    a("--encrypt-verify-outgoing", type=_flag_bool, metavar="true|false")
    a("--snapshot", dest="snapshot_path", metavar="PATH")
    a("--config-file", action="append", default=[], metavar="PATH")
    a("--config-dir", action="append", default=[], metavar="DIR")
    a("--profile", metavar="lan|wan|local")
    a("--protocol", type=int, metavar="N")
    a("--log-level", metavar="LEVEL")
    a("--log-format", metavar="json|text")
    a("--replay", dest="replay_on_join", action="store_const", const=True)
    a("--rejoin", dest="rejoin_after_leave", action="store_const", const=True)
    a("--leave-on-terminate", action="store_const", const=True)
    a("--handler-timeout", metavar="DURATION", help="kill a handler run after this long")
    a("--handler-kill-grace", metavar="DURATION", help="SIGTERM to SIGKILL delay")
    a("--skip-leave-on-interrupt", action="store_const", const=True)
    return p


_FLAG_NAMES = {
    "node_name": "--node",
    "start_join": "--join",
    "event_handlers": "--event-handler",
    "tags": "--tag",
    "encrypt_key": "--encrypt",
    "snapshot_path": "--snapshot",
    "replay_on_join": "--replay",
    "rejoin_after_leave": "--rejoin",
}


def _flag_values(ns: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(ns).items():
        if key in ("config_file", "config_dir") or value is None:
            continue
        flag = _FLAG_NAMES.get(key, "--" + key.replace("_", "-"))
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
    """The effective config plus where it came from (SIGHUP reloads the same sources), and
    the keys it names (``None``: no encryption), primary first."""

    config: AgentConfig
    files: tuple[Path, ...]
    keys: tuple[bytes, ...] | None = field(default=None, repr=False)


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
    ns = build_parser().parse_args(list(argv))
    files: list[Path] = [Path(p) for p in ns.config_file]
    for d in ns.config_dir:
        files.extend(config_dir_files(Path(d)))
    merged: dict[str, Any] = {}
    for path in files:
        merged = merge(merged, load_file(path))
    merged = merge(merged, _flag_values(ns))
    if merged.get("tags") and merged.get("tags_file"):
        # Serf: the tags file is the source of truth for tags; both at once is refused.
        raise ConfigError("config key 'tags' is not allowed together with 'tags_file'")
    merged.setdefault("node_name", hostname if hostname is not None else socket.gethostname())
    known = {f.name for f in dataclasses.fields(AgentConfig)}
    cfg = AgentConfig(**{k: v for k, v in merged.items() if k in known})
    return LoadedConfig(cfg, tuple(files), configured_keys(cfg))
