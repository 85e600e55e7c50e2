"""pynvml stand-in for tests: NVIDIA's Python binding (nvidia-ml-py, module `pynvml`) answered
from a real `nvidia-smi -q -x` capture, or failing the way the real library fails, so the NVML
source can be tested without a GPU. Same function names and parameters, constants, return shapes
and units (mW, bytes, MHz, KB/s, ns), NVMLError classes and texts. Standard library only; it
shares no code with gpu_telemetry (its mapping is written on its own).

Usage: PYTHONPATH=tests/stand_ins/nvml python ...   (`import pynvml` then finds this module)

Environment (looked up at every call, so a running process can be switched):
  NVML_STANDIN_FIXTURE     XML document to answer from (default: ../../fixtures/nvidia-smi/
                           rtx-3080-v13.xml from this file), parsed once per (path, mtime)
  NVML_STANDIN_MODE        ok (default) | gpu_lost | unknown_error | driver_not_loaded |
                           version_mismatch | no_library | uninitialized | gpu_not_found |
                           no_devices | not_supported | hang
  NVML_STANDIN_MODE_FILE   when the file exists, its first word overrides the mode
  NVML_STANDIN_LOST_GPUS   comma-separated GPU indices that gpu_lost affects (default: all)
  NVML_STANDIN_HANG_SEC    how long hang sleeps (default 3600)
  NVML_STANDIN_LOG         append "<time.time()> <pid> <function name>" per binding call
  NVSMI_STANDIN_HEAT_FILE  the nvidia-smi stand-in's heat rule: while the file exists (holding
                           "<start epoch> <pid>") gpu_temp reads +25 C, +5 C more per second
                           since the start, at most +45 C, and every power draw (PowerUsage,
                           fields POWER_INSTANT and POWER_AVERAGE) +150 W; unreported stays so

Cost: a call costs microseconds, as the real library's. The variables are read from the
mapping behind os.environ (which its assignments and deletions keep up to date), so a change
made in the process takes effect at the next call. The files they name are not opened or
stat()ed at every call:
  - the mode file and the heat file are read again at most every 50 ms (time.monotonic()),
    the mode file at every nvmlInit too, and either one at every call during the 2 s after it
    was first read or seen to change (a test that rewrites it and calls at once sees each
    word); so a change made by another process is seen within 50 ms;
  - the document's mtime is checked at most every 50 ms and at the first call after each
    nvmlInit. When a (path, mtime) is loaded, every answer of each of its <gpu> is computed
    (values, or the error to raise), so a call is a look-up in a table.
Only the time-dependent parts are computed per call: the heat added to temperatures and
power draws, and the field values' timestamps.

Modes and what they raise (NVMLError .value, str()):
  any                before nvmlInit or after the last nvmlShutdown, every query:
                     NVML_ERROR_UNINITIALIZED (1, "Uninitialized")
  no_library         nvmlInit: NVML_ERROR_LIBRARY_NOT_FOUND (12, "NVML Shared Library Not Found")
  driver_not_loaded  nvmlInit: NVML_ERROR_DRIVER_NOT_LOADED (9, "Driver Not Loaded")
  version_mismatch   nvmlInit: NVML_ERROR_LIB_RM_VERSION_MISMATCH (18, "RM has detected an
                     NVML/RM version mismatch."); these three fail nvmlInit only
  no_devices         nvmlDeviceGetCount() is 0
  gpu_not_found      nvmlDeviceGetHandleByIndex: NVML_ERROR_GPU_NOT_FOUND (28, "GPU not found")
  uninitialized      nvmlInit works, every query: NVML_ERROR_UNINITIALIZED
  unknown_error      every device query but identity: NVML_ERROR_UNKNOWN (999, "Unknown Error")
  gpu_lost           init, count and handles work; any other call on a lost GPU's handle, the
                     whole nvmlDeviceGetFieldValues too: NVML_ERROR_GPU_IS_LOST (15, "GPU is lost")
  not_supported      identity and the system calls work; other device queries:
                     NVML_ERROR_NOT_SUPPORTED (3, "Not Supported"), in each field value too
  hang               nvmlDeviceGetTemperature sleeps NVML_STANDIN_HANG_SEC, then answers
Identity: nvmlDeviceGetCount, GetHandleByIndex, GetUUID, GetName, GetPciInfo, GetIndex. An index
out of range or a foreign handle: NVML_ERROR_INVALID_ARGUMENT (2).

Mapping: each call answers from elements of its <gpu> (document order): function <- element in
_READS, _THRESHOLDS and _FIELDS below. The number leading the text is taken, its unit dropped
("41 C", "50.12 W" -> 50120 mW, "10240 MiB" -> bytes, "16x", "0 us" -> ns). An element missing,
or reading N/A, [N/A], Not Supported, Unknown Error, Requested functionality has been
deprecated, Insufficient Permissions, ... raises NOT_SUPPORTED (a field value carries it). In
brief:
  Temperature <- temperature/gpu_temp; power <- gpu_power_readings/ (v12+) or power_readings/:
  PowerUsage <- power_draw, else average_power_draw (v13 has no power_draw); MemoryInfo <-
  fb_memory_usage/ (v1: used includes reserved; nvmlMemory_v2 without <reserved>:
  FUNCTION_NOT_FOUND, as a driver lacking nvmlDeviceGetMemoryInfo_v2); PerformanceState <-
  performance_state (unreported: NVML_PSTATE_UNKNOWN, returned); clock event reasons <-
  clocks_event_reasons/ (v12+) or clocks_throttle_reasons/, "Active" / "Not Active"; ECC totals
  <- ecc_errors/{volatile,aggregate}/ single_bit|double_bit/total where the document has them,
  else the sums of its sram_* and dram_* counts; PcieThroughput <- pci/tx_util, rx_util after
  a 20 ms sample, as the driver's.
"""

