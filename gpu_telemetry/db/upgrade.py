"""The original scripts' table, as bin/init_db.sh --upgrade finds, keeps and reads it.

The original deployment has one table, telemetry.gpu_telemetry (ts, host, gpu_uuid,
pci_bus_id, gpu_name, temp_c, status_tag, status_memo, raw_json; key (ts, host, gpu_uuid)),
whose raw_json is {"nvidia_smi_q_x": "<the host's whole nvidia-smi -q -x document>"}. The
upgrade renames it telemetry.gpu_telemetry_original (its indexes with it) and never changes
it again; ops/upgrade.py converts its rows in key order, and telemetry.upgrade_progress holds
where it stands (the last key converted, the counts), so an interrupted upgrade goes on from
there and a finished one is not done twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from gpu_telemetry.db.migrate import failure

ORIGINAL = "telemetry.gpu_telemetry_original"

_IS_ORIGINAL = """
SELECT c.oid IS NOT NULL
   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'raw_json'
               AND NOT a.attisdropped)
   AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                   AND a.attname = 'run_id' AND NOT a.attisdropped)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'telemetry' AND c.relname = 'gpu_telemetry' AND c.relkind = 'r'
"""

_PROGRESS = """
CREATE TABLE IF NOT EXISTS telemetry.upgrade_progress (
    one          boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_ts      timestamptz,
    last_host    text,
    last_uuid    text,
    rows_done    bigint NOT NULL DEFAULT 0,
    unparsable   bigint NOT NULL DEFAULT 0,
    finished_at  timestamptz
);
COMMENT ON TABLE telemetry.upgrade_progress IS
    'where bin/init_db.sh --upgrade stands in converting telemetry.gpu_telemetry_original';
COMMENT ON COLUMN telemetry.upgrade_progress.one IS 'the table has one row';
COMMENT ON COLUMN telemetry.upgrade_progress.last_ts IS 'key of the last row converted: ts';
COMMENT ON COLUMN telemetry.upgrade_progress.last_host IS 'key of the last row converted: host';
COMMENT ON COLUMN telemetry.upgrade_progress.last_uuid IS
    'key of the last row converted: gpu_uuid';
COMMENT ON COLUMN telemetry.upgrade_progress.rows_done IS 'original rows converted';
COMMENT ON COLUMN telemetry.upgrade_progress.unparsable IS
    'original rows whose stored XML could not be parsed (kept with what the original typed)';
COMMENT ON COLUMN telemetry.upgrade_progress.finished_at IS 'when the last row was converted';
INSERT INTO telemetry.upgrade_progress DEFAULT VALUES ON CONFLICT DO NOTHING;
"""


@dataclass(frozen=True)
class Found:
    """What a table of the original holds."""

    rows: int
    first: datetime | None
    last: datetime | None

    def describe(self) -> str:
        span = (f", {self.first:%Y-%m-%d %H:%M} to {self.last:%Y-%m-%d %H:%M} UTC"
                if self.first is not None else "")
        return f"{self.rows:,} rows{span}"


@dataclass
class Standing:
    """telemetry.upgrade_progress: the last key converted and the counts."""

    after: tuple
    rows_done: int
    unparsable: int
    finished: bool


@dataclass(frozen=True)
class OriginalRow:
    ts: datetime
    host: str
    gpu_uuid: str
    pci_bus_id: str | None
    gpu_name: str | None
    temp_c: int | None
    status_tag: str | None
    status_memo: str | None
    xml: str | None


def _count(conn: psycopg.Connection, table: str) -> Found:
    rows, first, last = conn.execute(
        f"SELECT count(*), min(ts), max(ts) FROM {table}").fetchone()
    return Found(int(rows), first, last)


def find_original(conn: psycopg.Connection) -> Found | None:
    """The original's table under its own name (telemetry.gpu_telemetry, a table with raw_json
    and without run_id), or None."""
    try:
        row = conn.execute(_IS_ORIGINAL).fetchone()
        return _count(conn, "telemetry.gpu_telemetry") if row and row[0] else None
    except psycopg.Error as exc:
        raise failure(exc, "cannot look for the original scripts' table") from exc


def find_kept(conn: psycopg.Connection) -> Found | None:
    """The original's table as the upgrade keeps it, or None."""
    try:
        if conn.execute("SELECT to_regclass(%s)", (ORIGINAL,)).fetchone()[0] is None:
            return None
        return _count(conn, ORIGINAL)
    except psycopg.Error as exc:
        raise failure(exc, f"cannot read {ORIGINAL}") from exc


def keep_original(conn: psycopg.Connection) -> None:
    """Rename the original's table and its indexes (their names would meet the new schema's),
    and start the progress record: one transaction."""
    try:
        with conn.transaction():
            indexes = conn.execute(
                "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
                " WHERE x.indrelid = 'telemetry.gpu_telemetry'::regclass ORDER BY 1"
            ).fetchall()
            conn.execute("ALTER TABLE telemetry.gpu_telemetry RENAME TO gpu_telemetry_original")
            for number, (name,) in enumerate(indexes, 1):
                conn.execute(sql.SQL("ALTER INDEX telemetry.{} RENAME TO {}").format(
                    sql.Identifier(name),
                    sql.Identifier(f"gpu_telemetry_original_{number}")))
            conn.execute(_PROGRESS)
    except psycopg.Error as exc:
        raise failure(exc, "cannot keep the original table as " + ORIGINAL) from exc


def standing(conn: psycopg.Connection) -> Standing:
    try:
        conn.execute(_PROGRESS)
        last_ts, host, uuid, done, unparsable, finished = conn.execute(
            "SELECT last_ts, last_host, last_uuid, rows_done, unparsable, finished_at"
            " FROM telemetry.upgrade_progress").fetchone()
    except psycopg.Error as exc:
        raise failure(exc, "cannot read telemetry.upgrade_progress") from exc
    after = (last_ts, host, uuid) if last_ts is not None else ("-infinity", "", "")
    return Standing(after, int(done), int(unparsable), finished is not None)


def save_standing(conn: psycopg.Connection, standing: Standing) -> None:
    try:
        conn.execute(
            "UPDATE telemetry.upgrade_progress SET last_ts = %s, last_host = %s,"
            " last_uuid = %s, rows_done = %s, unparsable = %s,"
            " finished_at = CASE WHEN %s THEN now() END",
            (*standing.after, standing.rows_done, standing.unparsable, standing.finished))
    except psycopg.Error as exc:
        raise failure(exc, "cannot write telemetry.upgrade_progress") from exc


def original_rows(conn: psycopg.Connection, after: tuple, limit: int) -> list[OriginalRow]:
    """The next rows of the kept original table in key order, after the key `after`."""
    try:
        rows = conn.execute(
            "SELECT ts, host, gpu_uuid, pci_bus_id, gpu_name, temp_c, status_tag, status_memo,"
            f" raw_json ->> 'nvidia_smi_q_x' FROM {ORIGINAL}"
            " WHERE (ts, host, gpu_uuid) > (%s, %s, %s) ORDER BY ts, host, gpu_uuid LIMIT %s",
            (*after, limit)).fetchall()
    except psycopg.Error as exc:
        raise failure(exc, f"cannot read {ORIGINAL}") from exc
    return [OriginalRow(*row) for row in rows]
