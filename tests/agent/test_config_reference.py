"""docs/configuration.md and the example configs against the code, so that neither can drift:
every key the loader accepts is in the doc's tables (and nothing else is), every flag the doc
names exists and sets that key, every flag of ``build_parser`` is documented, and both
example files load and mention every key."""

from __future__ import annotations

import re
from pathlib import Path

from serf_trio.agent.config import ALIASES, CONFIG_KEYS, IGNORED_KEYS, build_parser, flag_keys, load

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+) \|")


def table(section: str) -> dict[str, str]:
    """First column -> second column of the table under the ``## section`` heading."""
    text = DOC.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    rows: dict[str, str] = {}
    for line in text[start : end if end != -1 else None].splitlines():
        m = ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} is listed twice"
            rows[m.group(1)] = m.group(2).strip()
    return rows


def test_doc_lists_exactly_the_accepted_keys() -> None:
    keys, ignored = table("Keys"), table("Accepted and ignored")
    assert set(keys).isdisjoint(ignored)
    assert set(keys) | set(ignored) == set(CONFIG_KEYS)
    assert set(ignored) == set(IGNORED_KEYS)


def test_each_documented_flag_exists_and_sets_its_key() -> None:
    flags = flag_keys()
    rows = {**table("Keys"), **table("Accepted and ignored")}
    documented: set[str] = set()
    for key, cell in rows.items():
        if cell == "none":
            continue
        flag = cell.strip("`")
        assert flag in flags, f"{key}: the doc names {flag}, which build_parser lacks"
        assert flags[flag] == ALIASES.get(key, key), f"{flag} sets {flags[flag]}, not {key}"
        documented.add(flag)
    keyless = set(table("Flags without a key"))
    assert keyless == {"--config-file", "--config-dir"}
    every_flag = {
        s for a in build_parser()._actions for s in a.option_strings if s.startswith("--")
    }
    assert documented | keyless | {"--help"} == every_flag


def test_every_flag_has_help_and_a_readable_metavar() -> None:
    for action in build_parser()._actions:
        name = action.option_strings[-1]
        assert action.help, f"{name} has no help text"
        metavar = str(action.metavar or "")
        assert not re.search(r"[<>{}]|\.\.\.|list\[", metavar), f"{name}: metavar {metavar!r}"
    usage = build_parser().format_help()
    assert "{" not in usage and "<" not in usage


def test_example_configs_load_and_show_the_keys() -> None:
    toml = REPO / "config" / "serf-trio.example.toml"
    json_file = REPO / "config" / "serf-trio.example.json"
    for path in (toml, json_file):
        loaded = load(["--config-file", str(path)], hostname="h")
        assert loaded.notices == ()  # the examples ask for nothing that is ignored
    text = toml.read_text()
    shown = set(re.findall(r"^#? ?([a-z_]+) = ", text, re.MULTILINE)) | set(
        re.findall(r"^\[([a-z_]+)\]", text, re.MULTILINE)
    )
    assert set(CONFIG_KEYS) - set(IGNORED_KEYS) <= shown
    assert "written by a later version" not in text
