#!/usr/bin/env python3
"""Sampling benchmark: CPU per stored sample of the collector loop, against the original's
process-per-tick service, for 1, 2 and 8 GPUs.

One command: `uv run python bench/sampling_bench.py [--samples N] [--ticks T] [--gpus 1,2,8]`.
It starts a throwaway PostgreSQL (tests.pgserver.PgServer), applies the schema with the real
bin/init_db.sh (plus the original layout, as in storage_bench.py) and, for each GPU count, a
document of that many GPUs (recovery_bench.gpu_document: the <gpu> of rtx-3080-v13.xml repeated
with distinct uuids and bus ids) served by the nvidia-smi stand-in (tests/stand_ins/nvidia-smi):

  ours      `bin/collect_once.py --loop --interval 0.05 --quiet` against the database: after a
            warm-up, the loop process's own CPU (utime + stime of /proc/<pid>/stat, children
            excluded) and its reaped children's (cutime + cstime: the stand-in processes) over
            N stored samples (rows in the database / GPUs); the end is read from the zombie
            after SIGTERM, so the last sample is counted exactly;
  spawn+parse  the part of it no collector avoids: collector.source.read_nvidia_smi (spawn
            the stand-in, read its output) and parser.parse_document, in a loop in this process
            (its own CPU plus its children's, getrusage);
  original  the original's process model: every tick a fresh `uv run python <script>` process
            (BASELINE_SCRIPT below) that imports psycopg and dotenv, loads .env, reads
            status.json, calls nvidia-smi twice (`--query-gpu=name,uuid,pci.bus_id,
            temperature.gpu --format=csv,noheader`, then `-q -x`), opens a connection, inserts
            one row per GPU with the whole XML as jsonb into the original table, commits; CPU
            of T ticks from getrusage(RUSAGE_CHILDREN) deltas (uv, Python and both nvidia-smi
            calls). The original calls bench/nvidia-smi-query (tests' stand-in for -q -x; for
            --query-gpu it prints the lines the real tool prints for the same document,
            computed once by this benchmark: a `cat` of a file, cheaper than the real tool and
            than the stand-in's own answer, so the baseline is not inflated).

PostgreSQL's own CPU (the server backend) is shown too, for information: ours from the loop's
backend (/proc), the original's from the postmaster's reaped children (one backend per tick).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402

from bench.flush_bench import (  # noqa: E402
    TEMPLATE,
    conninfo,
    fresh_database,
    machine,
    make_template,
)
from bench.recovery_bench import ORIGINAL_SCHEMA, gpu_document  # noqa: E402
from gpu_telemetry.collector.parser import parse_document  # noqa: E402
from gpu_telemetry.collector.source import read_nvidia_smi  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402

STAND_IN = REPO_ROOT / "tests" / "stand_ins" / "nvidia-smi"
QUERY_STAND_IN = REPO_ROOT / "bench" / "nvidia-smi-query"
INTERVAL_SEC = 0.05
TARGET_RATIO = 50.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The original collect_once.py's work per tick, as one process: the imports, .env, status.json,
# nvidia-smi twice, a connection, a row per GPU with the whole XML as jsonb, COMMIT (a spool
# file instead when the database is down).
BASELINE_SCRIPT = '''\
import json
import os
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import psycopg
from dotenv import load_dotenv
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parent
load_dotenv(ROOT / ".env")
NVIDIA_SMI = os.environ.get("NVIDIA_SMI", "nvidia-smi")


def run(*args):
    return subprocess.run([NVIDIA_SMI, *args], capture_output=True, text=True, check=True).stdout


def read_status():
    try:
        status = json.loads((ROOT / "status.json").read_text())
    except (OSError, ValueError):
        return None, None
    return status.get("tag"), status.get("memo")


def main():
    tag, memo = read_status()
    gpus = []
    for line in run("--query-gpu=name,uuid,pci.bus_id,temperature.gpu",
                    "--format=csv,noheader").strip().splitlines():
        name, uuid, bus, temp = [part.strip() for part in line.split(",")]
        gpus.append({"name": name, "uuid": uuid, "pci.bus_id": bus,
                     "temperature.gpu": int(temp) if temp.isdigit() else None})
    xml = run("-q", "-x")
    payload = {"ts": datetime.now().astimezone().isoformat(), "host": socket.gethostname(),
               "status_tag": tag, "status_memo": memo, "gpus": gpus,
               "raw_json": {"nvidia_smi_q_x": xml}}
    try:
        with psycopg.connect("") as conn:
            with conn.cursor() as cur:
                for gpu in gpus:
                    cur.execute(
                        "INSERT INTO original.gpu_telemetry (ts, host, gpu_name, gpu_uuid,"
                        " pci_bus_id, temp_c, status_tag, status_memo, raw_json)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (payload["ts"], payload["host"], gpu["name"], gpu["uuid"],
                         gpu["pci.bus_id"], gpu["temperature.gpu"], tag, memo,
                         Jsonb(payload["raw_json"])))
            conn.commit()
    except psycopg.Error as exc:
        spool = ROOT / "spool"
        spool.mkdir(exist_ok=True)
        payload["_spool_reason"] = str(exc)
        (spool / f"{datetime.now():%Y%m%d%H%M%S%f}.json").write_text(json.dumps(payload))
        return 75
    print(f"inserted {len(gpus)} rows")
    return 0


sys.exit(main())
'''


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def proc_times(pid: int) -> tuple[str, float, float]:
    """(state, own CPU s, reaped children's CPU s) of a process, a zombie included."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return fields[0], (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def query_gpu_lines(document: bytes) -> str:
    """What `nvidia-smi --query-gpu=name,uuid,pci.bus_id,temperature.gpu --format=csv,noheader`
    prints for this document."""
    return "".join(f"{gpu.gpu_name}, {gpu.gpu_uuid}, {gpu.pci_bus_id}, "
                   f"{gpu.temp_c}\n" for gpu in parse_document(document).gpus)


class Bench:
    def __init__(self, server: PgServer, work: Path):
        self.server = server
        self.work = work
        self.status_file = work / "status.json"
        self.status_file.write_text(json.dumps(
            {"tag": "bench", "memo": "gpu-burn fan=25%", "run_id": "gpuburn-20260104-000000"}))

    def postmaster_pid(self) -> int | None:
        if self.server.external:
            return None
        return int((self.server.datadir / "postmaster.pid").read_text().split()[0])

    # -- ours ------------------------------------------------------------------------------------

    def ours(self, gpus: int, fixture: Path, samples: int, warmup: int = 20) -> dict:
        dbname = fresh_database(self.server, f"sampling_ours_{gpus}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "NVSMI_"))}
        env.update(self.server.libpq_env(dbname))
        env.update({"NVIDIA_SMI": str(STAND_IN), "NVSMI_STANDIN_FIXTURE": str(fixture),
                    "SPOOL_DIR": str(self.work / "spool"), "STATUS_FILE": str(self.status_file),
                    "LOG_DIR": str(self.work), "RAW_EVERY_SEC": "600",
                    "SPOOL_MAX_MB": "1024", "PYTHONUNBUFFERED": "1",
                    "KERNEL_LOG_COMMAND": "none"})
        log = open(self.work / f"loop-{gpus}.log", "w")  # noqa: SIM115 - closed below
        process = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "bin" / "collect_once.py"), "--loop",
             "--interval", str(INTERVAL_SEC), "--quiet"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            with psycopg.connect(**conninfo(self.server, dbname), autocommit=True) as conn:
                def stored() -> int:
                    return conn.execute(
                        "SELECT count(*) FROM telemetry.gpu_telemetry").fetchone()[0] // gpus

                def wait_for(count: int) -> None:
                    deadline = time.monotonic() + 120 + count
                    while stored() < count:
                        if process.poll() is not None or time.monotonic() > deadline:
                            raise SystemExit(f"the loop stopped or stalled ({gpus} GPUs); see "
                                             f"{self.work / f'loop-{gpus}.log'}")
                        time.sleep(0.02)

                wait_for(warmup)
                backend = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'gpu-telemetry'"
                ).fetchone()[0]
                _, own_start, children_start = proc_times(process.pid)
                _, backend_start, _ = proc_times(backend)
                first = stored()
                wait_for(first + samples)
                _, backend_end, _ = proc_times(backend)
                process.send_signal(signal.SIGTERM)
                # Not reaped yet: a zombie's stat still holds its final times.
                deadline = time.monotonic() + 30
                while True:
                    state, own_end, children_end = proc_times(process.pid)
                    if state == "Z":
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit("the loop did not stop on SIGTERM")
                    time.sleep(0.01)
                last = stored()
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            log.close()
        count = last - first
        return {"samples": count, "own_ms": (own_end - own_start) / count * 1000,
                "children_ms": (children_end - children_start) / count * 1000,
                "server_ms": (backend_end - backend_start) / count * 1000,
                "exit": process.returncode}

    # -- the part no collector avoids ------------------------------------------------------------

    def spawn_parse(self, fixture: Path, calls: int) -> dict:
        saved = os.environ.get("NVSMI_STANDIN_FIXTURE")
        os.environ["NVSMI_STANDIN_FIXTURE"] = str(fixture)
        try:
            parse_document(read_nvidia_smi(str(STAND_IN), 10))
            own, children = self_cpu(), children_cpu()
            for _ in range(calls):
                parse_document(read_nvidia_smi(str(STAND_IN), 10))
            own, children = self_cpu() - own, children_cpu() - children
        finally:
            if saved is None:
                os.environ.pop("NVSMI_STANDIN_FIXTURE", None)
            else:
                os.environ["NVSMI_STANDIN_FIXTURE"] = saved
        return {"own_ms": own / calls * 1000, "children_ms": children / calls * 1000,
                "total_ms": (own + children) / calls * 1000}

    # -- the original ------------------------------------------------------------------------------

    def original(self, gpus: int, fixture: Path, ticks: int, warmup: int = 2) -> dict:
        dbname = fresh_database(self.server, f"sampling_original_{gpus}")
        folder = self.work / f"original-{gpus}"
        folder.mkdir()
        script = folder / "collect_once.py"
        script.write_text(BASELINE_SCRIPT)
        shutil.copy(self.status_file, folder / "status.json")
        (folder / ".env").write_text("".join(
            f"{key}={value}\n" for key, value in self.server.libpq_env(dbname).items()))
        query_file = folder / "query-gpu.csv"
        query_file.write_text(query_gpu_lines(fixture.read_bytes()))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PG", "NVSMI_", "VIRTUAL_ENV", "UV_"))}
        env.update({"NVIDIA_SMI": str(QUERY_STAND_IN), "NVSMI_STANDIN_FIXTURE": str(fixture),
                    "NVSMI_QUERY_GPU_FILE": str(query_file)})
        uv = shutil.which("uv")
        if uv is None:
            raise SystemExit("uv not found: the original's process model is `uv run`")
        command = [uv, "run", "--project", str(REPO_ROOT), "python", str(script)]

        def tick() -> None:
            result = subprocess.run(command, env=env, cwd=folder, capture_output=True,
                                    text=True, check=False)
            if result.returncode != 0:
                raise SystemExit(f"the original tick failed ({result.returncode}):\n"
                                 f"{result.stdout}{result.stderr}")

        for _ in range(warmup):
            tick()
        with psycopg.connect(**conninfo(self.server, dbname), autocommit=True) as conn:
            before = conn.execute("SELECT count(*) FROM original.gpu_telemetry").fetchone()[0]
            postmaster = self.postmaster_pid()
            server_start = proc_times(postmaster)[2] if postmaster else 0.0
            cpu_start = children_cpu()
            for _ in range(ticks):
                tick()
            cpu = children_cpu() - cpu_start
            server_cpu = (proc_times(postmaster)[2] - server_start) if postmaster else 0.0
            after = conn.execute("SELECT count(*) FROM original.gpu_telemetry").fetchone()[0]
        if after - before != ticks * gpus:
            raise SystemExit(f"the original stored {after - before} rows, expected "
                             f"{ticks * gpus}")
        return {"ticks": ticks, "total_ms": cpu / ticks * 1000,
                "server_ms": server_cpu / ticks * 1000 if postmaster else None}


