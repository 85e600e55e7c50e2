"""The spool: samples the database could not take, one JSON file each, until a flush delivers
them.

A spool file exists only once it is whole (gpu_telemetry/files.py: a hidden temp file in the
same folder, fsynced, renamed into place, the folder fsynced), so a crash or power cut leaves
either the complete file or a temp file that is never flushed. Unreadable files are moved to
spool/bad/ with a note of the reason, never deleted and never allowed to block the others.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from gpu_telemetry.collector.parser import element_to_json, parse_document
from gpu_telemetry.collector.sample import InvalidSample, Spooled, default_host, sample_from_json
from gpu_telemetry.errors import SourceError, SpoolError
from gpu_telemetry.files import fsync_dir, write_atomically
from gpu_telemetry.records import Event, Sample

TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".flush.lock"
DROP_LEDGER = ".dropped.json"
MAX_LEDGER_EVENTS = 200
CAP_TARGET = 0.9  # dropping goes down to this share of the cap, so it does not run every sample
BAD_DIR = "bad"
MAX_FILE_BYTES = 64 * 1024 * 1024
STALE_TEMP_SEC = 600


class SpoolBusy(SpoolError):
    """Another flusher holds the spool lock."""

    exit_code = 75


def file_stem(ts: str, host: str) -> str:
    """A spool file's name without .json: the sample time first, so names sort by time."""
    stamp = "".join(ch for ch in ts if ch.isdigit())[:20] or "0"
    host = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in host)
    return f"{stamp}-{host[:64]}-{uuid.uuid4().hex[:12]}"


def write_spool(spool_dir: Path, sample: Sample, events: list[Event], reason: str) -> Path:
    """Durably store one sample and its events with `_spool_reason`; returns the file's path."""
    document = sample.to_json(events)
    body = json.dumps({**document, "_spool_reason": reason}, ensure_ascii=False,
                      separators=(",", ":")).encode()
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
        stem = file_stem(document["ts"], sample.host)
        final = spool_dir / f"{stem}.json"
        write_atomically(final, body, temp=spool_dir / f"{TEMP_PREFIX}{stem}.json")
    except OSError as exc:
        raise SpoolError(f"cannot write spool file in {spool_dir}: {exc.strerror or exc}") from exc
    return final


def pending_files(spool_dir: Path) -> list[Path]:
    """Spooled files in time order (their names start with the sample time)."""
    try:
        entries = list(os.scandir(spool_dir))
    except FileNotFoundError:
        return []
    return sorted(Path(entry.path) for entry in entries
                  if entry.name.endswith(".json") and not entry.name.startswith(".")
                  and entry.is_file(follow_symlinks=False))


