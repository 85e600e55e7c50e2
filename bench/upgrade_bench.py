"""Upgrade benchmark: `bin/init_db.sh --upgrade` converting a table of the original scripts,
against the floor of reading the stored documents and parsing them.

The original table is filled (untimed) the way the original scripts filled it: one row per GPU
per sample, the host's whole `nvidia-smi -q -x` document (dual-2080-v13.xml, two GPUs, its
<timestamp> made distinct per sample, as real documents are) as jsonb on every GPU's row. Then,
each on a fresh copy of it, medians of --repeat runs:

  floor    read every row's document in key order, in batches, and parse each sample's
           document once (collector.parser.parse_document): what any conversion must do;
  upgrade  bin/init_db.sh --upgrade, as an operator runs it (the schema created, the rows
           converted and stored in batches of 5,000, the rollup kept, progress recorded).

Prints rows/s of each, the ratio to the floor, and the time a 1-million-row table would take
at the measured rate.

Run: uv run python bench/upgrade_bench.py [--samples 10000] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from gpu_telemetry.collector.parser import parse_document  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402

DOCUMENT = REPO_ROOT / "tests" / "fixtures" / "nvidia-smi" / "dual-2080-v13.xml"
START = datetime(2025, 6, 1, tzinfo=UTC)
TEMPLATE = "upgrade_bench_template"
TARGET_RATIO = 3.0  # "no longer than a few times what reading and parsing the XML costs"

ORIGINAL_SCHEMA = """
CREATE SCHEMA telemetry;
CREATE TABLE telemetry.gpu_telemetry (
    ts timestamptz NOT NULL, host text NOT NULL, gpu_uuid text NOT NULL,
    pci_bus_id text NOT NULL, gpu_name text, temp_c int, status_tag text, status_memo text,
    raw_json jsonb NOT NULL, PRIMARY KEY (ts, host, gpu_uuid));
CREATE INDEX ON telemetry.gpu_telemetry (host, ts DESC);
CREATE INDEX ON telemetry.gpu_telemetry (ts DESC);
CREATE INDEX ON telemetry.gpu_telemetry (status_tag, ts DESC);
"""


def connect(server: PgServer, dbname: str) -> psycopg.Connection:
    env = server.libpq_env(dbname)
    return psycopg.connect(host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"],
                           dbname=dbname, autocommit=True)


def fill_template(server: PgServer, samples: int) -> int:
    with connect(server, "postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    text = DOCUMENT.read_text()
    gpus = parse_document(text).gpus
    rows = 0
    with connect(server, TEMPLATE) as conn:
        conn.execute(ORIGINAL_SCHEMA)
        with conn.transaction(), conn.cursor() as cur, cur.copy(
                "COPY telemetry.gpu_telemetry FROM STDIN") as copy:
            for i in range(samples):
                ts = START + timedelta(seconds=5 * i)
                document = text.replace("<timestamp>Tue Dec 30 09:49:44 2025</timestamp>",
                                        f"<timestamp>{ts:%a %b %d %H:%M:%S %Y}</timestamp>")
                tag, memo = (("bench", "gpu-burn 300s fan=25%") if i % 100 < 30
                             else ("idle", "pre gpu-burn idle (baseline) fan=25%"))
                for gpu in gpus:
                    copy.write_row((ts, "x1ai", gpu.gpu_uuid, gpu.pci_bus_id, gpu.gpu_name,
                                    gpu.temp_c, tag, memo, Jsonb({"nvidia_smi_q_x": document})))
                    rows += 1
        conn.execute("VACUUM ANALYZE")
    return rows


def fresh_copy(server: PgServer, name: str) -> str:
    with connect(server, "postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE)))
    return name


def run_floor(server: PgServer, dbname: str) -> float:
    started = time.perf_counter()
    with connect(server, dbname) as conn:
        after = ("-infinity", "", "")
        previous = None
        while True:
            rows = conn.execute(
                "SELECT ts, host, gpu_uuid, raw_json ->> 'nvidia_smi_q_x'"
                " FROM telemetry.gpu_telemetry WHERE (ts, host, gpu_uuid) > (%s, %s, %s)"
                " ORDER BY ts, host, gpu_uuid LIMIT 5000", after).fetchall()
            if not rows:
                break
            for _ts, _host, _uuid, document in rows:
                if document != previous:
                    parse_document(document)
                    previous = document
            after = rows[-1][:3]
    return time.perf_counter() - started


def run_upgrade(server: PgServer, dbname: str, empty_env: Path) -> float:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")},
           **server.libpq_env(dbname)}
    started = time.perf_counter()
    result = subprocess.run(["bash", str(REPO_ROOT / "bin" / "init_db.sh"), "--env",
                             str(empty_env), "--upgrade"], env=env, capture_output=True,
                            text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"init_db.sh --upgrade failed ({result.returncode}): {result.stderr}")
    return elapsed


def measure(quick: bool = False, samples: int | None = None, repeat: int | None = None
            ) -> list[dict]:
    samples = samples or (1500 if quick else 10000)
    repeat = repeat or (1 if quick else 3)
    server = PgServer()
    server.start()
    try:
        rows = fill_template(server, samples)
        empty_env = Path(server.datadir).parent / "empty.env"
        empty_env.touch()
        floors, upgrades = [], []
        for run in range(repeat):
            floors.append(run_floor(server, fresh_copy(server, "upgrade_bench_floor")))
            upgrades.append(run_upgrade(server, fresh_copy(server, "upgrade_bench_run"),
                                        empty_env))
            print(f"run {run + 1}: floor {floors[-1]:.2f} s, upgrade {upgrades[-1]:.2f} s",
                  file=sys.stderr, flush=True)
        with connect(server, "upgrade_bench_run") as conn:
            stored = conn.execute("SELECT count(*) FROM telemetry.gpu_telemetry").fetchone()[0]
        if stored != rows:
            sys.exit(f"the upgrade stored {stored} rows of {rows}")
    finally:
        server.cleanup()
    floor, ours = statistics.median(floors), statistics.median(upgrades)
    rate = rows / ours
    return [
        {"figure": f"upgrade: {rows:,} original rows, s (baseline: read + parse floor)",
         "ours": round(ours, 2), "baseline": round(floor, 2),
         "ratio": f"{ours / floor:.2f}x of floor", "target": f"<= {TARGET_RATIO:g}x",
         "pass": ours / floor <= TARGET_RATIO},
        {"figure": f"upgrade: rows/s (floor {rows / floor:,.0f}); a 1-million-row table, "
                   f"minutes at this rate",
         "ours": round(rate), "baseline": round(rows / floor),
         "ratio": f"{1e6 / rate / 60:.1f} min", "target": "-", "pass": None},
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=None,
                        help="samples of the 2-GPU document (default 10000: 20,000 rows)")
    parser.add_argument("--repeat", type=int, default=None, help="runs of each (default 3)")
    parser.add_argument("--quick", action="store_true", help="1,500 samples, one run")
    args = parser.parse_args()
    rows = measure(args.quick, args.samples, args.repeat)
    print(f"{'figure':<80} {'ours':>8} {'baseline':>9} {'ratio':>14} {'target':>8} pass")
    for row in rows:
        verdict = "-" if row["pass"] is None else "yes" if row["pass"] else "NO"
        print(f"{row['figure']:<80} {row['ours']:>8} {row['baseline']:>9} "
              f"{row['ratio']!s:>14} {row['target']:>8} {verdict}")
    return 0 if all(row["pass"] is not False for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
