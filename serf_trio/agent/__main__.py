"""``python -m serf_trio.agent [flags]``: the same as ``serf-trio agent``."""

import sys

from serf_trio.process import keep_rich_out

keep_rich_out()

from serf_trio.agent import main  # noqa: E402 - must come after keep_rich_out()

sys.exit(main())
