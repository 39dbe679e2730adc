"""Log lines for what a core reports: one pure function, no state changes.

The sans-IO cores never log; the driver hands every effect that reaches the application here
first.  Event names are snake_case: ``member_join``, ``member_failed``, ``member_left``,
``member_update`` (memberlist), Serf's ``member_join`` ... ``member_reap``, ``user_event``,
``query_event``, ``packet_dropped``, ``join_done``, ``leave_done`` and the core's ``Notice``
names (``suspected``, ``declared_dead``, ``refuted``, ...).  A notice's ``node`` field names the
member it is about, so it is logged as ``member``: every line's ``node`` is the logging node.
Received user events and queries are info lines, as in Serf (``Received event: ...``).
"""

from __future__ import annotations

from typing import Any

from serf_trio.serf.effects import SerfMemberEvent, SerfQueryEvent, SerfUserEvent
from serf_trio.swim.api import (
    JoinDone,
    LeaveDone,
    MemberEvent,
    MemberEventKind,
    Notice,
    State,
    Violation,
)

_FAILED_STATES = {State.DEAD: "member_failed", State.LEFT: "member_left"}
_NOTICE_KEYS = {"node": "member"}


def is_name_conflict_loss(eff: object) -> bool:
    """Serf: the minority of a name-conflict resolution shuts down (without leaving)."""
    return (
        isinstance(eff, Notice)
        and eff.event == "name_conflict_resolution"
        and eff.fields.get("won") is False
    )


def report(log: Any, eff: object) -> None:
    """Log one effect; unknown records are ignored."""
    if isinstance(eff, MemberEvent):
        m = eff.member
        if eff.kind is MemberEventKind.JOIN:
            event = "member_join"
        elif eff.kind is MemberEventKind.LEAVE:
            event = _FAILED_STATES.get(m.state, "member_failed")
        else:
            event = "member_update"
        log.info(event, member=m.name, addr=str(m.addr), incarnation=m.incarnation)
    elif isinstance(eff, SerfMemberEvent):
        for sm in eff.members:
            log.info(
                eff.kind.replace("-", "_"), member=sm.name, addr=str(sm.addr), status=sm.status
            )
    elif isinstance(eff, SerfUserEvent):
        # Info, as Serf's agent logs ``Received event: user-event: NAME``.
        log.info("user_event", name=eff.name, ltime=eff.ltime, size=len(eff.payload))
    elif isinstance(eff, SerfQueryEvent):
        # Info, as Serf's agent logs ``Received event: query: NAME`` (internal ``_serf_``
        # queries are answered by the core and never reported here).
        log.info(
            "query_event",
            name=eff.name,
            ltime=eff.ltime,
            source=eff.source_node,
            size=len(eff.payload),
        )
    elif isinstance(eff, Notice):
        # A field without a value is left out (no ``key=None`` in a line).
        fields = {
            _NOTICE_KEYS.get(k, k): _loggable(v) for k, v in eff.fields.items() if v is not None
        }
        if is_name_conflict_loss(eff):
            log.error("name_conflict_lost", **fields)
        else:
            log.info(eff.event, **fields)
    elif isinstance(eff, Violation):
        log.warning("packet_dropped", source=eff.source, reason=eff.reason)
    elif isinstance(eff, JoinDone):
        log.info("join_done", joined=eff.joined, errors=list(eff.errors))
    elif isinstance(eff, LeaveDone):
        log.info("leave_done", timed_out=eff.timed_out)


def _loggable(v: object) -> object:
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)
