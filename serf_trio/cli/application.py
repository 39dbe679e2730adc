"""The ``serf-trio`` Typer application, assembled per invocation for a fast start.

Commands are listed in ``CLIENT_COMMANDS`` (Serf's order) by module and function name. The
full application (``app``, used for ``serf-trio --help`` and by tests) imports every command
module; ``main()`` builds an application holding only the command being run, so Typer inspects
one function signature instead of sixteen and only that command's module is imported.

Only ``agent`` and ``demo`` start trio, and they import it inside the command; ``simulate``
imports the (pure) simulator inside the command. Every other
command imports Typer, the standard library and ``serf_trio.rpc.client`` (stdlib sockets and
msgpack). Rich is kept out: ``rich_markup_mode=None`` gives Click's plain help and errors, and
``pretty_exceptions_enable=False`` keeps Typer's Rich traceback hook away. Pydantic is kept out
by ``fast.FastCommand``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from .fast import FastCommand, FastGroup

VERSION = "0.1.0"

# "\b" keeps Click from rewrapping the list (it would break the paths at their hyphens).
HELP = """A Serf-compatible cluster membership agent and its command line.

\b
Client commands find the agent in this order:
  1. the --rpc-addr HOST:PORT (TCP) or --rpc-socket PATH flag;
  2. SERF_TRIO_RPC_SOCKET, then Serf's SERF_RPC_ADDR (HOST:PORT);
  3. the first of these sockets that exists:
     $XDG_RUNTIME_DIR/serf-trio/rpc.sock  (an agent run by a user)
     /run/serf-trio/rpc.sock  (the system service)
The RPC token comes from --rpc-auth, else SERF_RPC_AUTH."""
HELP_OPTIONS = ["-h", "--help"]

# name -> (module in serf_trio.cli, function); help lists them in this order.
CLIENT_COMMANDS: dict[str, tuple[str, str]] = {
    "join": ("membership", "join"),
    "leave": ("membership", "leave"),
    "force-leave": ("membership", "force_leave"),
    "members": ("members", "members"),
    "event": ("events", "event"),
    "query": ("events", "query"),
    "tags": ("tags", "tags"),
    "monitor": ("monitor", "monitor"),
    "info": ("info", "info"),
    "rtt": ("info", "rtt"),
    "reachability": ("info", "reachability"),
    "keygen": ("keys", "keygen"),
    "keys": ("keys", "keys"),
}
LOCAL_COMMANDS = ("agent", "version", "demo", "simulate")


def agent(ctx: typer.Context) -> None:
    """Run a serf-trio agent (flags: serf-trio agent --help)."""
    from serf_trio.process import keep_rich_out

    keep_rich_out()
    from serf_trio.agent import main as agent_main

    raise typer.Exit(agent_main(list(ctx.args)))


def version() -> None:
    """Print the version and the protocols spoken."""
    typer.echo(f"serf-trio v{VERSION}")
    typer.echo("memberlist protocol 2 (understands 1-5), Serf protocol 5 (understands 2-5)")


def _version_flag(value: bool) -> None:
    if value:
        version()
        raise typer.Exit()


def demo(
    nodes: Annotated[int, typer.Option(metavar="N", help="Number of nodes (2-16).")] = 3,
    port: Annotated[
        int, typer.Option(metavar="PORT", help="First port (0: any free ports).")
    ] = 7946,
    log_level: Annotated[
        str, typer.Option(metavar="LEVEL", help="Log level of the nodes (stderr).")
    ] = "warning",
) -> None:
    """Run a local demo cluster on 127.0.0.1: join, failure detection, graceful leave."""
    if not 2 <= nodes <= 16:
        typer.echo(f"Error: --nodes must be from 2 to 16, not {nodes}", err=True)
        raise typer.Exit(2)
    from serf_trio.runtime.demo import main as demo_main

    raise typer.Exit(demo_main(nodes, port, log_level))


def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            expose_value=False,
            callback=_version_flag,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """A callback keeps Typer in group mode even when only one command is registered."""


def build_app(only: str | None = None) -> typer.Typer:
    """The application with every command, or with just ``only`` (what ``main`` runs)."""
    app = typer.Typer(
        name="serf-trio",
        cls=FastGroup,
        add_completion=False,
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": HELP_OPTIONS},
        help=HELP,
    )
    app.callback()(_root)
    if only in (None, "agent"):
        # Every argument, --help included, belongs to the agent's own parser.
        app.command(
            "agent",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            add_help_option=False,
        )(agent)
    for name, (module_name, func) in CLIENT_COMMANDS.items():
        if only in (None, name):
            module = importlib.import_module(f"{__package__}.{module_name}")
            app.command(name, cls=FastCommand)(getattr(module, func))
    if only in (None, "version"):
        app.command("version", cls=FastCommand)(version)
    if only in (None, "demo"):
        app.command("demo")(demo)
    if only in (None, "simulate"):
        # The module imports only Typer and the standard library; the simulator loads when
        # the command runs.
        from .simulate import simulate

        app.command("simulate", cls=FastCommand)(simulate)
    return app


def main() -> None:
    """Console-script entry point (``serf-trio``)."""
    first = sys.argv[1] if len(sys.argv) > 1 else None
    if first == "--version":
        first = "version"  # the smallest application that has the flag
    known = first in CLIENT_COMMANDS or first in LOCAL_COMMANDS
    build_app(first if known else None)()


_full_app: list[typer.Typer] = []  # built on first use


def full_app() -> typer.Typer:
    """The application with every command (``serf_trio.cli.app``: tests, Typer tooling)."""
    if not _full_app:
        _full_app.append(build_app())
    return _full_app[0]
