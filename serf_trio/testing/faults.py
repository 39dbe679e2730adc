"""A fault kit for real agent processes: a network of namespaces whose links can lose packets
or be cut, agents of either implementation on it, and ways to freeze and starve them.

Why a kit, and why namespaces.  The seeded simulator shows the protocol holds under loss and
partitions; this shows that the real processes (serf-trio's and HashiCorp Serf's, side by
side) do.  Each agent gets its own network namespace with one address, so a partition is a
packet filter between addresses rather than a change to the agents.

The network (:class:`Fabric`):

* one *hub* namespace holds a Linux bridge with the address ``.254`` of a random
  ``10.253.X.0/24``; the harness enters it (:func:`entered`) to reach every agent's RPC;
* each host namespace ``i`` holds one end of a veth pair (``eth0``, address ``.i``) whose other
  end is on the bridge;
* each host filters what it *receives* with an nftables table: traffic from the hub is always
  accepted (so the harness never loses an RPC), packets from addresses in the set ``cut`` are
  dropped (partitions), and the chain ``loss`` drops a random share
  (``numgen random mod 1000 < K``).  A packet between two agents passes exactly one input
  filter, the receiver's, so a loss of 10 % is 10 % each way, for UDP and TCP alike.

This kernel has no ``netem``: the kit makes loss and cuts, never delay.  Delay is the in-memory
network's job (:mod:`serf_trio.testing.netmodel`).

Agents (:class:`Cluster`) run as ``ip netns exec NS <agent>``, which execs the agent itself, so
the process we hold is the agent: ``SIGSTOP`` freezes it.  Every agent is in its own process
group and every group is killed in :meth:`Cluster.close`; busy loops (:func:`spin`) end by
themselves and are killed too.  What the agents did is read from their logs
(:func:`tally_log`): serf-trio's JSON lines and Serf's text lines are counted the same way
(members marked failed, by whom; suspicions raised; accusations refuted).

Needs root, ``ip`` and ``nft`` (Debian's ``iproute2`` and ``nftables``); :func:`unavailable`
says why not, so tests can skip cleanly.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from serf_trio.rpc.client import RpcClient, RpcError

SERF_PORT = 7946  # every agent binds its own address, so all use Serf's default ports
RPC_PORT = 7373
CLONE_NEWNET = 0x40000000  # <sched.h>
IMPLS = ("serf-trio", "serf")
HUB_HOST = 254
RPC_TIMEOUT = 2.0
T = TypeVar("T")


def _run(argv: Sequence[str], stdin: str | None = None) -> None:
    r = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.returncode}")


def unavailable() -> str | None:
    """Why namespaces with nftables cannot be made here, or None if they can."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command (apt-get install iproute2 nftables)"
    probe = f"stf-probe-{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
    except (RuntimeError, OSError) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _run(["ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe"])
    except (RuntimeError, OSError) as exc:
        return f"nftables does not work in a namespace: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
    return None


# -- entering a namespace -------------------------------------------------------------------------

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the body with this thread in network namespace ``ns``.  Sockets made inside stay in
    ``ns`` for their whole life, wherever they are used later (Linux: a socket belongs to the
    namespace it was created in), so a client connected here can be used outside."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


# -- the network ----------------------------------------------------------------------------------

_TABLE = """
table inet faults {{
  set cut {{ type ipv4_addr; }}
  chain loss {{ }}
  chain input {{
    type filter hook input priority 0; policy accept;
    iif "lo" accept
    ip saddr {hub} accept
    ip saddr @cut drop
    jump loss
  }}
}}
"""


