"""Draw a reduced Series as a PNG: stacked panels on one time axis, one line per GPU with its
min-max band, status periods as background bands, slowdown shading, the slowdown threshold."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from gpu_telemetry.analysis.axes import note_not_reported, readable_limits  # noqa: E402
from gpu_telemetry.analysis.plotting.labels import mpl_text as _mpl_text  # noqa: E402
from gpu_telemetry.analysis.series import Series  # noqa: E402
from gpu_telemetry.errors import OutputError  # noqa: E402
from gpu_telemetry.schema import plot_metrics  # noqa: E402
from gpu_telemetry.tags import BENCH, IDLE, PROD  # noqa: E402

WIDTH_IN, DPI = 14.0, 100
PANEL_HEIGHT_IN = 3.2

STATUS_COLOURS = {IDLE: "#d8e8f8", PROD: "#dcf0d8", BENCH: "#fbe0c8"}
OTHER_STATUS_COLOUR = "#eeeeee"
THERMAL_COLOUR, POWER_COLOUR = "#d62728", "#9467bd"
GAP_COLOUR = "#bbbbbb"


def _with_gaps(times, values, gap_sec: float):
    """Arrays for plotting, with a NaN wherever two points are further apart than gap_sec, so
    that a collector outage shows as a gap, not as a straight line across it."""
    xs, ys = [], []
    gap = timedelta(seconds=gap_sec)
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        if i and t - times[i - 1] > gap:
            xs.append(times[i - 1] + (t - times[i - 1]) / 2)
            ys.append(np.nan)
        xs.append(t)
        ys.append(np.nan if v is None else float(v))
    return xs, np.array(ys, dtype=float)


def _isolated(ys: np.ndarray) -> np.ndarray:
    """Points with no drawn neighbour on either side: a line cannot show them, a marker can."""
    present = ~np.isnan(ys)
    before = np.concatenate(([False], present[:-1]))
    after = np.concatenate((present[1:], [False]))
    return present & ~before & ~after


def _status_periods(series: Series):
    """(start, end, tag) runs of equal status, from the per-bucket status."""
    periods = []
    step = timedelta(seconds=series.step_sec)
    gap = timedelta(seconds=series.gap_sec)
    for t, tag in series.status:
        if periods and periods[-1][2] == tag and t - periods[-1][1] <= gap:
            periods[-1][1] = t + step
        else:
            periods.append([t, t + step, tag])
    return periods


def _gaps(series: Series) -> list[tuple]:
    """Stretches with no sample of any GPU, longer than a gap."""
    times = sorted({t for gpu in series.gpus for t in gpu.times})
    gap = timedelta(seconds=series.gap_sec)
    return [(a, b) for a, b in itertools.pairwise(times) if b - a > gap]


def _draw_status(ax, periods) -> None:
    for start, end, tag in periods:
        if tag is None:
            continue
        ax.axvspan(start, end, color=STATUS_COLOURS.get(tag, OTHER_STATUS_COLOUR), zorder=0,
                   linewidth=0)


def _draw_slowdowns(ax, series: Series) -> set[str]:
    """Strips along the bottom where a slowdown was active; returns which kinds were drawn."""
    drawn = set()
    transform = ax.get_xaxis_transform()
    for gpu in series.gpus:
        for kind, flags, colour, low in (("thermal", gpu.thermal, THERMAL_COLOUR, 0.0),
                                         ("power", gpu.power, POWER_COLOUR, 0.04)):
            if any(flags):
                ax.fill_between(gpu.times, low, low + 0.04, where=flags, step="post",
                                color=colour, alpha=0.6, transform=transform, linewidth=0,
                                zorder=1)
                drawn.add(kind)
    return drawn


def panels_to_draw(series: Series) -> tuple[str, ...]:
    """The requested metrics that some GPU of the picture reports; all of them when none is
    reported at all, so that the picture says so instead of showing nothing."""
    reported = tuple(m for m in series.metrics if any(gpu.has(m) for gpu in series.gpus))
    return reported or series.metrics


@dataclass(frozen=True)
class Drawn:
    """What a picture shows: its panels, top to bottom, and the legend's entries."""

    panels: tuple[str, ...]
    legend: tuple[str, ...]