from __future__ import annotations

import functools
import os
import re
import string
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from types import SimpleNamespace

# --- constants: the values of nvidia-ml-py ---------------------------------------------------
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_FREQ_NOT_SUPPORTED = 24
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_DEPRECATED = 26
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30
NVML_ERROR_UNKNOWN = 999

NVML_FEATURE_DISABLED, NVML_FEATURE_ENABLED = 0, 1
NVML_INIT_FLAG_NO_GPUS, NVML_INIT_FLAG_NO_ATTACH, NVML_INIT_FLAG_FORCE_INIT = 1, 2, 4
NVML_TEMPERATURE_GPU, NVML_TEMPERATURE_GPU_MAX, NVML_TEMPERATURE_COUNT = 0, 1, 2
NVML_TEMPERATURE_THRESHOLD_SHUTDOWN, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 0, 1
NVML_TEMPERATURE_THRESHOLD_MEM_MAX, NVML_TEMPERATURE_THRESHOLD_GPU_MAX = 2, 3
NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_MIN, NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR = 4, 5
NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_MAX, NVML_TEMPERATURE_THRESHOLD_GPS_CURR = 6, 7
NVML_TEMPERATURE_THRESHOLD_COUNT = 8
NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_CLOCK_VIDEO, NVML_CLOCK_COUNT = range(5)
NVML_PCIE_UTIL_TX_BYTES, NVML_PCIE_UTIL_RX_BYTES, NVML_PCIE_UTIL_COUNT = 0, 1, 2
NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 0, 1
NVML_MEMORY_ERROR_TYPE_COUNT = 2
NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC, NVML_ECC_COUNTER_TYPE_COUNT = 0, 1, 2
NVML_PSTATE_UNKNOWN = 32
NVML_VALUE_TYPE_DOUBLE, NVML_VALUE_TYPE_UNSIGNED_INT, NVML_VALUE_TYPE_UNSIGNED_LONG = 0, 1, 2
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, NVML_VALUE_TYPE_SIGNED_LONG_LONG = 3, 4
NVML_VALUE_TYPE_SIGNED_INT, NVML_VALUE_TYPE_UNSIGNED_SHORT, NVML_VALUE_TYPE_COUNT = 5, 6, 7
nvmlMemory_v2 = 0x02000028

NVML_FI_DEV_ECC_SBE_VOL_TOTAL, NVML_FI_DEV_ECC_DBE_VOL_TOTAL = 3, 4
NVML_FI_DEV_ECC_SBE_AGG_TOTAL, NVML_FI_DEV_ECC_DBE_AGG_TOTAL = 5, 6
NVML_FI_DEV_RETIRED_SBE, NVML_FI_DEV_RETIRED_DBE, NVML_FI_DEV_RETIRED_PENDING = 29, 30, 31
NVML_FI_DEV_PERF_POLICY_POWER, NVML_FI_DEV_PERF_POLICY_SYNC_BOOST = 74, 76
NVML_FI_DEV_MEMORY_TEMP = 82
NVML_FI_DEV_PCIE_REPLAY_COUNTER = 94
NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_UNC = 142, 143
NVML_FI_DEV_REMAPPED_PENDING, NVML_FI_DEV_REMAPPED_FAILURE = 144, 145
NVML_FI_DEV_POWER_AVERAGE, NVML_FI_DEV_POWER_INSTANT = 185, 186
NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP = NVML_FI_DEV_PERF_POLICY_POWER
NVML_FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST = NVML_FI_DEV_PERF_POLICY_SYNC_BOOST
NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN = 269
NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN = 270
NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN = 271

# Clock event reasons: (constant suffix, element suffix, bit). nvmlClocksEventReason<X> and the
# deprecated nvmlClocksThrottleReason<X> are defined from it below.
_REASONS = (("GpuIdle", "gpu_idle", 0x1),
            ("ApplicationsClocksSetting", "applications_clocks_setting", 0x2),
            ("SwPowerCap", "sw_power_cap", 0x4), ("HwSlowdown", "hw_slowdown", 0x8),
            ("SyncBoost", "sync_boost", 0x10), ("SwThermalSlowdown", "sw_thermal_slowdown", 0x20),
            ("HwThermalSlowdown", "hw_thermal_slowdown", 0x40),
            ("HwPowerBrakeSlowdown", "hw_power_brake_slowdown", 0x80),
            ("DisplayClockSetting", "display_clocks_setting", 0x100))
for _name, _bit in (*((name, bit) for name, _, bit in _REASONS), ("None", 0x0), ("All", 0x1FF),
                    ("UserDefinedClocks", 0x2)):
    for _prefix in ("nvmlClocksEventReason", "nvmlClocksThrottleReason"):
        globals()[_prefix + _name] = _bit
nvmlClocksThrottleReasonBoardLimit, nvmlClocksThrottleReasonReliability = 0x200, 0x400
nvmlClocksThrottleReasonAll = 0x7FF


