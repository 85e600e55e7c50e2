"""bin/init_db.sh against a real PostgreSQL: migrations, configuration precedence, roles, and
the one line with a hint for each way of failing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from gpu_telemetry.cli import init_db
from gpu_telemetry.collector.parser import GPU_COLUMNS
from gpu_telemetry.db.errors import translate
from gpu_telemetry.errors import LoginRefused
from tests.conftest import REPO_ROOT, Database, conninfo
from tests.pgserver import PgServer, free_port

SAMPLE_COLUMNS = {"ts", "host", "status_tag", "status_memo", "run_id", "raw_json"}
_numbers = itertools.count(1)

VENV = Path(sys.prefix)
MIGRATIONS = sorted(path.name for path in (REPO_ROOT / "sql").glob("*.sql"))


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The script, its package and sql/ in a clone of their own: no stray .env, and run from
    elsewhere. The clone runs with this checkout's virtual environment."""
    root = tmp_path / "clone"
    (root / "bin").mkdir(parents=True)
    for script in ("init_db.sh", "uv.sh"):
        shutil.copy2(REPO_ROOT / "bin" / script, root / "bin" / script)
    shutil.copytree(REPO_ROOT / "bin" / "lib", root / "bin" / "lib")
    shutil.copytree(REPO_ROOT / "sql", root / "sql")
    shutil.copytree(REPO_ROOT / "gpu_telemetry", root / "gpu_telemetry",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".venv").symlink_to(VENV, target_is_directory=True)
    return root


@pytest.fixture
def role_name(db: Database) -> Iterator[str]:
    """A cluster-wide role name unique to this test, dropped with whatever it was granted."""
    name = f"gt_role_{os.getpid()}_{next(_numbers)}"
    yield name
    with db.connect() as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        if exists:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _connect(env: dict[str, str], **overrides: str) -> psycopg.Connection:
    return psycopg.connect(**conninfo(env, **overrides), autocommit=True)


def _clean_environ() -> dict[str, str]:
    """os.environ without anything that could point the script at another database."""
    drop = ("PG", "WRITER_PGPASSWORD", "READER_PGPASSWORD", "UV_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def run_init(root: Path, env: dict[str, str], *args: str,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(root / "bin" / "init_db.sh"), *args],
                          env={**_clean_environ(), **env}, cwd=cwd or root.parent,
                          capture_output=True, text=True, timeout=120, check=False)


def _migrations(database: Database) -> list[tuple[str, object]]:
    with database.connect() as conn:
        return conn.execute(
            "SELECT filename, applied_at FROM telemetry.schema_migrations ORDER BY filename"
        ).fetchall()


def test_applies_cleanly_on_an_empty_database(repo_copy: Path, empty_db: Database) -> None:
    result = run_init(repo_copy, empty_db.env)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "applied 001_init.sql" in result.stdout.splitlines()
    assert [name for name, _ in _migrations(empty_db)] == MIGRATIONS


def test_second_run_changes_nothing(repo_copy: Path, empty_db: Database) -> None:
    assert run_init(repo_copy, empty_db.env).returncode == 0
    before = _migrations(empty_db)

    result = run_init(repo_copy, empty_db.env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"skipped {name} (already applied)" for name in MIGRATIONS]
    assert _migrations(empty_db) == before


def test_works_from_any_directory_without_env_file(repo_copy: Path, empty_db: Database,
                                                   tmp_path: Path) -> None:
    assert not (repo_copy / ".env").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = run_init(repo_copy, empty_db.env, cwd=elsewhere)

    assert result.returncode == 0, result.stderr
    assert [name for name, _ in _migrations(empty_db)] == MIGRATIONS


