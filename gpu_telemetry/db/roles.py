"""The two roles besides the owner: the collector's insert-only writer and Grafana's reader.

A password is never sent to the server: its SCRAM-SHA-256 verifier is computed here (RFC 5802,
RFC 7677, as PostgreSQL stores it in pg_authid) and sent as `PASSWORD 'SCRAM-SHA-256$...'`,
which the server stores as it is. The server, and any statement log it keeps, sees only the
verifier.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import psycopg
from psycopg import sql

from gpu_telemetry.db.migrate import failure

SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations
SCRAM_SALT_BYTES = 16

_WRITER_GRANTS = """\
GRANT USAGE ON SCHEMA telemetry TO {role};
REVOKE ALL ON ALL TABLES IN SCHEMA telemetry FROM {role};
GRANT INSERT ON telemetry.gpu_samples, telemetry.gpu_raw, telemetry.collector_events TO {role};
-- ON CONFLICT compares the key; nothing else may be read back.
GRANT SELECT (ts, gpu_id) ON telemetry.gpu_samples, telemetry.gpu_raw TO {role};
-- One row per (ts, host, gpu_uuid) whatever the identity: which ids are that GPU's.
GRANT SELECT (gpu_id, host, gpu_uuid) ON telemetry.gpus TO {role};
GRANT SELECT (ts, host, kind, gpu_uuid) ON telemetry.collector_events TO {role};
-- Hand-written INSERTs into the view (one row at a time, through its trigger).
GRANT INSERT ON telemetry.gpu_telemetry TO {role};
-- Identities, statuses and month partitions are added through functions of the owner: the
-- writer may add them, not read or change them.
GRANT EXECUTE ON FUNCTION telemetry.gpu_id(text, text, text, text, text),
    telemetry.status_id(text, text, text),
    telemetry.ensure_partitions(timestamptz, timestamptz) TO {role};
GRANT EXECUTE ON FUNCTION telemetry.raw_snapshot_times(text[], timestamptz) TO {role};
-- RETENTION_DAYS: the flush timer prunes through this function, not with DELETE rights.
GRANT EXECUTE ON FUNCTION telemetry.prune(double precision) TO {role};
-- The flush stages each batch in a temporary table.
GRANT TEMP ON DATABASE {database} TO {role};
"""

_READER_GRANTS = """\
GRANT USAGE ON SCHEMA telemetry TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA telemetry TO {role};
-- Tables of later migrations too.
ALTER DEFAULT PRIVILEGES IN SCHEMA telemetry GRANT SELECT ON TABLES TO {role};
ALTER ROLE {role} SET default_transaction_read_only = on;
"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scram_verifier(password: str, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64 as PostgreSQL
    writes it. (PostgreSQL also SASLprep-normalises the password; an ASCII password is its
    own normal form.)"""
    salt = os.urandom(SCRAM_SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    return (f"SCRAM-SHA-256${iterations}:{_b64(salt)}"
            f"${_b64(stored_key)}:{_b64(server_key)}")


def ensure_role(conn: psycopg.Connection, role: str, password: str | None) -> None:
    """A LOGIN role named `role`, created when missing; its password set when one is given
    (an existing one is left alone otherwise)."""
    name = sql.Identifier(role)
    try:
        with conn.transaction():
            missing = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM pg_roles"
                                   " WHERE rolname = %s)", (role,)).fetchone()[0]
            if missing:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(name))
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(name))
            if password:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    name, sql.Literal(scram_verifier(password))))
    except psycopg.Error as exc:
        raise failure(exc, f"cannot create role {role}") from exc


def _grant(conn: psycopg.Connection, role: str, statements: str) -> None:
    query = sql.SQL(statements).format(role=sql.Identifier(role),
                                       database=sql.Identifier(conn.info.dbname))
    try:
        with conn.transaction():
            conn.execute(query)
    except psycopg.Error as exc:
        raise failure(exc, f"cannot grant role {role} its rights") from exc


def grant_writer(conn: psycopg.Connection, role: str) -> None:
    """INSERT samples, raw snapshots and events, SELECT their key columns (what ON CONFLICT
    compares), the functions the collector and the flush call (identities, statuses,
    partitions, raw snapshot times, retention); no UPDATE, DELETE or TRUNCATE."""
    _grant(conn, role, _WRITER_GRANTS)


def grant_reader(conn: psycopg.Connection, role: str) -> None:
    """SELECT on every telemetry table, now and later; sessions read-only."""
    _grant(conn, role, _READER_GRANTS)
