"""The README's "Install on a host" steps, run as written under a throwaway root.

So that the README and this test cannot drift, the commands come from the README itself: the
section's first ``sh`` block (the install) and its second (the upgrade).  Every absolute path
of the install (``INSTALL_PATHS``) is mapped to the same path under ``<tmp>/root``; the block
then runs in one ``sh -eux`` from a copy of this checkout, except:

* ``apt-get`` (a system package: the test needs a Python with ``venv``, which it has);
* ``systemctl`` (needs systemd as PID 1, which test machines do not have).  Instead the test
  does what systemd would: ``systemd-analyze verify`` of the unit as installed (the paths
  mapped, so the ``ExecStart=`` binary exists), then the unit's own ``ExecStart=`` with a
  service's environment (no ``XDG_RUNTIME_DIR``; ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` set),
  its ``RuntimeDirectory=`` and ``StateDirectory=`` made by the test, ``ExecReload=`` for a
  reload, ``KillSignal=`` within ``TimeoutStopSec=`` for a stop.

``editor`` runs, as the test's own scripted editor (first on ``PATH``): it sets the keys the
README says to edit (a loopback ``bind``, no ``start_join``/``retry_join``, a
``snapshot_path`` under the mapped state directory), drops the example's handlers (they name
scripts that do not exist), and drops ``rpc_socket`` so the agent's default socket for a
service is what is tested.

The RPC socket: its path, ``/run/serf-trio/rpc.sock``, is compiled into the agent's default
and the CLI's search order (``serf_trio.rpc.paths``) with no override, and the test must not
touch the real ``/run``.  So the agent and the CLI run in a private mount namespace
(``unshare``; a user namespace too when not root) where ``<tmp>/root/run`` is mounted on
``/run``: both see the real path, the host's ``/run`` is untouched, and ``serf-trio members``
is run with no flags and no ``SERF_TRIO_RPC_SOCKET``, once as a service-like shell without
``XDG_RUNTIME_DIR`` and once as a root login shell with ``XDG_RUNTIME_DIR=/run/user/0`` (which
has no agent socket: the CLI must fall back to ``/run/serf-trio/rpc.sock``).  Without
namespaces the service test is skipped, not the install test.

The package is installed from a copy of the checkout (a build writes ``build/`` and
``*.egg-info`` into its source) into a clean venv; pip may download dependencies from PyPI and
keeps them in its cache: the install takes 11-14 s here (warm or cold cache), the whole
module about 22 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import free_port, wait_for

from serf_trio.rpc.client import RpcClient

pytestmark = [pytest.mark.slow, pytest.mark.realnet]

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SECTION = "## Install on a host"

# The install's absolute paths; each is mapped to the same path under the test's root.
INSTALL_PATHS = (
    "/opt/serf-trio",
    "/etc/serf-trio",
    "/usr/local/bin",
    "/etc/systemd/system",
    "/var/lib/serf-trio",
)
# Directories a Debian host already has (the README's commands create the rest).
HOST_DIRS = ("/opt", "/etc/systemd/system", "/usr/local/bin", "/var/lib")
# README commands the test does not run, by first word (see the module docstring).
NOT_RUN = ("apt-get", "systemctl")

NODE = "install-test"
INSTALL_TIMEOUT = 240.0  # the whole install block (pip included)
CLI_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd's

# What `editor FILE` does here: load the TOML, apply the edits, write it back as TOML.
EDITOR = r"""
import json, os, sys, tomllib

path = sys.argv[1]
assert path == os.environ["EXPECT_CONFIG"], f"editor opened {path}"
with open(path, "rb") as f:
    cfg = tomllib.load(f)
edits = json.loads(os.environ["CONFIG_EDITS"])
cfg.update(edits["set"])
for key in edits["remove"]:
    cfg.pop(key, None)


def value(v):
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    return json.dumps(v)


with open(path, "w") as f:
    f.writelines(f"{json.dumps(k)} = {value(v)}\n" for k, v in cfg.items())
