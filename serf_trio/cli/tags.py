"""``serf-trio tags``: change the running agent's tags without restarting it.

The agent applies ``--delete`` first, then ``--set`` (RPC ``tags``: new tags = current minus
DeleteTags, then Tags added or overwritten) and gossips the new tags to the cluster.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .common import RpcAddrOpt, RpcAuthOpt, RpcSocketOpt, agent_client, fail, parse_kv


def tags(
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="K=V", help="k=v: add or change a tag (repeatable)."),
    ] = None,
    delete: Annotated[
        list[str] | None, typer.Option("--delete", metavar="K", help="Remove tag k (repeatable).")
    ] = None,
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """Modify the tags of the running agent."""
    if not set_ and not delete:
        fail("Error: at least one of --set or --delete is required")
    new = parse_kv(set_ or [], "tag")
    with agent_client(rpc_addr, rpc_socket, rpc_auth, "setting tags") as client:
        client.tags(new, list(delete or []))
    typer.echo("Successfully updated agent tags")
