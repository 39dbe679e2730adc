"""PNG plots of a ``serf-trio simulate`` result: event spread and failure-detection curves.

Owns the picture only: ``write_plot`` takes the JSON document ``simulate --json`` prints (with
its pooled ``samples``) and draws the delivered fraction of the user event over time (with
HashiCorp's old Serf convergence model beside it), the nodes not yet reached on a log scale
(the tail the percentiles summarise), and the CDF of the (survivor, crashed) detection times.

Plotting is an optional extra (``pip install 'serf-trio[plot]'``): the command prints its
numbers without it, so matplotlib is imported inside the functions only, never at import
time, and nothing outside this module imports it (an import-linter contract).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["MAX_POINTS", "PlotUnavailable", "check_available", "thin_step_curve", "write_plot"]

MAX_POINTS = 2_000  # drawn corners per curve: enough for a 1,000-pixel-wide panel
DPI = 110
PANEL_SIZE = (4.0, 4.2)  # inches per panel (width, height)
GUIDES = (99.0, 99.9)  # percent of nodes reached: the dotted horizontal guides


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (the ``plot`` extra)."""


def check_available() -> None:
    """Raise ``PlotUnavailable`` unless matplotlib imports (a check before a long run)."""
    try:
        # The top-level package first: a blocked or broken ``matplotlib`` must fail here even
        # when a submodule is still cached in sys.modules.
        import matplotlib
        import matplotlib.figure  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(
            "plotting needs matplotlib, which is not installed: pip install 'serf-trio[plot]'"
        ) from exc