def test_process_environment_wins_over_env_file(repo_copy: Path, empty_db: Database,
                                                tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text(
        "# wrong port on purpose: the process environment must win\n"
        "\n"
        f"PGPORT={free_port()}\n"
        f'export PGDATABASE="{empty_db.name}"   # only the file names the database\n'
        "PGHOST='nowhere.invalid'\n"
    )
    env = {k: v for k, v in empty_db.env.items() if k != "PGDATABASE"}

    result = run_init(repo_copy, env, "--env", str(env_file))

    assert result.returncode == 0, result.stderr
    assert [name for name, _ in _migrations(empty_db)] == MIGRATIONS


def test_repo_env_file_is_read_by_default(repo_copy: Path, empty_db: Database) -> None:
    (repo_copy / ".env").write_text(f"PGDATABASE='{empty_db.name}'\r\nPGSSLMODE=disable\r\n")
    env = {k: v for k, v in empty_db.env.items() if k != "PGDATABASE"}

    result = run_init(repo_copy, env)

    assert result.returncode == 0, result.stderr
    assert [name for name, _ in _migrations(empty_db)] == MIGRATIONS


def test_missing_env_file_is_one_line_error(repo_copy: Path, db: Database) -> None:
    result = run_init(repo_copy, db.env, "--env", str(repo_copy / "nope.env"))

    assert result.returncode == 78
    assert len(result.stderr.splitlines()) == 1
    assert "nope.env" in result.stderr


def test_tables_columns_and_primary_key(db: Database) -> None:
    with db.connect() as conn:
        columns = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'telemetry' AND table_name = 'gpu_telemetry'")}
        pk = [row[0] for row in conn.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
            " WHERE i.indrelid = 'telemetry.gpu_samples'::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)")]
        kinds = dict(conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'telemetry'"
            " AND c.relname IN ('gpu_telemetry', 'gpu_samples', 'gpu_raw')").fetchall())
        events = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'telemetry' AND table_name = 'collector_events'")}
        migrations = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'telemetry' AND table_name = 'schema_migrations'")}

    assert columns == set(GPU_COLUMNS) | SAMPLE_COLUMNS
    # The documented table is a view over narrow tables partitioned by time.
    assert kinds == {"gpu_telemetry": "v", "gpu_samples": "p", "gpu_raw": "p"}
    assert pk == ["ts", "gpu_id"]
    assert {"ts", "host", "kind", "detail"} <= events
    assert migrations == {"filename", "applied_at"}


def test_every_column_has_a_comment(db: Database) -> None:
    with db.connect() as conn:
        missing = conn.execute(
            "SELECT c.relname, a.attname FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'telemetry' AND c.relkind IN ('r', 'p', 'v')"
            "   AND NOT c.relispartition"
            "   AND a.attnum > 0 AND NOT a.attisdropped"
            "   AND col_description(a.attrelid, a.attnum) IS NULL").fetchall()
    assert missing == []


def verifies(verifier: str, password: str) -> bool:
    """Whether a stored SCRAM-SHA-256 verifier is the one of this password (RFC 5802)."""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier)
    assert match, verifier
    iterations, salt, stored_key, server_key = match.groups()
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                 int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return (base64.b64decode(stored_key) == hashlib.sha256(client_key).digest()
            and base64.b64decode(server_key) == hmac.new(salted, b"Server Key",
                                                         "sha256").digest())


