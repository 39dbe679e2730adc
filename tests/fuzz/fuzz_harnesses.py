"""Load the fuzz harnesses of ``fuzz/`` (at the repository root, not a package) by path.

The harnesses import their shared module as ``fuzzkit`` and, in two cases, another harness
(``fuzz_stream`` builds its core with ``fuzz_packet``'s, ``fuzz_config`` writes through
``fuzz_keyring``'s scratch file), so each is loaded under its own module name, dependencies
first.  Loading one never imports atheris: that happens only when a harness runs as a script.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
HARNESSES = ("packet", "stream", "envelope", "rpc", "snapshot", "keyring", "config")
_DEPENDS = {"stream": ("fuzz_packet",), "config": ("fuzz_keyring",)}


def _load(module: str) -> ModuleType:
    loaded = sys.modules.get(module)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(module, FUZZ / f"{module}.py")
    assert spec is not None and spec.loader is not None, module
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[module]
        raise
    return mod


def harness(name: str) -> ModuleType:
    """The module ``fuzz/fuzz_<name>.py`` (with ``check`` and ``seeds``)."""
    _load("fuzzkit")
    for dep in _DEPENDS.get(name, ()):
        _load(dep)
    return _load(f"fuzz_{name}")
