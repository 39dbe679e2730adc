"""Fixtures for the end-to-end tier: real ``serf-trio agent`` and real ``serf agent`` processes.

Everything here runs on 127.0.0.1 with ports this module hands out (UDP and TCP free at
allocation time, never handed out twice in one session).  Each agent:

* runs in its own process group (``start_new_session``), so cleanup can SIGKILL the agent and
  every handler script it started, whatever the test did;
* writes stdout and stderr to files in ``tmp_path`` (``NAME.out`` / ``NAME.err``);
* runs the event-handler script written by :func:`handler_script`, which appends one line per
  event to ``NAME.events`` (so tests count handler runs by reading that file).

Waiting is always :func:`wait_for` (poll a condition until a deadline), never a fixed sleep; a
check that something does *not* happen first makes its causes happen and waits for them (a
join with replay, :func:`wait_drained`, a barrier event behind the one that must not rerun).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import helpers
import pytest
from helpers import free_port

from serf_trio.rpc.api import KeyResponse, RpcMember
from serf_trio.rpc.client import RpcClient, RpcError

T = TypeVar("T")

HOST = "127.0.0.1"
WAIT = 20.0  # default deadline of every wait_for
CLI_TIMEOUT = 30.0  # deadline of one CLI command
SERF = shutil.which("serf") or "/usr/bin/serf"

# The handler every agent runs (Serf's contract, RPC.md 7).  One line per event, fields split
# by '|': self name, SERF_EVENT, user event or query name, its LTime, `cksum` of stdin exactly
# as received (CRC:byte count: a payload arrived whole, newline appended), and the member names
# for member events.  A query gets "answer-from-NAME" as its response.  Two user events exercise the
# failure paths: "crash" exits 7 without writing a line, "hang" sleeps far past any timeout.
HANDLER = r"""#!/bin/sh
out="$1"
case "$SERF_USER_EVENT" in
  crash) echo "crashing on purpose" >&2; exit 7 ;;
  hang) exec sleep 600 ;;
esac
body=$(cat; echo x)  # keep trailing newlines: the payload arrives with one appended
body=${body%x}
sum=$(printf '%s' "$body" | cksum | tr ' ' ':')
members=""
case "$SERF_EVENT" in
  member-*) members=$(printf '%s' "$body" | cut -f1 | sort | tr '\n' ',') ;;
esac
printf '%s|%s|%s|%s|%s|%s\n' "$SERF_SELF_NAME" "$SERF_EVENT" \
  "$SERF_USER_EVENT$SERF_QUERY_NAME" "$SERF_USER_LTIME$SERF_QUERY_LTIME" "$sum" "$members" \
  >> "$out"
if [ "$SERF_EVENT" = query ]; then
  printf 'answer-from-%s' "$SERF_SELF_NAME"
fi
exit 0
"""


def handler_script(tmp_path: Path) -> Path:
    path = tmp_path / "handler.sh"
    if not path.exists():
        path.write_text(HANDLER)
        path.chmod(0o755)
    return path


# -- waiting (ports and polling: ``helpers``) ----------------------------------------------


def wait_for(
    cond: Callable[[], T | None], what: str, timeout: float = WAIT, interval: float = 0.05
) -> T:
    """:func:`helpers.wait_for` with this suite's default deadline."""
    return helpers.wait_for(cond, what, timeout, interval)


def wait_each(
    agents: Sequence[Agent], cond: Callable[[Agent], object], what: str, timeout: float = WAIT
) -> None:
    """:func:`wait_for` ``cond(agent)`` for every agent in turn (one deadline each)."""
    for a in agents:
        wait_for(functools.partial(cond, a), f"{a.name}: {what}", timeout)


def wait_drained(agents: Sequence[Agent], timeout: float = WAIT) -> None:
    """Wait until none of ``agents`` has a Serf broadcast queued (RPC ``stats``), all at once:
    nothing sent before can still arrive by gossip (:func:`helpers.broadcasts_drained`)."""
    wait_for(
        lambda: helpers.broadcasts_drained(a.stats() for a in agents),
        "no broadcast left to gossip",
        timeout,
    )


# -- CLI helpers -------------------------------------------------------------------------------


