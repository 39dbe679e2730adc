"""A blocking RPC client for the agent (what the CLI uses), on the stdlib ``socket`` module.

Owns one connection: connect (Unix socket or ``host:port`` TCP), ``handshake``, optional
``auth``, then one method per Serf RPC command.  Wire details come from ``protocol.py``; this
module only sequences requests and reads answers.

Reading rule (RPC.md 8): answers are matched by Seq.  A header with a Seq we are not waiting
for is skipped, and so is a non-header object after it (its body): this tolerates Serf's double
``Authentication required``.  Records of a stream that is still open on this connection are
kept for that stream while another request is answered, so ``respond`` can be sent while a
``stream`` iterator is in use.

Kept light on purpose (the CLI must start fast): no trio, structlog or rich.
"""

from __future__ import annotations

import contextlib
import socket
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import protocol as p
from .api import EventRecord, KeyResponse, QueryParams, QueryRecord, RpcMember
from .paths import candidate_socket_paths

if TYPE_CHECKING:
    from ..serf.coordinate import Coordinate

DEFAULT_TCP_PORT = 7373
CLIENT_MAX_OBJECT = 64 << 20  # a members list of a large cluster is several MiB
_RECV = 64 * 1024
_NS = 1_000_000_000
# Errors after which Serf sends no body even for commands that have one.
_NO_BODY_ERRORS = frozenset(
    {p.ERR_HANDSHAKE_REQUIRED, p.ERR_AUTH_REQUIRED, p.ERR_UNSUPPORTED_COMMAND}
)

T = TypeVar("T")


class RpcError(Exception):
    """The agent answered with an error (``str(exc)`` is Serf's text) or broke the protocol."""


class ConnectError(RpcError):
    """No agent could be reached."""


