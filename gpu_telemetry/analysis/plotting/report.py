"""The report's pictures: one run (each GPU's temperature, SM clock and power against minutes
since the bench started, the phases shaded, the first-order fits dashed) and runs side by side
(one colour per GPU, one line style per run)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gpu_telemetry.analysis.axes import note_not_reported, readable_limits
from gpu_telemetry.analysis.plotting.labels import mpl_text as _mpl_text
from gpu_telemetry.analysis.report.model import (
    PANELS,
    RunReport,
    panels_drawn,
    reports_column,
)
from gpu_telemetry.analysis.report.output import writing

DPI = 110
@dataclass(frozen=True)
class Panel:
    """One panel as drawn, so that a caller can tell what the picture shows without reading it
    back: the metric's column, the y-range, the notes written in it and where it lies in the
    PNG (left, top, right, bottom in pixels from the top left corner)."""

    column: str
    ylim: tuple[float, float]
    notes: tuple[str, ...]
    box_px: tuple[int, int, int, int]


def _minutes(rows: Sequence[dict], origin: datetime) -> list[float]:
    return [(row["ts"] - origin).total_seconds() / 60 for row in rows]


def _values(rows: Sequence[dict], column: str) -> list[float]:
    return [math.nan if row[column] is None else float(row[column]) for row in rows]


def _figure(title: str, panels: Sequence[tuple]):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ratios = [panel[3] for panel in panels]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False, dpi=DPI,
                             figsize=(11, 1.4 + 1.35 * sum(ratios)),
                             gridspec_kw={"height_ratios": ratios})
    fig.suptitle(_mpl_text(title), fontsize=12)
    for (_, label, _, _), (axis,) in zip(panels, axes, strict=True):
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("minutes since bench start")
    return plt, fig, {panel[0]: row[0] for panel, row in zip(panels, axes, strict=True)}


def _finish(plt, fig, axes: dict, values: dict[str, list[float]], path: Path
            ) -> tuple[Panel, ...]:
    """Set each panel's y-range, write the PNG and say what it shows."""
    units = {column: unit for column, _, unit, _ in PANELS}
    try:
        for column, axis in axes.items():
            limits = readable_limits(values[column], units[column])
            if limits:
                axis.set_ylim(*limits)
            else:
                axis.set_yticks([])  # no value at all: ticks around 0 would read as readings
        fig.tight_layout()
        with writing(path):
            fig.savefig(path, dpi=DPI)
        height = fig.bbox.height
        panels = []
        for column, axis in axes.items():
            box = axis.get_window_extent()
            low, high = axis.get_ylim()
            panels.append(Panel(column, (float(low), float(high)),
                                tuple(text.get_text() for text in axis.texts),
                                (round(box.x0), round(height - box.y1), round(box.x1),
                                 round(height - box.y0))))
        return tuple(panels)
    finally:
        plt.close(fig)