"""


# -- the README ---------------------------------------------------------------------------


def readme_blocks() -> list[str]:
    """The ``sh`` blocks of the install section, in order."""
    text = README.read_text()
    assert SECTION in text, f"README has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]
    blocks = [
        textwrap.dedent(m.group(1))
        for m in re.finditer(r"^[ \t]*```sh\n(.*?)^[ \t]*```", section, re.M | re.S)
    ]
    assert len(blocks) >= 2, "expected the install block and the upgrade block"
    assert "python3 -m venv /opt/serf-trio" in blocks[0], blocks[0]
    assert "pip install --upgrade" in blocks[1], blocks[1]
    return blocks


def commands(block: str) -> list[str]:
    """The block's commands (continuation lines joined; blank lines dropped)."""
    out: list[str] = []
    pending = ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip():
            out.append(line.strip())
    return out


def first_word(command: str) -> str:
    words = shlex.split(command, comments=True)
    return words[0] if words else ""


_PATHS = re.compile(
    r"(?<![\w.-])(" + "|".join(re.escape(p) for p in INSTALL_PATHS) + r")(?![\w.-])"
)


def mapped(text: str, root: Path) -> str:
    """``text`` with every install path moved under ``root`` (one pass: never twice)."""
    return _PATHS.sub(lambda m: f"{root}{m.group(1)}", text)


def script(block: str, root: Path) -> str:
    """The block as one ``sh`` script with the paths mapped and ``NOT_RUN`` commands shown
    instead of run."""
    lines = []
    for cmd in commands(block):
        if first_word(cmd) in NOT_RUN:
            lines.append(f": not run by the test: {shlex.quote(cmd)}")
        else:
            lines.append(mapped(cmd, root))
    return "\n".join(lines) + "\n"


# -- processes ------------------------------------------------------------------------------


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run to completion in a new session; on timeout kill the whole group (pip's build
    backend included) and fail."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        killpg(proc)
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"timed out after {timeout} s: {argv}\n{out}\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def killpg(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid


def copy_checkout(dst: Path) -> Path:
    """This checkout as a clone would have it (no venv, caches or build output)."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".*_cache",
        ".hypothesis", ".coverage*", "htmlcov", ".import_linter_cache",
    )  # fmt: skip
    shutil.copytree(REPO, dst, symlinks=True, ignore=ignore)
    return dst


# -- the install ----------------------------------------------------------------------------


@dataclass
class Install:
    base: Path
    root: Path  # the mapped "/"
    src: Path  # the clone the README's commands run in
    port: int  # the agent's gossip port on 127.0.0.1
    blocks: list[str]
    log: str  # the install script's trace

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    @property
    def unit(self) -> Path:
        return self.path("/etc/systemd/system/serf-trio.service")

    @property
    def venv(self) -> Path:
        return self.path("/opt/serf-trio")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("install")
    root = base / "root"
    for d in HOST_DIRS:
        (root / d.lstrip("/")).mkdir(parents=True)
    src = copy_checkout(base / "serf-trio")
    blocks = readme_blocks()
    port = free_port()

    tools = base / "tools"
    tools.mkdir()
    (tools / "editor.py").write_text(EDITOR)
    editor = tools / "editor"
    editor.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {tools / "editor.py"} "$@"\n')
    editor.chmod(0o755)
    edits = {
        "set": {
            "node_name": NODE,
            "bind": f"127.0.0.1:{port}",
            "advertise": f"127.0.0.1:{port}",
            "start_join": [],
            "retry_join": [],
            "event_handlers": [],
            "snapshot_path": f"{root}/var/lib/serf-trio/snapshot",
        },
        "remove": ["rpc_socket"],
    }
    env = {
        **os.environ,
        "PATH": f"{tools}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "EXPECT_CONFIG": f"{root}/etc/serf-trio/serf-trio.toml",
        "CONFIG_EDITS": json.dumps(edits),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    body = script(blocks[0], root)
    res = run(["sh", "-eux", "-c", body], timeout=INSTALL_TIMEOUT, env=env, cwd=src)
    assert res.returncode == 0, f"install failed:\n{body}\n{res.stdout[-3000:]}{res.stderr[-6000:]}"
    return Install(base, root, src, port, blocks, res.stderr)


def test_readme_install_block(installed: Install) -> None:
    """The install block's commands: what each skipped one is, and that the rest ran."""
    cmds = commands(installed.blocks[0])
    skipped = [c for c in cmds if first_word(c) in NOT_RUN]
    assert [first_word(c) for c in skipped] == ["apt-get", "systemctl", "systemctl"], skipped
    assert "systemctl daemon-reload" in skipped
    assert any(c.startswith("systemctl enable --now serf-trio") for c in skipped)
    assert any(first_word(c) == "editor" for c in cmds), "the README no longer edits the config"
    # The config the agent will read: the example with the test's edits.
    config = installed.path("/etc/serf-trio/serf-trio.toml")
    assert f'"node_name" = "{NODE}"' in config.read_text()


