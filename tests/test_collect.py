"""bin/collect_once.py end to end: the real script, the stand-in nvidia-smi, a real PostgreSQL."""

from __future__ import annotations

import json

import pytest

from gpu_telemetry.collector.parser import GPU_COLUMNS
from tests.database_errors import (  # noqa: F401 - fixtures
    REFUSED_MEMO,
    WRONG_PASSWORD,
    reader_env,
    refusing_db,
    uninitialised_db,
    wrong_password_env,
)
from tests.helpers import base_env, run_script, spool_files, write_status

GPU_LOST = ("Unable to determine the device handle for GPU0000:01:00.0: GPU is lost. "
            "Reboot the system to recover this GPU")


def rows(db, sql="SELECT * FROM telemetry.gpu_telemetry ORDER BY ts, gpu_index"):
    with db.connect() as conn, conn.cursor(row_factory=__import__("psycopg").rows.dict_row) as c:
        return c.execute(sql).fetchall()


def test_sample_is_stored_with_its_status(db, tmp_path):
    write_status(tmp_path, tag="bench", memo="gpu-burn fan=25%", run_id="gpuburn-20260104-000000")
    result = run_script("collect_once.py", env=base_env(tmp_path, db.env), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "stored 2 of 2 GPU rows" in result.stdout
    stored = rows(db)
    assert [(r["pci_bus_id"], r["temp_c"], r["power_draw_w"], r["fan_pct"]) for r in stored] == [
        ("00000000:01:00.0", 15, 1.0, 31), ("00000000:02:00.0", 15, 1.62, 32)]
    assert {(r["status_tag"], r["status_memo"], r["run_id"]) for r in stored} == {
        ("bench", "gpu-burn fan=25%", "gpuburn-20260104-000000")}
    assert all(r["host"] and r["driver_version"] == "590.44.01" for r in stored)
    assert stored[0]["raw_json"]["temperature"]["gpu_temp"] == "15 C"
    assert spool_files(tmp_path) == []


def test_raw_snapshot_is_kept_every_raw_every_sec(db, tmp_path):
    env = base_env(tmp_path, db.env)
    for _ in range(3):
        assert run_script("collect_once.py", env=env, tmp_path=tmp_path).returncode == 0
    kept = rows(db, "SELECT count(*) AS n, count(raw_json) AS raw FROM telemetry.gpu_telemetry")
    assert kept == [{"n": 6, "raw": 2}]  # one snapshot per GPU in the first 600 s

    env["RAW_EVERY_SEC"] = "0"
    assert run_script("collect_once.py", env=env, tmp_path=tmp_path).returncode == 0
    kept = rows(db, "SELECT count(*) AS n, count(raw_json) AS raw FROM telemetry.gpu_telemetry")
    assert kept == [{"n": 8, "raw": 4}]


@pytest.mark.parametrize(("memo", "stored"), [
    ("fan=25%'); DROP TABLE telemetry.gpu_telemetry; -- \"quoted\" \\ back", None),
    ("nul\u0000inside", "nul\ufffdinside"),
])
def test_memo_with_quotes_and_sql_is_just_text(db, tmp_path, memo, stored):
    write_status(tmp_path, tag="bench", memo=memo)
    env = base_env(tmp_path, db.env, fixture="tesla-t4-v11.xml")
    result = run_script("collect_once.py", env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["status_memo"] for r in rows(db)] == [stored or memo]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"memo": "no tag"}',
                                     '{"tag": 5}', "x" * 70000])
