"""Draw a reduced Series as a PNG: stacked panels on one time axis, one line per GPU with its
min-max band, status periods as background bands, slowdown shading, the slowdown threshold."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from gpu_telemetry.series import Series  # noqa: E402

WIDTH_IN, DPI = 14.0, 100
PANEL_HEIGHT_IN = 3.2

TITLES = {
    "temperature": ("GPU temperature", "°C"),
    "power": ("Power draw", "W"),
    "sm_clock": ("SM clock", "MHz"),
    "fan": ("Fan", "%"),
    "utilization": ("GPU utilisation", "%"),
    "memory_temperature": ("Memory temperature", "°C"),
}
STATUS_COLOURS = {"idle": "#d8e8f8", "prod": "#dcf0d8", "bench": "#fbe0c8"}
OTHER_STATUS_COLOUR = "#eeeeee"
THERMAL_COLOUR, POWER_COLOUR = "#d62728", "#9467bd"


def _with_gaps(times, values, bucket_sec: int):
    """Arrays for plotting, with a NaN wherever a bucket is missing so that a collector outage
    shows as a gap, not as a straight line across it."""
    xs, ys = [], []
    gap = timedelta(seconds=bucket_sec * 2.5)
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        if i and t - times[i - 1] > gap:
            xs.append(times[i - 1] + timedelta(seconds=bucket_sec))
            ys.append(np.nan)
        xs.append(t)
        ys.append(np.nan if v is None else float(v))
    return xs, np.array(ys, dtype=float)


def _status_periods(series: Series):
    """(start, end, tag) runs of equal status, from the per-bucket status."""
    periods = []
    step = timedelta(seconds=series.bucket_sec)
    for t, tag in series.status:
        if periods and periods[-1][2] == tag and t - periods[-1][1] <= step * 2.5:
            periods[-1][1] = t + step
        else:
            periods.append([t, t + step, tag])
    return periods


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


def render(series: Series, out: Path, *, title: str | None, tz: ZoneInfo,
           description: str) -> None:
    """Write the PNG; an empty series gives a picture that says there is no data."""
    panels = len(series.metrics)
    fig_height = 1.6 + PANEL_HEIGHT_IN * panels
    fig, axes = plt.subplots(panels, 1, sharex=True, squeeze=False,
                             figsize=(WIDTH_IN, fig_height), dpi=DPI)
    axes = [row[0] for row in axes]
    heading = title or "GPU telemetry"
    fig.suptitle(f"{heading}\n{description}", fontsize=11)
    if series.empty:
        for ax in axes:
            ax.set_axis_off()
        fig.text(0.5, 0.5, "No data for this range and these filters", ha="center",
                 va="center", fontsize=16, color="#555555")
        _save(fig, out)
        return
    periods = _status_periods(series)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {gpu.gpu_uuid + gpu.host: cycle[i % len(cycle)] for i, gpu in enumerate(series.gpus)}
    many_hosts = len({gpu.host for gpu in series.gpus}) > 1
    shaded: set[str] = set()
    for ax, metric in zip(axes, series.metrics, strict=True):
        name, unit = TITLES[metric]
        _draw_status(ax, periods)
        for gpu in series.gpus:
            colour = colours[gpu.gpu_uuid + gpu.host]
            xs, mean = _with_gaps(gpu.times, gpu.mean[metric], series.bucket_sec)
            _, low = _with_gaps(gpu.times, gpu.low[metric], series.bucket_sec)
            _, high = _with_gaps(gpu.times, gpu.high[metric], series.bucket_sec)
            if np.all(np.isnan(mean)):
                continue
            label = f"{gpu.host}: {gpu.label}" if many_hosts else gpu.label
            if series.bucket_sec > 1:
                ax.fill_between(xs, low, high, color=colour, alpha=0.2, linewidth=0, zorder=2)
            ax.plot(xs, mean, color=colour, linewidth=1.2, label=label, zorder=3)
        if metric == "temperature":
            _draw_thresholds(ax, series, colours)
        if metric in ("temperature", "power"):
            shaded |= _draw_slowdowns(ax, series)
        ax.set_ylabel(f"{name} ({unit})")
        ax.grid(True, alpha=0.3)
        ax.margins(x=0)
    handles, labels = axes[0].get_legend_handles_labels()
    tags = [tag for tag in STATUS_COLOURS if any(p[2] == tag for p in periods)]
    handles += [Patch(color=STATUS_COLOURS[tag]) for tag in tags]
    labels += [f"status {tag}" for tag in tags]
    if "thermal" in shaded:
        handles.append(Patch(color=THERMAL_COLOUR, alpha=0.6))
        labels.append("thermal slowdown active")
    if "power" in shaded:
        handles.append(Patch(color=POWER_COLOUR, alpha=0.6))
        labels.append("power cap active")
    axes[0].legend(handles, labels, loc="lower left", bbox_to_anchor=(0, 1.01), fontsize=8,
                   ncol=min(len(labels), 4), frameon=False)
    locator = mdates.AutoDateLocator(tz=tz)
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
    axes[-1].set_xlabel(f"time ({tz.key})")
    axes[-1].set_xlim(series.start, series.end)
    _save(fig, out)


def _draw_thresholds(ax, series: Series, colours: dict) -> None:
    """The slowdown temperature, dashed: once in grey when every GPU shares it."""
    known = [gpu for gpu in series.gpus if gpu.slowdown_c is not None]
    if known and len({gpu.slowdown_c for gpu in known}) == 1:
        ax.axhline(known[0].slowdown_c, color="#555555", linestyle="--", linewidth=1,
                   label=f"slowdown {known[0].slowdown_c} °C", zorder=3)
        return
    for gpu in known:
        ax.axhline(gpu.slowdown_c, color=colours[gpu.gpu_uuid + gpu.host], linestyle="--",
                   linewidth=1, label=f"slowdown {gpu.slowdown_c} °C ({gpu.label})", zorder=3)


def _save(fig, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
