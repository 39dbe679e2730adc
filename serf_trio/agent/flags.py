"""The ``serf-trio agent`` command line: its argparse flags and their help, and Serf's
one-dash spelling.

Rules this module owns (``docs/configuration.md`` lists every flag; a test keeps it in step):

* **Each flag sets one config key** (``flag_keys``), except ``--config-file`` and
  ``--config-dir``, which name the sources; flags override the config files (``agent.config``
  merges them).  ``--disable-compression`` sets ``enable_compression`` to the opposite;
  ``--tag KEY=VALUE`` builds the ``tags`` map; a boolean flag alone is true and takes
  ``=true``/``=false`` too.
* **Serf's spelling**: Serf's (Go's) one-dash flags work too: ``-bind=...`` is ``--bind=...``,
  ``-replay=true`` is ``--replay``.
* **Errors**: a bad command line raises ``ConfigError`` ("command line: ..."), never argparse's
  usage-and-exit; a bad flag value names the flag the user typed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from .config_values import ConfigError


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


def serf_style(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """Serf's (Go's) one-dash flags -> ours: ``-bind=x`` -> ``--bind=x``."""
    longs = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    out = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and "-" + arg.split("=")[0] in longs:
            arg = "-" + arg
        out.append(arg)
    return out


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each destination of ``parser`` -> the flag that sets it (``node_name`` -> ``--node``)."""
    return {
        a.dest: next(s for s in a.option_strings if s.startswith("--"))
        for a in parser._actions
        if a.option_strings and a.dest != "help"
    }


def flag_settings(ns: argparse.Namespace, flags: dict[str, str]) -> Iterator[tuple[str, str, Any]]:
    """``(flag, key, value)`` for each flag given, in ``ns`` order, the value made what its key
    takes (inverted, a whole number, a tags map); ``ConfigError`` naming the flag otherwise.
    The caller validates each value as it comes (``agent.config``)."""
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
        yield flag, key, value
