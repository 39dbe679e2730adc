"""What the RPC server says when it cannot listen (which socket or address, and why), what it
logs when it can (no ``tcp=None``), and which socket directories it may create."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs

from serf_trio.rpc.paths import in_runtime_dir
from serf_trio.rpc.server import RpcServeError, RpcServer

from .fake_agent import FakeAgent
from .rpc_harness import running_server


def test_listening_log_has_only_what_listens(tmp_path: Path) -> None:
    async def body() -> None:
        async with running_server(FakeAgent(), tmp_path / "rpc.sock"):
            pass

    with capture_logs() as logs:
        trio.run(body)
    (rec,) = [r for r in logs if r["event"] == "rpc_listening"]
    assert rec["socket"] == str(tmp_path / "rpc.sock")
    assert "tcp" not in rec  # not tcp=None


def test_a_taken_tcp_port_names_the_rpc_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = RpcServer(FakeAgent(), socket_path=None, tcp_addr=("127.0.0.1", port))
        with pytest.raises(RpcServeError) as info:
            trio.run(server.serve)
    assert str(info.value) == (
        f"cannot listen on the RPC address 127.0.0.1:{port} (TCP): address already in use"
    )


def test_a_missing_directory_is_an_error_unless_it_may_be_made(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "rpc.sock"
    server = RpcServer(FakeAgent(), socket_path=str(path), make_dir=False)
    with pytest.raises(RpcServeError) as info:
        trio.run(server.serve)
    assert str(info.value) == (
        f"cannot listen on the RPC socket {path}: its directory {path.parent} does not exist "
        "(create it first, or choose another socket path)"
    )
    assert not path.parent.exists()

    async def body() -> None:
        async with running_server(FakeAgent(), path, make_dir=True):
            assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700

    trio.run(body)


def test_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    path = tmp_path / "rpc.sock"
    path.write_text("not a socket")
    with pytest.raises(RpcServeError) as info:
        trio.run(RpcServer(FakeAgent(), socket_path=str(path)).serve)
    assert (
        str(info.value) == f"cannot listen on the RPC socket {path}: it exists and is not a socket"
    )


def test_only_the_runtime_directories_may_be_created(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    assert in_runtime_dir(str(tmp_path / "serf-trio" / "rpc.sock"), env)
    assert in_runtime_dir(str(tmp_path / "serf-trio" / "other.sock"), env)
    assert in_runtime_dir("/run/serf-trio/rpc.sock", env)
    assert in_runtime_dir("/run/serf-trio/rpc.sock", {})
    assert not in_runtime_dir(str(tmp_path / "typo" / "rpc.sock"), env)
    assert not in_runtime_dir("/run/rpc.sock", env)
