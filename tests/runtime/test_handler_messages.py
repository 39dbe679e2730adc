"""Handler scripts that cannot run are warned about before any event needs them (resolved as a
shell would), every run's output is logged with its spec, exit status and duration, and
received user events and queries are info lines (as Serf logs them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog
import trio
from structlog.testing import capture_logs

from serf_trio.runtime.handlers import HandlerSupervisor, SupervisorConfig, command_problem
from serf_trio.runtime.report import report
from serf_trio.serf.effects import SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from serf_trio.serf.filters import parse_handler_spec
from serf_trio.serf.members import SerfMember
from serf_trio.swim.api import Address

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs /bin/sh")


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    ok = tmp_path / "ok.sh"
    ok.write_text("#!/bin/sh\necho ok\n")
    ok.chmod(0o755)
    plain = tmp_path / "plain.sh"
    plain.write_text("echo plain\n")
    plain.chmod(0o644)
    (tmp_path / "dir.sh").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("./ok.sh", None),
        ("./ok.sh arg 'with space'", None),
        ("{dir}/ok.sh", None),
        ("./missing.sh", "./missing.sh does not exist"),
        ("{dir}/missing.sh --flag", "{dir}/missing.sh does not exist"),
        ("./plain.sh", "./plain.sh is not executable (chmod +x, or run it through sh)"),
        ("./dir.sh", "./dir.sh is a directory"),
        ("sh ./plain.sh", None),  # through sh: the script need not be executable
        ("mytool --x", None),  # found on PATH
        ("no-such-tool-xyz", "no-such-tool-xyz is not found on PATH"),
        ("FOO=1 BAR=2 ./missing.sh", "./missing.sh does not exist"),
        ("FOO=1 mytool", None),
        ("echo hi >> out", None),  # builtins
        ("exec ./ok.sh", None),
        ("cd /tmp && ls", None),
        ("$HOME/bin/x", None),  # an expansion: only a shell can tell
        ("'unbalanced", None),  # the shell's own error says it best
        ("", None),
    ],
)
def test_command_problem_resolves_like_a_shell(
    scripts: Path, command: str, problem: str | None
) -> None:
    command = command.format(dir=scripts)
    expected = problem.format(dir=scripts) if problem is not None else None
    path_var = f"{scripts / 'bin'}{os.pathsep}{os.defpath}"
    assert command_problem(command, path_var=path_var, cwd=str(scripts)) == expected


def test_unrunnable_handlers_are_warned_about_at_start(
    scripts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(scripts)
    specs = [
        parse_handler_spec("user:deploy=./missing.sh"),
        parse_handler_spec("./ok.sh"),
        parse_handler_spec("member-join=./plain.sh"),
    ]
    sup = HandlerSupervisor(specs, self_name="n1", config=SupervisorConfig(timeout=5))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)  # no event has run yet
            nursery.cancel_scope.cancel()

    with capture_logs() as logs:
        trio.run(main)
    warned = [r for r in logs if r["event"] == "handler_not_runnable"]
    assert [(r["handler"], r["reason"], r["log_level"]) for r in warned] == [
        ("user:deploy=./missing.sh", "./missing.sh does not exist", "warning"),
        (
            "member-join=./plain.sh",
            "./plain.sh is not executable (chmod +x, or run it through sh)",
            "warning",
        ),
    ]
    # ``check_commands`` (what a reload calls) says the same again.
    with capture_logs() as again:
        assert len(sup.check_commands()) == 2
    assert len([r for r in again if r["event"] == "handler_not_runnable"]) == 2


def test_each_run_logs_its_output_exit_status_and_duration(tmp_path: Path) -> None:
    spec = parse_handler_spec("user:hello=echo hi from $SERF_USER_EVENT; echo oops >&2")
    sup = HandlerSupervisor([spec], self_name="n1", config=SupervisorConfig(timeout=5))

    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(sup.run)
                sup.enqueue(SerfUserEvent("hello", b"", 1, False))
                while not sup.statistics()[0].runs:  # noqa: ASYNC110 - a counter, no signal
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()

    with capture_logs() as logs:
        trio.run(main)
    (rec,) = [r for r in logs if r["event"] == "handler_exited"]
    assert rec["log_level"] == "info"
    assert rec["handler"] == spec.text and rec["exit_code"] == 0
    assert rec["output"] == "hi from hello\noops\n"
    assert isinstance(rec["duration"], float)
    started = next(r for r in logs if r["event"] == "handler_started")
    assert started["ltime"] == 1


def test_received_user_events_and_queries_are_info_lines() -> None:
    with capture_logs() as logs:
        log = structlog.get_logger()
        report(log, SerfUserEvent("deploy", b"v1", 7, False))
        report(log, SerfQueryEvent("load", b"", 3, 1, 0.0, "n2"))
    assert [(r["event"], r["log_level"], r["name"]) for r in logs] == [
        ("user_event", "info", "deploy"),
        ("query_event", "info", "load"),
    ]
    assert logs[1]["source"] == "n2"


def test_member_events_start_their_handler_without_an_ltime_field() -> None:
    """``handler_started`` has no ``ltime=None`` for member events (they carry no LTime)."""
    m = SerfMember("n2", Address("127.0.0.2", 7946), {}, "alive", 1, 5, 5, 2, 5, 5, 0)
    sup = HandlerSupervisor(
        [parse_handler_spec("member-join=true")], self_name="n1", config=SupervisorConfig()
    )

    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(sup.run)
                sup.enqueue(SerfMemberEvent("member-join", (m,)))
                while not sup.statistics()[0].runs:  # noqa: ASYNC110 - a counter, no signal
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()

    with capture_logs() as logs:
        trio.run(main)
    started = next(r for r in logs if r["event"] == "handler_started")
    assert "ltime" not in started
