#!/usr/bin/env python3
"""How fast the spool flush is, against its floor and against the original scripts' approach.

One command: `uv run python bench/flush_bench.py [--samples N] [--repeat R] [--durable]`.
It starts a throwaway PostgreSQL (tests.pgserver.PgServer), applies the schema with the real
bin/init_db.sh into a template database, writes N spool files the way collect_once.py does
(the 2-GPU dual-2080-v13 capture; raw_json null except every 120th sample, as RAW_EVERY_SEC=600
at a 5 s interval keeps it) and times, each on a fresh copy of the database, R times:

  floor     read + parse + validate every file (collector.spool.read_spool_file), then one
            COPY of all the rows into an unlogged table: what any flush must at least do;
  ours      collector.flush.flush_spool, as bin/flush_spool.py calls it (files recreated
            before each repetition);
  original  per file: one transaction, its rows stored (db.store.insert_samples: one
            statement for the file's GPUs, as the loop stores a sample), COMMIT, unlink: the
            original scripts' transaction per file, on our own tables.

It prints the medians, the ratios and the machine. The server runs with the test suite's
settings (fsync, full_page_writes and synchronous_commit off) unless --durable switches them on,
which is what a real server does and what makes a COMMIT per file expensive.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from gpu_telemetry.collector.flush import flush_spool  # noqa: E402
from gpu_telemetry.collector.parser import element_to_json, parse_document  # noqa: E402
from gpu_telemetry.collector.spool import pending_files, read_spool_file, write_spool  # noqa: E402
from gpu_telemetry.config import Config  # noqa: E402
from gpu_telemetry.db.store import ROW_COLUMNS, insert_samples  # noqa: E402
from gpu_telemetry.records import Sample, Status  # noqa: E402
from gpu_telemetry.schema import GPU_COLUMNS  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "nvidia-smi" / "dual-2080-v13.xml"
TEMPLATE = "flush_bench_template"
INTERVAL_SEC = 5
RAW_EVERY_SAMPLES = 120
RAW_EVERY_SEC = INTERVAL_SEC * RAW_EVERY_SAMPLES
BATCH_SAMPLES = 1000  # bin/flush_spool.py's default --batch


def conninfo(server: PgServer, dbname: str) -> dict[str, str]:
    keys = {"PGHOST": "host", "PGPORT": "port", "PGUSER": "user", "PGDATABASE": "dbname",
            "PGPASSWORD": "password"}
    return {keys[k]: v for k, v in server.libpq_env(dbname).items()}


def admin(server: PgServer) -> psycopg.Connection:
    return psycopg.connect(**conninfo(server, "postgres"), autocommit=True)


def make_template(server: PgServer) -> None:
    with admin(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(server.libpq_env(TEMPLATE))
    result = subprocess.run(["bash", str(REPO_ROOT / "bin" / "init_db.sh")], env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"bin/init_db.sh failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def fresh_database(server: PgServer, name: str) -> str:
    with admin(server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                     .format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}")
                     .format(sql.Identifier(name), sql.Identifier(TEMPLATE)))
    return name


def write_master_spool(folder: Path, count: int) -> list[Path]:
    """`count` spool files exactly as collect_once.py writes them (write_spool, fsync and all)."""
    reading = parse_document(FIXTURE.read_bytes())
    status = Status("bench", "gpu-burn fan=25%", "gpuburn-20260104-000000")
    start = datetime(2026, 1, 4, tzinfo=UTC)
    for i in range(count):
        gpus = [replace(gpu, raw_json=element_to_json(reading.elements[gpu.gpu_uuid])
                        if i % RAW_EVERY_SAMPLES == 0 else None) for gpu in reading.gpus]
        sample = Sample(start + timedelta(seconds=i * INTERVAL_SEC), "x1ai", status, gpus)
        write_spool(folder, sample, [], "database unreachable: connection refused")
    return pending_files(folder)


def restock(master: list[Path], spool_dir: Path) -> None:
    """The same files again in an empty spool (hard links: the flush unlinks only its copy)."""
    shutil.rmtree(spool_dir, ignore_errors=True)
    spool_dir.mkdir()
    for path in master:
        os.link(path, spool_dir / path.name)


def run_floor(server: PgServer, dbname: str, spool_dir: Path) -> tuple[float, int]:
    """Read, parse and validate every file, streaming its rows into one COPY; one COMMIT.
    Streamed rather than loaded first, so the floor does not pay for holding every row in
    memory (691,200 in the recovery benchmark): the lowest bar for ours."""
    with psycopg.connect(**conninfo(server, dbname)) as conn:
        conn.execute("CREATE UNLOGGED TABLE flush_floor (LIKE telemetry.gpu_telemetry)")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(
                f"COPY flush_floor ({', '.join(ROW_COLUMNS)}) FROM STDIN") as copy:
            for path in pending_files(spool_dir):
                sample = read_spool_file(path).sample
                head = (sample.ts, sample.host, sample.status.tag, sample.status.memo,
                        sample.status.run_id)
                for gpu in sample.gpus:
                    raw = gpu.raw_json
                    copy.write_row((*head, *(getattr(gpu, c) for c in GPU_COLUMNS),
                                    Jsonb(raw) if raw is not None else None))
        conn.commit()
        elapsed = time.perf_counter() - started
        (rows,) = conn.execute("SELECT count(*) FROM flush_floor").fetchone()
    return elapsed, rows


def run_ours(server: PgServer, dbname: str, spool_dir: Path) -> tuple[float, int]:
    for key, value in server.libpq_env(dbname).items():
        os.environ[key] = value
    config = Config(sample_interval_sec=INTERVAL_SEC, nvidia_smi="nvidia-smi",
                    nvidia_smi_timeout_sec=10, spool_dir=spool_dir,
                    status_file=spool_dir.parent / "status.json", log_dir=spool_dir.parent,
                    gpu_burn_dir=spool_dir.parent, raw_every_sec=RAW_EVERY_SEC,
                    spool_max_mb=1024, retention_days=None, env_file=None)
    started = time.perf_counter()
    result = flush_spool(config, batch_samples=BATCH_SAMPLES)
    elapsed = time.perf_counter() - started
    if result.quarantined or pending_files(spool_dir):
        sys.exit(f"ours left files behind: {result.summary()}")
    return elapsed, result.rows_inserted


def run_original(server: PgServer, dbname: str, spool_dir: Path) -> tuple[float, int]:
    with psycopg.connect(**conninfo(server, dbname), autocommit=True) as conn:
        started = time.perf_counter()
        for path in pending_files(spool_dir):
            spooled = read_spool_file(path)
            insert_samples(conn, [spooled.sample], RAW_EVERY_SEC)
            path.unlink()
        elapsed = time.perf_counter() - started
        (rows,) = conn.execute("SELECT count(*) FROM telemetry.gpu_samples").fetchone()
    return elapsed, rows


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def median_runs(server: PgServer, name: str, run: Callable, master: list[Path],
                spool_dir: Path, repeat: int, expected_rows: int, prefix: str = "flush_bench"
                ) -> tuple[float, list[float]]:
    """Median seconds of `repeat` runs, each on a fresh database <prefix>_<name> (the last one
    is left for the caller) and a restocked spool; a run that did not store exactly the
    expected rows ends the benchmark."""
    times = []
    for repetition in range(repeat):
        restock(master, spool_dir)
        dbname = fresh_database(server, f"{prefix}_{name}")
        elapsed, rows = run(server, dbname, spool_dir)
        if rows != expected_rows:
            sys.exit(f"{name}: {rows} rows, expected {expected_rows}")
        times.append(elapsed)
        print(f"{name} #{repetition + 1}: {elapsed:.3f} s ({rows} rows)", file=sys.stderr,
              flush=True)
    return statistics.median(times), times


def machine(server: PgServer) -> str:
    model = cpu_model()
    with admin(server) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = conn.execute(
            "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings"
            " WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes')").fetchone()[0]
    return (f"machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {model}; "
            f"Python {platform.python_version()}, psycopg {psycopg.__version__}; "
            f"PostgreSQL {version} ({settings})")


def run_figures(samples: int, repeat: int, durable: bool = False
                ) -> tuple[dict[str, float], str]:
    """The median seconds of floor, ours and original, and the machine line."""
    work = Path(tempfile.mkdtemp(prefix="flush-bench-"))
    server = PgServer()
    try:
        server.start()
        if durable:
            with admin(server) as conn:
                for name in ("fsync", "full_page_writes", "synchronous_commit"):
                    conn.execute(sql.SQL("ALTER SYSTEM SET {} = on").format(sql.Identifier(name)))
                conn.execute("SELECT pg_reload_conf()")
        make_template(server)
        print(f"writing {samples} spool files ...", file=sys.stderr)
        master = write_master_spool(work / "master", samples)
        spool_dir = work / "spool"
        figures: list[tuple[str, Callable]] = [
            ("floor", run_floor), ("ours", run_ours), ("original", run_original)]
        medians = {name: median_runs(server, name, run, master, spool_dir, repeat,
                                     2 * samples)[0]
                   for name, run in figures}
        return medians, machine(server)
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def measure(quick: bool = False) -> list[dict]:
    """Rows for bench/run_all.py; information only: the targets are recovery_bench.py's, on the
    24-hour, 8-GPU backlog."""
    samples = 2000 if quick else 5000
    medians, _ = run_figures(samples, 1 if quick else 3)
    floor, ours, original = medians["floor"], medians["ours"], medians["original"]
    return [
        {"figure": f"flush: {samples:,} files x 2 GPUs, s (baseline: floor)",
         "ours": round(ours, 3), "baseline": round(floor, 3),
         "ratio": f"{ours / floor:.2f}x of floor", "target": "-", "pass": None},
        {"figure": f"flush: {samples:,} files x 2 GPUs, s (baseline: a COMMIT per file)",
         "ours": round(ours, 3), "baseline": round(original, 3),
         "ratio": f"{original / ours:.1f}x faster", "target": "-", "pass": None},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5000, metavar="N",
                        help="spool files (samples of 2 GPUs each; default: 5000)")
    parser.add_argument("--repeat", type=int, default=3, metavar="R",
                        help="repetitions of each figure, the median is shown (default: 3)")
    parser.add_argument("--durable", action="store_true",
                        help="fsync, full_page_writes and synchronous_commit on, as in production")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.repeat < 1:
        parser.error("--samples and --repeat must be at least 1")

    medians, machine_line = run_figures(args.samples, args.repeat, args.durable)
    floor, original = medians["floor"], medians["original"]
    expected_rows = 2 * args.samples
    print(f"\n{args.samples} samples x 2 GPUs = {expected_rows} rows, "
          f"median of {args.repeat}, batch {BATCH_SAMPLES}\n")
    print("| figure   | seconds | samples/s | vs floor | vs original |")
    print("|----------|--------:|----------:|---------:|------------:|")
    for name, seconds in medians.items():
        print(f"| {name:<8} | {seconds:7.3f} | {args.samples / seconds:9.0f} "
              f"| {seconds / floor:7.2f}x | {seconds / original:10.2f}x |")
    print(f"\n{machine_line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
