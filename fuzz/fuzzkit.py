"""What every harness under ``fuzz/`` shares: instrumentation, the seed corpus, the entry point.

A harness is a module ``fuzz_<decoder>.py`` that defines

* ``check(data: bytes) -> None``: feed one input to its decoder(s) and raise ``Finding`` (or let
  any unexpected exception escape) when the decoder breaks one of its rules; the decoder's
  documented error types are caught inside ``check`` and are *not* findings;
* ``seeds() -> list[bytes]``: small valid inputs built from the project's own encoders and from
  the golden captures under ``tests/data``, so the fuzzer starts from real traffic.

``check`` never needs atheris: ``tests/fuzz`` replays the seeds and every minimised crash
through it in CI.  Only ``main`` (run when a harness is started as a script) imports atheris,
and ``instrument`` wraps the harness's ``serf_trio`` imports in ``atheris.instrument_imports``
only in that case.

Nothing here imports ``serf_trio`` at module level: the harness imports it inside
``instrument``, and instrumentation only covers modules imported there for the first time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"


class Finding(AssertionError):
    """A decoder broke one of its rules (wrong result, or an invariant that must hold)."""


# Findings in code outside the decoders this work may change, not fixed yet: the exception type
# and the innermost frame (file, function) it escapes from, with a note.  ``known`` lets a
# harness go on past them (one crash would otherwise stop every run at the same place);
# ``tests/fuzz`` keeps each as a strict xfail, so a fix turns it into a failing XPASS.
KNOWN: dict[tuple[str, str, str], str] = {
    # e.g. ("UnicodeEncodeError", "targets.py", "ring_key"): "what is wrong and where"
    # (that one, finding 1b of README.md, is fixed).
}


def known(exc: BaseException) -> str | None:
    """The note of a ``KNOWN`` finding ``exc`` is an instance of, else ``None``."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None
    last = frames[-1]
    return KNOWN.get((type(exc).__name__, Path(last.filename).name, last.name))


def instrument(
    active: bool, exclude: tuple[str, ...] = ()
) -> contextlib.AbstractContextManager[Any]:
    """``atheris.instrument_imports`` over ``serf_trio`` (but not the ``exclude`` modules) when
    ``active`` (the harness runs as a script), else a no-op (tests import the harness without
    atheris)."""
    if not active:
        return contextlib.nullcontext()
    import atheris  # type: ignore[import-untyped]

    cm = atheris.instrument_imports(include=["serf_trio"], exclude=list(exclude) or None)
    return cm  # type: ignore[no-any-return]


def golden_records(folder: str) -> Iterator[dict[str, Any]]:
    """Every record (``_meta`` lines skipped) of the JSONL captures in ``tests/data/<folder>``."""
    for path in sorted((DATA / folder).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if "_meta" not in rec:
                yield rec


def golden_wire(transport: str, *, encrypted: bool | None = False) -> list[bytes]:
    """The golden memberlist captures of one transport (``udp`` / ``tcp``) as bytes.

    ``encrypted``: False, only plaintext records; True, only encrypted ones; None, all.
    """
    out: list[bytes] = []
    for rec in golden_records("vectors"):
        if rec.get("transport") != transport or not rec.get("len"):
            continue
        is_encrypted = "encrypted" in (rec.get("decoded") or {})
        if encrypted is None or encrypted == is_encrypted:
            out.append(bytes.fromhex(rec["hex"]))
    return out


def dedupe(inputs: list[bytes], limit: int = 200) -> list[bytes]:
    """Distinct inputs, in order, at most ``limit`` (a small corpus starts a fuzzer faster)."""
    seen: set[bytes] = set()
    out: list[bytes] = []
    for item in inputs:
        if item not in seen:
            seen.add(item)
            out.append(item)
        if len(out) >= limit:
            break
    return out


def write_corpus(directory: Path, inputs: list[bytes]) -> None:
    """Write ``inputs`` as libFuzzer corpus files named by their SHA-1 (as libFuzzer names)."""
    directory.mkdir(parents=True, exist_ok=True)
    for item in inputs:
        (directory / hashlib.sha1(item).hexdigest()).write_bytes(item)


def main(check: Callable[[bytes], None], seeds: Callable[[], list[bytes]]) -> None:
    """Run ``check`` under atheris with libFuzzer's command line (``sys.argv``).

    Without a corpus directory on the command line, a fresh temporary one seeded with
    ``seeds()`` is used; a directory given is seeded when empty.
    """
    import atheris

    argv = list(sys.argv)
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    if dirs:
        first = Path(dirs[0])
        if not first.exists() or not any(first.iterdir()):
            write_corpus(first, seeds())
    else:
        tmp = Path(tempfile.mkdtemp(prefix="serf-trio-fuzz-"))
        write_corpus(tmp, seeds())
        argv.append(str(tmp))
    atheris.Setup(argv, check)
    atheris.Fuzz()
