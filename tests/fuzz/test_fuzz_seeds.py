"""Every fuzz harness's seed corpus passes its own ``check``, without atheris.

CI never runs the fuzzers (``fuzz/README.md``), so this is what keeps each harness's check
logic working as the decoders change: a harness that broke would fail here on valid input.
"""

from __future__ import annotations

import sys

import pytest
from fuzz_harnesses import HARNESSES, harness


@pytest.mark.parametrize("name", HARNESSES)
def test_seed_corpus_passes_check(name: str) -> None:
    mod = harness(name)
    seeds = mod.seeds()
    assert seeds, f"fuzz_{name} has no seeds"
    for data in seeds:
        mod.check(data)


@pytest.mark.parametrize("name", HARNESSES)
def test_check_takes_edge_inputs(name: str) -> None:
    mod = harness(name)
    for data in (b"", b"\x00", b"\xff" * 3, bytes(range(256))):
        mod.check(data)


def test_harnesses_load_without_atheris() -> None:
    # CI does not install the fuzz extra: only running a harness as a script may import it.
    for name in HARNESSES:
        harness(name)
    assert "atheris" not in sys.modules
