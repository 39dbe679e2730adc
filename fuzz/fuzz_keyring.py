"""Fuzz the keyring file reader: ``agent.config.read_keyring_file`` (``keyring_file``, a JSON
list of base64 keys, primary first; the agent reads it at start-up and on every reload).

Owns the rules of a keyring file the agent did not write (or that was damaged):

* reading is total: keys come back, or ``ConfigError`` names the file and says what is wrong;
  *anything* else (a ``RecursionError`` from deep JSON, a ``TypeError``, a ``KeyringError``) is
  a finding, since the agent would die with a traceback instead of one line;
* what it returns is a usable keyring: 1 or more keys of 16, 24 or 32 bytes that
  ``wire.keyring.Keyring`` accepts (no exception allowed) and whose base64 form, as the agent
  writes the file back, decodes to the same keys.

The input is written to a real file (in a private temporary directory) because the reader
takes a path, as the agent's does.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from fuzzkit import Finding, dedupe, instrument, main

with instrument(__name__ == "__main__"):
    from serf_trio.agent.config import ConfigError, read_keyring_file
    from serf_trio.wire.keyring import KEY_SIZES, Keyring, decode_key, encode_key

_DIR: tempfile.TemporaryDirectory[str] | None = None


def scratch(name: str) -> Path:
    """A path in this process's private temporary directory (made on first use)."""
    global _DIR
    if _DIR is None:
        _DIR = tempfile.TemporaryDirectory(prefix="serf-trio-fuzz-")
    return Path(_DIR.name) / name


def check(data: bytes) -> None:
    path = scratch("keyring.json")
    path.write_bytes(data)
    try:
        keys = read_keyring_file(path)
    except ConfigError:
        return
    if not keys or any(len(k) not in KEY_SIZES for k in keys):
        raise Finding(f"read_keyring_file returned keys of sizes {[len(k) for k in keys]}")
    ring = Keyring(keys)  # must accept what the reader accepted
    if [decode_key(k) for k in ring.encoded()] != list(dict.fromkeys(keys)):
        raise Finding("the keyring does not round-trip through its file form")


def seeds() -> list[bytes]:
    """Keyring files as the agent writes them (one, two and three keys, every size)."""
    k16, k24, k32 = bytes(range(16)), b"\x24" * 24, bytes(range(32))
    files = [[k32], [k32, k16], [k16, k24, k32]]
    out = [json.dumps([encode_key(k) for k in keys], indent=2).encode() for keys in files]
    out.append(b'["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "EBESExQVFhcYGRobHB0eHw=="]')
    return dedupe(out)


if __name__ == "__main__":
    main(check, seeds)
    sys.exit(0)
