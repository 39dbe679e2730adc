"""How the node's records look to RPC clients, and the subscriptions that carry them.

The library hands out Serf's own records (``serf_trio.api.events``); RPC clients get the
plain ``serf_trio.rpc.api`` records.  This module is the one place that converts between them
(members, member/user/query events), so the facade (``members``) and the event pipeline
(``stream`` records) cannot disagree about a field.  ``Subscription`` is the iterator every
subscription the RPC server holds (``stream``, ``monitor``) is read through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import trio

from serf_trio.api.events import Member, MemberEvent, QueryEvent, UserEvent
from serf_trio.rpc.api import (
    EventRecord,
    MemberEventRecord,
    QueryEventRecord,
    RpcMember,
    UserEventRecord,
)
from serf_trio.serf.tags import decode_tags
from serf_trio.swim.api import MemberInfo

T = TypeVar("T")


def rpc_member(m: MemberInfo) -> RpcMember:
    """A memberlist ``MemberInfo`` as RPC clients see it (versions from its vsn bytes)."""
    v = m.vsn if len(m.vsn) >= 6 else bytes([1, 5, 2, 2, 5, 5])
    return RpcMember(
        name=m.name,
        addr=m.addr.packed(),
        port=m.addr.port,
        tags=decode_tags(m.meta),
        status=m.state.serf_status,
        protocol_min=v[0],
        protocol_max=v[1],
        protocol_cur=v[2],
        delegate_min=v[3],
        delegate_max=v[4],
        delegate_cur=v[5],
    )


def rpc_serf_member(m: Member) -> RpcMember:
    """A Serf member as RPC clients see it (status alive | leaving | left | failed)."""
    return RpcMember(
        name=m.name,
        addr=m.addr.packed(),
        port=m.addr.port,
        tags=dict(m.tags),
        status=m.status,
        protocol_min=m.protocol_min,
        protocol_max=m.protocol_max,
        protocol_cur=m.protocol_cur,
        delegate_min=m.delegate_min,
        delegate_max=m.delegate_max,
        delegate_cur=m.delegate_cur,
    )


def event_record(ev: object) -> EventRecord | None:
    """A Serf event as an RPC ``stream`` record (``None`` for anything else); a query carries
    its token, which the client hands back to ``respond``."""
    if isinstance(ev, MemberEvent):
        return MemberEventRecord(ev.kind, tuple(rpc_serf_member(m) for m in ev.members))
    if isinstance(ev, UserEvent):
        return UserEventRecord(ev.name, ev.payload, ev.ltime, ev.coalesce)
    if isinstance(ev, QueryEvent):
        return QueryEventRecord(ev.name, ev.payload, ev.ltime, ev.token)
    return None


class Subscription(AsyncIterator[T]):
    """An async iterator over a subscription channel; ``aclose`` (or garbage collection)
    ends the subscription so that the publisher stops feeding it."""

    def __init__(self, recv: trio.MemoryReceiveChannel[T], on_close: Callable[[], None]) -> None:
        self._recv = recv
        self._on_close = on_close

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._on_close()
        self._recv.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def __del__(self) -> None:
        self._recv.close()
