"""JSON from outside to records: the one place a sample is checked (docs/architecture.md).

A spool file (ours, or one of the original scripts' once collector/spool.py has adapted it) is
JSON that claims to be a sample and the events that travel with it. `sample_from_json` returns
them as records whose every value fits its column, or raises InvalidSample with the reason, so
that one bad file never fails a whole batch. Readings the collector takes itself come typed
from the parser and are not checked again.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gpu_telemetry.records import MAX_TEXT_CHARS, Event, GpuReading, Sample, Status, storable_text
from gpu_telemetry.schema import column_types

# One GPU's columns (a "gpus" entry, raw_json aside) -> SQL type, in the sample's order.
COLUMN_TYPES: dict[str, str] = column_types()

_INT_RANGES = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}


class InvalidSample(ValueError):
    """The object cannot be stored as a sample; the message says why."""


@dataclass
class Spooled:
    """What one spool file holds: a sample (no GPUs when the reading failed) and its events."""

    sample: Sample
    events: list[Event] = field(default_factory=list)


def now_utc() -> datetime:
    return datetime.now(UTC)


def default_host() -> str:
    return socket.gethostname().split(".")[0]


def storable_json(value):
    """JSON data PostgreSQL's jsonb accepts: text made storable, NaN and infinities as null."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {storable_text(str(key)): storable_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable_json(item) for item in value]
    return value


def _fit(column: str, sql_type: str, value):
    if value is None:
        return None
    if sql_type == "text":
        if not isinstance(value, str):
            raise InvalidSample(f"{column} is {type(value).__name__}, not text")
        return storable_text(value[:MAX_TEXT_CHARS])
    if sql_type == "boolean":
        if not isinstance(value, bool):
            raise InvalidSample(f"{column} is {type(value).__name__}, not a boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSample(f"{column} is {type(value).__name__}, not a number")
    if not math.isfinite(value):
        raise InvalidSample(f"{column} is not finite")
    if sql_type == "real":
        return float(value) if abs(value) < 1e30 else None
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidSample(f"{column} is {value}, not an integer")
        value = int(value)
    bound = _INT_RANGES[sql_type]
    # Out of range is what nvidia-smi reports as an unset 0xFFFF...; like N/A, it is no reading.
    return value if -bound <= value < bound else None


def parse_ts(value) -> datetime:
    """An aware time from ISO 8601 text; a time without an offset is local (the original
    scripts wrote those)."""
    if not isinstance(value, str):
        raise InvalidSample("ts is missing or not text")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidSample(f"ts {value[:40]!r} is not an ISO 8601 time") from None
    if not 1970 <= ts.year <= 9000:
        raise InvalidSample(f"ts {value[:40]!r} is outside 1970..9000")
    return ts if ts.tzinfo is not None else ts.astimezone()


def _reading(gpu) -> GpuReading:
    if not isinstance(gpu, dict):
        raise InvalidSample("a gpus entry is not an object")
    values = {column: _fit(column, sql_type, gpu.get(column))
              for column, sql_type in COLUMN_TYPES.items()}
    if not values["gpu_uuid"]:
        raise InvalidSample("a gpus entry has no gpu_uuid")
    raw = gpu.get("raw_json")
    if raw is not None and not isinstance(raw, dict | list):
        raise InvalidSample("raw_json is not a JSON object")
    return GpuReading(**values, raw_json=storable_json(raw))


def event_from_json(entry, ts: datetime, host: str) -> Event:
    """An event of a spool file (or of the spool cap's ledger); `ts` and `host` are the
    sample's, for an event that has none of its own."""
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise InvalidSample("an events entry has no kind")
    data = entry.get("data")
    if data is not None and not isinstance(data, dict):
        raise InvalidSample("an events entry has data that is not an object")
    return Event(kind=storable_text(entry["kind"][:100]),
                 detail=_fit("detail", "text", entry.get("detail")),
                 gpu_uuid=_fit("gpu_uuid", "text", entry.get("gpu_uuid")),
                 data=storable_json(data),
                 ts=parse_ts(entry["ts"]) if "ts" in entry else ts, host=host)


def sample_from_json(obj) -> Spooled:
    """The records a JSON object in the sample format holds, or InvalidSample."""
    if not isinstance(obj, dict):
        raise InvalidSample("not a JSON object")
    ts = parse_ts(obj.get("ts"))
    host = obj.get("host")
    if not isinstance(host, str) or not host:
        raise InvalidSample("host is missing or not text")
    host = storable_text(host[:MAX_TEXT_CHARS])
    gpus = obj.get("gpus")
    if not isinstance(gpus, list):
        raise InvalidSample("gpus is missing or not a list")
    events = obj.get("events") or []
    if not isinstance(events, list):
        raise InvalidSample("events is not a list")
    status = Status(tag=_fit("status_tag", "text", obj.get("status_tag")),
                    memo=_fit("status_memo", "text", obj.get("status_memo")),
                    run_id=_fit("run_id", "text", obj.get("run_id")))
    return Spooled(Sample(ts, host, status, [_reading(gpu) for gpu in gpus]),
                   [event_from_json(entry, ts, host) for entry in events])