def test_writer_role_inserts_but_never_updates_or_deletes(repo_copy: Path, db: Database,
                                                          role_name: str,
                                                          tmp_path: Path) -> None:
    secret = "s3cr'et-writer $HOME \\"
    result = run_init(repo_copy, {**db.env, "WRITER_PGPASSWORD": secret},
                      "--writer-role", role_name)

    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    with db.connect() as admin:
        (stored,) = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                                  (role_name,)).fetchone()
    # Computed here: the server was sent the verifier, never the password.
    assert verifies(stored, secret) and not verifies(stored, "other")
    with _connect(db.env, user=role_name) as conn:
        # A month with no partition yet: the writer's insert creates it.
        insert = ("INSERT INTO telemetry.gpu_telemetry (ts, host, gpu_uuid, temp_c)"
                  " VALUES ('2026-01-04T00:00:00Z', 'h', 'GPU-1', 40)")
        conn.execute(insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert)
        conn.execute("INSERT INTO telemetry.collector_events (ts, host, kind, detail)"
                     " VALUES (now(), 'h', 'outage_start', 'test')")
        assert conn.execute("SELECT count(*) FROM telemetry.gpu_samples").fetchone() == (1,)
        conn.execute("CREATE TEMP TABLE staging (x int)")
        for statement in ("SELECT temp_c FROM telemetry.gpu_telemetry",
                          "SELECT * FROM telemetry.gpus",
                          "UPDATE telemetry.gpu_samples SET temp_c = 0",
                          "DELETE FROM telemetry.gpu_samples",
                          "UPDATE telemetry.gpus SET host = 'x'",
                          "TRUNCATE telemetry.collector_events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_reader_role_cannot_insert(repo_copy: Path, db: Database, role_name: str) -> None:
    result = run_init(repo_copy, db.env, "--reader-role", role_name)

    assert result.returncode == 0, result.stderr
    with _connect(db.env, user=role_name) as conn:
        assert conn.execute("SELECT count(*) FROM telemetry.gpu_telemetry").fetchone() == (0,)
        with pytest.raises((psycopg.errors.ReadOnlySqlTransaction,
                            psycopg.errors.InsufficientPrivilege)):
            conn.execute("INSERT INTO telemetry.gpu_telemetry (ts, host, gpu_uuid)"
                         " VALUES (now(), 'h', 'GPU-1')")
        # Even outside a read-only transaction the privilege is not there.
        assert conn.execute("SELECT has_table_privilege('telemetry.gpu_telemetry', 'INSERT')"
                            ).fetchone() == (False,)


def test_roles_are_idempotent(repo_copy: Path, db: Database, role_name: str) -> None:
    for _ in range(2):
        result = run_init(repo_copy, db.env, "--writer-role", role_name)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["Writer", "1abc", "a-b", "x;drop"])
def test_bad_role_name_is_usage_error(repo_copy: Path, name: str) -> None:
    result = run_init(repo_copy, {}, "--writer-role", name)

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1


def test_help_exits_zero(repo_copy: Path) -> None:
    result = run_init(repo_copy, {}, "--help")

    assert result.returncode == 0
    assert "Usage:" in result.stdout
    assert "--writer-role" in result.stdout


def test_help_needs_no_python(repo_copy: Path) -> None:
    (repo_copy / ".venv").unlink()
    bash_only = Path(shutil.which("bash")).parent
    result = run_init(repo_copy, {"PATH": str(bash_only), "UV_SEARCH_PATH": ""}, "--help")

    assert result.returncode == 0, result.stderr
    assert "Usage: bin/init_db.sh" in result.stdout


def test_unknown_flag_is_usage_error(repo_copy: Path) -> None:
    result = run_init(repo_copy, {}, "--frobnicate")

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "--frobnicate" in result.stderr




def test_server_down_then_back(repo_copy: Path, db: Database, pg_server: PgServer) -> None:
    if not pg_server.can_restart:
        pytest.skip("external test server (TEST_PGHOST): cannot be stopped")
    pg_server.stop("immediate")
    try:
        down = run_init(repo_copy, db.env)
    finally:
        pg_server.start()

    assert down.returncode == 75
    assert "cannot connect to the database" in down.stderr
    assert_one_line_with_hint(down, "is PostgreSQL running")
    assert run_init(repo_copy, db.env).returncode == 0


def test_no_python_to_run_it_is_exit_127_with_hint(repo_copy: Path, db: Database) -> None:
    (repo_copy / ".venv").unlink()
    bash_only = Path(shutil.which("bash")).parent
    result = run_init(repo_copy, {**db.env, "PATH": str(bash_only), "UV_SEARCH_PATH": ""})

    assert result.returncode == 127
    assert len(result.stderr.splitlines()) == 1
    assert "install uv" in result.stderr and "uv sync" in result.stderr


def test_failing_migration_is_rolled_back(repo_copy: Path, db: Database) -> None:
    (repo_copy / "sql" / "002_broken.sql").write_text(
        "CREATE TABLE telemetry.half_done (x int);\nSELECT no_such_function();\n")

    result = run_init(repo_copy, db.env)

    assert result.returncode == 1
    assert result.stderr.startswith("init_db.sh: 002_broken.sql failed; nothing of it was applied:")
    assert len(result.stderr.splitlines()) == 1
    assert "no_such_function" in result.stderr
    with db.connect() as conn:
        assert conn.execute("SELECT to_regclass('telemetry.half_done')").fetchone() == (None,)
    assert [name for name, _ in _migrations(db)] == MIGRATIONS