# --- errors: the real module's model -------------------------------------------------------------
class NVMLError(Exception):
    _valClassMapping: dict = {}
    _errcode_to_string = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
        NVML_ERROR_INSUFFICIENT_POWER: "Insufficient External Power",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_IRQ_ISSUE: "Interrupt Request Issue",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_CORRUPTED_INFOROM: "Corrupted infoROM",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_RESET_REQUIRED: "GPU requires restart",
        NVML_ERROR_OPERATING_SYSTEM: "The operating system has blocked the request.",
        NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
        NVML_ERROR_MEMORY: "Insufficient Memory",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }

    def __new__(typ, value):
        if typ == NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value
        return obj

    def __str__(self):
        # For a code its table lacks, the real module asks the library (nvmlErrorString).
        if self.value not in NVMLError._errcode_to_string:
            if self.value not in _LIBRARY_ERROR_STRINGS:
                return f"NVML Error with code {self.value}"
            NVMLError._errcode_to_string[self.value] = _LIBRARY_ERROR_STRINGS[self.value]
        return NVMLError._errcode_to_string[self.value]

    def __eq__(self, other):
        return self.value == getattr(other, "value", None)


# nvmlErrorString's texts, as drivers print them, for codes missing from the table above (the
# others get the real module's fallback text).
_LIBRARY_ERROR_STRINGS = {
    NVML_ERROR_IN_USE: "In use by another client",
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH: "Argument version mismatch",
    NVML_ERROR_DEPRECATED: "Requested functionality has been deprecated",
    NVML_ERROR_GPU_NOT_FOUND: "GPU not found"}


def _error_classes():
    """NVMLError_<CamelCase> per NVML_ERROR_<NAME> (NVMLError_GpuIsLost, ...), as the real one."""
    def fixed_new(value):
        return lambda typ, *args: NVMLError.__new__(typ, value)

    for name, value in list(globals().items()):
        if name.startswith("NVML_ERROR_"):
            class_name = "NVMLError_" + string.capwords(name[11:], "_").replace("_", "")
            cls = type(class_name, (NVMLError,), {"__new__": fixed_new(value)})
            cls.__module__ = __name__
            globals()[class_name] = NVMLError._valClassMapping[value] = cls


_error_classes()


def nvmlExceptionClass(nvmlErrorCode):
    if nvmlErrorCode not in NVMLError._valClassMapping:
        raise ValueError(f"nvmlErrorCode {nvmlErrorCode} is not valid")
    return NVMLError._valClassMapping[nvmlErrorCode]


def _fail(code=NVML_ERROR_NOT_SUPPORTED):
    raise NVMLError(code)


# --- configuration: the environment and the files it names --------------------------------------
_DEFAULT_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "fixtures", "nvidia-smi", "rtx-3080-v13.xml")
_INIT_FAILURES = {"no_library": NVML_ERROR_LIBRARY_NOT_FOUND,
                  "driver_not_loaded": NVML_ERROR_DRIVER_NOT_LOADED,
                  "version_mismatch": NVML_ERROR_LIB_RM_VERSION_MISMATCH}
_MODES = {"ok", "gpu_lost", "unknown_error", "uninitialized", "gpu_not_found", "no_devices",
          "not_supported", "hang", *_INIT_FAILURES}
_POLL_SEC = 0.05  # a watched file, and the document's mtime, are checked at most this often
_HOT_SEC = 2.0  # ... and at every call this long after a watched file was first read or changed
_HEAT_WATTS = 150
_UNSET = object()  # "not looked up yet": unequal to every value
_state = SimpleNamespace(inits=0)

# os.environ.get costs a microsecond or two (more for an absent name, which raises KeyError
# inside it); the mapping behind os.environ answers in tens of nanoseconds. Its keys and values
# are bytes on POSIX; the values are only decoded when they change.
if os.name == "posix" and isinstance(getattr(os.environ, "_data", None), dict):
    _raw_env, _env_key = os.environ._data.get, os.fsencode
else:
    _raw_env, _env_key = os.environ.get, str
_MODE_KEY, _MODE_FILE_KEY = _env_key("NVML_STANDIN_MODE"), _env_key("NVML_STANDIN_MODE_FILE")
_FIXTURE_KEY, _LOG_KEY = _env_key("NVML_STANDIN_FIXTURE"), _env_key("NVML_STANDIN_LOG")
_HEAT_KEY = _env_key("NVSMI_STANDIN_HEAT_FILE")


@dataclass(frozen=True)
class _Handle:
    """A device handle: the GPU's position among the document's <gpu> elements."""

    index: int


def _read_words(path):
    try:
        with open(path) as handle:
            return handle.read().split()
    except OSError:
        return None


class _Watched:
    """A small file, read again when asked at least _POLL_SEC after the last reading, at every
    call during _HOT_SEC after its words were first read or seen to change, and when forced.
    value() is parse(its words), the words being None while the file does not exist."""

    __slots__ = ("path", "parse", "words", "parsed", "due", "hot_until")

    def __init__(self, path, parse):
        self.path, self.parse, self.words, self.parsed = path, parse, _UNSET, None
        self.due = self.hot_until = 0.0

    def value(self, force=False):
        now = time.monotonic()
        if now < self.due and now >= self.hot_until and not force:
            return self.parsed
        words = _read_words(self.path)
        if words != self.words:
            self.words, self.parsed, self.hot_until = words, self.parse(words), now + _HOT_SEC
        self.due = now + _POLL_SEC
        return self.parsed


