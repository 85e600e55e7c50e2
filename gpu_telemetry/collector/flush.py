"""Deliver the spool: batches of samples, each batch one transaction, files deleted only after
their COMMIT returned."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from gpu_telemetry.collector.sample import (
    InvalidSample,
    Spooled,
    default_host,
    event_from_json,
    now_utc,
    parse_ts,
    storable_json,
)
from gpu_telemetry.collector.spool import (
    clean_stale_temp_files,
    clear_ledger,
    pending_files,
    quarantine,
    read_ledger,
    read_spool_file,
    remove_delivered,
    spool_lock,
)
from gpu_telemetry.config import Config
from gpu_telemetry.db.store import (
    PARTITIONS_AHEAD,
    Connection,
    connect,
    ensure_partitions,
    insert_events,
    insert_samples,
    prune,
)
from gpu_telemetry.errors import DatabaseError, RejectedValue
from gpu_telemetry.records import Event, storable_text

DEFAULT_BATCH_SAMPLES = 1000


@dataclass
class FlushResult:
    samples: int = 0
    rows_offered: int = 0
    rows_inserted: int = 0
    quarantined: list[Path] = field(default_factory=list)
    refused: list[Path] = field(default_factory=list)  # of those, the database refused a value
    stale_temp_removed: int = 0
    seconds: float = 0.0
    dropped: int = 0  # samples the spool cap dropped, recorded by this flush
    pruned: tuple[int, int] | None = None  # (rows, events) older than RETENTION_DAYS
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    complete: bool = True

    def add(self, spooled: list[Spooled], inserted: int, offered: int) -> None:
        self.samples += len(spooled)
        self.rows_inserted += inserted
        self.rows_offered += offered
        first = min(entry.sample.ts for entry in spooled)
        last = max(entry.sample.ts for entry in spooled)
        self.first_ts = min(first, self.first_ts) if self.first_ts else first
        self.last_ts = max(last, self.last_ts) if self.last_ts else last

    def summary(self) -> str:
        rate = self.samples / self.seconds if self.seconds > 0 else 0.0
        line = (f"flushed {self.samples} samples ({self.rows_inserted} rows stored, "
                f"{self.rows_offered - self.rows_inserted} already there) "
                f"in {self.seconds:.2f} s ({rate:.0f} samples/s)")
        unreadable = len(self.quarantined) - len(self.refused)
        if unreadable:
            line += f"; {unreadable} unreadable file(s) moved to spool/bad/"
        if self.refused:
            line += (f"; {len(self.refused)} file(s) the database refused a value of moved to "
                     "spool/bad/")
        if self.dropped:
            line += f"; {self.dropped} sample(s) had been dropped by the spool cap (recorded)"
        return line


class Progress:
    """A status line on stderr while a long flush runs, only when stderr is a terminal."""

    def __init__(self, total: int):
        self.total = total
        self.start = time.monotonic()
        self.enabled = sys.stderr.isatty() and total > 0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else 0.0
        sys.stderr.write(f"\r{done}/{self.total} samples, {rate:.0f}/s, {left:.0f} s left ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _load_batch(config: Config, paths: list[Path], result: FlushResult
                ) -> tuple[list[Spooled], list[Path]]:
    samples, good = [], []
    for path in paths:
        try:
            samples.append(read_spool_file(path))
        except FileNotFoundError:
            continue  # delivered by a flusher that held the lock before us
        except InvalidSample as exc:
            target = quarantine(config.spool_dir, path, str(exc))
            print(f"quarantined {path.name}: {exc} -> {target}", file=sys.stderr)
            result.quarantined.append(target)
            continue
        good.append(path)
    return samples, good


def _store_batch(config: Config, conn: Connection, samples: list[Spooled], paths: list[Path],
                 result: FlushResult) -> None:
    """Store one batch and delete its files after the COMMIT. When the database refuses a value,
    the batch is stored again one sample at a time and the refused file goes to spool/bad/."""
    try:
        inserted, offered = insert_samples(conn, [entry.sample for entry in samples],
                                           config.raw_every_sec,
                                           [event for entry in samples for event in entry.events])
    except RejectedValue as exc:
        if len(samples) == 1:
            target = quarantine(config.spool_dir, paths[0], str(exc))
            print(f"quarantined {paths[0].name}: {exc} -> {target}", file=sys.stderr)
            result.quarantined.append(target)
            result.refused.append(target)
            return
        for path in paths:
            # Read again: the failed attempt dropped raw snapshots in favour of samples that
            # may be the refused ones.
            _store_batch(config, conn, [read_spool_file(path)], [path], result)
        return
    # COMMIT has returned: only now may the files go.
    remove_delivered(config.spool_dir, paths)
    result.add(samples, inserted, offered)


def deliver(config: Config, conn: Connection, batch_samples: int = DEFAULT_BATCH_SAMPLES,
            deadline: float | None = None) -> FlushResult:
    """Deliver spooled samples over an open connection; the caller holds the lock.

    With a `deadline` (time.monotonic()), stops after the batch that passes it, so the collector
    loop can drain a long backlog between samples; `result.complete` says whether it got through.
    A file whose sample the database refuses (RejectedValue) is quarantined; any other
    DatabaseError stops the delivery with the undelivered files kept.
    """
    result = FlushResult()
    started = time.monotonic()
    result.stale_temp_removed = clean_stale_temp_files(config.spool_dir)
    result.dropped = record_drops(conn, config)
    paths = pending_files(config.spool_dir)
    progress = Progress(len(paths))
    try:
        for start in range(0, len(paths), batch_samples):
            if deadline is not None and time.monotonic() > deadline:
                result.complete = False
                break
            samples, good = _load_batch(config, paths[start:start + batch_samples], result)
            if samples:
                _store_batch(config, conn, samples, good, result)
            progress.update(start + len(paths[start:start + batch_samples]))
    finally:
        progress.close()
        result.seconds = time.monotonic() - started
    return result


def record_drops(conn: Connection, config: Config) -> int:
    """Record what the spool cap dropped (the ledger), with the events those files carried;
    the ledger goes only after the COMMIT. Its event's time is the last dropped sample's, so
    a replay after a crash is absorbed by the events' unique key. A ledger the database refuses
    stays (said on stderr) and does not hold up the delivery."""
    ledger = read_ledger(config.spool_dir)
    if not ledger:
        return 0
    samples = int(ledger.get("samples") or 0)
    detail = (f"{samples} spooled sample(s) dropped by the spool cap (SPOOL_MAX_MB="
              f"{config.spool_max_mb:g}, oldest first)")
    if ledger.get("first_ts"):
        detail += f", taken {ledger['first_ts']} to {ledger['last_ts']}"
    host = default_host()
    try:
        ts = parse_ts(ledger.get("last_ts"))
    except InvalidSample:
        ts = now_utc()
    events = []
    for entry in ledger.get("events") or []:
        try:
            events.append(event_from_json(entry, ts, host))
        except InvalidSample:
            continue  # a damaged entry of the ledger costs that entry, not the count
    counted = {key: ledger.get(key) for key in ("samples", "first_ts", "last_ts", "note")}
    events.append(Event("spool_dropped", storable_text(detail), ts=ts, host=host,
                        data=storable_json(counted)))
    try:
        insert_events(conn, events)
    except RejectedValue as exc:
        print(f"warning: spool cap ledger not recorded: {exc}", file=sys.stderr)
        return 0
    clear_ledger(config.spool_dir)
    return samples


def record_flush(conn: Connection, result: FlushResult, kind: str = "spool_flushed",
                 **extra) -> None:
    """One collector_events row saying what a flush delivered."""
    data = {
        "samples": result.samples,
        "rows_inserted": result.rows_inserted,
        "rows_offered": result.rows_offered,
        "first_ts": result.first_ts.isoformat() if result.first_ts else None,
        "last_ts": result.last_ts.isoformat() if result.last_ts else None,
        "quarantined": len(result.quarantined),
        **extra,
    }
    insert_events(conn, [Event(kind, result.summary(), data=data, ts=now_utc(),
                               host=default_host())])


def flush_spool(config: Config, *, batch_samples: int = DEFAULT_BATCH_SAMPLES,
                wait_sec: float = 0.0) -> FlushResult:
    """Take the lock, connect, deliver, then apply RETENTION_DAYS when it is set.

    Raises SpoolBusy when another flush holds the lock, and the DatabaseError subclass that
    names why the database could not take the rest (unreachable, schema missing, login refused,
    permission denied); undelivered files stay in every case."""
    with spool_lock(config.spool_dir, wait_sec):
        try:
            with connect() as conn:
                result = deliver(config, conn, batch_samples)
                if result.samples:
                    try:
                        record_flush(conn, result)
                    except RejectedValue as exc:  # the samples are in: only the note is not
                        print(f"warning: spool_flushed event not recorded: {exc}",
                              file=sys.stderr)
                if config.retention_days:
                    result.pruned = prune(conn, config.retention_days)
                now = now_utc()
                ensure_partitions(conn, now, now + PARTITIONS_AHEAD)
                return result
        except DatabaseError as exc:
            raise type(exc)(f"{exc}; undelivered files kept") from exc
