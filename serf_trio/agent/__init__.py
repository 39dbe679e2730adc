"""The serf-trio agent: configuration, logging, sd_notify and the ``Agent`` process.

``main(argv)`` is what ``serf-trio agent`` runs (the CLI passes its arguments through).
"""

from __future__ import annotations

from .agent import Agent
from .main import main

__all__ = ["Agent", "main"]
