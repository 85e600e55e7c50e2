"""What each column is read from with GPU_SOURCE=nvml: the one table of column -> NVML call
(docs/nvml.md shows the same table); collector/nvml_worker.py reads the GPUs through it.

The binding (`pynvml` from nvidia-ml-py) is passed in, never imported here: the worker process
(collector/nvml_worker.py) owns it, and tests answer it from real nvidia-smi captures
(tests/stand_ins/nvml/pynvml.py). Names of calls and constants are strings resolved on that
module, so this table is data.

Each column lists its ways in order of preference and the first one reported wins, as the
parser's XML paths do: power draw is the instant field where the driver has it, else
nvmlDeviceGetPowerUsage, else the average field. A call or field NVML answers with "not
supported" (or any other per-value error) is None, never 0. Field values (nvmlDeviceGetFieldValues)
are fetched in one call per GPU and each value's own return code is checked. Calls marked
`static` answer what cannot change while the driver is loaded (identity, thresholds, limits'
range, maximum clocks and link, supported clock-event reasons, ECC mode in force); they are
read once per NVML session, which is opened again after any failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpu_telemetry.schema import GPU_COLUMNS

MIB = 1024 * 1024

# Return codes that say the value is not there, not that the GPU or the driver is in trouble.
VALUE_ABSENT = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_NO_PERMISSION", "NVML_ERROR_NOT_FOUND",
                "NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_INVALID_ARGUMENT",
                "NVML_ERROR_NO_DATA", "NVML_ERROR_NOT_READY",
                "NVML_ERROR_ARGUMENT_VERSION_MISMATCH", "NVML_ERROR_DEPRECATED",
                "NVML_ERROR_UNKNOWN", "NVML_ERROR_INSUFFICIENT_SIZE",
                "NVML_ERROR_CORRUPTED_INFOROM")


@dataclass(frozen=True)
class Call:
    """`function(handle, *args, **kwargs)`, then `.attr` or `[item]` of what it returns.
    Constant names in args and kwargs are looked up on the binding."""

    function: str
    args: tuple = ()
    attr: str = ""
    item: int | None = None
    kwargs: tuple = ()  # (name, constant name) pairs
    static: bool = False

    def describe(self) -> str:
        args = ", ".join(("handle", *self.args, *(f"{k}={v}" for k, v in self.kwargs)))
        picked = f".{self.attr}" if self.attr else f"[{self.item}]" if self.item is not None \
            else ""
        return f"{self.function}({args}){picked}"


@dataclass(frozen=True)
class Field:
    """One value of the GPU's nvmlDeviceGetFieldValues call."""

    field_id: str

    def describe(self) -> str:
        return f"field {self.field_id}"


@dataclass(frozen=True)
class Reason:
    """One bit of the clock-event (throttle) reasons: None unless the GPU supports the reason."""

    bit: str

    def describe(self) -> str:
        return f"nvmlDeviceGetCurrentClocksEventReasons & {self.bit}"


@dataclass(frozen=True)
class Way:
    """A column's ways in, in order, and how NVML's value becomes the column's unit."""

    column: str
    ways: tuple
    convert: Callable[[Any], Any] | None = None
    unit_note: str = ""


def _watts(milliwatts):
    return milliwatts / 1000


def _mib(value_bytes):
    return value_bytes // MIB


def _microseconds(nanoseconds):
    return nanoseconds // 1000


def _pstate(state):
    return f"P{state}" if 0 <= state <= 15 else None  # 32: NVML_PSTATE_UNKNOWN


