"""The ``serf-trio`` command line (Typer).

Only ``agent`` and ``demo`` start trio; other commands must stay fast, so every heavy import
happens inside the command that needs it.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="A Serf-compatible agent.")

VERSION = "0.1.0"


@app.command()
def version() -> None:
    """Print the version and the protocols spoken."""
    typer.echo(f"serf-trio v{VERSION}")
    typer.echo("memberlist protocol 2 (understands 1-5), Serf protocol 5 (understands 2-5)")


@app.command()
def demo(
    nodes: Annotated[int, typer.Option(min=2, max=16, help="Number of nodes.")] = 3,
    port: Annotated[int, typer.Option(help="First port (0: any free ports).")] = 7946,
    log_level: Annotated[str, typer.Option(help="Log level of the nodes (stderr).")] = "warning",
) -> None:
    """Run a local demo cluster on 127.0.0.1: join, failure detection, graceful leave."""
    from serf_trio.runtime.demo import main as demo_main

    raise typer.Exit(demo_main(nodes, port, log_level))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def agent(ctx: typer.Context) -> None:
    """Run one membership node (minimal runner; flags: --name --bind --join --tag ...)."""
    from serf_trio.runtime.runner import main as runner_main

    raise typer.Exit(runner_main(list(ctx.args)))


def main() -> None:
    app()
