"""``serf-trio members``: list the cluster as the agent sees it, in Serf's text or JSON form.

Text (``serf members``): one aligned row per member, ``name  ip:port  status  k=v,k=v``;
``--detailed`` adds the Serf protocol columns (``Protocol Version: 5  Available Protocol Range:
[2, 5]``: the Delegate* versions of the RPC member record). JSON (``-format json``):
``{"members": [{"name", "addr": "ip:port", "port", "tags", "status", "protocol": {"max",
"min", "version"}}]}`` with map keys sorted as Go's encoder writes them; an empty result is
``[]`` (Serf writes ``null``, which breaks ``jq '.members[]'``).

Filters (``--status``, ``--name``, ``--tag k=REGEX``) are regular expressions the agent anchors
(``^...$``) and applies, via ``members-filtered``.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import (
    FormatOpt,
    OutputFormat,
    RpcAddrOpt,
    RpcAuthOpt,
    RpcSocketOpt,
    TagFilterOpt,
    agent_client,
    check_regex,
    columnize,
    echo_json,
    echo_lines,
    parse_tag_filters,
)

if TYPE_CHECKING:
    from serf_trio.rpc.api import RpcMember


def host_port(addr: bytes, port: int) -> str:
    """``ip:port``, IPv6 in brackets (Go's ``net.JoinHostPort``)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return f"{addr.hex()}:{port}"
    if ip.version == 6:
        return f"[{ip}]:{port}"
    return f"{ip}:{port}"


def member_json(m: RpcMember) -> dict[str, Any]:
    return {
        "name": m.name,
        "addr": host_port(m.addr, m.port),
        "port": m.port,
        "tags": dict(sorted(m.tags.items())),
        "status": m.status,
        "protocol": {"max": m.delegate_max, "min": m.delegate_min, "version": m.delegate_cur},
    }


def member_rows(members: list[RpcMember], detailed: bool) -> list[list[str]]:
    rows = []
    for m in members:
        row = [
            m.name,
            host_port(m.addr, m.port),
            m.status,
            ",".join(f"{k}={v}" for k, v in m.tags.items()),
        ]
        if detailed:
            row.append(f"Protocol Version: {m.delegate_cur}")
            row.append(f"Available Protocol Range: [{m.delegate_min}, {m.delegate_max}]")
        rows.append(row)
    return rows


def members(
    status: Annotated[
        str,
        typer.Option(
            "--status", metavar="REGEX", help="Only members whose status matches this regex."
        ),
    ] = "",
    name: Annotated[
        str,
        typer.Option("--name", metavar="REGEX", help="Only members whose name matches this regex."),
    ] = "",
    tag: TagFilterOpt = None,
    detailed: Annotated[
        bool, typer.Option("--detailed", help="Also show the Serf protocol versions.")
    ] = False,
    output: FormatOpt = OutputFormat.text,
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """List the members of the cluster."""
    tags = parse_tag_filters(tag)
    check_regex(status, "status")
    check_regex(name, "name")
    with agent_client(rpc_addr, rpc_socket, rpc_auth, "retrieving members") as client:
        if status or name or tags:
            found = client.members_filtered(name, status, tags)
        else:
            found = client.members()
    if output is OutputFormat.json:
        echo_json({"members": [member_json(m) for m in found]})
    else:
        echo_lines(columnize(member_rows(found, detailed)))
