"""Files the agent owns on disk: the tags file (read at start, rewritten when tags change)
and the keyring file (rewritten whenever a key query changes the keyring).

Rule: a file is replaced atomically (temp file in the same directory, fsync, rename, fsync the
directory) so a crash leaves the old or the new content, never a torn one.  These functions
block: the agent calls them through ``trio.to_thread.run_sync``, off the event loop.

Rule: one writer per file (the agent serialises each file's rewrites), so a temp file of the
same target found before a rewrite is the leftover of a writer killed mid-rewrite (SIGKILL skips
the cleanup); it is removed, so kills leave at most one temp file, not one more each time
(``bench/crash_safety.py`` found them piling up).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

from serf_trio.wire.keyring import encode_key

from .config import ConfigError


def remove_stale_temps(directory: Path, prefix: str, suffix: str = "") -> None:
    """Remove ``mkstemp(prefix=prefix, suffix=suffix, dir=directory)`` names left by a killed
    writer (module docstring: one writer per file).  Never raises."""
    # tempfile's names: the prefix, 8 characters of [a-z0-9_], the suffix.
    pattern = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}" + re.escape(suffix) + r"\Z")
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if pattern.match(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def write_json_atomically(path: Path, doc: object) -> None:
    """temp file in the same directory, fsync, rename over ``path``, fsync the directory."""
    directory = path.parent if str(path.parent) else Path(".")
    remove_stale_temps(directory, f".{path.name}.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_tags_file(path: Path) -> dict[str, str]:
    """Tags from a tags file; a missing file is no tags (it is created on the first change)."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: config key 'tags_file': cannot load tags: {exc}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise ConfigError(f"{path}: config key 'tags_file': expected a JSON map of strings")
    return dict(raw)


def write_keyring_file(path: Path, keys: tuple[bytes, ...]) -> None:
    """Serf's keyring file: a JSON list of base64 keys, primary first, written atomically with
    mode 0600 (``mkstemp`` creates the temp file so)."""
    write_json_atomically(path, [encode_key(k) for k in keys])
