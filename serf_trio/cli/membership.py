"""``join``, ``leave`` and ``force-leave``: the commands that change who is in the cluster.

Messages are Serf's (``Successfully joined cluster by contacting N nodes.``, ``Graceful leave
complete``); ``force-leave`` prints nothing on success, as ``serf force-leave`` does.  ``leave``
returns when the agent's leave is over, as Serf's does; a leave that timed out or was aborted
is ``Error leaving: <the agent's reason>`` and exit status 1.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .common import RpcAddrOpt, RpcAuthOpt, RpcSocketOpt, agent_client

# A graceful leave waits for the leave broadcast to spread (Serf: BroadcastTimeout 5 s, then
# LeavePropagateDelay); allow for that on top of the usual request timeout.
LEAVE_TIMEOUT = 30.0


def join(
    addresses: Annotated[
        list[str],
        typer.Argument(
            metavar="ADDRESS...", help="Addresses to join: host, host:port or name/host:port."
        ),
    ],
    replay: Annotated[
        bool, typer.Option("--replay", help="Replay past user events to the joining agent.")
    ] = False,
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """Tell the agent to join a cluster by contacting the given addresses."""
    with agent_client(
        rpc_addr, rpc_socket, rpc_auth, "joining the cluster", timeout=LEAVE_TIMEOUT
    ) as client:
        num = client.join(list(addresses), replay)
    typer.echo(f"Successfully joined cluster by contacting {num} nodes.")


def leave(
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """Gracefully leave the cluster and shut the agent down.

    Returns once the leave is over (the others have been told). Exit status 1 when it timed
    out or was aborted; the agent shuts down either way.
    """
    with agent_client(rpc_addr, rpc_socket, rpc_auth, "leaving", timeout=LEAVE_TIMEOUT) as client:
        client.leave()
    typer.echo("Graceful leave complete")


def force_leave(
    node: Annotated[str, typer.Argument(help="Name of the failed node.")],
    prune: Annotated[
        bool, typer.Option("--prune", help="Also remove the node from the member list at once.")
    ] = False,
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """Force a failed member into the 'left' state."""
    with agent_client(rpc_addr, rpc_socket, rpc_auth, "force leaving") as client:
        client.force_leave(node, prune)
