"""The ``serf-trio`` console script: the agent runs without the command-line framework.

``serf-trio agent ...`` is what a systemd unit, a container or a join storm starts, so its
start-up cost is paid on every host; the client commands are what an operator types.  Only the
client commands go through the Typer application (``serf_trio.cli``); ``agent`` is dispatched
here straight to the agent's own parser (``serf_trio.agent.main``), which already owns every
agent flag and ``--help``.  That keeps Typer, Click and their imports (about 25 ms of CPU and
1.5 MiB per agent process) off the agent path, and keeps rich out of it (``process.py``).
"""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the ``serf-trio`` script."""
    if len(sys.argv) > 1 and sys.argv[1] == "agent":
        from serf_trio.process import keep_rich_out

        keep_rich_out()
        from serf_trio.agent.main import main as agent_main

        sys.exit(agent_main(sys.argv[2:]))
    from serf_trio.cli import main as cli_main

    cli_main()
