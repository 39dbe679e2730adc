"""``serf-trio monitor``: stream the agent's log lines until interrupted.

The agent first replays its recent lines (up to 512), then sends new ones as they are logged at
``--log-level`` or above (Serf's levels: trace, debug, info, warn, err; any case). Ctrl-C ends
the stream quietly with status 0, as ``serf monitor`` does.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .common import RpcAddrOpt, RpcAuthOpt, RpcSocketOpt, agent_client

# The stream may be idle for a long time; the client must not give up between lines.
MONITOR_TIMEOUT = 10.0


def monitor(
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level", metavar="LEVEL", help="Lowest level to show: trace|debug|info|warn|err."
        ),
    ] = "INFO",
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """Stream log lines from the agent."""
    try:
        with agent_client(
            rpc_addr, rpc_socket, rpc_auth, "starting monitor", timeout=MONITOR_TIMEOUT
        ) as client:
            for line in client.monitor(log_level.upper()):
                typer.echo(line)
    except (KeyboardInterrupt, BrokenPipeError):
        # Ctrl-C, or the reader went away (``serf-trio monitor | head``): a normal end.
        raise typer.Exit(0) from None
