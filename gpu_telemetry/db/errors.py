"""psycopg's errors, translated into the named database errors of gpu_telemetry.errors.

Every function of this package that talks to the server lets only those out, so the collector,
the flush and the commands decide what to do (spool, quarantine, which exit code, which hint)
without importing psycopg. The table is in docs/architecture.md (Errors).
"""

from __future__ import annotations

import getpass
import os
import re

import psycopg
from psycopg import errors as pg

from gpu_telemetry.errors import (
    DatabaseError,
    DatabaseUnreachable,
    LoginRefused,
    PermissionDenied,
    RejectedValue,
    SchemaMissing,
)

# Failures at connect time carry no SQLSTATE in psycopg 3 (libpq reports them as text), so
# they are told apart by the server's or libpq's words (PostgreSQL 12-17, lc_messages C).
_LOGIN_REFUSED = re.compile(
    r"password authentication failed|authentication failed for user|no password supplied"
    r"|role \".*\" does not exist|database \".*\" does not exist|invalid integer value .* port"
    r"|invalid port number|no pg_hba.conf entry|is not permitted to log in"
    r"|certificate|SSL .*(required|not supported)|invalid \S+ value",
    re.IGNORECASE)
_PERMISSION_AT_CONNECT = re.compile(r"permission denied for database", re.IGNORECASE)


def first_line(exc: BaseException) -> str:
    """The one line a log or a terminal shows: psycopg's first line, without its prefixes."""
    text = str(exc).strip()
    line = " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
    return line.removeprefix("connection failed: ").removeprefix("connection is bad: ")


def _classify(exc: psycopg.Error) -> type[DatabaseError]:
    if isinstance(exc, pg.InsufficientPrivilege | pg.ReadOnlySqlTransaction):
        return PermissionDenied
    if isinstance(exc, pg.UndefinedTable | pg.UndefinedColumn | pg.UndefinedFunction
                  | pg.InvalidSchemaName | pg.UndefinedObject | pg.DatatypeMismatch
                  | pg.WrongObjectType):
        return SchemaMissing
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return RejectedValue
    if isinstance(exc, pg.InvalidPassword | pg.InvalidAuthorizationSpecification
                  | pg.InvalidCatalogName):
        return LoginRefused
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        text = str(exc)
        if _PERMISSION_AT_CONNECT.search(text):
            return PermissionDenied
        if _LOGIN_REFUSED.search(text):
            return LoginRefused
    return DatabaseUnreachable


def _login_role() -> str:
    """The role libpq logs in as: PGUSER, else the operating-system user."""
    try:
        return os.environ.get("PGUSER") or getpass.getuser()
    except (KeyError, OSError):
        return "?"


def _fix(kind: type[DatabaseError], exc: psycopg.Error, role: str | None) -> str:
    if kind is PermissionDenied:
        if _PERMISSION_AT_CONNECT.search(str(exc)):
            return (f'role "{role}" (PGUSER) may not connect to this database: use the writer '
                    "or reader role of bin/init_db.sh, or GRANT CONNECT to it")
        # A read-only transaction is the reader role of bin/init_db.sh --reader-role (it sets
        # default_transaction_read_only) or a standby server.
        where = " (a read-only role, or a standby server)" if isinstance(
            exc, pg.ReadOnlySqlTransaction) else ""
        return f'role "{role}" (PGUSER) may not write telemetry{where}: {kind.fix}'
    return kind.fix


def translate(exc: psycopg.Error, doing: str = "", role: str | None = None) -> DatabaseError:
    """The named error for `exc`, with one line saying what failed and, where it helps, the
    fix; raise it `from exc` so --debug still shows psycopg's traceback.

    `role` is the connection's user (conn.info.user), named by a permission error; without it,
    the role libpq logs in as (PGUSER, else the operating-system user).
    """
    kind = _classify(exc)
    said = first_line(exc)
    if kind is DatabaseUnreachable and not isinstance(
            exc, psycopg.OperationalError | psycopg.InterfaceError):
        prefix = "database error"  # not an outage, but nothing says it is the data's fault
    else:
        prefix = {DatabaseUnreachable: "database unreachable",
                  SchemaMissing: "database schema missing or out of date",
                  LoginRefused: "database login refused",
                  PermissionDenied: "database permission denied",
                  RejectedValue: "database rejected a value"}[kind]
    message = f"{prefix}: {said}" if not doing else f"{prefix} ({doing}): {said}"
    fix = _fix(kind, exc, role or _login_role())
    if fix:
        message += f"; {fix}"
    return kind(message)
