"""GPU_SOURCE=nvml: readings from NVIDIA's library, through a worker process that can be
killed, and raw snapshots from nvidia-smi beside the sampling.

The collector never calls NVML itself: a driver call that hangs (a GPU wedged after an Xid
79) would freeze the loop, and a thread cannot be killed. collector/nvml_worker.py makes every
call; this side asks it for a reading, waits at most NVIDIA_SMI_TIMEOUT_SEC, and otherwise
kills it (its whole process group) and starts another at the next sample. Whatever fails
(no library, no driver, a version mismatch, a GPU lost, a hung call, a worker that died) is a
SourceError with source "NVML" and the same kinds as nvidia-smi's, so events, exit statuses
and the loop's log read the same.

Raw snapshots stay complete: every RAW_EVERY_SEC a GPU's raw_json is its element of one
`nvidia-smi -q -x` document, as with the nvidia-smi source. The loop runs that call in a
thread (RawSnapshots) and stores the snapshot with the first sample after it ends, so a slow
nvidia-smi never delays a sample; collect_once.py runs it after its NVML reading.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from gpu_telemetry.collector.parser import Reading, element_to_json, parse_document
from gpu_telemetry.collector.source import kill_group, read_nvidia_smi
from gpu_telemetry.errors import SourceError
from gpu_telemetry.records import MAX_TEXT_CHARS, GpuReading, distinct_uuid, storable_text
from gpu_telemetry.schema import GPU_COLUMNS

SOURCE = "NVML"
GRACE_SEC = 2.0
_TEXT_COLUMNS = frozenset({"gpu_uuid", "pci_bus_id", "gpu_name", "driver_version"})


class NvmlWorker:
    """The worker process: started on first use, asked one reading at a time, killed when it
    does not answer in time, started again after it died or was killed."""

    def __init__(self, timeout_sec: float, grace_sec: float = GRACE_SEC):
        self.timeout_sec = timeout_sec
        self.grace_sec = grace_sec
        self.process: subprocess.Popen | None = None
        self.abandoned: list[subprocess.Popen] = []
        self._buffer = b""

    def _start(self) -> subprocess.Popen:
        self.abandoned[:] = [p for p in self.abandoned if p.poll() is None]
        if self.abandoned:
            raise SourceError("still_running",
                              f"an earlier NVML worker (pid {self.abandoned[0].pid}) is still "
                              "stuck in the driver after SIGKILL; not starting another until "
                              "it exits", source=SOURCE)
        try:
            process = subprocess.Popen(
                [sys.executable, "-P", "-m", "gpu_telemetry.cli.nvml_worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise SourceError("spawn_failed", f"cannot start the NVML worker: {exc.strerror}",
                              source=SOURCE) from None
        self._buffer = b""
        return process

    def ask(self) -> dict:
        """One reading, as the worker's JSON object."""
        if self.process is not None and self.process.poll() is not None:
            raise self._died()  # between two readings: said, then started again
        if self.process is None:
            self.process = self._start()
        process = self.process
        try:
            process.stdin.write(b"read\n")
            process.stdin.flush()
        except OSError:
            raise self._died() from None
        deadline = time.monotonic() + self.timeout_sec
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                outcome = kill_group(process, self.grace_sec, self.abandoned)
                self.process = None
                raise SourceError("timeout", f"NVML did not answer within "
                                  f"{self.timeout_sec:g} s; the worker {outcome}",
                                  source=SOURCE)
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self._died()
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            self.close()
            raise SourceError("worker_failed", "the NVML worker answered something that is not "
                              f"JSON ({len(line)} bytes)", source=SOURCE) from None

    def _died(self) -> SourceError:
        """The worker is gone (or going): reaped, and the failure to raise."""
        process, self.process = self.process, None
        try:
            status = process.wait(timeout=self.grace_sec)
        except subprocess.TimeoutExpired:
            kill_group(process, self.grace_sec, self.abandoned)
            status = process.returncode
        return SourceError("worker_failed", f"the NVML worker exited with status {status} "
                           "(its error is in the collector's log); it is started again at the "
                           "next sample", status, source=SOURCE)

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            process.stdin.close()  # the worker ends at the end of its input
            process.wait(timeout=self.grace_sec)
        except (OSError, subprocess.TimeoutExpired):
            kill_group(process, self.grace_sec, self.abandoned)


