"""What every client command shares: where the agent is, how to talk to it, how to print.

Owns three things so the command modules stay thin (STYLE 15: a command only speaks RPC):

* **Finding the agent.** ``--rpc-addr HOST:PORT`` (TCP, like ``serf -rpc-addr``) or
  ``--rpc-socket PATH`` (Unix socket); without either, the environment (``SERF_TRIO_RPC_SOCKET``,
  then Serf's ``SERF_RPC_ADDR``), then the first existing default socket of
  ``serf_trio.rpc.paths`` (the user's, then the system service's).
  ``--rpc-auth`` / ``SERF_RPC_AUTH`` is sent after the handshake, as Serf's CLI does.
* **The error boundary.** ``connected()`` turns the client's two error families into a message
  on stderr and exit status 1: a connection failure names the agent it tried and where that
  address came from (the variable, when the environment gave it); with no socket at any
  default place, every path looked at and a hint on a second line.  An RPC error prints the
  agent's text verbatim (Serf's CLIs print ``Error <action>: <text>``).
* **Serf's input and output forms.** Go durations (``5s``, ``500ms``, ``1m30s``), ``k=v``
  pairs, and ``columnize`` (Serf aligns columns with two spaces).

Fast start: this module imports only the standard library and Typer. The RPC client (stdlib
sockets + msgpack) is imported when a command connects; trio, structlog and rich never load on
this path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Protocol

import typer

from serf_trio.record import record

if TYPE_CHECKING:
    from serf_trio.rpc.api import KeyResponse, QueryParams, QueryRecord, RpcMember
    from serf_trio.serf.coordinate import Coordinate

# Socket timeout of a plain request/response command (Serf's CLI has none; an agent that
# stops answering should not hang a shell script forever).
DEFAULT_TIMEOUT = 10.0

ENV_RPC_SOCKET = "SERF_TRIO_RPC_SOCKET"
ENV_RPC_ADDR = "SERF_RPC_ADDR"
ENV_RPC_AUTH = "SERF_RPC_AUTH"


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


# Options shared by every client command (Serf puts them on each command, so do we).
RpcAddrOpt = Annotated[
    str | None,
    typer.Option(
        "--rpc-addr",
        metavar="HOST:PORT",
        help=f"Agent RPC address HOST:PORT (TCP). Env: {ENV_RPC_ADDR} (used when "
        f"{ENV_RPC_SOCKET} is not set).",
        show_default=False,
    ),
]
RpcSocketOpt = Annotated[
    str | None,
    typer.Option(
        "--rpc-socket",
        metavar="PATH",
        help=f"Agent RPC Unix socket. Env: {ENV_RPC_SOCKET} (wins over {ENV_RPC_ADDR}). "
        "Default: the socket of the user's own agent, else of the system service (both "
        "paths are in the top-level help).",
        show_default=False,
    ),
]
RpcAuthOpt = Annotated[
    str | None,
    typer.Option(
        "--rpc-auth",
        metavar="TOKEN",
        help=f"RPC auth token. Env: {ENV_RPC_AUTH}.",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    OutputFormat, typer.Option("--format", metavar="text|json", help="Output format.")
]
# ``members`` and ``query`` filter nodes by tag the same way (read with ``parse_tag_filters``).
TagFilterOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tag",
        metavar="K=REGEX",
        help="k=REGEX: only nodes whose tag k matches (repeatable).",
    ),
]


@record
class ClientOptions:
    """Where the agent is: exactly one of ``rpc_addr`` / ``socket_path`` is set.

    ``source`` says where that came from (``--rpc-addr``, ``--rpc-socket``, an environment
    variable's name, or ``default``); ``tried`` lists the default sockets looked for when none
    of them existed (error messages name them all).
    """

    rpc_addr: str | None
    socket_path: str | None
    auth: str
    source: str = field(default="", compare=False)
    tried: tuple[str, ...] = field(default=(), compare=False)

    @property
    def target(self) -> str:
        """The agent's address as error messages name it."""
        return self.rpc_addr if self.rpc_addr is not None else str(self.socket_path)


def client_options(
    rpc_addr: str | None,
    rpc_socket: str | None,
    rpc_auth: str | None,
    environ: dict[str, str] | None = None,
) -> ClientOptions:
    """Resolve flags, then environment, then the default socket (flags always win)."""
    env = dict(os.environ) if environ is None else environ
    if rpc_addr is not None and rpc_socket is not None:
        fail("Error: give either --rpc-addr or --rpc-socket, not both")
    auth = rpc_auth if rpc_auth is not None else env.get(ENV_RPC_AUTH, "")
    if rpc_addr is not None:
        return _tcp_options(rpc_addr, "--rpc-addr", auth)
    if rpc_socket is not None:
        return ClientOptions(None, rpc_socket, auth, source="--rpc-socket")
    # serf-trio's own variable beats Serf's: someone who set both means serf-trio's socket.
    if env.get(ENV_RPC_SOCKET):
        return ClientOptions(None, env[ENV_RPC_SOCKET], auth, source=ENV_RPC_SOCKET)
    if env.get(ENV_RPC_ADDR):
        return _tcp_options(env[ENV_RPC_ADDR], ENV_RPC_ADDR, auth)
    return _default_socket(auth)


def _tcp_options(addr: str, source: str, auth: str) -> ClientOptions:
    """``HOST:PORT`` checked here, so a typo is named with where it came from."""
    if not _valid_tcp_addr(addr):
        fail(
            f"Error: invalid RPC address {addr!r} (from {source}): "
            "expected HOST:PORT with a port from 1 to 65535 ([v6]:PORT for IPv6)"
        )
    return ClientOptions(addr, None, auth, source=source)


def _valid_tcp_addr(addr: str) -> bool:
    """``host:port``, ``[v6]:port`` or a bare host (Serf's RPC port 7373), as the client reads
    them (``rpc.client.parse_tcp_addr``); the port, if any, must be 1..65535."""
    if addr.startswith("["):
        host, bracket, rest = addr[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False
        port = rest[1:]
    elif addr.count(":") == 1:
        host, _, port = addr.partition(":")
    else:
        host, port = addr, ""
    del host  # any host: the connect names it if it does not resolve
    if not port:
        return True  # Serf's default RPC port
    return port.isascii() and port.isdigit() and 1 <= int(port) <= 65535


def default_socket_path() -> str:
    """The first candidate socket that exists, else the preferred one (rules in ``rpc.paths``)."""
    return str(_default_socket("").socket_path)


def _default_socket(auth: str) -> ClientOptions:
    """The first default socket that exists (``rpc.paths``: the user's, then the system
    service's), else the preferred one with every path in ``tried``."""
    from serf_trio.rpc.paths import candidate_socket_paths

    candidates = candidate_socket_paths()
    for path in candidates:
        if os.path.exists(path):
            return ClientOptions(None, path, auth, source="default")
    return ClientOptions(None, candidates[0], auth, source="default", tried=tuple(candidates))


class RpcClientLike(Protocol):
    """The part of ``serf_trio.rpc.client.RpcClient`` the commands use (tests fake it)."""

    def members(self) -> list[RpcMember]: ...
    def members_filtered(self, name: str, status: str, tags: dict[str, str]) -> list[RpcMember]: ...
    def join(self, addrs: list[str], replay: bool) -> int: ...
    def leave(self) -> None: ...
    def force_leave(self, node: str, prune: bool) -> None: ...
    def tags(self, set: dict[str, str], delete: list[str]) -> None: ...
    def event(self, name: str, payload: bytes, coalesce: bool) -> None: ...
    def query(self, params: QueryParams) -> Iterator[QueryRecord]: ...
    def monitor(self, level: str) -> Iterator[str]: ...
    def stats(self) -> dict[str, dict[str, str]]: ...
    def get_coordinate(self, node: str) -> Coordinate | None: ...
    def install_key(self, key: str) -> KeyResponse: ...
    def use_key(self, key: str) -> KeyResponse: ...
    def remove_key(self, key: str) -> KeyResponse: ...
    def list_keys(self) -> KeyResponse: ...
    def close(self) -> None: ...


def make_client(opts: ClientOptions, timeout: float) -> RpcClientLike:
    """Open a client to the agent (the one place tests monkeypatch to fake the agent)."""
    from serf_trio.rpc.client import RpcClient

    client: RpcClientLike = RpcClient(
        addr=opts.rpc_addr, socket_path=opts.socket_path, auth=opts.auth, timeout=timeout
    )
    return client


def fail(message: str) -> NoReturn:
    """Print one line on stderr and exit with status 1."""
    typer.echo(message, err=True)
    raise typer.Exit(1)


def connect_error_line(opts: ClientOptions, reason: object) -> str:
    """``Error connecting to serf-trio agent at <target>: <why>`` (one line), with where the
    target came from when the environment gave it; with no default socket anywhere, every
    path looked at, and a hint on a second line."""
    if opts.tried:
        where = " or ".join(opts.tried)
        line = f"Error connecting to serf-trio agent: no agent socket at {where}"
        return f"{line}\n{_no_socket_hint()}"
    text = _connect_reason(opts, reason)
    origin = f" (from {opts.source})" if opts.source in (ENV_RPC_SOCKET, ENV_RPC_ADDR) else ""
    line = f"Error connecting to serf-trio agent at {opts.target}{origin}: {text}"
    if opts.socket_path is not None and text == "Permission denied":
        line += (
            "\nHint: the agent's socket is open to its own user only (mode 0600): run this "
            "command as that user (the system service's: root)."
        )
    return line


def _no_socket_hint() -> str:
    from serf_trio.rpc.paths import SYSTEM_SOCKET_PATH

    return (
        f"Hint: is the agent running? The system service listens on {SYSTEM_SOCKET_PATH}, an "
        "agent a user starts on $XDG_RUNTIME_DIR/serf-trio/rpc.sock; for any other agent give "
        f"--rpc-socket PATH (or {ENV_RPC_SOCKET}), or --rpc-addr HOST:PORT (or {ENV_RPC_ADDR}) "
        "for its TCP RPC."
    )


def _connect_reason(opts: ClientOptions, reason: object) -> str:
    """The OS's words for a failed connect, without the client's own restating of the target."""
    if isinstance(reason, BaseException):
        cause = reason.__cause__
        if isinstance(cause, OSError):
            return _os_reason(cause)
    text = str(reason)
    marker = f"{opts.target}: "
    if marker in text:  # "cannot connect to the agent (<path>: <strerror>)"
        text = text.split(marker, 1)[1].removesuffix(")")
    return " ".join(text.split())


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


@contextmanager
def connected(
    opts: ClientOptions, action: str, *, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[RpcClientLike]:
    """Yield a connected client; any failure becomes one stderr line and exit status 1.

    ``action`` completes Serf's message form ``Error <action>: <agent's error text>``.
    """
    from serf_trio.rpc.client import ConnectError, RpcError

    try:
        client = make_client(opts, timeout)
    except ConnectError as exc:
        fail(connect_error_line(opts, exc))
    except OSError as exc:
        fail(connect_error_line(opts, _os_reason(exc)))
    try:
        yield client
    except ConnectError as exc:
        fail(connect_error_line(opts, exc))
    except RpcError as exc:
        fail(f"Error {action}: {str(exc).rstrip()}")
    except OSError as exc:  # the agent went away mid-command
        fail(f"Error {action}: {_os_reason(exc)}")
    finally:
        client.close()


def agent_client(
    rpc_addr: str | None,
    rpc_socket: str | None,
    rpc_auth: str | None,
    action: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> AbstractContextManager[RpcClientLike]:
    """``connected()`` to the agent that a command's ``--rpc-*`` flags name (every command's
    first step; the flags themselves stay in each command's signature, as Serf has them)."""
    return connected(client_options(rpc_addr, rpc_socket, rpc_auth), action, timeout=timeout)


# --- Serf's input forms -------------------------------------------------------------------

# Go's time.ParseDuration units, in nanoseconds.
_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a Go duration (``5s``, ``500ms``, ``1m30s``, ``1.5h``, ``0``) into seconds.

    Go's rules: an optional sign, then one or more number+unit parts; a bare number is only
    allowed for ``0``. Raises ``ValueError`` otherwise.
    """
    s = text.strip()
    sign = 1.0
    if s.startswith(("+", "-")):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total_ns = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r} (use Go's form: 5s, 500ms, 1m30s)")
        total_ns += float(m.group(1)) * _UNITS_NS[m.group(2)]
        pos = m.end()
    return sign * total_ns / 1e9


def parse_kv(items: Sequence[str], what: str = "tag") -> dict[str, str]:
    """``["k=v", ...]`` -> dict, split at the first ``=``; a later key overrides an earlier one."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"Error: invalid {what} {item!r}: expected key=value")
        out[key] = value
    return out


def parse_tag_filters(items: Sequence[str] | None) -> dict[str, str]:
    """``--tag k=REGEX`` values as a dict, every regex checked (see ``check_regex``)."""
    tags = parse_kv(items or [], "tag filter")
    for key, pattern in tags.items():
        check_regex(pattern, f"tag {key!r}")
    return tags


def check_regex(pattern: str, what: str) -> None:
    """Reject a bad filter regex here: the agent would drop the connection without a word."""
    try:
        re.compile(pattern)
    except re.error as exc:
        fail(f"Error: invalid {what} regular expression {pattern!r}: {exc}")


# --- Serf's output forms ------------------------------------------------------------------


def columnize(rows: Sequence[Sequence[str]]) -> list[str]:
    """Align columns with two spaces between them, as Serf's CLI does (no trailing blanks)."""
    if not rows:
        return []
    ncols = max(len(r) for r in rows)
    widths = [0] * ncols
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def echo_lines(lines: Sequence[str]) -> None:
    for line in lines:
        typer.echo(line)


def echo_json(obj: Any) -> None:
    """Pretty JSON like Serf's ``-format json`` (two-space indent)."""
    import json  # only the --format json path pays for it

    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def payload_text(payload: bytes | None) -> str:
    """Bytes as text; invalid UTF-8 becomes U+FFFD, as Go's JSON encoder does."""
    return (payload or b"").decode("utf-8", errors="replace")
