"""bin/init_db.sh --upgrade on a database of the original scripts: their table, filled with real
nvidia-smi documents as they stored them, converted into rows equal to what the collector
gives for the same documents."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from psycopg.types.json import Jsonb

from gpu_telemetry import schema
from gpu_telemetry.collector.parser import parse_document
from gpu_telemetry.db.store import insert_samples
from gpu_telemetry.records import Sample, Status
from tests.conftest import database_copy
from tests.helpers import FIXTURES, base_env, init_db, init_db_killed, run_script

ORIGINAL_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS telemetry;
CREATE TABLE telemetry.gpu_telemetry (
    ts timestamptz NOT NULL, host text NOT NULL, gpu_uuid text NOT NULL,
    pci_bus_id text NOT NULL, gpu_name text, temp_c int, status_tag text, status_memo text,
    raw_json jsonb NOT NULL, PRIMARY KEY (ts, host, gpu_uuid));
CREATE INDEX gpu_telemetry_host_ts_idx ON telemetry.gpu_telemetry (host, ts DESC);
CREATE INDEX gpu_telemetry_ts_idx ON telemetry.gpu_telemetry (ts DESC);
CREATE INDEX gpu_telemetry_status_ts_idx ON telemetry.gpu_telemetry (status_tag, ts DESC);
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
"""

# Single- and dual-GPU documents of three DTD versions, in turn, each for a stretch of samples.
DOCUMENTS = ("dual-2080-v13.xml", "tesla-p4-v11.xml", "gtx-1070-ti-v10.xml",
             "a100-sxm4-v12.xml")
STATUSES = (("idle", "pre gpu-burn idle (baseline) fan=25%"),
            ("bench", "gpu-burn 300s fan=25%"), ("prod", ""), (None, None))
SAMPLES_EACH = 40
STEP = timedelta(seconds=5)
START = datetime(2025, 11, 30, 23, 50, tzinfo=UTC)  # across the end of a month
HOST = "x1ai"
BROKEN = "<?xml version=\"1.0\" ?><nvidia_smi_log><gpu id=\"00000000:01:00.0\"><uu"


