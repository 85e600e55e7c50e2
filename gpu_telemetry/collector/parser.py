"""Parse `nvidia-smi -q -x` documents into typed, unit-free rows. Pure: text in, dicts out.

One table, FIELDS, names every column, its SQL type and where each schema version keeps the
value. Versions differ mostly by renames (v12 moved `power_readings` to `gpu_power_readings`,
v12/v13 renamed `clocks_throttle_reasons` to `clocks_event_reasons`), so each field lists its
paths in order of preference and the first one reported wins. Anything not reported (`N/A`,
`[Not Supported]`, a deprecation notice, a missing element, a number out of the column's range)
is None, never 0.
"""

from __future__ import annotations

import math
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from gpu_telemetry.errors import SourceError

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


@dataclass(frozen=True)
class Field:
    """One column: `paths` are tried in order; for kind "sum" each path is a group of paths
    whose reported values are added (ECC totals are split into SRAM and DRAM since v11)."""

    column: str
    sql_type: str
    kind: str  # number | text | pstate | active | enabled | sum
    paths: tuple = ()
    comment: str = ""


def _f(column, sql_type, kind, *paths, comment=""):
    return Field(column, sql_type, kind, tuple(paths), comment)


_PW = ("gpu_power_readings", "power_readings")


def _power(*names):
    return tuple(f"{section}/{name}" for name in names for section in _PW)


_THROTTLE = (
    ("throttle_gpu_idle", "gpu_idle"),
    ("throttle_app_clocks", "applications_clocks_setting"),
    ("throttle_sw_power_cap", "sw_power_cap"),
    ("throttle_hw_slowdown", "hw_slowdown"),
    ("throttle_hw_thermal", "hw_thermal_slowdown"),
    ("throttle_hw_power_brake", "hw_power_brake_slowdown"),
    ("throttle_sync_boost", "sync_boost"),
    ("throttle_sw_thermal", "sw_thermal_slowdown"),
    ("throttle_display_clocks", "display_clocks_setting"),
)

# v13 cumulative time each reason was active since driver load.
_THROTTLE_COUNTERS = (
    ("throttle_sw_power_cap_us", "sw_power_cap"),
    ("throttle_sync_boost_us", "sync_boost"),
    ("throttle_sw_thermal_us", "sw_therm_slowdown"),
    ("throttle_hw_thermal_us", "hw_therm_slowdown"),
    ("throttle_hw_power_brake_us", "hw_power_brake"),
)

_ECC_UNCORRECTED = ("sram_uncorrectable", "sram_uncorrectable_parity",
                    "sram_uncorrectable_secded", "dram_uncorrectable")

