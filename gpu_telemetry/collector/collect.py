"""Take one sample: read the GPU source once (nvidia-smi, or NVML with GPU_SOURCE=nvml), tag
it with the status, store it or spool it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from gpu_telemetry.collector.nvml import NvmlSource
from gpu_telemetry.collector.sample import default_host, now_utc
from gpu_telemetry.collector.source import NvidiaSmiSource
from gpu_telemetry.collector.spool import SpoolCap, write_spool
from gpu_telemetry.config import Config
from gpu_telemetry.db.store import connect, insert_samples
from gpu_telemetry.errors import EXIT_OK, EXIT_SOURCE_FAILED, DatabaseError, SourceError
from gpu_telemetry.ops.status import read_status
from gpu_telemetry.records import Event, Sample, format_ts


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class Taken:
    """One reading, the events that go with it, and what went wrong while taking it."""

    sample: Sample
    failure: SourceError | None = None
    unreadable: list[str] = field(default_factory=list)  # one line per GPU that was skipped
    status_problem: str | None = None
    events: list[Event] = field(default_factory=list)


def failure_event(failure: SourceError) -> Event:
    return Event("source_failed", failure.message,
                 data={"failure": failure.kind, "exit_code": failure.returncode,
                       "source": failure.source})


def open_source(config: Config, *, background: bool) -> NvidiaSmiSource | NvmlSource:
    """The GPU source GPU_SOURCE names; `background`: the loop's (raw snapshots of the NVML
    source taken beside the sampling). Close it when done."""
    if config.gpu_source == "nvml":
        return NvmlSource(config.nvidia_smi, config.nvidia_smi_timeout_sec,
                          background=background, warn=warn)
    return NvidiaSmiSource(config.nvidia_smi, config.nvidia_smi_timeout_sec)


def take_sample(config: Config, host: str, source: NvidiaSmiSource | NvmlSource,
                raw_due: Callable[[str], bool] = lambda gpu_uuid: True) -> Taken:
    """Read the source once and build the sample; a source failure gives a sample with no GPU
    rows. `raw_due(gpu_uuid)` says whether that GPU's raw snapshot is kept this time."""
    status, status_problem = read_status(config.status_file)
    ts = now_utc()
    try:
        reading = source.read()
    except SourceError as failure:
        return Taken(Sample(ts, host, status), failure, [], status_problem)
    source.attach_raw(reading, raw_due)
    return Taken(Sample(ts, host, status, reading.gpus), None, reading.problems, status_problem)


def take_one_shot(config: Config, *, with_raw: bool) -> Taken:
    """A sample for collect_once: every problem is said, and recorded as an event."""
    source = open_source(config, background=False)
    try:
        taken = take_sample(config, default_host(), source, lambda gpu_uuid: with_raw)
    finally:
        source.close()
    if taken.status_problem:
        warn(taken.status_problem)
    if taken.failure:
        taken.events.append(failure_event(taken.failure))
    for line in taken.unreadable:
        warn(line)
        taken.events.append(Event("gpu_unreadable", line))
    return taken


def _report(taken: Taken, outcome: str) -> int:
    failure = taken.failure
    if failure is not None:
        print(f"error: {failure.describe()}; {outcome}", file=sys.stderr)
        return EXIT_SOURCE_FAILED
    return EXIT_OK


def store_or_spool(config: Config, taken: Taken) -> int:
    """Store the sample; when the database cannot take it, spool it and exit with the code of
    the named error: 75 unreachable, 78 schema missing or login refused, 77 permission denied,
    65 a refused value (a nvidia-smi failure still exits 69)."""
    sample = taken.sample
    try:
        with connect() as conn:
            inserted, offered = insert_samples(conn, [sample], config.raw_every_sec,
                                               [e.placed(sample.ts, sample.host)
                                                for e in taken.events])
    except DatabaseError as exc:
        reason = str(exc)
        path = write_spool(config.spool_dir, sample, taken.events, reason)
        dropped = SpoolCap(config.spool_dir, config.spool_max_mb).after_write(path)
        if dropped:
            warn(f"spool over SPOOL_MAX_MB={config.spool_max_mb:g}: dropped the {dropped} "
                 "oldest sample(s) (recorded at the next flush)")
        if taken.failure is not None:
            return _report(taken, f"{reason}; event spooled to {path}")
        print(f"{reason}; sample spooled to {path}", file=sys.stderr)
        return exc.exit_code
    if taken.failure is not None:
        return _report(taken, "event recorded")
    names = ", ".join(f"{gpu.gpu_name} {gpu.temp_c} C" for gpu in sample.gpus)
    print(f"stored {inserted} of {offered} GPU rows at {format_ts(sample.ts)} ({names})")
    return EXIT_OK


def collect_once(config: Config, *, dry_run: bool = False, raw: bool = False) -> int:
    if dry_run:
        taken = take_one_shot(config, with_raw=raw)
        if taken.failure is not None:
            return _report(taken, "nothing stored (dry run)")
        json.dump(taken.sample.to_json(taken.events), sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return EXIT_OK
    return store_or_spool(config, take_one_shot(config, with_raw=True))

