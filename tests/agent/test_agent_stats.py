"""RPC ``stats`` is read from the node's one stats registry: Serf's sections with today's keys,
then every component's section, all values strings."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from agent_harness import make_agent
from helpers import wait_until

pytestmark = pytest.mark.realnet

SERF_KEYS = {
    "members",
    "failed",
    "left",
    "health_score",
    "member_time",
    "event_time",
    "query_time",
    "intent_queue",
    "event_queue",
    "query_queue",
    "encrypted",
    "coordinate_resets",
}


def test_stats_has_serf_sections_and_the_registry(tmp_path: Path) -> None:
    trio.run(stats_sections, tmp_path)


async def stats_sections(tmp_path: Path) -> None:
    a = make_agent(
        tmp_path, "st", f"--snapshot={tmp_path / 'st.snap'}", "--event-handler=user:hello=true"
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await a.user_event("hello", b"", False)
            await wait_until(lambda: a.stats()["handlers"]["runs"] == "1")
            stats = a.stats()
            assert list(stats)[:6] == [
                "agent",
                "runtime",
                "serf",
                "tags",
                "event_handlers",
                "encryption",
            ]
            assert set(stats["serf"]) == SERF_KEYS and stats["serf"]["encrypted"] == "false"
            for section in ("memberlist", "transport", "delivery", "driver"):
                assert section in stats
            assert int(stats["pipeline"]["received"]) >= 1  # its join and the event
            assert stats["rpc"]["connections_open"] == "0"
            assert "write_errors" in stats["snapshot"]
            assert all(isinstance(v, str) for s in stats.values() for v in s.values())
            nursery.cancel_scope.cancel()
