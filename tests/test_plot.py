"""plot_temp.py and the reduced series behind it, on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from bench import synthetic
from gpu_telemetry.parser import parse_document
from gpu_telemetry.sample import validate_sample
from gpu_telemetry.series import Filters, bucket_seconds, fetch_series
from gpu_telemetry.store import insert_samples
from tests.conftest import database_copy
from tests.helpers import FIXTURES, base_env, run_script

DAY = datetime(2026, 1, 1, tzinfo=UTC)
P40_A, P40_B = (gpu[0] for gpu in synthetic.GPUS)


@pytest.fixture(scope="module")
def two_days(pg_server, template_db):
    """Two days of 1 Hz samples for two GPUs, a 30-minute bench each day at 10:00 UTC; one
    database for the module (loading it takes seconds), which its tests only read."""
    with database_copy(pg_server, template_db, "test_plot_two_days") as db:
        with db.connect() as conn:
            synthetic.load(conn, DAY, DAY + timedelta(days=2))
        yield db


def count(db, where: str = "true", params=()) -> int:
    with db.connect() as conn:
        return conn.execute(f"SELECT count(*) FROM telemetry.gpu_telemetry WHERE {where}",
                            params).fetchone()[0]


def series(db, filters=None, metrics=("temperature",), start=DAY,
           end=DAY + timedelta(days=2), max_points=1200):
    with db.connect() as conn:
        return fetch_series(conn, filters or Filters(), metrics, start, end, max_points)


def png(path: Path) -> np.ndarray:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 1000
    return image


def test_the_maximum_survives_reduction(db):
    spike_at = DAY + timedelta(hours=30, seconds=17)
    with db.connect() as conn:
        synthetic.load(conn, DAY + timedelta(hours=12), DAY + timedelta(hours=36))
        conn.execute("UPDATE telemetry.gpu_telemetry SET temp_c = 99"
                     " WHERE ts = %s AND gpu_uuid = %s", (spike_at, P40_A))
        # UPDATE does not pass through the rollup; put the spike where an insert would.
        conn.execute("UPDATE telemetry.gpu_telemetry_1m SET temp_c_max = 99"
                     " WHERE bucket = date_trunc('minute', %s::timestamptz) AND gpu_uuid = %s",
                     (spike_at, P40_A))
    long_range = series(db)
    assert long_range.from_rollup and long_range.bucket_sec >= 60
    short_range = series(db, start=spike_at - timedelta(minutes=5),
                         end=spike_at + timedelta(minutes=5))
    assert not short_range.from_rollup
    for reduced in (long_range, short_range):
        gpu = next(g for g in reduced.gpus if g.gpu_uuid == P40_A)
        assert max(v for v in gpu.high["temperature"] if v is not None) == 99
        assert len(gpu.times) <= 1200


def test_reduction_counts_every_sample_exactly_at_ragged_edges(two_days):
    start = DAY + timedelta(hours=5, seconds=17.5)
    end = DAY + timedelta(hours=40, minutes=3, seconds=41)
    reduced = series(two_days, start=start, end=end)
    assert reduced.from_rollup
    assert reduced.samples == count(two_days, "ts >= %s AND ts < %s", (start, end))
    total_mean = sum(
        m * 1 for g in reduced.gpus for m in g.mean["temperature"] if m is not None)
    assert total_mean > 0


def test_a_quick_series_is_read_from_rows(two_days):
    reduced = series(two_days, start=DAY + timedelta(hours=10), end=DAY + timedelta(hours=11))
    assert not reduced.from_rollup and reduced.bucket_sec == 3
    assert reduced.samples == 7200
    assert {tag for _, tag in reduced.status} == {"bench", "idle"}
    gpu = reduced.gpus[0]
    assert gpu.slowdown_c == 92 and any(gpu.thermal) and not any(gpu.power)


@pytest.mark.parametrize(("filters", "where", "params"), [
    (Filters(host="x1ai"), "host = 'x1ai'", ()),
    (Filters(host="elsewhere"), "false", ()),
    (Filters(status_tags=("bench",)), "status_tag = 'bench'", ()),
    (Filters(exclude_tags=("bench",)), "status_tag <> 'bench'", ()),
    (Filters(include_memos=("FAN=25",)), "status_memo ILIKE '%%fan=25%%'", ()),
    (Filters(exclude_memos=("Baseline",)), "status_memo NOT ILIKE '%%baseline%%'", ()),
    (Filters(gpus=(P40_B,)), "gpu_uuid = %s", (P40_B,)),
    (Filters(gpus=("1",)), "gpu_index = 1", ()),
    (Filters(gpus=("00000000:01:00.0",)), "pci_bus_id = '00000000:01:00.0'", ()),
    (Filters(gpus=("02:00.0",)), "pci_bus_id = '00000000:02:00.0'", ()),
    (Filters(run_id="gpuburn-20260102-100000"), "run_id = 'gpuburn-20260102-100000'", ()),
    (Filters(status_tags=("idle",), gpus=("0",), exclude_memos=("nothing",)),
     "status_tag = 'idle' AND gpu_index = 0", ()),
])
def test_every_filter_selects_what_it_says(two_days, filters, where, params):
    bench_day_two = (DAY + timedelta(hours=33, minutes=50), DAY + timedelta(hours=34, minutes=40))
    for start, end in ((DAY, DAY + timedelta(days=2)), bench_day_two):  # rollup, then rows
        reduced = series(two_days, filters=filters, start=start, end=end)
        expected = count(two_days, f"ts >= %s AND ts < %s AND {where}", (start, end, *params))
        assert reduced.samples == expected, (filters, start)


def test_a_memo_with_quotes_and_sql_is_just_text(db):
    memo = "fan=25%'); DROP TABLE telemetry.gpu_telemetry; -- \"x\" \\ _%"
    reading = parse_document((FIXTURES / "tesla-t4.xml").read_bytes())
    with db.connect() as conn:
        for i, this_memo in enumerate((memo, "fan=25% plain")):
            insert_samples(conn, [validate_sample({
                "ts": (DAY + timedelta(seconds=i)).isoformat(), "host": "x1ai",
                "status_tag": "bench", "status_memo": this_memo, "run_id": None,
                "gpus": reading.gpus})], raw_every_sec=600)
    only = series(db, filters=Filters(include_memos=(memo,)), start=DAY,
                  end=DAY + timedelta(minutes=1))
    assert only.samples == 1
    assert count(db) == 2


def test_bucket_width_follows_the_range():
    assert bucket_seconds(DAY, DAY + timedelta(hours=1), 1200) == 3
    assert bucket_seconds(DAY, DAY + timedelta(days=30), 1200) == 2160
    assert bucket_seconds(DAY, DAY + timedelta(hours=21), 1200) == 120  # whole minutes


def run_plot(tmp_path, db, *args):
    return run_script("plot_temp.py", *args, env=base_env(tmp_path, db.env if db else None),
                      tmp_path=tmp_path)


def test_plot_renders_real_data_with_every_panel(two_days, tmp_path):
    out = tmp_path / "pictures" / "two-days.png"
    result = run_plot(tmp_path, two_days, "--start", "2026-01-01T09:00:00+09:00",
                      "--end", "2026-01-03T09:00:00+09:00", "--tz", "jst",
                      "--metric", "temperature", "--metric", "sm_clock", "--metric", "power",
                      "--metric", "fan", "--title", "P40 on the dock", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and "345600 samples, 2 GPU(s)" in result.stdout
    image = png(out)
    assert image.shape[0] > 4 * 300  # four stacked panels
    # The bench band (status colour) and the thermal strip are in the picture.
    pixels = np.round(image[:, :, :3] * 255).astype(int).reshape(-1, 3)
    colours = {tuple(px) for px in np.unique(pixels, axis=0)}
    assert (251, 224, 200) in colours  # status bench
    assert (216, 232, 248) in colours  # status idle


def test_plot_of_the_fixtures_through_the_collector(db, tmp_path):
    """Rows stored from real nvidia-smi documents draw."""
    for name in ("dual_2080-v13.xml", "rtx-3080-v13.xml"):
        env = base_env(tmp_path, db.env, fixture=name)
        assert run_script("collect_once.py", env=env, tmp_path=tmp_path).returncode == 0
    out = tmp_path / "fixtures.png"
    result = run_plot(tmp_path, db, "--hours", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "3 GPU(s)" in result.stdout
    assert png(out).std() > 0.01


def test_no_data_is_a_picture_that_says_so(db, tmp_path):
    out = tmp_path / "empty.png"
    result = run_plot(tmp_path, db, "--hours", "2", "--status-tag", "bench", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "no data" in result.stdout
    png(out)


@pytest.mark.parametrize("args", [
    ["--tz", "Mars/Olympus"], ["--start", "yesterday"],
    ["--start", "2026-01-02T00:00:00Z", "--end", "2026-01-01T00:00:00Z"],
    ["--hours", "0"], ["--metric", "colour"], ["--bogus"],
])
def test_bad_options_are_one_line_exit_2(tmp_path, args):
    result = run_plot(tmp_path, None, *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_dead_database_exits_75(tmp_path):
    result = run_plot(tmp_path, None, "--hours", "1", "--out", str(tmp_path / "x.png"))
    assert result.returncode == 75 and "database unreachable" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_help_lists_every_option_of_the_runbook(tmp_path):
    result = run_plot(tmp_path, None, "--help")
    assert result.returncode == 0
    for option in ("--hours", "--start", "--end", "--host", "--status-tag",
                   "--exclude-status-tag", "--exclude-prod", "--include-memo", "--exclude-memo",
                   "--tz", "--title", "--out", "--env", "--metric", "--gpu", "--run-id"):
        assert option in result.stdout, option


def test_a_role_that_may_not_read_gets_one_line_and_exit_77(db, tmp_path):
    with db.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS plot_no_read")
        conn.execute("CREATE ROLE plot_no_read LOGIN")
        conn.execute("GRANT USAGE ON SCHEMA telemetry TO plot_no_read")
    try:
        result = run_plot(tmp_path, db, "--hours", "1", "--out", str(tmp_path / "x.png"))
        assert result.returncode == 0
        env = {**db.env, "PGUSER": "plot_no_read"}
        result = run_script("plot_temp.py", "--hours", "1", "--out", str(tmp_path / "y.png"),
                            env=base_env(tmp_path, env), tmp_path=tmp_path)
        assert result.returncode == 77
        assert result.stderr.count("\n") == 1 and "reader role" in result.stderr
    finally:
        with db.connect() as conn:
            conn.execute("DROP OWNED BY plot_no_read")
            conn.execute("DROP ROLE plot_no_read")


@pytest.mark.parametrize(("args", "where"), [
    (["--status-tag", "bench"], "status_tag = 'bench'"),
    (["--exclude-status-tag", "bench"], "status_tag <> 'bench'"),
    (["--exclude-prod", "--exclude-status-tag", "idle"], "status_tag NOT IN ('prod', 'idle')"),
    (["--include-memo", "FAN=25%", "--include-memo", "nothing"], "status_memo ILIKE '%%fan=25%%'"),
    (["--exclude-memo", "BASELINE"], "status_memo NOT ILIKE '%%baseline%%'"),
    (["--gpu", "1"], "gpu_index = 1"),
    (["--gpu", "02:00.0", "--gpu", "0"], "true"),
    (["--run-id", "gpuburn-20260101-100000"], "run_id = 'gpuburn-20260101-100000'"),
    (["--host", "x1ai"], "host = 'x1ai'"),
])
def test_every_command_line_filter_selects_what_it_says(two_days, tmp_path, args, where):
    start, end = "2026-01-01T06:00:00+00:00", "2026-01-01T14:00:00+00:00"
    result = run_plot(tmp_path, two_days, "--start", start, "--end", end,
                      "--out", str(tmp_path / "f.png"), *args)
    assert result.returncode == 0, result.stderr
    expected = count(two_days, f"ts >= %s AND ts < %s AND {where}", (start, end))
    assert f"({expected} samples," in result.stdout, (expected, result.stdout)
