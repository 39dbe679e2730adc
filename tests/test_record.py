"""``@record`` behaves as ``@dataclass(frozen=True, slots=True)`` does, except run-time freezing."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from serf_trio.record import record


@record
class Point:
    x: int
    y: int = 0
    note: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class DPoint:
    x: int
    y: int = 0
    note: str = field(default="", compare=False)


@record
class Labelled(Point):
    label: str = "l"


@record
class Custom:
    a: int

    def __eq__(self, other: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "custom"


@record
class Empty:
    pass


def test_equality_hash_and_repr_match_a_frozen_dataclass() -> None:
    pairs = [(Point(1, 2, "a"), DPoint(1, 2, "a")), (Point(3), DPoint(3))]
    for r, d in pairs:
        assert repr(r).replace("Point", "DPoint") == repr(d)
    assert Point(1, 2, "a") == Point(1, 2, "b")  # compare=False field ignored
    assert hash(Point(1, 2, "a")) == hash(Point(1, 2, "b"))
    assert Point(1, 2) != Point(1, 3)
    assert Point(1, 2) != DPoint(1, 2)  # other classes never compare equal
    assert Point(1) != (1, 0)
    assert Labelled(1, 2) != Point(1, 2)  # a subclass instance is not equal either
    assert Labelled(1, 2, label="z") == Labelled(1, 2, label="z")
    assert repr(Labelled(1, 2)) == "Labelled(x=1, y=2, note='', label='l')"
    assert len({Point(1), Point(1), Point(2)}) == 2
    assert Empty() == Empty() and hash(Empty()) == hash(Empty()) and repr(Empty()) == "Empty()"


def test_it_is_a_slotted_dataclass() -> None:
    p = Point(1, 2)
    assert dataclasses.is_dataclass(p)
    assert [f.name for f in dataclasses.fields(p)] == ["x", "y", "note"]
    assert dataclasses.replace(p, y=5) == Point(1, 5)
    assert dataclasses.asdict(p) == {"x": 1, "y": 2, "note": ""}
    assert not hasattr(p, "__dict__")
    assert Point.__match_args__ == ("x", "y", "note")
    assert pickle.loads(pickle.dumps(p)) == p
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    match p:
        case Point(1, y):
            assert y == 2
        case _:
            pytest.fail("no match")


def test_methods_the_class_defines_are_kept() -> None:
    assert Custom(1) == Custom(2)
    assert repr(Custom(1)) == "custom"
    assert hash(Custom(1)) == hash(Custom(1))  # __eq__ alone does not make it unhashable


def test_class_creation_is_cheaper_than_a_frozen_dataclass() -> None:
    """What the module is for: fewer compiled methods per class (counted, not timed)."""
    compiled: list[str] = []
    original = dataclasses._create_fn  # type: ignore[attr-defined]

    def counting(name: str, *args: object, **kwargs: object) -> object:
        compiled.append(name)
        return original(name, *args, **kwargs)

    dataclasses._create_fn = counting  # type: ignore[attr-defined]
    try:
        record(type("R", (), {"__annotations__": {"a": "int", "b": "str"}}))
        made_by_record = len(compiled)
        compiled.clear()
        dataclass(frozen=True, slots=True)(type("D", (), {"__annotations__": {"a": "int"}}))
        made_by_dataclass = len(compiled)
    finally:
        dataclasses._create_fn = original  # type: ignore[attr-defined]
    assert made_by_record == 1  # __init__ only
    assert made_by_dataclass >= 5