def thin_step_curve(
    times: Sequence[float], population: int, max_points: int = MAX_POINTS
) -> tuple[list[float], list[float]]:
    """The corners ``(seconds, fraction)`` of the step curve of the sorted ``times``.

    Corner ``i`` is ``(times[i], (i + 1) / population)``: the fraction of ``population``
    reached by then.  At most ``max_points`` corners are kept: always the first and the last,
    the last eighth of the budget exactly (the final steps, one node each at the tail), and the
    rest split between ranks spread evenly (the linear panel) and ranks whose remaining count
    ``population - (i + 1)`` is spread geometrically (the log "not yet reached" panel).
    """
    n = len(times)
    if population < n:
        raise ValueError(f"population {population} is smaller than the {n} samples")
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, not {max_points}")
    if n <= max_points:
        indices: Sequence[int] = range(n)
    else:
        keep = {0, n - 1}
        keep.update(range(n - max_points // 8, n))
        budget = max_points - len(keep)
        even = budget // 2
        geometric = budget - even
        keep.update(round(k * (n - 1) / max(even - 1, 1)) for k in range(even))
        # Remaining + 1 runs from population - n + 1 (last corner) to population (before the
        # first); evenly spaced logs of it put ever more corners near the end of the curve.
        low, high = math.log(population - n + 1), math.log(population)
        for k in range(geometric):
            remaining = round(math.exp(low + (high - low) * k / max(geometric - 1, 1)))
            keep.add(min(n - 1, max(0, population - remaining)))
        indices = sorted(keep)
    return [times[i] for i in indices], [(i + 1) / population for i in indices]


def _thin_line(points: Sequence[Sequence[float]], max_points: int) -> list[Sequence[float]]:
    """Evenly spaced points of a polyline, first and last included."""
    n = len(points)
    if n <= max_points:
        return list(points)
    return [points[round(k * (n - 1) / (max_points - 1))] for k in range(max_points)]


def _nearest_rank(sorted_values: Sequence[float], percent: int) -> float:
    k = max(1, -(-percent * len(sorted_values) // 100))
    return sorted_values[k - 1]


def _title(params: dict[str, Any]) -> str:
    runs = params.get("runs", 1)
    parts = [
        f"{params['nodes']:,} nodes",
        f"{params['profile']} profile",
        f"{params['cores']} cores",
        f"loss {params['loss'] * 100:g} %",
        f"{runs:,} run{'s' if runs != 1 else ''} (seed {params['seed']})",
    ]
    settings = []
    if "gossip_interval" in params and "gossip_nodes" in params:
        settings.append(f"gossip {params['gossip_interval']:g} s x {params['gossip_nodes']}")
    if "probe_interval" in params:
        settings.append(f"probe {params['probe_interval']:g} s")
    for key, label in (
        ("suspicion_mult", "suspicion mult"),
        ("retransmit_mult", "retransmit mult"),
    ):
        if key in params:
            settings.append(f"{label} {params[key]}")
    title = ", ".join(parts)
    return f"{title}\n{', '.join(settings)}" if settings else title


def _event_panels(
    spread: Axes,
    tail: Axes,
    times: list[float],
    population: int,
    model: list[Sequence[float]] | None,
    runs: int,
) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    xs, fractions = thin_step_curve(times, population)
    # The curve starts at the send (nobody reached yet).
    xs, fractions = [0.0, *xs], [0.0, *fractions]
    all_reached = len(times) == population
    end = times[-1]
    if model:
        # Wide enough for the model to reach the top guide (or its whole span if it never does).
        model_end = next((t for t, f in model if f * 100 >= GUIDES[-1]), model[-1][0])
        end = max(end, model_end)
    x_max = end * 1.05 if end > 0 else 1.0
    if not all_reached:
        # Nobody else got it: carry the plateau to the right edge.
        xs.append(x_max)
        fractions.append(fractions[-1])

    label = f"simulated ({runs:,} runs pooled)" if runs != 1 else "simulated (1 run)"
    if not all_reached:
        label += f"\n{len(times):,} of {population:,} reached"
    spread.step(xs, [100 * f for f in fractions], where="post", color="C0", label=label)
    # On the log panel, "nobody left" is drawn as a drop to the bottom edge, which lies below
    # one node and below the guides (small clusters would otherwise hide them).
    floor = min(100 / population / 3, (100 - GUIDES[-1]) / 2)
    missing = [max(100 * (1 - f), floor) for f in fractions]
    tail.step(xs, missing, where="post", color="C0")
    if model:
        mx = [p[0] for p in model]
        my = [100 * p[1] for p in model]
        spread.plot(mx, my, "--", color="C1", label="Serf convergence model")
        tail.plot(mx, [max(100 - y, floor) for y in my], "--", color="C1")
    for guide in GUIDES:
        spread.axhline(guide, linestyle=":", linewidth=0.8, color="0.4")
        tail.axhline(100 - guide, linestyle=":", linewidth=0.8, color="0.4")
        tail.annotate(
            f"{guide:g} % reached",
            (0.0, 100 - guide),
            xycoords=("axes fraction", "data"),
            xytext=(3, 2),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=7,
            color="0.3",
        )

    spread.set_title("event spread")
    spread.set_xlabel("seconds after send (simulated)")
    spread.set_ylabel("nodes reached (%)")
    spread.set_ylim(0, 101)
    spread.legend(loc="best", fontsize=8)
    tail.set_title("nodes not yet reached")
    tail.set_xlabel("seconds after send (simulated)")
    tail.set_ylabel("nodes not reached (%, log)")
    tail.set_yscale("log")
    tail.set_ylim(floor, 100 * 1.5)
    tail.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    tail.yaxis.set_minor_formatter(NullFormatter())
    for ax in (spread, tail):
        ax.set_xlim(0, x_max)
        ax.grid(True, linewidth=0.3, alpha=0.5)


def _detection_panel(
    ax: Axes, times: list[float], population: int, detection: dict[str, Any] | None
) -> None:
    xs, fractions = thin_step_curve(times, population)
    xs, fractions = [0.0, *xs], [0.0, *fractions]
    label = f"{len(times):,} of {population:,} pairs"
    ax.step(xs, [100 * f for f in fractions], where="post", color="C2", label=label)
    for key, percent, color in (("p50", 50, "C3"), ("p99", 99, "C4")):
        value = (detection or {}).get(key)
        seconds = float(value) if value is not None else _nearest_rank(times, percent)
        ax.axvline(
            seconds, linestyle=":", linewidth=1.2, color=color, label=f"{key} {seconds:.3f} s"
        )
    ax.set_title("failure detection")
    ax.set_xlabel("seconds after the crash (simulated)")
    ax.set_ylabel("(survivor, crashed) pairs detected (%)")
    ax.set_xlim(0, times[-1] * 1.05 if times[-1] > 0 else 1.0)
    ax.set_ylim(0, 101)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(loc="best", fontsize=8)


def write_plot(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a PNG of the simulate result to path. Raises PlotUnavailable (a RuntimeError
    subclass) if matplotlib is not installed, ValueError if there is nothing to plot."""
    samples = result.get("samples") or {}
    event_times = sorted(samples.get("event_times") or [])
    detection_times = sorted(samples.get("detection_times") or [])
    if not event_times and not detection_times:
        raise ValueError(
            "nothing to plot: the result has no event deliveries (memberlist cores, or no "
            "samples) and no crash detections (run with --crashes K)"
        )
    check_available()
    # A bare Figure with an explicit Agg canvas: no pyplot, no global backend switch, and no
    # figure registry to leak into (the figure is garbage once this function returns).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    params = result["params"]
    panels = (2 if event_times else 0) + (1 if detection_times else 0)
    fig = Figure(figsize=(PANEL_SIZE[0] * panels + 0.5, PANEL_SIZE[1]), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if event_times:
        model = samples.get("model_curve")
        _event_panels(
            axes[0],
            axes[1],
            event_times,
            int(samples["event_population"]),
            _thin_line(model, MAX_POINTS) if model else None,
            int(params.get("runs", 1)),
        )
    if detection_times:
        _detection_panel(
            axes[-1],
            detection_times,
            int(samples["detection_population"]),
            result.get("detection"),
        )
    fig.suptitle(_title(params), fontsize=10)
    fig.tight_layout()
    # No "Software: matplotlib x.y" chunk: the same result gives the same bytes across versions
    # as far as the rendering allows.
    fig.savefig(os.fspath(path), format="png", metadata={"Software": None})
    fig.clear()
