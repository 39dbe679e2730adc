"""``keygen`` and ``keys``: make a gossip encryption key and manage the cluster's keyring.

``keygen`` prints 32 random bytes in base64 (an AES-256 key, like ``serf keygen``). ``keys``
runs one keyring operation on every member via the agent and prints Serf's report: a
``failed:  node  message`` line per node that refused, then a summary; exit status 1 unless
every node succeeded. An unencrypted agent answers, as Serf does, with each node's
``Keyring is empty (encryption not enabled)`` and ``N/N nodes reported failure``.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, Annotated

import typer

from .common import (
    RpcAddrOpt,
    RpcAuthOpt,
    RpcSocketOpt,
    agent_client,
    columnize,
    echo_lines,
    fail,
)

if TYPE_CHECKING:
    from serf_trio.rpc.api import KeyResponse

KEY_BYTES = 32
# Key operations gather answers from every member (an internal query): allow for its timeout.
KEYS_TIMEOUT = 60.0


def keygen() -> None:
    """Generate a new encryption key (32 random bytes, base64)."""
    typer.echo(base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii"))


def keys(
    install: Annotated[
        str | None, typer.Option("--install", metavar="KEY", help="Install KEY on every member.")
    ] = None,
    use: Annotated[
        str | None,
        typer.Option("--use", metavar="KEY", help="Make KEY the primary key everywhere."),
    ] = None,
    remove: Annotated[
        str | None, typer.Option("--remove", metavar="KEY", help="Remove KEY from every member.")
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List the keys installed in the cluster.")
    ] = False,
    rpc_addr: RpcAddrOpt = None,
    rpc_socket: RpcSocketOpt = None,
    rpc_auth: RpcAuthOpt = None,
) -> None:
    """Manipulate the encryption keyring of the cluster."""
    chosen = [x for x in (install, use, remove) if x is not None]
    if len(chosen) + int(list_) != 1:
        fail("Error: give exactly one of --install, --use, --remove or --list")
    with agent_client(
        rpc_addr, rpc_socket, rpc_auth, "managing keys", timeout=KEYS_TIMEOUT
    ) as client:
        if list_:
            typer.echo("==> Asking all members for installed keys...")
            resp = client.list_keys()
            _check(resp, "Failed to gather member keys")
            typer.echo("")
            typer.echo("Keys gathered, listing cluster keyring...")
            typer.echo("")
            rows = [[k, f"[{n}/{resp.num_nodes}]"] for k, n in sorted((resp.keys or {}).items())]
            echo_lines(columnize(rows))
        elif install is not None:
            typer.echo("==> Installing key on all members...")
            _check(client.install_key(install), "Error installing key")
            typer.echo("Successfully installed key!")
        elif use is not None:
            typer.echo("==> Changing primary key...")
            _check(client.use_key(use), "Error changing primary key")
            typer.echo("Successfully changed primary key!")
        elif remove is not None:
            typer.echo("==> Removing key...")
            _check(client.remove_key(remove), "Error removing key")
            typer.echo("Successfully removed key!")


def _check(resp: KeyResponse, prefix: str) -> None:
    """Print per-node failures; exit 1 with ``prefix: <error>`` unless all nodes succeeded."""
    rows = [["failed:", node, msg] for node, msg in sorted(resp.messages.items())]
    if not resp.error and resp.num_err == 0:
        return
    echo_lines(columnize(rows))
    typer.echo("")
    error = resp.error or f"{resp.num_err}/{resp.num_nodes} nodes reported failure"
    fail(f"{prefix}: {error}")
