"""``examples/quickstart.py`` is the README's library example: the README shows nothing that is
not in the file, and the file runs (two nodes on real sockets on loopback, in this process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import quickstart
import trio

ROOT = Path(__file__).resolve().parents[2]


def readme_example() -> list[str]:
    """The code lines of the README's "Use it as a library" block."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use it as a library") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)].splitlines()


def test_the_readme_shows_the_quickstart_file() -> None:
    shown = [line for line in readme_example() if line.strip()]
    assert len(shown) >= 15
    source = iter((ROOT / "examples" / "quickstart.py").read_text().splitlines())
    # Every line the README shows is in the file, in the same order (the file adds only its
    # docstring, --help and log settings).
    missing = [line for line in shown if line not in source]
    assert missing == []


@pytest.mark.realnet
def test_the_quickstart_runs(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        with trio.fail_after(30):
            await quickstart.main()

    trio.run(main)
    lines = capsys.readouterr().out.splitlines()
    assert "bob got hello: b'world'" in lines
    assert "[('alice', 'alive', {'role': 'web'}), ('bob', 'alive', {})]" in lines