def run_bench(gpu_counts: tuple[int, ...] = (1, 2, 8), samples: int = 300, ticks: int = 20,
              calls: int = 200) -> dict:
    work = Path(tempfile.mkdtemp(prefix="sampling-bench-"))
    server = PgServer()
    try:
        server.start()
        make_template(server)
        with psycopg.connect(**conninfo(server, TEMPLATE), autocommit=True) as conn:
            conn.execute(ORIGINAL_SCHEMA)
        bench = Bench(server, work)
        results = {}
        for gpus in gpu_counts:
            fixture = work / f"gpus-{gpus}.xml"
            fixture.write_bytes(gpu_document(gpus))
            floor = bench.spawn_parse(fixture, calls)
            say(f"{gpus} GPU(s): spawn+parse {floor['total_ms']:.2f} ms "
                f"(stand-in {floor['children_ms']:.2f} ms)")
            ours = bench.ours(gpus, fixture, samples)
            say(f"{gpus} GPU(s): ours {ours['own_ms']:.2f} ms own + "
                f"{ours['children_ms']:.2f} ms stand-in over {ours['samples']} samples")
            original = bench.original(gpus, fixture, ticks)
            say(f"{gpus} GPU(s): original {original['total_ms']:.1f} ms over {ticks} ticks")
            results[gpus] = {"floor": floor, "ours": ours, "original": original}
        return {"results": results, "machine": machine(server), "samples": samples,
                "ticks": ticks, "calls": calls}
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def rows_of(result: dict) -> list[dict]:
    rows = []
    for gpus, figures in result["results"].items():
        ours = figures["ours"]["own_ms"] + figures["ours"]["children_ms"]
        original = figures["original"]["total_ms"]
        rows.append({
            "figure": f"sampling: CPU ms per stored sample, {gpus} GPU(s) "
                      "(baseline: process per tick)",
            "ours": round(ours, 2), "baseline": round(original, 1),
            "ratio": f"{original / ours:.0f}x less", "target": f">= {TARGET_RATIO:g}x",
            "pass": original / ours >= TARGET_RATIO})
        rows.append({
            "figure": f"sampling: collector's own CPU ms per sample, {gpus} GPU(s) "
                      "(baseline: spawn+parse alone)",
            "ours": round(figures["ours"]["own_ms"], 2),
            "baseline": round(figures["floor"]["total_ms"], 2), "ratio": "-",
            "target": "-", "pass": None})
    return rows


