"""Parse `nvidia-smi -q -x` documents into typed, unit-free readings. Pure: text in, records
out (gpu_telemetry.records.GpuReading, one per GPU).

Which columns there are, their SQL types and where each schema version keeps the value is
gpu_telemetry.schema's GPU_FIELDS. Versions differ mostly by renames (v12 moved
`power_readings` to `gpu_power_readings`, v12/v13 renamed `clocks_throttle_reasons` to
`clocks_event_reasons`), so each field lists its paths in order of preference and the first one
reported wins. Anything not reported (`N/A`, `[Not Supported]`, a deprecation notice, a missing
element, a number out of the column's range) is None, never 0.
"""

from __future__ import annotations

import math
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from gpu_telemetry.errors import SourceError
from gpu_telemetry.records import MAX_TEXT_CHARS, GpuReading, distinct_uuid
from gpu_telemetry.schema import DRIVER_VERSION, GPU_COLUMNS, GPU_FIELDS, Column

# GPU_COLUMNS: the fields parse_gpu fills, in order.
__all__ = ["GPU_COLUMNS", "Reading", "element_to_json", "parse_document", "parse_gpu",
           "schema_version"]

NEWEST_KNOWN_SCHEMA = 13

_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}

# Values nvidia-smi prints in place of a reading.
_NOT_REPORTED = {
    "",
    "n/a",
    "[n/a]",
    "not supported",
    "[not supported]",
    "requested functionality has been deprecated",
    "unknown error",
    "[unknown error]",
    "insufficient permissions",
    "[insufficient permissions]",
    "none",
}

_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(?:[A-Za-z%/()]+\s*)*$")
_PSTATE = re.compile(r"^P\d{1,2}$")
_DTD_VERSION = re.compile(rb"nvsmi_device_v(\d+)\.dtd")


@dataclass
class Reading:
    """What one document says: a reading per readable GPU, and a line per GPU that was not."""

    gpus: list[GpuReading]
    problems: list[str] = field(default_factory=list)
    schema_version: int | None = None
    driver_version: str | None = None
    elements: dict[str, ET.Element] = field(default_factory=dict)  # gpu_uuid -> <gpu>


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value.lower() in _NOT_REPORTED or value.startswith("["):
        return None
    return value


def _number(text: str | None, sql_type: str) -> int | float | None:
    text = _text(text)
    if text is None:
        return None
    match = _NUMBER.match(text)
    if not match:
        return None
    value = float(match.group(1))
    if not math.isfinite(value):
        return None
    if sql_type == "real":
        return value if abs(value) < 1e30 else None
    low, high = _RANGES[sql_type]
    number = int(value) if value.is_integer() else round(value)
    return number if low <= number <= high else None


# Subtrees no field reads; not walked (processes can be hundreds of entries).
_NOT_WALKED = frozenset({"processes", "accounted_processes", "supported_clocks", "mig_devices",
                         "vgpus", "vgpu_software_licensed_product", "retired_pagelist"})


def _leaves(element: ET.Element, prefix: str = "", found: dict | None = None) -> dict:
    """Every leaf of a <gpu> element by its path ("temperature/gpu_temp" -> "41 C"), in one
    walk: cheaper than one find() per field path (about 70 fields, several paths each)."""
    found = {} if found is None else found
    for child in element:
        path = f"{prefix}{child.tag}"
        if len(child):
            if child.tag not in _NOT_WALKED:
                _leaves(child, f"{path}/", found)
        elif path not in found:  # the first in document order, as find() would
            found[path] = child.text
    return found


def _find_text(leaves: dict, path: str) -> str | None:
    return _text(leaves.get(path))


def _value(gpu: dict, spec: Column):
    if spec.kind == "sum":
        for group in spec.paths:
            values = [_number(_find_text(gpu, path), spec.sql_type) for path in group]
            reported = [v for v in values if v is not None]
            if reported:
                total = sum(reported)
                low, high = _RANGES[spec.sql_type]
                return total if low <= total <= high else None
        return None
    for path in spec.paths:
        text = _find_text(gpu, path)
        if text is None:
            continue
        if spec.kind == "number":
            value = _number(text, spec.sql_type)
        elif spec.kind == "text":
            value = text[:MAX_TEXT_CHARS]
        elif spec.kind == "pstate":
            value = text if _PSTATE.match(text) else None
        elif spec.kind == "active":
            value = {"active": True, "not active": False}.get(text.lower())
        elif spec.kind == "enabled":
            value = {"enabled": True, "yes": True, "disabled": False, "no": False}.get(
                text.lower())
        else:
            raise ValueError(f"{spec.name}: the parser cannot read kind {spec.kind!r}")
        if value is not None:
            return value
    return None