FIELDS: tuple[Field, ...] = (
    _f("temp_c", "smallint", "number", "temperature/gpu_temp", comment="GPU core temperature, °C"),
    _f("power_draw_w", "real", "number", *_power("instant_power_draw", "power_draw",
                                                  "average_power_draw"),
       comment="board power draw, W (instant, else power_draw, else average)"),
    _f("power_limit_w", "real", "number", *_power("current_power_limit", "enforced_power_limit",
                                                   "power_limit"),
       comment="power limit in force, W"),
    _f("fan_pct", "smallint", "number", "fan_speed",
       comment="fan speed, % of maximum (NULL on fanless cards such as the Tesla P40)"),
    _f("pstate", "text", "pstate", "performance_state", comment="performance state, P0..P12"),
    _f("util_gpu_pct", "smallint", "number", "utilization/gpu_util", comment="GPU utilisation, %"),
    _f("util_mem_pct", "smallint", "number", "utilization/memory_util",
       comment="memory controller utilisation, %"),
    _f("mem_used_mib", "integer", "number", "fb_memory_usage/used",
       comment="framebuffer used, MiB"),
    _f("mem_total_mib", "integer", "number", "fb_memory_usage/total",
       comment="framebuffer total, MiB"),
    _f("clocks_gr_mhz", "smallint", "number", "clocks/graphics_clock",
       comment="graphics clock, MHz"),
    _f("clocks_sm_mhz", "smallint", "number", "clocks/sm_clock", comment="SM clock, MHz"),
    _f("clocks_mem_mhz", "smallint", "number", "clocks/mem_clock", comment="memory clock, MHz"),
    # Thermal investigation.
    _f("memory_temp_c", "smallint", "number", "temperature/memory_temp",
       comment="HBM/GDDR temperature, °C"),
    _f("temp_tlimit_c", "smallint", "number", "temperature/gpu_temp_tlimit",
       comment="headroom to the slowdown temperature (T.Limit), °C"),
    _f("temp_slowdown_c", "smallint", "number", "temperature/gpu_temp_slow_threshold",
       comment="hardware slowdown threshold, °C"),
    _f("temp_shutdown_c", "smallint", "number", "temperature/gpu_temp_max_threshold",
       comment="shutdown threshold, °C"),
    _f("temp_max_operating_c", "smallint", "number", "temperature/gpu_temp_max_gpu_threshold",
       comment="maximum operating temperature, °C"),
    _f("temp_target_c", "smallint", "number", "temperature/gpu_target_temperature",
       comment="target temperature, °C"),
    _f("memory_temp_max_c", "smallint", "number", "temperature/gpu_temp_max_mem_threshold",
       comment="maximum memory temperature, °C"),
    _f("power_avg_w", "real", "number", *_power("average_power_draw"),
       comment="power draw averaged by the driver, W"),
    _f("power_limit_default_w", "real", "number", *_power("default_power_limit"),
       comment="default power limit, W"),
    _f("power_limit_min_w", "real", "number", *_power("min_power_limit"),
       comment="lowest settable power limit, W"),
    _f("power_limit_max_w", "real", "number", *_power("max_power_limit"),
       comment="highest settable power limit, W"),
    _f("clocks_video_mhz", "smallint", "number", "clocks/video_clock", comment="video clock, MHz"),
    _f("clocks_max_gr_mhz", "smallint", "number", "max_clocks/graphics_clock",
       comment="maximum graphics clock, MHz"),
    _f("clocks_max_sm_mhz", "smallint", "number", "max_clocks/sm_clock",
       comment="maximum SM clock, MHz"),
    _f("clocks_max_mem_mhz", "smallint", "number", "max_clocks/mem_clock",
       comment="maximum memory clock, MHz"),
    _f("util_enc_pct", "smallint", "number", "utilization/encoder_util",
       comment="encoder utilisation, %"),
    _f("util_dec_pct", "smallint", "number", "utilization/decoder_util",
       comment="decoder utilisation, %"),
    _f("pcie_gen_cur", "smallint", "number", "pci/pci_gpu_link_info/pcie_gen/current_link_gen",
       comment="current PCIe generation"),
    _f("pcie_gen_max", "smallint", "number", "pci/pci_gpu_link_info/pcie_gen/max_link_gen",
       comment="maximum PCIe generation of GPU and host"),
    _f("pcie_width_cur", "smallint", "number",
       "pci/pci_gpu_link_info/link_widths/current_link_width", comment="current PCIe lanes"),
    _f("pcie_width_max", "smallint", "number", "pci/pci_gpu_link_info/link_widths/max_link_width",
       comment="maximum PCIe lanes"),
    _f("pcie_tx_kbps", "integer", "number", "pci/tx_util", comment="PCIe transmit, KB/s"),
    _f("pcie_rx_kbps", "integer", "number", "pci/rx_util", comment="PCIe receive, KB/s"),
    _f("pcie_replay_count", "integer", "number", "pci/replay_counter",
       comment="PCIe replays since driver load (link errors)"),
    *(
        _f(column, "boolean", "active", f"clocks_event_reasons/clocks_event_reason_{reason}",
           f"clocks_throttle_reasons/clocks_throttle_reason_{reason}",
           comment=f"clock event (throttle) reason {reason} active")
        for column, reason in _THROTTLE
    ),
    *(
        _f(column, "bigint", "number",
           f"clocks_event_reasons_counters/clocks_event_reasons_counters_{reason}",
           comment=f"time {reason} was active since driver load, µs (v13+)")
        for column, reason in _THROTTLE_COUNTERS
    ),
    _f("ecc_enabled", "boolean", "enabled", "ecc_mode/current_ecc", comment="ECC mode in force"),
    _f("ecc_volatile_corrected", "integer", "sum",
       ("ecc_errors/volatile/sram_correctable", "ecc_errors/volatile/dram_correctable"),
       ("ecc_errors/volatile/single_bit/total",),
       comment="corrected ECC errors since driver load"),
    _f("ecc_volatile_uncorrected", "integer", "sum",
       tuple(f"ecc_errors/volatile/{name}" for name in _ECC_UNCORRECTED),
       ("ecc_errors/volatile/double_bit/total",),
       comment="uncorrected ECC errors since driver load"),
    _f("ecc_aggregate_corrected", "integer", "sum",
       ("ecc_errors/aggregate/sram_correctable", "ecc_errors/aggregate/dram_correctable"),
       ("ecc_errors/aggregate/single_bit/total",),
       comment="corrected ECC errors over the GPU's life"),
    _f("ecc_aggregate_uncorrected", "integer", "sum",
       tuple(f"ecc_errors/aggregate/{name}" for name in _ECC_UNCORRECTED),
       ("ecc_errors/aggregate/double_bit/total",),
       comment="uncorrected ECC errors over the GPU's life"),
    _f("retired_pages_sbe", "integer", "number",
       "retired_pages/multiple_single_bit_retirement/retired_count",
       comment="pages retired for repeated single-bit errors"),
    _f("retired_pages_dbe", "integer", "number",
       "retired_pages/double_bit_retirement/retired_count",
       comment="pages retired for double-bit errors"),
    _f("retired_pages_pending", "boolean", "enabled", "retired_pages/pending_retirement",
       comment="a page retirement waits for the next driver load"),
    _f("remapped_rows_corr", "integer", "number", "remapped_rows/remapped_row_corr",
       comment="rows remapped for correctable errors"),
    _f("remapped_rows_unc", "integer", "number", "remapped_rows/remapped_row_unc",
       comment="rows remapped for uncorrectable errors"),
    _f("remapped_rows_pending", "boolean", "enabled", "remapped_rows/remapped_row_pending",
       comment="a row remap waits for a GPU reset"),
    _f("remapped_rows_failure", "boolean", "enabled", "remapped_rows/remapped_row_failure",
       comment="a row remap failed"),
    _f("persistence_mode", "boolean", "enabled", "persistence_mode",
       comment="driver persistence mode"),
)

