"""PostgreSQL: connect through libpq's own PG* variables, store samples and events.

Every write is idempotent (ON CONFLICT DO NOTHING on the primary key), so a replayed spool
never duplicates. Rows go in with one COPY into a temporary staging table and one statement
per batch that stores them in the narrow tables under the view telemetry.gpu_telemetry (one
round trip per batch instead of one per row); a loop sample is one prepared statement.
"""

from __future__ import annotations

import bisect
import functools
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import ParamSpec, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from gpu_telemetry import schema
from gpu_telemetry.db.errors import translate
from gpu_telemetry.records import Event, Sample

ROW_COLUMNS = schema.ROW_COLUMNS
EVENT_COLUMNS = ("ts", "host", "kind", "detail", "gpu_uuid", "data")
DEFAULT_CONNECT_TIMEOUT_SEC = 5

_COLUMN_LIST = ", ".join(ROW_COLUMNS)
_STAGE = "gpu_telemetry_stage"
_STAGE_TYPES = schema.column_types(schema.ROW)
# Spelled out rather than LIKE telemetry.gpu_telemetry: LIKE needs SELECT on the whole table,
# which the insert-only writer role does not have.
_CREATE_STAGE = (f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ("
                 + ", ".join(f"{column} {_STAGE_TYPES[column]}" for column in ROW_COLUMNS)
                 + ") ON COMMIT DELETE ROWS")


#: What the collector and the flush hold between calls; they never import psycopg themselves.
Connection = psycopg.Connection

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _role_of(conn: object) -> str | None:
    try:
        return conn.info.user if isinstance(conn, psycopg.Connection) else None
    except psycopg.Error:
        return None


def _named_errors(doing: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Let only the named errors of gpu_telemetry.errors out of a function that talks to the
    server (its first argument is the connection, whose role a permission error names)."""

    def decorate(function: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(function)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return function(*args, **kwargs)
            except psycopg.Error as exc:
                raise translate(exc, doing, role=_role_of(args[0] if args else None)) from exc

        return wrapper

    return decorate


def connect() -> psycopg.Connection:
    """A connection configured entirely by the PG* environment (and .pgpass / PGPASSFILE).
    Raises a DatabaseError subclass: unreachable, login refused, permission denied."""
    # Autocommit, so that each `conn.transaction()` block is a real BEGIN ... COMMIT and never
    # a savepoint inside an implicit transaction left open by an earlier query.
    kwargs: dict = {"application_name": "gpu-telemetry", "autocommit": True,
                    # A connection whose peer vanished (network cut, host down) is noticed in
                    # seconds rather than after TCP's minutes of retransmission.
                    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                    "keepalives_count": 3, "tcp_user_timeout": 15000}
    if not os.environ.get("PGCONNECT_TIMEOUT"):
        kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_SEC
    try:
        return psycopg.connect("", **kwargs)
    except psycopg.Error as exc:
        raise translate(exc) from exc


@_named_errors("reading raw snapshot times")
def last_raw_times(conn: psycopg.Connection, hosts: list[str], since: datetime
                   ) -> dict[tuple[str, str], list[datetime]]:
    """When each (host, GPU) last kept a raw snapshot, from `since` on (sorted)."""
    return _last_raw_times(conn, hosts, since)


def _last_raw_times(conn: psycopg.Connection, hosts: list[str], since: datetime
                    ) -> dict[tuple[str, str], list[datetime]]:
    found: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    # A function of the schema's owner: the writer role may not read raw_json itself.
    rows = conn.execute("SELECT host, gpu_uuid, ts FROM telemetry.raw_snapshot_times(%s, %s)",
                        (hosts, since)).fetchall()
    for host, gpu_uuid, ts in rows:
        found[(host, gpu_uuid)].append(ts)
    return found


@_named_errors("reading raw snapshot times")
def thin_raw_snapshots(conn: psycopg.Connection, samples: list[Sample],
                       raw_every_sec: float) -> None:
    """Drop raw_json from rows whose GPU already has a snapshot less than raw_every_sec older
    (in the database or earlier in this batch)."""
    _thin_raw_snapshots(conn, samples, raw_every_sec)


def _thin_raw_snapshots(conn: psycopg.Connection, samples: list[Sample],
                        raw_every_sec: float) -> None:
    if raw_every_sec <= 0:
        return
    with_raw = [s for s in samples if any(g.raw_json is not None for g in s.gpus)]
    if not with_raw:
        return
    window = timedelta(seconds=raw_every_sec)
    hosts = sorted({s.host for s in with_raw})
    kept = _last_raw_times(conn, hosts, min(s.ts for s in with_raw) - window)
    for sample in sorted(with_raw, key=lambda s: s.ts):
        for gpu in sample.gpus:
            if gpu.raw_json is None:
                continue
            times = kept[(sample.host, gpu.gpu_uuid)]
            position = bisect.bisect_right(times, sample.ts)
            if position and sample.ts - times[position - 1] < window:
                gpu.raw_json = None
            else:
                times.insert(position, sample.ts)


DIRECT_INSERT_MAX_ROWS = 16

# Where each column of a row is stored (sql/006_narrow_storage.sql): the GPU's identity and the
# status once, in telemetry.gpus and telemetry.statuses, by id; raw_json in telemetry.gpu_raw;
# the rest in telemetry.gpu_samples.
_IDENTITY = schema.STORED_IN_GPUS
_STATUS = schema.STORED_IN_STATUSES
_SAMPLE = schema.STORED_IN_SAMPLES


def _same(columns: tuple[str, ...], left: str, right: str) -> str:
    return " AND ".join(f"{left}.{c} IS NOT DISTINCT FROM {right}.{c}" for c in columns)


def insert_sql(rows: str, then: str = "") -> str:
    """One statement that stores the rows `rows` yields (a SELECT, or a DELETE ... RETURNING,
    of every column of ROW_COLUMNS): the ids of their identities and statuses (added when
    new), the raw snapshots, the readings, ON CONFLICT DO NOTHING. Without `then` its row
    count is the samples really inserted; with it, the readings' INSERT is the CTE `stored`
    (RETURNING 1) and `then` the statement's final SELECT, which may read `r` and `stored`."""
    listed = ", ".join
    samples = (f"INSERT INTO telemetry.gpu_samples (gpu_id, status_id, {listed(_SAMPLE)})"
               f" SELECT gpu_id, status_id, {listed(_SAMPLE)} FROM joined"
               " ON CONFLICT DO NOTHING")
    return (
        f"WITH r AS ({rows}),"
        f" gpu AS (SELECT d.*, telemetry.gpu_id({listed('d.' + c for c in _IDENTITY)}) AS gpu_id"
        f" FROM (SELECT DISTINCT {listed(_IDENTITY)} FROM r) AS d),"
        f" status AS (SELECT d.*, telemetry.status_id({listed('d.' + c for c in _STATUS)})"
        f" AS status_id FROM (SELECT DISTINCT {listed(_STATUS)} FROM r) AS d),"
        f" joined AS (SELECT r.*, gpu.gpu_id, status.status_id FROM r"
        f" JOIN gpu ON {_same(_IDENTITY, 'gpu', 'r')}"
        f" JOIN status ON {_same(_STATUS, 'status', 'r')}"
        # One row per (ts, host, gpu_uuid), as the view's key promises, even where the same
        # GPU came back under another identity (bus id, driver) at the same time.
        " WHERE NOT EXISTS (SELECT 1 FROM telemetry.gpu_samples AS s WHERE s.ts = r.ts"
        " AND s.gpu_id <> gpu.gpu_id AND s.gpu_id IN (SELECT g.gpu_id FROM telemetry.gpus AS g"
        " WHERE g.host = r.host AND g.gpu_uuid = r.gpu_uuid))),"
        " raw AS (INSERT INTO telemetry.gpu_raw (ts, gpu_id, raw_json)"
        " SELECT ts, gpu_id, raw_json FROM joined WHERE raw_json IS NOT NULL"
        " ON CONFLICT DO NOTHING)"
        + (f", stored AS ({samples} RETURNING 1) {then}" if then else f" {samples}"))


_DIRECT_INSERT = insert_sql(
    f"SELECT {_COLUMN_LIST} FROM jsonb_to_recordset(%s) AS j ("
    + ", ".join(f"{column} {_STAGE_TYPES[column]}" for column in ROW_COLUMNS) + ")")
_STAGED_INSERT = insert_sql(f"SELECT {_COLUMN_LIST} FROM {_STAGE}")


def _json_rows(samples: list[Sample]):
    for sample in samples:
        head = {"ts": sample.ts.isoformat(), "host": sample.host,
                "status_tag": sample.status.tag, "status_memo": sample.status.memo,
                "run_id": sample.status.run_id}
        for gpu in sample.gpus:
            yield {**head, **gpu.as_dict()}


def _rows(samples: list[Sample]):
    for sample in samples:
        head = (sample.ts, sample.host, sample.status.tag, sample.status.memo,
                sample.status.run_id)
        for gpu in sample.gpus:
            raw = gpu.raw_json
            yield (*head, *(getattr(gpu, column) for column in schema.GPU_COLUMNS),
                   Jsonb(raw) if raw is not None else None)


@_named_errors("storing samples")
def insert_samples(conn: psycopg.Connection, samples: list[Sample], raw_every_sec: float,
                   events: Sequence[Event] = ()) -> tuple[int, int]:
    """Store samples and events (each with its time and host) in one transaction.

    Returns (rows inserted, rows offered); the difference were already stored. COMMIT happens
    when this returns; an exception (a DatabaseError subclass) means nothing is known to be
    stored. A sample whose month has no partition yet (an old spool file after retention, a
    flush timer that did not run) gets it, and the transaction is tried once more.
    """
    try:
        return _insert_samples(conn, samples, raw_every_sec, events)
    except psycopg.errors.CheckViolation as exc:
        if not str(exc).startswith("no partition of relation"):
            raise
    times = [sample.ts for sample in samples]
    _ensure_partitions(conn, min(times), max(times))
    return _insert_samples(conn, samples, raw_every_sec, events)


def _insert_samples(conn: psycopg.Connection, samples: list[Sample], raw_every_sec: float,
                    events: Sequence[Event]) -> tuple[int, int]:
    with conn.transaction():
        _thin_raw_snapshots(conn, samples, raw_every_sec)
        offered = sum(len(sample.gpus) for sample in samples)
        inserted = 0
        if 0 < offered <= DIRECT_INSERT_MAX_ROWS:
            # One sample of the loop: its rows as one JSON parameter of one prepared statement
            # cost less than staging them (and than ~80 parameters a row, which psycopg would
            # re-parse the query for on every call).
            with conn.cursor() as cur:
                cur.execute(_DIRECT_INSERT, (Jsonb(list(_json_rows(samples))),), prepare=True)
                inserted = cur.rowcount
        elif offered:
            conn.execute(_CREATE_STAGE)
            with conn.cursor() as cur:
                with cur.copy(f"COPY {_STAGE} ({_COLUMN_LIST}) FROM STDIN") as copy:
                    for row in _rows(samples):
                        copy.write_row(row)
                cur.execute(_STAGED_INSERT)
                inserted = cur.rowcount
        if events:
            _insert_events(conn, events)
    return inserted, offered


# How far ahead the flush and bin/init_db.sh create partitions: the coming month's exist
# before its first sample does.
PARTITIONS_AHEAD = timedelta(days=32)


@_named_errors("creating partitions")
def ensure_partitions(conn: psycopg.Connection, first: datetime, last: datetime) -> int:
    """The month partitions of the samples and raw snapshots from `first` to `last`, created
    where missing (by a function of the schema's owner); how many were created."""
    return _ensure_partitions(conn, first, last)


def _ensure_partitions(conn: psycopg.Connection, first: datetime, last: datetime) -> int:
    return int(conn.execute("SELECT telemetry.ensure_partitions(%s, %s)",
                            (first, last)).fetchone()[0])


@_named_errors("storing events")
def insert_events(conn: psycopg.Connection, events: Sequence[Event]) -> None:
    """Store events, each with its time and host; a replayed event is absorbed by the unique
    key."""
    _insert_events(conn, events)


def _insert_events(conn: psycopg.Connection, events: Sequence[Event]) -> None:
    if any(event.ts is None or event.host is None for event in events):
        raise ValueError("an event reached the store without its time or host")
    rows = [(e.ts, e.host, e.kind, e.detail, e.gpu_uuid,
             Jsonb(e.data) if e.data is not None else None) for e in events]
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO telemetry.collector_events ({', '.join(EVENT_COLUMNS)})"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            rows,
        )


@_named_errors("applying RETENTION_DAYS")
def prune(conn: psycopg.Connection, retention_days: float) -> tuple[int, int]:
    """Delete rows and events older than `retention_days`: (rows, events) deleted."""
    rows, events = conn.execute("SELECT * FROM telemetry.prune(%s)",
                                (retention_days,)).fetchone()
    return int(rows), int(events)
