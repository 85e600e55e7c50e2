#!/usr/bin/env python3
"""The Python half of bench/device_check.sh: both GPU sources on a real GPU, no database.

  device_check.py compare OUTDIR   time `nvidia-smi -q -x` (median of 20) against one NVML
                                   reading (median of 1000), read both sources at the same
                                   moment and print them side by side with the differences,
                                   write the document (serial numbers masked) to
                                   OUTDIR/nvidia-smi-q-x.xml
  device_check.py loop SOURCE SECONDS WORKDIR
                                   run `collect_once.py --loop --interval 0.1` with
                                   GPU_SOURCE=SOURCE for SECONDS against no database (it
                                   spools), and report samples, missed ticks and CPU per sample

Runs with plain python3: the repository and the wheels' folder on PYTHONPATH.
Exit status: 0 done (differences are reported, not judged), 1 a source failed, 2 usage.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

from bench.nvml_bench import cpu_parts  # noqa: E402
from gpu_telemetry.collector.nvml import reading_from  # noqa: E402
from gpu_telemetry.collector.nvml_worker import Session  # noqa: E402
from gpu_telemetry.collector.parser import parse_document  # noqa: E402
from gpu_telemetry.collector.source import read_nvidia_smi  # noqa: E402
from gpu_telemetry.records import GPU_READING_FIELDS  # noqa: E402

NVIDIA_SMI = os.environ.get("NVIDIA_SMI", "nvidia-smi")
# How close the two readings of one moment must be to count as the same.
CLOSE = {"temp_c": 1, "memory_temp_c": 1, "power_draw_w": 15.0, "power_avg_w": 15.0,
         "clocks_gr_mhz": 60, "clocks_sm_mhz": 60, "clocks_mem_mhz": 60,
         "clocks_video_mhz": 60, "util_gpu_pct": 20, "util_mem_pct": 20, "fan_pct": 5,
         "pcie_tx_kbps": None, "pcie_rx_kbps": None, "temp_tlimit_c": 1}
_SERIAL = re.compile(rb"<(serial|board_id|board_part_number|gpu_part_number|module_id)>"
                     rb"[^<]*</\1>")


def median_ms(call, times: int) -> float:
    laps = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        laps.append((time.perf_counter() - start) * 1000)
    return statistics.median(laps)


def masked(document: bytes) -> bytes:
    return _SERIAL.sub(lambda m: b"<%s>masked</%s>" % (m.group(1), m.group(1)), document)


def compare(outdir: Path) -> int:
    import pynvml

    session = Session(pynvml)
    reply = session.read()
    if "error" in reply:
        print(f"NVML failed: {reply['error']}")
        return 1
    document = read_nvidia_smi(NVIDIA_SMI, 30)
    (outdir / "nvidia-smi-q-x.xml").write_bytes(masked(document))
    smi_ms = median_ms(lambda: read_nvidia_smi(NVIDIA_SMI, 30), 20)
    nvml_ms = median_ms(session.read, 1000)
    print(f"nvidia-smi -q -x: median {smi_ms:.1f} ms of 20 calls")
    print(f"one NVML reading of every GPU: median {nvml_ms:.3f} ms of 1000 "
          f"({smi_ms / nvml_ms:.0f}x faster)")
    # The same moment: NVML right before and right after nvidia-smi, nvidia-smi in between.
    before = reading_from(session.read())
    document = read_nvidia_smi(NVIDIA_SMI, 30)
    after = reading_from(session.read())
    smi = parse_document(document)
    session.close()
    same = True
    for theirs in smi.gpus:
        mine = next((g for g in before.gpus if g.gpu_uuid == theirs.gpu_uuid), None)
        late = next((g for g in after.gpus if g.gpu_uuid == theirs.gpu_uuid), None)
        if mine is None:
            print(f"GPU {theirs.gpu_uuid}: not listed by NVML")
            same = False
            continue
        print(f"\nGPU {theirs.gpu_index} {theirs.gpu_name} {theirs.pci_bus_id}")
        print(f"{'column':28} {'nvidia-smi':>22} {'NVML':>22}  verdict")
        for name in GPU_READING_FIELDS:
            if name == "raw_json":
                continue
            a, b, c = getattr(theirs, name), getattr(mine, name), getattr(late, name)
            verdict = _verdict(name, a, b, c)
            same &= verdict in ("same", "close", "moves")
            print(f"{name:28} {_show(a):>22} {_show(b):>22}  {verdict}")
    print("\nverdict: " + ("both sources agree" if same else "the sources differ (see above)"))
    return 0


def _verdict(name, smi, before, after) -> str:
    if smi in (before, after):
        return "same"
    if smi is None or before is None:
        return "DIFFERENT (one is NULL)"
    if isinstance(smi, bool | str):
        return "DIFFERENT"
    low, high = min(before, after), max(before, after)
    if low <= smi <= high:
        return "moves"
    tolerance = CLOSE.get(name, 0)
    if tolerance is None or abs(smi - before) <= tolerance:
        return "close"
    return f"DIFFERENT by {smi - before:+g}"


def _show(value) -> str:
    return "NULL" if value is None else str(value)[:22]


def loop(source: str, seconds: float, workdir: Path) -> int:
    spool = workdir / f"spool-{source}"
    env = {**os.environ, "GPU_SOURCE": source, "SPOOL_DIR": str(spool),
           "PGHOST": "127.0.0.1", "PGPORT": "1", "PGCONNECT_TIMEOUT": "1"}
    empty = workdir / "empty.env"
    empty.touch()
    log = workdir / f"loop-{source}.log"
    interval = 0.1
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "bin" / "collect_once.py"), "--loop",
             "--interval", f"{interval:g}", "--quiet", "--env", str(empty)],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    time.sleep(3)  # start-up and the first raw snapshot
    start_wall, first = time.time(), sum(cpu_parts(process.pid).values())
    time.sleep(seconds)
    end_wall, last = time.time(), sum(cpu_parts(process.pid).values())
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    times = []
    for path in spool.glob("*.json"):
        try:
            sample = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        stamp = _epoch(sample["ts"])
        if start_wall <= stamp < end_wall and sample["gpus"]:
            times.append(stamp)
    times.sort()
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    missed = sum(max(0, round(gap / interval) - 1) for gap in gaps)
    cpu = last - first
    print(f"{source}: {len(times)} samples in {end_wall - start_wall:.1f} s at 10 Hz "
          f"({(end_wall - start_wall) / interval:.0f} due), {missed} missed ticks, "
          f"{cpu / max(len(times), 1) * 1000:.2f} ms CPU per sample, "
          f"{cpu / (end_wall - start_wall) * 100:.2f} % of one core")
    return 0


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def main(argv: list[str]) -> int:
    if argv[:1] == ["compare"] and len(argv) == 2:
        return compare(Path(argv[1]))
    if argv[:1] == ["loop"] and len(argv) == 4:
        return loop(argv[1], float(argv[2]), Path(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
