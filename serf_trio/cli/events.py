"""``event`` and ``query``: send a user event, or a query and print what comes back.

``query`` streams records (RPC.md 4.2) until the agent's final ``done`` at the query deadline.
Text output follows ``serf query``: ``Query 'x' dispatched``, one ``Ack from 'n'`` /
``Response from 'n': text`` line per record as it arrives, then ``Total Acks: N`` (only when
acks were requested) and ``Total Responses: N``. JSON output is Serf's
``{"Acks": [...], "Responses": {node: text}}``, printed once the query is done (``Acks`` is
``[]`` rather than Serf's ``null`` without acks).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .common import (
    DEFAULT_TIMEOUT,
    FormatOpt,
    OutputFormat,
    RpcAddrOpt,
    RpcAuthOpt,
    RpcSocketOpt,
    TagFilterOpt,
    agent_client,
    echo_json,
    fail,
    parse_duration,
    parse_tag_filters,
    payload_text,
)

# Extra socket time on top of the query's own timeout before the client gives up on the agent.
QUERY_GRACE = 5.0
# A timeout of 0 lets the agent pick Serf's default (GossipInterval * QueryTimeoutMult *
# log(N+1), a few seconds for small clusters); wait at least this long for its ``done``.
QUERY_DEFAULT_WAIT = 60.0
# Serf's CLI refuses relay factors above 5 (each relay multiplies the response traffic).
MAX_RELAY_FACTOR = 5


def event(
    name: Annotated[str, typer.Argument(help="Event name.")],
    payload: Annotated[str, typer.Argument(help="Optional payload.")] = "",
    coalesce: Annotated[
        bool,
        typer.Option(
            "--coalesce/--no-coalesce", help="Let handlers see only the newest of same-name events."
        ),
    ] = True,
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """Send a custom user event through the cluster."""
    with agent_client(rpc_addr, rpc_socket, rpc_auth, "sending event") as client:
        client.event(name, payload.encode(), coalesce)
    typer.echo(f"Event '{name}' dispatched! Coalescing enabled: {str(coalesce).lower()}")


def query(
    name: Annotated[str, typer.Argument(help="Query name.")],
    payload: Annotated[str, typer.Argument(help="Optional payload.")] = "",
    node: Annotated[
        list[str] | None,
        typer.Option("--node", metavar="NODE", help="Only ask this node (repeatable)."),
    ] = None,
    tag: TagFilterOpt = None,
    no_ack: Annotated[
        bool, typer.Option("--no-ack", help="Do not ask nodes to acknowledge receipt.")
    ] = False,
    relay_factor: Annotated[
        int,
        typer.Option(
            "--relay-factor", metavar="N", help="Also send responses via N random nodes (0-5)."
        ),
    ] = 0,
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout",
            metavar="DURATION",
            help="How long to wait, Go form (5s, 500ms); 0: agent default.",
        ),
    ] = "0",
    output: FormatOpt = OutputFormat.text,
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """Send a query to the cluster and print the acks and responses."""
    from serf_trio.rpc.api import QueryParams

    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        fail(f"Error: {exc}")
    if seconds < 0:
        fail(f"Error: negative timeout {timeout!r}")
    if not 0 <= relay_factor <= MAX_RELAY_FACTOR:
        fail(f"Error: --relay-factor must be between 0 and {MAX_RELAY_FACTOR}")
    tags = parse_tag_filters(tag)
    params = QueryParams(
        name=name,
        payload=payload.encode(),
        filter_nodes=tuple(node or ()),
        filter_tags=tags,
        request_ack=not no_ack,
        relay_factor=relay_factor,
        timeout=seconds,
    )
    text = output is OutputFormat.text
    wait = (seconds if seconds > 0 else QUERY_DEFAULT_WAIT) + QUERY_GRACE
    acks: list[str] = []
    responses: dict[str, str] = {}
    with agent_client(
        rpc_addr, rpc_socket, rpc_auth, "sending query", timeout=max(wait, DEFAULT_TIMEOUT)
    ) as client:
        records = client.query(params)
        if text:
            typer.echo(f"Query '{name}' dispatched")
        for record in records:
            if record.type == "done":
                break
            if record.type == "ack":
                acks.append(record.from_)
                if text:
                    typer.echo(f"Ack from '{record.from_}'")
            elif record.type == "response":
                body = payload_text(record.payload)
                responses[record.from_] = body
                if text:
                    # Handler output usually ends in a newline; one line per response.
                    typer.echo(f"Response from '{record.from_}': {body.rstrip(chr(10))}")
    if text:
        if params.request_ack:
            typer.echo(f"Total Acks: {len(acks)}")
        typer.echo(f"Total Responses: {len(responses)}")
    else:
        result: dict[str, Any] = {"Acks": acks, "Responses": responses}
        echo_json(result)