# Each source is replaced as a whole (one assignment), so threads calling at once each see a
# consistent one: (raw NVML_STANDIN_MODE, raw NVML_STANDIN_MODE_FILE, mode they give, _Watched
# mode file or None), (raw NVSMI_STANDIN_HEAT_FILE, _Watched heat file or None).
_mode_source = (_UNSET, _UNSET, "ok", None)
_heat_source = (_UNSET, None)


def _first_word(words):
    return words[0] if words else None


def _mode(force=False):
    """The mode; `force` reads the mode file whatever its schedule (at nvmlInit)."""
    global _mode_source
    raw_mode, raw_file = _raw_env(_MODE_KEY), _raw_env(_MODE_FILE_KEY)
    source = _mode_source
    if source[0] != raw_mode or source[1] != raw_file:
        source = _mode_source = (raw_mode, raw_file, os.fsdecode(raw_mode) if raw_mode else "ok",
                                 _Watched(os.fsdecode(raw_file), _first_word) if raw_file
                                 else None)
    mode = source[2] if source[3] is None else source[3].value(force) or source[2]
    if mode not in _MODES:
        raise ValueError(f"NVML stand-in: unknown mode {mode!r} (one of {sorted(_MODES)})")
    return mode


def _is_lost(index):
    listed = os.environ.get("NVML_STANDIN_LOST_GPUS", "").strip()
    return not listed or str(index) in {word.strip() for word in listed.split(",")}


def _heat_start(words):
    """(the heat file's start epoch, None if it does not lead with one), or None while there
    is no heat file."""
    if words is None:
        return None
    start = re.match(r"\d+", words[0]) if words else None
    return (int(start[0]) if start else None,)


def _heat():
    """Degrees added to gpu_temp while the heat file exists, else None."""
    global _heat_source
    raw = _raw_env(_HEAT_KEY)
    source = _heat_source
    if source[0] != raw:
        source = _heat_source = (raw, _Watched(os.fsdecode(raw), _heat_start) if raw else None)
    heat = source[1].value() if source[1] is not None else None
    if heat is None:
        return None
    start = heat[0]
    return min(25 + 5 * (int(time.time()) - start if start is not None else 0), 45)


# --- the document: every answer, computed once per (path, mtime) --------------------------------
_documents: dict = {}  # path -> _Document
# (raw NVML_STANDIN_FIXTURE, time.monotonic() when to check the mtime again, _Document)
_fixture = (_UNSET, 0.0, None)


class _Raise:
    """An answer that is an error, raised afresh at each call that gets it."""

    __slots__ = ("code", "error")

    def __init__(self, code=None, error=None):
        self.code, self.error = code, error

    def throw(self):
        if self.error is not None:
            raise self.error.with_traceback(None)
        raise NVMLError(self.code)


def _answer(read, *args, **kwargs):
    """read(*args, **kwargs), or the error it raises as a _Raise."""
    try:
        return read(*args, **kwargs)
    except NVMLError as error:
        return _Raise(error.value)
    except Exception as error:  # noqa: BLE001 - raised by the call that asks, as before
        return _Raise(error=error)


def _give(answer):
    """An answer as a call returns it: a fresh object where it is one, or its error raised."""
    kind = type(answer)
    if kind is int or kind is str:
        return answer
    if kind is _Raise:
        answer.throw()
    if kind is SimpleNamespace:
        return SimpleNamespace(**answer.__dict__)
    if kind is list:
        return list(answer)
    return answer


class _Document:
    """A parsed document: the system calls' answers and a _Gpu per <gpu>."""

    def __init__(self, path, mtime_ns):
        root = ET.parse(path).getroot()
        self.mtime_ns = mtime_ns
        self.driver_version = _answer(_string, root, "driver_version")
        self.nvml_version = _answer(_nvml_version, root)
        self.gpus = [_Gpu(gpu) for gpu in root.findall("gpu")]


def _document():
    raw = _raw_env(_FIXTURE_KEY)
    current = _fixture
    if current[0] == raw and time.monotonic() < current[1]:
        return current[2]
    return _load(raw)


def _load(raw):
    global _fixture
    path = os.fsdecode(raw) if raw else _DEFAULT_FIXTURE
    mtime = os.stat(path).st_mtime_ns
    document = _documents.get(path)
    if document is None or document.mtime_ns != mtime:
        document = _documents[path] = _Document(path, mtime)
    _fixture = (raw, time.monotonic() + _POLL_SEC, document)
    return document


# --- each call: logged, then gated by the library state and the mode -----------------------------
def _binding(fn):
    """The binding call `fn`, which checks its own gate; logged first when NVML_STANDIN_LOG is
    set (so a call with wrong arguments is logged too, then raises TypeError)."""
    name = fn.__name__

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if _raw_env(_LOG_KEY):
            _log(name)
        return fn(*args, **kwargs)
    return call


def _log(name):
    if os.environ.get("NVML_STANDIN_LOG"):
        with open(os.environ["NVML_STANDIN_LOG"], "a") as log:
            log.write(f"{time.time()} {os.getpid()} {name}\n")


def _system():
    """The gate of the system calls; returns the mode."""
    mode = _mode()
    if _state.inits == 0 or mode == "uninitialized":
        _fail(NVML_ERROR_UNINITIALIZED)
    return mode


