"""Time series for plots, reduced in SQL to about one point per pixel.

A range holding more samples than the picture has pixels is cut into equal time buckets, each
keeping min, max, sum and count per metric, so the plotted maximum is the true maximum. Long
ranges read the one-minute rollup (sql/002_rollup_1m.sql) for the whole minutes and the raw
rows only for the partial minutes at either end; short ranges read the raw rows.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from gpu_telemetry.schema import counted_in, plot_metrics

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

# --metric names -> column; the rollup keeps each as x_min, x_max, x_sum and x_n.
METRICS: dict[str, str] = {metric: column.name for metric, column in plot_metrics().items()}
ROLLUP_BUCKET_SEC = 60
MAX_POINTS = 1200  # about the width of a plot's drawing area in pixels
GAP_STEPS = 3  # a gap is longer than this many sample intervals (or buckets)
FIT_PAD = 0.02  # a picture fitted to the samples found is this much wider on each side
# A run drawn by its id gets this share of its length before and after it: a 30-minute run
# 6 minutes, an 18-second stand-in run 4 seconds, so the run fills the picture either way.
RUN_MARGIN_SHARE = 0.2

# The flags the rollup counts in thermal_slowdown_n and power_cap_n, for the raw rows.
_THERMAL = f"({' OR '.join(counted_in('thermal_slowdown_n'))})"
_POWER = f"({' OR '.join(counted_in('power_cap_n'))})"


@dataclass(frozen=True)
class Filters:
    """What the rows must match; every value reaches SQL as a parameter, never as text."""

    host: str | None = None
    status_tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    include_memos: tuple[str, ...] = ()  # any of them, case-insensitive substring
    exclude_memos: tuple[str, ...] = ()  # none of them
    gpus: tuple[str, ...] = ()  # uuid, index or bus id (full or its bus:device.function end)
    run_id: str | None = None

    @property
    def selects_periods(self) -> bool:
        """Whether the filters pick stretches of time (a tag, a memo, a run), not only GPUs."""
        return bool(self.status_tags or self.exclude_tags or self.include_memos
                    or self.exclude_memos or self.run_id)


@dataclass(frozen=True)
class RunSpan:
    """Where a run lies: its first and last sample, and the hosts that recorded it."""

    run_id: str
    first: datetime
    last: datetime
    hosts: tuple[str, ...]


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


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(filters: Filters) -> tuple[list[sql.Composable], dict]:
    from psycopg import sql

    parts: list[sql.Composable] = []
    params: dict = {}
    if filters.host:
        parts.append(sql.SQL("host = %(host)s"))
        params["host"] = filters.host
    if filters.status_tags:
        parts.append(sql.SQL("status_tag = ANY(%(tags)s)"))
        params["tags"] = list(filters.status_tags)
    if filters.exclude_tags:
        parts.append(sql.SQL("coalesce(status_tag, '') <> ALL(%(not_tags)s)"))
        params["not_tags"] = list(filters.exclude_tags)
    if filters.include_memos:
        parts.append(sql.SQL("status_memo ILIKE ANY(%(memos)s)"))
        params["memos"] = [f"%{_escape_like(m)}%" for m in filters.include_memos]
    if filters.exclude_memos:
        parts.append(sql.SQL("NOT coalesce(status_memo ILIKE ANY(%(not_memos)s), false)"))
        params["not_memos"] = [f"%{_escape_like(m)}%" for m in filters.exclude_memos]
    if filters.run_id:
        parts.append(sql.SQL("run_id = %(run_id)s"))
        params["run_id"] = filters.run_id
    if filters.gpus:
        indexes = [int(g) for g in filters.gpus if g.isdigit()]
        names = [g.lower() for g in filters.gpus if not g.isdigit()]
        parts.append(sql.SQL(
            "(gpu_uuid = ANY(%(gpu_names)s) OR lower(pci_bus_id) = ANY(%(gpu_names)s)"
            " OR lower(pci_bus_id) LIKE ANY(%(gpu_bus_ends)s) OR gpu_index = ANY(%(gpu_idx)s))"))
        params["gpu_names"] = [g for g in filters.gpus if not g.isdigit()] + names
        params["gpu_bus_ends"] = [f"%{_escape_like(name)}" for name in names if ":" in name]
        params["gpu_idx"] = indexes
    return parts, params


def _raw_part(columns: list[str], where: sql.Composable) -> sql.Composable:
    from psycopg import sql

    metrics = sql.SQL(", ").join(
        sql.SQL("min({c}), max({c}), coalesce(sum({c}), 0)::float8, count({c})").format(
            c=sql.Identifier(c)) for c in columns)
    return sql.SQL(
        "SELECT floor(extract(epoch FROM ts) / %(bucket)s) * %(bucket)s AS t, host, gpu_uuid,"
        " status_tag, max(gpu_name), max(pci_bus_id), max(gpu_index), max(temp_slowdown_c),"
        f" count(*), count(*) FILTER (WHERE {_THERMAL}), count(*) FILTER (WHERE {_POWER}),"
        " sum(extract(epoch FROM ts))::float8,"
        " {metrics} FROM telemetry.gpu_telemetry WHERE {where} GROUP BY 1, 2, 3, 4"
    ).format(metrics=metrics, where=where)


def _rollup_part(columns: list[str], where: sql.Composable) -> sql.Composable:
    from psycopg import sql

    metrics = sql.SQL(", ").join(
        sql.SQL("min({lo}), max({hi}), sum({total}), sum({n})").format(
            lo=sql.Identifier(f"{c}_min"), hi=sql.Identifier(f"{c}_max"),
            total=sql.Identifier(f"{c}_sum"), n=sql.Identifier(f"{c}_n")) for c in columns)
    return sql.SQL(
        "SELECT floor(extract(epoch FROM bucket) / %(bucket)s) * %(bucket)s AS t, host, gpu_uuid,"
        " status_tag, max(gpu_name), max(pci_bus_id), max(gpu_index), max(temp_slowdown_c),"
        " sum(samples), sum(thermal_slowdown_n), sum(power_cap_n),"
        f" sum((extract(epoch FROM bucket) + {ROLLUP_BUCKET_SEC / 2}) * samples)::float8,"
        " {metrics}"
        " FROM telemetry.gpu_telemetry_1m WHERE {where} GROUP BY 1, 2, 3, 4"
    ).format(metrics=metrics, where=where)


def build_query(filters: Filters, metrics: tuple[str, ...], start: datetime, end: datetime,
                max_points: int) -> tuple[sql.Composable, dict, int, bool]:
    """The SQL and its parameters; also the bucket width and whether the rollup is read."""
    # Imported here, not at the top: plot_temp.py builds Filters before it starts the thread
    # that imports psycopg and queries while matplotlib loads.
    from psycopg import sql

    columns = [METRICS[m] for m in metrics]
    bucket = bucket_seconds(start, end, max_points)
    conditions, params = _conditions(filters)
    params.update(bucket=bucket, start=start, end=end)
    use_rollup = bucket >= ROLLUP_BUCKET_SEC
    if not use_rollup:
        where = sql.SQL(" AND ").join(
            [sql.SQL("ts >= %(start)s AND ts < %(end)s"), *conditions])
        return _raw_part(columns, where), params, bucket, False
    # Whole minutes from the rollup; the partial minutes at the ends from the raw rows.
    first_minute = start.replace(second=0, microsecond=0)
    if first_minute < start:
        first_minute += timedelta(minutes=1)
    last_minute = max(end.replace(second=0, microsecond=0), first_minute)
    params.update(first_minute=first_minute, last_minute=last_minute)
    raw_where = sql.SQL(" AND ").join([
        sql.SQL("((ts >= %(start)s AND ts < %(first_minute)s)"
                " OR (ts >= %(last_minute)s AND ts < %(end)s))"), *conditions])
    rollup_where = sql.SQL(" AND ").join([
        sql.SQL("bucket >= %(first_minute)s AND bucket < %(last_minute)s"), *conditions])
    query = sql.SQL("{raw} UNION ALL {rollup}").format(
        raw=_raw_part(columns, raw_where), rollup=_rollup_part(columns, rollup_where))
    return query, params, bucket, True


def fetch_run(conn: psycopg.Connection, run_id: str, host: str | None = None) -> RunSpan | None:
    """The run's first and last sample and its hosts, or None when no row has that run id."""
    first, last, hosts = conn.execute(
        "SELECT min(ts), max(ts), array_agg(DISTINCT host) FROM telemetry.gpu_telemetry"
        " WHERE run_id = %s AND (%s::text IS NULL OR host = %s)", (run_id, host, host)).fetchone()
    return None if first is None else RunSpan(run_id, first, last, tuple(sorted(hosts)))


