"""bin/init_db.sh: apply the schema (sql/*.sql) and optionally create the writer and reader
roles; its --help is the script's header comment.

A failure is one line: what failed, the server's (or libpq's) reason, and a hint at the fix,
with the exit status of that kind of failure: 1 an SQL error (a failed migration is rolled
back), 2 usage, 75 no server answers, 77 a right is missing (to connect, to change the schema,
to create roles), 78 the login is refused (a wrong or missing password, no such role or
database, pg_hba.conf, no LOGIN: gpu_telemetry.errors.LoginRefused, as for the collector) or
configuration (TLS, the env file); 70 internal error (--debug shows the traceback), 130
interrupted.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from gpu_telemetry import REPO_ROOT
from gpu_telemetry.cli.common import OneLineParser, add_common_options, run
from gpu_telemetry.db import narrow
from gpu_telemetry.db.migrate import EXIT_SQL_ERROR
from gpu_telemetry.errors import (
    EXIT_CONFIG,
    EXIT_NO_PERMISSION,
    EXIT_SPOOLED,
    EXIT_USAGE,
    DatabaseError,
    LoginRefused,
    PermissionDenied,
    TelemetryError,
)
from gpu_telemetry.ops import upgrade as conversion

PROGRAM = "init_db.sh"
ROLE_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")

# libpq's words when no server answers (PostgreSQL 12-17, lc_messages C), and the server's
# while it starts, stops or is full: waiting or starting it helps, not the configuration.
_UNREACHABLE = re.compile(
    r"connection refused|timeout expired|could not translate host name|network is unreachable"
    r"|no route to host|socket.*no such file or directory|server closed the connection"
    r"|terminating connection|connection to server was lost|could not receive data"
    r"|could not send data|ssl syscall error|the database system is|too many clients"
    r"|too many connections|remaining connection slots", re.IGNORECASE)


class InitFailed(TelemetryError):
    """One step failed: the line to print and the script's status for that kind of failure."""

    def __init__(self, message: str, exit_code: int):
        self.exit_code = exit_code
        super().__init__(message)


@dataclass(frozen=True)
class Context:
    """What the hints name: who we are, where we connect, where the settings live."""

    login: str
    role: str
    database: str
    target: str
    config_place: str

    @classmethod
    def from_environment(cls, env_file: str | None) -> Context:
        try:
            login = getpass.getuser()
        except (OSError, KeyError):
            login = os.environ.get("USER", "")
        role = os.environ.get("PGUSER") or login
        host, port = os.environ.get("PGHOST", ""), os.environ.get("PGPORT") or "5432"
        if not host:
            target = f"the local socket (PGHOST unset), port {port}"
        elif host.startswith("/"):
            target = f"the socket in {host}, port {port}"
        else:
            target = f"host {host}, port {port}"
        return cls(login=login, role=role, database=os.environ.get("PGDATABASE") or role,
                   target=target, config_place=env_file or str(REPO_ROOT / ".env"))


def create_command(role: str, database: str) -> str:
    """The command of README.md's "Setting up" that makes a database and the role owning it."""
    return (f"sudo -u postgres createuser --createrole {shlex.quote(role)} && "
            f"sudo -u postgres createdb --owner {shlex.quote(role)} {shlex.quote(database)}")


