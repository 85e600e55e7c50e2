"""bin/init_db.sh against a real PostgreSQL: migrations, configuration precedence, roles."""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from gpu_telemetry.parser import GPU_COLUMNS
from tests.conftest import REPO_ROOT, Database
from tests.pgserver import PgServer, free_port

SAMPLE_COLUMNS = {"ts", "host", "status_tag", "status_memo", "run_id", "raw_json"}
_numbers = itertools.count(1)

MIGRATIONS = sorted(path.name for path in (REPO_ROOT / "sql").glob("*.sql"))


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The script and sql/ in a clone of their own: no stray .env, and run from elsewhere."""
    root = tmp_path / "clone"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "bin" / "init_db.sh", root / "bin" / "init_db.sh")
    shutil.copytree(REPO_ROOT / "bin" / "lib", root / "bin" / "lib")
    shutil.copytree(REPO_ROOT / "sql", root / "sql")
    return root


@pytest.fixture
def empty_db(pg_server: PgServer) -> Iterator[Database]:
    name = f"init_{os.getpid()}_{next(_numbers)}"
    with _connect(pg_server.libpq_env("postgres")) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    yield Database(name=name, env=pg_server.libpq_env(name))
    with _connect(pg_server.libpq_env("postgres")) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                     .format(sql.Identifier(name)))


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
    keys = {"PGHOST": "host", "PGPORT": "port", "PGUSER": "user", "PGDATABASE": "dbname",
            "PGPASSWORD": "password"}
    params = {keys[k]: v for k, v in env.items() if k in keys}
    params.update(overrides)
    return psycopg.connect(**params, autocommit=True)


def _clean_environ() -> dict[str, str]:
    """os.environ without anything that could point the script at another database."""
    drop = ("PG", "WRITER_PGPASSWORD", "READER_PGPASSWORD", "PSQL")
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
            " WHERE i.indrelid = 'telemetry.gpu_telemetry'::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)")]
        events = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'telemetry' AND table_name = 'collector_events'")}
        migrations = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'telemetry' AND table_name = 'schema_migrations'")}

    assert columns == set(GPU_COLUMNS) | SAMPLE_COLUMNS
    assert pk == ["ts", "host", "gpu_uuid"]
    assert {"ts", "host", "kind", "detail"} <= events
    assert migrations == {"filename", "applied_at"}


def test_every_column_has_a_comment(db: Database) -> None:
    with db.connect() as conn:
        missing = conn.execute(
            "SELECT c.relname, a.attname FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'telemetry' AND c.relkind = 'r'"
            "   AND a.attnum > 0 AND NOT a.attisdropped"
            "   AND col_description(a.attrelid, a.attnum) IS NULL").fetchall()
    assert missing == []


def _psql_recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A PSQL stand-in that logs its argument list, then runs the real psql."""
    log = tmp_path / "psql-argv.log"
    recorder = tmp_path / "psql-recorder"
    recorder.write_text(
        "#!/usr/bin/env bash\n"
        f"printf '%s\\n' \"$*\" >>'{log}'\n"
        f"exec '{shutil.which('psql')}' \"$@\"\n"
    )
    recorder.chmod(recorder.stat().st_mode | stat.S_IXUSR)
    return recorder, log


def test_writer_role_inserts_but_never_updates_or_deletes(repo_copy: Path, db: Database,
                                                          role_name: str,
                                                          tmp_path: Path) -> None:
    recorder, log = _psql_recorder(tmp_path)
    secret = "s3cr'et-writer"
    result = run_init(repo_copy, {**db.env, "PSQL": str(recorder),
                                  "WRITER_PGPASSWORD": secret}, "--writer-role", role_name)

    assert result.returncode == 0, result.stderr
    assert secret not in log.read_text()
    with db.connect() as admin:
        assert admin.execute("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s",
                             (role_name,)).fetchone() == (True,)
    with _connect(db.env, user=role_name) as conn:
        insert = ("INSERT INTO telemetry.gpu_telemetry (ts, host, gpu_uuid, temp_c)"
                  " VALUES ('2026-01-04T00:00:00Z', 'h', 'GPU-1', 40) ON CONFLICT DO NOTHING")
        conn.execute(insert)
        conn.execute(insert)
        conn.execute("INSERT INTO telemetry.collector_events (ts, host, kind, detail)"
                     " VALUES (now(), 'h', 'outage_start', 'test')")
        assert conn.execute("SELECT count(*) FROM telemetry.gpu_telemetry").fetchone() == (1,)
        conn.execute("CREATE TEMP TABLE staging (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE telemetry.gpu_telemetry SET temp_c = 0")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM telemetry.gpu_telemetry")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("TRUNCATE telemetry.collector_events")


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


def test_unknown_flag_is_usage_error(repo_copy: Path) -> None:
    result = run_init(repo_copy, {}, "--frobnicate")

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "--frobnicate" in result.stderr


def test_dead_database_is_one_clear_line(repo_copy: Path) -> None:
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(free_port()), "PGUSER": "postgres",
           "PGDATABASE": "postgres"}

    result = run_init(repo_copy, env)

    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1
    assert "cannot connect to the database" in result.stderr
    assert result.stdout == ""


def test_server_down_then_back(repo_copy: Path, db: Database, pg_server: PgServer) -> None:
    if not pg_server.can_restart:
        pytest.skip("external test server (TEST_PGHOST): cannot be stopped")
    pg_server.stop("immediate")
    try:
        down = run_init(repo_copy, db.env)
    finally:
        pg_server.start()

    assert down.returncode == 1
    assert "cannot connect to the database" in down.stderr
    assert run_init(repo_copy, db.env).returncode == 0


def test_missing_psql_is_exit_127_with_hint(repo_copy: Path, db: Database) -> None:
    result = run_init(repo_copy, {**db.env, "PSQL": "/nonexistent/psql"})

    assert result.returncode == 127
    assert "postgresql-client" in result.stderr


def test_failing_migration_is_rolled_back(repo_copy: Path, db: Database) -> None:
    (repo_copy / "sql" / "002_broken.sql").write_text(
        "CREATE TABLE telemetry.half_done (x int);\nSELECT no_such_function();\n")

    result = run_init(repo_copy, db.env)

    assert result.returncode == 1
    assert "002_broken.sql" in result.stderr
    with db.connect() as conn:
        assert conn.execute("SELECT to_regclass('telemetry.half_done')").fetchone() == (None,)
    assert [name for name, _ in _migrations(db)] == MIGRATIONS
