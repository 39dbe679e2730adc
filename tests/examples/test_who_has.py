"""``examples/who_has.py``: its lookup rule, its functions on real sockets on loopback (three
nodes in this process, ports from the OS), its command line in-process, and ``--help`` as a
real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest
import trio
import who_has
from who_has import Holder

import serf_trio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "who_has.py"
LIMIT = 30.0  # seconds for any one wait on loopback (each takes well under one)
ANSWER_WINDOW = 1.0  # the query's own timeout: a query gathers answers for this long


def data_dirs(tmp_path: Path, files: dict[str, dict[str, str]]) -> dict[str, Path]:
    """One data directory per node name, holding ``{relative path: text}``."""
    dirs = {}
    for name, content in files.items():
        root = tmp_path / name
        root.mkdir()
        for rel, text in content.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        dirs[name] = root
    return dirs


def test_lookup_answers_only_for_files_inside_the_data_dir(tmp_path: Path) -> None:
    root = data_dirs(tmp_path, {"a": {"notes.txt": "hello\n", "sub/deep.bin": "xy"}})["a"]
    (tmp_path / "secret.txt").write_text("nope")
    os.symlink(tmp_path / "secret.txt", root / "escape.txt")
    os.symlink(root / "notes.txt", root / "alias.txt")

    assert who_has.lookup(root, "notes.txt") == 6
    assert who_has.lookup(root, "sub/deep.bin") == 2
    assert who_has.lookup(root, "alias.txt") == 6  # a symlink inside the directory is fine
    for refused in (
        "missing.txt",
        "sub",
        "",
        "../secret.txt",
        "sub/../../secret.txt",
        str(tmp_path / "secret.txt"),
        "escape.txt",
        "bad\0name",
    ):
        assert who_has.lookup(root, refused) is None, refused
    assert who_has.lookup(tmp_path / "no-such-dir", "notes.txt") is None


@pytest.mark.realnet
def test_three_nodes_on_loopback_answer_who_has(tmp_path: Path) -> None:
    dirs = data_dirs(
        tmp_path,
        {
            "a": {"notes.txt": "hello\n"},
            "b": {"other.txt": "x"},
            "c": {"notes.txt": "hi\n", "deep/notes.txt": "deeper"},
        },
    )
    (tmp_path / "outside.txt").write_text("outside")

    async def body() -> None:
        stops = {name: trio.Event() for name in dirs}
        nodes: dict[str, serf_trio.Node] = {}
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                for name, root in dirs.items():
                    seeds = [str(nodes["a"].address)] if nodes else []
                    run = partial(who_has.serve, bind="127.0.0.1:0", seeds=seeds, profile="local")
                    nodes[name] = await nursery.start(run, name, root, stops[name])
                while min(n.num_alive() for n in nodes.values()) < 3:  # noqa: ASYNC110
                    await trio.sleep(0.05)

                ask = partial(who_has.who_has, nodes["b"], query_timeout=ANSWER_WINDOW)
                # "a" and "c" answer; "b", which asks, has no such file and stays silent.
                assert await ask("notes.txt") == [Holder("a", 6), Holder("c", 3)]
                assert await ask("deep/notes.txt") == [Holder("c", 6)]
                assert await ask("missing.txt") == []
                assert await ask("../outside.txt") == []  # never outside a data directory
                with pytest.raises(serf_trio.SerfError):
                    await ask("x" * 2000)  # past Serf's query size limit

                for stop in stops.values():
                    stop.set()
            # Every serve() returned by itself after its graceful leave: nothing was cancelled.
            assert not nursery.cancel_scope.cancel_called
            assert not any(n.running for n in nodes.values())

    trio.run(body)


@pytest.mark.realnet
def test_the_command_line_asks_prints_and_sets_the_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``amain`` (what ``main`` runs) against a running node, in this process."""
    dirs = data_dirs(tmp_path, {"a": {"notes.txt": "hello\n"}, "c": {"notes.txt": "hi\n"}})

    async def body() -> list[int]:
        stop = trio.Event()
        codes: list[int] = []
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                run = partial(who_has.serve, bind="127.0.0.1:0", profile="local")
                a = await nursery.start(run, "a", dirs["a"], stop)
                for path in ("notes.txt", "missing.txt"):
                    argv: Sequence[str] = [
                        "--name", f"asker-{len(codes)}", "--bind", "127.0.0.1:0",
                        "--join", str(a.address), "--data-dir", str(dirs["c"]),
                        "--ask", path, "--timeout", str(ANSWER_WINDOW), "--profile", "local",
                    ]  # fmt: skip
                    codes.append(await who_has.amain(who_has.parse_args(argv)))
                stop.set()
        return codes

    assert trio.run(body) == [0, 1]
    lines = capsys.readouterr().out.splitlines()
    first = lines.index("2 node(s) have notes.txt:")
    # The asker answers its own query too (it has a data directory).
    assert [line.split() for line in lines[first + 1 : first + 3]] == [
        ["a", "6", "bytes"],
        ["asker-0", "3", "bytes"],
    ]
    assert "nobody has missing.txt" in lines


def test_help_runs_as_a_script() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: who_has.py")
    for flag in ("--ask PATH", "--data-dir", "--join ADDR", "--timeout"):
        assert flag in proc.stdout
