"""The queries of the health check (gpu_telemetry/ops/health.py); failures leave as the named
errors of gpu_telemetry.errors, psycopg's error as their __cause__."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from gpu_telemetry.db.errors import translate
from gpu_telemetry.errors import PermissionDenied


def _rows(conn: psycopg.Connection, query: str, params: tuple, doing: str) -> list[dict]:
    try:
        with conn.cursor(row_factory=dict_row) as cursor:
            return cursor.execute(query, params).fetchall()
    except psycopg.Error as exc:
        raise translate(exc, doing) from exc


def last_sample_age_sec(conn: psycopg.Connection, host: str) -> float | None:
    """Seconds since the host's last stored row; None when it has none."""
    # A function of the schema's owner, which the insert-only writer role may call too.
    (row,) = _rows(conn, "SELECT extract(epoch FROM now() - telemetry.last_sample_time(%s))"
                         "::float8 AS age", (host,), "last sample")
    return row["age"]


def latest_thermal_rows(conn: psycopg.Connection, host: str, within_sec: float) -> list[dict]:
    """Each GPU's latest row of the last `within_sec` seconds: temperature, its slowdown
    threshold and the thermal throttle reasons (PermissionDenied for the writer role)."""
    return _rows(conn,
                 "SELECT DISTINCT ON (gpu_uuid) gpu_index, gpu_name, temp_c, temp_slowdown_c,"
                 " throttle_hw_thermal, throttle_sw_thermal FROM telemetry.gpu_telemetry"
                 " WHERE host = %s AND ts >= now() - make_interval(secs => %s)"
                 " ORDER BY gpu_uuid, ts DESC", (host, within_sec), "thermal state")


def last_events(conn: psycopg.Connection, host: str, limit: int) -> list[dict]:
    """The host's latest collector events, newest first: ts, kind, detail (for the writer
    role, which may read the key columns only, the GPU's uuid in place of the detail)."""
    try:
        return _rows(conn, "SELECT ts, kind, detail FROM telemetry.collector_events"
                           " WHERE host = %s ORDER BY ts DESC LIMIT %s", (host, limit),
                     "collector events")
    except PermissionDenied:
        return _rows(conn, "SELECT ts, kind, gpu_uuid AS detail FROM telemetry.collector_events"
                           " WHERE host = %s ORDER BY ts DESC LIMIT %s", (host, limit),
                     "collector events")


def last_xids(conn: psycopg.Connection, host: str, limit: int) -> list[dict]:
    """The host's latest Xid rows, newest first: ts and detail (the summary line)."""
    query = ("SELECT ts, kind, {} AS detail FROM telemetry.collector_events"
             " WHERE host = %s AND kind = 'xid' ORDER BY ts DESC LIMIT %s")
    try:
        return _rows(conn, query.format("detail"), (host, limit), "Xid events")
    except PermissionDenied:  # the writer role: the GPU's uuid in place of the detail
        return _rows(conn, query.format("gpu_uuid"), (host, limit), "Xid events")
