"""The narrow, partitioned storage under the view telemetry.gpu_telemetry (sql/006): the move
from the wide table of versions 1 to 5, resetting, partitions, retention, identities as they
were at the time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from gpu_telemetry.db import migrate
from gpu_telemetry.db.store import insert_samples, prune
from gpu_telemetry.records import GpuReading, Sample, Status
from tests.conftest import conninfo
from tests.helpers import init_db, init_db_killed

START = datetime(2026, 1, 30, 23, 0, tzinfo=UTC)  # across the end of a month


def at_version_5(db) -> None:
    """The schema as sql/001 to 005 left it: the wide table."""
    with db.connect() as conn:
        migrate.ensure_bookkeeping(conn)
        for path in migrate.migration_files():
            if path.name < "006":
                migrate.apply_migration(conn, path)


# Rows of two hosts and three GPUs over two months, statuses with NULLs and memos, a raw
# snapshot on every 50th row, NULL readings, one GPU whose bus id and driver change half-way.
_WIDE_ROWS = """
INSERT INTO telemetry.gpu_telemetry (ts, host, gpu_uuid, pci_bus_id, gpu_name, driver_version,
    gpu_index, temp_c, power_draw_w, fan_pct, pstate, throttle_hw_slowdown, status_tag,
    status_memo, run_id, raw_json)
SELECT timestamptz '2026-01-30 23:00:00+00' + i * interval '5 seconds',
       CASE WHEN g = 2 THEN 'other-host' ELSE 'x1ai' END,
       'GPU-' || g,
       CASE WHEN g = 0 AND i > %(half)s THEN '00000000:05:00.0'
            ELSE '00000000:0' || g || ':00.0' END,
       'Tesla P40',
       CASE WHEN g = 0 AND i > %(half)s THEN '560.35' ELSE '550.54' END,
       g, 30 + (i %% 50), CASE WHEN i %% 7 = 0 THEN NULL ELSE 50.5 + g END, NULL,
       'P' || (i %% 3), i %% 11 = 0,
       CASE WHEN i %% 100 < 40 THEN 'idle' WHEN i %% 100 < 80 THEN 'bench' ELSE NULL END,
       CASE WHEN i %% 100 >= 40 AND i %% 100 < 80 THEN 'gpu-burn fan=25%%' END,
       CASE WHEN i %% 100 >= 40 AND i %% 100 < 80 THEN 'gpuburn-' || (i / 100) END,
       CASE WHEN i %% 50 = 0 THEN jsonb_build_object('uuid', 'GPU-' || g, 'i', i) END
