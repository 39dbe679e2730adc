"""The ``serf-trio`` command line (Typer); one module per command group.

``application.py`` assembles the commands (``main`` builds only the one being run);
``common.py`` holds what client commands share (finding the agent, the error boundary, Serf's
input and output forms); ``fast.py`` keeps Pydantic off the client path. Only ``agent`` and
``demo`` start trio; every other command must start fast, so heavy imports happen inside those
two commands.
"""

from __future__ import annotations

import typer

from .application import VERSION, build_app, main

__all__ = ["VERSION", "app", "build_app", "main"]


def __getattr__(name: str) -> typer.Typer:
    """``serf_trio.cli.app`` is the full Typer application, built on first use."""
    if name == "app":
        from . import application

        return application.full_app()
    raise AttributeError(name)
