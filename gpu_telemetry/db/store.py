"""PostgreSQL: connect through libpq's own PG* variables, store samples and events.

Every write is idempotent (ON CONFLICT DO NOTHING on the primary key), so a replayed spool
never duplicates. Rows go in with one COPY into a temporary staging table and one
INSERT ... SELECT per batch: one round trip per batch instead of one per row.
"""

from __future__ import annotations

import bisect
import os
from collections import defaultdict
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from gpu_telemetry import schema
from gpu_telemetry.collector.sample import COLUMN_TYPES
from gpu_telemetry.db.errors import translate

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


def connect() -> psycopg.Connection:
    """A connection configured entirely by the PG* environment (and .pgpass / PGPASSFILE)."""
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


def last_raw_times(conn: psycopg.Connection, hosts: list[str], since: datetime
                   ) -> dict[tuple[str, str], list[datetime]]:
    """When each (host, GPU) last kept a raw snapshot, from `since` on (sorted)."""
    found: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    # A function of the schema's owner: the writer role may not read raw_json itself.
    rows = conn.execute("SELECT host, gpu_uuid, ts FROM telemetry.raw_snapshot_times(%s, %s)",
                        (hosts, since)).fetchall()
    for host, gpu_uuid, ts in rows:
        found[(host, gpu_uuid)].append(ts)
    return found


def thin_raw_snapshots(conn: psycopg.Connection, samples: list[dict],
                       raw_every_sec: float) -> None:
    """Drop raw_json from rows whose GPU already has a snapshot less than raw_every_sec older
    (in the database or earlier in this batch)."""
    if raw_every_sec <= 0:
        return
    with_raw = [s for s in samples if any(g.get("raw_json") is not None for g in s["gpus"])]
    if not with_raw:
        return
    window = timedelta(seconds=raw_every_sec)
    hosts = sorted({s["host"] for s in with_raw})
    kept = last_raw_times(conn, hosts, min(s["ts"] for s in with_raw) - window)
    for sample in sorted(with_raw, key=lambda s: s["ts"]):
        for gpu in sample["gpus"]:
            if gpu.get("raw_json") is None:
                continue
            times = kept[(sample["host"], gpu["gpu_uuid"])]
            position = bisect.bisect_right(times, sample["ts"])
            if position and sample["ts"] - times[position - 1] < window:
                gpu["raw_json"] = None
            else:
                times.insert(position, sample["ts"])


DIRECT_INSERT_MAX_ROWS = 16
_DIRECT_INSERT = (
    f"INSERT INTO telemetry.gpu_telemetry ({_COLUMN_LIST})"
    f" SELECT {_COLUMN_LIST} FROM jsonb_to_recordset(%s) AS r ("
    + ", ".join(f"{column} {_STAGE_TYPES[column]}" for column in ROW_COLUMNS) + ")"
    " ON CONFLICT DO NOTHING")


def _json_rows(samples: list[dict]):
    for sample in samples:
        head = {"ts": sample["ts"].isoformat(), "host": sample["host"],
                "status_tag": sample["status_tag"], "status_memo": sample["status_memo"],
                "run_id": sample["run_id"]}
        for gpu in sample["gpus"]:
            yield {**head, **gpu}


def _rows(samples: list[dict]):
    for sample in samples:
        head = (sample["ts"], sample["host"], sample["status_tag"], sample["status_memo"],
                sample["run_id"])
        for gpu in sample["gpus"]:
            raw = gpu.get("raw_json")
            yield (*head, *(gpu[column] for column in COLUMN_TYPES),
                   Jsonb(raw) if raw is not None else None)


def insert_samples(conn: psycopg.Connection, samples: list[dict],
                   raw_every_sec: float) -> tuple[int, int]:
    """Store validated samples (and their events) in one transaction.

    Returns (rows inserted, rows offered); the difference were already stored. COMMIT happens
    when this returns; an exception means nothing is known to be stored.
    """
    with conn.transaction():
        thin_raw_snapshots(conn, samples, raw_every_sec)
        offered = sum(len(sample["gpus"]) for sample in samples)
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
                cur.execute(f"INSERT INTO telemetry.gpu_telemetry ({_COLUMN_LIST})"
                            f" SELECT {_COLUMN_LIST} FROM {_STAGE} ON CONFLICT DO NOTHING")
                inserted = cur.rowcount
        events = [(e["ts"], s["host"], e["kind"], e["detail"], e["gpu_uuid"],
                   Jsonb(e["data"]) if e["data"] is not None else None)
                  for s in samples for e in s["events"]]
        if events:
            insert_events(conn, events)
    return inserted, offered


def insert_events(conn: psycopg.Connection, events: list[tuple]) -> None:
    """Rows of EVENT_COLUMNS; a replayed event is absorbed by the unique key."""
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO telemetry.collector_events ({', '.join(EVENT_COLUMNS)})"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            events,
        )
