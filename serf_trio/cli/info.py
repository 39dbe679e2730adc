"""``info``, ``rtt`` and ``reachability``: what operators ask the agent when debugging.

* ``info``: the agent's ``stats`` sections as ``serf info`` prints them (``section:`` then
  tab-indented ``key = value``, sorted) or as JSON (every section).  Serf's own sections (agent,
  runtime, serf, tags, event_handlers, and encryption) come first; the component counters
  serf-trio adds (memberlist, transport, delivery, handlers, rpc, ...) follow after a blank
  line, so a reader of Serf's output finds what it expects where it expects it.
* ``rtt A [B]``: the round trip time estimated from two Vivaldi coordinates (B defaults to the
  agent's own node): ``|a.Vec - b.Vec| + a.Height + b.Height``, plus both adjustments if that
  keeps it positive (SERF.md 11; serf ``coordinate.DistanceTo``).
* ``reachability``: sends Serf's internal ``_serf_ping`` query with acks and compares the nodes
  that acked with the members the agent believes alive; exit status 1 on any mismatch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from .common import (
    FormatOpt,
    OutputFormat,
    RpcAddrOpt,
    RpcAuthOpt,
    RpcSocketOpt,
    agent_client,
    echo_json,
    fail,
)

if TYPE_CHECKING:
    from serf_trio.serf.coordinate import Coordinate

# Serf's reachability test waits for the agent's default query timeout; give the socket more.
REACHABILITY_TIMEOUT = 60.0


def info(
    output: FormatOpt = OutputFormat.text,
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """Show debugging information about the agent."""
    with agent_client(rpc_addr, rpc_socket, rpc_auth, "querying agent") as client:
        stats = client.stats()
    if output is OutputFormat.json:
        echo_json({k: dict(sorted(v.items())) for k, v in sorted(stats.items())})
        return
    from serf_trio.rpc.api import AGENT_STATS_SECTIONS

    own = sorted(s for s in stats if s in AGENT_STATS_SECTIONS)
    extra = sorted(s for s in stats if s not in AGENT_STATS_SECTIONS)
    _print_sections(stats, own)
    if own and extra:
        typer.echo("")
    _print_sections(stats, extra)


def _print_sections(stats: dict[str, dict[str, str]], names: list[str]) -> None:
    for section in names:
        typer.echo(f"{section}:")
        for key, value in sorted(stats[section].items()):
            typer.echo(f"\t{key} = {value}")


def distance_seconds(a: Coordinate, b: Coordinate) -> float:
    """Estimated RTT between two coordinates, in seconds (serf ``DistanceTo``)."""
    if len(a.vec) != len(b.vec):
        raise ValueError("coordinate dimensions do not match")
    return a.distance_to(b)


def rtt(
    node_a: Annotated[str, typer.Argument(metavar="A", help="A node name.")],
    node_b: Annotated[
        str | None,
        typer.Argument(metavar="B", help="Another node name (default: the agent's node)."),
    ] = None,
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """Estimate the network round trip time between two nodes."""
    with agent_client(rpc_addr, rpc_socket, rpc_auth, "getting coordinates") as client:
        if node_b is None:
            node_b = client.stats().get("agent", {}).get("name", "")
        coord_a = client.get_coordinate(node_a)
        if coord_a is None:
            fail(f'Could not find a coordinate for node "{node_a}"')
        coord_b = client.get_coordinate(node_b)
        if coord_b is None:
            fail(f'Could not find a coordinate for node "{node_b}"')
    try:
        seconds = distance_seconds(coord_a, coord_b)
    except ValueError as exc:
        fail(f"Error computing rtt: {exc}")
    typer.echo(f"Estimated {node_a} <-> {node_b} rtt: {seconds * 1000:.3f} ms")


def reachability(
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show every ack and the timing.")
    ] = False,
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """Test network reachability: every live member should ack a ping query."""
    from serf_trio.rpc.api import QueryParams

    acks: list[str] = []
    with agent_client(
        rpc_addr, rpc_socket, rpc_auth, "sending query", timeout=REACHABILITY_TIMEOUT
    ) as client:
        members = client.members()
        live = {m.name for m in members if m.status == "alive"}
        typer.echo(f"Total members: {len(members)}, live members: {len(live)}")
        typer.echo("Starting reachability test...")
        start = last = time.monotonic()
        # Serf answers ``_serf_ping`` internally, with an ack and no response.
        params = QueryParams(name="_serf_ping", payload=b"", request_ack=True)
        for record in client.query(params):
            if record.type == "done":
                break
            if record.type != "ack":
                continue
            if verbose:
                typer.echo(f"\tAck from '{record.from_}'")
            if record.from_ in acks:
                typer.echo(f"Duplicate response from '{record.from_}'")
            acks.append(record.from_)
            last = time.monotonic()
        end = time.monotonic()
    if verbose:
        typer.echo(
            f"Query time: {end - start:.2f} sec, time to last response: {last - start:.2f} sec"
        )
    status = _report(live, acks)
    raise typer.Exit(status)


def _report(live: set[str], acks: list[str]) -> int:
    acked = set(acks)
    missing = sorted(live - acked)
    extra = sorted(acked - live)
    status = 0
    if len(acks) != len(acked):
        typer.echo(
            "Duplicate responses mean a misconfiguration: verify that node names are unique."
        )
        status = 1
    if not missing and not extra:
        typer.echo("Successfully contacted all live nodes")
        return status
    if extra:
        typer.echo("Received acks from nodes that are not live:")
        for name in extra:
            typer.echo(f"\t{name}")
        typer.echo("This could mean false failure detections (misconfiguration or network issue).")
    if missing:
        typer.echo("Missing acks from:")
        for name in missing:
            typer.echo(f"\t{name}")
        typer.echo("This could mean gossip packets are being lost (firewall or network issue).")
    return 1
