"""Serf's input forms (Go durations, k=v), agent lookup order, columns and the rtt formula."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer

from serf_trio.cli import common
from serf_trio.cli.fast import SimpleCoercion
from serf_trio.cli.info import distance_seconds
from serf_trio.serf.coordinate import Coordinate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("1.5h", 5400.0),
        ("0", 0.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("10ns", 1e-8),
        ("1h2m3s4ms", 3723.004),
        (".5s", 0.5),
        ("-2s", -2.0),
        ("+3m", 180.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert common.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "5x", "5 s", "1m 30s", "ms", "1.2.3s", "-"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        common.parse_duration(text)


def test_kv_pairs_split_at_the_first_equals() -> None:
    assert common.parse_kv(["a=1", "b=x=y", "c=", "a=2"]) == {"a": "2", "b": "x=y", "c": ""}


@pytest.mark.parametrize("item", ["novalue", "=v"])
def test_kv_without_key_or_equals_fails(item: str) -> None:
    with pytest.raises(typer.Exit):
        common.parse_kv([item])


def test_columnize_pads_all_but_the_last_column() -> None:
    assert common.columnize([["a", "bbb", "c"], ["dddd", "e", ""]]) == [
        "a     bbb  c",
        "dddd  e",
    ]
    assert common.columnize([]) == []


# -- where the agent is ----------------------------------------------------------------------


def test_flags_beat_the_environment() -> None:
    env = {"SERF_RPC_ADDR": "10.0.0.1:7373", "SERF_RPC_AUTH": "envtok"}
    opts = common.client_options(None, "/s.sock", "flagtok", env)
    assert opts == common.ClientOptions(rpc_addr=None, socket_path="/s.sock", auth="flagtok")
    opts = common.client_options("127.0.0.1:1", None, None, env)
    assert opts == common.ClientOptions(rpc_addr="127.0.0.1:1", socket_path=None, auth="envtok")


def test_environment_order() -> None:
    both = {"SERF_RPC_ADDR": "10.0.0.1:7373", "SERF_TRIO_RPC_SOCKET": "/e.sock"}
    assert common.client_options(None, None, None, both).socket_path == "/e.sock"
    only_addr = {"SERF_RPC_ADDR": "10.0.0.1:7373"}
    assert common.client_options(None, None, None, only_addr).rpc_addr == "10.0.0.1:7373"


def test_both_flags_is_an_error() -> None:
    with pytest.raises(typer.Exit):
        common.client_options("127.0.0.1:1", "/s.sock", None, {})


def test_default_socket_prefers_an_existing_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    user_sock = tmp_path / "serf-trio" / "rpc.sock"
    system_sock = "/run/serf-trio/rpc.sock"
    # Nothing exists (or only the system socket does): the first existing one, else the first.
    expected = system_sock if os.path.exists(system_sock) else str(user_sock)
    assert common.client_options(None, None, None, {}).socket_path == expected
    user_sock.parent.mkdir()
    user_sock.touch()
    assert common.client_options(None, None, None, {}).socket_path == str(user_sock)


def test_connect_error_line_keeps_only_the_os_reason() -> None:
    opts = common.ClientOptions(rpc_addr=None, socket_path="/x/rpc.sock", auth="")
    exc = RuntimeError("cannot connect to the agent (/x/rpc.sock: Connection refused)")
    assert common.connect_error_line(opts, exc) == (
        "Error connecting to serf-trio agent at /x/rpc.sock: Connection refused"
    )
    chained = RuntimeError("cannot connect")
    chained.__cause__ = PermissionError(13, "Permission denied")
    error, hint = common.connect_error_line(opts, chained).splitlines()
    assert error.endswith(": Permission denied") and "mode 0600" in hint


# -- rtt formula (serf coordinate.DistanceTo) ------------------------------------------------


def c(vec: tuple[float, ...], height: float, adjustment: float) -> Coordinate:
    return Coordinate(vec=vec, error=1.5, adjustment=adjustment, height=height)


def test_distance_adds_heights_and_adjustments() -> None:
    a = c((0.0, 0.003), 0.001, 0.0005)
    b = c((0.004, 0.0), 0.001, 0.0005)
    assert distance_seconds(a, b) == pytest.approx(0.005 + 0.002 + 0.001)


def test_distance_ignores_adjustments_that_make_it_negative() -> None:
    a = c((0.0,), 0.001, -0.01)
    b = c((0.002,), 0.001, -0.01)
    assert distance_seconds(a, b) == pytest.approx(0.004)


def test_distance_rejects_mismatched_dimensions() -> None:
    with pytest.raises(ValueError):
        distance_seconds(c((0.0,), 0, 0), c((0.0, 0.0), 0, 0))


# -- the Pydantic-free coercion ----------------------------------------------------------------


class _Param:
    multiple = False
    nargs = 1


def test_simple_coercion_covers_the_client_annotations() -> None:
    assert SimpleCoercion.for_annotation(str | None) is not None
    assert SimpleCoercion.for_annotation(list[str] | None) is not None
    assert SimpleCoercion.for_annotation(common.OutputFormat) is not None
    assert SimpleCoercion.for_annotation(float) is None  # left to Typer
    enum = SimpleCoercion.for_annotation(common.OutputFormat)
    assert enum is not None
    assert enum.coerce("json", _Param(), None) is common.OutputFormat.json
    with pytest.raises(typer.BadParameter):
        enum.coerce("xml", _Param(), None)
    num = SimpleCoercion.for_annotation(int)
    assert num is not None
    assert num.coerce("12", _Param(), None) == 12
    with pytest.raises(typer.BadParameter):
        num.coerce("1x", _Param(), None)