def test_installed_layout(installed: Install) -> None:
    venv = installed.venv
    entry = venv / "bin" / "serf-trio"
    assert os.access(entry, os.X_OK)
    link = installed.path("/usr/local/bin/serf-trio")
    assert link.is_symlink() and link.resolve() == entry.resolve()
    # The service's DynamicUser owns nothing: everything it reads must be world-readable.
    for top in (venv, installed.path("/etc/serf-trio")):
        for dirpath, _dirnames, filenames in os.walk(top):
            mode = os.stat(dirpath).st_mode
            assert mode & 0o005 == 0o005, f"{dirpath} is {stat.filemode(mode)}"
            for name in filenames:
                p = Path(dirpath, name)
                if not p.is_symlink():
                    assert p.stat().st_mode & 0o004, f"{p} is {stat.filemode(p.stat().st_mode)}"
    # Bytecode was compiled at install: the service cannot write it (DynamicUser) and would
    # otherwise compile every module from source at each start (about 1 s of CPU).
    tag = sys.implementation.cache_tag
    modules = list((venv / "lib").glob("python3*/site-packages/serf_trio/**/*.py"))
    assert len(modules) > 50, modules
    missing = [
        m for m in modules if not (m.parent / "__pycache__" / f"{m.stem}.{tag}.pyc").exists()
    ]
    assert missing == [], missing[:5]
    # A bare `serf-trio` is on PATH (as /usr/local/bin is on a host) and is the venv's.
    env = {"PATH": f"{installed.path('/usr/local/bin')}:/usr/bin:/bin", "HOME": str(installed.base)}
    res = run(["sh", "-c", "serf-trio version"], timeout=CLI_TIMEOUT, env=env)
    assert res.returncode == 0 and "serf-trio" in res.stdout.lower(), res


# -- the unit -------------------------------------------------------------------------------


def unit_service(unit: Path) -> dict[str, str]:
    """``[Service]`` settings of a unit file (the last value of a key wins)."""
    out: dict[str, str] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|min)?", value)
    assert m, f"cannot read the duration {value!r}"
    return int(m.group(1)) * {"ms": 0.001, "s": 1.0, "min": 60.0, None: 1.0}[m.group(2)]


@pytest.fixture(scope="module")
def unit(installed: Install) -> dict[str, str]:
    """The installed unit with the install paths mapped (as if the prefix were real)."""
    path = installed.unit
    path.write_text(mapped(path.read_text(), installed.root))
    return unit_service(path)


def test_unit_verifies(installed: Install, unit: dict[str, str]) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (scripts/test.sh installs it)")
    argv = shlex.split(unit["ExecStart"])
    assert argv[0] == str(installed.venv / "bin" / "serf-trio"), unit["ExecStart"]
    assert argv[1:] == ["agent", "--config-dir", str(installed.path("/etc/serf-trio"))]
    docs = re.search(r"^Documentation=(.*)$", installed.unit.read_text(), re.M)
    assert docs is not None
    for url in docs.group(1).split():
        if url.startswith("file://"):
            assert Path(url.removeprefix("file://")).is_file(), f"{url}: not installed"
    res = run([analyze, "verify", str(installed.unit)], timeout=60, cwd=installed.base)
    assert res.returncode == 0, res.stderr
    # Only warnings about the machine are tolerated, none about our unit's keys.
    assert "serf-trio.service:" not in res.stderr, res.stderr


# -- the service, in a private mount namespace ---------------------------------------------


@dataclass
class Namespace:
    """A process holding a mount namespace where ``/run`` is ``<root>/run``."""

    holder: subprocess.Popen[bytes]
    enter: list[str]  # nsenter prefix for a command to run in it