# --- a failed connection, login or right: one line, a hint, a status of this script ---------------

PASSWORD_GROUP = "init_db_password_required"


def assert_one_line_with_hint(result: subprocess.CompletedProcess[str], *hints: str) -> None:
    """psql's reason and the hint on one line of the script's own; nothing of psql's bare."""
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("init_db.sh: ") and "; hint: " in lines[0], lines[0]
    assert "psql:" not in lines[0] and "Password for user" not in lines[0], lines[0]
    for hint in hints:
        assert hint in lines[0].split("; hint: ", 1)[1], lines[0]


def _admin(db: Database, *statements: sql.Composable | str) -> None:
    with db.connect() as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def password_role(db: Database, pg_server: PgServer, role_name: str) -> str:
    """role_name, which must log in with the password 'right' over TCP."""
    if pg_server.external:
        pytest.skip("needs a test server whose authentication the tests may configure")
    _admin(db, "DO $$ BEGIN CREATE ROLE init_db_password_required NOLOGIN;"
               " EXCEPTION WHEN duplicate_object THEN NULL; END $$",
           sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'right' IN ROLE {}")
           .format(sql.Identifier(role_name), sql.Identifier(PASSWORD_GROUP)))
    pg_server.require_password_for(PASSWORD_GROUP)
    return role_name


def test_wrong_password_names_the_settings_and_the_create_command(
        repo_copy: Path, db: Database, password_role: str) -> None:
    result = run_init(repo_copy, {**db.env, "PGUSER": password_role, "PGPASSWORD": "wrong"})

    assert result.returncode == LoginRefused.exit_code == 78
    assert "password authentication failed" in result.stderr
    assert_one_line_with_hint(result, "PGUSER", "PGPASSWORD", str(repo_copy / ".env"),
                              "sudo -u postgres createuser --createrole ")


def test_missing_password_is_not_prompted_for(repo_copy: Path, db: Database,
                                              password_role: str, tmp_path: Path) -> None:
    env = {**db.env, "PGUSER": password_role, "PGPASSFILE": str(tmp_path / "absent")}

    result = run_init(repo_copy, env)

    assert result.returncode == LoginRefused.exit_code
    assert "no password supplied" in result.stderr
    assert_one_line_with_hint(result, "PGPASSWORD", "~/.pgpass")


def test_unknown_role_gets_the_create_command(repo_copy: Path, db: Database,
                                              role_name: str) -> None:
    result = run_init(repo_copy, {**db.env, "PGUSER": role_name})

    assert result.returncode == 78
    assert f'role "{role_name}" does not exist' in result.stderr
    assert_one_line_with_hint(
        result, f"sudo -u postgres createuser --createrole {role_name} && "
                f"sudo -u postgres createdb --owner {role_name} {db.name}", "PGUSER")


def test_unknown_database_gets_the_createdb_command(repo_copy: Path, db: Database) -> None:
    result = run_init(repo_copy, {**db.env, "PGDATABASE": "no_such_db"})

    assert result.returncode == 78
    assert 'database "no_such_db" does not exist' in result.stderr
    user = db.env["PGUSER"]
    assert_one_line_with_hint(result, f"sudo -u postgres createdb --owner {user} no_such_db",
                              "PGDATABASE")


def test_dead_port_asks_whether_the_server_runs(repo_copy: Path) -> None:
    port = free_port()
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres",
           "PGDATABASE": "postgres"}

    result = run_init(repo_copy, env)

    assert result.returncode == 75
    assert "cannot connect to the database" in result.stderr
    assert "Connection refused" in result.stderr
    assert_one_line_with_hint(result, f"host 127.0.0.1, port {port}", "is PostgreSQL running",
                              "PGHOST", "PGPORT")


