"""bin/flush_spool.py end to end: the real script, spool files on disk, a real PostgreSQL."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from gpu_telemetry.collector.parser import GPU_COLUMNS, element_to_json, parse_document
from gpu_telemetry.collector.spool import spool_lock, write_spool
from gpu_telemetry.records import Sample, Status
from tests.database_errors import (  # noqa: F401 - fixtures
    REFUSED_MEMO,
    WRONG_PASSWORD,
    reader_env,
    refusing_db,
    uninitialised_db,
    wrong_password_env,
)
from tests.helpers import FIXTURES, base_env, run_script, spool_files

T4_XML = (FIXTURES / "tesla-t4-v11.xml").read_text()
T4_UUID = "GPU-d37e67a5-91dd-3774-a5cb-99096249601a"
LEGACY_TS = "2026-01-04T00:00:05.123456+09:00"
BASE_TS = datetime(2026, 1, 4, tzinfo=UTC)


def rows(db, sql="SELECT * FROM telemetry.gpu_telemetry ORDER BY ts, gpu_index"):
    with db.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(sql).fetchall()


def row_count(db) -> int:
    return rows(db, "SELECT count(*) AS n FROM telemetry.gpu_telemetry")[0]["n"]


def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def sample(seconds: float = 0, *, host: str = "x1ai", fixture: str = "dual-2080-v13.xml",
           with_raw: bool = False, memo: str = "gpu-burn fan=25%") -> Sample:
    """A sample as collect_once.py takes it, from a real capture (2 GPUs by default)."""
    reading = parse_document((FIXTURES / fixture).read_bytes())
    for gpu in reading.gpus:
        if with_raw:
            gpu.raw_json = element_to_json(reading.elements[gpu.gpu_uuid])
    return Sample(BASE_TS + timedelta(seconds=seconds), host,
                  Status("bench", memo, "gpuburn-20260104-000000"), reading.gpus)


def sample_json(seconds: float = 0, **kwargs) -> dict:
    """The same in the sample format, as a spool file holds it."""
    return sample(seconds, **kwargs).to_json()


def spool_samples(tmp_path: Path, count: int, **kwargs) -> list[Path]:
    return [write_spool(spool(tmp_path), sample(i, **kwargs), [], "database unreachable: test")
            for i in range(count)]


def legacy(xml, gpus: list[dict], **fields) -> dict:
    """A spool file as the original scripts wrote it: four `--query-gpu` keys per GPU and the
    whole `nvidia-smi -q -x` output as one string under raw_json."""
    return {"ts": LEGACY_TS, "host": "x1ai", "status_tag": "bench", "status_memo": "gpu-burn",
            "gpus": gpus, "raw_json": {"nvidia_smi_q_x": xml},
            "_spool_reason": "DB insert failed: connection refused", **fields}


def write_raw(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = spool(tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def flush(tmp_path: Path, db, *args: str, timeout: float = 60):
    env = base_env(tmp_path, db.env if db is not None else None)
    return run_script("flush_spool.py", *args, env=env, tmp_path=tmp_path, timeout=timeout)


def bad_files(tmp_path: Path) -> dict[str, str]:
    """Quarantined file name -> the text of its .reason file."""
    bad = spool(tmp_path) / "bad"
    if not bad.exists():
        return {}
    return {path.name: (bad / f"{path.name}.reason").read_text()
            for path in bad.iterdir() if not path.name.endswith(".reason")}


# --- files written by the original scripts ----------------------------------------------------

def test_original_file_is_stored_with_every_column_from_its_xml(db, tmp_path):
    four_keys = [{"gpu_name": "Tesla T4", "pci_bus_id": "00000000:00:1E.0", "temp_c": 99,
                  "power_draw_w": 1.0}]
    write_raw(tmp_path, "20260104000005-x1ai.json", json.dumps(legacy(T4_XML, four_keys)))

    result = flush(tmp_path, db)
    assert result.returncode == 0, result.stderr
    assert "flushed 1 samples (1 rows stored, 0 already there)" in result.stdout
    assert spool_files(tmp_path) == [] and bad_files(tmp_path) == {}

    (row,) = rows(db)
    assert row["ts"] == datetime(2026, 1, 3, 15, 0, 5, 123456, tzinfo=UTC)
    assert (row["host"], row["status_tag"], row["status_memo"], row["run_id"]) == (
        "x1ai", "bench", "gpu-burn", None)
    # The XML wins over the four keys: temp_c is the document's 40, not the 99 beside it.
    assert (row["gpu_uuid"], row["gpu_name"], row["pci_bus_id"], row["gpu_index"]) == (
        T4_UUID, "Tesla T4", "00000000:00:1E.0", 0)
    assert (row["temp_c"], row["clocks_sm_mhz"], row["power_limit_w"], row["pstate"],
            row["fan_pct"], row["driver_version"]) == (40, 585, 70.0, "P0", None, "515.105.01")
    assert row["power_draw_w"] == pytest.approx(26.78)
    expected = parse_document(T4_XML).gpus[0].as_dict()
    for column in GPU_COLUMNS:
        want = expected[column]
        assert row[column] == (pytest.approx(want) if isinstance(want, float) else want), column
    # raw_json is the GPU's own element as JSON, not the host's XML string.
    assert isinstance(row["raw_json"], dict)
    assert row["raw_json"]["@id"] == "00000000:00:1E.0"
    assert row["raw_json"]["temperature"]["gpu_temp"] == "40 C"
    assert "nvidia_smi_q_x" not in row["raw_json"]


def test_original_file_without_readable_xml_falls_back_to_its_four_keys(db, tmp_path):
    def gpu(temp, **identity):
        return {"gpu_name": "Tesla T4", "pci_bus_id": "00000000:00:1E.0", "temp_c": temp,
                "power_draw_w": 27.5, **identity}

    write_raw(tmp_path, "20260104000005-torn-xml.json", json.dumps(
        legacy(T4_XML[:2000], [gpu(41, uuid=T4_UUID)])))
    write_raw(tmp_path, "20260104000006-no-xml.json", json.dumps(
        legacy(None, [gpu(42, uuid=T4_UUID)], ts="2026-01-04T00:00:06+09:00")))
    write_raw(tmp_path, "20260104000007-no-uuid.json", json.dumps(
        legacy("", [gpu(43)], ts="2026-01-04T00:00:07+09:00")))

    result = flush(tmp_path, db)
    assert result.returncode == 0, result.stderr
    assert "flushed 2 samples (2 rows stored, 0 already there)" in result.stdout
    assert "1 unreadable file(s) moved to spool/bad/" in result.stdout
    stored = rows(db)
    assert [(r["gpu_uuid"], r["gpu_name"], r["pci_bus_id"], r["temp_c"], r["power_draw_w"],
             r["clocks_sm_mhz"], r["raw_json"]) for r in stored] == [
        (T4_UUID, "Tesla T4", "00000000:00:1E.0", 41, 27.5, None, None),
        (T4_UUID, "Tesla T4", "00000000:00:1E.0", 42, 27.5, None, None)]
    assert {r["host"] for r in stored} == {"x1ai"}
    assert spool_files(tmp_path) == []
    assert list(bad_files(tmp_path).items()) == [
        ("20260104000007-no-uuid.json", "a gpus entry has no gpu_uuid\n")]


# --- unreadable files -------------------------------------------------------------------------

def _torn() -> bytes:
    body = json.dumps({**sample_json(99), "_spool_reason": "x"}).encode()
    return body[:len(body) // 2]


def _wrong_type() -> bytes:
    bad = sample_json(99)
    bad["gpus"][1]["temp_c"] = "hot"
    return json.dumps(bad).encode()


@pytest.mark.parametrize(("content", "reason"), [
    pytest.param(b"\x00\x01 this is not json at all \xfe", "not valid JSON", id="garbage"),
    pytest.param(b"", "empty file", id="empty"),
    pytest.param(_torn(), "not valid JSON", id="torn"),
    pytest.param(b'[{"ts": "2026-01-04T00:00:00+00:00"}]', "not a JSON object", id="array"),
    pytest.param(_wrong_type(), "temp_c is str, not a number", id="wrong-type"),
    pytest.param(b'{"ts": "yesterday", "host": "x1ai", "gpus": []}', "not an ISO 8601 time",
                 id="bad-ts"),
    pytest.param(b'{"ts": "2026-01-04T00:00:00+00:00", "host": "x1ai", "gpus": [{}]}',
                 "no gpu_uuid", id="no-uuid"),
])
def test_unreadable_file_is_quarantined_and_the_others_delivered(db, tmp_path, content, reason):
    good = spool_samples(tmp_path, 3)
    write_raw(tmp_path, "20260104000001-bad.json", content)

    result = flush(tmp_path, db)
    assert result.returncode == 0, result.stderr
    assert "flushed 3 samples (6 rows stored, 0 already there)" in result.stdout
    assert "1 unreadable file(s) moved to spool/bad/" in result.stdout
    assert "quarantined 20260104000001-bad.json" in result.stderr
    assert "Traceback" not in result.stderr
    assert row_count(db) == 6
    assert spool_files(tmp_path) == [] and not any(path.exists() for path in good)
    quarantined = bad_files(tmp_path)
    assert list(quarantined) == ["20260104000001-bad.json"]
    assert reason in quarantined["20260104000001-bad.json"]
    assert (spool(tmp_path) / "bad" / "20260104000001-bad.json").read_bytes() == content


def test_every_kind_of_bad_file_in_one_run(db, tmp_path):
    spool_samples(tmp_path, 2)
    write_raw(tmp_path, "1-garbage.json", b"garbage")
    write_raw(tmp_path, "2-empty.json", b"")
    write_raw(tmp_path, "3-torn.json", _torn())
    write_raw(tmp_path, "4-array.json", b"[]")
    write_raw(tmp_path, "5-wrong-type.json", _wrong_type())

    result = flush(tmp_path, db)
    assert result.returncode == 0, result.stderr
    assert "flushed 2 samples (4 rows stored, 0 already there)" in result.stdout
    assert "5 unreadable file(s) moved to spool/bad/" in result.stdout
    assert row_count(db) == 4
    assert spool_files(tmp_path) == []
    assert sorted(bad_files(tmp_path)) == ["1-garbage.json", "2-empty.json", "3-torn.json",
                                           "4-array.json", "5-wrong-type.json"]

    # Quarantined files are never read again; a second flush has nothing to do.
    again = flush(tmp_path, db)
    assert again.returncode == 0 and "spool is empty" in again.stdout
    assert len(bad_files(tmp_path)) == 5


def test_non_utf8_byte_inside_a_string_keeps_the_sample(db, tmp_path):
    """read_spool_file decodes with errors="replace", like the XML parser: a stray byte in a memo
    costs that character (U+FFFD), not the whole sample: never lose a sample to bad input."""
    body = json.dumps({**sample_json(1), "status_memo": "fan=25% MEMO"}).encode()
    write_raw(tmp_path, "20260104000001-latin1.json", body.replace(b"MEMO", b"caf\xe9"))
    spool_samples(tmp_path, 1)

    result = flush(tmp_path, db)
    assert result.returncode == 0, result.stderr
    assert "flushed 2 samples (4 rows stored, 0 already there)" in result.stdout
    memos = rows(db, "SELECT DISTINCT status_memo FROM telemetry.gpu_telemetry ORDER BY 1")
    assert [r["status_memo"] for r in memos] == ["fan=25% caf\ufffd", "gpu-burn fan=25%"]
    assert spool_files(tmp_path) == [] and bad_files(tmp_path) == {}


@pytest.mark.parametrize(("poison", "stored"), [
    pytest.param({"status_memo": "a\u0000b"}, "a\ufffdb", id="nul-in-text"),
    pytest.param({"status_memo": "\ud800"}, "\ufffd", id="lone-surrogate"),
])
def test_text_postgresql_refuses_is_made_storable(db, tmp_path, poison, stored):
    spool_samples(tmp_path, 2)
    write_raw(tmp_path, "20260104000001-poison.json",
              json.dumps({**sample_json(99), **poison}).encode())

    result = flush(tmp_path, db)
    assert result.returncode == 0, result.stderr
    assert row_count(db) == 6
    memos = rows(db, "SELECT status_memo FROM telemetry.gpu_telemetry WHERE status_memo <> "
                     "'gpu-burn fan=25%'")
    assert [r["status_memo"] for r in memos] == [stored, stored]
    assert bad_files(tmp_path) == {}


def test_json_postgresql_refuses_is_made_storable(db, tmp_path):
    raw = '{"k": "x\\u0000", "nan": NaN, "big": 1e400}'
    body = json.dumps({**sample_json(99), "gpus": [{"gpu_uuid": "GPU-1", "raw_json": {}}]})
    write_raw(tmp_path, "20260104000001-poison.json",
              body.replace('"raw_json": {}', f'"raw_json": {raw}').encode())

    result = flush(tmp_path, db)
    assert result.returncode == 0, result.stderr
    (stored,) = rows(db, "SELECT raw_json FROM telemetry.gpu_telemetry")
    assert stored["raw_json"] == {"k": "x\ufffd", "nan": None, "big": None}


def test_a_time_out_of_range_is_quarantined_not_blocking(db, tmp_path):
    spool_samples(tmp_path, 2)
    write_raw(tmp_path, "20260104000001-poison.json", json.dumps(
        {**sample_json(99), "ts": "0001-01-01T00:00:00+00:00",
         "gpus": [{"gpu_uuid": "GPU-1", "raw_json": {"k": 1}}]}).encode())

    result = flush(tmp_path, db)
    assert result.returncode == 0, result.stderr
    assert row_count(db) == 4
    assert list(bad_files(tmp_path)) == ["20260104000001-poison.json"]


# --- temp files, dead database, the lock -----------------------------------------------------

def test_temp_files_are_never_flushed_and_stale_ones_are_removed(db, tmp_path):
    spool_samples(tmp_path, 1)
    body = json.dumps({**sample_json(50), "_spool_reason": "x"})
    fresh = write_raw(tmp_path, ".tmp-20260104000050-x1ai-fresh.json", body)
    stale = write_raw(tmp_path, ".tmp-20260104000051-x1ai-stale.json", body)
    eleven_minutes_ago = time.time() - 660
    os.utime(stale, (eleven_minutes_ago, eleven_minutes_ago))

    result = flush(tmp_path, db)
    assert result.returncode == 0, result.stderr
    assert "flushed 1 samples (2 rows stored, 0 already there)" in result.stdout
    assert row_count(db) == 2
    assert fresh.exists() and not stale.exists()
    assert bad_files(tmp_path) == {}

    again = flush(tmp_path, db)
    assert again.returncode == 0 and "spool is empty" in again.stdout
    assert fresh.exists() and row_count(db) == 2


def test_dead_database_exits_75_with_one_line_and_keeps_the_files(tmp_path):
    files = spool_samples(tmp_path, 2)
    before = {path: path.read_bytes() for path in files}

    result = flush(tmp_path, None)
    assert result.returncode == 75
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flush_spool.py: database unreachable")
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert {path: path.read_bytes() for path in spool_files(tmp_path)} == before


def test_another_flusher_holding_the_lock_exits_75_and_keeps_the_files(db, tmp_path):
    files = spool_samples(tmp_path, 2)
    with spool_lock(spool(tmp_path)):
        result = flush(tmp_path, db)
    assert result.returncode == 75
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "another flush" in lines[0] and "is running" in lines[0]
    assert spool_files(tmp_path) == files
    assert row_count(db) == 0


def test_wait_takes_the_lock_once_the_other_flusher_is_done(db, tmp_path):
    spool_samples(tmp_path, 2)
    held, release_after = threading.Event(), 1.0

    def other_flusher():
        with spool_lock(spool(tmp_path)):
            held.set()
            time.sleep(release_after)

    thread = threading.Thread(target=other_flusher)
    thread.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        result = flush(tmp_path, db, "--wait", "5")
        waited = time.monotonic() - started
    finally:
        thread.join()
    assert result.returncode == 0, result.stderr
    assert "flushed 2 samples (4 rows stored, 0 already there)" in result.stdout
    assert waited >= release_after * 0.8
    assert row_count(db) == 4 and spool_files(tmp_path) == []


# --- idempotence and batching ----------------------------------------------------------------

def test_the_same_sample_spooled_twice_is_stored_once(db, tmp_path):
    twice = [write_spool(spool(tmp_path), sample(7), [], "database unreachable")
             for _ in range(2)]
    assert twice[0] != twice[1] and twice[0].read_bytes() == twice[1].read_bytes()

    result = flush(tmp_path, db)
    assert result.returncode == 0, result.stderr
    assert "flushed 2 samples (2 rows stored, 2 already there)" in result.stdout
    assert row_count(db) == 2 and spool_files(tmp_path) == []


def test_files_whose_rows_are_already_stored_add_nothing_and_are_deleted(db, tmp_path):
    spool_samples(tmp_path, 3, with_raw=True)
    first = flush(tmp_path, db)
    assert "flushed 3 samples (6 rows stored, 0 already there)" in first.stdout
    stored = rows(db, "SELECT ts, gpu_uuid, temp_c, raw_json IS NOT NULL AS raw"
                      " FROM telemetry.gpu_telemetry ORDER BY ts, gpu_uuid")

    # The same samples again, as after a flush that committed but died before deleting.
    replayed = spool_samples(tmp_path, 3, with_raw=True)
    again = flush(tmp_path, db)
    assert again.returncode == 0, again.stderr
    assert "flushed 3 samples (0 rows stored, 6 already there)" in again.stdout
    assert not any(path.exists() for path in replayed) and spool_files(tmp_path) == []
    assert rows(db, "SELECT ts, gpu_uuid, temp_c, raw_json IS NOT NULL AS raw"
                    " FROM telemetry.gpu_telemetry ORDER BY ts, gpu_uuid") == stored
    events = rows(db, "SELECT data FROM telemetry.collector_events WHERE kind = 'spool_flushed'"
                      " ORDER BY ts")
    assert [(e["data"]["rows_inserted"], e["data"]["rows_offered"]) for e in events] == [
        (6, 6), (0, 6)]


def test_small_batches_deliver_everything(db, tmp_path):
    spool_samples(tmp_path, 5)
    result = flush(tmp_path, db, "--batch", "2")
    assert result.returncode == 0, result.stderr
    assert "flushed 5 samples (10 rows stored, 0 already there)" in result.stdout
    counts = rows(db, "SELECT count(*) AS n, count(DISTINCT ts) AS samples"
                      " FROM telemetry.gpu_telemetry")
    assert counts == [{"n": 10, "samples": 5}]
    assert spool_files(tmp_path) == []


def test_spool_written_by_collect_once_is_delivered(db, tmp_path):
    down = base_env(tmp_path, None, fixture="tesla-t4-v11.xml")
    for _ in range(2):
        assert run_script("collect_once.py", env=down, tmp_path=tmp_path).returncode == 75
    assert len(spool_files(tmp_path)) == 2

    result = flush(tmp_path, db, "--batch", "1")
    assert result.returncode == 0, result.stderr
    assert "flushed 2 samples (2 rows stored, 0 already there)" in result.stdout
    stored = rows(db)
    assert [(r["gpu_uuid"], r["temp_c"]) for r in stored] == [(T4_UUID, 40)] * 2
    assert [r["raw_json"] is not None for r in stored] == [True, False]  # RAW_EVERY_SEC=600


# --- command line -----------------------------------------------------------------------------

def test_help_and_usage_errors(tmp_path):
    env = base_env(tmp_path, None)
    shown = run_script("flush_spool.py", "--help", env=env, tmp_path=tmp_path)
    assert shown.returncode == 0
    for option in ("--batch", "--wait", "--env", "--debug", "75"):
        assert option in shown.stdout, option

    for args, message in ((["--batch", "0"], "--batch must be at least 1"),
                          (["--wait", "-1"], "--wait must be zero or more"),
                          (["--bogus"], "unrecognized arguments")):
        result = run_script("flush_spool.py", *args, env=env, tmp_path=tmp_path)
        assert result.returncode == 2, args
        assert message in result.stderr and "Traceback" not in result.stderr


def test_retention_prunes_old_rows_and_events_but_keeps_the_rollup(db, tmp_path):
    with db.connect() as conn:
        for days_ago in (40, 10, 0):
            conn.execute(
                "INSERT INTO telemetry.gpu_telemetry (ts, host, gpu_uuid, temp_c, raw_json)"
                " VALUES (now() - make_interval(days => %s), 'x1ai', 'GPU-1', 50, '{}')",
                (days_ago,))
            conn.execute("INSERT INTO telemetry.collector_events (ts, host, kind, detail)"
                         " VALUES (now() - make_interval(days => %s), 'x1ai', 'outage_start',"
                         " 'x')", (days_ago,))
    env = base_env(tmp_path, db.env, RETENTION_DAYS="30")
    result = run_script("flush_spool.py", env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "retention 30 days: deleted 1 rows and 1 events" in result.stdout
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM telemetry.gpu_telemetry").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM telemetry.collector_events").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM telemetry.gpu_telemetry_1m").fetchone() == (3,)
    without = run_script("flush_spool.py", env=base_env(tmp_path, db.env), tmp_path=tmp_path)
    assert "deleted" not in without.stdout


# --- a database that answers but cannot take the spool: the named error's exit code, every file
# kept; a refused value quarantines its one file -----------------------------------------------

def flush_refused(tmp_path: Path, pg_env: dict[str, str], code: int) -> str:
    """Flush two spooled samples into a database that cannot take them: exit `code`, one line
    on stderr (returned), both files kept byte for byte, nothing quarantined."""
    files = spool_samples(tmp_path, 2)
    before = {path: path.read_bytes() for path in files}
    result = run_script("flush_spool.py", env=base_env(tmp_path, pg_env), tmp_path=tmp_path)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("flush_spool.py: ") and "undelivered files kept" in lines[0]
    assert result.stdout == ""
    assert {path: path.read_bytes() for path in spool_files(tmp_path)} == before
    assert bad_files(tmp_path) == {}
    return lines[0]


def test_a_database_never_initialised_exits_78_naming_init_db(uninitialised_db, tmp_path):  # noqa: F811
    line = flush_refused(tmp_path, uninitialised_db, 78)
    assert "database schema missing" in line and "run bin/init_db.sh" in line


def test_the_reader_role_exits_77_naming_the_role(reader_env, tmp_path):  # noqa: F811
    line = flush_refused(tmp_path, reader_env, 77)
    assert "database permission denied" in line and f'role "{reader_env["PGUSER"]}"' in line
    assert "--writer-role" in line


def test_a_wrong_password_exits_78_naming_pgpassword(wrong_password_env, tmp_path):  # noqa: F811
    line = flush_refused(tmp_path, wrong_password_env, 78)
    assert "database login refused" in line and "PGUSER" in line and "PGPASSWORD" in line
    assert WRONG_PASSWORD not in line


def test_a_pgport_that_is_not_a_port_exits_78(db, tmp_path):
    line = flush_refused(tmp_path, {**db.env, "PGPORT": "notanumber"}, 78)
    assert "database login refused" in line and "notanumber" in line and "PGPORT" in line


@pytest.mark.parametrize("batch", ["1000", "1"])
def test_a_refused_value_quarantines_its_file_and_the_rest_is_delivered(refusing_db, tmp_path,  # noqa: F811
                                                                         batch):
    good = spool_samples(tmp_path, 3)
    refused = sample(10, memo=REFUSED_MEMO)
    refused_path = write_spool(spool(tmp_path), refused, [], "database unreachable: test")
    later = write_spool(spool(tmp_path), sample(20), [], "database unreachable: test")

    result = run_script("flush_spool.py", "--batch", batch,
                        env=base_env(tmp_path, refusing_db.env), tmp_path=tmp_path)
    assert result.returncode == 65, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"quarantined {refused_path.name}: "
                                                   "database rejected a value"), result.stderr
    assert "flushed 4 samples (8 rows stored" in result.stdout
    assert "1 file(s) the database refused a value of moved to spool/bad/" in result.stdout
    assert spool_files(tmp_path) == []
    reasons = bad_files(tmp_path)
    assert list(reasons) == [refused_path.name]
    assert reasons[refused_path.name].startswith("database rejected a value")
    assert "test_refused_memo" in reasons[refused_path.name]
    stored = rows(refusing_db, "SELECT DISTINCT ts FROM telemetry.gpu_telemetry ORDER BY ts")
    assert len(stored) == len(good) + 1 and later.exists() is False
    events = rows(refusing_db, "SELECT data FROM telemetry.collector_events"
                               " WHERE kind = 'spool_flushed'")
    assert [e["data"]["quarantined"] for e in events] == [1]

    again = run_script("flush_spool.py", env=base_env(tmp_path, refusing_db.env),
                       tmp_path=tmp_path)
    assert again.returncode == 0 and "spool is empty" in again.stdout


def test_a_refused_sample_does_not_cost_its_neighbours_their_raw_snapshot(refusing_db,  # noqa: F811
                                                                           tmp_path):
    refused = sample(0, with_raw=True, memo=REFUSED_MEMO)
    write_spool(spool(tmp_path), refused, [], "database unreachable: test")
    write_spool(spool(tmp_path), sample(5, with_raw=True), [], "database unreachable: test")

    result = run_script("flush_spool.py", env=base_env(tmp_path, refusing_db.env),
                        tmp_path=tmp_path)
    assert result.returncode == 65, result.stderr
    assert len(bad_files(tmp_path)) == 1
    # Within RAW_EVERY_SEC of the refused one, yet the first stored: it keeps its snapshot.
    assert rows(refusing_db, "SELECT count(*) AS n, count(raw_json) AS raw"
                             " FROM telemetry.gpu_telemetry") == [{"n": 2, "raw": 2}]


def test_a_refused_flush_event_leaves_the_delivery_done(db, tmp_path):
    with db.connect() as conn:
        conn.execute("ALTER TABLE telemetry.collector_events ADD CONSTRAINT test_no_flush_note"
                     " CHECK (kind <> 'spool_flushed')")
    spool_samples(tmp_path, 2)
    result = flush(tmp_path, db)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: spool_flushed event not recorded: database "
                                    "rejected a value")
    assert "undelivered" not in result.stderr
    assert spool_files(tmp_path) == [] and row_count(db) == 4
