"""bin/report_run.py end to end: synthetic gpu-burn runs with known constants go into a real
database, tagged the way bin/run_gpuburn.sh tags them; the report recovers the constants."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from gpu_telemetry import schema
from gpu_telemetry.db.store import insert_samples
from gpu_telemetry.records import GpuReading, Sample, Status
from tests.conftest import conninfo
from tests.helpers import REPO_ROOT, base_env, run_script

TOLERANCE = 0.10
HOST = "x1ai"
START = datetime(2026, 1, 4, 10, 0, tzinfo=UTC)
STEP_S = 5
PRE_IDLE_S, BENCH_S, POST_S, COOLDOWN_S = 180, 900, 10, 900
# Quotes, a comment and a statement in a memo are text, stored and shown as typed.
NASTY_MEMO = " fan=25%'); DROP TABLE x; --"


@dataclass(frozen=True)
class Gpu:
    uuid: str
    index: int
    bus_id: str
    idle_c: float
    steady_c: float
    tau_heat_s: float
    tau_cool_s: float
    idle_w: float
    bench_w: float
    sm_max_mhz: float
    sm_throttled_mhz: float  # SM clock in the last 30 % of the bench
    thermal_reported: bool = True
    power_cap: bool = False
    name: str = "Tesla P40"
    missing: tuple[str, ...] = ()  # columns this GPU leaves NULL
    power_noise_w: float = 1.0

    def expected(self) -> dict:
        return {
            "idle_temp_c": self.idle_c,
            "steady_temp_c": self.steady_c,
            "peak_temp_c": self.steady_c,
            "tau_heat_s": self.tau_heat_s,
            "tau_cool_s": self.tau_cool_s,
            "rise_90_s": self.tau_heat_s * math.log(10),
            "bench_s": BENCH_S - STEP_S,
            "mean_power_w": self.bench_w,
            "idle_power_w": self.idle_w,
            "sm_clock_drop_pct": 100 * (1 - self.sm_throttled_mhz / self.sm_max_mhz),
            "degrees_per_watt": (self.steady_c - self.idle_c) / (self.bench_w - self.idle_w),
        }


FAN_100 = (
    Gpu("GPU-aaaaaaaa-0000-0000-0000-000000000001", 0, "00000000:01:00.0", idle_c=35,
        steady_c=70, tau_heat_s=90, tau_cool_s=150, idle_w=50, bench_w=250, sm_max_mhz=1500,
        sm_throttled_mhz=1350),
    Gpu("GPU-bbbbbbbb-0000-0000-0000-000000000002", 1, "00000000:02:00.0", idle_c=40,
        steady_c=85, tau_heat_s=150, tau_cool_s=250, idle_w=60, bench_w=200, sm_max_mhz=1600,
        sm_throttled_mhz=1600, thermal_reported=False, power_cap=True, name="Tesla P4"),
)
FAN_25 = (
    Gpu(FAN_100[0].uuid, 0, FAN_100[0].bus_id, idle_c=38, steady_c=82, tau_heat_s=140,
        tau_cool_s=220, idle_w=52, bench_w=240, sm_max_mhz=1500, sm_throttled_mhz=1200),
    Gpu(FAN_100[1].uuid, 1, FAN_100[1].bus_id, idle_c=42, steady_c=88, tau_heat_s=180,
        tau_cool_s=300, idle_w=60, bench_w=195, sm_max_mhz=1600, sm_throttled_mhz=1500,
        thermal_reported=False, power_cap=True, name="Tesla P4"),
)

COLUMNS = ("ts", "host", "gpu_uuid", "pci_bus_id", "gpu_name", "gpu_index", "status_tag",
           "status_memo", "run_id", "temp_c", "power_draw_w", "clocks_sm_mhz",
           "throttle_hw_thermal", "throttle_sw_power_cap", "throttle_gpu_idle")


def phases(run_id: str | None, suffix: str, *, idle_in_run: bool = True,
           cooldown_in_run: bool = True) -> list[tuple[str, int, str, str, str | None]]:
    """(phase, seconds, tag, memo, run id) as bin/run_gpuburn.sh writes them; the final status
    has no run id."""
    return [
        ("pre-idle", PRE_IDLE_S, "idle", "pre gpu-burn idle (baseline)" + suffix,
         run_id if idle_in_run else None),
        ("bench", BENCH_S, "bench", "gpu-burn (max workload)" + suffix, run_id),
        ("post", POST_S, "idle", "post gpu-burn idle" + suffix,
         run_id if cooldown_in_run else None),
        ("cooldown", COOLDOWN_S, "idle", "cooldown idle (post gpu-burn)" + suffix,
         run_id if cooldown_in_run else None),
        ("final", 60, "prod", "prod (normal usage)", None),
    ]


def insert_run(db, gpus, *, run_id: str | None, start: datetime = START, suffix: str = "",
               seed: int = 1, **phase_options) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for gpu in gpus:
        t = -PRE_IDLE_S
        last_bench_s = BENCH_S - STEP_S
        end_c = gpu.steady_c + (gpu.idle_c - gpu.steady_c) * math.exp(-last_bench_s
                                                                      / gpu.tau_heat_s)
        for phase, seconds, tag, memo, phase_run_id in phases(run_id, suffix, **phase_options):
            for _ in range(0, seconds, STEP_S):
                bench = phase == "bench"
                if phase == "pre-idle":
                    temp = gpu.idle_c
                elif bench:
                    temp = gpu.steady_c + (gpu.idle_c - gpu.steady_c) * math.exp(
                        -t / gpu.tau_heat_s)
                else:
                    temp = gpu.idle_c + (end_c - gpu.idle_c) * math.exp(
                        -(t - last_bench_s) / gpu.tau_cool_s)
                throttled = bench and t >= 0.7 * BENCH_S
                sm = ((gpu.sm_throttled_mhz if throttled else gpu.sm_max_mhz) if bench
                      else 300.0)
                power = (gpu.bench_w if bench else gpu.idle_w) + rng.normal(0, gpu.power_noise_w)
                row = dict(zip(COLUMNS, (
                    start + timedelta(seconds=t), HOST, gpu.uuid, gpu.bus_id, gpu.name,
                    gpu.index, tag, memo, phase_run_id,
                    int(round(temp + rng.normal(0, 1.0))), round(power, 2), sm,
                    throttled if gpu.thermal_reported else None,
                    bench if gpu.power_cap else False,
                    not bench,
                ), strict=True))
                rows.append(tuple(None if c in gpu.missing else v for c, v in row.items()))
                t += STEP_S
    # Through the store, as the collector stores them: one statement for all the rows.
    sql_types = schema.column_types()
    sampled: dict[tuple, list[GpuReading]] = {}
    for row in rows:
        values = dict(zip(COLUMNS, row, strict=True))
        head = tuple(values.pop(c) for c in ("ts", "host", "status_tag", "status_memo",
                                              "run_id"))
        whole = {c: int(v) for c, v in values.items()
                 if isinstance(v, float) and sql_types[c] in ("smallint", "integer", "bigint")}
        sampled.setdefault(head, []).append(GpuReading(**{**values, **whole}))
    with psycopg.connect(**conninfo(db.env), autocommit=True) as conn:
        insert_samples(conn, [Sample(ts, host, Status(tag, memo, run_id), gpus)
                              for (ts, host, tag, memo, run_id), gpus in sampled.items()],
                       raw_every_sec=0)


def report(tmp_path, db_env, *args: str):
    return run_script("report_run.py", *args, env=base_env(tmp_path, db_env),
                      tmp_path=tmp_path, timeout=120)


def check_gpu(got: dict, gpu: Gpu) -> None:
    assert got["gpu_uuid"] == gpu.uuid
    assert got["gpu_name"] == gpu.name
    assert got["pci_bus_id"] == gpu.bus_id
    assert got["host"] == HOST
    for key, want in gpu.expected().items():
        assert got[key] == pytest.approx(want, rel=TOLERANCE), (gpu.uuid, key, got[key], want)
    if gpu.thermal_reported:
        assert got["throttle_share"]["hw_thermal"] == pytest.approx(0.3, rel=TOLERANCE)
    else:
        assert "hw_thermal" not in got["throttle_share"]  # never reported: not a 0
    assert got["throttle_share"]["sw_power_cap"] == (1.0 if gpu.power_cap else 0.0)
    assert got["throttle_share"]["gpu_idle"] == 0.0


def test_json_recovers_the_known_constants(db, tmp_path):
    run_id = "gpuburn-20260104-100000"
    insert_run(db, FAN_100, run_id=run_id, suffix=" fan=100%")
    result = report(tmp_path, db.env, "--run-id", run_id, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["run_id"] == run_id
    assert data["memo"] == "gpu-burn (max workload) fan=100%"
    assert [g["gpu_uuid"] for g in data["gpus"]] == [g.uuid for g in FAN_100]
    for got, gpu in zip(data["gpus"], FAN_100, strict=True):
        check_gpu(got, gpu)
        assert got["notes"] == []
        assert got["phase_samples"] == {"idle": PRE_IDLE_S // STEP_S,
                                        "bench": BENCH_S // STEP_S,
                                        "cool": (POST_S + COOLDOWN_S) // STEP_S}
        assert got["samples"] == sum(got["phase_samples"].values())
    assert not (tmp_path / "docs").exists()


def test_markdown_and_png_are_written_and_a_nasty_memo_is_just_text(db, tmp_path):
    from matplotlib.image import imread

    run_id = "gpuburn-20260104-100000"
    insert_run(db, FAN_100, run_id=run_id, suffix=NASTY_MEMO)
    out = tmp_path / "reports" / "run.md"
    result = report(tmp_path, db.env, "--run-id", run_id, "--out", str(out), "--tz", "UTC")
    assert result.returncode == 0, result.stderr
    png = out.with_suffix(".png")
    assert f"wrote {out}" in result.stdout and f"wrote {png}" in result.stdout
    text = out.read_text()
    assert f"# Thermal report: {run_id}" in text
    assert "`gpu-burn (max workload) fan=25%'); DROP TABLE x; --`" in text
    assert "](run.png)" in text
    assert "| τ heating | 90 s |" in text.replace("89 s", "90 s").replace("91 s", "90 s")
    assert "2026-01-04 10:00:00 UTC" in text
    image = imread(png)
    assert image.ndim == 3 and image.shape[0] > 500 and image.shape[1] > 800
    assert float(image[..., :3].std()) > 0.05  # not blank
    with psycopg.connect(**conninfo(db.env)) as conn:
        memo = conn.execute("SELECT status_memo FROM telemetry.gpu_telemetry"
                            " WHERE status_tag = 'bench' LIMIT 1").fetchone()[0]
    assert memo.endswith(NASTY_MEMO)


def test_compare_puts_two_runs_side_by_side(db, tmp_path):
    first, second = "gpuburn-20260104-100000", "gpuburn-20260104-130000"
    insert_run(db, FAN_100, run_id=first, suffix=" fan=100%")
    insert_run(db, FAN_25, run_id=second, suffix=" fan=25%", start=START + timedelta(hours=3),
               seed=2)
    result = report(tmp_path, db.env, "--compare", first, second, "--json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert [r["run_id"] for r in runs] == [first, second]
    for run, gpus in zip(runs, (FAN_100, FAN_25), strict=True):
        for got, gpu in zip(run["gpus"], gpus, strict=True):
            check_gpu(got, gpu)

    out = tmp_path / "compare.md"
    result = report(tmp_path, db.env, "--compare", first, second, "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| |"))
    assert header.count(first) == 2 and header.count(second) == 2
    assert header.index(first) < header.index(second)
    assert "`gpu-burn (max workload) fan=25%`" in text
    assert out.with_suffix(".png").stat().st_size > 10_000


# matplotlib's first colour, the first GPU's curve: a pixel this much bluer than red is it.
BLUE_OVER_RED = 0.25


def reports_of(db, *run_ids: str):
    from gpu_telemetry.analysis.report.model import Selection
    from gpu_telemetry.analysis.report.query import build_reports

    with psycopg.connect(**conninfo(db.env)) as conn:
        return build_reports(conn, [Selection(run_id=run_id) for run_id in run_ids])


def frames(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The axes frames of a PNG, top to bottom, as (left, top, right, bottom): black spines
    across most of the width, paired top and bottom."""
    dark = image[..., :3].max(axis=2) < 0.5
    rows = np.flatnonzero(dark.mean(axis=1) > 0.5)
    spines = [int(r) for i, r in enumerate(rows) if i == 0 or r - rows[i - 1] > 1]
    assert len(spines) % 2 == 0, spines
    boxes = []
    for top, bottom in zip(spines[::2], spines[1::2], strict=True):
        sides = np.flatnonzero(dark[top:bottom].mean(axis=0) > 0.9)
        boxes.append((int(sides[0]), top, int(sides[-1]), bottom))
    return boxes


