"""Shared fixtures: a real PostgreSQL server and a fresh database per test (see
docs/architecture.md, Tests)."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.pgserver import PgServer

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DB = "gpu_telemetry_template"

_db_numbers = itertools.count(1)


@dataclass
class Database:
    """One test's own database; `env` holds the PG* variables that point at it."""

    name: str
    env: dict[str, str] = field(default_factory=dict)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(**conninfo(self.env), autocommit=True)


_LIBPQ_PARAMETERS = {"PGHOST": "host", "PGPORT": "port", "PGUSER": "user",
                     "PGDATABASE": "dbname", "PGPASSWORD": "password"}


def conninfo(env: dict[str, str], **overrides: str) -> dict[str, str]:
    """psycopg.connect()'s keywords for the PG* variables of `env`, then `overrides` (e.g.
    another user and its password): tests connect to exactly what a script would be given."""
    return {**{_LIBPQ_PARAMETERS[k]: v for k, v in env.items() if k in _LIBPQ_PARAMETERS},
            **overrides}


def _admin_connect(server: PgServer) -> psycopg.Connection:
    return psycopg.connect(**conninfo(server.libpq_env("postgres")), autocommit=True)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> str:
    """The schema, applied once by the real bin/init_db.sh; every test database copies it."""
    with _admin_connect(pg_server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                     .format(sql.Identifier(TEMPLATE_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    env = {**os.environ, **pg_server.libpq_env(TEMPLATE_DB)}
    result = subprocess.run(["bash", str(REPO_ROOT / "bin" / "init_db.sh")], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        pytest.fail(f"bin/init_db.sh failed ({result.returncode}):\n"
                    f"{result.stdout}{result.stderr}")
    return TEMPLATE_DB


@contextlib.contextmanager
def database_copy(pg_server: PgServer, template_db: str, prefix: str = "test"
                  ) -> Iterator[Database]:
    """A fresh database with the schema, dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{next(_db_numbers)}"
    with _admin_connect(pg_server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}")
                     .format(sql.Identifier(name), sql.Identifier(template_db)))
    try:
        yield Database(name=name, env=pg_server.libpq_env(name))
    finally:
        # A test may have stopped the server on purpose; bring it back to clean up.
        if pg_server.can_restart and not pg_server.running:
            pg_server.start()
        with _admin_connect(pg_server) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))


@pytest.fixture
def db(pg_server: PgServer, template_db: str) -> Iterator[Database]:
    with database_copy(pg_server, template_db) as database:
        yield database


@pytest.fixture
def empty_db(pg_server: PgServer) -> Iterator[Database]:
    """A database that bin/init_db.sh never ran on: the server answers, no schema."""
    with database_copy(pg_server, "template0", "empty") as database:
        yield database