def as_text(value):
    """Older bindings answer bytes, newer ones str."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _on(value):
    return bool(value)


_LINK = "nvmlDevice{}PcieLink{}"
_MEMORY_V2 = (("version", "nvmlMemory_v2"),)
_REASONS = (
    ("throttle_gpu_idle", "nvmlClocksEventReasonGpuIdle"),
    ("throttle_app_clocks", "nvmlClocksEventReasonApplicationsClocksSetting"),
    ("throttle_sw_power_cap", "nvmlClocksEventReasonSwPowerCap"),
    ("throttle_hw_slowdown", "nvmlClocksEventReasonHwSlowdown"),
    ("throttle_hw_thermal", "nvmlClocksEventReasonHwThermalSlowdown"),
    ("throttle_hw_power_brake", "nvmlClocksEventReasonHwPowerBrakeSlowdown"),
    ("throttle_sync_boost", "nvmlClocksEventReasonSyncBoost"),
    ("throttle_sw_thermal", "nvmlClocksEventReasonSwThermalSlowdown"),
    ("throttle_display_clocks", "nvmlClocksEventReasonDisplayClockSetting"),
)
_COUNTERS = (
    ("throttle_sw_power_cap_us", "NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP"),
    ("throttle_sync_boost_us", "NVML_FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST"),
    ("throttle_sw_thermal_us", "NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN"),
    ("throttle_hw_thermal_us", "NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN"),
    ("throttle_hw_power_brake_us", "NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN"),
)


def _threshold(name: str) -> Call:
    return Call("nvmlDeviceGetTemperatureThreshold", (f"NVML_TEMPERATURE_THRESHOLD_{name}",),
                static=name != "ACOUSTIC_CURR")


def _clock(kind: str, maximum: bool = False) -> Call:
    function = "nvmlDeviceGetMaxClockInfo" if maximum else "nvmlDeviceGetClockInfo"
    return Call(function, (f"NVML_CLOCK_{kind}",), static=maximum)


# Every GPU column but gpu_index (the GPU's NVML index) and driver_version
# (nvmlSystemGetDriverVersion, once per session).
MAPPING: tuple[Way, ...] = (
    Way("gpu_uuid", (Call("nvmlDeviceGetUUID", static=True),), as_text),
    Way("pci_bus_id", (Call("nvmlDeviceGetPciInfo", attr="busId", static=True),), as_text),
    Way("gpu_name", (Call("nvmlDeviceGetName", static=True),), as_text),
    Way("temp_c", (Call("nvmlDeviceGetTemperature", ("NVML_TEMPERATURE_GPU",)),)),
    Way("power_draw_w", (Field("NVML_FI_DEV_POWER_INSTANT"), Call("nvmlDeviceGetPowerUsage"),
                         Field("NVML_FI_DEV_POWER_AVERAGE")), _watts, "mW"),
    Way("power_limit_w", (Call("nvmlDeviceGetEnforcedPowerLimit"),
                          Call("nvmlDeviceGetPowerManagementLimit")), _watts, "mW"),
    Way("fan_pct", (Call("nvmlDeviceGetFanSpeed"),)),
    Way("pstate", (Call("nvmlDeviceGetPerformanceState"),), _pstate),
    Way("util_gpu_pct", (Call("nvmlDeviceGetUtilizationRates", attr="gpu"),)),
    Way("util_mem_pct", (Call("nvmlDeviceGetUtilizationRates", attr="memory"),)),
    Way("mem_used_mib", (Call("nvmlDeviceGetMemoryInfo", attr="used", kwargs=_MEMORY_V2),
                         Call("nvmlDeviceGetMemoryInfo", attr="used")), _mib, "bytes"),
    Way("mem_total_mib", (Call("nvmlDeviceGetMemoryInfo", attr="total", kwargs=_MEMORY_V2),
                          Call("nvmlDeviceGetMemoryInfo", attr="total")), _mib, "bytes"),
    Way("clocks_gr_mhz", (_clock("GRAPHICS"),)),
    Way("clocks_sm_mhz", (_clock("SM"),)),
    Way("clocks_mem_mhz", (_clock("MEM"),)),
    Way("memory_temp_c", (Field("NVML_FI_DEV_MEMORY_TEMP"),)),
    Way("temp_tlimit_c", (Call("nvmlDeviceGetMarginTemperature"),)),
    Way("temp_slowdown_c", (_threshold("SLOWDOWN"),)),
    Way("temp_shutdown_c", (_threshold("SHUTDOWN"),)),
    Way("temp_max_operating_c", (_threshold("GPU_MAX"),)),
    Way("temp_target_c", (_threshold("ACOUSTIC_CURR"),)),
    Way("memory_temp_max_c", (_threshold("MEM_MAX"),)),
    Way("power_avg_w", (Field("NVML_FI_DEV_POWER_AVERAGE"),), _watts, "mW"),
    Way("power_limit_default_w",
        (Call("nvmlDeviceGetPowerManagementDefaultLimit", static=True),), _watts, "mW"),
    Way("power_limit_min_w",
        (Call("nvmlDeviceGetPowerManagementLimitConstraints", item=0, static=True),),
        _watts, "mW"),
    Way("power_limit_max_w",
        (Call("nvmlDeviceGetPowerManagementLimitConstraints", item=1, static=True),),
        _watts, "mW"),
    Way("clocks_video_mhz", (_clock("VIDEO"),)),
    Way("clocks_max_gr_mhz", (_clock("GRAPHICS", maximum=True),)),
    Way("clocks_max_sm_mhz", (_clock("SM", maximum=True),)),
    Way("clocks_max_mem_mhz", (_clock("MEM", maximum=True),)),
    Way("util_enc_pct", (Call("nvmlDeviceGetEncoderUtilization", item=0),)),
    Way("util_dec_pct", (Call("nvmlDeviceGetDecoderUtilization", item=0),)),
    Way("pcie_gen_cur", (Call(_LINK.format("GetCurr", "Generation")),)),
    Way("pcie_gen_max", (Call(_LINK.format("GetMax", "Generation"), static=True),)),
    Way("pcie_width_cur", (Call(_LINK.format("GetCurr", "Width")),)),
    Way("pcie_width_max", (Call(_LINK.format("GetMax", "Width"), static=True),)),
    # nvmlDeviceGetPcieThroughput samples 20 ms inside the driver: read beside the sampling
    # (collector/nvml_worker.py, PcieRates, at most once a second), the value the previous
    # reading asked for.
    Way("pcie_tx_kbps", (Call("nvmlDeviceGetPcieThroughput", ("NVML_PCIE_UTIL_TX_BYTES",)),)),
    Way("pcie_rx_kbps", (Call("nvmlDeviceGetPcieThroughput", ("NVML_PCIE_UTIL_RX_BYTES",)),)),
    Way("pcie_replay_count", (Field("NVML_FI_DEV_PCIE_REPLAY_COUNTER"),)),
    *(Way(column, (Reason(bit),)) for column, bit in _REASONS),
    *(Way(column, (Field(field),), _microseconds, "ns") for column, field in _COUNTERS),
    Way("ecc_enabled", (Call("nvmlDeviceGetEccMode", item=0, static=True),), _on),
    Way("ecc_volatile_corrected", (Field("NVML_FI_DEV_ECC_SBE_VOL_TOTAL"),)),
    Way("ecc_volatile_uncorrected", (Field("NVML_FI_DEV_ECC_DBE_VOL_TOTAL"),)),
    Way("ecc_aggregate_corrected", (Field("NVML_FI_DEV_ECC_SBE_AGG_TOTAL"),)),
    Way("ecc_aggregate_uncorrected", (Field("NVML_FI_DEV_ECC_DBE_AGG_TOTAL"),)),
    Way("retired_pages_sbe", (Field("NVML_FI_DEV_RETIRED_SBE"),)),
    Way("retired_pages_dbe", (Field("NVML_FI_DEV_RETIRED_DBE"),)),
    Way("retired_pages_pending", (Field("NVML_FI_DEV_RETIRED_PENDING"),), _on),
    Way("remapped_rows_corr", (Field("NVML_FI_DEV_REMAPPED_COR"),)),
    Way("remapped_rows_unc", (Field("NVML_FI_DEV_REMAPPED_UNC"),)),
    Way("remapped_rows_pending", (Field("NVML_FI_DEV_REMAPPED_PENDING"),), _on),
    Way("remapped_rows_failure", (Field("NVML_FI_DEV_REMAPPED_FAILURE"),), _on),
    Way("persistence_mode", (Call("nvmlDeviceGetPersistenceMode"),), _on),
)
BY_COLUMN = {way.column: way for way in MAPPING}
FROM_SESSION = ("gpu_index", "driver_version")
assert sorted((*BY_COLUMN, *FROM_SESSION)) == sorted(GPU_COLUMNS), \
    "MAPPING does not cover exactly the GPU columns of gpu_telemetry.schema"
FIELD_IDS = tuple(dict.fromkeys(way.field_id for column in MAPPING for way in column.ways
                                if isinstance(way, Field)))
# Read beside the sampling (collector/nvml_worker.py, PcieRates), in this order.
BESIDE = ("pcie_tx_kbps", "pcie_rx_kbps")

def field_value(nv, value) -> Any:
    """The number in one nvmlFieldValue_t, or None when its own return code is not success."""
    if value.nvmlReturn != nv.NVML_SUCCESS:
        return None
    kind = value.valueType
    member = {nv.NVML_VALUE_TYPE_DOUBLE: "dVal", nv.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
              nv.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
              nv.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
              nv.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
              nv.NVML_VALUE_TYPE_SIGNED_INT: "siVal"}.get(kind)
    if member is None:
        member = "usVal" if kind == getattr(nv, "NVML_VALUE_TYPE_UNSIGNED_SHORT", -1) else None
    return getattr(value.value, member) if member else None


def mapping_table() -> list[tuple[str, str]]:
    """(column, its NVML ways in order) for docs/nvml.md and tests."""
    rows = [(way.column, " else ".join(w.describe() for w in way.ways)
             + (f" ({way.unit_note})" if way.unit_note else "")
             + (" [static]" if all(getattr(w, "static", False) for w in way.ways) else ""))
            for way in MAPPING]
    rows.append(("gpu_index", "the index given to nvmlDeviceGetHandleByIndex"))
    rows.append(("driver_version", "nvmlSystemGetDriverVersion() [static]"))
    return rows
