"""The schema: sql/*.sql applied in lexical order, forward-only, each file once.

Every applied file is recorded in telemetry.schema_migrations; a file already recorded is
skipped, so running the migrations again changes nothing. Each file runs in a transaction of
its own together with its record: a file that fails leaves nothing of itself behind, and the
files before it stay applied. The files are plain SQL (no psql meta-commands), sent as one
simple query each. Failures leave as the named errors of gpu_telemetry.errors (see
docs/architecture.md, Errors), raised from psycopg's, which stays their __cause__.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg

from gpu_telemetry import REPO_ROOT
from gpu_telemetry.db.errors import first_line, translate
from gpu_telemetry.errors import DatabaseError, PermissionDenied

SQL_DIR = REPO_ROOT / "sql"
EXIT_SQL_ERROR = 1  # a statement of a migration failed on the server; it was rolled back
DEFAULT_CONNECT_TIMEOUT_SEC = 10

_BOOKKEEPING = """\
CREATE SCHEMA IF NOT EXISTS telemetry;
CREATE TABLE IF NOT EXISTS telemetry.schema_migrations (
    filename    text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
"""


class SqlFailed(DatabaseError):
    """The server refused a statement (a syntax error, a missing object, a constraint): the
    statement's own fault, not the connection's or the role's; its transaction is rolled
    back."""

    exit_code = EXIT_SQL_ERROR


def failure(exc: psycopg.Error, doing: str) -> DatabaseError:
    """The named error for a failure while running our own SQL: a lost connection or a
    missing right as translate() names them; any other error the server reports (it has an
    SQLSTATE) is the SQL's, SqlFailed."""
    error = translate(exc, doing)
    if exc.sqlstate is not None and not isinstance(error, PermissionDenied):
        return SqlFailed(f"{doing}: {first_line(exc)}")
    return error


def _print_warning(diagnostic: psycopg.errors.Diagnostic) -> None:
    # client_min_messages=warning keeps IF NOT EXISTS notices away; what is left matters.
    if diagnostic.severity_nonlocalized == "WARNING":
        print(f"warning: {diagnostic.message_primary}", file=sys.stderr)


def connect(application_name: str = "gpu-telemetry-init-db") -> psycopg.Connection:
    """A connection configured by libpq's PG* variables alone (and ~/.pgpass), autocommit:
    each `conn.transaction()` is then a real BEGIN ... COMMIT."""
    # libpq would let this parameter replace PGOPTIONS; it is added to it instead.
    options = f"{os.environ.get('PGOPTIONS', '')} -c client_min_messages=warning".strip()
    kwargs: dict = {"application_name": application_name, "autocommit": True,
                    "options": options}
    if not os.environ.get("PGCONNECT_TIMEOUT"):
        # An unroutable host would otherwise hang for minutes.
        kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_SEC
    try:
        conn = psycopg.connect("", **kwargs)
    except psycopg.Error as exc:
        raise translate(exc, "connect") from exc
    conn.add_notice_handler(_print_warning)
    return conn


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """sql/*.sql in the order they apply (lexical: 001_..., 002_...)."""
    return sorted(path for path in sql_dir.glob("*.sql") if path.is_file())


def ensure_bookkeeping(conn: psycopg.Connection) -> None:
    """The schema telemetry and its table of applied files."""
    try:
        with conn.transaction():
            conn.execute(_BOOKKEEPING)
    except psycopg.Error as exc:
        raise failure(exc, "cannot create the schema telemetry") from exc


def applied_migrations(conn: psycopg.Connection) -> set[str]:
    try:
        rows = conn.execute("SELECT filename FROM telemetry.schema_migrations").fetchall()
    except psycopg.Error as exc:
        raise failure(exc, "cannot read telemetry.schema_migrations") from exc
    return {filename for (filename,) in rows}


def apply_migration(conn: psycopg.Connection, path: Path) -> None:
    """Run one file and record it, in one transaction."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SqlFailed(f"cannot read {path}: {exc}") from exc
    doing = f"{path.name} failed; nothing of it was applied"
    try:
        with conn.transaction():
            # No parameters: psycopg sends the file as one simple query, several statements
            # and dollar-quoted bodies included.
            conn.execute(text)
            conn.execute("INSERT INTO telemetry.schema_migrations (filename) VALUES (%s)",
                         (path.name,))
    except psycopg.Error as exc:
        raise failure(exc, doing) from exc


def row_counts(conn: psycopg.Connection, tables: tuple[str, ...]) -> dict[str, int]:
    """count(*) of each table, in order."""
    try:
        return {table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in tables}
    except psycopg.Error as exc:
        raise failure(exc, "cannot count the rows to empty") from exc


def empty_tables(conn: psycopg.Connection, tables: tuple[str, ...]) -> None:
    """TRUNCATE the tables in one statement (bin/init_db.sh --reset)."""
    try:
        with conn.transaction():
            conn.execute(f"TRUNCATE {', '.join(tables)}")
    except psycopg.Error as exc:
        raise failure(exc, "cannot empty the telemetry tables") from exc