def blue(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Where inside the box (spines left out) the first GPU's curve is drawn."""
    left, top, right, bottom = box
    inside = image[top + 2:bottom - 1, left + 2:right - 1, :3]
    return inside[..., 2] - inside[..., 0] > BLUE_OVER_RED


def test_a_temperature_only_history_draws_one_panel_with_its_curve(db, tmp_path):
    from matplotlib.image import imread

    from gpu_telemetry.analysis.plotting import render_png

    run_id = "gpuburn-20260104-100000"
    # As the original scripts stored it: temperature only.
    insert_run(db, [replace(FAN_100[0], missing=("clocks_sm_mhz", "power_draw_w"))],
               run_id=run_id)
    out = tmp_path / "run.md"
    result = report(tmp_path, db.env, "--run-id", run_id, "--out", str(out))
    assert result.returncode == 0, result.stderr
    image = imread(out.with_suffix(".png"))
    (box,) = frames(image)
    assert box[3] - box[1] > 0.7 * image.shape[0]  # nothing below it but the time axis
    assert blue(image, box).any(axis=0).mean() > 0.8  # the curve spans the run
    assert f"![Temperature of {run_id}](run.png)" in out.read_text()

    (run,) = reports_of(db, run_id)
    panels = render_png(run, tmp_path / "again.png")
    assert [p.column for p in panels] == ["temp_c"]
    assert panels[0].notes == ()
    assert np.allclose(panels[0].box_px, box, atol=2)


def test_compare_leaves_out_what_no_gpu_reports_and_names_the_gpu_that_lacks_power(db,
                                                                                  tmp_path):
    from matplotlib.image import imread

    from gpu_telemetry.analysis.plotting import render_compare_png, render_png

    first, second = "gpuburn-20260104-100000", "gpuburn-20260104-130000"
    no_clock = ("clocks_sm_mhz",)
    insert_run(db, [replace(g, missing=no_clock) for g in FAN_100], run_id=first)
    insert_run(db, (replace(FAN_25[0], missing=no_clock),
                    replace(FAN_25[1], missing=(*no_clock, "power_draw_w"))),
               run_id=second, start=START + timedelta(hours=3), seed=2)
    runs = reports_of(db, first, second)
    label = runs[1].gpus[1].label
    assert label == "GPU1 Tesla P4 (02:00.0)"
    panels = render_compare_png(runs, tmp_path / "compare.png")
    assert [p.column for p in panels] == ["temp_c", "power_draw_w"]
    assert [p.notes for p in panels] == [(), (f"not reported by this GPU: {label} in {second}",)]
    assert len(frames(imread(tmp_path / "compare.png"))) == 2
    alone = render_png(runs[1], tmp_path / "second.png")
    assert alone[-1].notes == (f"not reported by this GPU: {label}",)
    assert alone[0].notes == ()


def test_a_flat_power_series_gets_a_readable_range(db, tmp_path):
    from matplotlib.image import imread

    from gpu_telemetry.analysis.plotting import render_png

    run_id = "gpuburn-20260104-100000"
    insert_run(db, [replace(FAN_100[0], idle_w=50, bench_w=50, power_noise_w=0)], run_id=run_id)
    (run,) = reports_of(db, run_id)
    panels = {p.column: p for p in render_png(run, tmp_path / "flat.png")}
    low, high = panels["power_draw_w"].ylim
    assert high - low >= 10 and low < 45 and high > 55, (low, high)
    box = panels["power_draw_w"].box_px
    rows = np.flatnonzero(blue(imread(tmp_path / "flat.png"), box).any(axis=1))
    assert abs(np.median(rows) / (box[3] - box[1]) - 0.5) < 0.1  # a line across mid-panel


@pytest.mark.parametrize(("where", "said"), [
    ("file/run.md", "{tmp}/file is a file, not a folder ([Errno 17] File exists"),
    ("file/sub/run.md", "{tmp}/file is a file, not a folder ([Errno 20] Not a directory"),
    ("folder", "cannot write {tmp}/folder: it is a folder"),
    ("run.md", "cannot write {tmp}/run.png: [Errno 21] Is a directory"),
])
def test_an_output_that_cannot_be_written_is_exit_73_and_one_line(db, tmp_path, where, said):
    run_id = "gpuburn-20260104-100000"
    insert_run(db, FAN_100[:1], run_id=run_id)
    (tmp_path / "file").write_text("a file where a folder should be\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "run.png").mkdir()
    out = tmp_path / where
    result = report(tmp_path, db.env, "--run-id", run_id, "--out", str(out))
    assert result.returncode == 73, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("report_run.py: cannot write "), result.stderr
    assert said.format(tmp=tmp_path) in result.stderr, result.stderr


def test_start_end_selects_the_bench_by_tag(db, tmp_path):
    insert_run(db, FAN_100, run_id=None)  # tagged, but no run id: only a range finds it
    result = report(tmp_path, db.env, "--start", "2026-01-04T09:50", "--end",
                    "2026-01-04T10:40", "--tz", "UTC", "--host", HOST, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["run_id"] is None
    for got, gpu in zip(data["gpus"], FAN_100, strict=True):
        check_gpu(got, gpu)
    # Same range in another zone's local time.
    result = report(tmp_path, db.env, "--start", "2026-01-04T10:50", "--end",
                    "2026-01-04T11:40", "--tz", "Europe/Berlin", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["gpus"]) == 2


def test_a_run_without_pre_idle_or_cooldown_borrows_the_rows_around_it(db, tmp_path):
    run_id = "gpuburn-20260104-100000"
    insert_run(db, FAN_100, run_id=run_id, idle_in_run=False, cooldown_in_run=False)
    result = report(tmp_path, db.env, "--run-id", run_id, "--json")
    assert result.returncode == 0, result.stderr
    for got, gpu in zip(json.loads(result.stdout)["gpus"], FAN_100, strict=True):
        check_gpu(got, gpu)
        assert any("before" in note for note in got["notes"])
        assert any("after" in note for note in got["notes"])


@pytest.mark.parametrize("spec", ["1", "02:00.0", "0000:02:00.0", FAN_100[1].uuid, "GPU-bbbb"])
def test_gpu_picks_one_gpu(db, tmp_path, spec):
    run_id = "gpuburn-20260104-100000"
    insert_run(db, FAN_100, run_id=run_id)
    result = report(tmp_path, db.env, "--run-id", run_id, "--gpu", spec, "--json")
    assert result.returncode == 0, result.stderr
    assert [g["gpu_uuid"] for g in json.loads(result.stdout)["gpus"]] == [FAN_100[1].uuid]


def test_no_rows_is_exit_1_and_one_line(db, tmp_path):
    result = report(tmp_path, db.env, "--run-id", "gpuburn-20990101-000000", "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "no rows for run gpuburn-20990101-000000" in result.stderr


def test_dead_database_is_exit_75(tmp_path):
    result = report(tmp_path, None, "--run-id", "gpuburn-20260104-100000")
    assert result.returncode == 75
    assert result.stderr.count("\n") == 1 and "database unreachable" in result.stderr


def test_a_database_without_the_schema_is_exit_78_naming_init_db(db, tmp_path):
    with db.connect() as conn:
        conn.execute("DROP SCHEMA telemetry CASCADE")
    result = report(tmp_path, db.env, "--run-id", "gpuburn-20260104-100000", "--json")
    assert result.returncode == 78, result.stderr
    assert result.stderr.count("\n") == 1
    assert "schema missing" in result.stderr and "bin/init_db.sh" in result.stderr


def test_a_role_that_may_not_read_is_exit_77_naming_the_reader_role(db, tmp_path):
    role = f"no_read_{db.name}"
    with db.connect() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        result = report(tmp_path, {**db.env, "PGUSER": role}, "--run-id", "x", "--json")
    finally:
        with db.connect() as conn:
            conn.execute(f'DROP ROLE "{role}"')
    assert result.returncode == 77, result.stderr
    assert result.stderr.count("\n") == 1
    assert "may not do this: permission denied" in result.stderr
    assert "--reader-role" in result.stderr


def test_json_alone_never_loads_matplotlib(db, tmp_path):
    """The figures need no picture: --json without --out draws nothing and loads no plotting."""
    run_id = "gpuburn-20260104-100000"
    insert_run(db, FAN_100[:1], run_id=run_id)
    code = ("import sys; from gpu_telemetry.cli.report_run import main; "
            f"rc = main(['--run-id', '{run_id}', '--json']); "
            "print('matplotlib' in sys.modules, file=sys.stderr); raise SystemExit(rc)")
    result = subprocess.run([sys.executable, "-c", code], env=base_env(tmp_path, db.env),
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["run_id"] == run_id
    assert result.stderr.strip().splitlines()[-1] == "False"


def test_configuration_error_is_exit_78(tmp_path):
    result = run_script("report_run.py", "--run-id", "x", "--env", str(tmp_path / "missing.env"),
                        env=base_env(tmp_path, None), tmp_path=tmp_path)
    assert result.returncode == 78
    assert result.stderr.count("\n") == 1 and "env file not found" in result.stderr


@pytest.mark.parametrize(("args", "said"), [
    ([], "say which run: --run-id RUN, --start TIME [--end TIME] or --compare RUN RUN"),
    (["--run-id", "x", "--start", "2026-01-04T10:00"], "--run-id and --start contradict"),
    (["--run-id", "x", "--compare", "a", "b"], "--run-id and --compare contradict"),
    (["--compare", "a", "b", "--start", "2026-01-04T10:00"], "--start and --compare contradict"),
    (["--run-id", "x", "--end", "2026-01-04T09:00"], "--end goes with --start, not with --run-id"),
    (["--compare", "a", "b", "--end", "2026-01-04T09:00"], "not with --compare"),
    (["--end", "2026-01-04T09:00"], "--end needs --start"),
    (["--start", "yesterday"], "--start: not an ISO 8601 time: 'yesterday' (e.g. 2026-"),
    (["--start", "2026-01-04T10:00", "--end", "soon"], "--end: not an ISO 8601 time: 'soon'"),
    (["--start", "2026-01-04T10:00", "--end", "2026-01-04T09:00"],
     "the range is empty: --end 2026-01-04T09:00 is not after --start 2026-01-04T10:00"),
    (["--start", "2999-01-01T00:00"], "--start 2999-01-01T00:00 is in the future"),
    (["--run-id", "x", "--tz", "Mars/Olympus"], "--tz: unknown time zone 'Mars/Olympus'"),
    (["--run-id", " "], "--run-id is empty"),
    (["--run-id", "x", "--gpu", ""], "--gpu is empty"),
    (["--compare", "a", "a"], "--compare needs two different runs, got a twice"),
    (["--compare", "a"], "--compare: expected 2 arguments"),
    (["--run-id", "x", "--out", "x.png"], "--out x.png: name the Markdown file (e.g. x.md)"),
    (["--run-id", "x", "--out", ""], "--out '.' names no file"),
])
def test_usage_errors_are_exit_2_and_one_line_saying_what_is_wrong(args, said, tmp_path):
    result = report(tmp_path, None, *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("report_run.py: ") and said in result.stderr, result.stderr


def exit_codes(text: str) -> set[int]:
    return {int(code) for code in re.findall(r"(?<![\w.=-])(\d{1,3})(?![\w.%])", text)}


def test_every_exit_status_is_listed_alike_in_help_readme_and_troubleshooting(tmp_path):
    expected = {0, 1, 2, 70, 73, 75, 77, 78, 130}
    help_text = report(tmp_path, None, "--help").stdout
    paragraph = next(p for p in help_text.split("\n\n") if "Exit status" in p)
    assert exit_codes(paragraph.split("Exit status", 1)[1]) == expected
    readme = (REPO_ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `bin/report_run.py`"))
    assert exit_codes(row.split("|")[-2]) == expected, row
    troubleshooting = (REPO_ROOT / "docs" / "troubleshooting.md").read_text()
    row = next(line for line in troubleshooting.splitlines()
               if line.startswith("| `report_run.py` |"))
    assert exit_codes(row.split("|")[2]) == expected, row


def test_help_has_examples(tmp_path):
    result = report(tmp_path, None, "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout and "--compare" in result.stdout


@pytest.mark.parametrize(("text", "shown"), [
    ("fan=25%'); DROP TABLE x; --", "`fan=25%'); DROP TABLE x; --`"),
    ("a `tick` | pipe", "``a `tick` \\| pipe``"),
    ("`edge", "`` `edge ``"),
])
def test_memos_are_shown_verbatim_in_markdown(text, shown):
    from gpu_telemetry.analysis.report.text import md_code

    assert md_code(text) == shown


SPLIT_CASES = {
    # tags in time order -> (idle, bench, cool) as indexes, and the note it leaves
    "a whole run": ("i i b b b i i", ([0, 1], [2, 3, 4], [5, 6]), None),
    "no pre-idle": ("b b i", ([], [0, 1], [2]), None),
    "no cooldown": ("i b b", ([0], [1, 2]), None),
    "an untagged row inside the bench is left out": (
        "i b - b i", ([0], [1, 3], [4]), "1 rows inside the bench were not tagged bench"),
    "prod before, idle after": ("p b i", ([0], [1], [2]), None),
    "no bench at all": ("i i p", ([0, 1, 2], [], []), "no rows tagged bench"),
}
TAG_LETTERS = {"i": "idle", "b": "bench", "p": "prod", "-": None}


@pytest.mark.parametrize("case", SPLIT_CASES)
def test_the_rows_split_into_idle_bench_and_cooling(case):
    from gpu_telemetry.analysis.report.model import GpuRun, split_phases

    tags, want, note = SPLIT_CASES[case]
    want = (*want, [])[:3]
    rows = [{"n": n, "status_tag": TAG_LETTERS[letter]}
            for n, letter in enumerate(tags.split())]
    gpu = GpuRun("h", "GPU-x", None, None, 0)
    split_phases(gpu, rows)
    assert ([r["n"] for r in gpu.idle], [r["n"] for r in gpu.bench],
            [r["n"] for r in gpu.cool]) == want
    assert (note is None and gpu.notes == []) or any(note in n for n in gpu.notes), gpu.notes