def _gpu(handle, kind):
    """The gate of a call on `handle` of `kind` (identity, device or fields): (_Gpu, mode)."""
    mode = _mode()
    if _state.inits == 0 or mode == "uninitialized":
        _fail(NVML_ERROR_UNINITIALIZED)
    gpus = _document().gpus
    if not isinstance(handle, _Handle) or not 0 <= handle.index < len(gpus):
        _fail(NVML_ERROR_INVALID_ARGUMENT)
    if mode != "ok":
        if mode == "gpu_lost" and _is_lost(handle.index):
            _fail(NVML_ERROR_GPU_IS_LOST)
        if kind != "identity" and mode == "unknown_error":
            _fail(NVML_ERROR_UNKNOWN)
        if kind == "device" and mode == "not_supported":
            _fail(NVML_ERROR_NOT_SUPPORTED)
    return gpus[handle.index], mode


# --- reading a <gpu> (once per document) ---------------------------------------------------------
_UNREPORTED = {"", "n/a", "not supported", "unknown error", "insufficient permissions",
               "requested functionality has been deprecated", "not found", "unknown", "none"}
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_MIB = 1048576


def _text(element, path):
    """The element's text, or None where the document does not report it."""
    node = element.find(path)
    text = (node.text or "").strip() if node is not None else ""
    return None if text.strip("[]").lower() in _UNREPORTED else text


def _string(element, path):
    text = _text(element, path)
    return text if text is not None else _fail()


def _int(element, *paths):
    """The number leading the first reported path's text, unit dropped (as int)."""
    return int(_number(element, *paths))


def _number(element, *paths):
    for path in paths:
        match = _NUMBER.match(_text(element, path) or "")
        if match:
            return float(match[0])
    return _fail()


def _word(element, path, words):
    value = words.get(_text(element, path))
    return value if value is not None else _fail()


def _reported(read, *args):
    try:
        return read(*args)
    except NVMLError:
        return None


_ENABLED = {"Enabled": NVML_FEATURE_ENABLED, "Disabled": NVML_FEATURE_DISABLED}
_YES = {"Yes": 1, "No": 0}
_LINK = "pci/pci_gpu_link_info/"
_CLOCKS = {NVML_CLOCK_GRAPHICS: "graphics_clock", NVML_CLOCK_SM: "sm_clock",
           NVML_CLOCK_MEM: "mem_clock", NVML_CLOCK_VIDEO: "video_clock"}
_PCIE = {NVML_PCIE_UTIL_TX_BYTES: "pci/tx_util", NVML_PCIE_UTIL_RX_BYTES: "pci/rx_util"}
_THRESHOLDS = {
    NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: "temperature/gpu_temp_max_threshold",
    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: "temperature/gpu_temp_slow_threshold",
    NVML_TEMPERATURE_THRESHOLD_MEM_MAX: "temperature/gpu_temp_max_mem_threshold",
    NVML_TEMPERATURE_THRESHOLD_GPU_MAX: "temperature/gpu_temp_max_gpu_threshold",
    NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_MIN: "supported_gpu_target_temp/gpu_target_temp_min",
    NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR: "temperature/gpu_target_temperature",
    NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_MAX: "supported_gpu_target_temp/gpu_target_temp_max"}
_POWER_USAGE = ("power_draw", "average_power_draw")


def _mw(gpu, *names, extra=0):
    """Milliwatts of the first reported power element, + `extra` W."""
    watts = _number(gpu, *(f"{section}/{name}" for name in names
                           for section in ("gpu_power_readings", "power_readings")))
    return round((watts + extra) * 1000)


def _at(path, scale=1):
    """A reading of the number at `path`, times `scale`."""
    return lambda gpu: _int(gpu, path) * scale


def _yes(path):
    return lambda gpu: _word(gpu, path, _YES)


def _nvml_version(root):
    cuda = _text(root, "cuda_version") or "12"
    return f"{cuda.split('.')[0]}.{_string(root, 'driver_version')}"


def _pci_info(gpu):
    bus_id = _text(gpu, "pci/pci_bus_id") or gpu.get("id") or ""
    parts = re.fullmatch(r"([0-9A-Fa-f]+):([0-9A-Fa-f]+):([0-9A-Fa-f]+)\.[0-7]", bus_id)
    domain, bus, device = (int(part, 16) for part in parts.groups()) if parts else _fail()
    device_id, subsystem_id = (int(_text(gpu, f"pci/{name}") or "0", 16)
                               for name in ("pci_device_id", "pci_sub_system_id"))
    return SimpleNamespace(busIdLegacy=f"{domain:04X}:{bus:02X}:{device:02X}.0", domain=domain,
                           bus=bus, device=device, pciDeviceId=device_id,
                           pciSubSystemId=subsystem_id,
                           busId=f"{domain:08X}:{bus:02X}:{device:02X}.0")


def _pstate(gpu):
    state = re.fullmatch(r"P(\d+)", _text(gpu, "performance_state") or "")
    return int(state[1]) if state else NVML_PSTATE_UNKNOWN


def _reasons(gpu, counted):
    """The bits of the reasons whose text is in `counted`; NOT_SUPPORTED if none is reported."""
    bits = None
    for section in ("clocks_event_reason", "clocks_throttle_reason"):
        for _, name, bit in _REASONS:
            text = _text(gpu, f"{section}s/{section}_{name}")
            if text in ("Active", "Not Active"):
                bits = (bits or 0) | (bit if text in counted else 0)
    return bits if bits is not None else _fail()


