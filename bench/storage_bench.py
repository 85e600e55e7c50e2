"""Storage benchmark: bytes per GPU sample, over every table of the telemetry schema (heap,
TOAST, indexes, the rollup), against the original layout on the same document.

The original stored the whole `nvidia-smi -q -x` output as jsonb on every row, with three
secondary indexes. Ours keeps typed columns and a raw snapshot every RAW_EVERY_SEC (600 s by
default: one sample in 120 at the default 5 s interval, one in 600 at 1 s).

Run: uv run python bench/storage_bench.py [--samples 20000] [--interval 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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


def measure(quick: bool = False, samples: int | None = None) -> list[dict]:
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
                conn.execute("TRUNCATE telemetry.gpu_telemetry, telemetry.gpu_telemetry_1m,"
                             " telemetry.collector_events")
                load_ours(conn, samples, interval, raw_every_sec=600)
                ours = schema_bytes(conn, "telemetry") / samples
                per_day = ours * 86400 / interval / 1e6
                rows.append({
                    "figure": f"storage, bytes per GPU sample at {interval:g} s "
                              f"({per_day:.1f} MB per GPU per day)",
                    "ours": round(ours, 1), "baseline": round(original, 1),
                    "ratio": round(original / ours, 1), "target": f">= {TARGET_RATIO:g}x",
                    "pass": original / ours >= TARGET_RATIO})
    finally:
        server.cleanup()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=24000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = measure(args.quick, None if args.quick else args.samples)
    print(f"{'figure':<62} {'ours':>8} {'original':>9} {'ratio':>7} {'target':>8} pass")
    for row in rows:
        print(f"{row['figure']:<62} {row['ours']:>8} {row['baseline']:>9} "
              f"{row['ratio']:>6}x {row['target']:>8} {'yes' if row['pass'] else 'NO'}")
    return 0 if all(row["pass"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