def serf_trio_cli() -> list[str]:
    """The installed ``serf-trio`` script of this venv (else ``python -m serf_trio.cli``)."""
    script = Path(sys.executable).parent / "serf-trio"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "serf_trio.cli"]


def run(cmd: Sequence[str], timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run one command to completion (bounded), capturing text output."""
    return subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# A key operation (Serf's KeyManager: an internal query) that some member did not answer in
# time: Serf's "N/M nodes reported success" (serf and serf-trio CLIs alike), or serf-trio's
# --remove check that could not list every member's keys.
_UNANSWERED = re.compile(r"\b\d+/\d+ nodes reported success\b|members listed their keys")
KEY_OP_ATTEMPTS = 3


def key_op_unanswered(proc: subprocess.CompletedProcess[str]) -> bool:
    """Whether a ``keys`` command failed only because some member did not answer."""
    return proc.returncode != 0 and bool(_UNANSWERED.search(proc.stdout + proc.stderr))


def rerun_key_op(
    run: Callable[[], subprocess.CompletedProcess[str]], attempts: int = KEY_OP_ATTEMPTS
) -> subprocess.CompletedProcess[str]:
    """Run a ``keys`` command again while some member did not answer it (at most ``attempts``
    runs); the last result.

    A query reaches each member by gossip, and Serf retransmits each broadcast only
    RetransmitMult * ceil(log10(N + 1)) times per node (4 on the LAN profile up to 9 nodes), so
    in a 5-node cluster a query misses one member now and then: measured here at about 1 in 400
    key queries on an idle machine and 1 in 100 on a loaded one, for the real serf agent and
    serf-trio alike.  Every key operation is idempotent (installing a key already there, using
    the primary key and removing a key already gone all succeed without a change), so running
    it again is what an operator does; a member that *refuses* is never retried away.
    """
    proc = run()
    for _ in range(attempts - 1):
        if not key_op_unanswered(proc):
            break
        proc = run()
    return proc


def need_serf() -> str:
    if not os.access(SERF, os.X_OK):
        pytest.skip("the real serf binary is not installed")
    return SERF


# -- agents -----------------------------------------------------------------------------------


@dataclass
class Agent:
    """One running agent process (serf-trio or the real serf)."""

    kind: str  # "trio" | "serf"
    name: str
    port: int  # gossip port (UDP and TCP) on 127.0.0.1
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    events_file: Path
    argv: list[str]
    rpc_socket: Path | None = None
    rpc_addr: str | None = None  # HOST:PORT of TCP RPC when enabled

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    # RPC (the project's client: fast, and it speaks to either agent kind)

    def client(self, timeout: float = 5.0) -> RpcClient:
        if self.rpc_socket is not None:
            return RpcClient(socket_path=str(self.rpc_socket), timeout=timeout)
        return RpcClient(addr=self.rpc_addr, timeout=timeout)

    def members(self) -> list[RpcMember]:
        with self.client() as c:
            return c.members()

    def statuses(self) -> dict[str, str]:
        """``{name: status}`` as this agent sees the cluster ({} if it cannot answer)."""
        try:
            return {m.name: m.status for m in self.members()}
        except (OSError, RpcError):
            return {}

    def sees(self, **expected: str) -> bool:
        got = self.statuses()
        return all(got.get(n) == s for n, s in expected.items())

    def stats(self) -> dict[str, dict[str, str]]:
        """RPC ``stats`` (serf-trio's include an ``encryption`` section)."""
        with self.client() as c:
            return c.stats()

    def encryption(self) -> dict[str, str]:
        """serf-trio's ``encryption`` stats section (encrypted, algorithm, keys, counters)."""
        return self.stats()["encryption"]

    def list_keys(self) -> KeyResponse:
        """RPC ``list-keys`` through this agent (either kind: the RPC is Serf's), asked again
        while some member did not answer and none refused (see :func:`rerun_key_op`)."""
        for _ in range(KEY_OP_ATTEMPTS):
            with self.client(timeout=CLI_TIMEOUT) as c:
                resp = c.list_keys()
            if resp.num_err or resp.num_resp >= resp.num_nodes:
                break
        return resp

    def sighup(self) -> None:
        """Ask the agent to reload its configuration (the agent process itself, not its
        handlers: ``proc`` is the agent)."""
        self.proc.send_signal(signal.SIGHUP)

    # CLI

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``serf-trio ARGS`` pointed at this agent (Unix socket, else TCP)."""
        if self.rpc_socket is not None:
            target = ["--rpc-socket", str(self.rpc_socket)]
        else:
            assert self.rpc_addr is not None
            target = ["--rpc-addr", self.rpc_addr]
        return run([*serf_trio_cli(), *args, *target], timeout=timeout)

    def serf_cli(
        self, *args: str, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """The real ``serf ARGS -rpc-addr=...`` pointed at this agent's TCP RPC."""
        assert self.rpc_addr is not None, f"{self.name} has no TCP RPC"
        sub, *rest = args
        return run([need_serf(), sub, f"-rpc-addr={self.rpc_addr}", *rest], timeout=timeout)

    # Handler output

    def handler_lines(self) -> list[list[str]]:
        """Every line the handler wrote so far, split into its fields."""
        if not self.events_file.exists():
            return []
        return [line.split("|") for line in self.events_file.read_text().splitlines()]

    def user_events(self, name: str) -> list[list[str]]:
        return [f for f in self.handler_lines() if f[1] == "user" and f[2] == name]

    def queries(self, name: str) -> list[list[str]]:
        return [f for f in self.handler_lines() if f[1] == "query" and f[2] == name]

    def member_events(self, kind: str, member: str) -> list[list[str]]:
        return [f for f in self.handler_lines() if f[1] == kind and member in f[5].split(",")]

    # Logs

    def output_lines(self) -> list[str]:
        return [
            line
            for path in (self.out, self.err)
            if path.exists()
            for line in path.read_text(errors="replace").splitlines()
        ]

    def json_logs(self) -> list[dict[str, Any]]:
        """Every stdout/stderr line parsed as a JSON object (the test fails on any other)."""
        recs = []
        for line in self.output_lines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AssertionError(f"{self.name}: output line is not JSON: {line!r}") from exc
            assert isinstance(rec, dict), line
            recs.append(rec)
        return recs

    def logs_with(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.json_logs() if r.get("event") == event]

    # Process

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the agent and its handler scripts (its whole process group)."""
        _killpg(self.proc)
        self.proc.wait(timeout=WAIT)

    def describe(self) -> str:
        tail = "\n".join(self.output_lines()[-15:])
        return f"{self.kind} agent {self.name} (rc={self.proc.poll()}):\n{tail}"


MARKER_VAR = "SERF_TRIO_E2E_CLUSTER"  # set for every agent; its handler scripts inherit it


def marked_processes(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds ``marker`` (``VAR=value``)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in env.split(b"\0"):
            found.append(int(pid))
    return found


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid


@dataclass
class Cluster:
    """Starts agents for one test (or one module) and always kills them all afterwards."""

    dir: Path
    agents: list[Agent] = field(default_factory=list)

    def _spawn(
        self, kind: str, name: str, port: int, argv: list[str], env: dict[str, str] | None
    ) -> Agent:
        n = sum(1 for a in self.agents if a.name == name)
        suffix = f".{n}" if n else ""  # a restarted agent keeps its handler file, not its logs
        out = self.dir / f"{name}{suffix}.out"
        err = self.dir / f"{name}{suffix}.err"
        full_env = dict(os.environ)
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "SERF_RPC_ADDR", "SERF_TRIO_RPC_SOCKET"):
            full_env.pop(var, None)
        full_env.update(env or {})
        full_env[MARKER_VAR] = str(self.dir)
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                argv,
                stdout=o,
                stderr=e,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=self.dir,
                start_new_session=True,
            )
        agent = Agent(kind, name, port, proc, out, err, self.dir / f"{name}.events", argv)
        self.agents.append(agent)
        return agent

    def trio(
        self,
        name: str,
        *extra: str,
        join: Sequence[Agent] = (),
        port: int | None = None,
        profile: str | None = "local",
        handlers: Sequence[str] | None = None,
        rpc_addr: bool = False,
        env: dict[str, str] | None = None,
        ready: bool = True,
    ) -> Agent:
        """Start ``serf-trio agent`` (``python -m serf_trio.agent``) named ``name``.

        ``handlers`` defaults to the logging handler for every event; ``join`` agents are
        passed as ``--join``; ``ready`` waits until the agent answers RPC and lists itself
        alive (and every ``join`` agent, if any).
        """
        port = port or free_port()
        script = handler_script(self.dir)
        events = self.dir / f"{name}.events"
        if handlers is None:
            handlers = [f"sh {script} {events}"]
        argv = [
            sys.executable,
            "-m",
            "serf_trio.agent",
            f"--node={name}",
            f"--bind={HOST}:{port}",
            f"--rpc-socket={self.dir / (name + '.sock')}",
            "--log-format=json",
            "--log-level=debug",
        ]
        if profile is not None:
            argv.append(f"--profile={profile}")
        rpc = None
        if rpc_addr:
            rpc = f"{HOST}:{free_port()}"
            argv.append(f"--rpc-addr={rpc}")
        argv += [f"--event-handler={h}" for h in handlers]
        argv += [f"--join={a.addr}" for a in join]
        argv += list(extra)
        agent = self._spawn("trio", name, port, argv, env)
        agent.rpc_socket = self.dir / (name + ".sock")
        agent.rpc_addr = rpc
        if ready:
            self.wait_ready(agent, *join)
        return agent

    def restart(self, old: Agent, *, argv: list[str] | None = None, ready: bool = True) -> Agent:
        """Start ``old``'s command line again (same name, port, socket, handler file)."""
        assert not old.alive(), "stop the old process first"
        new = self._spawn(old.kind, old.name, old.port, argv or old.argv, None)
        new.rpc_socket, new.rpc_addr = old.rpc_socket, old.rpc_addr
        if ready:
            self.wait_ready(new)
        return new

    def serf(
        self,
        name: str,
        *extra: str,
        join: Sequence[Agent] = (),
        handlers: Sequence[str] | None = None,
        ready: bool = True,
    ) -> Agent:
        """Start the real ``serf agent`` (default LAN profile) with TCP RPC and the handler."""
        binary = need_serf()
        port = free_port()
        rpc = f"{HOST}:{free_port()}"
        script = handler_script(self.dir)
        events = self.dir / f"{name}.events"
        if handlers is None:
            handlers = [f"sh {script} {events}"]
        argv = [
            binary,
            "agent",
            f"-node={name}",
            f"-bind={HOST}:{port}",
            f"-rpc-addr={rpc}",
            "-log-level=debug",
        ]
        argv += [f"-event-handler={h}" for h in handlers]
        argv += [f"-join={a.addr}" for a in join]
        argv += list(extra)
        agent = self._spawn("serf", name, port, argv, None)
        agent.rpc_addr = rpc
        if ready:
            self.wait_ready(agent, *join)
        return agent

    def wait_ready(self, agent: Agent, *peers: Agent, timeout: float = WAIT) -> None:
        def up() -> bool:
            if not agent.alive():
                raise AssertionError(f"agent exited during start\n{agent.describe()}")
            return agent.sees(**{agent.name: "alive"}, **{p.name: "alive" for p in peers})

        try:
            wait_for(up, f"{agent.name} ready", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{agent.describe()}") from None

    def converge(self, agents: Sequence[Agent], timeout: float = WAIT, **expected: str) -> None:
        """Wait until every agent in ``agents`` sees every ``expected`` name in that status."""
        wait_each(agents, lambda a: a.sees(**expected), f"to see {expected}", timeout)

    def all_alive(self, agents: Sequence[Agent], timeout: float = WAIT) -> None:
        self.converge(agents, timeout, **{a.name: "alive" for a in agents})

    def close(self) -> None:
        for a in self.agents:
            _killpg(a.proc)
        # Handler scripts run in their own sessions (so a timeout can kill a script's whole
        # group); the ones a killed agent left behind are found by the inherited marker.
        for pid in marked_processes(f"{MARKER_VAR}={self.dir}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for a in self.agents:
            with contextlib.suppress(subprocess.TimeoutExpired):
                a.proc.wait(timeout=WAIT)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
