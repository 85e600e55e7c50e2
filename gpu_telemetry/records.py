"""The records every part of the toolkit hands around (docs/architecture.md, Records).

`GpuReading`  one GPU in one sample: a field per column of schema.GPU_FIELDS, None for what the
              GPU did not report, and its raw snapshot (`raw_json`) when one is kept;
`Sample`      one host's reading of all its GPUs at one time, with the status it was taken in;
`Event`       one row of telemetry.collector_events (an outage, a GPU lost, a flush); never a
              sample in disguise;
`Status`      what status.json says the machine is doing.

Records are built from trusted parts (the parser, the status reader) or, for JSON from outside
(a spool file, the original scripts' format), by collector/sample.py, which checks every value
against its column once. Past that boundary nothing re-checks them. `to_json` gives the sample
format that `collect_once.py --dry-run` prints and a spool file holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, make_dataclass
from datetime import UTC, datetime
from typing import Any

from gpu_telemetry.schema import GPU_FIELDS

MAX_TEXT_CHARS = 1000
_SURROGATE = re.compile("[\ud800-\udfff]")
_PYTHON_TYPES = {"text": str, "boolean": bool, "smallint": int, "integer": int, "bigint": int,
                 "real": float}


def storable_text(text: str) -> str:
    """PostgreSQL text and jsonb cannot hold NUL, and UTF-8 cannot encode a lone surrogate;
    both become U+FFFD, so a stray byte costs a character, never the sample."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub("\ufffd", text)
    return text


def distinct_uuid(gpu_uuid: str, pci_bus_id: str | None, index: int, taken) -> str:
    """The uuid a GPU is stored under: its own, or `uuid@bus id` when a GPU of the same reading
    already has it. Two GPUs with one UUID (seen in anonymised captures, e.g.
    dual-2080-v13.xml) would collapse into one row under the (ts, host, gpu_uuid) key; the bus
    id tells them apart, so the second reading is kept rather than silently dropped."""
    return gpu_uuid if gpu_uuid not in taken else f"{gpu_uuid}@{pci_bus_id or index}"


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Status:
    """status.json: a tag (idle / prod / bench), a memo and a run id, each None when unset."""

    tag: str | None = None
    memo: str | None = None
    run_id: str | None = None


def _as_dict(reading) -> dict[str, Any]:
    """The GPU's entry of the sample format: every column, then raw_json."""
    return {name: getattr(reading, name) for name in GPU_READING_FIELDS}


def _label(reading) -> str:
    return f"{reading.gpu_name} ({reading.pci_bus_id}, {reading.gpu_uuid})"


# Generated from the schema owner, so that a column added there is a field here: the fields are
# schema.GPU_COLUMNS in order (identity first), each `type | None = None`, then raw_json.
GpuReading = make_dataclass(
    "GpuReading",
    [(column.name, _PYTHON_TYPES[column.sql_type] | None, field(default=None))
     for column in GPU_FIELDS]
    + [("raw_json", dict | None, field(default=None))],
    namespace={"__doc__": "One GPU's readings in one sample; None: not reported.",
               "__module__": __name__, "as_dict": _as_dict, "label": _label},
    slots=True,
)
GPU_READING_FIELDS = tuple(item.name for item in fields(GpuReading))


@dataclass
class Sample:
    """One reading of every GPU on a host. `ts` is aware; a failed reading has no GPUs."""

    ts: datetime
    host: str
    status: Status
    gpus: list = field(default_factory=list)  # of GpuReading

    def to_json(self, events: list[Event] = ()) -> dict:
        """The sample format, with the events that travel with it (a spool file, --dry-run)."""
        body: dict[str, Any] = {
            "ts": format_ts(self.ts), "host": self.host, "status_tag": self.status.tag,
            "status_memo": self.status.memo, "run_id": self.status.run_id,
            "gpus": [gpu.as_dict() for gpu in self.gpus],
        }
        if events:
            body["events"] = [entry.to_json() for entry in events]
        return body


@dataclass(frozen=True)
class Event:
    """Something the collector noticed. `ts` None: the time of the sample it travels with (or
    of the moment it is stored); `host` None: the collector's own host."""

    kind: str
    detail: str | None
    gpu_uuid: str | None = None
    data: dict | None = None
    ts: datetime | None = None
    host: str | None = None

    def placed(self, ts: datetime, host: str) -> Event:
        """The event with its time and host filled in where they were left open."""
        if self.ts is not None and self.host is not None:
            return self
        return Event(self.kind, self.detail, self.gpu_uuid, self.data,
                     self.ts if self.ts is not None else ts,
                     self.host if self.host is not None else host)

    def to_json(self) -> dict:
        body: dict[str, Any] = {"kind": self.kind, "detail": self.detail}
        if self.gpu_uuid is not None:
            body["gpu_uuid"] = self.gpu_uuid
        if self.data:
            body["data"] = self.data
        if self.ts is not None:
            body["ts"] = format_ts(self.ts)
        return body
