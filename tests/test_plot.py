"""plot_temp.py and the reduced series behind it, on a real PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from bench import synthetic
from gpu_telemetry.analysis.series import Filters, bucket_seconds, fetch_series
from gpu_telemetry.collector.parser import parse_document
from gpu_telemetry.db.store import insert_samples
from gpu_telemetry.records import Sample, Status
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
        conn.execute("UPDATE telemetry.gpu_samples SET temp_c = 99 WHERE ts = %s AND gpu_id ="
                     " (SELECT gpu_id FROM telemetry.gpus WHERE gpu_uuid = %s)",
                     (spike_at, P40_A))
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
    reading = parse_document((FIXTURES / "tesla-t4-v11.xml").read_bytes())
    with db.connect() as conn:
        for i, this_memo in enumerate((memo, "fan=25% plain")):
            insert_samples(conn, [Sample(DAY + timedelta(seconds=i), "x1ai",
                                         Status("bench", this_memo), reading.gpus)],
                           raw_every_sec=600)
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
    assert (f"wrote {out}: 2026-01-01T09:00:00+09:00 to 2026-01-03T09:00:00+09:00, 345600 "
            "samples, 2 GPU(s), 3 min per point from the one-minute rollup") in result.stdout
    image = png(out)
    # Three stacked panels: the fan's is left out, a P40 has none (fan_pct is NULL).
    assert image.shape[0] == (1.6 + 3 * 3.2) * 100
    # The bench band (status colour) and the thermal strip are in the picture.
    pixels = np.round(image[:, :, :3] * 255).astype(int).reshape(-1, 3)
    colours = {tuple(px) for px in np.unique(pixels, axis=0)}
    assert (251, 224, 200) in colours  # status bench
    assert (216, 232, 248) in colours  # status idle


def test_plot_of_the_fixtures_through_the_collector(db, tmp_path):
    """Rows stored from real nvidia-smi documents draw."""
    for name in ("dual-2080-v13.xml", "rtx-3080-v13.xml"):
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
    assert f", {expected} samples," in result.stdout, (expected, result.stdout)


# --- what the picture spans and draws, checked on the image --------------------------------------

CURVE = (31, 119, 180)  # matplotlib's first colour: the first GPU's line


def near(image: np.ndarray, colour, tolerance: int = 40) -> np.ndarray:
    pixels = np.round(image[:, :, :3] * 255).astype(int)
    return np.abs(pixels - np.array(colour)).sum(axis=2) <= tolerance


def axes_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the first panel's drawing area, inside its black frame."""
    dark = np.round(image[:, :, :3] * 255).sum(axis=2) < 240
    spines = np.nonzero(dark.sum(axis=1) > 0.6 * image.shape[1])[0]
    assert spines.size >= 2, "no panel frame in the picture"
    top = spines[0]
    bottom = spines[spines > top + 5][0]  # the same panel's lower edge
    sides = np.nonzero(dark[top:bottom + 1].sum(axis=0) > 0.9 * (bottom - top))[0]
    return top + 2, bottom - 2, sides.min() + 2, sides.max() - 2


def curve_columns(image: np.ndarray, colour=CURVE) -> np.ndarray:
    """The x pixels, inside the drawing area, where a line of that colour is drawn.

    A thin line is blended with what lies under it (a status band), so a pixel counts when its
    colour lies at least 40 % of the way from the column's background to the line's colour."""
    top, bottom, left, right = axes_box(image)
    pixels = np.round(image[top:bottom + 1, left:right + 1, :3] * 255)
    background = np.median(pixels, axis=0)  # per column: the band, or white
    towards = np.array(colour, dtype=float) - background
    offset = pixels - background
    share = (offset * towards).sum(axis=2) / np.maximum((towards ** 2).sum(axis=1), 1.0)
    residual = np.linalg.norm(offset - share[:, :, None] * towards, axis=2)
    drawn = (share >= 0.4) & (residual <= 30)
    return np.nonzero(drawn.any(axis=0))[0]


def longest_break(columns: np.ndarray) -> int:
    return int(np.diff(columns).max()) - 1 if columns.size > 1 else 10 ** 6


