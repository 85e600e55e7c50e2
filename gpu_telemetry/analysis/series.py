"""Time series for plots, reduced in SQL to about one point per pixel.

A range holding more samples than the picture has pixels is cut into equal time buckets, each
keeping min, max, sum and count per metric, so the plotted maximum is the true maximum. Long
ranges read the one-minute rollup (sql/002_rollup_1m.sql) for the whole minutes and the raw
rows only for the partial minutes at either end; short ranges read the raw rows.

Here: which range and bucket width a picture gets, and the series it draws, merged from the
rows of the queries in db/series.py (which also holds Filters and RunSpan, the query's own
records; they are imported here for the callers). Nothing here imports psycopg.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from gpu_telemetry.db.series import (
    ROLLUP_BUCKET_SEC,
    Filters,
    RunSpan,
    fetch_buckets,
    fetch_extent,
    fetch_run,
    fetch_sample_interval,
)
from gpu_telemetry.schema import plot_metrics

# --metric names -> column; the rollup keeps each as x_min, x_max, x_sum and x_n.
METRICS: dict[str, str] = {metric: column.name for metric, column in plot_metrics().items()}
MAX_POINTS = 1200  # about the width of a plot's drawing area in pixels
GAP_STEPS = 3  # a gap is longer than this many sample intervals (or buckets)
FIT_PAD = 0.02  # a picture fitted to the samples found is this much wider on each side
# A run drawn by its id gets this share of its length before and after it: a 30-minute run
# 6 minutes, an 18-second stand-in run 4 seconds, so the run fills the picture either way.
RUN_MARGIN_SHARE = 0.2


@dataclass
class GpuSeries:
    host: str
    gpu_uuid: str
    gpu_name: str | None
    pci_bus_id: str | None
    gpu_index: int | None
    times: list[datetime] = field(default_factory=list)
    low: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    high: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    mean: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    thermal: list[bool] = field(default_factory=list)  # a thermal slowdown in the bucket
    power: list[bool] = field(default_factory=list)  # a power cap in the bucket
    slowdown_c: int | None = None

    def has(self, metric: str) -> bool:
        return any(value is not None for value in self.mean[metric])

    @property
    def label(self) -> str:
        return " ".join(part for part in (self.gpu_name, self.pci_bus_id) if part) or self.gpu_uuid


@dataclass
class Series:
    start: datetime
    end: datetime
    bucket_sec: int
    metrics: tuple[str, ...]
    gpus: list[GpuSeries]
    status: list[tuple[datetime, str | None]]  # the bucket's most common status tag
    samples: int
    from_rollup: bool
    run: RunSpan | None = None  # set when the range was chosen to show this run
    sample_sec: float | None = None  # how often the collector sampled these GPUs, if known

    @property
    def empty(self) -> bool:
        return not self.gpus

    @property
    def step_sec(self) -> float:
        """The usual time between two points: the bucket, or the sample interval when the
        samples are further apart than a bucket is wide (a short range)."""
        if self.sample_sec is not None:
            return max(self.bucket_sec, self.sample_sec)
        steps = [(b - a).total_seconds() for gpu in self.gpus
                 for a, b in itertools.pairwise(gpu.times)]
        return max(self.bucket_sec, statistics.median(steps) if steps else 0)

    @property
    def gap_sec(self) -> float:
        """A line breaks only where two points are further apart than this: an outage, not the
        spacing of the samples."""
        return GAP_STEPS * self.step_sec

    @property
    def every_sample(self) -> bool:
        """Each point is one sample: nothing was reduced."""
        return self.samples == sum(len(gpu.times) for gpu in self.gpus)

    @property
    def resolution(self) -> str:
        if self.every_sample:
            return f"every sample ({_seconds(self.step_sec)} apart)"
        text = f"{_seconds(self.bucket_sec)} per point"
        return text + (" from the one-minute rollup" if self.from_rollup else "")


def _seconds(value: float) -> str:
    if value >= 120 and value % 60 == 0:
        return f"{value / 60:g} min"
    return f"{value:.3g} s"


def bucket_seconds(start: datetime, end: datetime, max_points: int) -> int:
    """Whole seconds per bucket so the range has at most max_points buckets; a whole number of
    minutes once it is a minute or more, so rollup minutes never straddle two buckets."""
    span = max((end - start).total_seconds(), 1.0)
    seconds = max(1, math.ceil(span / max(max_points, 1)))
    if seconds >= ROLLUP_BUCKET_SEC:
        seconds = math.ceil(seconds / ROLLUP_BUCKET_SEC) * ROLLUP_BUCKET_SEC
    return seconds


def fetch_plot(conn, filters: Filters, metrics: tuple[str, ...],
               start: datetime | None, end: datetime | None, *,
               run_margin: timedelta | None = None, fit: bool = False,
               max_points: int = MAX_POINTS) -> Series:
    """The series a picture draws, over the range it should show.

    Without start and end (a run asked for by id, no range), the run's own span widened by
    run_margin (default: RUN_MARGIN_SHARE of the run's length) on both sides, with the rows of
    its hosts in that margin (the baseline before, what came after). With fit, the span of the
    samples the filters select inside [start, end), as the original plots did: a 30-minute run
    found in 24 hours fills the picture."""
    run = None
    if start is None or end is None:
        run = fetch_run(conn, filters.run_id, filters.host)
        if run is None:
            now = datetime.now(UTC)
            return assemble([], metrics, now - timedelta(hours=1), now, 1, False)
        if run_margin is None:
            run_margin = (run.last - run.first) * RUN_MARGIN_SHARE
        start, end = run.first - run_margin, run.last + run_margin + timedelta(microseconds=1)
        if len(run.hosts) == 1:
            filters = replace(filters, run_id=None, host=run.hosts[0])
    elif fit:
        extent = fetch_extent(conn, filters, start, end)
        if extent is not None:
            first, last = extent
            pad = max((last - first) * FIT_PAD, timedelta(seconds=10))
            start, end = max(start, first - pad), min(end, last + pad)
    series = fetch_series(conn, filters, metrics, start, end, max_points)
    series.run = run
    return series


def fetch_series(conn, filters: Filters, metrics: tuple[str, ...], start: datetime,
                 end: datetime, max_points: int = MAX_POINTS) -> Series:
    """The series of [start, end) in at most max_points buckets, on a connection of db/."""
    bucket = bucket_seconds(start, end, max_points)
    rows, from_rollup = fetch_buckets(conn, filters, [METRICS[m] for m in metrics], start, end,
                                      bucket)
    series = assemble(rows, metrics, start, end, bucket, from_rollup)
    if not from_rollup and rows:
        series.sample_sec = fetch_sample_interval(conn, filters, start, end)
    return series


def assemble(rows: list[tuple], metrics: tuple[str, ...], start: datetime, end: datetime,
             bucket: int, from_rollup: bool) -> Series:
    """Merge the partial rows of db.series.fetch_buckets (one per bucket, GPU and status tag,
    from raw rows and rollup) into one point per bucket and GPU."""
    merged: dict[tuple, dict] = {}
    status_counts: dict[float, dict] = defaultdict(lambda: defaultdict(int))
    samples = 0
    for row in rows:
        t, host, uuid, tag, name, bus, index, slowdown, count, thermal, power, at = row[:12]
        values = row[12:]
        samples += count
        status_counts[t][tag] += count
        point = merged.get((host, uuid, t))
        if point is None:
            point = merged[(host, uuid, t)] = {
                "name": name, "bus": bus, "index": index, "slowdown": slowdown,
                "thermal": 0, "power": 0, "count": 0, "at": 0.0,
                "low": [None] * len(metrics), "high": [None] * len(metrics),
                "sum": [0.0] * len(metrics), "n": [0] * len(metrics)}
        point["name"] = point["name"] or name
        point["bus"] = point["bus"] or bus
        point["index"] = point["index"] if point["index"] is not None else index
        if slowdown is not None:
            point["slowdown"] = max(point["slowdown"] or slowdown, slowdown)
        point["thermal"] += thermal
        point["power"] += power
        point["count"] += count
        point["at"] += at
        for i in range(len(metrics)):
            low, high, total, n = values[4 * i: 4 * i + 4]
            if low is not None:
                point["low"][i] = low if point["low"][i] is None else min(point["low"][i], low)
            if high is not None:
                point["high"][i] = high if point["high"][i] is None else max(point["high"][i],
                                                                             high)
            point["sum"][i] += float(total or 0)
            point["n"][i] += int(n or 0)
    gpus: dict[tuple, GpuSeries] = {}
    for (host, uuid, t) in sorted(merged, key=lambda key: (key[0], key[1], key[2])):
        point = merged[(host, uuid, t)]
        series = gpus.get((host, uuid))
        if series is None:
            series = gpus[(host, uuid)] = GpuSeries(host, uuid, point["name"], point["bus"],
                                                    point["index"])
        # Drawn at the mean time of its samples: a bucket holding one sample is drawn where
        # that sample was taken, not at the bucket's start.
        series.times.append(datetime.fromtimestamp(point["at"] / point["count"], start.tzinfo))
        for i, metric in enumerate(metrics):
            n = point["n"][i]
            series.low[metric].append(point["low"][i])
            series.high[metric].append(point["high"][i])
            series.mean[metric].append(point["sum"][i] / n if n else None)
        series.thermal.append(point["thermal"] > 0)
        series.power.append(point["power"] > 0)
        if point["slowdown"] is not None:
            series.slowdown_c = max(series.slowdown_c or point["slowdown"], point["slowdown"])
    status = [(datetime.fromtimestamp(float(t), start.tzinfo),
               max(counts.items(), key=lambda item: item[1])[0])
              for t, counts in sorted(status_counts.items())]
    ordered = sorted(gpus.values(), key=lambda g: (g.host, g.gpu_index if g.gpu_index is not None
                                                    else 99, g.pci_bus_id or "", g.gpu_uuid))
    return Series(start, end, bucket, metrics, ordered, status, samples, from_rollup)
