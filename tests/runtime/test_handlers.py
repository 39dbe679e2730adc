"""The handler supervisor with real ``/bin/sh`` subprocesses (bounded, no sleep-and-hope)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trio.testing
from structlog.testing import capture_logs

from serf_trio.runtime.handlers import (
    HandlerSupervisor,
    ResponseRejected,
    SupervisorConfig,
)
from serf_trio.serf.effects import SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from serf_trio.serf.filters import parse_handler_spec
from serf_trio.serf.members import SerfMember
from serf_trio.swim.api import Address

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs /bin/sh")

DATA = Path(__file__).parent.parent / "data" / "serf" / "handler-examples.txt"
FAST = SupervisorConfig(timeout=5.0, kill_grace=0.5, queue_size=32, max_concurrency=4)


def member(name: str, ip: str, tags: dict[str, str]) -> SerfMember:
    return SerfMember(name, Address(ip, 7946), tags, "alive", 1, 5, 5, 2, 5, 5, 0)


def q(path: Path) -> str:
    return shlex.quote(str(path))


async def wait_for(cond: Callable[[], bool], within: float = 10.0) -> None:
    """Poll a condition on the real clock until it holds (fails after ``within`` seconds)."""
    with trio.fail_after(within):
        while not cond():  # noqa: ASYNC110 - polls counters / files that have no change signal
            await trio.sleep(0.01)


def stats(sup: HandlerSupervisor, index: int = 0) -> Any:
    return sup.statistics()[index]


def run_with(
    sup: HandlerSupervisor, body: Callable[[HandlerSupervisor], Awaitable[None]], bound: float = 20
) -> None:
    async def main() -> None:
        with trio.fail_after(bound):
            async with trio.open_nursery() as nursery:
                await nursery.start(sup.run)
                await body(sup)
                nursery.cancel_scope.cancel()

    trio.run(main)


def supervisor(specs: list[str], config: SupervisorConfig = FAST, **kw: Any) -> HandlerSupervisor:
    return HandlerSupervisor(
        [parse_handler_spec(s) for s in specs],
        self_name=kw.pop("self_name", "n1"),
        self_tags=kw.pop("self_tags", {"role": "lb", "dc": "lab"}),
        config=config,
        **kw,
    )


def recorded_env(event_line: str) -> dict[str, str]:
    """SERF_* variables of the recorded invocation that starts with ``event_line``."""
    env: dict[str, str] = {}
    inside = False
    for line in DATA.read_text().splitlines():
        if line.startswith("=== event="):
            inside = line == event_line
        elif inside and line.startswith("SERF_"):
            k, _, v = line.partition("=")
            env[k] = v
        elif inside and line == "=== end":
            return env
    raise AssertionError(event_line)


def test_each_event_type_gets_serf_env_and_stdin(tmp_path: Path) -> None:
    script = (
        f"env | grep '^SERF_' | sort > {q(tmp_path)}/$SERF_EVENT.env; "
        f"cat > {q(tmp_path)}/$SERF_EVENT.in"
    )
    specs = [f"{kind}={script}" for kind in ("member-join", "member-update", "user", "query")]
    sup = supervisor(specs, self_name="n1", self_tags={"role": "lb", "dc": "lab"})
    events: list[object] = [
        SerfMemberEvent("member-join", (member("n2", "127.0.0.12", {"role": "web", "dc": "lab"}),)),
        SerfMemberEvent(
            "member-update",
            (member("n2", "127.0.0.12", {"role": "web", "dc": "lab", "version": "2"}),),
        ),
        SerfUserEvent("deploy", b"v1.2.3", 1, True),
        SerfQueryEvent("load", b"relay", 3, token=1, deadline=0.0),
    ]

    async def body(sup: HandlerSupervisor) -> None:
        assert [sup.enqueue(e) for e in events] == [1, 1, 1, 1]
        await wait_for(lambda: all(s.runs == 1 for s in sup.statistics()))

    run_with(sup, body)

    def env_of(kind: str) -> dict[str, str]:
        lines = (tmp_path / f"{kind}.env").read_text().splitlines()
        return dict(line.partition("=")[::2] for line in lines)

    assert env_of("user") == recorded_env("=== event=user self=n1")
    assert env_of("query") == recorded_env("=== event=query self=n1")
    assert env_of("member-update") == recorded_env("=== event=member-update self=n1")
    assert env_of("member-join")["SERF_EVENT"] == "member-join"
    assert (tmp_path / "member-join.in").read_bytes() == b"n2\t127.0.0.12\tweb\trole=web,dc=lab\n"
    assert (tmp_path / "member-update.in").read_bytes() == (
        b"n2\t127.0.0.12\tweb\trole=web,dc=lab,version=2\n"
    )
    assert (tmp_path / "user.in").read_bytes() == b"v1.2.3\n"
    assert (tmp_path / "query.in").read_bytes() == b"relay\n"


def test_events_of_one_handler_stay_in_order(tmp_path: Path) -> None:
    out = tmp_path / "order"
    sup = supervisor([f"user=echo $SERF_USER_LTIME >> {q(out)}"])

    async def body(sup: HandlerSupervisor) -> None:
        for lt in range(1, 21):
            sup.enqueue(SerfUserEvent("e", b"", lt, False))
        await wait_for(lambda: stats(sup).runs == 20)

    run_with(sup, body)
    assert out.read_text().split() == [str(i) for i in range(1, 21)]


def test_different_handlers_run_concurrently(tmp_path: Path) -> None:
    # Handler a waits (up to its timeout) for handler b's file: only concurrency lets it pass.
    a, b = tmp_path / "a", tmp_path / "b"
    sup = supervisor(
        [
            f"user:a=while [ ! -e {q(b)} ]; do sleep 0.01; done; touch {q(a)}",
            f"user:b=touch {q(b)}",
        ]
    )

    async def body(sup: HandlerSupervisor) -> None:
        sup.enqueue(SerfUserEvent("a", b"", 1, False))
        sup.enqueue(SerfUserEvent("b", b"", 2, False))
        await wait_for(lambda: stats(sup, 0).runs == 1 and stats(sup, 1).runs == 1)

    run_with(sup, body)
    assert a.exists() and stats(sup, 0).timeouts == 0


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie waiting for its reaper


def test_hanging_handler_is_killed_at_timeout_others_carry_on(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    ok = tmp_path / "ok"
    cfg = SupervisorConfig(timeout=0.5, kill_grace=0.3, queue_size=8, max_concurrency=4)
    # The hanging script ignores SIGTERM, so only the SIGKILL of its process group ends it.
    hang = f"trap '' TERM; sleep 1000 & echo $$ $! > {q(pids)}; wait; wait"
    sup = supervisor([f"user:hang={hang}", f"user:ok=echo $SERF_USER_LTIME >> {q(ok)}"], cfg)

    async def body(sup: HandlerSupervisor) -> None:
        sup.enqueue(SerfUserEvent("hang", b"", 1, False))
        sup.enqueue(SerfUserEvent("ok", b"", 2, False))
        await wait_for(lambda: stats(sup, 1).runs == 1)
        # "ok" finished while "hang" was still inside its first run.
        assert stats(sup, 0).runs == 0 and stats(sup, 0).timeouts == 0
        sup.enqueue(SerfUserEvent("hang", b"", 3, False))  # queued behind the hung run
        await wait_for(lambda: stats(sup, 0).timeouts == 2)

    with capture_logs() as logs:
        run_with(sup, body)
    assert ok.read_text().split() == ["2"]
    timeouts = [e for e in logs if e["event"] == "handler_timeout"]
    assert len(timeouts) == 2 and timeouts[0]["timeout"] == 0.5
    for pid in map(int, pids.read_text().split()):
        trio.run(wait_for, lambda pid=pid: _gone(pid), 5.0)


def test_crashing_handler_logged_and_next_event_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = f'read x; if [ "$x" = crash ]; then echo boom >&2; exit 3; fi; echo "$x" >> {q(out)}'
    with capture_logs() as logs:
        sup = supervisor([f"user={script}"])

        async def body(sup: HandlerSupervisor) -> None:
            sup.enqueue(SerfUserEvent("e", b"crash", 1, False))
            sup.enqueue(SerfUserEvent("e", b"fine", 2, False))
            await wait_for(lambda: stats(sup).runs == 2)

        run_with(sup, body)
    failed = [e for e in logs if e["event"] == "handler_failed"]
    assert len(failed) == 1
    assert failed[0]["exit_code"] == 3 and failed[0]["output_tail"] == "boom\n"
    assert failed[0]["log_level"] == "error" and "signal" not in failed[0]  # no signal=None
    assert out.read_text() == "fine\n"
    assert stats(sup).failures == 1


def test_query_output_is_the_response() -> None:
    answers: list[tuple[object, bytes]] = []

    async def respond(token: object, payload: bytes) -> None:
        answers.append((token, payload))

    sup = supervisor(
        [
            'query:load=printf "load-of-$SERF_SELF_NAME"; echo " (stderr too)" >&2',
            "query:fail=echo nope; exit 1",
            "query:silent=true",
        ],
        respond=respond,
    )

    async def body(sup: HandlerSupervisor) -> None:
        sup.enqueue(SerfQueryEvent("load", b"", 3, token=41, deadline=0.0))
        sup.enqueue(SerfQueryEvent("fail", b"", 4, token=42, deadline=0.0))
        sup.enqueue(SerfQueryEvent("silent", b"", 5, token=43, deadline=0.0))
        await wait_for(lambda: all(s.runs == 1 for s in sup.statistics()))

    run_with(sup, body)
    assert answers == [(41, b"load-of-n1 (stderr too)\n")]
    assert [s.responses for s in sup.statistics()] == [1, 0, 0]


def test_output_cap_keeps_last_8k_and_warns() -> None:
    answers: list[bytes] = []
    sup = supervisor(
        ["query=head -c 20000 /dev/zero | tr '\\000' a; printf END"],
        respond=lambda _token, payload: answers.append(payload),
    )

    async def body(sup: HandlerSupervisor) -> None:
        sup.enqueue(SerfQueryEvent("big", b"", 1, token=1, deadline=0.0))
        await wait_for(lambda: stats(sup).runs == 1)

    with capture_logs() as logs:
        run_with(sup, body)
    assert len(answers) == 1
    assert len(answers[0]) == 8192 and answers[0].endswith(b"aaaEND")
    trunc = [e for e in logs if e["event"] == "handler_output_truncated"]
    assert trunc and trunc[0]["written"] == 20003 and trunc[0]["kept"] == 8192
    assert stats(sup).truncated == 1


def test_response_too_large_or_rejected_is_logged() -> None:
    calls: list[bytes] = []

    def respond(_token: object, payload: bytes) -> None:
        calls.append(payload)
        raise ResponseRejected("response already sent")

    cfg = SupervisorConfig(timeout=5.0, max_response=10)
    sup = supervisor(
        ["query:big=printf 0123456789X", "query:small=printf ok"], cfg, respond=respond
    )

    async def body(sup: HandlerSupervisor) -> None:
        sup.enqueue(SerfQueryEvent("big", b"", 1, token=1, deadline=0.0))
        sup.enqueue(SerfQueryEvent("small", b"", 2, token=2, deadline=0.0))
        await wait_for(lambda: all(s.runs == 1 for s in sup.statistics()))

    with capture_logs() as logs:
        run_with(sup, body)
    assert calls == [b"ok"]
    events = {e["event"]: e for e in logs}
    assert events["handler_response_too_large"]["size"] == 11
    assert events["handler_response_rejected"]["reason"] == "response already sent"


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = SupervisorConfig(timeout=5.0, queue_size=2)
    sup = supervisor([f"user=echo $SERF_USER_LTIME >> {q(out)}"], cfg)

    async def body(sup: HandlerSupervisor) -> None:
        # The worker is parked in receive(), so it takes event 1 directly; with no checkpoint
        # between the calls, 2 and 3 fill the queue and 4 and 5 are dropped.
        await trio.testing.wait_all_tasks_blocked()
        queued = [sup.enqueue(SerfUserEvent("e", b"", lt, False)) for lt in range(1, 6)]
        assert queued == [1, 1, 1, 0, 0]
        await wait_for(lambda: stats(sup).runs == 3)

    with capture_logs() as logs:
        run_with(sup, body)
    assert stats(sup).dropped == 2
    full = [e for e in logs if e["event"] == "handler_queue_full"]
    assert [e["dropped"] for e in full] == [1, 2]
    assert out.read_text().split() == ["1", "2", "3"]


def test_a_full_queue_drops_user_events_but_never_a_member_event(tmp_path: Path) -> None:
    """The delivery contract holds at the handler queue too: under a user-event flood a member
    event is not dropped; it waits beside the full queue and runs before the queued events."""
    out = tmp_path / "out"
    cfg = SupervisorConfig(timeout=5.0, queue_size=2)
    sup = supervisor([f"echo $SERF_EVENT${{SERF_USER_LTIME:-}} >> {q(out)}"], cfg)
    join = SerfMemberEvent("member-join", (member("n2", "10.0.0.2", {}),))
    leave = SerfMemberEvent("member-leave", (member("n2", "10.0.0.2", {}),))

    async def body(sup: HandlerSupervisor) -> None:
        await trio.testing.wait_all_tasks_blocked()
        queued = [sup.enqueue(SerfUserEvent("e", b"", lt, False)) for lt in range(1, 6)]
        queued += [sup.enqueue(join), sup.enqueue(SerfUserEvent("e", b"", 6, False))]
        queued.append(sup.enqueue(leave))
        assert queued == [1, 1, 1, 0, 0, 1, 0, 1]
        await wait_for(lambda: stats(sup).runs == 5)

    run_with(sup, body)
    assert stats(sup).dropped == 3  # user events 4, 5 and 6; no member event
    # Event 1 was running; the member events that found the queue full went before 2 and 3.
    assert out.read_text().split() == ["user1", "member-join", "member-leave", "user2", "user3"]


def test_enqueue_ignores_non_events_and_unmatched() -> None:
    sup = supervisor(["member-join=true"])
    assert sup.enqueue(object()) == 0
    assert sup.enqueue(SerfUserEvent("e", b"", 1, False)) == 0
    assert sup.enqueue(SerfMemberEvent("member-join", ())) == 1


def test_reload_keeps_unchanged_and_swaps_the_rest(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    keep = f"user=echo $SERF_USER_LTIME >> {q(a)}"
    sup = supervisor([keep, "member-join=true"])

    async def body(sup: HandlerSupervisor) -> None:
        sup.enqueue(SerfUserEvent("e", b"", 1, False))
        await wait_for(lambda: stats(sup).runs == 1)
        sup.update([parse_handler_spec(keep), parse_handler_spec(f"user=touch {q(b)}")])
        assert [s.spec for s in sup.statistics()] == [keep, f"user=touch {q(b)}"]
        assert stats(sup).runs == 1  # same handler object kept its counters
        sup.enqueue(SerfUserEvent("e", b"", 2, False))
        await wait_for(lambda: stats(sup, 0).runs == 2 and stats(sup, 1).runs == 1)

    run_with(sup, body)
    assert a.read_text().split() == ["1", "2"] and b.exists()


def test_tag_change_reaches_later_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sup = supervisor([f'user=echo "$SERF_TAG_DC" >> {q(out)}'])

    async def body(sup: HandlerSupervisor) -> None:
        sup.enqueue(SerfUserEvent("e", b"", 1, False))
        await wait_for(lambda: stats(sup).runs == 1)
        sup.set_self_tags({"dc": "east"})
        sup.enqueue(SerfUserEvent("e", b"", 2, False))
        await wait_for(lambda: stats(sup).runs == 2)

    run_with(sup, body)
    assert out.read_text().split() == ["lab", "east"]


def test_cancellation_kills_running_script(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    sup = supervisor(
        [f"user=echo $$ > {q(pid_file)}.tmp && mv {q(pid_file)}.tmp {q(pid_file)}; sleep 1000"]
    )

    async def body(sup: HandlerSupervisor) -> None:
        sup.enqueue(SerfUserEvent("e", b"", 1, False))
        await wait_for(pid_file.exists)

    run_with(sup, body)
    pid = int(pid_file.read_text())
    trio.run(wait_for, lambda: _gone(pid), 5.0)


def test_spawn_failure_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    import serf_trio.runtime.handlers as mod

    monkeypatch.setattr(mod, "SHELL", "/nonexistent/sh")
    sup = supervisor(["user=true"])

    async def body(sup: HandlerSupervisor) -> None:
        sup.enqueue(SerfUserEvent("e", b"", 1, False))
        await wait_for(lambda: stats(sup).runs == 1)

    with capture_logs() as logs:
        run_with(sup, body)
    assert any(e["event"] == "handler_spawn_failed" for e in logs)
    assert stats(sup).failures == 1


def test_structlog_is_usable_without_capture() -> None:
    # The supervisor must work with whatever logger the agent configured.
    sup = supervisor(["user=true"], logger=structlog.get_logger().bind(node="n1"))

    async def body(sup: HandlerSupervisor) -> None:
        sup.enqueue(SerfUserEvent("e", b"", 1, False))
        await wait_for(lambda: stats(sup).runs == 1)

    run_with(sup, body)
    assert stats(sup).failures == 0


HANDLERS = Path(__file__).parent.parent.parent / "handlers"


def test_example_handlers_through_the_router(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # handlers inherit the agent's working directory
    monkeypatch.setenv("MEMBER_LOG", str(tmp_path / "members.log"))
    monkeypatch.setenv("DEPLOY_STATE", str(tmp_path / "deploy.ltime"))
    answers: list[bytes] = []
    sup = supervisor(
        [shlex.quote(str(HANDLERS / "router.sh"))],
        self_name="n1",
        self_tags={"role": "web"},
        respond=lambda _t, payload: answers.append(payload),
    )
    events: list[object] = [
        SerfMemberEvent(
            "member-join",
            (member("n2", "127.0.0.12", {}), member("n3", "127.0.0.13", {"role": "db"})),
        ),
        SerfUserEvent("deploy", b"v1.2.3", 5, True),
        SerfUserEvent("deploy", b"v1.0.0", 4, True),  # older LTime: ignored by deploy.sh
        SerfUserEvent("other", b"x", 6, True),  # no route
        SerfQueryEvent("whoami", b"", 7, token=9, deadline=0.0),
    ]

    async def body(sup: HandlerSupervisor) -> None:
        for e in events:
            sup.enqueue(e)
        await wait_for(lambda: stats(sup).runs == len(events))

    run_with(sup, body)
    assert stats(sup).failures == 0 and stats(sup).timeouts == 0
    lines = (tmp_path / "members.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "member-join seen-by=n1 name=n2 ip=127.0.0.12 role= tags=",
        "member-join seen-by=n1 name=n3 ip=127.0.0.13 role=db tags=role=db",
    ]
    assert (tmp_path / "deploy.ltime").read_text() == "5\n"
    assert answers == [b"n1 role=web"]


def test_handler_killed_by_signal_is_a_failure_with_the_signal_name() -> None:
    sup = supervisor(["user=kill -SEGV $$"])

    async def body(sup: HandlerSupervisor) -> None:
        sup.enqueue(SerfUserEvent("e", b"", 1, False))
        await wait_for(lambda: stats(sup).runs == 1)

    with capture_logs() as logs:
        run_with(sup, body)
    failed = [e for e in logs if e["event"] == "handler_failed"]
    assert failed[0]["exit_code"] == -11 and failed[0]["signal"] == "SIGSEGV"