def drawn_range(stdout: str) -> tuple[datetime, datetime]:
    match = re.search(r": (\S+) to (\S+), ", stdout)
    assert match, stdout
    return datetime.fromisoformat(match.group(1)), datetime.fromisoformat(match.group(2))


@pytest.fixture(scope="module")
def five_second_day(pg_server, template_db):
    """A day of 5 s samples for two GPUs (the default interval), bench 10:00-10:30 UTC."""
    with database_copy(pg_server, template_db, "test_plot_5s") as db:
        with db.connect() as conn:
            synthetic.load(conn, DAY, DAY + timedelta(days=1), step_sec=5)
        yield db


@pytest.mark.parametrize("minutes", [20, 32, 60])
def test_short_ranges_of_5_s_samples_draw_an_unbroken_curve(five_second_day, tmp_path,
                                                            minutes):
    out = tmp_path / f"{minutes}.png"
    start = DAY + timedelta(hours=10, minutes=5)
    result = run_plot(tmp_path, five_second_day, "--start", start.isoformat(),
                      "--end", (start + timedelta(minutes=minutes)).isoformat(), "--out", str(out))
    assert result.returncode == 0, result.stderr
    columns = curve_columns(png(out))
    _, _, left, right = axes_box(png(out))
    assert columns.size > 0.9 * (right - left), (minutes, columns.size, right - left)
    assert longest_break(columns) <= 2, minutes
    if minutes < 60:
        assert "every sample (5 s apart)" in result.stdout, result.stdout


def test_an_outage_breaks_the_line_and_is_shown(db, tmp_path):
    with db.connect() as conn:
        synthetic.load(conn, DAY, DAY + timedelta(minutes=10), step_sec=5)
        synthetic.load(conn, DAY + timedelta(minutes=14), DAY + timedelta(minutes=24), step_sec=5)
    out = tmp_path / "outage.png"
    result = run_plot(tmp_path, db, "--start", DAY.isoformat(),
                      "--end", (DAY + timedelta(minutes=24)).isoformat(), "--out", str(out))
    assert result.returncode == 0, result.stderr
    image = png(out)
    columns = curve_columns(image)
    _, _, left, right = axes_box(image)
    width = right - left
    # Four minutes of 24 are missing: one break of about a sixth of the width.
    assert 0.12 * width < longest_break(columns) < 0.2 * width
    assert near(image, (187, 187, 187), 10).sum() > 200  # the hatching of the gap


def test_a_run_two_days_old_plotted_by_run_id_spans_the_run(db, tmp_path):
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    run_id = f"gpuburn-{day:%Y%m%d}-100000"
    with db.connect() as conn:
        synthetic.load(conn, day + timedelta(hours=8), day + timedelta(hours=13), step_sec=5)
    out = tmp_path / "run.png"
    result = run_plot(tmp_path, db, "--run-id", run_id, "--tz", "utc", "--out", str(out))
    assert result.returncode == 0, result.stderr
    first, last = day + timedelta(hours=10), day + timedelta(hours=10, minutes=30)
    start, end = drawn_range(result.stdout)
    margin = (last - first) / 5
    assert start == first - margin, result.stdout
    assert abs(end - (last + margin)) < timedelta(seconds=1), result.stdout
    # The margin shows the host's rows around the run, not only the run's own.
    expected = count(db, "ts >= %s AND ts <= %s", (start, last + margin))
    assert f"{expected} samples" in result.stdout, (expected, result.stdout)
    image = png(out)
    columns = curve_columns(image)
    _, _, left, right = axes_box(image)
    assert columns.size > 0.9 * (right - left) and longest_break(columns) <= 2
    # The bench is the middle five sevenths of the picture: its band is there.
    bench = np.nonzero(near(image, (251, 224, 200), 6).any(axis=0))[0]
    assert 0.68 < (bench.max() - bench.min()) / (right - left) < 0.75
    # --margin chooses the margin.
    result = run_plot(tmp_path, db, "--run-id", run_id, "--margin", "30", "--out", str(out))
    start, end = drawn_range(result.stdout)
    assert start == first - timedelta(minutes=30), result.stdout


