"""One stats registry: every component's counters, read from one place.

Each component keeps its own counters and exposes them through ``statistics()`` (a dataclass
or a mapping).  A node registers each component under a section name; ``snapshot()`` reads them
all at once into plain ``{section: {counter: value}}`` dicts of ints, floats, strings and bools,
which is what the library's ``Node.stats()``, the agent's RPC ``stats`` and ``info``, and any
metrics exporter read.  Nothing is copied or summed ahead of time: a snapshot costs one call per
component, only when someone asks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

Scalar = int | float | str | bool
Section = dict[str, Scalar]
Source = Callable[[], Any]  # returns a dataclass instance, a mapping, or None (section omitted)


def flatten(value: Any, prefix: str = "") -> Section:
    """A dataclass or mapping as flat ``name: scalar`` pairs (nested records joined by ``.``;
    properties of a dataclass are not read, only its fields)."""
    out: Section = {}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items: Mapping[str, Any] = {
            f.name: getattr(value, f.name) for f in dataclasses.fields(value)
        }
    elif isinstance(value, Mapping):
        items = value
    else:
        return out
    for key, v in items.items():
        name = f"{prefix}{key}"
        if isinstance(v, bool | int | float | str):
            out[name] = v
        elif v is None:
            continue
        elif isinstance(v, tuple | list):
            continue  # per-item records (e.g. handler specs) are not counters
        else:
            out.update(flatten(v, f"{name}."))
    return out


class StatsRegistry:
    """Named sources of counters (module docstring)."""

    def __init__(self) -> None:
        self._sources: dict[str, Source] = {}

    def register(self, section: str, source: Source) -> None:
        """Add (or replace) the source of ``section``."""
        self._sources[section] = source

    def unregister(self, section: str) -> None:
        self._sources.pop(section, None)

    @property
    def sections(self) -> tuple[str, ...]:
        return tuple(self._sources)

    def read(self, section: str) -> Section:
        source = self._sources.get(section)
        return flatten(source()) if source is not None else {}

    def snapshot(self) -> dict[str, Section]:
        """Every section, read now (sections whose source returns nothing are left out)."""
        out: dict[str, Section] = {}
        for name, source in self._sources.items():
            value = flatten(source())
            if value:
                out[name] = value
        return out
