"""Reading telemetry back (reports, plots): a connection and SELECTs whose rows are dicts or
tuples, with psycopg's errors turned into the named errors of gpu_telemetry.errors.

A role that may not read gets the reader role's hint, not the writer's: reading is what the
reader role of bin/init_db.sh --reader-role is for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg.abc import Params, Query
from psycopg.rows import dict_row

from gpu_telemetry.db.errors import first_line, translate
from gpu_telemetry.db.store import connect
from gpu_telemetry.errors import DatabaseError, PermissionDenied

READER_HINT = ("plots and reports read telemetry: connect as a role that may, e.g. the reader "
               "role of bin/init_db.sh --reader-role")


def _reading_error(exc: psycopg.Error) -> DatabaseError:
    error = translate(exc, "reading telemetry")
    if isinstance(error, PermissionDenied):
        return PermissionDenied(f"the database role may not do this: {first_line(exc)} "
                                f"({READER_HINT})")
    return error


@contextmanager
def reading() -> Iterator[psycopg.Connection]:
    """A connection for SELECTs, closed on the way out."""
    conn = connect()
    try:
        yield conn
    finally:
        conn.close()


def select_dicts(conn: psycopg.Connection, sql: str, params: Sequence = ()) -> list[dict]:
    """Every row of one SELECT, each a dict keyed by column name."""
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(sql, params).fetchall()
    except psycopg.Error as exc:
        raise _reading_error(exc) from exc


def select_rows(conn: psycopg.Connection, query: Query, params: Params = ()) -> list[tuple]:
    """Every row of one SELECT (a string or a composed psycopg.sql query), each a tuple in
    the order of its select list."""
    try:
        return conn.execute(query, params).fetchall()
    except psycopg.Error as exc:
        raise _reading_error(exc) from exc