def reading_from(reply: dict) -> Reading:
    """The worker's answer as a Reading (or its failure as a SourceError)."""
    error = reply.get("error")
    if error is not None:
        raise SourceError(error["kind"], error["message"], error.get("code"), source=SOURCE)
    gpus: list[GpuReading] = []
    taken: set[str] = set()
    for index, values in enumerate(reply["gpus"]):
        row = dict(zip(GPU_COLUMNS, values, strict=True))
        for column in _TEXT_COLUMNS:
            if row[column] is not None:
                row[column] = storable_text(row[column])[:MAX_TEXT_CHARS]
        row["gpu_uuid"] = distinct_uuid(row["gpu_uuid"], row["pci_bus_id"], index, taken)
        taken.add(row["gpu_uuid"])
        gpus.append(GpuReading(**row))
    driver = gpus[0].driver_version if gpus else None
    return Reading(gpus=gpus, problems=list(reply.get("problems", [])), driver_version=driver)


class RawSnapshots:
    """`nvidia-smi -q -x` in a thread, for the raw snapshots of GPU_SOURCE=nvml: asked for when
    a GPU's snapshot is due, delivered with the first sample after it ends."""

    def __init__(self, executable: str, timeout_sec: float, warn: Callable[[str], None]):
        self.executable = executable
        self.timeout_sec = timeout_sec
        self.warn = warn
        self.wanted: set[str] = set()
        self._thread: threading.Thread | None = None
        self._result: dict[str, object] | SourceError | None = None
        self._said: str | None = None

    def take(self, gpu_uuids: set[str]) -> dict[str, object]:
        """Snapshots by uuid of the GPUs asked for, now; a failure is said once."""
        try:
            return _snapshots(self.executable, self.timeout_sec, gpu_uuids)
        except SourceError as exc:
            self._failed(exc)
            return {}

    def attach(self, reading: Reading, raw_due: Callable[[str], bool]) -> None:
        if self._thread is not None and not self._thread.is_alive():
            self._thread, result = None, self._result
            if isinstance(result, SourceError):
                self._failed(result)
            elif result:
                self._said = None
                for gpu in reading.gpus:
                    if gpu.gpu_uuid in result:
                        gpu.raw_json = result[gpu.gpu_uuid]
            self.wanted.clear()
        self.wanted.update(gpu.gpu_uuid for gpu in reading.gpus if raw_due(gpu.gpu_uuid))
        if self.wanted and self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(set(self.wanted),),
                                            name="raw-snapshot", daemon=True)
            self._thread.start()

    def _run(self, gpu_uuids: set[str]) -> None:
        try:
            self._result = _snapshots(self.executable, self.timeout_sec, gpu_uuids)
        except SourceError as exc:
            self._result = exc

    def _failed(self, exc: SourceError) -> None:
        line = f"raw snapshot not taken: {exc.describe()}"
        if line != self._said:
            self.warn(line)
            self._said = line


def _snapshots(executable: str, timeout_sec: float, gpu_uuids: set[str]) -> dict[str, object]:
    document = parse_document(read_nvidia_smi(executable, timeout_sec))
    return {uuid: element_to_json(element) for uuid, element in document.elements.items()
            if uuid in gpu_uuids}


class NvmlSource:
    """GPU_SOURCE=nvml. `background` (the loop): raw snapshots taken beside the sampling;
    otherwise (collect_once.py) right after the reading."""

    def __init__(self, nvidia_smi: str, timeout_sec: float, *, background: bool,
                 warn: Callable[[str], None]):
        self.worker = NvmlWorker(timeout_sec)
        self.raw = RawSnapshots(nvidia_smi, timeout_sec, warn)
        self.background = background

    def read(self) -> Reading:
        return reading_from(self.worker.ask())

    def attach_raw(self, reading: Reading, raw_due: Callable[[str], bool]) -> None:
        if self.background:
            self.raw.attach(reading, raw_due)
            return
        due = {gpu.gpu_uuid for gpu in reading.gpus if raw_due(gpu.gpu_uuid)}
        if due:
            snapshots = self.raw.take(due)
            for gpu in reading.gpus:
                gpu.raw_json = snapshots.get(gpu.gpu_uuid, gpu.raw_json)

    def close(self) -> None:
        self.worker.close()
