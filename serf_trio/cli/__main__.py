"""``python -m serf_trio.cli``: the same as the ``serf-trio`` script (``agent`` skips Typer)."""

from serf_trio.launcher import main

main()