def parse_gpu(element: ET.Element, index: int, driver_version: str | None) -> GpuReading:
    """One <gpu> element to one reading. Raises ValueError when the GPU has no identity."""
    gpu = _leaves(element)
    for name, value in element.attrib.items():
        gpu[f"@{name}"] = value
    row: dict = {}
    for spec in GPU_FIELDS:
        if spec.kind == "position":
            row[spec.name] = index
        elif spec.kind == "document":
            row[spec.name] = driver_version
        else:
            row[spec.name] = _value(gpu, spec)
    if row["gpu_uuid"] is None:
        raise ValueError("no uuid")
    return GpuReading(**row)


def schema_version(document: bytes) -> int | None:
    """The DTD version named by the DOCTYPE line, None when there is none."""
    match = _DTD_VERSION.search(document[:512])
    return int(match.group(1)) if match else None


def _without_supported_clocks(document: bytes) -> bytes:
    """The document less its <supported_clocks> lists: most of its bytes, read by no field and
    left out of raw snapshots, so not worth building into a tree on every sample. A list
    without its end tag (truncated output) is left for the parser to reject."""
    parts = []
    position = 0
    while (start := document.find(b"<supported_clocks>", position)) != -1:
        end = document.find(b"</supported_clocks>", start)
        if end == -1:
            break
        parts.append(document[position:start])
        position = end + len(b"</supported_clocks>")
    if not parts:
        return document
    parts.append(document[position:])
    return b"".join(parts)


def parse_document(document: bytes | str) -> Reading:
    """Parse a whole `nvidia-smi -q -x` output.

    Raises SourceError when the document as a whole is unusable (not XML, truncated, no GPU
    readable); a single unreadable GPU becomes a line in `problems` and the others are kept.
    """
    raw = document.encode() if isinstance(document, str) else document
    if not raw.strip():
        raise SourceError("empty_output", "nvidia-smi printed nothing")
    version = schema_version(raw)
    if version is not None and version > NEWEST_KNOWN_SCHEMA:
        print(f"warning: nvidia-smi XML schema v{version} is newer than v{NEWEST_KNOWN_SCHEMA}; "
              f"reading it as v{NEWEST_KNOWN_SCHEMA}", file=sys.stderr)
    # A stray non-UTF-8 byte (seen in product names on some vGPU hosts) must not cost the
    # whole reading; it becomes U+FFFD.
    text = _without_supported_clocks(raw).decode("utf-8", errors="replace")
    text = re.sub(r"^<\?xml[^>]*\?>", "", text.lstrip())
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise SourceError("malformed_xml",
                          f"nvidia-smi output is not valid XML ({exc}; {len(raw)} bytes)") from None
    if root.tag != "nvidia_smi_log":
        raise SourceError("malformed_xml",
                          f"nvidia-smi output is XML but not an nvidia_smi_log (<{root.tag}>)")
    driver_version = _text(root.findtext(DRIVER_VERSION.paths[0]))
    reading = Reading(gpus=[], schema_version=version, driver_version=driver_version)
    gpu_elements = root.findall("gpu")
    for index, gpu in enumerate(gpu_elements):
        try:
            row = parse_gpu(gpu, index, driver_version)
        except (ValueError, TypeError, AttributeError) as exc:
            reading.problems.append(f"GPU {index} (id={gpu.get('id')}) unreadable: {exc}")
            continue
        row.gpu_uuid = distinct_uuid(row.gpu_uuid, row.pci_bus_id, index, reading.elements)
        reading.gpus.append(row)
        reading.elements[row.gpu_uuid] = gpu
    if not reading.gpus:
        detail = "; ".join(reading.problems) or "the document lists no GPU"
        raise SourceError("no_gpus", f"nvidia-smi reported no readable GPU: {detail}")
    return reading


# Left out of raw snapshots: the list of supported clock pairs is static for a GPU and most of
# a document (about 60 % of an RTX 3080's <gpu> element), and says nothing about thermals.
RAW_LEFT_OUT = frozenset({"supported_clocks"})


def element_to_json(element: ET.Element, left_out: frozenset[str] = RAW_LEFT_OUT):
    """An XML element as JSON-able data: leaves become their text (None when empty), repeated
    tags become lists, attributes are kept under "@name"; children named in left_out are
    skipped."""
    children = [child for child in element if child.tag not in left_out]
    if not children and not element.attrib:
        text = (element.text or "").strip()
        return text or None
    node: dict = {f"@{key}": value for key, value in element.attrib.items()}
    seen: set[str] = set()
    repeated = {child.tag for child in children if child.tag in seen or seen.add(child.tag)}
    for child in children:
        value = element_to_json(child, left_out)
        if child.tag in repeated:
            node.setdefault(child.tag, []).append(value)
        else:
            node[child.tag] = value
    return node
