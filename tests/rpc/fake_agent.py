"""A scripted AgentAPI for RPC tests: records every call, answers from fixed data.

Streams are fed by the test: ``push_event``/``push_log`` deliver to every live subscriber
through bounded channels (dropping when full, as the real agent must).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio

from serf_trio.rpc.api import (
    AgentError,
    EventRecord,
    KeyResponse,
    QueryParams,
    QueryRecord,
    RpcMember,
)
from serf_trio.rpc.protocol import LOG_LEVELS
from serf_trio.serf.coordinate import Coordinate

IP1 = bytes([127, 0, 0, 11])
IP2 = bytes([127, 0, 0, 12])


def default_members() -> list[RpcMember]:
    return [
        RpcMember("n1", IP1, 7946, {"role": "lb", "dc": "lab"}, "alive"),
        RpcMember("n2", IP2, 7947, {"role": "web", "dc": "lab"}, "alive"),
        RpcMember("n3", bytes([127, 0, 0, 13]), 7948, {"role": "db"}, "failed"),
    ]


@dataclass
class FakeAgent:
    node_name: str = "n1"
    rpc_auth: str = ""
    member_list: list[RpcMember] = field(default_factory=default_members)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    join_result: int | str = 1  # an int, or an error text
    event_error: str = ""
    query_records: list[QueryRecord] = field(default_factory=list)
    query_error: str = ""
    key_response: KeyResponse = field(
        default_factory=lambda: KeyResponse(
            keys={},
            messages={"n1": "Keyring is empty (encryption not enabled)"},
            num_nodes=1,
            num_resp=1,
            num_err=1,
            error="1/1 nodes reported failure",
        )
    )
    coordinates: dict[str, Coordinate] = field(default_factory=dict)
    stats_data: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"agent": {"name": "n1"}, "serf": {"members": "3"}}
    )
    log_backlog: list[str] = field(default_factory=list)
    left: trio.Event = field(default_factory=trio.Event)
    _event_subs: list[trio.MemorySendChannel[EventRecord]] = field(default_factory=list)
    _log_subs: list[trio.MemorySendChannel[str]] = field(default_factory=list)
    dropped: int = 0

    # -- AgentAPI -------------------------------------------------------------------------------

    def members(self) -> list[RpcMember]:
        return list(self.member_list)

    async def join(self, addrs: list[str], replay: bool) -> int:
        self.calls.append(("join", (addrs, replay)))
        if isinstance(self.join_result, str):
            raise AgentError(self.join_result)
        return self.join_result

    async def leave(self) -> None:
        self.calls.append(("leave", None))
        self.left.set()

    async def force_leave(self, node: str, prune: bool) -> None:
        self.calls.append(("force_leave", (node, prune)))

    async def set_tags(self, tags: dict[str, str], delete: list[str]) -> None:
        self.calls.append(("set_tags", (tags, delete)))

    async def user_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        self.calls.append(("user_event", (name, payload, coalesce)))
        if self.event_error:
            raise AgentError(self.event_error)

    def query(self, params: QueryParams) -> AsyncIterator[QueryRecord]:
        self.calls.append(("query", params))
        if self.query_error:
            raise AgentError(self.query_error)
        return self._query_gen()

    async def _query_gen(self) -> AsyncIterator[QueryRecord]:
        for rec in self.query_records:
            await trio.lowlevel.checkpoint()
            yield rec

    async def respond(self, token: int, payload: bytes) -> None:
        self.calls.append(("respond", (token, payload)))

    def events(self, filter_spec: str) -> AsyncIterator[EventRecord]:
        self.calls.append(("events", filter_spec))
        send, recv = trio.open_memory_channel[EventRecord](512)
        self._event_subs.append(send)
        return self._drain(recv)

    def logs(self, level: str) -> AsyncIterator[str]:
        if level.upper() not in LOG_LEVELS:
            raise AgentError(f"Unknown log level: {level.upper()}")
        self.calls.append(("logs", level))
        send, recv = trio.open_memory_channel[str](512)
        for line in self.log_backlog:
            send.send_nowait(line)
        self._log_subs.append(send)
        return self._drain(recv)

    @staticmethod
    async def _drain(recv: trio.MemoryReceiveChannel[Any]) -> AsyncIterator[Any]:
        async with recv:
            async for item in recv:
                yield item

    def stats(self) -> dict[str, dict[str, str]]:
        return self.stats_data

    def get_coordinate(self, node: str) -> Coordinate | None:
        return self.coordinates.get(node)

    async def key_operation(self, op: str, key: str) -> KeyResponse:
        self.calls.append(("key", (op, key)))
        return self.key_response

    # -- test controls --------------------------------------------------------------------------

    def push_event(self, rec: EventRecord) -> None:
        for send in list(self._event_subs):
            try:
                send.send_nowait(rec)
            except trio.WouldBlock:
                self.dropped += 1
            except trio.BrokenResourceError:
                self._event_subs.remove(send)

    def push_log(self, line: str) -> None:
        for send in list(self._log_subs):
            try:
                send.send_nowait(line)
            except trio.WouldBlock:
                self.dropped += 1
            except trio.BrokenResourceError:
                self._log_subs.remove(send)

    def live_event_subscribers(self) -> int:
        """Subscribers whose stream is still open (a stopped stream closes its receiver)."""
        return sum(s.statistics().open_receive_channels > 0 for s in self._event_subs)
