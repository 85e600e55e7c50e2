"""Plotting benchmark: 30 days of 1 Hz samples for 2 GPUs (5.2 million rows), plotted over the
whole range, side by side with the floor any plotting command pays and with the original's
approach. Run: uv run python bench/plot_bench.py [--days 30] [--repeat 5]

floor     start Python, import matplotlib and psycopg, save a trivial PNG
ours      bin/plot_temp.py over the whole range (rollup + ragged ends, query during imports)
plain     the same picture from a time-bucket GROUP BY over the raw rows (no rollup)
original  fetch every row of the range and draw every point (the original plot_temp.py)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402

from bench import synthetic  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)

FLOOR = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import psycopg
fig, ax = plt.subplots()
ax.plot([0, 1], [0, 1])
fig.savefig({out!r})
"""

PLAIN = """
import sys
sys.path.insert(0, {repo!r})
sys.argv = ["plot_temp.py", *{args!r}]
import gpu_telemetry.db.series as queries
queries.ROLLUP_BUCKET_SEC = 10 ** 9  # never read the rollup: bucket the raw rows
sys.path.insert(0, {bin!r})
import runpy
runpy.run_path({script!r}, run_name="__main__")
"""

ORIGINAL = """
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import psycopg
with psycopg.connect("") as conn:
    rows = conn.execute(
        "SELECT ts, host, gpu_name, pci_bus_id, temp_c FROM telemetry.gpu_telemetry"
        " WHERE ts >= %s AND ts < %s ORDER BY ts", ({start!r}, {end!r})).fetchall()
lines = {{}}
for ts, host, name, bus, temp in rows:
    xs, ys = lines.setdefault((host, name, bus), ([], []))
    xs.append(ts)
    ys.append(temp)
fig, ax = plt.subplots(figsize=(14, 6))
for (host, name, bus), (xs, ys) in lines.items():
    ax.plot(xs, ys, label=f"{{name}} {{bus}}")
ax.legend()
fig.savefig({out!r})
"""


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"failed: {command[:3]}...\n{result.stdout}{result.stderr}")
    return elapsed


def median_of(repeat: int, command: list[str], env: dict) -> float:
    return statistics.median(timed(command, env) for _ in range(repeat))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--original-repeat", type=int, default=3)
    args = parser.parse_args()
    end = START + timedelta(days=args.days)
    server = PgServer()
    server.start()
    work = Path(tempfile.mkdtemp(prefix="plot-bench-"))
    try:
        env = {**os.environ, **server.libpq_env("postgres"), "PYTHONDONTWRITEBYTECODE": "1"}
        subprocess.run(["bash", str(REPO_ROOT / "bin" / "init_db.sh")], env=env, check=True,
                       capture_output=True)
        os.environ.update(server.libpq_env("postgres"))
        with psycopg.connect("", autocommit=True) as conn:
            started = time.perf_counter()
            rows = synthetic.load(conn, START, end)
            conn.execute("VACUUM ANALYZE telemetry.gpu_samples")
            conn.execute("VACUUM ANALYZE telemetry.gpu_telemetry_1m")
            print(f"loaded {rows:,} rows ({args.days:g} days, 1 Hz, 2 GPUs) in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        python = sys.executable
        plot = str(REPO_ROOT / "bin" / "plot_temp.py")
        whole = ["--start", START.isoformat(), "--end", end.isoformat(), "--tz", "utc"]
        (work / "floor.py").write_text(FLOOR.format(out=str(work / "floor.png")))
        (work / "plain.py").write_text(PLAIN.format(
            repo=str(REPO_ROOT), bin=str(REPO_ROOT / "bin"), script=plot,
            args=[*whole, "--out", str(work / "plain.png")]))
        (work / "original.py").write_text(ORIGINAL.format(
            start=START.isoformat(), end=end.isoformat(), out=str(work / "original.png")))
        figures = {
            "floor": median_of(args.repeat, [python, str(work / "floor.py")], env),
            "ours": median_of(args.repeat, [python, plot, *whole, "--out",
                                            str(work / "ours.png")], env),
            "plain": median_of(args.repeat, [python, str(work / "plain.py")], env),
            "original": median_of(args.original_repeat, [python, str(work / "original.py")],
                                  env),
        }
    finally:
        server.cleanup()
    floor, ours = figures["floor"], figures["ours"]
    print(f"\n{'figure':<10} {'seconds':>8} {'above floor':>12} {'original / it':>14}")
    for name, seconds in figures.items():
        print(f"{name:<10} {seconds:>8.2f} {seconds - floor:>+11.2f}s "
              f"{figures['original'] / seconds:>13.1f}x")
    above = ours - floor
    speedup = figures["original"] / ours
    print(f"\nours above the floor: {above:.2f} s (target <= 0.75 s): "
          f"{'pass' if above <= 0.75 else 'FAIL'}")
    print(f"original / ours: {speedup:.1f}x (target >= 10x): "
          f"{'pass' if speedup >= 10 else 'FAIL'}")
    print(f"medians of {args.repeat} ({args.original_repeat} for the original); "
          f"{os.cpu_count()} CPUs; {sys.version.split()[0]}")
    return 0 if above <= 0.75 and speedup >= 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