def fill_original(db) -> int:
    """The original table as the original scripts filled it; the number of rows."""
    rows = []
    ts = START
    for number, name in enumerate(DOCUMENTS):
        document = (FIXTURES / name).read_text()
        gpus = parse_document(document).gpus
        for i in range(SAMPLES_EACH):
            tag, memo = STATUSES[(number + i // 10) % len(STATUSES)]
            for gpu in gpus:
                rows.append((ts, HOST, gpu.gpu_uuid, gpu.pci_bus_id, gpu.gpu_name, gpu.temp_c,
                             tag, memo, Jsonb({"nvidia_smi_q_x": document})))
            ts += STEP
    # A document cut short: the row keeps what the original typed.
    rows.append((ts, HOST, "GPU-broken", "00000000:01:00.0", "Tesla P40", 55, "idle", "x",
                 Jsonb({"nvidia_smi_q_x": BROKEN})))
    with db.connect() as conn:
        conn.execute(ORIGINAL_SCHEMA)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO telemetry.gpu_telemetry VALUES"
                            " (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
    return len(rows)


def dry_run_gpus(tmp_path, name: str) -> dict[str, dict]:
    """What collect_once.py --dry-run gives for a document: gpu_uuid -> its entry."""
    env = base_env(tmp_path, None, fixture=name)
    result = run_script("collect_once.py", "--dry-run", env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    return {gpu["gpu_uuid"]: gpu for gpu in json.loads(result.stdout)["gpus"]}


def view_rows(conn) -> list[str]:
    return [row for (row,) in conn.execute(
        "SELECT t::text FROM telemetry.gpu_telemetry AS t ORDER BY ts, host, gpu_uuid")]


def original_digest(conn) -> tuple:
    return conn.execute("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY ts, gpu_uuid))"
                        " FROM telemetry.gpu_telemetry_original AS t").fetchone()


def same(expected, found) -> bool:
    if isinstance(expected, float) and found is not None:
        return math.isclose(expected, found, rel_tol=1e-6)
    return expected == found


@pytest.fixture
def original_db(empty_db):
    rows = fill_original(empty_db)
    return empty_db, rows


def test_init_db_stops_on_the_original_table_before_changing_anything(original_db):
    db, rows = original_db
    with db.connect() as conn:
        before = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n"
                              " ON n.oid = c.relnamespace WHERE n.nspname = 'telemetry'"
                              ).fetchone()
    result = init_db(db)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"({rows:,} rows, 2025-11-30 23:50 to " in lines[0]
    assert "nothing was changed" in lines[0] and "--upgrade" in lines[0]
    with db.connect() as conn:
        after = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n"
                             " ON n.oid = c.relnamespace WHERE n.nspname = 'telemetry'"
                             ).fetchone()
    assert before == after


def test_the_upgrade_fills_every_column_as_the_collector_would(original_db, tmp_path):
    db, rows = original_db
    with db.connect() as conn:
        conn.execute("ALTER TABLE telemetry.gpu_telemetry RENAME TO gpu_telemetry_original")
        digest = original_digest(conn)
        conn.execute("ALTER TABLE telemetry.gpu_telemetry_original RENAME TO gpu_telemetry")

    result = init_db(db, "--upgrade", "--batch-rows", "50")

    assert result.returncode == 0, result.stderr
    assert f"upgraded: {rows:,} original rows converted (1 whose" in result.stdout
    progress = [line for line in result.stderr.splitlines()
                if line.startswith("converting the original rows")]
    assert progress and progress[-1].startswith(f"converting the original rows: {rows:,}/")
    expected = {}
    for name in DOCUMENTS:
        expected.update(dry_run_gpus(tmp_path, name))
    columns = [c for c in schema.GPU_COLUMNS]
    with db.connect() as conn:
        assert original_digest(conn) == digest  # left as it was
        found = conn.execute(
            f"SELECT {', '.join(columns)}, ts, host, status_tag, status_memo, raw_json IS NOT NULL"
            " FROM telemetry.gpu_telemetry ORDER BY ts, gpu_uuid").fetchall()
        original = conn.execute(
            "SELECT ts, gpu_uuid, status_tag, status_memo FROM telemetry.gpu_telemetry_original"
            " ORDER BY ts, gpu_uuid").fetchall()
        rollup = conn.execute("SELECT sum(samples) FROM telemetry.gpu_telemetry_1m").fetchone()
    assert len(found) == rows and rollup == (rows,)
    raw_kept = {}
    for row, (ts, uuid, tag, memo) in zip(found, original, strict=True):
        values = dict(zip(columns, row[:len(columns)], strict=True))
        row_ts, host, row_tag, row_memo, has_raw = row[len(columns):]
        assert (row_ts, values["gpu_uuid"], row_tag, row_memo) == (ts, uuid, tag, memo)
        assert host == HOST
        raw_kept[uuid] = raw_kept.get(uuid, 0) + has_raw
        if uuid == "GPU-broken":
            assert (values["temp_c"], values["gpu_name"], values["pci_bus_id"]) == (
                55, "Tesla P40", "00000000:01:00.0")
            assert values["power_draw_w"] is None
            continue
        wrong = {c: (expected[uuid][c], values[c]) for c in columns
                 if not same(expected[uuid][c], values[c])}
        assert wrong == {}, (uuid, wrong)
    # RAW_EVERY_SEC (600 s by default) over 40 samples 5 s apart: one snapshot per GPU.
    assert raw_kept.pop("GPU-broken") == 0
    assert set(raw_kept.values()) == {1}


def test_after_the_upgrade_the_collector_stores_and_a_second_upgrade_changes_nothing(
        original_db):
    db, rows = original_db
    assert init_db(db, "--upgrade").returncode == 0
    with db.connect() as conn:
        before = view_rows(conn)
    again = init_db(db, "--upgrade")
    assert again.returncode == 0, again.stderr
    assert f"upgraded: {rows:,} original rows converted" in again.stdout
    assert "converting" not in again.stderr
    with db.connect() as conn:
        assert view_rows(conn) == before
        gpu = parse_document((FIXTURES / "tesla-p4-v11.xml").read_bytes()).gpus[0]
        now = datetime.now(UTC)
        assert insert_samples(conn, [Sample(now, HOST, Status("idle"), [gpu])], 600) == (1, 1)


def test_a_kill_half_way_and_a_rerun_give_the_same_end_state(original_db, pg_server):
    db, rows = original_db
    with database_copy(pg_server, db.name, "reference") as reference:
        assert init_db(reference, "--upgrade", "--batch-rows", "30").returncode == 0
        with reference.connect() as conn:
            expected = view_rows(conn)
            expected_rollup = conn.execute(
                "SELECT r::text FROM telemetry.gpu_telemetry_1m AS r ORDER BY 1").fetchall()

    init_db_killed(db, "--upgrade", "--batch-rows", "30",
                   when=lambda line: line.startswith("converting the original rows: 60/"))
    with db.connect() as conn:
        partial = conn.execute("SELECT count(*) FROM telemetry.gpu_telemetry").fetchone()[0]
    assert 0 < partial < rows

    result = init_db(db, "--upgrade", "--batch-rows", "30")

    assert result.returncode == 0, result.stderr
    with db.connect() as conn:
        assert view_rows(conn) == expected
        assert conn.execute("SELECT r::text FROM telemetry.gpu_telemetry_1m AS r ORDER BY 1"
                            ).fetchall() == expected_rollup


def test_upgrade_on_a_database_without_the_original_says_so(db):
    result = init_db(db, "--upgrade")
    assert result.returncode == 0, result.stderr
    assert "nothing to upgrade" in result.stdout
