"""Agent configuration: Serf's config keys from JSON/TOML files, a config dir and flags.

The value parsers are in ``config_values`` and the command line in ``flags``; this module owns
the key table, ``AgentConfig`` and ``load`` (the sources and how they merge).  Rules it owns
(``docs/configuration.md`` lists every key; a test keeps it in step):

* **Sources, in order**: each ``--config-file`` and each ``*.json`` / ``*.toml`` file of
  ``--config-dir`` (lexical order), then the command-line flags (``flags``).  Later sources
  override earlier ones for scalar keys; ``tags`` merge key by key; the list keys
  ``start_join``, ``retry_join`` and ``event_handlers`` append (Serf's ``MergeConfig`` does the
  same).
* **Every Serf agent key is accepted** (Serf 0.9's ``config.go``, plus ``validate_node_names``
  and ``mdns`` of later versions).  Each is honoured, or it is in ``IGNORED_KEYS`` and, when its
  value asks for something (``mdns``, ``validate_node_names``, ...), ``load`` returns one
  ``ConfigNotice`` for it, which the agent logs once at start-up (``config_key_ignored``, with
  a ``hint``).  ``role`` is Serf's deprecated spelling of the ``role`` tag (it wins over
  ``tags.role``, as in Serf); ``retry_max_attempts`` and serf-trio's ``retry_max`` are one key.
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
  "command line") and the key (or the flag), and says what form was expected.  Nothing here
  does I/O beyond reading the named files.

``AgentConfig`` is the frozen result; ``swim_config()`` and friends turn it into the plain
specs the lower layers take.  The names other modules import from here (the value parsers,
``ConfigError``, ``build_parser``, ``flag_keys``) stay importable from here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any

from serf_trio.record import record
from serf_trio.runtime.resolve import HostPort
from serf_trio.serf.config import AGENT_DEFAULTS, SerfConfig
from serf_trio.serf.filters import HandlerSpec
from serf_trio.serf.tags import TagsTooLarge, encode_tags
from serf_trio.swim.config import PROFILES, SwimConfig
from serf_trio.wire.crypto import Algorithm
from serf_trio.wire.keyring import KEY_SIZES, decode_key

from . import config_values as values
from .config_values import (
    DEFAULT_GOSSIP_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_RPC_PORT,
    BadValue,
    ConfigError,
    parse_duration,
    parse_event_filter,
    parse_handler,
    parse_join_address,
)
from .flags import build_parser, flag_keys, flag_names, flag_settings, serf_style

__all__ = [
    "ALIASES",
    "CONFIG_KEYS",
    "DEFAULT_BIND",
    "DEFAULT_GOSSIP_PORT",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_RPC_PORT",
    "IGNORED_KEYS",
    "KEY_AND_KEYRING",
    "SERF_PROTOCOL",
    "AgentConfig",
    "ConfigError",
    "ConfigNotice",
    "LoadedConfig",
    "build_parser",
    "config_dir_files",
    "configured_keys",
    "flag_keys",
    "load",
    "load_file",
    "merge",
    "notices",
    "parse_duration",
    "parse_event_filter",
    "parse_handler",
    "parse_join_address",
    "parse_mapping",
    "read_keyring_file",
]

DEFAULT_BIND = HostPort("0.0.0.0", DEFAULT_GOSSIP_PORT)
KEY_AND_KEYRING = "Encryption key not allowed while using a keyring"  # Serf's text
SERF_PROTOCOL = 5  # the Serf protocol version serf-trio speaks


@record
class ConfigNotice:
    """A key that was accepted but is not honoured (or is deprecated): the agent logs one
    warning per notice at start-up, ``event`` with ``key`` and ``hint``."""

    key: str
    hint: str
    event: str = "config_key_ignored"


# key -> parser.  Keys are Serf's JSON names (cmd/serf/command/agent/config.go) unless marked.
_PARSERS: dict[str, Callable[[object], object]] = {
    "node_name": values.node_name,
    "role": values.string,  # Serf's deprecated spelling of the "role" tag
    "bind": values.bind,
    "interface": values.interface,
    "discover": values.discover,  # mDNS cluster name (agent.discover)
    "advertise": values.advertise,
    "rpc_addr": values.rpc_addr,
    "rpc_auth": values.string,
    "rpc_socket": values.path,  # serf-trio: the Unix socket
    "encrypt_key": values.encrypt_key,
    "keyring_file": values.path,
    # serf-trio: the cipher this node sends with, and memberlist's verification switches.
    "encrypt_algorithm": values.algorithm,
    "encrypt_verify_incoming": values.boolean,
    "encrypt_verify_outgoing": values.boolean,
    "event_handlers": values.handlers,
    "tags": values.tags,
    "tags_file": values.path,
    "snapshot_path": values.path,
    "start_join": values.join_list,
    "retry_join": values.join_list,
    "retry_interval": values.parse_duration,
    "retry_max": values.int_in(0, 1_000_000),  # Serf's retry_max_attempts (an alias of it)
    "replay_on_join": values.boolean,
    "rejoin_after_leave": values.boolean,
    "leave_on_terminate": values.boolean,
    "skip_leave_on_interrupt": values.boolean,
    "reconnect_interval": values.parse_duration,
    "reconnect_timeout": values.parse_duration,
    "tombstone_timeout": values.parse_duration,
    "broadcast_timeout": values.parse_duration,
    "disable_name_resolution": values.boolean,
    "disable_coordinates": values.boolean,
    "enable_compression": values.boolean,
    "enable_syslog": values.boolean,
    "syslog_facility": values.syslog_facility,
    "profile": values.profile,
    "protocol": values.int_in(2, 5),
    "log_level": values.log_level,
    "log_format": values.log_format,  # serf-trio: JSON lines or text
    "query_response_size_limit": values.int_in(1, 64 * 1024),
    "query_size_limit": values.int_in(1, 64 * 1024),
    # Serf caps user events at 9 KiB (UserEventSizeLimit must stay under a UDP packet).
    "user_event_size_limit": values.int_in(1, 9 * 1024),
    # serf-trio extensions: limits of one handler run (Serf has no timeout at all).
    "handler_timeout": values.parse_duration,
    "handler_kill_grace": values.parse_duration,
    "statsd_addr": values.metrics_addr,  # agent.telemetry: UDP, go-metrics' statsd lines
    "statsite_addr": values.metrics_addr,  # agent.telemetry: the same lines over TCP
    "metrics_addr": values.prometheus_addr,  # serf-trio: Prometheus /metrics (agent.metrics)
    # Serf keys serf-trio accepts and does not honour (IGNORED_KEYS says what to do instead).
    "mdns": values.mapping,
    "validate_node_names": values.boolean,
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


@record
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
    enable_compression: bool | None = None  # None: the profile's (wan compresses, lan/local not)
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
        base = PROFILES[self.profile]
        if self.enable_compression is None:
            return base
        return dataclasses.replace(base, enable_compression=self.enable_compression)

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
        except BadValue as exc:
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
            import tomllib  # only for a TOML file: most agents never read one

            raw: object = tomllib.loads(data.decode("utf-8"))
        else:
            raw = json.loads(data)
    # RecursionError: JSON or TOML nested deeper than the interpreter's recursion limit.
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError, ...
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


def _flag_values(ns: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    """The keys the flags set, each validated as a config key's value is."""
    out: dict[str, Any] = {}
    for flag, key, value in flag_settings(ns, flags):
        try:
            out.update(parse_mapping({key: value}, "command line"))
        except ConfigError as exc:
            # Name the flag the user typed rather than the config key.
            raise ConfigError(str(exc).replace(f"config key {key!r}", flag, 1)) from None
    return out


@record
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
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
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
    flags = flag_names(parser)
    ns = parser.parse_args(serf_style(argv, parser))
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
