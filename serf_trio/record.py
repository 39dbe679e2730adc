"""``@record``: the immutable value classes of every layer, made cheaply at import time.

A ``@dataclass(frozen=True, slots=True)`` class costs about half a millisecond to create: the
dataclass machinery writes the source of six methods (``__init__``, ``__repr__``, ``__eq__``,
``__hash__``, ``__setattr__``, ``__delattr__``) and compiles each one.  An agent imports about
a hundred such classes (messages, effects, bus records, configs), so that was 50 ms of the
~190 ms of CPU an agent spent from exec to ready, paid again by every agent of a join storm.

``@record`` asks the dataclass machinery for ``__init__`` only (the one method that must be
compiled to stay fast: records are built per packet) and gives the class shared, equivalent
methods for the rest:

* ``__eq__``: equal when the other object is of the same class and the compared fields are
  equal (dataclass semantics, ``field(compare=False)`` honoured), else ``NotImplemented``;
* ``__hash__``: the hash of the hashed fields (``field(hash=...)``, else the compared ones);
* ``__repr__``: ``Name(a=1, b='x')``, the fields with ``repr=True``, as a dataclass prints.

Immutability is enforced by the type checker, not at run time: ``@record`` is a
``dataclass_transform(frozen_default=True)``, so mypy (strict in CI) rejects any assignment to a
field, while the run time skips the two ``__setattr__``/``__delattr__`` guards that made up
most of the cost.  A record is still a real dataclass: ``dataclasses.fields``, ``replace``,
``asdict``, ``__match_args__`` and pickling all work.  Methods a class defines itself are kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A C-speed function from an instance to the tuple of ``names``' values."""
    if len(names) >= 2:
        return attrgetter(*names)
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return lambda obj: ()


def _methods(cls: type) -> dict[str, Callable[..., Any]]:
    fields = dataclasses.fields(cls)
    compared = _getter(tuple(f.name for f in fields if f.compare))
    hashed = _getter(tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash)))
    shown = tuple(f.name for f in fields if f.repr)

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is self.__class__:
            return bool(compared(self) == compared(other))
        return NotImplemented

    def __hash__(self: Any) -> int:
        return hash(hashed(self))

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{self.__class__.__qualname__}({inner})"

    return {"__eq__": __eq__, "__hash__": __hash__, "__repr__": __repr__}


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def record(cls: type[T]) -> type[T]:
    """Make ``cls`` an immutable, slotted dataclass (module docstring)."""
    own = set(cls.__dict__)
    if cls.__dict__.get("__hash__", 0) is None and "__eq__" in own:
        own.discard("__hash__")  # Python's implicit None for a class defining __eq__ only
    made = dataclasses.dataclass(slots=True, eq=False, repr=False)(cls)
    for name, method in _methods(made).items():
        if name not in own:
            method.__qualname__ = f"{made.__qualname__}.{name}"
            setattr(made, name, method)
    return made