def _legend(top, axes: dict) -> None:
    # Below the temperature curves there is room (they start and end at idle); a clock or
    # power panel on top is too short for a fixed place.
    top.legend(loc="lower center" if "temp_c" in axes else "best", fontsize=8)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def render_png(report: RunReport, path: Path) -> tuple[Panel, ...]:
    title = f"Thermal report: {report.title}"
    if report.memo:
        title += f"\n{report.memo}"
    panels = panels_drawn(report.gpus)
    plt, fig, axes = _figure(title, panels)
    top = next(iter(axes.values()))
    values: dict[str, list[float]] = {column: [] for column in axes}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    first = report.gpus[0]
    origin = first.origin
    fitted = False
    shades = (("idle before", first.idle, "0.5", 0.12), ("bench", first.bench, "tab:red", 0.08),
              ("cooling", first.cool, "tab:blue", 0.08))
    for name, rows, color, alpha in shades:
        if rows:
            start, end = _minutes([rows[0], rows[-1]], origin)
            for axis in axes.values():
                axis.axvspan(start, end, color=color, alpha=alpha, lw=0,
                             label=name if axis is top else None)
    for i, gpu in enumerate(report.gpus):
        color = colors[i % len(colors)]
        rows = gpu.rows()
        t = _minutes(rows, origin)
        summary = gpu.summary
        taus = [f"τ heat {summary.tau_heat_s:.0f} s" if summary.tau_heat_s else None,
                f"τ cool {summary.tau_cool_s:.0f} s" if summary.tau_cool_s else None]
        label = _mpl_text(gpu.label + "".join(f", {x}" for x in taus if x))
        for column, axis in axes.items():
            ys = _values(rows, column)
            values[column] += _finite(ys)
            if column == "temp_c":
                axis.plot(t, ys, color=color, lw=0.8, alpha=0.55, label=label)
            else:
                axis.plot(t, ys, color=color, lw=1, label=label if axis is top else None)
        if "temp_c" not in axes:
            continue
        shift = (gpu.origin - origin).total_seconds()
        for fit, good in ((summary.heat_fit, summary.tau_heat_s),
                          (summary.cool_fit, summary.tau_cool_s)):
            if fit is None or good is None:
                continue
            xs = [fit.t0_s + fit.duration_s * k / 200 for k in range(201)]
            ys = [float(y) for y in fit.at(xs)]
            values["temp_c"] += ys
            fitted = True
            axes["temp_c"].plot([(x + shift) / 60 for x in xs], ys, color=color, lw=2.2,
                                ls="--")
    for column, axis in axes.items():
        note_not_reported(axis, [_mpl_text(g.label) for g in report.gpus
                                 if not reports_column(g, column)],
                          len(report.gpus))
    if fitted:
        top.plot([], [], color="k", lw=2.2, ls="--", label="first-order fit")
    _legend(top, axes)
    return _finish(plt, fig, axes, values, path)


def render_compare_png(reports: Sequence[RunReport], path: Path) -> tuple[Panel, ...]:
    """One colour per GPU, one line style per run."""
    title = "Thermal comparison: " + " vs ".join(r.title for r in reports)
    panels = panels_drawn([gpu for report in reports for gpu in report.gpus])
    plt, fig, axes = _figure(title, panels)
    top = next(iter(axes.values()))
    values: dict[str, list[float]] = {column: [] for column in axes}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ("-", "--", "-.", ":")
    gpu_keys: dict[tuple[str, str], str] = {}
    for report in reports:
        for gpu in report.gpus:
            gpu_keys.setdefault((gpu.host, gpu.gpu_uuid), gpu.label)
    order = list(gpu_keys)
    for axis in axes.values():
        axis.axvline(0, color="0.4", lw=0.8)
    for r, report in enumerate(reports):
        style = styles[r % len(styles)]
        for gpu in report.gpus:
            color = colors[order.index((gpu.host, gpu.gpu_uuid)) % len(colors)]
            rows = gpu.rows()
            t = _minutes(rows, gpu.origin)
            for column, axis in axes.items():
                ys = _values(rows, column)
                values[column] += _finite(ys)
                axis.plot(t, ys, color=color, lw=1.1 if column == "temp_c" else 1, ls=style)
            if gpu.bench:
                end = _minutes([gpu.bench[-1]], gpu.origin)[0]
                for axis in axes.values():
                    axis.axvline(end, color="0.4", lw=0.8, ls=style)
    for column, axis in axes.items():
        note_not_reported(axis, _missing_in_runs(reports, gpu_keys, column), len(gpu_keys))
    for key, label in gpu_keys.items():
        top.plot([], [], color=colors[order.index(key) % len(colors)], lw=2,
                 label=_mpl_text(label))
    for r, report in enumerate(reports):
        memo = f": {report.memo}" if report.memo else ""
        top.plot([], [], color="k", lw=1.1, ls=styles[r % len(styles)],
                 label=_mpl_text(f"{report.title}{memo}"))
    _legend(top, axes)
    return _finish(plt, fig, axes, values, path)


def _missing_in_runs(reports: Sequence[RunReport], gpu_keys: dict[tuple[str, str], str],
                     column: str) -> list[str]:
    """The GPUs without values for column: the label alone when no run has any, else which
    runs lack them."""
    missing = []
    for key, label in gpu_keys.items():
        runs = [(report.title, reports_column(gpu, column)) for report in reports
                for gpu in report.gpus if (gpu.host, gpu.gpu_uuid) == key]
        without = [title for title, has in runs if not has]
        if len(without) == len(runs):
            missing.append(_mpl_text(label))
        elif without:
            missing.append(_mpl_text(f"{label} in {', '.join(without)}"))
    return missing