@contextlib.contextmanager
def private_run(run_dir: Path) -> Iterator[Namespace]:
    unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
    if unshare is None or nsenter is None:
        pytest.skip("unshare/nsenter (util-linux) are not installed")
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    holder = subprocess.Popen(
        [unshare, *user, "--mount", "--propagation", "private", "sh", "-c",
         'mount --bind "$0" /run && echo ready && exec sleep 3600', str(run_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stderr is not None
        ready, _, _ = select.select([holder.stdout], [], [], 10.0)
        if not ready or holder.stdout.readline() != b"ready\n":
            killpg(holder)
            holder.wait(timeout=10)
            why = holder.stderr.read().decode(errors="replace").strip()
            pytest.skip(f"no private mount namespace here ({why or 'no answer'})")
        enter = [nsenter, f"--target={holder.pid}", "--mount"]
        if user:
            enter += ["--user", "--preserve-credentials"]
        yield Namespace(holder, enter)
    finally:
        killpg(holder)
        holder.wait(timeout=10)


@dataclass
class Service:
    """What systemd does for the unit, done by hand."""

    install: Install
    unit: dict[str, str]
    ns: Namespace
    notify: socket.socket
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    starts: int = 0

    @property
    def socket_path(self) -> Path:  # /run/serf-trio/rpc.sock as seen from outside
        return self.install.root / "run" / "serf-trio" / "rpc.sock"

    @property
    def main(self) -> subprocess.Popen[bytes]:
        return self.procs[-1]

    def env(self) -> dict[str, str]:
        """A system service's environment: no XDG_RUNTIME_DIR, no RPC overrides."""
        root = self.install.root
        return {
            "PATH": mapped(SERVICE_PATH, root),
            "HOME": "/",  # DynamicUser's
            "USER": "serf-trio",
            "LOGNAME": "serf-trio",
            "INVOCATION_ID": uuid.uuid4().hex,
            "NOTIFY_SOCKET": self.notify.getsockname(),
            "WATCHDOG_USEC": str(int(seconds(self.unit["WatchdogSec"]) * 1_000_000)),
            "RUNTIME_DIRECTORY": f"/run/{self.unit['RuntimeDirectory']}",
            "STATE_DIRECTORY": mapped(f"/var/lib/{self.unit['StateDirectory']}", root),
            "CONFIGURATION_DIRECTORY": mapped(f"/etc/{self.unit['ConfigurationDirectory']}", root),
        }

    def start(self) -> None:
        """``ExecStart=`` (Type=notify: started once READY=1 arrives)."""
        argv = shlex.split(self.unit["ExecStart"])
        assert argv[0][0] == "/", f"ExecStart= prefixes are not handled: {argv[0]}"
        self.starts += 1
        logs = self.install.base / f"agent.{self.starts}"
        with open(f"{logs}.out", "wb") as out, open(f"{logs}.err", "wb") as err:
            proc = subprocess.Popen(
                [*self.ns.enter, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env(),
                cwd="/",
                start_new_session=True,
            )
        self.procs.append(proc)
        self.expect("READY=1")

    def expect(self, first: str) -> str:
        """The next notify message that is not a watchdog ping; it starts with ``first``."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.main.poll() is not None:
                raise AssertionError(f"the agent exited ({self.main.returncode})\n{self.logs()}")
            self.notify.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
            try:
                msg = self.notify.recv(4096).decode()
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"no {first} in {READY_TIMEOUT} s\n{self.logs()}"
                    ) from None
                continue
            self.messages.append(msg)
            if msg != "WATCHDOG=1":
                assert msg.startswith(first), f"expected {first}, got {msg!r}"
                return msg

    def reload(self) -> None:
        """``ExecReload=`` with $MAINPID (systemd runs it outside the service's namespace)."""
        cmd = self.unit["ExecReload"].replace("$MAINPID", str(self.main.pid))
        res = run(shlex.split(cmd), timeout=CLI_TIMEOUT)
        assert res.returncode == 0, res
        self.expect("RELOADING=1")
        self.expect("READY=1")

    def stop(self) -> int:
        """``KillSignal=``, then at most ``TimeoutStopSec=`` for the process to end."""
        self.main.send_signal(signal.Signals[self.unit["KillSignal"]])
        try:
            code = self.main.wait(timeout=seconds(self.unit["TimeoutStopSec"]))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent outlived TimeoutStopSec\n{self.logs()}") from None
        self.notify.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.messages.append(self.notify.recv(4096).decode())
        assert any(m.startswith("STOPPING=1") for m in self.messages), self.messages
        return code

    def cli(self, *args: str, xdg: str | None = None) -> subprocess.CompletedProcess[str]:
        """A shell in the namespace runs ``serf-trio ARGS`` from PATH, no flags."""
        env = {
            "PATH": f"{self.install.path('/usr/local/bin')}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.install.base),
        }
        if xdg is not None:
            env["XDG_RUNTIME_DIR"] = xdg
        cmd = shlex.join(["serf-trio", *args])
        return run([*self.ns.enter, "sh", "-c", cmd], timeout=CLI_TIMEOUT, env=env, cwd="/")

    def stats(self) -> dict[str, dict[str, str]]:
        with RpcClient(socket_path=str(self.socket_path), timeout=5.0) as c:
            return c.stats()

    def logs(self) -> str:
        base = self.install.base
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(base.glob("agent.*"))
        )

    def json_lines(self) -> list[dict[str, object]]:
        """Every line the agents wrote (the journal's input), each one JSON object."""
        recs = []
        for p in sorted(self.install.base.glob("agent.*")):
            for line in p.read_text(errors="replace").splitlines():
                rec = json.loads(line)
                assert isinstance(rec, dict), line
                recs.append(rec)
        return recs

    def kill_all(self) -> None:
        for p in self.procs:
            killpg(p)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)


@pytest.fixture
def service(installed: Install, unit: dict[str, str]) -> Iterator[Service]:
    root = installed.root
    run_dir = root / "run"
    # RuntimeDirectory= and StateDirectory= (systemd makes them), and root's login runtime
    # directory (pam_systemd makes it) without any agent socket in it.
    (run_dir / unit["RuntimeDirectory"]).mkdir(parents=True, exist_ok=True)
    (run_dir / unit["RuntimeDirectory"]).chmod(int(unit["RuntimeDirectoryMode"], 8))
    state = installed.path(f"/var/lib/{unit['StateDirectory']}")
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(int(unit["StateDirectoryMode"], 8))
    (run_dir / "user" / "0").mkdir(parents=True, exist_ok=True, mode=0o700)
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
        private_run(run_dir) as ns,
    ):
        notify.bind(str(installed.base / "notify.sock"))
        svc = Service(installed, unit, ns, notify)
        try:
            yield svc
        finally:
            svc.kill_all()


def test_service_lifecycle(service: Service, installed: Install) -> None:
    service.start()

    # The socket is where the CLI looks, private to the service's user.
    assert stat.S_IMODE(service.socket_path.stat().st_mode) == 0o600
    for xdg in (None, "/run/user/0"):  # a service-like shell, then a root login shell
        res = service.cli("members", xdg=xdg)
        assert res.returncode == 0, f"XDG_RUNTIME_DIR={xdg}: {res.stderr}"
        row = res.stdout.split()
        assert row[:3] == [NODE, f"127.0.0.1:{installed.port}", "alive"], res.stdout

    # systemctl reload: SIGHUP, RELOADING=1 then READY=1; the agent still answers.
    service.reload()
    res = service.cli("event", "deploy", "v1")
    assert res.returncode == 0, res.stderr

    def event_time() -> int:
        return int(service.stats()["serf"]["event_time"])

    before = wait_for(event_time, "the user event on the event clock", 10.0)

    # systemctl stop: a graceful leave within TimeoutStopSec.
    assert service.stop() == 0, service.logs()
    events = [r.get("event") for r in service.json_lines()]
    assert "left" in events and "agent_stopped" in events, events

    # Upgrade: the README's upgrade block (pip from the clone), then systemctl restart.
    body = script(installed.blocks[1], installed.root)
    res = run(["sh", "-eux", "-c", body], timeout=INSTALL_TIMEOUT, cwd=installed.src,
              env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})  # fmt: skip
    assert res.returncode == 0, f"{body}\n{res.stderr[-4000:]}"
    service.start()
    res = service.cli("members")
    assert res.returncode == 0 and NODE in res.stdout, res
    # The snapshot kept the node's clocks across the restart.
    assert event_time() >= before
    assert service.stop() == 0, service.logs()