def test_broken_status_gives_nulls_and_one_warning(db, tmp_path, content):
    (tmp_path / "status.json").write_text(content)
    env = base_env(tmp_path, db.env, fixture="tesla-t4-v11.xml")
    result = run_script("collect_once.py", env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "status" in warnings[0]
    assert [(r["status_tag"], r["status_memo"]) for r in rows(db)] == [(None, None)]


def test_database_down_spools_one_file_per_sample_then_flush_delivers(db, tmp_path):
    write_status(tmp_path, tag="idle", memo="baseline")
    down = base_env(tmp_path, None)
    for _ in range(3):
        result = run_script("collect_once.py", env=down, tmp_path=tmp_path)
        assert result.returncode == 75, result.stderr
        assert "sample spooled to" in result.stderr and "Traceback" not in result.stderr
    files = spool_files(tmp_path)
    assert len(files) == 3
    body = json.loads(files[0].read_text())
    assert body["_spool_reason"].startswith("database unreachable")
    assert body["status_tag"] == "idle" and len(body["gpus"]) == 2
    assert set(body["gpus"][0]) == {*GPU_COLUMNS, "raw_json"}
    assert not list((tmp_path / "spool").glob(".tmp-*"))

    up = base_env(tmp_path, db.env)
    flushed = run_script("flush_spool.py", env=up, tmp_path=tmp_path)
    assert flushed.returncode == 0, flushed.stderr
    assert "flushed 3 samples (6 rows stored, 0 already there)" in flushed.stdout
    assert spool_files(tmp_path) == []
    counts = rows(db, "SELECT count(*) AS n, count(DISTINCT (ts, host, gpu_uuid)) AS keys,"
                      " count(*) FILTER (WHERE status_memo = 'baseline') AS tagged"
                      " FROM telemetry.gpu_telemetry")
    assert counts == [{"n": 6, "keys": 6, "tagged": 6}]
    events = rows(db, "SELECT kind, data FROM telemetry.collector_events")
    assert [(e["kind"], e["data"]["samples"]) for e in events] == [("spool_flushed", 3)]

    again = run_script("flush_spool.py", env=up, tmp_path=tmp_path)
    assert again.returncode == 0 and "spool is empty" in again.stdout
    assert rows(db, "SELECT count(*) AS n FROM telemetry.gpu_telemetry") == [{"n": 6}]


def test_lost_gpu_exits_69_with_one_line_and_an_event(db, tmp_path):
    env = base_env(tmp_path, db.env, mode="gpu_lost")
    result = run_script("collect_once.py", env=env, tmp_path=tmp_path)
    assert result.returncode == 69
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert len(errors) == 1 and GPU_LOST in errors[0] and "exit 15" in errors[0]
    events = rows(db, "SELECT kind, detail, data FROM telemetry.collector_events")
    assert [(e["kind"], e["detail"], e["data"]) for e in events] == [
        ("source_failed", GPU_LOST, {"failure": "gpu_lost", "exit_code": 15,
                                      "source": "nvidia-smi"})]
    assert rows(db, "SELECT count(*) AS n FROM telemetry.gpu_telemetry") == [{"n": 0}]


def test_source_failure_while_database_down_spools_the_event(db, tmp_path):
    env = base_env(tmp_path, None, mode="driver_mismatch")
    result = run_script("collect_once.py", env=env, tmp_path=tmp_path)
    assert result.returncode == 69
    assert "Driver/library version mismatch" in result.stderr and "event spooled" in result.stderr
    (path,) = spool_files(tmp_path)
    assert json.loads(path.read_text())["events"][0]["data"]["exit_code"] == 18

    flushed = run_script("flush_spool.py", env=base_env(tmp_path, db.env), tmp_path=tmp_path)
    assert flushed.returncode == 0, flushed.stderr
    events = rows(db, "SELECT kind, detail FROM telemetry.collector_events ORDER BY kind")
    assert [e["kind"] for e in events] == ["source_failed", "spool_flushed"]
    assert events[0]["detail"].startswith("Failed to initialize NVML: Driver/library version")


@pytest.mark.parametrize(("mode", "kind"), [
    ("no_devices", "no_devices"), ("no_driver", "driver_unreachable"),
    ("unknown_error", "device_handle"), ("empty", "empty_output"),
    ("truncated", "malformed_xml"), ("garbage", "malformed_xml"), ("hang", "timeout"),
])
def test_every_source_failure_is_exit_69_and_recorded(db, tmp_path, mode, kind):
    env = base_env(tmp_path, db.env, mode=mode, NVIDIA_SMI_TIMEOUT_SEC="0.5")
    result = run_script("collect_once.py", env=env, tmp_path=tmp_path, timeout=30)
    assert result.returncode == 69, result.stderr
    assert f"({kind}" in result.stderr and "Traceback" not in result.stderr
    events = rows(db, "SELECT data->>'failure' AS failure FROM telemetry.collector_events")
    assert events == [{"failure": kind}]


def test_dry_run_prints_the_sample_and_touches_nothing(tmp_path):
    write_status(tmp_path, tag="prod", memo="inference")
    env = base_env(tmp_path, None, fixture="rtx-3080-v13.xml")  # database down: not needed
    result = run_script("collect_once.py", "--dry-run", env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    sample = json.loads(result.stdout)
    assert result.stdout.count("\n") == 1
    assert set(sample) == {"ts", "host", "status_tag", "status_memo", "run_id", "gpus"}
    assert sample["ts"].endswith("+00:00") and sample["status_tag"] == "prod"
    (gpu,) = sample["gpus"]
    assert (gpu["gpu_name"], gpu["temp_c"], gpu["power_draw_w"], gpu["pstate"],
            gpu["clocks_mem_mhz"], gpu["raw_json"]) == (
        "NVIDIA GeForce RTX 3080", 27, 142.33, "P2", 9251, None)
    assert not (tmp_path / "spool").exists()


def test_configuration_errors_exit_78_with_one_line(tmp_path):
    env = base_env(tmp_path, None, SAMPLE_INTERVAL_SEC="often")
    result = run_script("collect_once.py", "--dry-run", env=env, tmp_path=tmp_path)
    assert result.returncode == 78
    assert result.stderr.strip().splitlines() == [
        "collect_once.py: SAMPLE_INTERVAL_SEC must be a number of seconds or units, got 'often'"]

    missing = run_script("collect_once.py", "--env", str(tmp_path / "nope.env"), env=env,
                         tmp_path=tmp_path)
    assert missing.returncode == 78 and "env file not found" in missing.stderr


def test_env_file_is_read_and_the_environment_wins(db, tmp_path):
    env = base_env(tmp_path, db.env)
    (tmp_path / "site.env").write_text(
        "PGDATABASE=wrong_database\nNVIDIA_SMI_TIMEOUT_SEC=0.5\nRAW_EVERY_SEC=0\n")
    result = run_script("collect_once.py", "--env", str(tmp_path / "site.env"), env=env,
                        tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr  # PGDATABASE from the environment wins
    assert rows(db, "SELECT count(raw_json) AS raw FROM telemetry.gpu_telemetry") == [{"raw": 2}]


def test_usage_errors_exit_2_and_help_exits_0(tmp_path):
    env = base_env(tmp_path, None)
    assert run_script("collect_once.py", "--bogus", env=env, tmp_path=tmp_path).returncode == 2
    shown = run_script("collect_once.py", "--help", env=env, tmp_path=tmp_path)
    assert shown.returncode == 0 and "--dry-run" in shown.stdout and "75" in shown.stdout


# --- a database that answers but cannot take the sample: a named error, its exit code, the
# sample spooled with the reason -------------------------------------------------------------

def one_line_and_the_spooled_reason(result, tmp_path) -> tuple[str, str]:
    """The command's single stderr line, and the `_spool_reason` of its single spool file."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "sample spooled to" in lines[0]
    (path,) = spool_files(tmp_path)
    body = json.loads(path.read_text())
    assert len(body["gpus"]) == 2
    return lines[0], body["_spool_reason"]


def test_a_database_never_initialised_exits_78_naming_init_db(uninitialised_db, tmp_path):  # noqa: F811
    write_status(tmp_path, tag="idle", memo="baseline")
    result = run_script("collect_once.py", env=base_env(tmp_path, uninitialised_db),
                        tmp_path=tmp_path)
    assert result.returncode == 78, result.stderr
    line, reason = one_line_and_the_spooled_reason(result, tmp_path)
    assert line.startswith("database schema missing") and "run bin/init_db.sh" in line
    assert reason.startswith("database schema missing") and "bin/init_db.sh" in reason


def test_the_reader_role_exits_77_naming_the_role(reader_env, tmp_path):  # noqa: F811
    write_status(tmp_path, tag="idle", memo="baseline")
    result = run_script("collect_once.py", env=base_env(tmp_path, reader_env),
                        tmp_path=tmp_path)
    assert result.returncode == 77, result.stderr
    line, reason = one_line_and_the_spooled_reason(result, tmp_path)
    role = reader_env["PGUSER"]
    assert line.startswith("database permission denied") and f'role "{role}"' in line
    assert "--writer-role" in line and reason.startswith("database permission denied")


def test_a_wrong_password_exits_78_naming_pgpassword(wrong_password_env, tmp_path):  # noqa: F811
    write_status(tmp_path, tag="idle", memo="baseline")
    result = run_script("collect_once.py", env=base_env(tmp_path, wrong_password_env),
                        tmp_path=tmp_path)
    assert result.returncode == 78, result.stderr
    line, reason = one_line_and_the_spooled_reason(result, tmp_path)
    assert line.startswith("database login refused") and "password authentication" in line
    assert "PGUSER" in line and "PGPASSWORD" in line
    assert WRONG_PASSWORD not in result.stderr + reason


def test_a_pgport_that_is_not_a_port_exits_78(db, tmp_path):
    write_status(tmp_path, tag="idle", memo="baseline")
    env = base_env(tmp_path, {**db.env, "PGPORT": "notanumber"})
    result = run_script("collect_once.py", env=env, tmp_path=tmp_path)
    assert result.returncode == 78, result.stderr
    line, reason = one_line_and_the_spooled_reason(result, tmp_path)
    assert line.startswith("database login refused") and "notanumber" in line
    assert "PGPORT" in line and reason.startswith("database login refused")


def test_a_refused_value_exits_65_and_the_sample_waits_for_the_flush(refusing_db, tmp_path):  # noqa: F811
    write_status(tmp_path, tag="bench", memo=REFUSED_MEMO)
    env = base_env(tmp_path, refusing_db.env)
    result = run_script("collect_once.py", env=env, tmp_path=tmp_path)
    assert result.returncode == 65, result.stderr
    line, reason = one_line_and_the_spooled_reason(result, tmp_path)
    assert line.startswith("database rejected a value") and "test_refused_memo" in line
    assert reason.startswith("database rejected a value")
    assert rows(refusing_db, "SELECT count(*) AS n FROM telemetry.gpu_telemetry") == [{"n": 0}]

    flushed = run_script("flush_spool.py", env=env, tmp_path=tmp_path)
    assert flushed.returncode == 65, flushed.stderr
    assert spool_files(tmp_path) == []
    (reason_file,) = (tmp_path / "spool" / "bad").glob("*.reason")
    assert reason_file.read_text().startswith("database rejected a value")
