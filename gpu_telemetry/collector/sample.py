"""The sample: one reading of every GPU on a host, with its status (docs/architecture.md).

`new_sample` builds one from a parsed reading; `validate_sample` takes any JSON object that
claims to be one (a spool file of ours, or of the original scripts) and returns a sample whose
every value fits its column, or raises InvalidSample with the reason. Nothing reaches the
database without passing through it, so one bad file cannot fail a whole batch.
"""

from __future__ import annotations

import math
import re
import socket
from datetime import UTC, datetime

from gpu_telemetry.collector.parser import element_to_json, parse_document
from gpu_telemetry.errors import SourceError
from gpu_telemetry.ops.status import Status
from gpu_telemetry.schema import column_types

# One GPU's columns (a "gpus" entry, raw_json aside) -> SQL type, in the sample's order.
COLUMN_TYPES: dict[str, str] = column_types()

_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_RANGES = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
MAX_TEXT_CHARS = 1000

# Keys the original scripts wrote for each GPU, from `nvidia-smi --query-gpu`.
_LEGACY_GPU_KEYS = {
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


class InvalidSample(ValueError):
    """The object cannot be stored as a sample; the message says why."""


def now_utc() -> datetime:
    return datetime.now(UTC)


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def default_host() -> str:
    return socket.gethostname().split(".")[0]


def new_sample(ts: datetime, host: str, status: Status, gpus: list[dict],
               events: list[dict] | None = None) -> dict:
    sample = {
        "ts": format_ts(ts),
        "host": host,
        "status_tag": status.tag,
        "status_memo": status.memo,
        "run_id": status.run_id,
        "gpus": gpus,
    }
    if events:
        sample["events"] = events
    return sample


def event(kind: str, detail: str, *, gpu_uuid: str | None = None, data: dict | None = None,
          ts: datetime | None = None) -> dict:
    entry: dict = {"kind": kind, "detail": detail}
    if gpu_uuid is not None:
        entry["gpu_uuid"] = gpu_uuid
    if data:
        entry["data"] = data
    if ts is not None:
        entry["ts"] = format_ts(ts)
    return entry


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


def _parse_ts(value) -> datetime:
    if not isinstance(value, str):
        raise InvalidSample("ts is missing or not text")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidSample(f"ts {value[:40]!r} is not an ISO 8601 time") from None
    if not 1970 <= ts.year <= 9000:
        raise InvalidSample(f"ts {value[:40]!r} is outside 1970..9000")
    if ts.tzinfo is None:
        # The original scripts wrote local time without an offset.
        ts = ts.astimezone()
    return ts


def _validate_gpu(gpu) -> dict:
    if not isinstance(gpu, dict):
        raise InvalidSample("a gpus entry is not an object")
    row = {column: _fit(column, sql_type, gpu.get(column))
           for column, sql_type in COLUMN_TYPES.items()}
    if not row["gpu_uuid"]:
        raise InvalidSample("a gpus entry has no gpu_uuid")
    raw = gpu.get("raw_json")
    if raw is not None and not isinstance(raw, dict | list):
        raise InvalidSample("raw_json is not a JSON object")
    row["raw_json"] = storable_json(raw)
    return row


def _validate_event(entry, default_ts: datetime) -> dict:
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise InvalidSample("an events entry has no kind")
    data = entry.get("data")
    if data is not None and not isinstance(data, dict):
        raise InvalidSample("an events entry has data that is not an object")
    return {
        "ts": _parse_ts(entry["ts"]) if "ts" in entry else default_ts,
        "kind": storable_text(entry["kind"][:100]),
        "detail": _fit("detail", "text", entry.get("detail")),
        "gpu_uuid": _fit("gpu_uuid", "text", entry.get("gpu_uuid")),
        "data": storable_json(data),
    }


def _legacy_gpus(obj: dict) -> list[dict]:
    """GPU rows of a file written by the original scripts: the whole `nvidia-smi -q -x` output
    is kept under raw_json.nvidia_smi_q_x, so every column can be filled from it; the few
    `--query-gpu` keys are the fallback when that XML is absent or unreadable."""
    raw = obj.get("raw_json")
    xml = raw.get("nvidia_smi_q_x") if isinstance(raw, dict) else None
    if isinstance(xml, str) and xml.strip():
        try:
            reading = parse_document(xml)
        except SourceError:
            reading = None
        if reading is not None:
            return [dict(row, raw_json=element_to_json(reading.elements[row["gpu_uuid"]]))
                    for row in reading.gpus]
    gpus = []
    for entry in obj.get("gpus") or []:
        if not isinstance(entry, dict):
            raise InvalidSample("a gpus entry is not an object")
        gpus.append({_LEGACY_GPU_KEYS.get(key, key): value for key, value in entry.items()})
    return gpus


def is_legacy(obj: dict) -> bool:
    return isinstance(obj.get("raw_json"), dict) and "nvidia_smi_q_x" in obj["raw_json"]


def validate_sample(obj) -> dict:
    """A storable sample from a JSON object, or InvalidSample."""
    if not isinstance(obj, dict):
        raise InvalidSample("not a JSON object")
    ts = _parse_ts(obj.get("ts"))
    host = obj.get("host")
    if host is None and is_legacy(obj):
        host = default_host()
    if not isinstance(host, str) or not host:
        raise InvalidSample("host is missing or not text")
    gpus = _legacy_gpus(obj) if is_legacy(obj) else obj.get("gpus")
    if not isinstance(gpus, list):
        raise InvalidSample("gpus is missing or not a list")
    events = obj.get("events") or []
    if not isinstance(events, list):
        raise InvalidSample("events is not a list")
    return {
        "ts": ts,
        "host": host[:MAX_TEXT_CHARS],
        "status_tag": _fit("status_tag", "text", obj.get("status_tag")),
        "status_memo": _fit("status_memo", "text", obj.get("status_memo")),
        "run_id": _fit("run_id", "text", obj.get("run_id")),
        "gpus": [_validate_gpu(gpu) for gpu in gpus],
        "events": [_validate_event(entry, ts) for entry in events],
    }