def clean_stale_temp_files(spool_dir: Path, older_than_sec: float = STALE_TEMP_SEC) -> int:
    """Remove temp files left by a writer that died mid-write; they were never complete."""
    removed = 0
    cutoff = time.time() - older_than_sec
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(spool_dir):
            if entry.name.startswith(TEMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
    return removed


def read_spool_file(path: Path) -> Spooled:
    """The sample and events in a spool file (ours or the original scripts'), or InvalidSample
    with the reason."""
    try:
        size = path.stat().st_size
        if size == 0:
            raise InvalidSample("empty file")
        if size > MAX_FILE_BYTES:
            raise InvalidSample(f"file is {size} bytes, over {MAX_FILE_BYTES}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise  # gone since it was listed (delivered or dropped meanwhile): not a bad file
    except OSError as exc:
        raise InvalidSample(f"cannot read: {exc.strerror or exc}") from exc
    try:
        obj = json.loads(data.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError) as exc:
        raise InvalidSample(f"not valid JSON ({exc})") from None
    if is_original(obj):
        obj = from_original(obj)
    return sample_from_json(obj)


# -- the original scripts' spool files -----------------------------------------------------------
#
# They hold `ts` (local time, no offset), perhaps `host`, the status, a `gpus` list with the keys
# of `nvidia-smi --query-gpu`, and the whole `nvidia-smi -q -x` document under
# raw_json.nvidia_smi_q_x, from which every column can be filled.

_ORIGINAL_GPU_KEYS = {
    "name": "gpu_name",
    "uuid": "gpu_uuid",
    "pci.bus_id": "pci_bus_id",
    "pci_bus_id": "pci_bus_id",
    "temperature.gpu": "temp_c",
    "temp": "temp_c",
    "power.draw": "power_draw_w",
    "power_draw": "power_draw_w",
    "index": "gpu_index",
}


def is_original(obj) -> bool:
    return (isinstance(obj, dict) and isinstance(obj.get("raw_json"), dict)
            and "nvidia_smi_q_x" in obj["raw_json"])


def _original_gpus(obj: dict) -> list:
    """The GPU entries: parsed from the stored XML, or (when it is absent or unreadable) the
    few `--query-gpu` keys renamed to our columns."""
    xml = obj["raw_json"].get("nvidia_smi_q_x")
    if isinstance(xml, str) and xml.strip():
        try:
            reading = parse_document(xml)
        except SourceError:
            reading = None
        if reading is not None:
            return [{**gpu.as_dict(), "raw_json": element_to_json(reading.elements[gpu.gpu_uuid])}
                    for gpu in reading.gpus]
    gpus = obj.get("gpus") or []
    if not isinstance(gpus, list):
        raise InvalidSample("gpus is missing or not a list")
    for entry in gpus:
        if not isinstance(entry, dict):
            raise InvalidSample("a gpus entry is not an object")
    return [{_ORIGINAL_GPU_KEYS.get(key, key): value for key, value in entry.items()}
            for entry in gpus]


def from_original(obj: dict) -> dict:
    """An original spool file's object in our sample format (still to be checked)."""
    adapted = {key: value for key, value in obj.items() if key != "raw_json"}
    if adapted.get("host") is None:
        adapted["host"] = default_host()
    adapted["gpus"] = _original_gpus(obj)
    return adapted


def quarantine(spool_dir: Path, path: Path, reason: str) -> Path:
    """Move an unreadable file to spool/bad/ with a .reason file beside it."""
    bad_dir = spool_dir / BAD_DIR
    bad_dir.mkdir(parents=True, exist_ok=True)
    target = bad_dir / path.name
    if target.exists():
        target = bad_dir / f"{path.stem}-{uuid.uuid4().hex[:8]}{path.suffix}"
    os.rename(path, target)
    target.with_name(target.name + ".reason").write_text(reason.rstrip() + "\n")
    fsync_dir(bad_dir)
    fsync_dir(spool_dir)
    return target


def remove_delivered(spool_dir: Path, paths: list[Path]) -> None:
    """Delete files whose samples are committed; call only after COMMIT returned."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if paths:
        fsync_dir(spool_dir)


@contextlib.contextmanager
def spool_lock(spool_dir: Path, wait_sec: float = 0.0) -> Iterator[None]:
    """Hold the flusher lock: one flusher at a time, the collector loop's own flush included."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(spool_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_sec
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise SpoolBusy(f"another flush of {spool_dir} is running") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


# -- the cap -------------------------------------------------------------------------------------
#
# Policy: when the spool passes SPOOL_MAX_MB, the oldest samples are dropped first, down to 90 %
# of the cap; the newest readings are the ones an operator needs when the database comes back.
# What is dropped is counted in a ledger (spool/.dropped.json: how many, the time span, and the
# events those files carried) that the next flush records as a `spool_dropped` event.


def spool_bytes(spool_dir: Path) -> int:
    total = 0
    for path in pending_files(spool_dir):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def read_ledger(spool_dir: Path) -> dict | None:
    try:
        ledger = json.loads((spool_dir / DROP_LEDGER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"samples": 0, "note": "the drop ledger was unreadable"}
    return ledger if isinstance(ledger, dict) else None


def clear_ledger(spool_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(spool_dir / DROP_LEDGER)


def _write_ledger(spool_dir: Path, ledger: dict) -> None:
    write_atomically(spool_dir / DROP_LEDGER, json.dumps(ledger, separators=(",", ":")).encode(),
                     temp=spool_dir / f"{TEMP_PREFIX}{DROP_LEDGER.lstrip('.')}")


def drop_oldest(spool_dir: Path, max_bytes: int, keep: Path | None = None) -> tuple[int, int]:
    """Delete the oldest spool files until the rest fit in CAP_TARGET of max_bytes; the caller
    holds the spool lock. Returns (samples dropped, bytes left)."""
    files = []
    for path in pending_files(spool_dir):
        with contextlib.suppress(FileNotFoundError):
            files.append((path, path.stat().st_size))
    total = sum(size for _, size in files)
    if total <= max_bytes:
        return 0, total
    ledger = read_ledger(spool_dir) or {"samples": 0}
    events = ledger.setdefault("events", [])
    dropped = 0
    for path, size in files:
        if total <= max_bytes * CAP_TARGET or path == keep:
            break
        with contextlib.suppress(OSError, ValueError):
            body = json.loads(path.read_text())
            ts = body.get("ts")
            if isinstance(ts, str):
                ledger["first_ts"] = min(ledger.get("first_ts") or ts, ts)
                ledger["last_ts"] = max(ledger.get("last_ts") or ts, ts)
            for entry in body.get("events") or []:
                if len(events) < MAX_LEDGER_EVENTS and isinstance(entry, dict):
                    events.append({"ts": ts, **entry})
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            dropped += 1
        total -= size
    ledger["samples"] = int(ledger.get("samples", 0)) + dropped
    _write_ledger(spool_dir, ledger)
    return dropped, total


class SpoolCap:
    """Keeps the spool under SPOOL_MAX_MB without listing the folder on every write: a running
    estimate, checked against the folder only when it passes the cap."""

    def __init__(self, spool_dir: Path, max_mb: float):
        self.spool_dir = spool_dir
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.estimate: int | None = None

    def after_write(self, path: Path) -> int:
        """Samples dropped to make room (0 almost always)."""
        if self.estimate is None:
            self.estimate = spool_bytes(self.spool_dir)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.estimate += path.stat().st_size
        if self.estimate <= self.max_bytes:
            return 0
        try:
            with spool_lock(self.spool_dir):
                dropped, self.estimate = drop_oldest(self.spool_dir, self.max_bytes, keep=path)
        except SpoolBusy:
            return 0  # a flush is draining the spool right now
        return dropped