def measure(quick: bool = False) -> list[dict]:
    if quick:
        return rows_of(run_bench(samples=100, ticks=8, calls=60))
    return rows_of(run_bench())


def print_table(result: dict) -> None:
    print(f"\nCPU ms per stored sample; ours over {result['samples']} samples at "
          f"--interval {INTERVAL_SEC:g} after a warm-up, the original over {result['ticks']} "
          f"ticks, spawn+parse over {result['calls']} calls\n")
    print("| GPUs | ours total | ours own (loop) | ours stand-in | spawn+parse alone "
          "| own - parse | original | original / ours | server: ours | server: original |")
    print("|-----:|-----------:|----------------:|--------------:|------------------:"
          "|------------:|---------:|----------------:|-------------:|-----------------:|")
    for gpus, figures in result["results"].items():
        ours, floor, original = figures["ours"], figures["floor"], figures["original"]
        total = ours["own_ms"] + ours["children_ms"]
        server_original = original["server_ms"]
        print(f"| {gpus:4} | {total:10.2f} | {ours['own_ms']:15.2f} | "
              f"{ours['children_ms']:13.2f} | {floor['total_ms']:17.2f} | "
              f"{total - floor['total_ms']:11.2f} | {original['total_ms']:8.1f} | "
              f"{original['total_ms'] / total:14.0f}x | {ours['server_ms']:12.2f} | "
              + (f"{server_original:16.1f} |" if server_original is not None else "       - |"))
    print(f"\n{result['machine']}\n")
    for row in rows_of(result):
        verdict = "-" if row["pass"] is None else ("pass" if row["pass"] else "FAIL")
        print(f"{row['figure']}: ours {row['ours']}, baseline {row['baseline']}, "
              f"{row['ratio']} (target {row['target']}): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300, metavar="N",
                        help="stored samples the loop is measured over (default: 300)")
    parser.add_argument("--ticks", type=int, default=20, metavar="T",
                        help="ticks of the original measured (default: 20)")
    parser.add_argument("--calls", type=int, default=200, metavar="C",
                        help="spawn+parse calls measured (default: 200)")
    parser.add_argument("--gpus", default="1,2,8", metavar="LIST",
                        help="GPU counts, comma-separated (default: 1,2,8)")
    args = parser.parse_args(argv)
    try:
        counts = tuple(int(part) for part in args.gpus.split(","))
    except ValueError:
        parser.error(f"--gpus takes numbers separated by commas, got {args.gpus!r}")
    if min(args.samples, args.ticks, args.calls, *counts) < 1:
        parser.error("--samples, --ticks, --calls and every GPU count must be at least 1")
    result = run_bench(counts, args.samples, args.ticks, args.calls)
    print_table(result)
    return 1 if any(row["pass"] is False for row in rows_of(result)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
