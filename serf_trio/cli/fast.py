"""Typer without its Pydantic coercion layer on the client path (a start-up time decision).

Typer (0.2x) converts every command-line value through a Pydantic ``TypeAdapter`` that it
builds lazily on first use; importing Pydantic and building the adapters costs about 100 ms,
more than the whole rest of ``serf-trio members``. Client commands only take strings, ints,
booleans, lists of strings and one ``Enum``, which need no validation library, so
``FastGroup`` / ``FastCommand`` fill Typer's per-parameter coercion slot with
``SimpleCoercion`` when the parameters are first asked for, before any value is parsed.
Parameters of any other type keep Typer's own coercion.

This touches one private Typer attribute (``_runtime_param``, the lazily built coercer) and
degrades safely: if a future Typer renames it, parameters simply fall back to Typer's path
(correct, only slower), and ``tests/cli/test_fast_start.py`` notices that Pydantic is back.

``FastCommand`` also writes its positional arguments the way command-line help usually does
(``ADDRESS...``, ``[PAYLOAD]``): Typer's own help shows ``{addresses}...`` in the usage line and
Python types (``<list[str]>``) beside each argument.  Public Click API only
(``collect_usage_pieces``, ``format_options``), so nothing breaks if Typer changes.
"""

from __future__ import annotations

import types
import typing
from enum import Enum
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


class SimpleCoercion:
    """Coerce one parameter's raw value(s) for the annotations client commands use."""

    __slots__ = ("kind", "target")

    def __init__(self, kind: str, target: type[Any]) -> None:
        self.kind = kind  # "str" | "int" | "bool" | "enum" | "list"
        self.target = target

    @classmethod
    def for_annotation(cls, annotation: Any) -> SimpleCoercion | None:
        """A coercion for ``annotation``, or ``None`` to leave it to Typer."""
        inner = _strip_optional(annotation)
        if typing.get_origin(inner) is list and typing.get_args(inner) == (str,):
            return cls("list", str)
        if inner is str:
            return cls("str", str)
        if inner is bool:
            return cls("bool", bool)
        if inner is int:
            return cls("int", int)
        if isinstance(inner, type) and issubclass(inner, Enum):
            return cls("enum", inner)
        return None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = bool(getattr(param, "multiple", False)) or getattr(param, "nargs", 1) == -1
        if value is None:
            return () if multi else None
        if self.kind == "list":
            if isinstance(value, str):
                raise typer.BadParameter("Value must be an iterable.", ctx=ctx, param=param)
            return [str(v) for v in value]
        if self.kind == "str":
            return str(value)
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on", "y", "t"):
                return True
            if text in ("0", "false", "no", "off", "n", "f"):
                return False
            raise typer.BadParameter(f"{value!r} is not a valid boolean.", ctx=ctx, param=param)
        if self.kind == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            try:
                return int(str(value), 10)
            except ValueError:
                raise typer.BadParameter(
                    f"{value!r} is not a valid integer.", ctx=ctx, param=param
                ) from None
        # enum
        if isinstance(value, self.target):
            return value
        try:
            return self.target(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in self.target)
            raise typer.BadParameter(
                f"{value!r} is not one of {choices}.", ctx=ctx, param=param
            ) from None


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def lighten(params: list[Any]) -> None:
    """Give every simple Typer parameter a ``SimpleCoercion`` (idempotent)."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", "absent") is not None:
            continue  # not a Typer parameter, already built, or a Typer without the slot
        info = getattr(descriptor, "parameter_info", None)
        if any(getattr(info, a, None) not in (None, False) for a in ("min", "max", "clamp")):
            continue  # range checks are Typer's job (only ``demo`` has them)
        coercion = SimpleCoercion.for_annotation(descriptor.annotation)
        if coercion is not None:
            param._runtime_param = coercion


class FastGroup(TyperGroup):
    """The ``serf-trio`` group (its own ``--help`` is a Typer parameter too)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        lighten(params)
        return params


class FastCommand(TyperCommand):
    """A client command: simple parameters are coerced without Pydantic, and its help names
    arguments in capitals without Python types (module docstring)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        lighten(params)
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args: list[tuple[str, str]] = []
        opts: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append((argument_name(param), record[1]))
            else:
                opts.append(record)
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def argument_name(param: Any) -> str:
    """A positional argument as help shows it: its metavar, else its name in capitals, with
    ``...`` when it takes several values."""
    name = str(param.metavar or (param.name or "").upper())
    if param.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name