def test_run_id_with_a_range_keeps_the_range(two_days, tmp_path):
    start, end = "2026-01-01T06:00:00+00:00", "2026-01-01T14:00:00+00:00"
    result = run_plot(tmp_path, two_days, "--run-id", "gpuburn-20260101-100000", "--tz", "utc",
                      "--start", start, "--end", end, "--out", str(tmp_path / "r.png"))
    assert result.returncode == 0, result.stderr
    assert drawn_range(result.stdout) == (datetime.fromisoformat(start),
                                          datetime.fromisoformat(end))


def test_an_unknown_run_id_says_so(db, tmp_path):
    result = run_plot(tmp_path, db, "--run-id", "gpuburn-19990101-000000",
                      "--out", str(tmp_path / "none.png"))
    assert result.returncode == 0, result.stderr
    assert "no samples with run id gpuburn-19990101-000000" in result.stdout


def test_the_runbooks_memo_comparison_spans_the_run_it_selects(five_second_day, tmp_path):
    out = tmp_path / "fan25.png"
    end = (DAY + timedelta(days=1)).isoformat()
    result = run_plot(tmp_path, five_second_day, "--hours", "24", "--end", end, "--exclude-prod",
                      "--include-memo", "fan=25%", "--tz", "utc", "--out", str(out))
    assert result.returncode == 0, result.stderr
    start, stop = drawn_range(result.stdout)
    bench_start, bench_end = DAY + timedelta(hours=10), DAY + timedelta(hours=10, minutes=30)
    assert bench_start - timedelta(minutes=1) <= start <= bench_start, result.stdout
    assert bench_end <= stop <= bench_end + timedelta(minutes=1), result.stdout
    expected = count(five_second_day, "status_memo ILIKE '%%fan=25%%'")
    assert f"{expected} samples" in result.stdout
    image = png(out)
    columns = curve_columns(image)
    _, _, left, right = axes_box(image)
    assert columns.size > 0.9 * (right - left) and longest_break(columns) <= 2
    # --full-range keeps the 24 hours asked for: the run is a sliver of it.
    result = run_plot(tmp_path, five_second_day, "--hours", "24", "--end", end, "--exclude-prod",
                      "--include-memo", "fan=25%", "--full-range", "--out", str(out))
    start, stop = drawn_range(result.stdout)
    assert stop - start == timedelta(hours=24)
    assert curve_columns(png(out)).size < 0.05 * (right - left)


