"""``python -m serf_trio.agent [flags]``: the same as ``serf-trio agent``."""

import sys

from serf_trio.agent import main

sys.exit(main())
