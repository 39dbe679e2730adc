"""Fixtures every test folder may use (plain helpers are in ``helpers.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Procs


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Child processes logging to ``tmp_path``; all killed and reaped at teardown."""
    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.close()
