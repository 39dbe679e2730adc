"""Messages that explain themselves: ``--version`` and ``-h``, help without Python types, where
the agent address came from, every socket path tried (with a hint), bad ``--rpc-addr`` values,
and a leave that did not complete."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serf_trio.cli import app, common
from serf_trio.cli.application import CLIENT_COMMANDS, VERSION
from serf_trio.rpc import paths

from .conftest import FakeClient

SOCK = ["--rpc-socket", "/tmp/test-agent.sock"]


def run(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def serf_trio(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real entry point (``main()`` picks the application to build from argv)."""
    return subprocess.run(
        [sys.executable, "-m", "serf_trio.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


# -- --version, -h -----------------------------------------------------------------------------


def test_version_flag_and_short_help_work_from_the_entry_point() -> None:
    proc = serf_trio("--version")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.splitlines()[0] == f"serf-trio v{VERSION}"
    short, long = serf_trio("-h"), serf_trio("--help")
    assert short.returncode == 0 and short.stdout == long.stdout
    assert "Commands:" in short.stdout and "--version" in short.stdout
    members = serf_trio("members", "-h")
    assert members.returncode == 0 and " members [OPTIONS]" in members.stdout.splitlines()[0]


@pytest.mark.parametrize("command", [*CLIENT_COMMANDS, "version", "demo"])
def test_help_shows_no_python_types(runner: CliRunner, command: str) -> None:
    code, out, err = run(runner, command, "--help")
    assert (code, err) == (0, "")
    for leak in ("{", "}", "<", ">", "list[", "str]", "None"):
        assert leak not in out, f"{command} --help shows {leak!r}:\n{out}"
    assert run(runner, command, "-h")[1] == out


def test_arguments_are_named_in_capitals(runner: CliRunner) -> None:
    assert run(runner, "join", "-h")[1].startswith("Usage: serf-trio join [OPTIONS] ADDRESS...")
    assert run(runner, "event", "-h")[1].startswith(
        "Usage: serf-trio event [OPTIONS] NAME [PAYLOAD]"
    )
    assert run(runner, "rtt", "-h")[1].startswith("Usage: serf-trio rtt [OPTIONS] A [B]")


def test_help_documents_where_the_agent_is_looked_for(runner: CliRunner) -> None:
    out = " ".join(run(runner, "--help")[1].split())
    assert "SERF_TRIO_RPC_SOCKET, then Serf's SERF_RPC_ADDR" in out
    assert "$XDG_RUNTIME_DIR/serf-trio/rpc.sock" in out and "/run/serf-trio/rpc.sock" in out
    members = " ".join(run(runner, "members", "--help")[1].split())
    assert "SERF_TRIO_RPC_SOCKET (wins over SERF_RPC_ADDR)" in members


# -- where the agent is, and what a failure says ------------------------------------------------


def test_an_address_from_the_environment_names_its_variable(
    runner: CliRunner, unreachable: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(common.ENV_RPC_SOCKET, "/tmp/from-env.sock")
    monkeypatch.setenv(common.ENV_RPC_ADDR, "127.0.0.1:7373")  # loses to the socket variable
    code, out, err = run(runner, "members")
    assert (code, out) == (1, "")
    assert err == (
        "Error connecting to serf-trio agent at /tmp/from-env.sock (from SERF_TRIO_RPC_SOCKET): "
        "No such file or directory\n"
    )
    monkeypatch.delenv(common.ENV_RPC_SOCKET)
    assert run(runner, "members")[2].startswith(
        "Error connecting to serf-trio agent at 127.0.0.1:7373 (from SERF_RPC_ADDR): "
    )
    # A flag needs no origin: the user just typed it.
    assert run(runner, "members", *SOCK)[2] == (
        "Error connecting to serf-trio agent at /tmp/test-agent.sock: No such file or directory\n"
    )


def test_no_socket_anywhere_names_every_path_and_hints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    # A root SSH session: XDG_RUNTIME_DIR is set, and no agent of its own runs.
    system = tmp_path / "run" / "serf-trio" / "rpc.sock"
    monkeypatch.setattr(paths, "SYSTEM_SOCKET_PATH", str(system))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "user"))
    for var in (common.ENV_RPC_SOCKET, common.ENV_RPC_ADDR):
        monkeypatch.delenv(var, raising=False)
    code, out, err = run(runner, "members")
    assert (code, out) == (1, "")
    error, hint = err.splitlines()
    user = tmp_path / "user" / "serf-trio" / "rpc.sock"
    assert error == f"Error connecting to serf-trio agent: no agent socket at {user} or {system}"
    assert hint.startswith("Hint: is the agent running?")
    assert f"The system service listens on {system}" in hint
    assert "--rpc-socket PATH (or SERF_TRIO_RPC_SOCKET)" in hint
    assert "--rpc-addr HOST:PORT (or SERF_RPC_ADDR)" in hint


def test_the_system_socket_is_found_when_the_users_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "run" / "serf-trio" / "rpc.sock"
    system.parent.mkdir(parents=True)
    system.touch()
    monkeypatch.setattr(paths, "SYSTEM_SOCKET_PATH", str(system))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "user"))
    opts = common.client_options(None, None, None, {})
    assert opts.socket_path == str(system) and opts.tried == ()


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        ("127.0.0.1:99999", True),
        ("127.0.0.1:0", True),
        ("host:port", True),
        ("[::1", True),
        ("[::1]x", True),
        ("10.0.0.1:x7", False),
    ],
)
def test_a_bad_rpc_address_is_named_with_its_origin(
    runner: CliRunner,
    fake: FakeClient,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    flag: bool,
) -> None:
    if flag:
        code, out, err = run(runner, "members", "--rpc-addr", value)
        origin = "--rpc-addr"
    else:
        monkeypatch.setenv(common.ENV_RPC_ADDR, value)
        code, out, err = run(runner, "members")
        origin = "SERF_RPC_ADDR"
    assert (code, out) == (1, "")
    assert err == (
        f"Error: invalid RPC address {value!r} (from {origin}): expected HOST:PORT with a port "
        "from 1 to 65535 ([v6]:PORT for IPv6)\n"
    )
    assert fake.opened == []  # nothing was tried


@pytest.mark.parametrize("value", ["127.0.0.1:7373", "[::1]:7373", "::1", "agent.local", "h:"])
def test_good_rpc_addresses_pass(runner: CliRunner, fake: FakeClient, value: str) -> None:
    code, _out, err = run(runner, "members", "--rpc-addr", value)
    assert (code, err) == (0, "")
    assert fake.opened[0][0].rpc_addr == value


def test_a_leave_that_did_not_complete_exits_1_with_the_agents_reason(
    runner: CliRunner, fake: FakeClient
) -> None:
    fake.errors["leave"] = "the leave broadcast timed out after 5s (the agent stops anyway)"
    code, out, err = run(runner, "leave", *SOCK)
    assert (code, out) == (1, "")
    assert err == (
        "Error leaving: the leave broadcast timed out after 5s (the agent stops anyway)\n"
    )
