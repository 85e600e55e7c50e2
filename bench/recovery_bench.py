#!/usr/bin/env python3
"""Recovery benchmark: a 24-hour backlog at 1 Hz for 8 GPUs flushed after an outage.

One command: `uv run python bench/recovery_bench.py [--samples N] [--gpus G] [--repeat R]`.
It starts a throwaway PostgreSQL (tests.pgserver.PgServer), applies the schema with the real
bin/init_db.sh into a template database (plus the original layout, as in storage_bench.py), and
writes, untimed, N spool files (default 86,400: a day at 1 Hz) the way the collector writes them
while the database is down: an 8-GPU document (the <gpu> element of rtx-3080-v13.xml repeated
with distinct uuids and bus ids), raw_json on one sample in 600 (RAW_EVERY_SEC=600 at 1 Hz),
the body and file name of collector.spool.write_spool (without its fsyncs: only the flush is
measured). Each figure is the median of R runs on a fresh copy of the database, the spool put
back with hard links before each:

  floor      read + parse + validate every file (read_spool_file), their rows streamed into one
             COPY to an unlogged table, one COMMIT: what any flush must at least do;
  ours       bin/flush_spool.py in its own process, as the timer starts it (uv run);
  original   the original scripts' flush of the same backlog as they spooled it (every file
             holds the whole XML under raw_json.nvidia_smi_q_x and four --query-gpu keys per
             GPU): per file json.loads, one transaction with a single-row INSERT per GPU of
             every column of the original table (raw_json: the file's raw_json as jsonb),
             COMMIT, unlink. Measured on --original-samples files and scaled to N (its cost is
             per file: one COMMIT and 8 copies of the whole XML each), since the full backlog in
             that layout is some 35 GB of files and hundreds of GB of jsonb;
  per-file   the original's transactions on our files (flush_bench.run_original: a COMMIT per
             file, a single-row INSERT per GPU, every column): the transaction pattern alone,
             at full size (information, no target).

Checks: every run stores exactly N x G rows (ours: nothing left, nothing quarantined); a second
flush of the same files re-created into the spool stores 0 new rows (run with its stderr on a
terminal, which must show the progress line) and prints the summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from bench.flush_bench import (  # noqa: E402
    TEMPLATE,
    admin,
    conninfo,
    machine,
    make_template,
    median_runs,
    restock,
    run_floor,
)
from bench.flush_bench import run_original as run_per_file  # noqa: E402
from bench.storage_bench import ORIGINAL_SCHEMA  # noqa: E402
from gpu_telemetry.collector.parser import element_to_json, parse_document  # noqa: E402
from gpu_telemetry.collector.spool import file_stem, pending_files  # noqa: E402
from gpu_telemetry.records import Sample, Status  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402

ONE_GPU_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "nvidia-smi" / "rtx-3080-v13.xml"
START = datetime(2026, 1, 4, tzinfo=UTC)
HOST = "x1ai"
STATUS = Status("bench", "gpu-burn fan=25%", "gpuburn-20260104-000000")
REASON = "database unreachable: connection refused"
INTERVAL_SEC = 1
RAW_EVERY_SEC = 600
RAW_EVERY_SAMPLES = RAW_EVERY_SEC // INTERVAL_SEC
FULL_SAMPLES = 86_400
QUICK_SAMPLES = 6_000
FLOOR_TARGET = 2.0      # ours at most 2x the floor
ORIGINAL_TARGET = 6.0   # ours at least 6x faster than the original

ORIGINAL_COLUMNS = ("ts", "host", "gpu_name", "gpu_uuid", "pci_bus_id", "temp_c",
                    "power_draw_w", "status_tag", "status_memo", "raw_json")
_ORIGINAL_INSERT = (f"INSERT INTO original.gpu_telemetry ({', '.join(ORIGINAL_COLUMNS)})"
                    f" VALUES ({', '.join(['%s'] * len(ORIGINAL_COLUMNS))})")


# -- the documents -------------------------------------------------------------------------------

def gpu_document(gpus: int) -> bytes:
    """An nvidia-smi -q -x document of `gpus` GPUs: the one <gpu> of rtx-3080-v13.xml repeated,
    each copy with its own uuid, bus id and minor number (a real multi-GPU host's document)."""
    text = ONE_GPU_FIXTURE.read_text()
    start = text.index("\t<gpu id=")
    end = text.index("\t</gpu>\n", start) + len("\t</gpu>\n")
    head, element, tail = text[:start], text[start:end], text[end:]
    copies = []
    for index in range(gpus):
        bus = f"{0x0C + index:02X}"
        copy = (element
                .replace('id="00000000:0C:00.0"', f'id="00000000:{bus}:00.0"')
                .replace("<pci_bus_id>00000000:0C:00.0</pci_bus_id>",
                         f"<pci_bus_id>00000000:{bus}:00.0</pci_bus_id>")
                .replace("<pci_bus>0C</pci_bus>", f"<pci_bus>{bus}</pci_bus>")
                .replace("GPU-19d6d965-2acc-f646-00f8-4c76979aabb4",
                         f"GPU-19d6d965-2acc-f646-00f8-4c7697{index:06x}")
                .replace("<minor_number>0</minor_number>",
                         f"<minor_number>{index}</minor_number>"))
        copies.append(copy)
    head = head.replace("<attached_gpus>1</attached_gpus>",
                        f"<attached_gpus>{gpus}</attached_gpus>")
    document = (head + "".join(copies) + tail).encode()
    reading = parse_document(document)
    if len({gpu.gpu_uuid for gpu in reading.gpus}) != gpus or reading.problems:
        raise SystemExit(f"the {gpus}-GPU document does not read as {gpus} distinct GPUs")
    return document


# -- the spools (set-up, not timed) ----------------------------------------------------------------

def _write_file(folder: Path, stem: str, body: bytes) -> None:
    # gpu_telemetry.collector.spool.write_spool's body and name, without its temp file and fsyncs.
    with open(folder / f"{stem}.json", "wb") as out:
        out.write(body)


def write_our_spool(folder: Path, samples: int, document: bytes) -> list[Path]:
    """`samples` files as the collector loop spools them during an outage: the sample of
    take_sample (raw_json when RAW_EVERY_SEC has passed), with `_spool_reason`."""
    folder.mkdir(parents=True, exist_ok=True)
    reading = parse_document(document)
    raws = {uuid: element_to_json(element) for uuid, element in reading.elements.items()}
    plain = reading.gpus
    with_raw = [replace(gpu, raw_json=raws[gpu.gpu_uuid]) for gpu in reading.gpus]
    for i in range(samples):
        ts = START + timedelta(seconds=i * INTERVAL_SEC, microseconds=123_456)
        sample = Sample(ts, HOST, STATUS, with_raw if i % RAW_EVERY_SAMPLES == 0 else plain)
        document = sample.to_json()
        body = json.dumps({**document, "_spool_reason": REASON}, ensure_ascii=False,
                          separators=(",", ":")).encode()
        _write_file(folder, file_stem(document["ts"], HOST), body)
    return pending_files(folder)


def write_original_spool(folder: Path, samples: int, document: bytes) -> list[Path]:
    """`samples` files as the original collect_once.py spooled them: four --query-gpu keys per
    GPU and the whole `nvidia-smi -q -x` output under raw_json.nvidia_smi_q_x, every sample."""
    folder.mkdir(parents=True, exist_ok=True)
    xml = document.decode()
    gpus = [{"name": gpu.gpu_name, "uuid": gpu.gpu_uuid, "pci.bus_id": gpu.pci_bus_id,
             "temperature.gpu": gpu.temp_c} for gpu in parse_document(document).gpus]
    for i in range(samples):
        ts = START + timedelta(seconds=i * INTERVAL_SEC, microseconds=123_456)
        body = json.dumps({"ts": ts.isoformat(), "host": HOST, "status_tag": STATUS.tag,
                           "status_memo": STATUS.memo, "gpus": gpus,
                           "raw_json": {"nvidia_smi_q_x": xml},
                           "_spool_reason": REASON}).encode()
        _write_file(folder, f"{ts:%Y%m%dT%H%M%S%f}-{HOST}", body)
    return pending_files(folder)


# -- the figures -----------------------------------------------------------------------------------

def flush_command() -> list[str]:
    """bin/flush_spool.py as gpu-telemetry-flush.service starts it (uv run, frozen)."""
    uv = shutil.which("uv")
    script = str(REPO_ROOT / "bin" / "flush_spool.py")
    if uv:
        return [uv, "run", "--project", str(REPO_ROOT), "--frozen", "--quiet", script]
    return [sys.executable, script]


def flush_env(server: PgServer, dbname: str, spool_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(server.libpq_env(dbname))
    env.update({"SPOOL_DIR": str(spool_dir), "RAW_EVERY_SEC": str(RAW_EVERY_SEC),
                "STATUS_FILE": str(spool_dir.parent / "status.json"),
                "SPOOL_MAX_MB": "1000000", "PYTHONUNBUFFERED": "1"})
    env.pop("RETENTION_DAYS", None)
    return env


_SUMMARY = re.compile(r"flushed (\d+) samples \((\d+) rows stored, (\d+) already there\)")


def run_ours_process(server: PgServer, dbname: str, spool_dir: Path, *,
                     terminal: bool = False) -> tuple[float, str, str]:
    """bin/flush_spool.py in its own process; (seconds, stdout, stderr). With `terminal`,
    stderr is a pseudo-terminal, as when an operator runs it by hand."""
    env = flush_env(server, dbname, spool_dir)
    if not terminal:
        started = time.perf_counter()
        result = subprocess.run(flush_command(), env=env, capture_output=True, text=True,
                                check=False)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"flush_spool.py exited {result.returncode}:\n{result.stdout}"
                     f"{result.stderr}")
        return elapsed, result.stdout, result.stderr
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    started = time.perf_counter()
    process = subprocess.Popen(flush_command(), env=env, stdout=subprocess.PIPE, stderr=slave,
                               text=True)
    os.close(slave)
    stdout, _ = process.communicate()
    elapsed = time.perf_counter() - started
    reader.join(timeout=5)
    os.close(master)
    stderr = b"".join(chunks).decode(errors="replace")
    if process.returncode != 0:
        sys.exit(f"flush_spool.py exited {process.returncode}:\n{stdout}{stderr}")
    return elapsed, stdout, stderr


def count_rows(server: PgServer, dbname: str, table: str = "telemetry.gpu_telemetry") -> int:
    with psycopg.connect(**conninfo(server, dbname)) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def run_ours(server: PgServer, dbname: str, spool_dir: Path) -> tuple[float, int]:
    elapsed, stdout, stderr = run_ours_process(server, dbname, spool_dir)
    match = _SUMMARY.search(stdout)
    if not match:
        sys.exit(f"flush_spool.py printed no summary line:\n{stdout}{stderr}")
    left = pending_files(spool_dir)
    if left or (spool_dir / "bad").exists():
        sys.exit(f"ours left {len(left)} file(s) behind or quarantined some: {stdout}{stderr}")
    rows = count_rows(server, dbname)
    if int(match.group(2)) != rows:
        sys.exit(f"ours says {match.group(2)} rows stored, the table holds {rows}")
    return elapsed, rows


def run_original(server: PgServer, dbname: str, spool_dir: Path) -> tuple[float, int]:
    """The original flush: per file json.loads, one transaction, a single-row INSERT per GPU
    of every column with the file's raw_json as jsonb, COMMIT, unlink."""
    with psycopg.connect(**conninfo(server, dbname)) as conn:
        started = time.perf_counter()
        for path in pending_files(spool_dir):
            obj = json.loads(path.read_text())
            raw = obj.get("raw_json")
            with conn.cursor() as cur:
                for gpu in obj["gpus"]:
                    cur.execute(_ORIGINAL_INSERT, (
                        obj["ts"], obj["host"], gpu.get("name"), gpu.get("uuid"),
                        gpu.get("pci.bus_id"), gpu.get("temperature.gpu"),
                        gpu.get("power.draw"), obj.get("status_tag"), obj.get("status_memo"),
                        Jsonb(raw) if raw is not None else None))
            conn.commit()
            path.unlink()
        elapsed = time.perf_counter() - started
    return elapsed, count_rows(server, dbname, "original.gpu_telemetry")


# -- the run ---------------------------------------------------------------------------------------

def add_original_schema(server: PgServer) -> None:
    with psycopg.connect(**conninfo(server, TEMPLATE), autocommit=True) as conn:
        conn.execute(ORIGINAL_SCHEMA)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_bench(samples: int = FULL_SAMPLES, gpus: int = 8, repeat: int = 3,
              original_samples: int = 1000, per_file: bool = True,
              durable: bool = False) -> dict:
    """Every figure; returns what the table and measure() need."""
    work = Path(tempfile.mkdtemp(prefix="recovery-bench-"))
    server = PgServer()
    try:
        server.start()
        if durable:
            with admin(server) as conn:
                for setting in ("fsync", "full_page_writes", "synchronous_commit"):
                    conn.execute(f"ALTER SYSTEM SET {setting} = on")
                conn.execute("SELECT pg_reload_conf()")
        make_template(server)
        add_original_schema(server)
        document = gpu_document(gpus)
        started = time.perf_counter()
        master = write_our_spool(work / "master", samples, document)
        size = sum(path.stat().st_size for path in master)
        say(f"wrote {len(master)} spool files ({size / 1e6:.0f} MB) of {gpus} GPUs in "
            f"{time.perf_counter() - started:.0f} s")
        original_samples = min(original_samples, samples)
        original_master = write_original_spool(work / "original-master", original_samples,
                                               document)
        original_size = sum(path.stat().st_size for path in original_master)
        say(f"wrote {original_samples} original-layout files ({original_size / 1e6:.0f} MB)")
        spool_dir = work / "spool"
        expected = samples * gpus
        result: dict = {"samples": samples, "gpus": gpus, "repeat": repeat,
                        "spool_mb": size / 1e6, "original_samples": original_samples,
                        "original_mb_per_file": original_size / original_samples / 1e6}
        result["floor"], result["floor_runs"] = median_runs(
            server, "floor", run_floor, master, spool_dir, repeat, expected, prefix="recovery")
        result["ours"], result["ours_runs"] = median_runs(
            server, "ours", run_ours, master, spool_dir, repeat, expected, prefix="recovery")

        # Idempotence: the same files again, into the database that already holds them; stderr
        # on a terminal, where the progress line must show.
        restock(master, spool_dir)
        elapsed, stdout, stderr = run_ours_process(server, "recovery_ours", spool_dir,
                                                   terminal=True)
        match = _SUMMARY.search(stdout)
        rows_after = count_rows(server, "recovery_ours")
        result["again_seconds"] = elapsed
        result["again_new_rows"] = int(match.group(2)) if match else None
        result["again_summary"] = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        result["rows_after_again"] = rows_after
        progress = re.findall(r"(\d+)/(\d+) samples, (\d+)/s, (\d+) s left", stderr)
        result["progress_lines"] = len(progress)
        result["idempotent"] = (match is not None and int(match.group(2)) == 0
                                and int(match.group(3)) == expected and rows_after == expected
                                and not pending_files(spool_dir))
        say(f"second flush: {elapsed:.2f} s, {result['again_summary']}; "
            f"{len(progress)} progress updates on the terminal")

        original, original_runs = median_runs(
            server, "original", run_original, original_master, spool_dir, repeat,
            original_samples * gpus, prefix="recovery")
        result["original_measured"] = original
        result["original_runs"] = original_runs
        result["original"] = original * samples / original_samples
        if per_file:
            result["per_file"], result["per_file_runs"] = median_runs(
                server, "per-file", run_per_file, master, spool_dir, 1, expected, prefix="recovery")
        result["machine"] = machine(server)
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return result


def rows_of(result: dict) -> list[dict]:
    """The run_all.py rows: figure, ours, baseline, ratio, target, pass (seconds)."""
    samples, gpus = result["samples"], result["gpus"]
    what = f"{samples:,} files x {gpus} GPUs"
    ours, floor, original = result["ours"], result["floor"], result["original"]
    rows = [
        {"figure": f"recovery: flush {what}, s (baseline: floor)",
         "ours": round(ours, 2), "baseline": round(floor, 2),
         "ratio": f"{ours / floor:.2f}x of floor", "target": f"<= {FLOOR_TARGET:g}x",
         "pass": ours / floor <= FLOOR_TARGET},
        {"figure": f"recovery: flush {what}, s (baseline: original, from "
                   f"{result['original_samples']:,} files)",
         "ours": round(ours, 2), "baseline": round(original, 1),
         "ratio": f"{original / ours:.1f}x faster", "target": f">= {ORIGINAL_TARGET:g}x",
         "pass": original / ours >= ORIGINAL_TARGET},
        {"figure": "recovery: rows stored / new rows on a second flush",
         "ours": f"{result['rows_after_again']:,} / {result['again_new_rows']}",
         "baseline": f"{samples * gpus:,} / 0", "ratio": "-", "target": "exact, 0 new",
         "pass": bool(result["idempotent"])},
        {"figure": "recovery: progress on a terminal (updates), summary line",
         "ours": f"{result['progress_lines']} updates", "baseline": "-", "ratio": "-",
         "target": "shown", "pass": result["progress_lines"] > 0
         and bool(result["again_summary"])},
    ]
    if "per_file" in result:
        rows.append({
            "figure": "recovery: vs a COMMIT per file of our files, s (information)",
            "ours": round(ours, 2), "baseline": round(result["per_file"], 1),
            "ratio": f"{result['per_file'] / ours:.1f}x faster", "target": "-", "pass": None})
    return rows


def measure(quick: bool = False) -> list[dict]:
    if quick:
        result = run_bench(samples=QUICK_SAMPLES, gpus=8, repeat=1, original_samples=200,
                           per_file=False)
    else:
        result = run_bench()
    return rows_of(result)


def print_table(result: dict) -> None:
    samples, gpus = result["samples"], result["gpus"]
    print(f"\n{samples:,} samples x {gpus} GPUs = {samples * gpus:,} rows "
          f"({result['spool_mb']:.0f} MB of spool), median of {result['repeat']}\n")
    print("| figure   | seconds | samples/s | vs floor | original / it |")
    print("|----------|--------:|----------:|---------:|--------------:|")
    figures = [("floor", result["floor"]), ("ours", result["ours"])]
    if "per_file" in result:
        figures.append(("per-file", result["per_file"]))
    figures.append(("original", result["original"]))
    for name, seconds in figures:
        print(f"| {name:<8} | {seconds:7.1f} | {samples / seconds:9.0f} "
              f"| {seconds / result['floor']:7.2f}x | {result['original'] / seconds:12.1f}x |")
    print(f"\noriginal: {result['original_measured']:.2f} s for {result['original_samples']:,} "
          f"files of {result['original_mb_per_file']:.2f} MB, scaled to {samples:,}")
    print("per-file: a COMMIT per file of our files, one run")
    print(f"second flush of the same files: {result['again_seconds']:.1f} s: "
          f"{result['again_summary']}")
    print(f"progress updates on the terminal: {result['progress_lines']}")
    print(f"\n{result['machine']}\n")
    for row in rows_of(result):
        verdict = "-" if row["pass"] is None else ("pass" if row["pass"] else "FAIL")
        print(f"{row['figure']}: ours {row['ours']}, baseline {row['baseline']}, "
              f"{row['ratio']} (target {row['target']}): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=FULL_SAMPLES, metavar="N",
                        help=f"spool files, one a second (default: {FULL_SAMPLES}, 24 hours)")
    parser.add_argument("--gpus", type=int, default=8, metavar="G",
                        help="GPUs per sample (default: 8)")
    parser.add_argument("--repeat", type=int, default=3, metavar="R",
                        help="runs of each figure, the median is shown (default: 3)")
    parser.add_argument("--original-samples", type=int, default=1000, metavar="M",
                        help="files the original flush is timed on, then scaled to N "
                             "(default: 1000; each holds the whole XML)")
    parser.add_argument("--no-per-file", action="store_true",
                        help="skip the COMMIT-per-file run on our files (information only)")
    parser.add_argument("--durable", action="store_true",
                        help="fsync, full_page_writes and synchronous_commit on, as in production")
    args = parser.parse_args(argv)
    if min(args.samples, args.gpus, args.repeat, args.original_samples) < 1:
        parser.error("--samples, --gpus, --repeat and --original-samples must be at least 1")
    result = run_bench(args.samples, args.gpus, args.repeat, args.original_samples,
                       not args.no_per_file, args.durable)
    print_table(result)
    failed = [row for row in rows_of(result) if row["pass"] is False]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
