"""``python -m serf_trio.cli``: the same as the ``serf-trio`` script."""

from serf_trio.cli import main

main()
