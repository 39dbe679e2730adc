"""The RPC server: Serf's agent RPC protocol served over a Unix socket (and TCP if asked).

Owns the listeners and the per-connection state machine; every command becomes one call on an
:class:`~serf_trio.rpc.api.AgentAPI`.  Wire details (names, error strings, schemas, dialect)
come from ``protocol.py`` only.

Connection rules (RPC.md 2, as Serf's ipc.go applies them):

1. ``handshake`` first; any other command gets ``Handshake required`` and the connection is
   closed without reading the body.
2. With ``rpc_auth`` set, every command but handshake/auth gets ``Authentication required``
   until ``auth`` succeeds.  Serf leaves the request body unread and so answers twice; we read
   the body of a known command and answer once (clients tolerate both).
3. An unknown command gets ``Unsupported command``, then the connection is closed.
4. Malformed msgpack, a body of the wrong shape, an object over ``max_object`` bytes, or an
   invalid ``members-filtered`` regex close that connection without an answer (logged).  Other
   connections are never affected.
5. (serf-trio's, not Serf's) At most ``max_connections`` at once.  A connection must be
   admitted (handshake, and auth where required) within ``admit_timeout`` or it is closed; at
   the cap a newcomer takes the slot of the oldest connection not yet admitted, and only when
   every connection is admitted is a newcomer refused.

Requests on one connection are handled in order (as Serf does); streams (``stream``,
``monitor``, ``query``) run as tasks that interleave their records, each record tagged with the
Seq of the request that opened it.  Writes: a request's answer (header+body as one buffer) is
written by the reader under the connection's send lock; stream records go through a bounded
per-connection queue to a writer task that takes the same lock per record, so a header and its
body are never split.  When a client reads too slowly the queue fills and event/log records
are dropped for that connection (counted), so a slow consumer never stalls the agent.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import socket as _stdsocket
import stat
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from typing import Any

import structlog
import trio

from serf_trio.record import record

from . import protocol as p
from .api import (
    AgentAPI,
    AgentError,
    KeyResponse,
    QueryEventRecord,
    QueryParams,
    QueryRecord,
    RpcMember,
)

MAX_CONNECTIONS = 256
OUT_QUEUE_FRAMES = 512  # stream records buffered per connection before dropping
MAX_PENDING_QUERIES = 1024  # per-connection query ID -> agent token entries kept for respond
# A client that has not completed its handshake (and auth, where required) this long after
# connecting is closed: with a connection cap, idle strangers could otherwise hold every slot.
# Serf's own clients handshake at once; Serf's agent has no such deadline (and no cap).
ADMIT_TIMEOUT = 10.0
LISTEN_BACKLOG = 64
# The largest request accepted.  Serf's requests are small: a user event's name and payload
# are capped at 9 KiB by Serf itself, a query travels in one UDP packet (< 64 KiB), keys and
# tags are tiny.  The cap bounds what one connection can make the agent buffer, and with
# MAX_CONNECTIONS what all of them can: 256 x (128 KiB + one 64 KiB read) is under 50 MiB of
# input buffers, where a 1 MiB cap allowed a quarter of a gigabyte.
MAX_REQUEST = 128 * 1024
_RECV = 64 * 1024
_NS = 1_000_000_000


class RpcServeError(Exception):
    """The server cannot start; the text names the socket or address and why (``cannot listen
    on the RPC socket PATH: another agent is listening on it``)."""


def _os_reason(exc: OSError) -> str:
    text = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return text[:1].lower() + text[1:]


@record
class RpcBound:
    """What ``serve`` reports to ``task_status.started``: the addresses really bound."""

    socket_path: str | None
    tcp_addr: tuple[str, int] | None


@record
class RpcServerStatistics:
    connections_open: int
    connections_total: int
    connections_rejected: int
    protocol_errors: int
    records_dropped: int
    commands: int  # requests past the handshake check (Serf's agent.ipc.command)


class _Closed(Exception):
    """The peer closed its side in the middle of a request."""


class _Drop(Exception):
    """Close this connection without a response (Serf does so on body errors)."""


_EOF = object()


class RpcServer:
    def __init__(
        self,
        api: AgentAPI,
        *,
        socket_path: str | None,
        tcp_addr: tuple[str, int] | None = None,
        logger: Any = None,
        max_connections: int = MAX_CONNECTIONS,
        max_object: int = MAX_REQUEST,
        out_queue: int = OUT_QUEUE_FRAMES,
        make_dir: bool = True,
        admit_timeout: float = ADMIT_TIMEOUT,
    ) -> None:
        """``make_dir``: create the socket's directory (mode 0700) when it is missing; False
        makes a missing directory an error (the agent creates only its runtime directory).
        ``admit_timeout``: seconds a new connection has to complete its handshake (and auth
        when ``rpc_auth`` is set) before it is closed."""
        if socket_path is None and tcp_addr is None:
            raise ValueError("RpcServer needs a socket_path or a tcp_addr")
        self.api = api
        self.socket_path = socket_path
        self.make_dir = make_dir
        self.tcp_addr = tcp_addr
        self.log = logger if logger is not None else structlog.get_logger("serf_trio.rpc")
        self.max_connections = max_connections
        self.max_object = max_object
        self.out_queue = out_queue
        self.admit_timeout = admit_timeout
        self._unix_ino: int | None = None
        # Connections not yet admitted (no handshake, or no auth where required), oldest first:
        # at the connection cap the oldest of them makes room for a newcomer.
        self._unadmitted: dict[_Connection, None] = {}
        self._open = 0
        self._total = 0
        self._rejected = 0
        self._protocol_errors = 0
        self._dropped = 0
        self._commands = 0

    def statistics(self) -> RpcServerStatistics:
        return RpcServerStatistics(
            connections_open=self._open,
            connections_total=self._total,
            connections_rejected=self._rejected,
            protocol_errors=self._protocol_errors,
            records_dropped=self._dropped,
            commands=self._commands,
        )

    async def serve(
        self, *, task_status: trio.TaskStatus[RpcBound] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind every listener, report them, serve until cancelled; remove our socket file."""
        listeners: list[trio.SocketListener] = []
        try:
            bound_path = None
            bound_tcp = None
            if self.socket_path is not None:
                listeners.append(await self._bind_unix(self.socket_path))
                bound_path = self.socket_path
            if self.tcp_addr is not None:
                host, port = self.tcp_addr
                try:
                    tcp = await trio.open_tcp_listeners(port, host=host, backlog=LISTEN_BACKLOG)
                except OSError as exc:
                    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                    raise RpcServeError(
                        f"cannot listen on the RPC address {addr} (TCP): {_os_reason(exc)}"
                    ) from None
                listeners.extend(tcp)
                name = tcp[0].socket.getsockname()
                bound_tcp = (str(name[0]), int(name[1]))
            bound = RpcBound(bound_path, bound_tcp)
            # Only what is listening (no ``tcp=None`` in the log).
            listening: dict[str, str] = {}
            if bound_path is not None:
                listening["socket"] = bound_path
            if bound_tcp is not None:
                listening["tcp"] = f"{bound_tcp[0]}:{bound_tcp[1]}"
            self.log.info("rpc_listening", **listening)
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle, listeners)
                task_status.started(bound)
        finally:
            self._remove_socket_file()
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await trio.aclose_forcefully(listener)

    # -- Unix socket file -----------------------------------------------------------------------

    async def _bind_unix(self, path: str) -> trio.SocketListener:
        tmp = _prepare_socket_dir(path, self.make_dir)
        await self._check_existing(path)
        # Bind under a temporary name, chmod 0600, then rename into place: the socket is never
        # reachable under its public name with wider permissions, and a stale file is replaced
        # atomically.
        # Bound synchronously, like the chmod and rename around it: a local path binds at once,
        # and trio's own bind would start a worker thread (and its malloc arena) for it.
        raw = _stdsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        sock = trio.socket.from_stdlib_socket(raw)
        try:
            raw.bind(tmp)
            os.chmod(tmp, 0o600)
            sock.listen(LISTEN_BACKLOG)
            os.replace(tmp, path)
        except OSError as exc:
            sock.close()
            _unlink_quietly(tmp)
            raise RpcServeError(
                f"cannot listen on the RPC socket {path}: {_os_reason(exc)}"
            ) from None
        except BaseException:
            sock.close()
            _unlink_quietly(tmp)
            raise
        self._unix_ino = os.stat(path).st_ino
        return trio.SocketListener(sock)

    async def _check_existing(self, path: str) -> None:
        """A stale socket (nobody listening) may be replaced; a live one must not be."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise RpcServeError(
                f"cannot listen on the RPC socket {path}: it exists and is not a socket"
            )
        probe = trio.socket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        with probe:
            try:
                with trio.fail_after(5):
                    await probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                self.log.info("rpc_stale_socket_replaced", socket=path)
                return
            except trio.TooSlowError:
                pass  # someone holds it but does not accept fast: treat as live
        raise RpcServeError(
            f"cannot listen on the RPC socket {path}: another agent is listening on it "
            "(stop it, or give this agent another --rpc-socket)"
        )

    def _remove_socket_file(self) -> None:
        if self.socket_path is None or self._unix_ino is None:
            return
        try:
            if os.stat(self.socket_path).st_ino == self._unix_ino:
                os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        self._unix_ino = None

    # -- connections ----------------------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self._open >= self.max_connections and self._unadmitted:
            # Strangers that never handshake must not lock clients out until their admission
            # deadline: the oldest one not admitted yet is closed for the newcomer (counted as
            # rejected).  Admitted connections are never evicted.
            victim = next(iter(self._unadmitted))
            del self._unadmitted[victim]
            victim.evict()
            self._rejected += 1
            self.log.warning("rpc_connection_evicted", reason="connection cap reached, not "
                             "admitted", limit=self.max_connections)  # fmt: skip
        elif self._open >= self.max_connections:
            self._rejected += 1
            self.log.warning("rpc_connection_rejected", reason="too many connections",
                             limit=self.max_connections)  # fmt: skip
            await trio.aclose_forcefully(stream)
            return
        self._open += 1
        self._total += 1
        self.log.debug("rpc_client_accepted", open=self._open)
        try:
            await _Connection(self, stream).run()
        finally:
            self._open -= 1
            await trio.aclose_forcefully(stream)

    def _note_drop(self) -> None:
        self._dropped += 1

    def _note_internal_error(self, eg: BaseExceptionGroup[Exception]) -> None:
        self._protocol_errors += 1
        exc = eg.exceptions[0]
        self.log.error("rpc_internal_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)

    def _note_protocol_error(self, reason: str) -> None:
        self._protocol_errors += 1
        self.log.warning("rpc_connection_dropped", reason=reason)


def _prepare_socket_dir(path: str, make_dir: bool) -> str:
    """Create the socket's directory (0700) if missing and allowed; return a free temporary
    bind path.  ``RpcServeError`` when the directory is missing and may not be created."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        where = f"cannot listen on the RPC socket {path}"
        if not make_dir:
            raise RpcServeError(
                f"{where}: its directory {parent} does not exist "
                "(create it first, or choose another socket path)"
            )
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        except OSError as exc:
            hint = (
                " (run the agent as a user who may, set XDG_RUNTIME_DIR, or give another socket)"
                if isinstance(exc, PermissionError)
                else ""
            )
            raise RpcServeError(
                f"{where}: cannot create its directory {parent}: {_os_reason(exc)}{hint}"
            ) from None
    # Short name: sun_path holds only 108 bytes.
    tmp = os.path.join(parent, f".{os.getpid() % 0x1000000:x}.s")
    _unlink_quietly(tmp)
    return tmp


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _anchored(expr: str) -> re.Pattern[str]:
    # ipc.go compiles "^" + expr + "$" (no group around expr); Go's "$" is end of text: \Z.
    return re.compile("^" + expr + r"\Z")


