"""Lets no one in: the password stays out of argv, logs, spool files and events; a readable
.env holding it is refused; .pgpass and PGSSLMODE work as libpq documents; the writer role
can do what the collector needs and nothing more; the reader role reads only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import conninfo
from tests.helpers import REPO_ROOT, base_env, run_script, spool_files
from tests.reliability.harness import RunningLoop
from tests.test_loop import loops  # noqa: F401 - fixture

SECRET = "s3cr'et pw;--"
GROUP = "password_required"


@pytest.fixture
def roles(db, pg_server, tmp_path):
    """A writer and a reader created by bin/init_db.sh, both logging in with a password."""
    if pg_server.external:
        pytest.skip("needs a test server whose authentication the tests may configure")
    suffix = db.name.rsplit("_", 1)[-1]
    writer, reader = f"writer_{os.getpid()}_{suffix}", f"reader_{os.getpid()}_{suffix}"
    with db.connect() as conn:
        conn.execute(f"DO $$ BEGIN CREATE ROLE {GROUP} NOLOGIN;"
                     " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    pg_server.require_password_for(GROUP)
    (tmp_path / "empty.env").touch()
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "bin" / "init_db.sh"), "--env", str(tmp_path / "empty.env"),
         "--writer-role", writer, "--reader-role", reader],
        env={**os.environ, **db.env, "WRITER_PGPASSWORD": SECRET, "READER_PGPASSWORD": SECRET},
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    with db.connect() as conn:
        for role in (writer, reader):
            conn.execute(f"GRANT {GROUP} TO {role}")
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                              (writer,)).fetchone()[0]
    assert stored.startswith("SCRAM-SHA-256$")
    yield writer, reader
    with db.connect() as conn:
        for role in (writer, reader):
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def as_role(db, role: str, password: str | None = SECRET) -> dict:
    env = {**db.env, "PGUSER": role}
    if password is not None:
        env["PGPASSWORD"] = password
    return env


def connect_as(db, role: str) -> psycopg.Connection:
    return psycopg.connect(**conninfo(db.env, user=role, password=SECRET), autocommit=True)


def test_the_writer_collects_spools_flushes_and_loops(db, roles, tmp_path, loops):  # noqa: F811
    writer, _ = roles
    env = base_env(tmp_path, as_role(db, writer))
    for _ in range(2):  # the second finds the raw snapshots of the first
        result = run_script("collect_once.py", env=env, tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
    down = base_env(tmp_path, None)
    assert run_script("collect_once.py", env=down, tmp_path=tmp_path).returncode == 75
    flushed = run_script("flush_spool.py", env={**env, "RETENTION_DAYS": "365"},
                         tmp_path=tmp_path)
    assert flushed.returncode == 0, flushed.stderr
    assert "retention 365 days: deleted 0 rows" in flushed.stdout  # through telemetry.prune
    lost = base_env(tmp_path, as_role(db, writer), mode="gpu_lost")
    assert run_script("collect_once.py", env=lost, tmp_path=tmp_path).returncode == 69
    loop = RunningLoop(loops, tmp_path, env, 0.2)
    loop.wait_for_calls(4)
    assert loop.stop() == 0
    assert "error:" not in loop.output()  # (a path may hold the word)
    with db.connect() as conn:
        rows, raw = conn.execute("SELECT count(*), count(raw_json)"
                                 " FROM telemetry.gpu_telemetry").fetchone()
        kinds = {k for (k,) in conn.execute("SELECT kind FROM telemetry.collector_events")}
    assert rows == 2 * (3 + len(loop.calls())) and raw == 2
    assert {"spool_flushed", "source_failed"} <= kinds


@pytest.mark.parametrize("statement", [
    "UPDATE telemetry.gpu_samples SET temp_c = 0",
    "DELETE FROM telemetry.gpu_samples",
    "TRUNCATE telemetry.gpu_samples",
    "DELETE FROM telemetry.gpu_raw",
    "SELECT * FROM telemetry.gpus",
    "SELECT * FROM telemetry.statuses",
    "UPDATE telemetry.gpus SET host = 'x'",
    "DELETE FROM telemetry.collector_events",
    "SELECT raw_json FROM telemetry.gpu_telemetry",
    "SELECT temp_c, status_memo FROM telemetry.gpu_telemetry",
    "SELECT * FROM telemetry.gpu_telemetry_1m",
    "UPDATE telemetry.gpu_telemetry_1m SET samples = 0",
    "DROP TABLE telemetry.gpu_samples",
    "DROP VIEW telemetry.gpu_telemetry",
])
def test_the_writer_is_refused_what_it_must_not_do(db, roles, statement):
    writer, _ = roles
    with connect_as(db, writer) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


@pytest.mark.parametrize("statement", [
    "INSERT INTO telemetry.gpu_telemetry (ts, host, gpu_uuid) VALUES (now(), 'h', 'g')",
    "UPDATE telemetry.gpu_samples SET temp_c = 0",
    "DELETE FROM telemetry.collector_events",
    "TRUNCATE telemetry.gpu_telemetry_1m",
    "CREATE TABLE telemetry.x (a int)",
])
def test_the_reader_reads_and_is_refused_the_rest(db, roles, statement):
    _, reader = roles
    with connect_as(db, reader) as conn:
        for table in ("gpu_telemetry", "gpu_telemetry_1m", "collector_events",
                      "schema_migrations"):
            conn.execute(f"SELECT count(*) FROM telemetry.{table}")
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        with pytest.raises((psycopg.errors.InsufficientPrivilege,
                            psycopg.errors.ReadOnlySqlTransaction)):
            conn.execute(statement)


def test_pgpass_file_works_as_libpq_documents(db, roles, tmp_path):
    writer, _ = roles
    passfile = tmp_path / "pgpass"
    escaped = SECRET.replace("\\", "\\\\").replace(":", "\\:")
    passfile.write_text(f"{db.env['PGHOST']}:{db.env['PGPORT']}:{db.name}:{writer}:{escaped}\n")
    passfile.chmod(0o600)
    env = base_env(tmp_path, as_role(db, writer, password=None), PGPASSFILE=str(passfile))
    result = run_script("collect_once.py", env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    env["PGPASSFILE"] = str(tmp_path / "absent")
    result = run_script("collect_once.py", env=env, tmp_path=tmp_path)
    assert result.returncode == 78 and "no password supplied" in result.stderr
    assert "PGPASSWORD" in result.stderr  # the line names what to fix


def test_a_readable_env_file_with_the_password_is_refused(db, roles, tmp_path):
    writer, _ = roles
    env_file = tmp_path / "site.env"
    env_file.write_text(f'PGUSER={writer}\nPGPASSWORD="{SECRET}"\n')
    env = base_env(tmp_path, {k: v for k, v in db.env.items() if k != "PGUSER"})
    for mode, code in ((0o644, 78), (0o640, 78), (0o600, 0)):
        env_file.chmod(mode)
        result = run_script("collect_once.py", "--env", str(env_file), env=env,
                            tmp_path=tmp_path)
        assert result.returncode == code, (mode, result.stderr)
        # The shell scripts read .env by the same rule (init_db.sh, as the writer, then stops
        # at the schema it may not change: not a refusal of the file).
        init = subprocess.run(["bash", str(REPO_ROOT / "bin" / "init_db.sh"), "--env",
                               str(env_file)], env=env, capture_output=True, text=True,
                              check=False)
        if code == 78:
            for refused in (result, init):
                assert refused.returncode == 78
                assert f"chmod 600 {env_file}" in refused.stderr
                assert SECRET not in refused.stderr
        else:
            assert init.returncode != 78 and "chmod" not in init.stderr


def test_pgsslmode_is_honoured(db, tmp_path):
    # The test server has no TLS: with PGSSLMODE=require the collector must not fall back.
    env = base_env(tmp_path, {**db.env, "PGSSLMODE": "require"})
    result = run_script("collect_once.py", env=env, tmp_path=tmp_path)
    assert result.returncode == 78  # waiting does not mend it: a configuration error
    assert "SSL" in result.stderr
    (path,) = spool_files(tmp_path)
    assert "SSL" in json.loads(path.read_text())["_spool_reason"]


def _cmdlines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace"))
            except OSError:
                continue
    return lines


def test_the_password_is_nowhere_it_must_not_be(db, roles, tmp_path, loops):  # noqa: F811
    writer, _ = roles
    mode_file = tmp_path / "mode"
    env = base_env(tmp_path, as_role(db, writer), NVSMI_STANDIN_MODE_FILE=str(mode_file),
                   NVSMI_STANDIN_HANG_SEC="0.4")
    loop = RunningLoop(loops, tmp_path, env, 0.2)
    loop.wait_for_calls(2)
    mode_file.write_text("hang\n")  # calls in flight while argv is read
    loop.wait_for_calls(len(loop.calls()) + 1)
    assert not any(SECRET in line for line in _cmdlines())
    mode_file.write_text("gpu_lost\n")
    loop.wait_for_calls(len(loop.calls()) + 2)
    with db.connect() as conn:  # the database goes away under the loop: it spools
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE usename = %s", (writer,))
        conn.execute(f"ALTER ROLE {writer} NOLOGIN")
    mode_file.unlink()
    deadline = time.monotonic() + 20
    while not spool_files(tmp_path):
        assert time.monotonic() < deadline, loop.output()
        time.sleep(0.1)
    loop.process.send_signal(signal.SIGTERM)
    assert loop.process.wait(timeout=30) == 0
    with db.connect() as conn:
        conn.execute(f"ALTER ROLE {writer} LOGIN")
    flushed = run_script("flush_spool.py", env=base_env(tmp_path, as_role(db, writer)),
                         tmp_path=tmp_path)
    assert flushed.returncode == 0, flushed.stderr
    everything = [loop.output(), flushed.stdout, flushed.stderr]
    everything += [path.read_text(errors="replace") for path in (tmp_path / "spool").rglob("*")
                   if path.is_file()]
    with db.connect() as conn:
        everything += [json.dumps(row, default=str) for row in conn.execute(
            "SELECT kind, detail, data FROM telemetry.collector_events").fetchall()]
    assert len(everything) > 3
    assert not any(SECRET in text for text in everything)