FROM generate_series(0, %(n)s - 1) AS i, generate_series(0, 2) AS g
"""


def fill_wide(db, samples: int) -> None:
    with db.connect() as conn:
        conn.execute(_WIDE_ROWS, {"n": samples, "half": samples // 2})


def view_rows(conn) -> list[str]:
    return [row for (row,) in conn.execute(
        "SELECT t::text FROM telemetry.gpu_telemetry AS t ORDER BY ts, host, gpu_uuid")]


def rollup_rows(conn) -> list[str]:
    return [row for (row,) in conn.execute(
        "SELECT r::text FROM telemetry.gpu_telemetry_1m AS r"
        " ORDER BY bucket, host, gpu_uuid, status_tag, status_memo, run_id")]


def test_the_move_keeps_every_row_and_the_rollup(empty_db):
    at_version_5(empty_db)
    fill_wide(empty_db, 2000)
    with empty_db.connect() as conn:
        before, rollup_before = view_rows(conn), rollup_rows(conn)

    result = init_db(empty_db, "--batch-rows", "700")

    assert result.returncode == 0, result.stderr
    assert "moved 6,000 rows into the narrow tables" in result.stdout
    # Not a terminal: one line per batch, with rows, rate and time left.
    progress = [line for line in result.stderr.splitlines() if line.startswith("moving rows")]
    assert len(progress) == 9 and progress[-1].startswith(
        "moving rows into the narrow tables: 6,000/6,000 rows,") and "s left" in progress[-1]
    with empty_db.connect() as conn:
        assert len(before) == 6000 and view_rows(conn) == before
        assert rollup_rows(conn) == rollup_before
        assert conn.execute("SELECT to_regclass('telemetry.gpu_telemetry_wide')").fetchone() == (
            None,)
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid ="
                            " 'telemetry.gpu_telemetry'::regclass").fetchone()
        assert kind == ("v",)
        # Run again: nothing left to move, nothing changed.
    again = init_db(empty_db)
    assert again.returncode == 0 and "moved" not in again.stdout
    with empty_db.connect() as conn:
        assert view_rows(conn) == before


def test_an_interrupted_move_goes_on_where_it_stopped(empty_db):
    at_version_5(empty_db)
    fill_wide(empty_db, 4000)
    with empty_db.connect() as conn:
        before = view_rows(conn)
    init_db_killed(empty_db, "--batch-rows", "200",
                   when=lambda line: line.startswith("moving rows") and "/12,000 rows" in line)
    with empty_db.connect() as conn:
        left = conn.execute("SELECT count(*) FROM telemetry.gpu_telemetry_wide").fetchone()[0]
        moved = conn.execute("SELECT count(*) FROM telemetry.gpu_samples").fetchone()[0]
    assert 0 < left < 12000 and moved + left == 12000

    result = init_db(empty_db, "--batch-rows", "5000")

    assert result.returncode == 0, result.stderr
    assert f"moved {left:,} rows" in result.stdout
    with empty_db.connect() as conn:
        assert view_rows(conn) == before


def test_a_gpu_that_moves_slot_or_gets_a_new_driver_keeps_its_history(empty_db):
    at_version_5(empty_db)
    fill_wide(empty_db, 100)
    assert init_db(empty_db).returncode == 0
    with empty_db.connect() as conn:
        rows = conn.execute(
            "SELECT pci_bus_id, driver_version, min(ts), max(ts) FROM telemetry.gpu_telemetry"
            " WHERE gpu_uuid = 'GPU-0' GROUP BY 1, 2 ORDER BY 3").fetchall()
        inventory = conn.execute(
            "SELECT pci_bus_id, driver_version, first_seen, last_seen FROM telemetry.gpus"
            " WHERE gpu_uuid = 'GPU-0' ORDER BY first_seen").fetchall()
    assert [(bus, driver) for bus, driver, _, _ in rows] == [
        ("00000000:00:00.0", "550.54"), ("00000000:05:00.0", "560.35")]
    assert rows[0][3] < rows[1][2]
    assert inventory == rows


def reading(**fields) -> GpuReading:
    return GpuReading(**{"gpu_uuid": "GPU-a", "pci_bus_id": "00000000:01:00.0",
                         "gpu_name": "Tesla P40", "gpu_index": 0, "temp_c": 50,
                         "driver_version": "550.54", **fields})


def test_a_sample_in_a_month_without_a_partition_gets_one(db):
    old = datetime(2025, 3, 15, tzinfo=UTC)
    with db.connect() as conn:
        assert conn.execute("SELECT to_regclass('telemetry.gpu_samples_202503')").fetchone() == (
            None,)
        assert insert_samples(conn, [Sample(old, "h", Status("idle"), [reading()])], 600) == (
            1, 1)
        assert conn.execute("SELECT ts, temp_c FROM telemetry.gpu_telemetry").fetchall() == [
            (old, 50)]


def test_the_coming_month_has_its_partitions_after_init_db(db):
    with db.connect() as conn:
        found = {name for (name,) in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'telemetry.gpu_samples'::regclass")}
        this_month, next_month = conn.execute(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMM'),"
            " to_char((now() AT TIME ZONE 'UTC') + interval '1 month', 'YYYYMM')").fetchone()
    assert {f"gpu_samples_{this_month}", f"gpu_samples_{next_month}"} <= found


def test_retention_drops_old_partitions_and_keeps_the_rollup(db):
    now = datetime.now(UTC).replace(microsecond=0)
    samples = [Sample(now - timedelta(days=days), "h", Status("idle"),
                      [reading(raw_json={"d": days} if days % 10 == 0 else None)])
               for days in range(0, 90)]
    with db.connect() as conn:
        insert_samples(conn, samples, raw_every_sec=0)
        rollup = conn.execute("SELECT count(*) FROM telemetry.gpu_telemetry_1m").fetchone()[0]
        partitions = conn.execute("SELECT count(*) FROM pg_inherits"
                                  " WHERE inhparent = 'telemetry.gpu_samples'::regclass"
                                  ).fetchone()[0]

        rows, _events = prune(conn, 30)

        kept = conn.execute("SELECT min(ts), count(*) FROM telemetry.gpu_telemetry").fetchone()
        raw = conn.execute("SELECT count(*) FROM telemetry.gpu_raw").fetchone()[0]
        after = conn.execute("SELECT count(*) FROM pg_inherits"
                             " WHERE inhparent = 'telemetry.gpu_samples'::regclass"
                             ).fetchone()[0]
        assert conn.execute("SELECT count(*) FROM telemetry.gpu_telemetry_1m").fetchone() == (
            rollup,)
    assert rows == 60 and kept[1] == 30 and kept[0] > now - timedelta(days=30)
    assert raw == 3  # days 0, 10 and 20
    assert after < partitions


def test_reset_empties_samples_raw_and_rollup_after_yes(db):
    with db.connect() as conn:
        insert_samples(conn, [Sample(START, "h", Status("idle"), [reading(raw_json={})])], 0)
        conn.execute("INSERT INTO telemetry.collector_events (ts, host, kind)"
                     " VALUES (now(), 'h', 'outage_start')")

    refused = init_db(db, "--reset")  # stdin is not a terminal, no --yes
    assert refused.returncode == 2
    assert "add --yes" in refused.stderr and "telemetry.gpu_samples (1 rows)" in refused.stderr

    result = init_db(db, "--reset", "--yes")

    assert result.returncode == 0, result.stderr
    with db.connect() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM telemetry.gpu_telemetry),"
            " (SELECT count(*) FROM telemetry.gpu_raw),"
            " (SELECT count(*) FROM telemetry.gpu_telemetry_1m),"
            " (SELECT count(*) FROM telemetry.collector_events),"
            " (SELECT count(*) FROM telemetry.gpus)").fetchone()
    assert counts == (0, 0, 0, 1, 1)
    assert init_db(db, "--reset", "--events", "--yes").returncode == 0
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM telemetry.collector_events").fetchone() == (0,)


def test_events_and_yes_need_reset(db):
    result = init_db(db, "--yes")
    assert result.returncode == 2 and "--events and --yes go with --reset" in result.stderr


def test_truncate_of_the_view_is_refused_with_the_reason(db):
    with db.connect() as conn, pytest.raises(psycopg.errors.WrongObjectType):
        conn.execute("TRUNCATE telemetry.gpu_telemetry")


def test_a_writer_of_the_wide_table_can_write_after_the_move(empty_db):
    at_version_5(empty_db)
    role = f"w_{int(time.time() * 1000) % 10**9}"
    with empty_db.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA telemetry TO {role}")
        conn.execute(f"GRANT INSERT ON telemetry.gpu_telemetry TO {role}")
    fill_wide(empty_db, 10)
    try:
        assert init_db(empty_db).returncode == 0
        with psycopg.connect(**conninfo(empty_db.env, user=role),
                             autocommit=True) as conn:
            assert insert_samples(conn, [Sample(START, "h", Status("idle"), [reading()])],
                                  600) == (1, 1)
    finally:
        with empty_db.connect() as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_a_new_bus_id_or_driver_is_a_new_identity_and_old_rows_keep_theirs(db):
    before = Sample(START, "h", Status("idle"), [reading()])
    moved = Sample(START + timedelta(seconds=5), "h", Status("idle"),
                   [reading(pci_bus_id="00000000:05:00.0")])
    upgraded = Sample(START + timedelta(seconds=10), "h", Status("idle"),
                      [reading(pci_bus_id="00000000:05:00.0", driver_version="560.35")])
    with db.connect() as conn:
        assert insert_samples(conn, [before, moved, upgraded], 600) == (3, 3)
        # The same time and GPU again under another identity: still one row per key.
        again = Sample(START, "h", Status("idle"), [reading(driver_version="999.0")])
        assert insert_samples(conn, [again], 600) == (0, 1)
        rows = conn.execute("SELECT ts, pci_bus_id, driver_version FROM telemetry.gpu_telemetry"
                            " ORDER BY ts").fetchall()
        identities = conn.execute("SELECT count(*) FROM telemetry.gpus").fetchone()[0]
    assert [(bus, driver) for _, bus, driver in rows] == [
        ("00000000:01:00.0", "550.54"), ("00000000:05:00.0", "550.54"),
        ("00000000:05:00.0", "560.35")]
    assert identities == 4
