"""Serf's member-event and user-event coalescing windows (time as input)."""

from __future__ import annotations

from serf_trio.serf.coalesce import (
    CoalesceConfig,
    EventCoalescer,
    MemberEventCoalescer,
    UserEventCoalescer,
)
from serf_trio.serf.effects import SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from serf_trio.serf.members import SerfMember
from serf_trio.swim.api import Address


def member(name: str, **tags: str) -> SerfMember:
    return SerfMember(name, Address("127.0.0.1", 7946), tags, "alive", 1, 5, 5, 2, 5, 5, 0)


def ev(kind: str, *names: str) -> SerfMemberEvent:
    return SerfMemberEvent(kind, tuple(member(n) for n in names))


def names_by_kind(events: list[object]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        assert isinstance(e, SerfMemberEvent)
        assert e.kind not in out, "one event per type"
        out[e.kind] = [m.name for m in e.members]
    return out


def test_member_events_flush_after_quiescent_period() -> None:
    c = MemberEventCoalescer(3.0, 1.0)
    assert c.add(0.0, ev("member-join", "a")) == []
    assert c.add(0.5, ev("member-join", "b")) == []
    assert c.next_deadline() == 1.5
    assert c.flush(1.49) == []
    out = c.flush(1.5)
    assert names_by_kind(out) == {"member-join": ["a", "b"]}
    assert c.next_deadline() is None
    assert c.flush(10.0) == []


def test_member_events_flush_at_coalesce_period_despite_activity() -> None:
    c = MemberEventCoalescer(3.0, 1.0)
    t = 0.0
    while t < 3.0:
        assert c.flush(t) == []
        c.add(t, ev("member-join", f"n{int(t * 10)}"))
        t += 0.5
    # Quiescence never came; the 3 s quantum from the first event forces the flush.
    assert c.next_deadline() == 3.0
    assert len(names_by_kind(c.flush(3.0))["member-join"]) == 6


def test_latest_type_per_member_wins_and_one_event_per_type() -> None:
    c = MemberEventCoalescer(3.0, 1.0)
    c.add(0.0, ev("member-join", "a", "b", "c"))
    c.add(0.1, ev("member-failed", "b"))
    c.add(0.2, ev("member-update", "c"))
    assert names_by_kind(c.flush(5.0)) == {
        "member-join": ["a"],
        "member-failed": ["b"],
        "member-update": ["c"],
    }


def test_repeated_type_is_skipped_except_update() -> None:
    c = MemberEventCoalescer(3.0, 1.0)
    c.add(0.0, ev("member-join", "a"))
    c.add(0.0, ev("member-update", "u"))
    c.flush(1.0)
    c.add(2.0, ev("member-join", "a"))  # same type as last delivered for a -> skipped
    c.add(2.0, ev("member-update", "u"))  # updates always go out
    assert names_by_kind(c.flush(3.0)) == {"member-update": ["u"]}
    c.add(4.0, ev("member-failed", "a"))
    c.add(4.0, ev("member-join", "a"))  # failed then join within a window: join, but last was join
    assert c.flush(5.0) == []


def test_reap_forgets_the_member() -> None:
    c = MemberEventCoalescer(3.0, 1.0)
    c.add(0.0, ev("member-join", "a"))
    c.flush(1.0)
    c.add(2.0, ev("member-reap", "a"))
    assert names_by_kind(c.flush(3.0)) == {"member-reap": ["a"]}
    c.add(4.0, ev("member-join", "a"))
    assert names_by_kind(c.flush(5.0)) == {"member-join": ["a"]}
    c.add(6.0, ev("member-join", "a"))
    assert c.flush(7.0) == []


def test_member_coalescer_passes_other_events_through() -> None:
    c = MemberEventCoalescer(3.0, 1.0)
    user = SerfUserEvent("deploy", b"", 1, True)
    assert c.add(0.0, user) == [user]
    assert c.next_deadline() is None


def test_zero_period_disables() -> None:
    c = MemberEventCoalescer(0.0, 1.0)
    e = ev("member-join", "a")
    assert c.add(0.0, e) == [e]
    u = UserEventCoalescer(3.0, 0.0)
    ue = SerfUserEvent("x", b"", 1, True)
    assert u.add(0.0, ue) == [ue]


def test_user_events_latest_ltime_per_name() -> None:
    c = UserEventCoalescer(3.0, 1.0)
    d3 = SerfUserEvent("deploy", b"v3", 3, True)
    d5 = SerfUserEvent("deploy", b"v5", 5, True)
    d4 = SerfUserEvent("deploy", b"v4", 4, True)
    d5b = SerfUserEvent("deploy", b"v5b", 5, True)
    r1 = SerfUserEvent("restart", b"", 1, True)
    for i, e in enumerate([d3, d5, r1, d4, d5b]):
        assert c.add(i * 0.1, e) == []
    assert c.pending == 3
    assert c.flush(1.4) == [d5, d5b, r1]


def test_user_events_without_cc_pass_immediately() -> None:
    c = UserEventCoalescer(3.0, 1.0)
    e = SerfUserEvent("deploy", b"v", 7, False)
    assert c.add(0.0, e) == [e]
    assert c.next_deadline() is None


def test_chain_queries_pass_and_windows_are_independent() -> None:
    c = EventCoalescer(CoalesceConfig())
    q = SerfQueryEvent("load", b"", 1, token=1, deadline=5.0)
    assert c.add(0.0, q) == [q]
    c.add(0.0, ev("member-join", "a"))
    c.add(0.5, SerfUserEvent("deploy", b"1", 2, True))
    assert c.next_deadline() == 1.0
    out = c.flush(1.0)
    assert names_by_kind(out) == {"member-join": ["a"]}
    assert c.next_deadline() == 1.5
    out = c.flush(1.5)
    assert [e.name for e in out if isinstance(e, SerfUserEvent)] == ["deploy"]
    c.add(2.0, SerfUserEvent("deploy", b"2", 3, True))
    assert len(c.drain()) == 1
    assert c.next_deadline() is None
