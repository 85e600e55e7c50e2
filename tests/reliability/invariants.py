"""The suite's promise, checked at the end of every scenario: every sample the collector took
reaches the database exactly once, whatever failed in between, and the spool is left holding
nothing but quarantined files (and young temp files of a killed writer, never delivered)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

from gpu_telemetry.collector.sample import default_host
from gpu_telemetry.collector.spool import BAD_DIR, LOCK_NAME, STALE_TEMP_SEC, TEMP_PREFIX
from tests.reliability.harness import query

# nvidia-smi is called right after the sample's time is taken (collect.take_sample): the
# stand-in logs its call a few milliseconds later, more on a loaded machine.
CALL_AFTER_TS_MAX = timedelta(seconds=5)
CLOCK_SLACK = timedelta(milliseconds=50)


def assert_invariants(db, tmp_path: Path, expected_samples: int, gpus_per_sample: int = 2,
                      dropped: int = 0, *, calls: list[float] | None = None,
                      quarantined: int = 0, host: str | None = None,
                      spool_dir: Path | None = None) -> dict:
    """Fail unless the database and the spool are exactly what `expected_samples` promise.

    1. count(DISTINCT ts) for the host == expected_samples - dropped, and its rows ==
       that many samples x gpus_per_sample; no row of another host.
    2. no duplicate (ts, host, gpu_uuid): count(*) == count(DISTINCT ...).
    3. the spool holds no *.json, nothing but the lock file, spool/bad/ (exactly
       `quarantined` files, each with its non-empty .reason) and `.tmp-*` files younger than
       STALE_TEMP_SEC (a flusher removes older ones) whose sample was never delivered.
    4. with `calls` (epochs of the stand-in's successful calls): every stored sample of the
       calls' period is matched, one to one, by a call that started just after its ts (the
       collector takes the time, then runs nvidia-smi), so no sample comes from nowhere.

    Returns what it measured, for the scenario's own extra checks.
    """
    host = host or default_host()
    spool_dir = spool_dir or tmp_path / "spool"
    want = expected_samples - dropped

    ((samples, rows, keys),) = query(
        db, "SELECT count(DISTINCT ts), count(*), count(DISTINCT (ts, host, gpu_uuid))"
            " FROM telemetry.gpu_telemetry WHERE host = %s", (host,))
    ((all_rows, all_keys),) = query(
        db, "SELECT count(*), count(DISTINCT (ts, host, gpu_uuid)) FROM telemetry.gpu_telemetry")
    stored = [ts for (ts,) in query(
        db, "SELECT DISTINCT ts FROM telemetry.gpu_telemetry WHERE host = %s ORDER BY ts",
        (host,))]

    # (1) every sample exactly once, whole
    assert samples == want, (
        f"{samples} distinct samples stored for {host}, expected {expected_samples}"
        f" - {dropped} dropped = {want}")
    assert rows == want * gpus_per_sample, (
        f"{rows} rows for {host}, expected {want} samples x {gpus_per_sample} GPUs")
    assert all_rows == rows, f"{all_rows - rows} rows of another host"
    per_sample = query(
        db, "SELECT ts, count(*) FROM telemetry.gpu_telemetry WHERE host = %s GROUP BY ts"
            " HAVING count(*) <> %s LIMIT 5", (host, gpus_per_sample))
    assert not per_sample, f"samples with a wrong number of GPU rows: {per_sample}"
    # (2) no duplicate
    assert rows == keys and all_rows == all_keys, (
        f"duplicate (ts, host, gpu_uuid): {rows} rows, {keys} distinct keys")

    # (3) the spool
    leftovers, temp_files = _check_spool(spool_dir, quarantined)
    delivered = set(stored)
    for temp in temp_files:
        age = time.time() - temp.stat().st_mtime
        assert age < STALE_TEMP_SEC, f"stale temp file {temp.name} ({age:.0f} s old) not removed"
        ts = _sample_ts(temp)
        assert ts is None or ts not in delivered, f"temp file {temp.name} was delivered"
    assert not leftovers, f"the spool holds more than quarantined files: {leftovers}"

    # (4) every stored sample of the calls' period comes from one call
    if calls is not None:
        _match_calls(stored, calls)

    return {"samples": samples, "rows": rows, "stored_ts": stored, "temp_files": temp_files}


def _check_spool(spool_dir: Path, quarantined: int) -> tuple[list[str], list[Path]]:
    leftovers: list[str] = []
    temp_files: list[Path] = []
    bad: list[Path] = []
    if spool_dir.exists():
        for entry in sorted(spool_dir.iterdir()):
            if entry.name == LOCK_NAME and entry.is_file():
                continue
            if entry.name == BAD_DIR and entry.is_dir():
                bad = sorted(entry.iterdir())
                continue
            if entry.name.startswith(TEMP_PREFIX) and entry.is_file():
                temp_files.append(entry)
                continue
            leftovers.append(entry.name)
    data = [p for p in bad if not p.name.endswith(".reason")]
    reasons = [p for p in bad if p.name.endswith(".reason")]
    assert len(data) == quarantined, (
        f"{len(data)} quarantined file(s) in spool/bad/, expected {quarantined}: "
        f"{[p.name for p in data]}")
    for path in data:
        reason = path.with_name(path.name + ".reason")
        assert reason.is_file() and reason.read_text().strip(), f"{path.name} has no reason"
    assert len(reasons) == len(data), f"stray .reason files: {[p.name for p in reasons]}"
    return leftovers, temp_files


def _sample_ts(path: Path) -> datetime | None:
    """The ts of a (possibly torn) temp file's sample, when it can be read."""
    try:
        obj = json.loads(path.read_bytes())
        return datetime.fromisoformat(obj["ts"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _match_calls(stored: list[datetime], calls: list[float]) -> None:
    if not calls:
        return
    first = datetime.fromtimestamp(min(calls), tz=stored[0].tzinfo if stored else None)
    period = [ts for ts in stored if ts >= first - CALL_AFTER_TS_MAX]
    remaining = sorted(calls)
    position = 0
    for ts in period:
        while position < len(remaining) and \
                datetime.fromtimestamp(remaining[position], ts.tzinfo) < ts - CLOCK_SLACK:
            position += 1
        assert position < len(remaining), f"stored sample {ts} matches no nvidia-smi call"
        call = datetime.fromtimestamp(remaining[position], ts.tzinfo)
        assert call - ts <= CALL_AFTER_TS_MAX, (
            f"stored sample {ts}: the next unmatched successful call is at {call}")
        position += 1
