"""Databases that answer but cannot take a sample, one per named error of gpu_telemetry.errors:
never initialised, a role that may not insert, a wrong password, a PGPORT that is not a port,
a value the database refuses. Each fixture gives the PG* variables that produce it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from psycopg import sql

from tests.helpers import REPO_ROOT

PASSWORD_GROUP = "password_required"
REFUSED_MEMO = "a memo the database refuses"
WRONG_PASSWORD = "not-the-password"


@pytest.fixture
def uninitialised_db(empty_db) -> dict[str, str]:
    """conftest's empty database, as the PG* variables that point at it."""
    return empty_db.env


@pytest.fixture
def reader_env(db, tmp_path) -> Iterator[dict[str, str]]:
    """The read-only role that bin/init_db.sh --reader-role makes (for Grafana)."""
    reader = f"reader_{os.getpid()}_{db.name.rsplit('_', 1)[-1]}"
    empty = tmp_path / "init.env"
    empty.touch()
    result = subprocess.run(["bash", str(REPO_ROOT / "bin" / "init_db.sh"), "--env", str(empty),
                             "--reader-role", reader],
                            env={**os.environ, **db.env}, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    try:
        yield {**db.env, "PGUSER": reader}
    finally:
        with db.connect() as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))


@pytest.fixture
def wrong_password_env(db, pg_server) -> Iterator[dict[str, str]]:
    """A role that must log in with a password, given the wrong one."""
    if pg_server.external:
        pytest.skip("needs a test server whose authentication the tests may configure")
    role = f"pw_{os.getpid()}_{db.name.rsplit('_', 1)[-1]}"
    with db.connect() as conn:
        conn.execute(f"DO $$ BEGIN CREATE ROLE {PASSWORD_GROUP} NOLOGIN;"
                     " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'the-password' IN ROLE {}")
                     .format(sql.Identifier(role), sql.Identifier(PASSWORD_GROUP)))
    pg_server.require_password_for(PASSWORD_GROUP)
    try:
        yield {**db.env, "PGUSER": role, "PGPASSWORD": WRONG_PASSWORD}
    finally:
        with db.connect() as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def refusing_db(db):
    """`db`, whose tables refuse a sample with status_memo REFUSED_MEMO (a CHECK constraint on
    every table holding that column): what a constraint of a newer schema would do."""
    with db.connect() as conn:
        tables = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'telemetry' AND a.attname = 'status_memo'"
            " AND NOT a.attisdropped AND c.relkind IN ('r', 'p')").fetchall()
        assert tables, "no table holds status_memo"
        for (table,) in tables:
            conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT test_refused_memo"
                                 " CHECK (status_memo IS DISTINCT FROM {})")
                         .format(sql.SQL(table), sql.Literal(REFUSED_MEMO)))
    return db
