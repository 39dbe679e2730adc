"""``info`` with the component sections the agent's stats registry adds: Serf's sections first,
the others after a blank line; JSON holds every section."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from serf_trio.cli import app

from .conftest import FakeClient

SOCK = ["--rpc-socket", "/tmp/test-agent.sock"]

STATS = {
    "serf": {"members": "1"},
    "agent": {"name": "n1"},
    "memberlist": {"probes_sent": "4", "alive": "1"},
    "handlers": {"runs": "2"},
    "encryption": {"encrypted": "false"},
}


def test_info_prints_serf_sections_first_then_components(
    runner: CliRunner, fake: FakeClient
) -> None:
    fake.stats_body = STATS
    result = runner.invoke(app, ["info", *SOCK])
    assert result.exit_code == 0
    assert result.stdout == (
        "agent:\n\tname = n1\nencryption:\n\tencrypted = false\nserf:\n\tmembers = 1\n"
        "\n"
        "handlers:\n\truns = 2\nmemberlist:\n\talive = 1\n\tprobes_sent = 4\n"
    )
    result = runner.invoke(app, ["info", "--format", "json", *SOCK])
    assert json.loads(result.stdout) == STATS


def test_info_shows_the_new_counters_and_json_carries_them(
    runner: CliRunner, fake: FakeClient
) -> None:
    stats = {
        "serf": {"members": "3"},
        "serf_counters": {"member_events.member-failed": "1", "user_events_sent": "2"},
        "memberlist": {"messages_in.ping": "5", "suspicions_raised": "1"},
        "runtime_lag": {"lag_seconds": "0.0"},
    }
    fake.stats_body = stats
    result = runner.invoke(app, ["info", *SOCK])
    assert result.exit_code == 0
    text = result.stdout
    assert text.index("serf:") < text.index("\n\n") < text.index("serf_counters:")
    assert "\tmember_events.member-failed = 1\n" in text
    assert "\tmessages_in.ping = 5\n" in text and "runtime_lag:\n" in text
    result = runner.invoke(app, ["info", "--format", "json", *SOCK])
    assert json.loads(result.stdout) == stats