def _ecc_mode(gpu):
    current = _word(gpu, "ecc_mode/current_ecc", _ENABLED)
    pending = _reported(_word, gpu, "ecc_mode/pending_ecc", _ENABLED)
    return [current, current if pending is None else pending]


def _ecc_total(gpu, uncorrected, aggregate):
    """Older documents count single_bit|double_bit/total; later ones SRAM and DRAM apart."""
    scope = "ecc_errors/" + ("aggregate" if aggregate else "volatile")
    older = f"{scope}/{'double_bit' if uncorrected else 'single_bit'}"
    if gpu.find(older) is not None:
        return _int(gpu, older + "/total")
    names = (("sram_uncorrectable", "sram_uncorrectable_parity", "sram_uncorrectable_secded",
              "dram_uncorrectable") if uncorrected else ("sram_correctable", "dram_correctable"))
    counts = [count for count in (_reported(_int, gpu, f"{scope}/{name}") for name in names)
              if count is not None]
    return sum(counts) if counts else _fail()


def _memory_info(gpu, version):
    total, used = (_int(gpu, f"fb_memory_usage/{name}") * _MIB for name in ("total", "used"))
    reserved = _reported(_int, gpu, "fb_memory_usage/reserved")
    if not version:  # nvmlDeviceGetMemoryInfo (v1): used counts the reserved memory
        used += (reserved or 0) * _MIB
        return SimpleNamespace(total=total, free=max(total - used, 0), used=used)
    if reserved is None:  # as with a driver that lacks nvmlDeviceGetMemoryInfo_v2
        _fail(NVML_ERROR_FUNCTION_NOT_FOUND)
    if version != nvmlMemory_v2:
        _fail(NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
    return SimpleNamespace(version=version, total=total, reserved=reserved * _MIB,
                           free=_int(gpu, "fb_memory_usage/free") * _MIB, used=used)


# Calls that take only the handle: name -> (kind, reading of the GPU's <gpu> element).
_READS = {
    "nvmlDeviceGetUUID": ("identity", lambda gpu: _string(gpu, "uuid")),
    "nvmlDeviceGetName": ("identity", lambda gpu: _string(gpu, "product_name")),
    "nvmlDeviceGetPciInfo": ("identity", _pci_info),
    "nvmlDeviceGetMarginTemperature": _at("temperature/gpu_temp_tlimit"),
    "nvmlDeviceGetEnforcedPowerLimit":
        lambda gpu: _mw(gpu, "current_power_limit", "enforced_power_limit"),
    "nvmlDeviceGetPowerManagementLimit":
        lambda gpu: _mw(gpu, "requested_power_limit", "power_limit"),
    "nvmlDeviceGetPowerManagementDefaultLimit": lambda gpu: _mw(gpu, "default_power_limit"),
    "nvmlDeviceGetPowerManagementLimitConstraints":
        lambda gpu: [_mw(gpu, "min_power_limit"), _mw(gpu, "max_power_limit")],
    "nvmlDeviceGetFanSpeed": _at("fan_speed"),
    "nvmlDeviceGetPerformanceState": _pstate,
    "nvmlDeviceGetUtilizationRates": lambda gpu: SimpleNamespace(
        gpu=_int(gpu, "utilization/gpu_util"),
        memory=_reported(_int, gpu, "utilization/memory_util") or 0),
    "nvmlDeviceGetEncoderUtilization":
        lambda gpu: [_int(gpu, "utilization/encoder_util"), 167000],
    "nvmlDeviceGetDecoderUtilization":
        lambda gpu: [_int(gpu, "utilization/decoder_util"), 167000],
    "nvmlDeviceGetCurrPcieLinkGeneration": _at(_LINK + "pcie_gen/current_link_gen"),
    "nvmlDeviceGetMaxPcieLinkGeneration": _at(_LINK + "pcie_gen/max_link_gen"),
    "nvmlDeviceGetCurrPcieLinkWidth": _at(_LINK + "link_widths/current_link_width"),
    "nvmlDeviceGetMaxPcieLinkWidth": _at(_LINK + "link_widths/max_link_width"),
    "nvmlDeviceGetPcieReplayCounter": _at("pci/replay_counter"),
    "nvmlDeviceGetSupportedClocksEventReasons":
        lambda gpu: _reasons(gpu, ("Active", "Not Active")),
    "nvmlDeviceGetCurrentClocksEventReasons": lambda gpu: _reasons(gpu, ("Active",)),
    "nvmlDeviceGetSupportedClocksThrottleReasons":
        lambda gpu: _reasons(gpu, ("Active", "Not Active")),
    "nvmlDeviceGetCurrentClocksThrottleReasons": lambda gpu: _reasons(gpu, ("Active",)),
    "nvmlDeviceGetEccMode": _ecc_mode,
    "nvmlDeviceGetPersistenceMode": lambda gpu: _word(gpu, "persistence_mode", _ENABLED),
}

# nvmlDeviceGetFieldValues: field id -> (value type, reading of the <gpu> element). The power
# draws take `extra` watts (the heat file's).
_UINT, _ULL = NVML_VALUE_TYPE_UNSIGNED_INT, NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
_RETIRED, _PAGES, _REMAPPED = "retired_pages/", "retired_count", "remapped_rows/remapped_row_"
_COUNTER = "clocks_event_reasons_counters/clocks_event_reasons_counters_"
_FIELDS = {
    NVML_FI_DEV_MEMORY_TEMP: (_UINT, _at("temperature/memory_temp")),
    NVML_FI_DEV_POWER_INSTANT:
        (_UINT, lambda gpu, extra=0: _mw(gpu, "instant_power_draw", extra=extra)),
    NVML_FI_DEV_POWER_AVERAGE:
        (_UINT, lambda gpu, extra=0: _mw(gpu, "average_power_draw", extra=extra)),
    NVML_FI_DEV_ECC_SBE_VOL_TOTAL: (_ULL, lambda gpu: _ecc_total(gpu, False, False)),
    NVML_FI_DEV_ECC_DBE_VOL_TOTAL: (_ULL, lambda gpu: _ecc_total(gpu, True, False)),
    NVML_FI_DEV_ECC_SBE_AGG_TOTAL: (_ULL, lambda gpu: _ecc_total(gpu, False, True)),
    NVML_FI_DEV_ECC_DBE_AGG_TOTAL: (_ULL, lambda gpu: _ecc_total(gpu, True, True)),
    NVML_FI_DEV_RETIRED_SBE: (_UINT, _at(_RETIRED + "multiple_single_bit_retirement/" + _PAGES)),
    NVML_FI_DEV_RETIRED_DBE: (_UINT, _at(_RETIRED + "double_bit_retirement/" + _PAGES)),
    NVML_FI_DEV_RETIRED_PENDING: (_UINT, _yes(_RETIRED + "pending_retirement")),
    NVML_FI_DEV_REMAPPED_COR: (_UINT, _at(_REMAPPED + "corr")),
    NVML_FI_DEV_REMAPPED_UNC: (_UINT, _at(_REMAPPED + "unc")),
    NVML_FI_DEV_REMAPPED_PENDING: (_UINT, _yes(_REMAPPED + "pending")),
    NVML_FI_DEV_REMAPPED_FAILURE: (_UINT, _yes(_REMAPPED + "failure")),
    NVML_FI_DEV_PCIE_REPLAY_COUNTER: (_UINT, _at("pci/replay_counter")),
    # The document prints microseconds; NVML counts nanoseconds.
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP: (_ULL, _at(_COUNTER + "sw_power_cap", 1000)),
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST: (_ULL, _at(_COUNTER + "sync_boost", 1000)),
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN:
        (_ULL, _at(_COUNTER + "sw_therm_slowdown", 1000)),
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN:
        (_ULL, _at(_COUNTER + "hw_therm_slowdown", 1000)),
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN:
        (_ULL, _at(_COUNTER + "hw_power_brake", 1000)),
}
_HEATED_FIELDS = {NVML_FI_DEV_POWER_INSTANT, NVML_FI_DEV_POWER_AVERAGE}
_VALUE_ATTRS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")  # by value type
_NO_VALUE = {"dVal": 0.0, **{attr: 0 for attr in _VALUE_ATTRS[1:]}}  # never changed


def _field_answer(gpu, value_type, read, **extra):
    """(nvmlReturn, the value union's attributes) of one field, or a _Raise."""
    try:
        return NVML_SUCCESS, {**_NO_VALUE, _VALUE_ATTRS[value_type]: read(gpu, **extra)}
    except NVMLError as error:
        return error.value, _NO_VALUE
    except Exception as error:  # noqa: BLE001 - raised by the call that asks, as before
        return _Raise(error=error)


class _Gpu:
    """Every answer about one <gpu> element. `answers`: by call name, or (call name, argument)
    for the calls that take one; the heat-dependent ones as (without heat, with heat).
    `fields`: field id -> (value type, answer without heat, answer with heat or None)."""

    __slots__ = ("answers", "fields")

    def __init__(self, gpu):
        answers = {name: _answer(read[1] if isinstance(read, tuple) else read, gpu)
                   for name, read in _READS.items()}
        answers["temperature"] = _answer(_int, gpu, "temperature/gpu_temp")
        answers["power"] = (_answer(_mw, gpu, *_POWER_USAGE),
                            _answer(_mw, gpu, *_POWER_USAGE, extra=_HEAT_WATTS))
        for threshold, path in _THRESHOLDS.items():
            answers["threshold", threshold] = _answer(_int, gpu, path)
        for clock, name in _CLOCKS.items():
            answers["clock", clock] = _answer(_int, gpu, "clocks/" + name)
            answers["max_clock", clock] = _answer(_int, gpu, "max_clocks/" + name)
        for counter, path in _PCIE.items():
            answers["pcie", counter] = _answer(_int, gpu, path)
        for uncorrected in (False, True):
            for aggregate in (False, True):
                answers["ecc", uncorrected, aggregate] = _answer(_ecc_total, gpu, uncorrected,
                                                                 aggregate)
        # Any other true version gets the same answer as nvmlMemory_v2 + 1.
        for key, version in (("v1", None), ("v2", nvmlMemory_v2), ("other", nvmlMemory_v2 + 1)):
            answers["memory", key] = _answer(_memory_info, gpu, version)
        self.answers = answers
        self.fields = {
            field_id: (value_type, _field_answer(gpu, value_type, read),
                       _field_answer(gpu, value_type, read, extra=_HEAT_WATTS)
                       if field_id in _HEATED_FIELDS else None)
            for field_id, (value_type, read) in _FIELDS.items()}


# --- the binding's calls -------------------------------------------------------------------------
def _init():
    global _fixture
    if (mode := _mode(force=True)) in _INIT_FAILURES:
        _fail(_INIT_FAILURES[mode])
    _fixture = (_UNSET, 0.0, None)  # the document's mtime is checked at the next call
    _state.inits += 1


@_binding
def nvmlInitWithFlags(flags):
    _init()


@_binding
def nvmlInit():
    _init()


@_binding
def nvmlShutdown():
    if _state.inits == 0:
        _fail(NVML_ERROR_UNINITIALIZED)
    _state.inits -= 1


@_binding
def nvmlSystemGetDriverVersion():
    _system()
    return _give(_document().driver_version)


@_binding
def nvmlSystemGetNVMLVersion():
    _system()
    return _give(_document().nvml_version)


def _count(mode):
    return 0 if mode == "no_devices" else len(_document().gpus)


@_binding
def nvmlDeviceGetCount():
    return _count(_system())


@_binding
def nvmlDeviceGetHandleByIndex(index):
    mode = _system()
    if mode == "gpu_not_found":
        _fail(NVML_ERROR_GPU_NOT_FOUND)
    if not isinstance(index, int) or not 0 <= index < _count(mode):
        _fail(NVML_ERROR_INVALID_ARGUMENT)
    return _Handle(index)


@_binding
def nvmlDeviceGetIndex(handle):
    _gpu(handle, "identity")
    return handle.index


def _define(name, kind):
    def query(handle):
        return _give(_gpu(handle, kind)[0].answers[name])
    query.__name__ = query.__qualname__ = name
    globals()[name] = _binding(query)


for _name, _read in _READS.items():
    _define(_name, _read[0] if isinstance(_read, tuple) else "device")


@_binding
def nvmlDeviceGetPowerUsage(handle):
    without, with_heat = _gpu(handle, "device")[0].answers["power"]
    return _give(without if _heat() is None else with_heat)


@_binding
def nvmlDeviceGetTemperature(handle, sensor):
    gpu, mode = _gpu(handle, "device")
    if mode == "hang":
        time.sleep(float(os.environ.get("NVML_STANDIN_HANG_SEC") or 3600))
    if sensor != NVML_TEMPERATURE_GPU:
        _fail(NVML_ERROR_NOT_SUPPORTED if sensor == NVML_TEMPERATURE_GPU_MAX
              else NVML_ERROR_INVALID_ARGUMENT)
    return _give(gpu.answers["temperature"]) + (_heat() or 0)


_NOT_SUPPORTED = _Raise(NVML_ERROR_NOT_SUPPORTED)


@_binding
def nvmlDeviceGetTemperatureThreshold(handle, threshold):
    answers = _gpu(handle, "device")[0].answers
    return _give(answers.get(("threshold", threshold), _NOT_SUPPORTED))


@_binding
def nvmlDeviceGetMemoryInfo(handle, version=None):
    answers = _gpu(handle, "device")[0].answers
    key = "v1" if not version else "v2" if version == nvmlMemory_v2 else "other"
    return _give(answers["memory", key])


def _with_argument(handle, call, argument):
    """The answer of `call` for `argument`; INVALID_ARGUMENT for one it does not take."""
    answer = _gpu(handle, "device")[0].answers.get((call, argument))
    return _give(answer) if answer is not None else _fail(NVML_ERROR_INVALID_ARGUMENT)


@_binding
def nvmlDeviceGetClockInfo(handle, type):  # `type`: the real binding's parameter name
    return _with_argument(handle, "clock", type)


@_binding
def nvmlDeviceGetMaxClockInfo(handle, type):
    return _with_argument(handle, "max_clock", type)


@_binding
def nvmlDeviceGetPcieThroughput(device, counter):
    value = _with_argument(device, "pcie", counter)
    time.sleep(0.02)  # the driver samples the link for 20 ms
    return value


@_binding
def nvmlDeviceGetTotalEccErrors(handle, errorType, counterType):
    answers = _gpu(handle, "device")[0].answers
    if errorType not in (0, 1) or counterType not in (0, 1):
        _fail(NVML_ERROR_INVALID_ARGUMENT)
    return _give(answers["ecc", errorType == NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                         counterType == NVML_AGGREGATE_ECC])


@_binding
def nvmlDeviceGetFieldValues(handle, fieldIds):
    gpu, mode = _gpu(handle, "fields")
    fields, unsupported = gpu.fields, mode == "not_supported"
    now = int(time.time() * 1_000_000)
    heated = _UNSET  # whether the heat file exists, looked at for the first power draw asked
    values = []
    for field in fieldIds:
        if type(field) is int:
            field_id, scope_id = field, 0
        else:
            try:
                field_id, scope_id = field
            except TypeError:
                field_id, scope_id = field, 0
        entry = fields.get(field_id)
        if entry is None or unsupported:  # a field it does not know is a double
            value_type = entry[0] if entry is not None else NVML_VALUE_TYPE_DOUBLE
            returned, value = NVML_ERROR_NOT_SUPPORTED, _NO_VALUE
        else:
            value_type, answer, with_heat = entry
            if with_heat is not None:
                if heated is _UNSET:
                    heated = _heat() is not None
                if heated:
                    answer = with_heat
            if type(answer) is _Raise:
                answer.throw()
            returned, value = answer
        values.append(SimpleNamespace(fieldId=field_id, scopeId=scope_id, timestamp=now,
                                      latencyUsec=0, valueType=value_type, nvmlReturn=returned,
                                      value=SimpleNamespace(**value)))
    return values
