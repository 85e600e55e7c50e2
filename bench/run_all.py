#!/usr/bin/env python3
"""Every benchmark, one table: figure, ours, baseline, ratio, target, pass.

Run: uv run python bench/run_all.py [--quick] [--only NAME,...]

Each benchmark starts its own throwaway PostgreSQL (tests.pgserver.PgServer: initdb + pg_ctl, as
the `postgres` user when run as root, or the server TEST_PGHOST names) and exposes
`measure(quick) -> list[dict]`; plot_bench.py is run as a command and its verdict lines read.
The full run takes about half an hour on a 2-CPU machine (the 24-hour recovery backlog is most
of it); --quick runs smaller sizes in a few minutes, for a smoke test rather than for the
figures. Exit status 1 when any target is missed (or a benchmark failed), else 0.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.flush_bench import cpu_model  # noqa: E402


def measure_plot(quick: bool) -> list[dict]:
    """bench/plot_bench.py as a command (it has no measure()); its verdict lines."""
    args = ["--days", "30", "--repeat", "2", "--original-repeat", "1"] if quick else []
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "plot_bench.py"), *args],
                            capture_output=True, text=True, check=False)
    seconds = dict(re.findall(r"^(floor|ours|plain|original)\s+([\d.]+)\s", result.stdout,
                              re.MULTILINE))
    above = re.search(r"ours above the floor: ([\d.]+) s \(target <= ([\d.]+) s\)",
                      result.stdout)
    speedup = re.search(r"original / ours: ([\d.]+)x \(target >= ([\d.]+)x\)", result.stdout)
    if not (above and speedup and "ours" in seconds):
        raise RuntimeError(f"plot_bench.py gave no verdict (exit {result.returncode}):\n"
                           f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    limit, target = float(above.group(2)), float(speedup.group(2))
    return [
        {"figure": "plot: a month at 1 Hz, 2 GPUs, s (baseline: floor)",
         "ours": float(seconds["ours"]), "baseline": float(seconds["floor"]),
         "ratio": f"+{float(above.group(1)):.2f} s", "target": f"<= +{limit:g} s",
         "pass": float(above.group(1)) <= limit},
        {"figure": "plot: a month at 1 Hz, 2 GPUs, s (baseline: original)",
         "ours": float(seconds["ours"]), "baseline": float(seconds["original"]),
         "ratio": f"{float(speedup.group(1)):.1f}x faster", "target": f">= {target:g}x",
         "pass": float(speedup.group(1)) >= target},
    ]


def module_measure(name: str) -> Callable[[bool], list[dict]] | None:
    if not (REPO_ROOT / "bench" / f"{name}.py").is_file():
        return None
    module = importlib.import_module(f"bench.{name}")
    return getattr(module, "measure", None)


BENCHMARKS: tuple[tuple[str, Callable[[], Callable[[bool], list[dict]] | None]], ...] = (
    ("storage", lambda: module_measure("storage_bench")),
    ("sampling", lambda: module_measure("sampling_bench")),
    ("recovery", lambda: module_measure("recovery_bench")),
    ("flush", lambda: module_measure("flush_bench")),
    ("plot", lambda: measure_plot),
    ("upgrade", lambda: module_measure("upgrade_bench")),
    ("nvml", lambda: module_measure("nvml_bench")),
)


def machine() -> str:
    model = cpu_model()
    memory = ""
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB memory"
                break
    postgres = "PostgreSQL: TEST_PGHOST" if os.environ.get("TEST_PGHOST") else ""
    if not postgres:
        try:
            from tests.pgserver import find_pg_bindir

            postgres = subprocess.run([str(find_pg_bindir() / "postgres"), "--version"],
                                      capture_output=True, text=True,
                                      check=False).stdout.strip()
        except Exception as exc:  # noqa: BLE001 - the line is information only
            postgres = f"PostgreSQL: {exc}"
    import psycopg

    return (f"{len(os.sched_getaffinity(0))} CPUs, {model}{memory}; Linux "
            f"{platform.release()}; Python {platform.python_version()}, psycopg "
            f"{psycopg.__version__}; {postgres} (throwaway servers, fsync off)")


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, float):
        return (f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 10
                else f"{value:,.1f}")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(rows: list[dict]) -> None:
    header = ("figure", "ours", "baseline", "ratio", "target", "pass")
    table = [header, *[tuple(cell(row.get(key)) for key in header) for row in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {1, 2, 3}

    def line(values) -> str:
        return "| " + " | ".join(value.rjust(width) if i in right else value.ljust(width)
                                 for i, (value, width) in enumerate(zip(values, widths,
                                                                        strict=True))) + " |"

    print(line(header))
    print("|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2)
                         for i, w in enumerate(widths)) + "|")
    for values in table[1:]:
        print(line(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and fewer repetitions (a smoke test)")
    names = [name for name, _ in BENCHMARKS]
    parser.add_argument("--only", metavar="NAME,...",
                        help=f"run only these benchmarks ({', '.join(names)})")
    args = parser.parse_args(argv)
    chosen = names
    if args.only:
        chosen = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(names)}")

    rows: list[dict] = []
    notes: list[str] = []
    for name, find in BENCHMARKS:
        if name not in chosen:
            continue
        print(f"== {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        saved = dict(os.environ)
        try:
            measure = find()
            if measure is None:
                notes.append(f"{name}: skipped (bench/{name}_bench.py or its measure() is "
                             "missing)")
                continue
            rows.extend(measure(args.quick))
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - one failure must not hide the rest
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
            rows.append({"figure": f"{name}: benchmark failed: {detail[:120]}", "ours": None,
                         "baseline": None, "ratio": None, "target": "runs", "pass": False})
        finally:
            os.environ.clear()
            os.environ.update(saved)
        print(f"== {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    print()
    print_table(rows)
    print(f"\nmachine: {machine()}")
    if args.quick:
        print("--quick: smaller sizes, fewer repetitions; the figures of record are the full run")
    for note in notes:
        print(f"note: {note}")
    failed = [row for row in rows if row.get("pass") is False]
    print(f"\n{len(failed)} target(s) missed" if failed else "\nevery target met")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
