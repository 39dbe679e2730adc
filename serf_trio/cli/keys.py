"""``keygen`` and ``keys``: make a gossip encryption key and manage the cluster's keyring.

``keygen`` prints 32 random bytes in base64 (a key for secretbox and for AES-256, like
``serf keygen``). ``keys`` runs one keyring operation on every member via the agent (Serf's
internal key queries) and prints Serf's report: a ``failed:  node  message`` line per node
that refused, then a summary; exit status 1 unless every node succeeded. An unencrypted agent
answers, as Serf does, with each node's ``Keyring is empty (encryption not enabled)`` and
``N/N nodes reported failure``.

Beyond Serf's CLI (the RPC stays Serf's):

* ``--list`` shows each key's coverage as "installed on N of M members" (M: the members alive
  when the query ran);
* ``--remove KEY`` first lists the keys and refuses unless some *other* key is installed on
  every alive member, naming how far each key reaches: removing a key that some member still
  needs would cut that member off.  ``--force`` skips the check.
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
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --remove: skip the check that another key is installed everywhere.",
        ),
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
            echo_lines(columnize(_coverage_rows(resp)))
        elif install is not None:
            typer.echo("==> Installing key on all members...")
            _check(client.install_key(install), "Error installing key")
            typer.echo("Successfully installed key!")
        elif use is not None:
            typer.echo("==> Changing primary key...")
            _check(client.use_key(use), "Error changing primary key")
            typer.echo("Successfully changed primary key!")
        elif remove is not None:
            if not force:
                typer.echo("==> Checking that another key is installed on every member...")
                _check_removal(client.list_keys(), remove)
            typer.echo("==> Removing key...")
            _check(client.remove_key(remove), "Error removing key")
            typer.echo("Successfully removed key!")


def _coverage_rows(resp: KeyResponse) -> list[list[str]]:
    """One row per key, the widest coverage first: ``KEY  installed on N of M members``."""
    items = sorted((resp.keys or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    return [[k, f"installed on {n} of {resp.num_nodes} members"] for k, n in items]


def _check_removal(resp: KeyResponse, key: str) -> None:
    """Refuse to remove ``key`` unless another key is installed on every alive member."""
    keys = resp.keys or {}
    if not keys:
        return  # no member has a keyring: the remove itself reports that, as Serf's does
    everywhere = [
        k for k, n in keys.items() if k != key and n >= resp.num_nodes and resp.num_err == 0
    ]
    if everywhere and resp.num_resp >= resp.num_nodes:
        return
    lines = [f"Refusing to remove {key}: no other key is installed on every alive member."]
    if resp.num_resp < resp.num_nodes or resp.num_err:
        answered = resp.num_resp - resp.num_err
        lines.append(f"Only {answered} of {resp.num_nodes} members listed their keys.")
    lines.extend(f"  {row[0]}  {row[1]}" for row in _coverage_rows(resp))
    lines.append("Install and use a key everywhere first, or pass --force.")
    echo_lines(lines)
    fail(f"Error removing key: {key} may still be needed by some members")


def _check(resp: KeyResponse, prefix: str) -> None:
    """Print per-node failures; exit 1 with ``prefix: <error>`` unless all nodes succeeded."""
    rows = [["failed:", node, msg] for node, msg in sorted(resp.messages.items())]
    if not resp.error and resp.num_err == 0:
        return
    echo_lines(columnize(rows))
    typer.echo("")
    error = resp.error or f"{resp.num_err}/{resp.num_nodes} nodes reported failure"
    fail(f"{prefix}: {error}")
