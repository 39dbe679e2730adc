"""The event handler supervisor: runs handler scripts for Serf events, with hard limits.

Serf's contract (``serf_trio.serf.handler_env``): each matching handler runs as
``/bin/sh -c COMMAND`` with the agent's environment plus the ``SERF_*`` variables, the event on
stdin, stdout+stderr in one 8 KiB buffer that keeps the last bytes; a query handler that exits 0
with output answers the query.

Better than Serf, whose handlers run one after another in the agent's event loop with no
timeout (one hanging script stalls every later event):

* every handler has its own bounded queue and worker task: different handlers run
  concurrently, one handler's events run one at a time in arrival order;
* a ``CapacityLimiter`` bounds the number of scripts running at once;
* each run has a timeout: SIGTERM to the script's process group, ``kill_grace`` seconds, then
  SIGKILL to the group;
* failures are logged with the exit code and the tail of the output (stdout and stderr share
  one pipe, as in Serf, so a script's error message is the end of it);
* ``enqueue`` never waits: a full queue drops a user event or query for that handler, counts
  and logs it, so nothing here can block membership.  Member events are never dropped (the
  delivery contract): one that finds the queue full waits beside it and runs next.

Queues (one per handler): producer ``enqueue`` (the agent's event task), consumer the handler's
worker, size ``SupervisorConfig.queue_size``, full policy drop + count + ``handler_queue_full``
for user events and queries; member events that find it full go to ``members_waiting``, which
the worker empties before it takes the next queued event (bounded by the member-event batches
the coalescer can emit while one run lasts, at most ``timeout`` + ``kill_grace``).

Reload (``update``): handlers are identified by their spec text; unchanged ones keep their
queue and worker, new ones start, removed ones get no new events and finish what is queued.

Logs (structlog), each with the handler's spec (``handler``): ``handler_started`` (debug),
``handler_exited`` (info: exit status, duration and the output's last ``OUTPUT_TAIL`` bytes),
``handler_failed``, ``handler_timeout``, ``handler_output_truncated``, ``handler_queue_full``,
``handler_spawn_failed``, ``handler_response_too_large``, ``handler_response_rejected``, and
``handler_not_runnable`` (``check_commands``: at start and on every reload, a handler whose
command's first word a shell could not run: a path that does not exist or is not executable,
a bare word not on ``PATH``).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import trio

from serf_trio.record import record
from serf_trio.serf.filters import QueryEventLike, event_type_and_name
from serf_trio.serf.handler_env import OUTPUT_LIMIT, OutputBuffer, handler_env, handler_stdin

SHELL = "/bin/sh"
OUTPUT_TAIL = 512  # bytes of output quoted in handler_failed / handler_timeout

RespondFn = Callable[[object, bytes], "Awaitable[None] | None"]


class _FilterLike(Protocol):
    def matches(self, event_type: str, name: str = "") -> bool: ...


class HandlerSpecLike(Protocol):
    """A handler spec: ``serf_trio.serf.filters.HandlerSpec`` (or the agent config's)."""

    @property
    def filter(self) -> _FilterLike: ...

    @property
    def command(self) -> str: ...

    @property
    def text(self) -> str: ...


class ResponseRejected(Exception):
    """Raised by the ``respond`` callback when the core refuses a response (text = reason)."""


@record
class SupervisorConfig:
    """Limits of the handler supervisor.

    ``timeout``: seconds one run may take before SIGTERM (Serf: none; a hanging script would
    stall the agent forever).  ``kill_grace``: seconds between SIGTERM and SIGKILL.
    ``queue_size``: events waiting per handler before new ones are dropped (a join storm of
    N nodes yields about one coalesced event per type every 3 s, so 128 is ample).
    ``max_concurrency``: scripts running at once over all handlers.
    ``output_limit``: bytes of output kept (Serf: 8 KiB, the last bytes).
    ``max_response``: largest query response payload to hand to ``respond`` (None: let the
    core decide; see ``serf_trio.serf.handler_env.max_response_payload``).
    """

    timeout: float = 60.0
    kill_grace: float = 3.0
    queue_size: int = 128
    max_concurrency: int = 16
    output_limit: int = OUTPUT_LIMIT
    max_response: int | None = None


@record
class HandlerStatistics:
    """Counters of one handler (``serf-trio info``, tests)."""

    spec: str
    queued: int
    runs: int
    failures: int
    timeouts: int
    dropped: int
    truncated: int
    responses: int


@dataclass(slots=True)
class _Handler:
    key: tuple[str, int]
    spec: HandlerSpecLike
    send: trio.MemorySendChannel[object]
    receive: trio.MemoryReceiveChannel[object]
    started: bool = False
    runs: int = 0
    failures: int = 0
    timeouts: int = 0
    dropped: int = 0
    truncated: int = 0
    responses: int = 0
    # Member events that found the queue full (never dropped; see ``enqueue``).
    members_waiting: deque[object] = field(default_factory=deque)


@record
class RunResult:
    """What one handler run did (returned for tests and logs)."""

    exit_code: int | None  # None: could not start
    timed_out: bool
    output: bytes
    output_total: int
    duration: float

    @property
    def output_tail(self) -> bytes:
        return self.output[-OUTPUT_TAIL:]


# Words /bin/sh runs itself (POSIX special and regular builtins, keywords and common extras):
# nothing to look for on PATH.
_SHELL_WORDS = frozenset(
    (
        *("!", ".", ":", "[", "{", "(", "alias", "bg", "break", "case", "cd", "command"),
        *("continue", "echo", "eval", "exec", "exit", "export", "false", "fc", "fg", "for"),
        *("getopts", "hash", "if", "jobs", "kill", "local", "printf", "pwd", "read"),
        *("readonly", "return", "set", "shift", "source", "test", "time", "times", "trap"),
        *("true", "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while"),
    )
)
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_SHELL_SYNTAX = set("$`*?[](){};|&<>")


def command_problem(
    command: str, path_var: str | None = None, cwd: str | None = None
) -> str | None:
    """Why ``/bin/sh -c command`` could not start its first word, or ``None`` if it looks
    runnable (or cannot be judged without running a shell: expansions, syntax, builtins).

    Resolved as a shell would: leading ``VAR=value`` words are skipped; a word with a ``/`` is
    a path (relative to ``cwd``) that must exist, not be a directory and be executable; a bare
    word is looked up on ``path_var`` (default: this process's ``PATH``).
    """
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return None  # unbalanced quotes: the shell's own error says it best
    while words and _ASSIGNMENT.match(words[0]):
        words.pop(0)
    if not words:
        return None
    word = words[0]
    if word in _SHELL_WORDS or _SHELL_SYNTAX.intersection(word):
        return None
    if "/" in word:
        path = os.path.join(cwd or os.getcwd(), os.path.expanduser(word))
        if not os.path.exists(path):
            return f"{word} does not exist"
        if os.path.isdir(path):
            return f"{word} is a directory"
        if not os.access(path, os.X_OK):
            return f"{word} is not executable (chmod +x, or run it through sh)"
        return None
    search = path_var if path_var is not None else os.environ.get("PATH", os.defpath)
    if shutil.which(word, path=search) is None:
        return f"{word} is not found on PATH"
    return None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The script runs in its own session, so its process group id is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class HandlerSupervisor:
    """Runs handler scripts for Serf events; see the module docstring for the guarantees.

    Usage: ``await nursery.start(supervisor.run)``; then ``supervisor.enqueue(event)`` for every
    (coalesced) Serf event; ``supervisor.update(specs)`` on SIGHUP; ``set_self_tags`` when the
    local tags change.  ``respond(token, payload)`` is called (and awaited if it returns an
    awaitable) with a query handler's output.
    """

    def __init__(
        self,
        specs: Iterable[HandlerSpecLike],
        *,
        self_name: str,
        self_tags: Mapping[str, str] | None = None,
        respond: RespondFn | None = None,
        config: SupervisorConfig | None = None,
        logger: Any = None,
    ) -> None:
        self.config = config or SupervisorConfig()
        self.self_name = self_name
        self.self_tags: dict[str, str] = dict(self_tags or {})
        self._respond = respond
        self._log: Any = logger if logger is not None else structlog.get_logger()
        self._limiter = trio.CapacityLimiter(self.config.max_concurrency)
        self._handlers: dict[tuple[str, int], _Handler] = {}
        self._nursery: trio.Nursery | None = None
        self.update(specs)

    # --- control ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until cancelled; running scripts are killed on cancellation."""
        self.check_commands()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for h in self._handlers.values():
                    self._start_worker(h)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def update(self, specs: Iterable[HandlerSpecLike]) -> None:
        """Replace the handler list (reload); unchanged specs keep their queue and order."""
        wanted: dict[tuple[str, int], HandlerSpecLike] = {}
        seen: dict[str, int] = {}
        for spec in specs:
            text = spec.text
            n = seen.get(text, 0)
            seen[text] = n + 1
            wanted[(text, n)] = spec
        for key in list(self._handlers):
            if key not in wanted:
                h = self._handlers.pop(key)
                h.send.close()  # the worker finishes what is queued, then exits
        for key, spec in wanted.items():
            if key not in self._handlers:
                send, receive = trio.open_memory_channel[object](self.config.queue_size)
                h = _Handler(key, spec, send, receive)
                self._handlers[key] = h
                if self._nursery is not None:
                    self._start_worker(h)

    def check_commands(self) -> list[str]:
        """Warn (``handler_not_runnable``) about each handler whose command could not start
        (``command_problem``); called by ``run`` and on every reload.  The reasons found."""
        problems = []
        for h in self._handlers.values():
            why = command_problem(h.spec.command)
            if why is not None:
                problems.append(why)
                self._log.warning(
                    "handler_not_runnable",
                    handler=h.spec.text,
                    reason=why,
                    hint="its events will fail until the script is fixed (a SIGHUP re-checks)",
                )
        return problems

    def set_self_tags(self, tags: Mapping[str, str]) -> None:
        """The local tags changed (``serf tags``): later runs see the new ``SERF_TAG_*``."""
        self.self_tags = dict(tags)

    def enqueue(self, event: object) -> int:
        """Queue ``event`` for every matching handler without waiting; returns how many."""
        kind = event_type_and_name(event)
        if kind is None:
            return 0
        queued = 0
        for h in self._handlers.values():
            if not h.spec.filter.matches(*kind):
                continue
            try:
                h.send.send_nowait(event)
            except trio.WouldBlock:
                if kind[0].startswith("member-"):
                    # The delivery contract: member events are never dropped.  A full queue is
                    # full of user events or queries (member events reach us coalesced, a few
                    # batches a second at most), so a member event waits beside it and the
                    # worker takes it next.  What waits is bounded by how long one run may
                    # take (the timeout), not by the event rate.
                    h.members_waiting.append(event)
                    queued += 1
                    continue
                h.dropped += 1
                self._log.warning(
                    "handler_queue_full",
                    handler=h.spec.text,
                    serf_event=kind[0],
                    name=kind[1],
                    dropped=h.dropped,
                    queue_size=self.config.queue_size,
                )
            else:
                queued += 1
        return queued

    def statistics(self) -> list[HandlerStatistics]:
        return [
            HandlerStatistics(
                spec=h.spec.text,
                queued=h.send.statistics().current_buffer_used + len(h.members_waiting),
                runs=h.runs,
                failures=h.failures,
                timeouts=h.timeouts,
                dropped=h.dropped,
                truncated=h.truncated,
                responses=h.responses,
            )
            for h in self._handlers.values()
        ]

    # --- workers ---------------------------------------------------------------------------

    def _start_worker(self, h: _Handler) -> None:
        if h.started or self._nursery is None:
            return
        h.started = True
        self._nursery.start_soon(self._worker, h, name=f"handler {h.spec.text}")

    async def _worker(self, h: _Handler) -> None:
        async with h.receive:
            while True:
                if h.members_waiting:  # member events that found the queue full go first
                    await self._handle(h, h.members_waiting.popleft())
                    continue
                try:
                    event = await h.receive.receive()
                except trio.EndOfChannel:
                    break
                await self._handle(h, event)
        while h.members_waiting:  # removed by a reload: finish what is waiting too
            await self._handle(h, h.members_waiting.popleft())

    async def _handle(self, h: _Handler, event: object) -> None:
        kind = event_type_and_name(event) or ("", "")
        log = self._log.bind(handler=h.spec.text, serf_event=kind[0], name=kind[1])
        env = {**os.environ, **handler_env(self.self_name, self.self_tags, event)}
        async with self._limiter:
            ltime = getattr(event, "ltime", None)
            log.debug("handler_started", **({"ltime": ltime} if ltime is not None else {}))
            result = await self.run_script(h.spec.command, env, handler_stdin(event), log)
        h.runs += 1
        if result.output_total > self.config.output_limit:
            h.truncated += 1
            log.warning(
                "handler_output_truncated",
                written=result.output_total,
                kept=self.config.output_limit,
            )
        if result.timed_out:
            h.timeouts += 1
            log.warning(
                "handler_timeout",
                timeout=self.config.timeout,
                output_tail=_text(result.output_tail),
                duration=round(result.duration, 3),
            )
            return
        if result.exit_code != 0:
            h.failures += 1
            code = result.exit_code
            if code is None:
                return  # it could not start: handler_spawn_failed said why
            # A negative code is the signal that ended the script (a crash, an OOM kill).
            how = {"signal": signal.Signals(-code).name} if code < 0 else {}
            log.error(
                "handler_failed",
                exit_code=code,
                **how,
                output_tail=_text(result.output_tail),
                duration=round(result.duration, 3),
            )
            return
        # Every run's output is logged (capped to its last OUTPUT_TAIL bytes), as Serf logs a
        # script's output.
        out = {"output": _text(result.output_tail)} if result.output_total else {}
        log.info(
            "handler_exited",
            exit_code=0,
            output_bytes=result.output_total,
            **out,
            duration=round(result.duration, 3),
        )
        if (
            isinstance(event, QueryEventLike)
            and result.output_total > 0
            and await self._send_response(event, result.output, log)
        ):
            h.responses += 1

    async def _send_response(self, event: QueryEventLike, payload: bytes, log: Any) -> bool:
        # serf invoke.go: a query handler that exits 0 with output answers with that output.
        limit = self.config.max_response
        if limit is not None and len(payload) > limit:
            log.warning("handler_response_too_large", size=len(payload), limit=limit)
            return False
        if self._respond is None:
            return False
        try:
            maybe = self._respond(event.token, payload)
            if inspect.isawaitable(maybe):
                await maybe
        except ResponseRejected as exc:
            log.warning("handler_response_rejected", reason=str(exc), size=len(payload))
            return False
        return True

    # --- one process -----------------------------------------------------------------------

    async def run_script(
        self, command: str, env: Mapping[str, str], stdin: bytes, log: Any = None
    ) -> RunResult:
        """Run ``/bin/sh -c command`` once with the configured timeout and output cap."""
        log = log if log is not None else self._log
        cfg = self.config
        output = OutputBuffer(cfg.output_limit)
        start = trio.current_time()
        try:
            proc = await trio.lowlevel.open_process(
                [SHELL, "-c", command],
                stdin=subprocess.PIPE,
                # One pipe for both, as Go does when Stdout and Stderr are the same writer:
                # the output keeps the order the script wrote it in.
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,  # own process group: the timeout kills its children too
            )
        except OSError as exc:
            log.error("handler_spawn_failed", error=str(exc))
            return RunResult(None, False, b"", 0, 0.0)

        async def feed() -> None:
            assert proc.stdin is not None
            async with proc.stdin:
                try:
                    if stdin:
                        await proc.stdin.send_all(stdin)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the script exited or closed stdin without reading it all

        async def drain() -> None:
            assert proc.stdout is not None
            async with proc.stdout:
                while chunk := await proc.stdout.receive_some(65536):
                    output.write(chunk)

        timed_out = False
        try:
            with trio.move_on_at(start + cfg.timeout) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feed)
                    nursery.start_soon(drain)
                    await proc.wait()
            if scope.cancelled_caught:
                timed_out = True
                # Timeout: SIGTERM the group, wait kill_grace, then SIGKILL whatever is left.
                _signal_group(proc.pid, signal.SIGTERM)
                with trio.move_on_after(cfg.kill_grace):
                    await proc.wait()
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        finally:
            if proc.returncode is None:
                # Cancelled (agent shutdown) mid-run: do not leave the script behind.
                _signal_group(proc.pid, signal.SIGKILL)
                with trio.CancelScope(shield=True):
                    await proc.wait()
        return RunResult(
            exit_code=proc.returncode,
            timed_out=timed_out,
            output=output.getvalue(),
            output_total=output.total,
            duration=trio.current_time() - start,
        )


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")
