"""Fixtures every test folder may use (plain helpers are in ``helpers.py``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from helpers import Procs


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Child processes logging to ``tmp_path``; all killed and reaped at teardown."""
    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the stdlib root logger and structlog back as they were (for tests that configure
    logging the way the agent does)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)