class Fabric:
    """``hosts`` namespaces on one bridge, with loss and partitions (see the module doc)."""

    def __init__(self, hosts: int, prefix: str = "stf") -> None:
        if not 1 <= hosts <= 250:
            raise ValueError("1 to 250 hosts")
        tag = f"{random.getrandbits(24):06x}"
        self.subnet = f"10.253.{random.randrange(1, 255)}"
        self.hub = f"{prefix}-{tag}-hub"
        self.ns = [f"{prefix}-{tag}-{i}" for i in range(hosts)]
        self._made: list[str] = []
        self.loss_permille = 0

    def ip(self, i: int) -> str:
        """The address of host ``i`` (0-based)."""
        return f"{self.subnet}.{i + 1}"

    @property
    def hub_ip(self) -> str:
        return f"{self.subnet}.{HUB_HOST}"

    def __enter__(self) -> Fabric:
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def setup(self) -> None:
        hub = self.hub
        self._add_ns(hub)
        _run(["ip", "-n", hub, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", hub, "addr", "add", f"{self.hub_ip}/24", "dev", "br0"])
        _run(["ip", "-n", hub, "link", "set", "br0", "up"])
        for i, ns in enumerate(self.ns):
            self._add_ns(ns)
            leg = f"h{i}"
            # Made in the hub, its peer moved straight into the host as eth0.
            _run(["ip", "-n", hub, "link", "add", leg, "type", "veth", "peer", "name", "eth0",
                  "netns", ns])  # fmt: skip
            _run(["ip", "-n", hub, "link", "set", leg, "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], _TABLE.format(hub=self.hub_ip))

    def _add_ns(self, ns: str) -> None:
        _run(["ip", "netns", "add", ns])
        self._made.append(ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def close(self) -> None:
        """Delete every namespace made (which deletes its links, the bridge and the rules)."""
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self._made.clear()

    def _nft(self, hosts: Sequence[int], script: str) -> None:
        for i in hosts:
            _run(["ip", "netns", "exec", self.ns[i], "nft", "-f", "-"], script)

    def set_loss(self, share: float, hosts: Sequence[int] | None = None) -> None:
        """Drop ``share`` (0..1) of the packets each host in ``hosts`` (default all) receives."""
        permille = round(share * 1000)
        rule = "flush chain inet faults loss\n"
        if permille > 0:
            rule += f"add rule inet faults loss numgen random mod 1000 < {permille} drop\n"
        self._nft(range(len(self.ns)) if hosts is None else hosts, rule)
        self.loss_permille = permille

    def partition(self, *sides: Sequence[int]) -> None:
        """Cut every host of each side off from every host of the other sides (both ways)."""
        for k, side in enumerate(sides):
            others = [self.ip(j) for s, o in enumerate(sides) if s != k for j in o]
            if others:
                self._nft(side, f"add element inet faults cut {{ {', '.join(others)} }}\n")

    def heal(self) -> None:
        """Remove every cut (loss stays as set)."""
        self._nft(range(len(self.ns)), "flush set inet faults cut\n")

    def exec_argv(self, i: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run in host ``i``'s namespace (``ip netns exec`` execs it: same PID)."""
        return ["ip", "netns", "exec", self.ns[i], *argv]


# -- agents ---------------------------------------------------------------------------------------


def serf_trio_bin() -> str:
    """The console script next to this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "serf-trio"
    return str(here) if here.exists() else (shutil.which("serf-trio") or "serf-trio")


@dataclass
class AgentSpec:
    impl: str  # "serf-trio" | "serf"
    name: str
    ip: str
    join: list[str] = field(default_factory=list)
    key: str | None = None  # base64 gossip key
    algorithm: str = "secretbox"  # serf-trio's cipher; real Serf always uses AES-GCM
    workdir: Path = Path(".")

    def argv(self) -> list[str]:
        if self.impl == "serf":
            cmd = [shutil.which("serf") or "serf", "agent", f"-node={self.name}",
                   f"-bind={self.ip}:{SERF_PORT}", f"-rpc-addr={self.ip}:{RPC_PORT}",
                   "-log-level=info"]  # fmt: skip
            cmd += [f"-join={j}" for j in self.join]
            if self.key:
                cmd.append(f"-encrypt={self.key}")
            return cmd
        cmd = [serf_trio_bin(), "agent", "--node", self.name, "--bind", f"{self.ip}:{SERF_PORT}",
               "--rpc-addr", f"{self.ip}:{RPC_PORT}",
               "--rpc-socket", str(self.workdir / f"{self.name}.sock"),
               "--log-format", "json", "--log-level", "info"]  # fmt: skip
        for j in self.join:
            cmd += ["--join", j]
        if self.key:
            cmd += ["--encrypt", self.key, "--encrypt-algorithm", self.algorithm]
        return cmd


@dataclass
class Tally:
    """What one agent's log says it did."""

    failed: list[str] = field(default_factory=list)  # members it marked failed, in order
    suspected: list[str] = field(default_factory=list)  # members it suspected (its own probes)
    refuted: int = 0  # accusations about itself it refuted


_SERF_FAILED = re.compile(r"serf: EventMemberFailed: (\S+)")
_SERF_SUSPECT = re.compile(r"memberlist: Suspect (\S+) has failed")
_SERF_REFUTE = re.compile(r"memberlist: Refuting a (?:suspect|dead) message")


def tally_log(impl: str, text: str) -> Tally:
    """Count an agent's failures, suspicions and refutations in its log text.

    serf-trio logs JSON lines: ``member_failed`` (the Serf layer's member event, ``member``
    field), ``suspected`` (the core's notice when its own probe failed) and ``refuted``.  Serf
    logs ``serf: EventMemberFailed: NAME``, ``memberlist: Suspect NAME has failed, no acks
    received`` and ``memberlist: Refuting a suspect|dead message``.
    """
    t = Tally()
    if impl == "serf":
        for line in text.splitlines():
            if m := _SERF_FAILED.search(line):
                t.failed.append(m.group(1))
            elif m := _SERF_SUSPECT.search(line):
                t.suspected.append(m.group(1))
            elif _SERF_REFUTE.search(line):
                t.refuted += 1
        return t
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        event = rec.get("event")
        if event == "member_failed" and "status" in rec:  # the Serf layer's event
            t.failed.append(str(rec.get("member")))
        elif event == "suspected":
            t.suspected.append(str(rec.get("member")))
        elif event == "refuted":
            t.refuted += 1
    return t


@dataclass
class Agent:
    spec: AgentSpec
    host: int
    proc: subprocess.Popen[bytes]
    log: Path
    client: RpcClient | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def running(self) -> bool:
        return self.proc.poll() is None


def agent_env(workdir: Path) -> dict[str, str]:
    """The environment for agents: no inherited RPC settings or systemd socket, and a bytecode
    cache in ``workdir`` (``PYTHONPYCACHEPREFIX``), as an installed package has its ``.pyc``
    files."""
    env = dict(os.environ)
    for var in ("SERF_RPC_ADDR", "SERF_RPC_AUTH", "SERF_TRIO_RPC_SOCKET", "NOTIFY_SOCKET"):
        env.pop(var, None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


class Cluster:
    """One agent per host of ``fabric``; ``impls[i]`` is host ``i``'s implementation."""

    def __init__(
        self,
        fabric: Fabric,
        impls: Sequence[str],
        workdir: Path,
        key: str | None = None,
        algorithm: str = "secretbox",
    ) -> None:
        if len(impls) != len(fabric.ns):
            raise ValueError("one implementation per host")
        self.fabric = fabric
        self.impls = list(impls)
        self.workdir = workdir
        self.key = key
        # A cluster with real Serf agents in it must speak memberlist's cipher.
        self.algorithm = "aes-gcm" if key and "serf" in self.impls else algorithm
        self.env = agent_env(workdir)
        self.agents: list[Agent | None] = [None] * len(impls)
        self.names = [f"{'s' if impl == 'serf' else 't'}{i:02d}" for i, impl in enumerate(impls)]
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.impls)

    def spawn(self, i: int, join: Sequence[int] = ()) -> Agent:
        spec = AgentSpec(
            self.impls[i], self.names[i], self.fabric.ip(i),
            join=[f"{self.fabric.ip(j)}:{SERF_PORT}" for j in join],
            key=self.key, algorithm=self.algorithm, workdir=self.workdir,
        )  # fmt: skip
        log = self.workdir / f"{spec.name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.fabric.exec_argv(i, spec.argv()),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,
            )
        self._procs.append(proc)
        agent = Agent(spec, i, proc, log)
        self.agents[i] = agent
        return agent

    def agent(self, i: int) -> Agent:
        a = self.agents[i]
        if a is None:
            raise RuntimeError(f"agent {i} is not running")
        return a

    def start(self, limit: float = 60.0) -> float:
        """Start the seed (host 0), wait for its RPC, start the others joined to it, and wait
        until every agent lists every agent alive.  Seconds from the last spawn; RuntimeError
        with the agents' log tails if it does not converge within ``limit``."""
        self.spawn(0)
        if wait_until(lambda: self.statuses(0) is not None, limit) is None:
            raise RuntimeError(f"the seed never answered RPC: {self.tail(0)}")
        for i in range(1, len(self)):
            self.spawn(i, join=[0])
        took = wait_until(self.converged, limit, step=0.2)
        if took is None:
            raise RuntimeError("no convergence: " + self.describe())
        return took

    def _ask(self, i: int, fn: Callable[[RpcClient], T]) -> T | None:
        """``fn`` on agent ``i``'s kept RPC connection (made in the hub namespace on first
        use); None if the agent is not running or does not answer."""
        a = self.agents[i]
        if a is None or not a.running():
            return None
        try:
            if a.client is None:
                with entered(self.fabric.hub):
                    a.client = RpcClient(addr=f"{a.spec.ip}:{RPC_PORT}", timeout=RPC_TIMEOUT)
            return fn(a.client)
        except (OSError, RpcError):
            self._drop(a)
            return None

    def statuses(self, i: int) -> dict[str, str] | None:
        """Agent ``i``'s member list, name -> status; None if it does not answer."""
        return self._ask(i, lambda c: {m.name: m.status for m in c.members()})

    def loop_counters(self) -> tuple[int, int]:
        """(stalls caught up after, timer wakes 100 ms late or more), summed over the running
        serf-trio agents that answer ``stats``: how often their event loops fell behind."""
        stalls = late = 0
        for i in self.running():
            if self.impls[i] != "serf-trio":
                continue
            st = self._ask(i, lambda c: c.stats())
            if st is not None:
                stalls += int(st.get("memberlist", {}).get("stalls", 0))
                late += int(st.get("runtime_lag", {}).get("late_wakes", 0))
        return stalls, late

    def _drop(self, a: Agent) -> None:
        if a.client is not None:
            a.client.close()
            a.client = None

    def running(self) -> list[int]:
        return [i for i, a in enumerate(self.agents) if a is not None and a.running()]

    def converged(self, among: Sequence[int] | None = None) -> bool:
        """Every agent of ``among`` (default all running) lists all of ``among`` alive."""
        idx = list(self.running() if among is None else among)
        want = {self.names[i] for i in idx}
        for i in idx:
            view = self.statuses(i)
            if view is None or {n for n, s in view.items() if s == "alive"} < want:
                return False
        return True

    def all_see(self, member: int, status: str, observers: Sequence[int]) -> bool:
        name = self.names[member]
        for i in observers:
            view = self.statuses(i)
            if view is None or view.get(name) != status:
                return False
        return True

    def describe(self) -> str:
        parts = []
        for i in range(len(self)):
            view = self.statuses(i)
            alive = sum(1 for s in (view or {}).values() if s == "alive")
            parts.append(f"{self.names[i]}: {alive} alive" if view else f"{self.names[i]}: "
                         f"no RPC ({self.tail(i)})")  # fmt: skip
        return "; ".join(parts)

    def tail(self, i: int, lines: int = 3) -> str:
        a = self.agents[i]
        if a is None:
            return "not started"
        try:
            return " | ".join(a.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def mark(self) -> dict[str, int]:
        """Each agent's log size now: pass to :meth:`tallies` to count only what came after."""
        return {a.name: a.log.stat().st_size for a in self.agents if a is not None}

    def tallies(
        self, since: dict[str, int] | None = None, until: dict[str, int] | None = None
    ) -> dict[str, Tally]:
        """Each agent's :class:`Tally` of its log between two :meth:`mark` (default: all)."""
        out = {}
        for a in self.agents:
            if a is not None:
                data = a.log.read_bytes()
                lo = (since or {}).get(a.name, 0)
                hi = (until or {}).get(a.name, len(data))
                out[a.name] = tally_log(a.spec.impl, data[lo:hi].decode(errors="replace"))
        return out

    def freeze(self, i: int) -> None:
        os.kill(self.agent(i).proc.pid, signal.SIGSTOP)

    def thaw(self, i: int) -> None:
        os.kill(self.agent(i).proc.pid, signal.SIGCONT)

    def close(self) -> None:
        for a in self.agents:
            if a is not None:
                self._drop(a)
        for p in self._procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)  # a stopped process dies of SIGKILL too
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)


def wait_until(pred: Callable[[], bool], limit: float, step: float = 0.1) -> float | None:
    """Seconds until ``pred()`` held (polled every ``step``), or None after ``limit``."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 >= limit:
            return None
        time.sleep(step)


# -- load -----------------------------------------------------------------------------------------

_SPIN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def spin(loops: int, seconds: float) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``loops`` busy-loop processes (nice 0) that end by themselves after ``seconds``; any
    still running when the body ends are killed."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _SPIN.format(s=seconds)], stdin=subprocess.DEVNULL)
        for _ in range(loops)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