def diagnose(step: str, error: DatabaseError, reason: str, ctx: Context) -> tuple[int, str]:
    """The exit status and the hint for `error` at STEP (connect, schema, migration, roles or
    grants); `reason` is the server's or libpq's line. The named error decides where it can
    (a missing right); libpq reports connection failures as text only, so their words decide
    between an absent server, a refused login and a wrong setting. A refused login has
    LoginRefused's status, the one the collector and the flush exit with for it."""
    text = reason.lower()
    place, login, role = ctx.config_place, ctx.login, ctx.role
    setup = create_command(login, os.environ.get("PGDATABASE") or "gpu_telemetry")
    if _UNREACHABLE.search(text):
        return EXIT_SPOOLED, (
            f"no server answers at {ctx.target}: is PostgreSQL running there (systemctl status "
            "postgresql)? Without PGHOST libpq uses the local socket; set PGHOST and PGPORT in "
            f"{place} for another server")
    if step == "connect":
        if isinstance(error, PermissionDenied) or "connect privilege" in text:
            return EXIT_NO_PERMISSION, (
                f"role {role} may not connect to database {ctx.database}: its owner can GRANT "
                f"CONNECT ON DATABASE to it, or set PGUSER in {place} to the owner")
        if "peer authentication failed" in text or "ident authentication failed" in text:
            return LoginRefused.exit_code, (
                "over the local socket the server admits only the role named after your login "
                f"({login}): leave PGUSER unset (README.md, Setting up, creates that role: "
                f"{setup}), or for role {role} set PGHOST=localhost and its PGPASSWORD in "
                f"{place}")
        if re.search(r"authentication failed|no password supplied|password is required", text):
            return LoginRefused.exit_code, (
                f"role {role} needs its password: set PGUSER and PGPASSWORD in {place} (mode "
                "600) or use ~/.pgpass; for a server on this host, leave PGHOST, PGUSER and "
                "PGPASSWORD unset to log in without one as the role README.md (Setting up) "
                f"creates: {setup}")
        if "no pg_hba.conf entry" in text:
            return LoginRefused.exit_code, (
                f"the server's pg_hba.conf admits no connection from here as role {role} to "
                f"database {ctx.database}: add a line for it there and reload the server "
                "(docs/operations.md, 1.3)")
        if "not permitted to log in" in text:
            return LoginRefused.exit_code, (
                f"role {role} exists but may not log in: give it LOGIN (ALTER ROLE ... LOGIN, "
                f"as a superuser), or set PGUSER in {place} to the database's owner")
        if re.search(r'role ".*" does not exist', text):
            return LoginRefused.exit_code, (
                "create it and its database (README.md, Setting up): "
                f"{create_command(role, ctx.database)}; or set PGUSER in {place} to a role "
                "that exists")
        if re.search(r'database ".*" does not exist', text):
            return LoginRefused.exit_code, (
                f"create it, owned by role {role} (README.md, Setting up): sudo -u postgres "
                f"createdb --owner {shlex.quote(role)} {shlex.quote(ctx.database)}; or set "
                f"PGDATABASE in {place} to a database that exists")
    if "ssl" in text or "certificate" in text:
        return EXIT_CONFIG, (
            f"the TLS settings do not fit the server: check PGSSLMODE (and PGSSLROOTCERT) in "
            f"{place}")
    refused = isinstance(error, PermissionDenied) or re.search(
        r"permission denied|must be owner of|must have|must be superuser", text)
    if step == "roles" and (refused or "must be" in text):
        return EXIT_NO_PERMISSION, (
            "creating roles needs CREATEROLE: run init_db.sh as the owner README.md (Setting "
            "up) creates (createuser --createrole), or let a superuser give role "
            f"{role} CREATEROLE")
    if refused:
        return EXIT_NO_PERMISSION, (
            f"role {role} may not change the schema of database {ctx.database}: run init_db.sh "
            f"as the database's owner (README.md, Setting up: "
            f"{create_command(login, 'gpu_telemetry')}), e.g. with --env naming the owner's "
            "connection")
    if step == "connect":
        return error.exit_code, (
            f"check PGHOST, PGPORT, PGDATABASE, PGUSER and PGPASSWORD in {place} (README.md, "
            "Setting up)")
    return EXIT_SQL_ERROR, ""


def _reason(error: DatabaseError) -> str:
    from gpu_telemetry.db.errors import first_line

    return first_line(error.__cause__) if error.__cause__ is not None else str(error)


def step_failed(step: str, what: str, error: DatabaseError, ctx: Context) -> InitFailed:
    reason = _reason(error)
    status, hint = diagnose(step, error, reason, ctx)
    return InitFailed(f"{what}: {reason}" + (f"; hint: {hint}" if hint else ""), status)


def _step(step: str, what: str, ctx: Context, action):
    """Run one step; a named database error becomes its one line with a hint."""
    try:
        return action()
    except DatabaseError as error:
        raise step_failed(step, what, error, ctx) from error