IDENTITY_COLUMNS = ("gpu_uuid", "pci_bus_id", "gpu_name", "gpu_index")
GPU_COLUMNS = (*IDENTITY_COLUMNS, *(f.column for f in FIELDS), "driver_version")


@dataclass
class Reading:
    """What one document says: a row per readable GPU, and a line per GPU that was not."""

    gpus: list[dict]
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


def _value(gpu: dict, spec: Field):
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
            value = text
        elif spec.kind == "pstate":
            value = text if _PSTATE.match(text) else None
        elif spec.kind == "active":
            value = {"active": True, "not active": False}.get(text.lower())
        elif spec.kind == "enabled":
            value = {"enabled": True, "yes": True, "disabled": False, "no": False}.get(
                text.lower())
        else:
            raise ValueError(f"unknown field kind {spec.kind!r}")
        if value is not None:
            return value
    return None


def parse_gpu(element: ET.Element, index: int, driver_version: str | None) -> dict:
    """One <gpu> element to one row. Raises ValueError when the GPU has no identity."""
    gpu = _leaves(element)
    uuid = _find_text(gpu, "uuid")
    if uuid is None:
        raise ValueError("no uuid")
    row = {
        "gpu_uuid": uuid,
        "pci_bus_id": _find_text(gpu, "pci/pci_bus_id") or _text(element.get("id")),
        "gpu_name": _find_text(gpu, "product_name"),
        "gpu_index": index,
    }
    for spec in FIELDS:
        row[spec.column] = _value(gpu, spec)
    row["driver_version"] = driver_version
    return row


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
    driver_version = _text(root.findtext("driver_version"))
    reading = Reading(gpus=[], schema_version=version, driver_version=driver_version)
    gpu_elements = root.findall("gpu")
    for index, gpu in enumerate(gpu_elements):
        try:
            row = parse_gpu(gpu, index, driver_version)
        except (ValueError, TypeError, AttributeError) as exc:
            reading.problems.append(f"GPU {index} (id={gpu.get('id')}) unreadable: {exc}")
            continue
        if row["gpu_uuid"] in reading.elements:
            # Two GPUs with one UUID (seen in anonymised captures, e.g. dual_2080-v13.xml) would
            # collapse into one row under the (ts, host, gpu_uuid) key; the bus id tells them
            # apart, so the second reading is kept rather than silently dropped.
            row["gpu_uuid"] = f"{row['gpu_uuid']}@{row['pci_bus_id'] or index}"
        reading.gpus.append(row)
        reading.elements[row["gpu_uuid"]] = gpu
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
