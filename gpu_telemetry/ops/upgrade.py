"""Converting the original scripts' rows (bin/init_db.sh --upgrade).

Each original row is one GPU of one sample, with the host's whole `nvidia-smi -q -x`
document stored beside it. The document is parsed by the collector's own parser, the row's GPU
picked by uuid (else by bus id), and the reading stored by the store's own insert, with the
row's time, host, status tag and memo: the row the collector would have stored for that
document. A row whose document cannot be parsed keeps what the original typed (temp_c, name,
bus id) and is counted. Raw snapshots are kept at the RAW_EVERY_SEC cadence, and the rollup
trigger covers the converted history.

A batch is converted, committed, and then recorded in telemetry.upgrade_progress; an upgrade
stopped in between redoes that one batch, which the store's ON CONFLICT DO NOTHING absorbs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from gpu_telemetry.collector.parser import Reading, element_to_json, parse_document
from gpu_telemetry.collector.source import SourceError
from gpu_telemetry.db import upgrade
from gpu_telemetry.db.narrow import Progress
from gpu_telemetry.db.store import insert_samples
from gpu_telemetry.records import GpuReading, Sample, Status

DEFAULT_BATCH_ROWS = 5_000
DOING = "converting the original rows"


class _Documents:
    """The parsed document of the rows being converted: a sample's rows (one per GPU) share
    one document, and come one after the other in key order."""

    def __init__(self) -> None:
        self._text: str | None = None
        self._reading: Reading | None = None

    def reading(self, text: str | None) -> Reading | None:
        if text != self._text:
            self._text = text
            try:
                self._reading = parse_document(text) if text else None
            except SourceError:
                self._reading = None
        return self._reading


def _pick(reading: Reading | None, row: upgrade.OriginalRow) -> GpuReading | None:
    if reading is None:
        return None
    for gpu in reading.gpus:
        if gpu.gpu_uuid == row.gpu_uuid:
            return gpu
    for gpu in reading.gpus:
        if row.pci_bus_id and gpu.pci_bus_id == row.pci_bus_id:
            return gpu
    return None


class Converter:
    """Turns original rows into samples, keeping a raw snapshot per GPU every raw_every_sec
    (the store thins them against what the database already holds, too)."""

    def __init__(self, raw_every_sec: float):
        self.raw_every_sec = raw_every_sec
        self._documents = _Documents()
        self._last_raw: dict[tuple[str, str], float] = {}

    def sample(self, row: upgrade.OriginalRow) -> tuple[Sample, bool]:
        """The row's sample, and whether its document could be read."""
        reading = self._documents.reading(row.xml)
        gpu = _pick(reading, row)
        status = Status(row.status_tag, row.status_memo)
        if gpu is None:
            typed = GpuReading(gpu_uuid=row.gpu_uuid, pci_bus_id=row.pci_bus_id,
                               gpu_name=row.gpu_name, temp_c=row.temp_c)
            return Sample(row.ts, row.host, status, [typed]), False
        key, at = (row.host, row.gpu_uuid), row.ts.timestamp()
        last = self._last_raw.get(key)
        if self.raw_every_sec > 0 and (last is None or at - last >= self.raw_every_sec):
            self._last_raw[key] = at
            gpu = replace(gpu, raw_json=element_to_json(reading.elements[gpu.gpu_uuid]))
        else:
            gpu = replace(gpu, raw_json=None)
        # The row's own uuid: a GPU found by bus id keeps the key it was stored under.
        if gpu.gpu_uuid != row.gpu_uuid:
            gpu = replace(gpu, gpu_uuid=row.gpu_uuid)
        return Sample(row.ts, row.host, status, [gpu]), True


def convert(conn, raw_every_sec: float, batch_rows: int = DEFAULT_BATCH_ROWS,
            report: Callable[[Progress], None] | None = None) -> upgrade.Standing:
    """Convert every original row not converted yet; the standing at the end."""
    standing = upgrade.standing(conn)
    if standing.finished:
        return standing
    kept = upgrade.find_kept(conn)
    total = kept.rows if kept is not None else standing.rows_done
    progress = Progress(total=total, moved=standing.rows_done, started=time.monotonic(),
                        doing=DOING, moved_before=standing.rows_done)
    converter = Converter(raw_every_sec)
    while True:
        rows = upgrade.original_rows(conn, standing.after, batch_rows)
        if not rows:
            break
        samples, unparsable = [], 0
        for row in rows:
            sample, parsed = converter.sample(row)
            samples.append(sample)
            unparsable += not parsed
        insert_samples(conn, samples, raw_every_sec)
        last = rows[-1]
        standing.after = (last.ts, last.host, last.gpu_uuid)
        standing.rows_done += len(rows)
        standing.unparsable += unparsable
        upgrade.save_standing(conn, standing)
        progress.moved = standing.rows_done
        if report is not None:
            report(progress)
    standing.finished = True
    upgrade.save_standing(conn, standing)
    return standing