GRANTED = {
    "WRITER": "writer role {role}: INSERT on telemetry.gpu_samples, gpu_raw and "
              "collector_events, SELECT on their key columns, adds GPU identities, statuses "
              "and partitions through the schema's functions; no UPDATE, DELETE or TRUNCATE",
    "READER": "reader role {role}: SELECT on every telemetry table, read-only sessions",
}


# What --reset empties (--events adds telemetry.collector_events). The GPU identities and the
# statuses stay: they are the inventory, and the next sample finds its ids there.
RESET_TABLES = ("telemetry.gpu_samples", "telemetry.gpu_raw", "telemetry.gpu_telemetry_1m")
EVENTS_TABLE = "telemetry.collector_events"


@dataclass(frozen=True)
class Reset:
    """--reset: which tables to empty, and whether --yes stands in for the question."""

    events: bool
    yes: bool

    @property
    def tables(self) -> tuple[str, ...]:
        return (*RESET_TABLES, EVENTS_TABLE) if self.events else RESET_TABLES


def _show_progress(progress) -> None:
    """One line per batch; on a terminal the line is rewritten in place."""
    line = progress.line(time.monotonic())
    if sys.stderr.isatty():
        end = "\n" if progress.moved >= progress.total else ""  # the last batch
        print(f"\r{line}\x1b[K", end=end, file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _confirm(reset: Reset, database: str, counts: dict[str, int]) -> bool:
    listing = ", ".join(f"{table} ({rows:,} rows)" for table, rows in counts.items())
    question = f"empty {listing} in database {database}? [y/N] "
    if reset.yes:
        return True
    if not sys.stdin.isatty():
        raise InitFailed(f"--reset would empty {listing}: add --yes to do it without being "
                         "asked", EXIT_USAGE)
    try:
        answer = input(question)
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def reset_tables(conn, reset: Reset, database: str) -> int:
    """Empty the tables of --reset after the question (or --yes); 0 done, 1 declined."""
    from gpu_telemetry.db import migrate

    if not _confirm(reset, database, migrate.row_counts(conn, reset.tables)):
        print("nothing emptied", flush=True)
        return 1
    migrate.empty_tables(conn, reset.tables)
    print(f"emptied {', '.join(reset.tables)}", flush=True)
    return 0


def _find_original(conn, ctx: Context, upgrading: bool) -> None:
    """Stop before changing anything on a database of the original scripts, unless asked to
    upgrade it; then keep its table as telemetry.gpu_telemetry_original."""
    from gpu_telemetry.db import upgrade

    found = _step("schema", "cannot look for the original scripts' table", ctx,
                  lambda: upgrade.find_original(conn))
    if found is None:
        return
    if not upgrading:
        raise InitFailed(
            f"database {ctx.database} holds the original scripts' table "
            f"telemetry.gpu_telemetry ({found.describe()}); nothing was changed: run "
            "bin/init_db.sh --upgrade to convert it (docs/upgrading.md)", EXIT_CONFIG)
    _step("schema", "cannot keep the original table", ctx, lambda: upgrade.keep_original(conn))
    print(f"kept the original table as {upgrade.ORIGINAL} ({found.describe()})", flush=True)


def _convert_original(conn, ctx: Context, env_file: str | None, batch_rows: int) -> None:
    from gpu_telemetry.config import load_config
    from gpu_telemetry.db import upgrade as kept

    if _step("migration", "cannot read the original table", ctx,
             lambda: kept.find_kept(conn)) is None:
        print("nothing to upgrade: no table of the original scripts here", flush=True)
        return
    raw_every_sec = load_config(env_file).raw_every_sec
    standing = _step("migration", "cannot convert the original rows", ctx,
                     lambda: conversion.convert(conn, raw_every_sec, batch_rows,
                                                _show_progress))
    print(f"upgraded: {standing.rows_done:,} original rows converted"
          f" ({standing.unparsable:,} whose stored XML could not be parsed kept what the"
          f" original typed); {kept.ORIGINAL} is left as it was", flush=True)


def initialise(env_file: str | None, writer_role: str | None, reader_role: str | None,
               batch_rows: int = narrow.DEFAULT_BATCH_ROWS, reset: Reset | None = None,
               upgrading: bool = False) -> int:
    from gpu_telemetry.config import load_env_file
    from gpu_telemetry.db import migrate, roles, store

    load_env_file(env_file)
    ctx = Context.from_environment(env_file)
    conn = _step("connect", "cannot connect to the database", ctx, migrate.connect)
    with conn:
        _find_original(conn, ctx, upgrading)
        _step("schema", "cannot create the schema telemetry", ctx,
              lambda: migrate.ensure_bookkeeping(conn))
        applied = _step("schema", "cannot read telemetry.schema_migrations", ctx,
                        lambda: migrate.applied_migrations(conn))
        files = migrate.migration_files()
        if not files:
            raise InitFailed(f"no sql/*.sql files under {migrate.SQL_DIR}", EXIT_SQL_ERROR)
        for path in files:
            if path.name in applied:
                print(f"skipped {path.name} (already applied)", flush=True)
                continue
            _step("migration", f"{path.name} failed; nothing of it was applied", ctx,
                  lambda path=path: migrate.apply_migration(conn, path))
            print(f"applied {path.name}", flush=True)
        if narrow.wide_table_exists(conn):
            progress = _step("migration", "cannot move the rows of the wide table", ctx,
                             lambda: narrow.move_wide_rows(conn, batch_rows, _show_progress,
                                                           roles.grant_writer))
            if progress.moved:
                print(f"moved {progress.moved:,} rows into the narrow tables", flush=True)
        now = datetime.now(UTC)
        _step("migration", "cannot create the coming month's partitions", ctx,
              lambda: store.ensure_partitions(conn, now, now + store.PARTITIONS_AHEAD))
        if upgrading:
            _convert_original(conn, ctx, env_file, batch_rows)
        for role, kind, grant in ((writer_role, "WRITER", roles.grant_writer),
                                  (reader_role, "READER", roles.grant_reader)):
            if not role:
                continue
            password = os.environ.get(f"{kind}_PGPASSWORD")
            _step("roles", f"cannot create role {role}", ctx,
                  lambda role=role, password=password: roles.ensure_role(conn, role, password))
            _step("grants", f"cannot grant role {role} its rights", ctx,
                  lambda role=role, grant=grant: grant(conn, role))
            print(GRANTED[kind].format(role=role), flush=True)
            if not password:
                print(f"note: {kind}_PGPASSWORD not set; {role} has no password set by this run",
                      flush=True)
        if reset is not None:
            return _step("reset", "cannot empty the telemetry tables", ctx,
                         lambda: reset_tables(conn, reset, ctx.database))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROGRAM, add_help=False, allow_abbrev=False,
                           description="Apply sql/*.sql; optionally create the writer and "
                                       "reader roles (bin/init_db.sh --help).")
    parser.add_argument("--writer-role", metavar="NAME")
    parser.add_argument("--reader-role", metavar="NAME")
    parser.add_argument("--reset", action="store_true")
    parser.add_argument("--events", action="store_true")
    parser.add_argument("--yes", action="store_true")
    parser.add_argument("--upgrade", action="store_true")
    parser.add_argument("--batch-rows", type=int, default=None, metavar="N")
    add_common_options(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.exit(2, f"{PROGRAM}: unknown argument: {unknown[0]} (see --help)\n")
    for role in (args.writer_role, args.reader_role):
        if role is not None and not ROLE_NAME_RE.fullmatch(role):
            parser.error(f"invalid role name {role!r}: use lower-case letters, digits and _ "
                         f"({ROLE_NAME_RE.pattern})")
    if (args.events or args.yes) and not args.reset:
        parser.error("--events and --yes go with --reset")
    if args.batch_rows is not None and args.batch_rows < 1:
        parser.error("--batch-rows must be at least 1")
    if args.upgrade and args.reset:
        parser.error("--upgrade and --reset do not go together")
    batch_rows = args.batch_rows or (conversion.DEFAULT_BATCH_ROWS if args.upgrade
                                   else narrow.DEFAULT_BATCH_ROWS)
    reset = Reset(events=args.events, yes=args.yes) if args.reset else None
    return run(lambda: initialise(args.env, args.writer_role, args.reader_role,
                                  batch_rows, reset, args.upgrade),
               debug=args.debug, program=PROGRAM)


if __name__ == "__main__":
    raise SystemExit(main())
