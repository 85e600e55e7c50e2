"""Storage benchmark: bytes per GPU sample, over every table of the telemetry schema (heap,
TOAST, indexes, partitions, GPU identities, statuses, raw snapshots, the rollup), against the
original layout on the same document; and retention of a 90-day history to 30 days by dropping
partitions, against a DELETE of the same rows.

The original stored the whole `nvidia-smi -q -x` output as jsonb on every row, with three
secondary indexes. Ours keeps typed columns in narrow month partitions, the GPU's identity and
the status once each by id, and a raw snapshot every RAW_EVERY_SEC (600 s by default: one
sample in 120 at the default 5 s interval, one in 600 at 1 s).

Run: uv run python bench/storage_bench.py [--samples 24000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from gpu_telemetry.collector.parser import element_to_json, parse_document  # noqa: E402
from gpu_telemetry.db.store import insert_samples  # noqa: E402
from gpu_telemetry.records import Sample, Status  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402

DOCUMENT = REPO_ROOT / "tests" / "fixtures" / "nvidia-smi" / "rtx-3080-v13.xml"
START = datetime(2026, 1, 1, tzinfo=UTC)
TARGET_RATIO = 25.0

ORIGINAL_SCHEMA = """
CREATE SCHEMA original;
CREATE TABLE original.gpu_telemetry (
    id           bigserial PRIMARY KEY,
    ts           timestamptz NOT NULL,
    host         text NOT NULL,
    gpu_name     text,
    gpu_uuid     text,
    pci_bus_id   text,
    temp_c       integer,
    power_draw_w double precision,
    status_tag   text,
    status_memo  text,
    raw_json     jsonb
);
CREATE INDEX ON original.gpu_telemetry (ts);
CREATE INDEX ON original.gpu_telemetry (host, ts);
CREATE INDEX ON original.gpu_telemetry (status_tag, ts);
"""

SCHEMA_BYTES = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'm')
"""

# Where the bytes go: each table of the schema (a partition counted with its parent), its heap
# (with TOAST) and its indexes.
BREAKDOWN = """
SELECT coalesce(parent.relname, c.relname) AS name,
       sum(pg_table_size(c.oid)) AS heap, sum(pg_indexes_size(c.oid)) AS indexes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
LEFT JOIN pg_class parent ON parent.oid = i.inhparent
WHERE n.nspname = 'telemetry' AND c.relkind = 'r'
GROUP BY 1 ORDER BY sum(pg_total_relation_size(c.oid)) DESC
"""
EMPTY = ("TRUNCATE telemetry.gpu_samples, telemetry.gpu_raw, telemetry.gpu_telemetry_1m,"
         " telemetry.collector_events")

# 90 days of samples every 30 s for 2 GPUs, ending now, generated in the server.
HISTORY = """
INSERT INTO telemetry.gpu_samples (ts, gpu_id, status_id, temp_c, power_draw_w)
SELECT now() - i * interval '30 seconds', g, %(status)s, 40 + i %% 40, 100
FROM generate_series(0, 90 * 2880 - 1) AS i, unnest(%(gpus)s::integer[]) AS g
"""


def load_ours(conn: psycopg.Connection, samples: int, interval_sec: float,
              raw_every_sec: float) -> int:
    """Samples as the collector stores them: every sample offers its raw snapshot and the
    store keeps one per RAW_EVERY_SEC, as the loop and the flush do."""
    document = DOCUMENT.read_bytes()
    reading = parse_document(document)
    gpu = reading.gpus[0]
    raw = element_to_json(reading.elements[gpu.gpu_uuid])
    status = Status("idle", "pre gpu-burn idle (baseline) fan=25%")
    batch = []
    for i in range(samples):
        batch.append(Sample(START + timedelta(seconds=i * interval_sec), "x1ai", status,
                            [replace(gpu, raw_json=raw)]))
        if len(batch) == 1000 or i == samples - 1:
            insert_samples(conn, batch, raw_every_sec)
            batch = []
    return samples


def load_original(conn: psycopg.Connection, samples: int, interval_sec: float) -> int:
    xml = DOCUMENT.read_text()
    gpu = parse_document(DOCUMENT.read_bytes()).gpus[0]
    statement = ("COPY original.gpu_telemetry (ts, host, gpu_name, gpu_uuid, pci_bus_id,"
                 " temp_c, power_draw_w, status_tag, status_memo, raw_json) FROM STDIN")
    with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
        for i in range(samples):
            copy.write_row((START + timedelta(seconds=i * interval_sec), "x1ai",
                            gpu.gpu_name, gpu.gpu_uuid, gpu.pci_bus_id,
                            gpu.temp_c, gpu.power_draw_w, "idle",
                            "pre gpu-burn idle (baseline) fan=25%",
                            Jsonb({"nvidia_smi_q_x": xml})))
    return samples