def test_three_scattered_samples_are_visible(db, tmp_path):
    reading = parse_document((FIXTURES / "tesla-t4-v11.xml").read_bytes())
    with db.connect() as conn:
        synthetic.load(conn, DAY, DAY + timedelta(hours=6), step_sec=60)
        insert_samples(conn, [Sample(DAY + timedelta(hours=hour), "x1ai", Status("prod"),
                                     reading.gpus) for hour in (1, 3, 5.5)], raw_every_sec=600)
    out = tmp_path / "prod.png"
    result = run_plot(tmp_path, db, "--hours", "6", "--end", (DAY + timedelta(hours=6)).isoformat(),
                      "--status-tag", "prod", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "3 samples" in result.stdout
    start, end = drawn_range(result.stdout)
    assert start < DAY + timedelta(hours=1) and end > DAY + timedelta(hours=5.5)
    columns = curve_columns(png(out))
    groups = np.split(columns, np.nonzero(np.diff(columns) > 2)[0] + 1)
    assert len([g for g in groups if g.size >= 4]) == 3, columns


def test_a_metric_no_gpu_reports_is_left_out(five_second_day, tmp_path):
    """The synthetic P40s report no memory temperature (NULL), as most cards."""
    out = tmp_path / "two.png"
    window = ["--start", (DAY + timedelta(hours=10)).isoformat(),
              "--end", (DAY + timedelta(hours=11)).isoformat(), "--out", str(out)]
    result = run_plot(tmp_path, five_second_day, *window, "--metric", "temperature",
                      "--metric", "memory_temperature", "--metric", "power")
    assert result.returncode == 0, result.stderr
    two_panels = png(out).shape[0]
    result = run_plot(tmp_path, five_second_day, *window, "--metric", "temperature")
    one_panel = png(out).shape[0]
    assert two_panels - one_panel == pytest.approx(320, abs=2)  # one panel, not two, more
    # Asked alone, the panel is drawn and says why it is empty.
    result = run_plot(tmp_path, five_second_day, *window, "--metric", "memory_temperature")
    assert result.returncode == 0, result.stderr
    image = png(out)
    top, bottom, left, right = axes_box(image)
    middle = image[(top + bottom) // 2 - 15:(top + bottom) // 2 + 15, left:right]
    assert near(middle, (102, 102, 102), 30).sum() > 100  # "not reported by this GPU"


def drawn(db, tmp_path, start, end, metrics=("temperature",), filters=None):
    from gpu_telemetry.analysis.plotting import render
    from gpu_telemetry.analysis.timerange import zone

    reduced = series(db, filters=filters, metrics=metrics, start=start, end=end)
    return reduced, render(reduced, tmp_path / "drawn.png", title=None, tz=zone("utc"),
                           description="test")


def test_a_tag_set_status_refuses_is_named_in_the_legend(db, tmp_path):
    reading = parse_document((FIXTURES / "tesla-t4-v11.xml").read_bytes())
    with db.connect() as conn:
        insert_samples(conn, [Sample(DAY + timedelta(seconds=5 * i), "x1ai",
                                     Status("weird" if i < 10 else "idle"), reading.gpus)
                              for i in range(20)], raw_every_sec=600)
    _, picture = drawn(db, tmp_path, DAY, DAY + timedelta(minutes=2))
    assert "status weird" in picture.legend and "status idle" in picture.legend


def test_some_gpus_without_the_metric_are_named_in_the_panel(db, tmp_path):
    a100 = parse_document((FIXTURES / "a100-sxm4-v12.xml").read_bytes()).gpus
    with db.connect() as conn:
        synthetic.load(conn, DAY, DAY + timedelta(minutes=5), step_sec=5)
        insert_samples(conn, [Sample(DAY + timedelta(seconds=5 * i), "x1ai", Status("idle"),
                                     a100) for i in range(60)], raw_every_sec=600)
    reduced, picture = drawn(db, tmp_path, DAY, DAY + timedelta(minutes=5),
                             metrics=("temperature", "memory_temperature", "fan"))
    # The A100 reports a memory temperature, the P40s do not; none of them has a fan.
    assert picture.panels == ("temperature", "memory_temperature")
    assert [g.has("memory_temperature") for g in reduced.gpus].count(True) == 1


@pytest.mark.parametrize(("values", "unit", "low", "high"), [
    ([0, 0, 0], "%", 0, 100),
    ([37, 100], "%", 0, 100),
    ([50.0, 50.0], "W", 45, 55),
    ([1531, 1531], "MHz", 1481, 1581),
    ([40, 41], "°C", 38, 43),
    ([30, 80], "°C", 30, 80),
])
def test_flat_series_get_a_readable_range(values, unit, low, high):
    from gpu_telemetry.analysis.axes import readable_limits

    bottom, top = readable_limits(values, unit)
    assert bottom <= low and top >= high
    assert top - bottom <= (high - low) * 1.2


def test_no_value_gives_no_range():
    from gpu_telemetry.analysis.axes import readable_limits

    assert readable_limits([None, float("nan")], "°C") is None


@pytest.mark.parametrize(("args", "words"), [
    (["--hours", "100000000"], "more than 100 years"),
    (["--hours", "-3"], "more than zero, got -3"),
    (["--hours", "2", "--start", "2026-01-01T00:00:00Z"], "contradict"),
    (["--margin", "5"], "--margin applies only to --run-id"),
    (["--run-id", "x", "--hours", "3", "--margin", "5"], "--margin applies only"),
    (["--run-id", "x", "--margin", "-1"], "got -1"),
    (["--run-id", "x", "--full-range"], "--full-range needs a range"),
])
def test_contradictions_and_bad_values_say_what_is_wrong(tmp_path, args, words):
    result = run_plot(tmp_path, None, *args)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_output_that_cannot_be_written_exits_73(db, tmp_path):
    (tmp_path / "a-file").write_text("")
    result = run_plot(tmp_path, db, "--hours", "1", "--out", str(tmp_path / "a-file" / "x.png"))
    assert result.returncode == 73, result.stderr
    assert "cannot write" in result.stderr and "a-file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
