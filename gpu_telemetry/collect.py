"""Take one sample: read nvidia-smi once, tag it with the status, store it or spool it."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import psycopg

from gpu_telemetry.config import Config
from gpu_telemetry.errors import (
    EXIT_OK,
    EXIT_SOURCE_FAILED,
    EXIT_SPOOLED,
    DatabaseUnavailable,
    SourceError,
)
from gpu_telemetry.parser import element_to_json, parse_document
from gpu_telemetry.sample import default_host, event, new_sample, now_utc, validate_sample
from gpu_telemetry.source import read_nvidia_smi
from gpu_telemetry.spool import write_spool
from gpu_telemetry.status import read_status
from gpu_telemetry.store import connect, first_line, insert_samples


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class Taken:
    """One sample as JSON-able data, and the source failure it records, if any."""

    sample: dict
    failure: SourceError | None


def take_sample(config: Config, *, host: str | None = None, with_raw: bool = True) -> Taken:
    """Read nvidia-smi once and build the sample. A source failure still gives a sample: no
    GPU rows and a `source_failed` event keeping nvidia-smi's own message."""
    status, problem = read_status(config.status_file)
    if problem:
        warn(problem)
    ts = now_utc()
    host = host or default_host()
    try:
        reading = parse_document(read_nvidia_smi(config.nvidia_smi,
                                                 config.nvidia_smi_timeout_sec))
    except SourceError as failure:
        data = {"failure": failure.kind, "exit_code": failure.returncode}
        return Taken(new_sample(ts, host, status, [], [
            event("source_failed", failure.message, data=data)]), failure)
    events = []
    for line in reading.problems:
        warn(line)
        events.append(event("gpu_unreadable", line))
    gpus = []
    for row in reading.gpus:
        raw = element_to_json(reading.elements[row["gpu_uuid"]]) if with_raw else None
        gpus.append({**row, "raw_json": raw})
    return Taken(new_sample(ts, host, status, gpus, events), None)


def _report(taken: Taken, outcome: str) -> int:
    failure = taken.failure
    if failure is not None:
        code = f", exit {failure.returncode}" if failure.returncode is not None else ""
        print(f"error: nvidia-smi failed ({failure.kind}{code}): {failure.message}; {outcome}",
              file=sys.stderr)
        return EXIT_SOURCE_FAILED
    return EXIT_OK


def store_or_spool(config: Config, taken: Taken) -> int:
    """Store the sample; when the database cannot take it, spool it (exit 75)."""
    sample = validate_sample(taken.sample)
    try:
        with connect() as conn:
            inserted, offered = insert_samples(conn, [sample], config.raw_every_sec)
    except (DatabaseUnavailable, psycopg.Error) as exc:
        reason = str(exc) if isinstance(exc, DatabaseUnavailable) else (
            f"database error: {first_line(exc)}")
        path = write_spool(config.spool_dir, taken.sample, reason)
        if taken.failure is not None:
            return _report(taken, f"{reason}; event spooled to {path}")
        print(f"{reason}; sample spooled to {path}", file=sys.stderr)
        return EXIT_SPOOLED
    if taken.failure is not None:
        return _report(taken, "event recorded")
    names = ", ".join(f"{g['gpu_name']} {g['temp_c']} C" for g in sample["gpus"])
    print(f"stored {inserted} of {offered} GPU rows at {taken.sample['ts']} ({names})")
    return EXIT_OK


def collect_once(config: Config, *, dry_run: bool = False, raw: bool = False) -> int:
    if dry_run:
        taken = take_sample(config, with_raw=raw)
        if taken.failure is not None:
            return _report(taken, "nothing stored (dry run)")
        json.dump(taken.sample, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return EXIT_OK
    return store_or_spool(config, take_sample(config))