def fetch_extent(conn: psycopg.Connection, filters: Filters, start: datetime, end: datetime
                 ) -> tuple[datetime, datetime] | None:
    """The first and last sample in [start, end) that the filters select, or None.

    The rollup finds the first and last minute holding such samples, so the two index scans of
    the rows that follow start next to their answer however long the range."""
    from psycopg import sql

    conditions, params = _conditions(filters)
    params.update(start=start, end=end, start_minute=start.replace(second=0, microsecond=0))
    rollup_where = sql.SQL(" AND ").join(
        [sql.SQL("bucket >= %(start_minute)s AND bucket < %(end)s"), *conditions])
    lo, hi = conn.execute(sql.SQL(
        "SELECT min(bucket), max(bucket) FROM telemetry.gpu_telemetry_1m WHERE {}"
    ).format(rollup_where), params).fetchone()
    if lo is None:
        return None
    params.update(lo=max(lo, start), hi=min(hi + timedelta(minutes=1), end))
    found = []
    for aggregate, bounds in (("min", "ts >= %(lo)s AND ts < %(end)s"),
                              ("max", "ts >= %(start)s AND ts < %(hi)s")):
        where = sql.SQL(" AND ").join([sql.SQL(bounds), *conditions])
        found.append(conn.execute(sql.SQL("SELECT {}(ts) FROM telemetry.gpu_telemetry WHERE {}")
                                  .format(sql.SQL(aggregate), where), params).fetchone()[0])
    first, last = found
    return None if first is None or last is None else (first, last)