@pytest.mark.parametrize("grant", [None, "CREATE"], ids=["no-rights", "create-on-database"])
def test_role_without_rights_is_told_to_run_as_the_owner(repo_copy: Path, db: Database,
                                                         role_name: str,
                                                         grant: str | None) -> None:
    # With CREATE on the database it may add schemas, but telemetry belongs to another role.
    _admin(db, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role_name)))
    if grant:
        _admin(db, sql.SQL("GRANT CREATE ON DATABASE {} TO {}")
               .format(sql.Identifier(db.name), sql.Identifier(role_name)))
    before = _migrations(db)

    result = run_init(repo_copy, {**db.env, "PGUSER": role_name})

    assert result.returncode == 77
    assert "permission denied for" in result.stderr
    assert_one_line_with_hint(result, f"role {role_name} may not change the schema",
                              "as the database's owner")
    assert _migrations(db) == before


def test_owner_without_createrole_is_told_what_roles_need(repo_copy: Path,
                                                          empty_db: Database, db: Database,
                                                          role_name: str) -> None:
    _admin(db, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role_name)),
           sql.SQL("ALTER DATABASE {} OWNER TO {}")
           .format(sql.Identifier(empty_db.name), sql.Identifier(role_name)))
    writer = f"{role_name}_w"
    try:
        result = run_init(repo_copy, {**empty_db.env, "PGUSER": role_name},
                          "--writer-role", writer)
    finally:
        # role_name's teardown drops the role, which must then own nothing anywhere.
        with _connect(empty_db.env) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role_name)))
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(empty_db.name), sql.Identifier(empty_db.env["PGUSER"])))

    assert result.returncode == 77
    applied = [line for line in result.stdout.splitlines() if line.startswith("applied ")]
    assert len(applied) == len(MIGRATIONS)  # the schema went in; only the role could not
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"init_db.sh: cannot create role {writer}:")
    assert "; hint: creating roles needs CREATEROLE" in lines[0]


@pytest.mark.parametrize(("message", "status", "hint"), [
    ('connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: '
     "No such file or directory\n\tIs the server running locally and accepting connections on "
     "that socket?", 75, "the local socket (PGHOST unset), port 5432: is PostgreSQL running"),
    ('connection to server at "db.lan" (192.0.2.1), port 5432 failed: timeout expired', 75,
     "host db.lan, port 5432"),
    ('connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: '
     'FATAL:  Peer authentication failed for user "gpu_writer"', 78,
     "leave PGUSER unset"),
    ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  no pg_hba.conf entry for '
     'host "127.0.0.1", user "gpu_writer", database "gpu_telemetry", no encryption', 78,
     "pg_hba.conf"),
    ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  role "gpu_writer" is not '
     "permitted to log in", 78, "LOGIN"),
    ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  permission denied for '
     'database "gpu_telemetry"\nDETAIL:  User does not have CONNECT privilege.', 77,
     "GRANT CONNECT ON DATABASE"),
    ('connection to server at "db.lan" (192.0.2.1), port 5432 failed: root certificate file '
     '"/root/.postgresql/root.crt" does not exist', 78, "PGSSLROOTCERT"),
    ("something nobody foresaw", 75, "PGHOST, PGPORT, PGDATABASE, PGUSER"),
], ids=["no-socket", "timeout", "peer", "pg_hba", "nologin", "connect-privilege",
        "certificate", "unknown"])
def test_every_connection_failure_gets_a_status_and_a_hint(monkeypatch, message: str,
                                                           status: int, hint: str) -> None:
    """libpq's words at connect time (psycopg raises them as OperationalError, no SQLSTATE),
    through the same translation as a real failed connection; a refused login exits as the
    collector does for it."""
    for key in ("PGHOST", "PGPORT", "PGDATABASE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PGUSER", "gpu_writer")
    if "db.lan" in message:
        monkeypatch.setenv("PGHOST", "db.lan")
    error = translate(psycopg.OperationalError(message))
    error.__cause__ = psycopg.OperationalError(message)

    failed = init_db.step_failed("connect", "cannot connect to the database", error,
                                 init_db.Context.from_environment(None))

    assert failed.exit_code == status, str(failed)
    if isinstance(error, LoginRefused):  # the status collect_once.py and the flush give it
        assert failed.exit_code == LoginRefused.exit_code, str(failed)
    line = str(failed)
    assert "\n" not in line
    assert line.startswith("cannot connect to the database: " + message.split("\n")[0][:20])
    assert hint in line.split("; hint: ", 1)[1], line
