"""The plots' SQL: which rows a picture selects (Filters), where a run lies (RunSpan), and the
time buckets of a range, read from the raw rows or from the one-minute rollup
(sql/002_rollup_1m.sql), with psycopg's errors turned into the named errors (db/read.py).

analysis/series.py chooses the range and the bucket width and merges the rows these queries
return into the series a picture draws. psycopg is imported on the first query, not with this
module: plot_temp.py builds Filters before it starts the thread that imports psycopg and
queries while matplotlib loads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gpu_telemetry.schema import counted_in

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
    from psycopg.abc import Params, Query

ROLLUP_BUCKET_SEC = 60  # the rollup's bucket: one minute

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


def _select(conn: psycopg.Connection, query: Query, params: Params = ()) -> list[tuple]:
    # db.read imports psycopg: here, on the first query, not with this module.
    from gpu_telemetry.db.read import select_rows

    return select_rows(conn, query, params)


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


def build_query(filters: Filters, columns: list[str], start: datetime, end: datetime,
                bucket: int) -> tuple[sql.Composable, dict, bool]:
    """The SQL of fetch_buckets and its parameters; also whether the rollup is read (a bucket
    of a minute or more: bucket is then a whole number of minutes)."""
    from psycopg import sql

    conditions, params = _conditions(filters)
    params.update(bucket=bucket, start=start, end=end)
    if bucket < ROLLUP_BUCKET_SEC:
        where = sql.SQL(" AND ").join(
            [sql.SQL("ts >= %(start)s AND ts < %(end)s"), *conditions])
        return _raw_part(columns, where), params, False
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
    return query, params, True


def fetch_buckets(conn: psycopg.Connection, filters: Filters, columns: list[str],
                  start: datetime, end: datetime, bucket: int) -> tuple[list[tuple], bool]:
    """The partial rows of [start, end) in buckets of `bucket` seconds, and whether the rollup
    was read. One row per bucket, GPU and status tag from each source (raw rows, rollup):
    bucket start (epoch seconds), host, gpu_uuid, status_tag, gpu_name, pci_bus_id, gpu_index,
    slowdown temperature, samples, samples under a thermal slowdown, under a power cap, the
    sum of their times (epoch seconds), then min, max, sum and count of each column."""
    query, params, from_rollup = build_query(filters, columns, start, end, bucket)
    return _select(conn, query, params), from_rollup


# The span of a run's statuses (telemetry.statuses keeps first and last seen): a run's rows are
# read through the time key, not by scanning every partition for the run id.
RUN_SPAN = ("ts >= (SELECT min(first_seen) FROM telemetry.statuses WHERE run_id = %s)"
            " AND ts <= (SELECT max(last_seen) FROM telemetry.statuses WHERE run_id = %s)")


def fetch_run(conn: psycopg.Connection, run_id: str, host: str | None = None) -> RunSpan | None:
    """The run's first and last sample and its hosts, or None when no row has that run id."""
    [(first, last, hosts)] = _select(
        conn, "SELECT min(ts), max(ts), array_agg(DISTINCT host) FROM telemetry.gpu_telemetry"
        f" WHERE run_id = %s AND {RUN_SPAN} AND (%s::text IS NULL OR host = %s)",
        (run_id, run_id, run_id, host, host))
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
    [(lo, hi)] = _select(conn, sql.SQL(
        "SELECT min(bucket), max(bucket) FROM telemetry.gpu_telemetry_1m WHERE {}"
    ).format(rollup_where), params)
    if lo is None:
        return None
    params.update(lo=max(lo, start), hi=min(hi + timedelta(minutes=1), end))
    found = []
    for aggregate, bounds in (("min", "ts >= %(lo)s AND ts < %(end)s"),
                              ("max", "ts >= %(start)s AND ts < %(hi)s")):
        where = sql.SQL(" AND ").join([sql.SQL(bounds), *conditions])
        [(at,)] = _select(conn, sql.SQL("SELECT {}(ts) FROM telemetry.gpu_telemetry WHERE {}")
                          .format(sql.SQL(aggregate), where), params)
        found.append(at)
    first, last = found
    return None if first is None or last is None else (first, last)


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
    [(median,)] = _select(conn, sql.SQL(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY step) FROM ("
        " SELECT extract(epoch FROM ts - lag(ts) OVER (PARTITION BY host, gpu_uuid ORDER BY ts))"
        " AS step FROM (SELECT ts, host, gpu_uuid FROM telemetry.gpu_telemetry WHERE {}"
        " ORDER BY ts LIMIT 2000) AS first_rows) AS steps WHERE step > 0"
    ).format(where), params)
    return median