def fetch_plot(conn: psycopg.Connection, filters: Filters, metrics: tuple[str, ...],
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


def fetch_series(conn: psycopg.Connection, filters: Filters, metrics: tuple[str, ...],
                 start: datetime, end: datetime, max_points: int = MAX_POINTS) -> Series:
    query, params, bucket, from_rollup = build_query(filters, metrics, start, end, max_points)
    rows = conn.execute(query, params).fetchall()
    series = assemble(rows, metrics, start, end, bucket, from_rollup)
    if not from_rollup and rows:
        series.sample_sec = fetch_sample_interval(conn, filters, start, end)
    return series


def fetch_sample_interval(conn: psycopg.Connection, filters: Filters, start: datetime,
                          end: datetime) -> float | None:
    """The median time between two samples of one GPU, over the first rows of the range of
    these GPUs whatever their status: three prod samples an hour apart are three samples of a
    5 s collector, not a line with a one-hour step."""
    from psycopg import sql

    gpus_only = replace(filters, status_tags=(), exclude_tags=(), include_memos=(),
                        exclude_memos=(), run_id=None)
    conditions, params = _conditions(gpus_only)
    params.update(start=start, end=end)
    where = sql.SQL(" AND ").join([sql.SQL("ts >= %(start)s AND ts < %(end)s"), *conditions])
    return conn.execute(sql.SQL(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY step) FROM ("
        " SELECT extract(epoch FROM ts - lag(ts) OVER (PARTITION BY host, gpu_uuid ORDER BY ts))"
        " AS step FROM (SELECT ts, host, gpu_uuid FROM telemetry.gpu_telemetry WHERE {}"
        " ORDER BY ts LIMIT 2000) AS first_rows) AS steps WHERE step > 0"
    ).format(where), params).fetchone()[0]


def assemble(rows: list[tuple], metrics: tuple[str, ...], start: datetime, end: datetime,
             bucket: int, from_rollup: bool) -> Series:
    """Merge the partial rows (one per bucket, GPU and status tag, from raw rows and rollup)
    into one point per bucket and GPU."""
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