def parse_tcp_addr(addr: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare host (Serf's default RPC port 7373)."""
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest.removeprefix(":")
    elif addr.count(":") == 1:
        host, _, port = addr.partition(":")
    else:
        host, port = addr, ""
    try:
        return host or "127.0.0.1", int(port) if port else DEFAULT_TCP_PORT
    except ValueError:
        raise ConnectError(f"invalid RPC address {addr!r}: expected HOST:PORT") from None


class RpcClient:
    """One RPC connection to an agent.  Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        addr: str | None = None,
        socket_path: str | None = None,
        auth: str = "",
        timeout: float = 10.0,
    ) -> None:
        self.timeout = timeout
        self._seq = 0
        self._reader = p.FrameReader(CLIENT_MAX_OBJECT)
        self._inbox: deque[Any] = deque()
        self._streams: dict[int, deque[Any]] = {}
        self._sock: socket.socket | None = self._connect(addr, socket_path)
        try:
            self._check(self._call(p.HANDSHAKE, {"Version": p.IPC_VERSION}))
            if auth:
                self._check(self._call(p.AUTH, {"AuthKey": auth}))
        except BaseException:
            self.close()
            raise

    # -- connection -----------------------------------------------------------------------------

    def _connect(self, addr: str | None, socket_path: str | None) -> socket.socket:
        if addr is not None:
            host, port = parse_tcp_addr(addr)
            # An ASCII host goes to getaddrinfo as bytes: a str host makes it load the idna
            # codec (about 1 ms of CLI start-up), even for an IP literal.
            target: Any = host.encode("ascii") if host.isascii() else host
            try:
                return socket.create_connection((target, port), timeout=self.timeout)
            except OSError as exc:
                raise ConnectError(
                    f"cannot connect to the agent at {host}:{port}: {exc.strerror or exc}"
                ) from exc
        paths = [socket_path] if socket_path is not None else candidate_socket_paths()
        errors = []
        for path in paths:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(path)
            except OSError as exc:
                sock.close()
                errors.append(f"{path}: {exc.strerror or exc}")
                continue
            return sock
        raise ConnectError("cannot connect to the agent (" + "; ".join(errors) + ")")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _live(self) -> socket.socket:
        if self._sock is None:
            raise RpcError("the client is closed")
        return self._sock

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- framing --------------------------------------------------------------------------------

    def _read(self) -> Any:
        while not self._inbox:
            try:
                data = self._live().recv(_RECV)
            except TimeoutError:
                raise RpcError("timed out waiting for the agent") from None
            except OSError as exc:
                raise RpcError(f"connection to the agent failed: {exc}") from exc
            if not data:
                raise RpcError("the agent closed the connection")
            try:
                self._inbox.extend(self._reader.feed(data))
            except p.ProtocolError as exc:
                raise RpcError(f"bad data from the agent: {exc}") from exc
        return self._inbox.popleft()

    def _send(self, command: str, body: Mapping[str, Any] | None = None) -> int:
        self._seq += 1
        try:
            self._live().sendall(p.encode_request(command, self._seq, body))
        except OSError as exc:
            raise RpcError(f"connection to the agent failed: {exc}") from exc
        return self._seq

    def _wait(self, seq: int, has_body: bool) -> tuple[str, Any]:
        """Read until the header for ``seq``; return (error, body or None)."""
        while True:
            obj = self._read()
            if not p.is_response_header(obj):
                continue  # the body of a header we skipped
            if obj["Seq"] in self._streams:
                self._streams[obj["Seq"]].append(self._read())
                continue
            if obj["Seq"] != seq:
                continue  # unknown Seq (e.g. Serf's second "Authentication required")
            error: str = obj["Error"]
            body = self._read() if has_body and error not in _NO_BODY_ERRORS else None
            return error, body

    def _call(self, command: str, body: Mapping[str, Any] | None = None) -> tuple[str, Any]:
        return self._wait(self._send(command, body), command in p.RESPONSE_HAS_BODY)

    @staticmethod
    def _check(answer: tuple[str, Any]) -> Any:
        error, body = answer
        if error:
            raise RpcError(error)
        return body

    def _decode(self, fn: Callable[[Any], T], obj: Any) -> T:
        try:
            return fn(obj)
        except p.ProtocolError as exc:
            raise RpcError(f"bad answer from the agent: {exc}") from exc

    def _open_stream(self, command: str, body: Mapping[str, Any]) -> int:
        seq = self._send(command, body)
        self._check(self._wait(seq, False))  # the ack precedes every record of the stream
        self._streams[seq] = deque()
        return seq

    def _records(self, seq: int, stoppable: bool) -> Generator[Any, None, None]:
        """Bodies of the stream ``seq``; a stoppable one sends ``stop`` when abandoned."""
        queue = self._streams[seq]
        self._live().settimeout(None)  # a stream may be quiet for a long time
        try:
            while True:
                if queue:
                    body = queue.popleft()
                else:
                    obj = self._read()
                    if not p.is_response_header(obj):
                        continue
                    if obj["Seq"] != seq:
                        if obj["Seq"] in self._streams:
                            self._streams[obj["Seq"]].append(self._read())
                        continue
                    body = self._read()
                yield body
        finally:
            self._streams.pop(seq, None)
            if self._sock is not None:
                self._sock.settimeout(self.timeout)
                if stoppable:
                    with contextlib.suppress(RpcError):  # the connection may be going away
                        self._call(p.STOP, {"Stop": seq})

    # -- commands -------------------------------------------------------------------------------

    def members(self) -> list[RpcMember]:
        body = self._check(self._call(p.MEMBERS))
        return self._decode(p.members_from_body, body)

    def members_filtered(
        self, name: str = "", status: str = "", tags: Mapping[str, str] | None = None
    ) -> list[RpcMember]:
        """Regexes anchored at both ends, matched by the agent (``serf members`` uses this)."""
        req = {"Name": name, "Status": status, "Tags": dict(tags or {})}
        body = self._check(self._call(p.MEMBERS_FILTERED, req))
        return self._decode(p.members_from_body, body)

    def join(self, addrs: Sequence[str], replay: bool = False) -> int:
        body = self._check(self._call(p.JOIN, {"Existing": list(addrs), "Replay": replay}))
        if not isinstance(body, dict) or not isinstance(body.get("Num"), int):
            raise RpcError("bad answer from the agent: join")
        num: int = body["Num"]
        return num

    def leave(self) -> None:
        self._check(self._call(p.LEAVE))

    def force_leave(self, node: str, prune: bool = False) -> None:
        self._check(self._call(p.FORCE_LEAVE, {"Node": node, "Prune": prune}))

    def tags(
        self, set: Mapping[str, str] | None = None, delete: Sequence[str] | None = None
    ) -> None:
        # As the Go CLI sends it: Tags always a map, DeleteTags nil when empty.
        req = {"DeleteTags": list(delete) if delete else None, "Tags": dict(set or {})}
        self._check(self._call(p.TAGS, req))

    def event(self, name: str, payload: bytes = b"", coalesce: bool = True) -> None:
        req = {"Coalesce": coalesce, "Name": name, "Payload": payload or None}
        self._check(self._call(p.EVENT, req))

    def query(self, params: QueryParams) -> Generator[QueryRecord, None, None]:
        """Start a query; iterate its ``ack``/``response`` records and the final ``done``."""
        req = {
            "FilterNodes": list(params.filter_nodes) or None,
            "FilterTags": dict(params.filter_tags),
            "Name": params.name,
            "Payload": params.payload or None,
            "RelayFactor": params.relay_factor,
            "RequestAck": params.request_ack,
            "Timeout": round(params.timeout * _NS),
        }
        seq = self._open_stream(p.QUERY, req)
        return self._query_records(seq)

    def _query_records(self, seq: int) -> Generator[QueryRecord, None, None]:
        for body in self._records(seq, stoppable=False):
            rec = self._decode(p.query_record_from_wire, body)
            yield rec
            if rec.type == "done":
                return

    def respond(self, query_id: int, payload: bytes) -> None:
        """Answer a query received on a ``stream`` of this connection (its record's token)."""
        self._check(self._call(p.RESPOND, {"ID": query_id, "Payload": payload}))

    def stream(self, filter: str = "*") -> Generator[EventRecord, None, None]:
        """Event records matching a Serf filter; a query record's ``token`` is its respond ID."""
        seq = self._open_stream(p.STREAM, {"Type": filter})
        return self._event_records(seq)

    def _event_records(self, seq: int) -> Generator[EventRecord, None, None]:
        for body in self._records(seq, stoppable=True):
            yield self._decode(p.event_record_from_wire, body)

    def monitor(self, level: str = "INFO") -> Generator[str, None, None]:
        """Agent log lines at ``level`` or above (TRACE, DEBUG, INFO, WARN, ERR)."""
        seq = self._open_stream(p.MONITOR, {"LogLevel": level})
        return self._log_lines(seq)

    def _log_lines(self, seq: int) -> Generator[str, None, None]:
        for body in self._records(seq, stoppable=True):
            if isinstance(body, dict) and isinstance(body.get("Log"), str):
                yield body["Log"]

    def stats(self) -> dict[str, dict[str, str]]:
        return self._decode(p.stats_from_body, self._check(self._call(p.STATS)))

    def get_coordinate(self, node: str) -> Coordinate | None:
        body = self._check(self._call(p.GET_COORDINATE, {"Node": node}))
        return self._decode(p.coordinate_from_body, body)

    def _key_op(self, command: str, body: Mapping[str, Any] | None) -> KeyResponse:
        """Key answers carry a body even on failure; its ``error`` holds the header text."""
        error, resp = self._call(command, body)
        if resp is None:
            raise RpcError(error)
        return self._decode(lambda o: p.key_response_from_body(o, error), resp)

    def install_key(self, key: str) -> KeyResponse:
        return self._key_op(p.INSTALL_KEY, {"Key": key})

    def use_key(self, key: str) -> KeyResponse:
        return self._key_op(p.USE_KEY, {"Key": key})

    def remove_key(self, key: str) -> KeyResponse:
        return self._key_op(p.REMOVE_KEY, {"Key": key})

    def list_keys(self) -> KeyResponse:
        return self._key_op(p.LIST_KEYS, None)
