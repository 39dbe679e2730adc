"""In-process ``Agent`` construction shared by the agent tests (real loopback sockets)."""

from __future__ import annotations

from pathlib import Path

import structlog

from serf_trio.agent import Agent
from serf_trio.agent.config import load
from serf_trio.agent.notify import Notifier
from serf_trio.runtime.logs import LogSettings


def make_agent(tmp_path: Path, name: str, *extra: str, port: int = 0) -> Agent:
    """An agent named ``name`` on 127.0.0.1 (``port`` 0: any), local profile, its RPC socket
    in ``tmp_path``; ``extra`` are more agent flags."""
    argv = [
        f"--node={name}",
        f"--bind=127.0.0.1:{port}",
        "--profile=local",
        f"--rpc-socket={tmp_path / (name + '.sock')}",
        *extra,
    ]
    return Agent(
        load(argv),
        argv,
        settings=LogSettings(),
        notifier=Notifier({}),
        logger=structlog.get_logger().bind(node=name),
    )
