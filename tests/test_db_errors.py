"""psycopg's errors named by gpu_telemetry.db: each failure a real server gives (at connect time
and on a query) becomes one named error with its exit code, and the store lets nothing else
out."""

from __future__ import annotations

import ast
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from gpu_telemetry import errors
from gpu_telemetry.db import store
from gpu_telemetry.records import Event, GpuReading, Sample, Status
from tests.database_errors import (  # noqa: F401 - fixtures
    REFUSED_MEMO,
    reader_env,
    refusing_db,
    uninitialised_db,
    wrong_password_env,
)
from tests.helpers import REPO_ROOT, dead_database_env

LIBPQ_KEYS = ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSSLMODE",
              "PGPASSFILE", "PGSERVICE", "PGCONNECT_TIMEOUT")


@pytest.fixture
def libpq_env(monkeypatch):
    """Point this process's libpq at `env` (what store.connect() reads), nothing else kept."""

    def use(env: dict[str, str]) -> None:
        for key in LIBPQ_KEYS:
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("PGCONNECT_TIMEOUT", "3")

    return use


def a_sample(memo: str = "baseline") -> Sample:
    return Sample(datetime.now(UTC), "db-errors-test", Status("idle", memo),
                  [GpuReading(gpu_uuid="GPU-db-errors", temp_c=40)])


def store_one(memo: str = "baseline") -> None:
    with store.connect() as conn:
        store.insert_samples(conn, [a_sample(memo)], raw_every_sec=600)


# --- at connect time: no SQLSTATE, told apart by libpq's words -------------------------------

@pytest.mark.parametrize(("change", "says"), [
    ({"PGPORT": "notanumber"}, "notanumber"),
    ({"PGDATABASE": "no_such_database"}, "no_such_database"),
    ({"PGUSER": "no_such_role"}, "no_such_role"),
    ({"PGSSLMODE": "require"}, "SSL"),
    ({"PGSSLMODE": "sometimes"}, "sslmode"),
], ids=["port-not-a-number", "no-database", "no-role", "tls-required", "bad-sslmode"])
def test_a_login_the_server_or_libpq_refuses_is_login_refused(db, libpq_env, change, says):
    libpq_env({**db.env, **change})
    with pytest.raises(errors.DatabaseError) as raised:
        store.connect()
    assert type(raised.value) is errors.LoginRefused and raised.value.exit_code == 78
    message = str(raised.value)
    assert message.startswith("database login refused: ") and says in message
    assert "PGPASSWORD" in message and "\n" not in message
    assert isinstance(raised.value.__cause__, psycopg.Error)


def test_a_wrong_password_is_login_refused(wrong_password_env, libpq_env):  # noqa: F811
    libpq_env(wrong_password_env)
    with pytest.raises(errors.LoginRefused, match="password authentication failed") as raised:
        store.connect()
    assert wrong_password_env["PGPASSWORD"] not in str(raised.value)


def test_nothing_listening_is_unreachable(libpq_env):
    libpq_env(dead_database_env())
    with pytest.raises(errors.DatabaseError) as raised:
        store.connect()
    assert type(raised.value) is errors.DatabaseUnreachable and raised.value.exit_code == 75
    assert str(raised.value).startswith("database unreachable: ")


def test_a_role_without_connect_is_permission_denied_naming_it(db, libpq_env):
    role = f"no_connect_{db.name}"
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC")
                     .format(sql.Identifier(db.name)))
    try:
        libpq_env({**db.env, "PGUSER": role})
        with pytest.raises(errors.PermissionDenied) as raised:
            store.connect()
        assert raised.value.exit_code == 77 and f'role "{role}"' in str(raised.value)
    finally:
        with db.connect() as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# --- on a query: the SQLSTATE names it ----------------------------------------------------

def test_a_database_never_initialised_is_schema_missing(uninitialised_db, libpq_env):  # noqa: F811
    libpq_env(uninitialised_db)
    with pytest.raises(errors.SchemaMissing) as raised:
        store_one()
    assert raised.value.exit_code == 78
    assert str(raised.value).startswith("database schema missing or out of date (storing "
                                        "samples): ")
    assert str(raised.value).endswith("; run bin/init_db.sh")


def test_a_missing_column_is_schema_missing(db, libpq_env):
    with db.connect() as conn:
        conn.execute("ALTER TABLE telemetry.collector_events RENAME COLUMN detail TO gone")
    libpq_env(db.env)
    with store.connect() as conn, pytest.raises(errors.SchemaMissing, match="detail"):
        store.insert_events(conn, [Event("k", "d", data={"a": 1}, ts=datetime.now(UTC), host="h")])


def test_the_reader_role_is_permission_denied_naming_it(reader_env, libpq_env):  # noqa: F811
    libpq_env(reader_env)
    with pytest.raises(errors.PermissionDenied) as raised:
        store_one()
    message = str(raised.value)
    assert raised.value.exit_code == 77
    assert f'role "{reader_env["PGUSER"]}" (PGUSER) may not write telemetry' in message
    assert message.endswith("bin/init_db.sh --writer-role NAME")


def test_a_refused_value_is_rejected_value_and_the_connection_goes_on(refusing_db,  # noqa: F811
                                                                       libpq_env):
    libpq_env(refusing_db.env)
    with store.connect() as conn:
        with pytest.raises(errors.RejectedValue, match="test_refused_memo") as raised:
            store.insert_samples(conn, [a_sample(REFUSED_MEMO)], raw_every_sec=600)
        assert raised.value.exit_code == 65
        # The refused transaction was rolled back: the same connection stores the next one.
        assert store.insert_samples(conn, [a_sample()], raw_every_sec=600) == (1, 1)


def test_a_server_gone_mid_way_is_unreachable(db, libpq_env):
    libpq_env(db.env)
    with store.connect() as conn:
        with db.connect() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        with pytest.raises(errors.DatabaseUnreachable):
            store.insert_samples(conn, [a_sample()], raw_every_sec=600)
        with pytest.raises(errors.DatabaseUnreachable):
            store.prune(conn, 30)


# --- the collector's one-shot and the flush hold no psycopg of their own ---------------------

@pytest.mark.parametrize("module", ["collect", "flush"])
def test_the_one_shot_and_the_flush_import_no_psycopg(module):
    tree = ast.parse((REPO_ROOT / "gpu_telemetry" / "collector" / f"{module}.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] == "psycopg"}