def render(series: Series, out: Path, *, title: str | None, tz: ZoneInfo,
           description: str) -> Drawn:
    """Write the PNG and say what it shows; an empty series gives a picture that says there
    is no data."""
    metrics = panels_to_draw(series)
    fig_height = 1.6 + PANEL_HEIGHT_IN * len(metrics)
    fig, axes = plt.subplots(len(metrics), 1, sharex=True, squeeze=False,
                             figsize=(WIDTH_IN, fig_height), dpi=DPI)
    axes = [row[0] for row in axes]
    heading = title or (f"Run {series.run.run_id}" if series.run else "GPU telemetry")
    fig.suptitle(_mpl_text(f"{heading}\n{description}"), fontsize=11)
    if series.empty:
        for ax in axes:
            ax.set_axis_off()
        fig.text(0.5, 0.5, "No data for this range and these filters", ha="center",
                 va="center", fontsize=16, color="#555555")
        _save(fig, out)
        return Drawn((), ())
    periods = _status_periods(series)
    gaps = _gaps(series)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {gpu.gpu_uuid + gpu.host: cycle[i % len(cycle)] for i, gpu in enumerate(series.gpus)}
    many_hosts = len({gpu.host for gpu in series.gpus}) > 1
    labels_of = {id(gpu): f"{gpu.host}: {gpu.label}" if many_hosts else gpu.label
                 for gpu in series.gpus}
    shaded: set[str] = set()
    columns = plot_metrics()
    for ax, metric in zip(axes, metrics, strict=True):
        name, unit = columns[metric].label, columns[metric].unit
        _draw_status(ax, periods)
        for start, end in gaps:
            ax.axvspan(start, end, facecolor="none", edgecolor=GAP_COLOUR, hatch="//",
                       linewidth=0, zorder=0.5)
        values = []
        for gpu in series.gpus:
            if not gpu.has(metric):
                continue
            colour = colours[gpu.gpu_uuid + gpu.host]
            xs, mean = _with_gaps(gpu.times, gpu.mean[metric], series.gap_sec)
            _, low = _with_gaps(gpu.times, gpu.low[metric], series.gap_sec)
            _, high = _with_gaps(gpu.times, gpu.high[metric], series.gap_sec)
            if not series.every_sample:
                ax.fill_between(xs, low, high, color=colour, alpha=0.2, linewidth=0, zorder=2)
            ax.plot(xs, mean, color=colour, linewidth=1.2, label=labels_of[id(gpu)], zorder=3)
            alone = _isolated(mean)
            if alone.any():
                ax.plot(np.array(xs, dtype=object)[alone], mean[alone], linestyle="none",
                        marker="o", markersize=5, color=colour, zorder=4)
            values += [v for v in (*gpu.low[metric], *gpu.high[metric]) if v is not None]
        note_not_reported(ax, [labels_of[id(g)] for g in series.gpus if not g.has(metric)],
                          len(series.gpus))
        if metric == "temperature":
            values += _draw_thresholds(ax, series, colours)
        if metric in ("temperature", "power"):
            shaded |= _draw_slowdowns(ax, series)
        limits = readable_limits(values, unit)
        if limits:
            ax.set_ylim(*limits)
        ax.set_ylabel(f"{name} ({unit})")
        ax.grid(True, alpha=0.3)
        ax.margins(x=0)
        if series.run:
            for when in (series.run.first, series.run.last):
                ax.axvline(when, color="#333333", linestyle=":", linewidth=1, zorder=3)
    legend = _legend(axes[0], periods, shaded, bool(gaps), bool(series.run))
    locator = mdates.AutoDateLocator(tz=tz)
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
    axes[-1].set_xlabel(f"time ({tz.key})")
    axes[-1].set_xlim(series.start, series.end)
    _save(fig, out)
    return Drawn(metrics, legend)


def _legend(ax, periods, shaded: set[str], gaps: bool, run: bool) -> tuple[str, ...]:
    handles, labels = ax.get_legend_handles_labels()
    tags = [tag for tag in STATUS_COLOURS if any(p[2] == tag for p in periods)]
    handles += [Patch(color=STATUS_COLOURS[tag]) for tag in tags]
    labels += [f"status {tag}" for tag in tags]
    # A hand-written status.json may carry a tag set_status.sh refuses: name it all the same.
    others = sorted({p[2] for p in periods if p[2] is not None and p[2] not in STATUS_COLOURS})
    if others:
        handles.append(Patch(color=OTHER_STATUS_COLOUR))
        labels.append(_mpl_text("status " + ", ".join(others)))
    if "thermal" in shaded:
        handles.append(Patch(color=THERMAL_COLOUR, alpha=0.6))
        labels.append("thermal slowdown active")
    if "power" in shaded:
        handles.append(Patch(color=POWER_COLOUR, alpha=0.6))
        labels.append("power cap active")
    if gaps:
        handles.append(Patch(facecolor="none", edgecolor=GAP_COLOUR, hatch="//"))
        labels.append("no samples")
    if run:
        handles.append(Line2D([], [], color="#333333", linestyle=":", linewidth=1))
        labels.append("run start / end")
    ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(0, 1.01), fontsize=8,
              ncol=min(len(labels), 4), frameon=False)
    return tuple(labels)


def _draw_thresholds(ax, series: Series, colours: dict) -> list[int]:
    """The slowdown temperature, dashed: once in grey when every GPU shares it. Returns the
    temperatures drawn, for the y-range."""
    known = [gpu for gpu in series.gpus if gpu.slowdown_c is not None]
    if known and len({gpu.slowdown_c for gpu in known}) == 1:
        ax.axhline(known[0].slowdown_c, color="#555555", linestyle="--", linewidth=1,
                   label=f"slowdown {known[0].slowdown_c} °C", zorder=3)
        return [known[0].slowdown_c]
    for gpu in known:
        ax.axhline(gpu.slowdown_c, color=colours[gpu.gpu_uuid + gpu.host], linestyle="--",
                   linewidth=1, label=f"slowdown {gpu.slowdown_c} °C ({gpu.label})", zorder=3)
    return [gpu.slowdown_c for gpu in known]


def _save(fig, out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(out)
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}"
                          f"{f' ({exc.filename})' if exc.filename else ''}") from exc
    finally:
        plt.close(fig)