def filter_members(
    members: list[RpcMember], name: str, status: str, tags: dict[str, str]
) -> list[RpcMember]:
    """``members-filtered``: every value a regex anchored at both ends; ``re.error`` if invalid.

    Empty name/status mean no filter; a tag filter tests the tag value, "" when missing.
    """
    tag_res = {k: _anchored(v) for k, v in tags.items()}
    status_re = _anchored(status)
    name_re = _anchored(name)
    out = []
    for m in members:
        if not all(r.search(m.tags.get(k, "")) for k, r in tag_res.items()):
            continue
        if status and not status_re.search(m.status):
            continue
        if name and not name_re.search(m.name):
            continue
        out.append(m)
    return out


async def _aclose(it: object) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            await aclose()


class _Connection:
    """One client connection: its handshake/auth state, streams and query ID table."""

    def __init__(self, server: RpcServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.api = server.api
        self.stream = stream
        self.reader = p.FrameReader(server.max_object)
        self.inbox: deque[Any] = deque()
        self.send_lock = trio.Lock()
        self.out_send, self.out_recv = trio.open_memory_channel[bytes](server.out_queue)
        self.version = 0
        self.authed = False
        self.streams: dict[int, trio.CancelScope] = {}
        self.monitor: tuple[int, trio.CancelScope] | None = None
        self.queries: OrderedDict[int, int] = OrderedDict()  # connection query ID -> agent token
        self.next_query_id = 1
        self.dropped = 0
        self.nursery: trio.Nursery | None = None
        self.evicted = False

    def evict(self) -> None:
        """Close this connection from outside (the server needs its slot)."""
        self.evicted = True
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    async def run(self) -> None:
        self.server._unadmitted[self] = None
        try:
            await self._serve()
        finally:
            self.server._unadmitted.pop(self, None)

    async def _serve(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                if self.evicted:  # evicted before it ever ran
                    nursery.cancel_scope.cancel()
                self.nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._admission_deadline)
                await self._read_loop()
                nursery.cancel_scope.cancel()
        except* p.ProtocolError as eg:
            self.server._note_protocol_error(str(eg.exceptions[0]))
        except* _Drop as eg:
            self.server._note_protocol_error(str(eg.exceptions[0]))
        except* (trio.BrokenResourceError, trio.ClosedResourceError, _Closed):
            pass  # the client went away
        except* Exception as eg:
            # A bug behind one command must cost that client its connection, not the agent its
            # RPC server (bad input never kills the agent): log the traceback, serve the others.
            self.server._note_internal_error(eg)

    def _admitted(self) -> bool:
        return self.version != 0 and (self.authed or not self.api.rpc_auth)

    async def _admission_deadline(self) -> None:
        """Close the connection if it is not admitted within the server's ``admit_timeout``."""
        await trio.sleep(self.server.admit_timeout)
        if not self._admitted():
            raise _Drop(f"no handshake or auth within {self.server.admit_timeout:g} s")

    # -- input ----------------------------------------------------------------------------------

    async def _next(self) -> Any:
        while not self.inbox:
            data = await self.stream.receive_some(_RECV)
            if not data:
                return _EOF
            self.inbox.extend(self.reader.feed(data))
        return self.inbox.popleft()

    async def _body(self, command: str) -> dict[str, Any]:
        obj = await self._next()
        if obj is _EOF:
            raise _Closed
        return p.decode_request_body(command, obj)

    async def _read_loop(self) -> None:
        auth = self.api.rpc_auth
        while True:
            obj = await self._next()
            if obj is _EOF:
                return
            header = p.decode_request_header(obj)
            cmd, seq = header.command, header.seq
            if cmd != p.HANDSHAKE and self.version == 0:
                await self._reply(seq, p.ERR_HANDSHAKE_REQUIRED)
                return
            self.server._commands += 1  # counted where Serf counts agent.ipc.command
            if auth and not self.authed and cmd not in (p.HANDSHAKE, p.AUTH):
                if cmd in p.REQUEST_BODIES:
                    await self._body(cmd)  # consumed, unlike Serf (see module docstring)
                await self._reply(seq, p.ERR_AUTH_REQUIRED)
                continue
            if cmd not in p.COMMANDS:
                await self._reply(seq, p.ERR_UNSUPPORTED_COMMAND)
                return
            body = await self._body(cmd) if cmd in p.REQUEST_BODIES else {}
            if not await self._dispatch(cmd, seq, body):
                return
            if self._admitted():
                self.server._unadmitted.pop(self, None)

    # -- output ---------------------------------------------------------------------------------

    async def _reply(
        self, seq: int, error: str = "", body: Any = None, *, has_body: bool = False
    ) -> None:
        frame = p.encode_response(seq, error, body, has_body=has_body)
        async with self.send_lock:
            await self.stream.send_all(frame)

    async def _writer(self) -> None:
        async with self.out_recv:
            async for frame in self.out_recv:
                async with self.send_lock:
                    await self.stream.send_all(frame)

    def _offer(self, frame: bytes) -> bool:
        """Queue a droppable stream record; False if the queue is full (record dropped)."""
        try:
            self.out_send.send_nowait(frame)
        except trio.WouldBlock:
            self.server._note_drop()
            self.dropped += 1
            if self.dropped == 1:  # once per connection; the total is in statistics()
                self.server.log.warning("rpc_stream_records_dropped", reason="client reads slowly")
            return False
        return True

    # -- commands -------------------------------------------------------------------------------

    async def _dispatch(self, cmd: str, seq: int, body: dict[str, Any]) -> bool:
        """Run one command; False when the connection must close afterwards."""
        api = self.api
        error = ""
        if cmd == p.HANDSHAKE:
            if self.version:
                error = p.ERR_DUPLICATE_HANDSHAKE
            elif body["Version"] != p.IPC_VERSION:
                error = p.ERR_UNSUPPORTED_VERSION
            else:
                self.version = body["Version"]
            await self._reply(seq, error)
        elif cmd == p.AUTH:
            if hmac.compare_digest(body["AuthKey"].encode(), api.rpc_auth.encode()):
                self.authed = True
            else:
                error = p.ERR_INVALID_AUTH_TOKEN
            await self._reply(seq, error)
        elif cmd in (p.MEMBERS, p.MEMBERS_FILTERED):
            members = api.members()
            if cmd == p.MEMBERS_FILTERED:
                try:
                    members = filter_members(members, body["Name"], body["Status"], body["Tags"])
                except re.error as exc:
                    raise _Drop(f"invalid members-filtered regex: {exc}") from exc
            await self._reply(seq, "", p.members_body(members), has_body=True)
        elif cmd == p.JOIN:
            num = 0
            try:
                num = await api.join(body["Existing"], body["Replay"])
            except AgentError as exc:
                error = str(exc)
            await self._reply(seq, error, p.join_body(num), has_body=True)
        elif cmd == p.LEAVE:
            # Serf answers once the leave is over (ipc.go handleLeave), so the reply says
            # whether the others were told; a leave that timed out or was aborted is an error.
            # The agent stops afterwards, after a grace that lets this reply out.
            self.server.log.info("rpc_leave_requested")
            try:
                await api.leave()
            except AgentError as exc:
                error = str(exc)
                self.server.log.warning("rpc_leave_failed", error=error)
            await self._reply(seq, error)
            return False
        elif cmd in (p.FORCE_LEAVE, p.TAGS, p.EVENT, p.RESPOND):
            try:
                await self._simple(cmd, body)
            except AgentError as exc:
                error = str(exc)
            await self._reply(seq, error)
        elif cmd in (p.INSTALL_KEY, p.USE_KEY, p.REMOVE_KEY, p.LIST_KEYS):
            op = cmd.removesuffix("-key").removesuffix("-keys")
            try:
                kr = await api.key_operation(op, body.get("Key", ""))
            except AgentError as exc:
                kr = KeyResponse(keys=None, messages={}, num_nodes=0, num_resp=0, num_err=0,
                                 error=str(exc))  # fmt: skip
            await self._reply(seq, kr.error, p.key_response_body(kr), has_body=True)
        elif cmd == p.STATS:
            await self._reply(seq, "", p.stats_body(api.stats()), has_body=True)
        elif cmd == p.GET_COORDINATE:
            coord = api.get_coordinate(body["Node"])
            await self._reply(seq, "", p.coordinate_body(coord), has_body=True)
        elif cmd == p.STREAM:
            await self._start_stream(seq, body["Type"])
        elif cmd == p.MONITOR:
            await self._start_monitor(seq, body["LogLevel"])
        elif cmd == p.STOP:
            self._stop(body["Stop"])
            await self._reply(seq, "")
        else:  # cmd == p.QUERY (COMMANDS is closed)
            await self._start_query(seq, body)
        return True

    async def _simple(self, cmd: str, body: dict[str, Any]) -> None:
        api = self.api
        if cmd == p.FORCE_LEAVE:
            await api.force_leave(body["Node"], body["Prune"])
        elif cmd == p.TAGS:
            await api.set_tags(body["Tags"], body["DeleteTags"])
        elif cmd == p.EVENT:
            await api.user_event(body["Name"], body["Payload"], body["Coalesce"])
        else:
            token = self.queries.get(body["ID"])
            if token is None:
                raise AgentError(p.ERR_INVALID_QUERY_ID)
            await api.respond(token, body["Payload"])

    def _spawn(self, fn: Any, *args: Any) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(fn, *args)

    async def _start_stream(self, seq: int, spec: str) -> None:
        if not p.valid_event_filter(spec):
            await self._reply(seq, p.ERR_INVALID_FILTER)
            return
        if seq in self.streams:
            await self._reply(seq, p.ERR_STREAM_EXISTS)
            return
        try:
            it = self.api.events(spec)
        except AgentError as exc:
            await self._reply(seq, str(exc))
            return
        scope = trio.CancelScope()
        self.streams[seq] = scope
        await self._reply(seq, "")  # the ack precedes every record
        self._spawn(self._pump_events, seq, it, scope)

    async def _pump_events(self, seq: int, it: AsyncIterator[Any], scope: trio.CancelScope) -> None:
        try:
            with scope:
                async for rec in it:
                    qid = (
                        self._register_query(rec.token) if isinstance(rec, QueryEventRecord) else 0
                    )
                    frame = p.encode_response(
                        seq, "", p.event_record_to_wire(rec, qid), has_body=True
                    )
                    self._offer(frame)
        except AgentError as exc:
            self.server.log.warning("rpc_stream_failed", seq=seq, error=str(exc))
        finally:
            if self.streams.get(seq) is scope:
                del self.streams[seq]
            await _aclose(it)

    def _register_query(self, token: int) -> int:
        """ipc_event_stream.go: each query gets the next per-connection ID (from 1)."""
        qid = self.next_query_id
        self.next_query_id += 1
        self.queries[qid] = token
        while len(self.queries) > MAX_PENDING_QUERIES:
            self.queries.popitem(last=False)
        return qid

    async def _start_monitor(self, seq: int, level: str) -> None:
        level = level.upper()
        if level not in p.LOG_LEVELS:
            await self._reply(seq, p.err_unknown_log_level(level))
            return
        if self.monitor is not None:
            await self._reply(seq, p.ERR_MONITOR_EXISTS)
            return
        try:
            it = self.api.logs(level)
        except AgentError as exc:
            await self._reply(seq, str(exc))
            return
        scope = trio.CancelScope()
        self.monitor = (seq, scope)
        await self._reply(seq, "")
        self._spawn(self._pump_logs, seq, it, scope)

    async def _pump_logs(self, seq: int, it: AsyncIterator[str], scope: trio.CancelScope) -> None:
        try:
            with scope:
                async for line in it:
                    self._offer(p.encode_response(seq, "", p.log_record(line), has_body=True))
        except AgentError as exc:
            self.server.log.warning("rpc_monitor_failed", seq=seq, error=str(exc))
        finally:
            if self.monitor is not None and self.monitor[1] is scope:
                self.monitor = None
            await _aclose(it)

    def _stop(self, target: int) -> None:
        """``stop`` ends a monitor or an event stream of this connection; always succeeds."""
        if self.monitor is not None and self.monitor[0] == target:
            self.monitor[1].cancel()
            self.monitor = None
        scope = self.streams.pop(target, None)
        if scope is not None:
            scope.cancel()

    async def _start_query(self, seq: int, body: dict[str, Any]) -> None:
        params = QueryParams(
            name=body["Name"],
            payload=body["Payload"],
            filter_nodes=tuple(body["FilterNodes"]),
            filter_tags=body["FilterTags"],
            request_ack=body["RequestAck"],
            relay_factor=body["RelayFactor"],
            timeout=body["Timeout"] / _NS,  # time.Duration: int64 nanoseconds
        )
        try:
            it = self.api.query(params)
        except AgentError as exc:
            await self._reply(seq, str(exc))
            return
        await self._reply(seq, "")
        self._spawn(self._pump_query, seq, it)

    async def _pump_query(self, seq: int, it: AsyncIterator[Any]) -> None:
        done = False
        try:
            async for rec in it:
                frame = p.encode_response(seq, "", p.query_record_to_wire(rec), has_body=True)
                # Acks and responses are few (one per node) and matter: wait for room instead
                # of dropping; this only slows this query's iterator, never the agent.
                await self.out_send.send(frame)
                if rec.type == "done":
                    done = True
                    break
        except AgentError as exc:
            self.server.log.warning("rpc_query_failed", seq=seq, error=str(exc))
        finally:
            await _aclose(it)
        if not done:
            # Clients wait for exactly one "done" record (RPC.md 4.2).
            frame = p.encode_response(
                seq, "", p.query_record_to_wire(QueryRecord(type="done")), has_body=True
            )
            await self.out_send.send(frame)