def schema_bytes(conn: psycopg.Connection, schema: str) -> int:
    conn.execute("VACUUM ANALYZE")
    return int(conn.execute(SCHEMA_BYTES, (schema,)).fetchone()[0])


def breakdown(conn: psycopg.Connection, samples: int) -> list[tuple[str, float, float]]:
    conn.execute("VACUUM ANALYZE")
    return [(name, heap / samples, indexes / samples)
            for name, heap, indexes in conn.execute(BREAKDOWN).fetchall()
            if heap + indexes]


def _load_history(conn: psycopg.Connection) -> int:
    gpus = [conn.execute("SELECT telemetry.gpu_id(%s, %s, NULL, 'Tesla P40', '550.54')",
                         ("x1ai", f"GPU-{n}")).fetchone()[0] for n in range(2)]
    status = conn.execute("SELECT telemetry.status_id('idle', NULL, NULL)").fetchone()[0]
    conn.execute("SELECT telemetry.ensure_partitions(now() - interval '91 days', now())")
    conn.execute("SET telemetry.rollup = 'off'")  # the rollup is not what is measured here
    try:
        with conn.cursor() as cur:
            cur.execute(HISTORY, {"status": status, "gpus": gpus})
            rows = cur.rowcount
    finally:
        conn.execute("RESET telemetry.rollup")
    conn.execute("VACUUM ANALYZE")
    return rows


def measure_retention(conn: psycopg.Connection, repeats: int) -> list[dict]:
    """prune(30) of a 90-day history against DELETE of the same rows, medians of `repeats`."""
    dropped, deleted = [], []
    rows = 0
    for _ in range(repeats):
        for how, times in (("prune", dropped), ("delete", deleted)):
            conn.execute(EMPTY)
            rows = _load_history(conn)
            started = time.perf_counter()
            if how == "prune":
                conn.execute("SELECT * FROM telemetry.prune(30)")
            else:
                conn.execute("DELETE FROM telemetry.gpu_samples"
                             " WHERE ts < now() - interval '30 days'")
            times.append(time.perf_counter() - started)
    ours, theirs = statistics.median(dropped), statistics.median(deleted)
    return [{"figure": f"retention 90 -> 30 days, {rows:,} rows, s (baseline: DELETE)",
             "ours": round(ours, 3), "baseline": round(theirs, 3),
             "ratio": f"{theirs / ours:.1f}x faster", "target": "-", "pass": None}]


def measure(quick: bool = False, samples: int | None = None,
            show: bool = False) -> list[dict]:
    samples = samples or (3000 if quick else 24000)
    rows = []
    server = PgServer()
    server.start()
    try:
        env = {**os.environ, **server.libpq_env("postgres")}
        subprocess.run(["bash", str(REPO_ROOT / "bin" / "init_db.sh")], env=env, check=True,
                       capture_output=True)
        connect = server.libpq_env("postgres")
        with psycopg.connect(host=connect["PGHOST"], port=connect["PGPORT"],
                             user=connect["PGUSER"], dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(ORIGINAL_SCHEMA)
            load_original(conn, samples // 4, 5)
            original = schema_bytes(conn, "original") / (samples // 4)
            for interval in (5.0, 1.0):
                conn.execute(EMPTY)
                load_ours(conn, samples, interval, raw_every_sec=600)
                ours = schema_bytes(conn, "telemetry") / samples
                per_day = ours * 86400 / interval / 1e6
                rows.append({
                    "figure": f"storage, bytes per GPU sample at {interval:g} s "
                              f"({per_day:.1f} MB per GPU per day, "
                              f"{per_day * 365 / 1000:.2f} GB a year)",
                    "ours": round(ours, 1), "baseline": round(original, 1),
                    "ratio": round(original / ours, 1), "target": f">= {TARGET_RATIO:g}x",
                    "pass": original / ours >= TARGET_RATIO})
                if show:
                    print(f"where the bytes go at {interval:g} s, per GPU sample:")
                    for name, heap, indexes in breakdown(conn, samples):
                        print(f"  {name:<24} heap {heap:7.1f}  indexes {indexes:6.1f}")
            rows.extend(measure_retention(conn, 1 if quick else 3))
    finally:
        server.cleanup()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=24000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = measure(args.quick, None if args.quick else args.samples, show=True)
    print(f"{'figure':<80} {'ours':>8} {'baseline':>9} {'ratio':>14} {'target':>8} pass")
    for row in rows:
        verdict = "-" if row["pass"] is None else "yes" if row["pass"] else "NO"
        print(f"{row['figure']:<80} {row['ours']:>8} {row['baseline']:>9} "
              f"{row['ratio']!s:>14} {row['target']:>8} {verdict}")
    return 0 if all(row["pass"] is not False for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
