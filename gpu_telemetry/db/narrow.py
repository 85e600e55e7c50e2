"""Moving the rows of the wide table (schema versions 1 to 5) into the narrow tables.

sql/006_narrow_storage.sql renames the table telemetry.gpu_telemetry to
telemetry.gpu_telemetry_wide and puts the view telemetry.gpu_telemetry in its place; right
after it, bin/init_db.sh calls move_wide_rows(). Each batch is one transaction that deletes its
rows from the wide table and inserts them into telemetry.gpu_samples and telemetry.gpu_raw
(identities and statuses added as met), so an interrupted move (Ctrl-C, kill -9, a server
restart) loses nothing and the next bin/init_db.sh goes on where it stopped. The one-minute
rollup already holds these rows and is left as it is. When the wide table is empty it is
dropped, and the roles that could insert into it (the collector's writer) get the writer's
rights on the new tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from gpu_telemetry import schema
from gpu_telemetry.db.migrate import failure
from gpu_telemetry.db.store import insert_sql

WIDE_TABLE = "telemetry.gpu_telemetry_wide"
DEFAULT_BATCH_ROWS = 20_000

# The batch's rows leave the wide table and enter the narrow ones in one statement (the
# store's own, db.store.insert_sql), in key order from just after the last batch's last key
# (so that no batch walks the index entries of the rows moved before it). The rollup trigger
# is told (telemetry.rollup = off) that the rollup has these rows already.
_MOVE_BATCH = insert_sql(
    f"DELETE FROM {WIDE_TABLE} WHERE (ts, host, gpu_uuid) IN ("
    f"SELECT ts, host, gpu_uuid FROM {WIDE_TABLE} WHERE (ts, host, gpu_uuid) > (%s, %s, %s)"
    f" ORDER BY ts, host, gpu_uuid LIMIT %s) RETURNING {', '.join(schema.ROW_COLUMNS)}",
    then="SELECT (SELECT count(*) FROM r), last.* FROM (SELECT ts, host, gpu_uuid FROM r"
         " ORDER BY ts DESC, host DESC, gpu_uuid DESC LIMIT 1) AS last")


@dataclass
class Progress:
    """Where a long conversion stands: rows done of the total, the rate of this run (rows done
    before it started, by an interrupted run, do not count in it) and the time left."""

    total: int
    moved: int = 0
    started: float = 0.0
    doing: str = "moving rows into the narrow tables"
    moved_before: int = 0

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = (self.moved - self.moved_before) / elapsed
        left = (self.total - self.moved) / rate if rate > 0 else 0.0
        return (f"{self.doing}: {self.moved:,}/{self.total:,} rows,"
                f" {rate:,.0f} rows/s, {left:,.0f} s left")


def wide_table_exists(conn: psycopg.Connection) -> bool:
    try:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                            (WIDE_TABLE,)).fetchone()[0]
    except psycopg.Error as exc:
        raise failure(exc, f"cannot look for {WIDE_TABLE}") from exc


def _writers_of_wide_table(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT DISTINCT grantee FROM information_schema.role_table_grants"
        " WHERE table_schema = 'telemetry' AND table_name = 'gpu_telemetry_wide'"
        " AND privilege_type = 'INSERT' AND grantee <> current_user"
        " AND grantee IN (SELECT rolname FROM pg_roles) ORDER BY 1").fetchall()
    return [grantee for (grantee,) in rows]


def move_wide_rows(conn: psycopg.Connection, batch_rows: int = DEFAULT_BATCH_ROWS,
                   report: Callable[[Progress], None] | None = None,
                   grant_writer: Callable[[psycopg.Connection, str], None] | None = None
                   ) -> Progress | None:
    """Move every row of the wide table, a batch per transaction; None when there is no wide
    table (a database created at version 6, or a move already finished). `report` is called
    after each batch; `grant_writer` gives each role that could insert into the wide table the
    writer's rights before the table is dropped."""
    if not wide_table_exists(conn):
        return None
    doing = f"cannot move the rows of {WIDE_TABLE}"
    try:
        total, first, last = conn.execute(
            f"SELECT count(*), min(ts), max(ts) FROM {WIDE_TABLE}").fetchone()
        progress = Progress(total=int(total), started=time.monotonic())
        if total:
            conn.execute("SELECT telemetry.ensure_partitions(%s, %s)", (first, last))
        after = ("-infinity", "", "")
        while True:
            with conn.transaction():
                conn.execute("SET LOCAL telemetry.rollup = 'off'")
                row = conn.execute(_MOVE_BATCH, (*after, batch_rows)).fetchone()
            if row is None:
                break
            moved, *after = row
            progress.moved += int(moved)
            if report is not None:
                report(progress)
        writers = _writers_of_wide_table(conn)
    except psycopg.Error as exc:
        raise failure(exc, doing) from exc
    for role in writers:
        if grant_writer is not None:
            grant_writer(conn, role)
    try:
        with conn.transaction():
            conn.execute(f"DROP TABLE {WIDE_TABLE}")
    except psycopg.Error as exc:
        raise failure(exc, f"cannot drop {WIDE_TABLE}") from exc
    return progress
