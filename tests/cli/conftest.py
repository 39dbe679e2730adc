"""A fake RPC client for CLI tests: records every call and answers from canned data.

``fake_client`` monkeypatches ``serf_trio.cli.common.make_client`` (the one factory every
command goes through), so commands run exactly as in production minus the socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from typer.testing import CliRunner

from serf_trio.cli import common
from serf_trio.rpc.api import KeyResponse, QueryParams, QueryRecord, RpcMember
from serf_trio.rpc.client import ConnectError, RpcError
from serf_trio.serf.coordinate import Coordinate


def member(name: str, ip: bytes, port: int, status: str = "alive", **tags: str) -> RpcMember:
    return RpcMember(name=name, addr=ip, port=port, tags=dict(tags), status=status)


DEFAULT_MEMBERS = [
    member("n1", bytes([127, 0, 0, 11]), 7946, role="lb", dc="lab"),
    member("web-2", bytes([127, 0, 0, 12]), 7947, "failed", role="web"),
    member("n3", bytes([127, 0, 0, 13]), 7948, "left"),
]


@dataclass
class FakeClient:
    """Stands in for ``RpcClient``; set ``errors[method] = text`` to make a call fail."""

    members_list: list[RpcMember] = field(default_factory=lambda: list(DEFAULT_MEMBERS))
    query_records: list[QueryRecord] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    stats_body: dict[str, dict[str, str]] = field(default_factory=dict)
    coords: dict[str, Coordinate] = field(default_factory=dict)
    key_response: KeyResponse | None = None
    errors: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    opened: list[tuple[common.ClientOptions, float]] = field(default_factory=list)
    closed: int = 0

    def _call(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        if method in self.errors:
            raise RpcError(self.errors[method])

    def members(self) -> list[RpcMember]:
        self._call("members")
        return self.members_list

    def members_filtered(self, name: str, status: str, tags: dict[str, str]) -> list[RpcMember]:
        self._call("members_filtered", name, status, tags)
        return self.members_list

    def join(self, addrs: list[str], replay: bool) -> int:
        self._call("join", addrs, replay)
        return len(addrs)

    def leave(self) -> None:
        self._call("leave")

    def force_leave(self, node: str, prune: bool) -> None:
        self._call("force_leave", node, prune)

    def tags(self, set: dict[str, str], delete: list[str]) -> None:
        self._call("tags", set, delete)

    def event(self, name: str, payload: bytes, coalesce: bool) -> None:
        self._call("event", name, payload, coalesce)

    def query(self, params: QueryParams) -> Iterator[QueryRecord]:
        self._call("query", params)
        return iter(self.query_records)

    def monitor(self, level: str) -> Iterator[str]:
        self._call("monitor", level)
        return iter(self.log_lines)

    def stats(self) -> dict[str, dict[str, str]]:
        self._call("stats")
        return self.stats_body

    def get_coordinate(self, node: str) -> Coordinate | None:
        self._call("get_coordinate", node)
        return self.coords.get(node)

    def _key(self, method: str, *args: Any) -> KeyResponse:
        self._call(method, *args)
        assert self.key_response is not None
        return self.key_response

    def install_key(self, key: str) -> KeyResponse:
        return self._key("install_key", key)

    def use_key(self, key: str) -> KeyResponse:
        return self._key("use_key", key)

    def remove_key(self, key: str) -> KeyResponse:
        return self._key("remove_key", key)

    def list_keys(self) -> KeyResponse:
        return self._key("list_keys")

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()

    def factory(opts: common.ClientOptions, timeout: float) -> FakeClient:
        client.opened.append((opts, timeout))
        return client

    monkeypatch.setattr(common, "make_client", factory)
    for var in (common.ENV_RPC_ADDR, common.ENV_RPC_SOCKET, common.ENV_RPC_AUTH):
        monkeypatch.delenv(var, raising=False)
    return client


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection attempt fails as the real client's does with no agent."""

    def factory(opts: common.ClientOptions, timeout: float) -> FakeClient:
        raise ConnectError(
            f"cannot connect to the agent ({opts.target}: No such file or directory)"
        )

    monkeypatch.setattr(common, "make_client", factory)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
