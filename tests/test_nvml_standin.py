"""The pynvml stand-in (tests/stand_ins/nvml/pynvml.py) against the real binding's names and
values, the capture documents it answers from, and the failures it reproduces."""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
STAND_IN_DIR = TESTS / "stand_ins" / "nvml"
STAND_IN = STAND_IN_DIR / "pynvml.py"
FIXTURES = TESTS / "fixtures" / "nvidia-smi"
MIB = 1048576


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the real module finds itself there while it loads
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real():
    """NVIDIA's module from the virtual environment (importing it needs no GPU)."""
    if "_real_pynvml" in sys.modules:
        return sys.modules["_real_pynvml"]
    folders = [p for p in sys.path if Path(p or ".").resolve() != STAND_IN_DIR]
    spec = importlib.machinery.PathFinder.find_spec("pynvml", folders)
    assert spec and spec.origin and Path(spec.origin).resolve() != STAND_IN.resolve()
    return _load("_real_pynvml", Path(spec.origin))


@pytest.fixture
def nvml(monkeypatch):
    """A fresh stand-in (not initialised) with a clean environment."""
    for name in list(os.environ):
        if name.startswith(("NVML_STANDIN_", "NVSMI_STANDIN_")):
            monkeypatch.delenv(name)
    return _load("_standin_pynvml", STAND_IN)


def _use(monkeypatch, nvml, fixture: str):
    monkeypatch.setenv("NVML_STANDIN_FIXTURE", str(FIXTURES / f"{fixture}.xml"))
    nvml.nvmlInit()
    return nvml.nvmlDeviceGetHandleByIndex(0)


def _code(nvml, call, *args, **kwargs) -> int:
    with pytest.raises(nvml.NVMLError) as caught:
        call(*args, **kwargs)
    return caught.value.value


def _field(nvml, handle, field_id):
    (value,) = nvml.nvmlDeviceGetFieldValues(handle, [field_id])
    assert value.fieldId == field_id
    return value


# --- the real binding's names and values ---------------------------------------------------------
def test_constants_have_the_real_values(nvml, real):
    shared = [name for name, value in vars(nvml).items()
              if not name.startswith("_") and isinstance(value, int) and hasattr(real, name)]
    for name in shared:
        assert getattr(nvml, name) == getattr(real, name), name
    needed = {"NVML_TEMPERATURE_GPU", "NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR", "NVML_CLOCK_SM",
              "NVML_PCIE_UTIL_RX_BYTES", "NVML_FI_DEV_MEMORY_TEMP", "NVML_FI_DEV_POWER_INSTANT",
              "NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN", "NVML_VALUE_TYPE_DOUBLE",
              "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", "NVML_AGGREGATE_ECC", "NVML_PSTATE_UNKNOWN",
              "NVML_SUCCESS", "nvmlMemory_v2", "nvmlClocksEventReasonAll",
              "nvmlClocksThrottleReasonAll", "nvmlClocksEventReasonDisplayClockSetting"}
    assert needed <= set(shared)
    errors = {name for name in vars(real) if name.startswith("NVML_ERROR_")}
    assert errors <= set(shared)


def test_errors_read_as_the_real_ones(nvml, real):
    table = dict(real.NVMLError._errcode_to_string)  # before str() adds to it
    for code, text in table.items():
        assert str(nvml.NVMLError(code)) == text
    assert str(nvml.NVMLError(nvml.NVML_ERROR_GPU_NOT_FOUND)) == "GPU not found"
    for name in (n for n in vars(real) if n.startswith("NVMLError_")):
        cls = getattr(nvml, name)
        code = getattr(real, name)().value
        assert isinstance(nvml.NVMLError(code), cls) and cls().value == code, name
    error = nvml.NVMLError(nvml.NVML_ERROR_GPU_IS_LOST)
    assert type(error).__name__ == "NVMLError_GpuIsLost" and str(error) == "GPU is lost"


def test_functions_have_the_real_signatures(nvml, real):
    functions = [(name, fn) for name, fn in vars(nvml).items()
                 if inspect.isfunction(fn) and fn.__module__ == nvml.__name__
                 and not name.startswith("_")]
    assert len(functions) > 40
    for name, fn in functions:
        assert hasattr(real, name), name
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ours, theirs = ([p.name for p in inspect.signature(f).parameters.values()
                         if p.kind in positional] for f in (fn, getattr(real, name)))
        assert ours == theirs, name


def test_the_stand_in_uses_the_standard_library_only():
    tree = ast.parse(STAND_IN.read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree)
             if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    assert roots - {"__future__"} <= sys.stdlib_module_names


def test_pythonpath_puts_it_in_place_of_the_real_module(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(STAND_IN_DIR)}
    probe = "import pynvml; pynvml.nvmlInit(); print(pynvml.__file__, pynvml.nvmlDeviceGetCount())"
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, check=True,
                         capture_output=True, text=True, timeout=30).stdout.split()
    assert Path(out[0]).resolve() == STAND_IN.resolve() and out[1] == "1"


# --- values from the documents -------------------------------------------------------------------
def test_rtx_3080_v13(monkeypatch, nvml):
    h = _use(monkeypatch, nvml, "rtx-3080-v13")
    assert nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) == 27
    assert nvml.nvmlDeviceGetPowerUsage(h) == 139620  # no <power_draw>: the average
    assert _field(nvml, h, nvml.NVML_FI_DEV_POWER_INSTANT).value.uiVal == 142330
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(h) == 320000
    assert nvml.nvmlDeviceGetPowerManagementLimitConstraints(h) == [100000, 336000]
    memory = nvml.nvmlDeviceGetMemoryInfo(h)
    assert (memory.total, memory.used) == (10240 * MIB, (9184 + 397) * MIB)
    assert memory.free == memory.total - memory.used
    v2 = nvml.nvmlDeviceGetMemoryInfo(h, version=nvml.nvmlMemory_v2)
    assert (v2.used, v2.reserved, v2.free, v2.version) == (9184 * MIB, 397 * MIB, 660 * MIB,
                                                           nvml.nvmlMemory_v2)
    assert nvml.nvmlDeviceGetPerformanceState(h) == 2
    assert nvml.nvmlDeviceGetUtilizationRates(h).gpu == 65
    assert nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM) == 9251
    assert nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM) == 2100
    assert nvml.nvmlDeviceGetTemperatureThreshold(
        h, nvml.NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR) == 83
    assert nvml.nvmlDeviceGetCurrPcieLinkWidth(h) == 16
    assert nvml.nvmlDeviceGetSupportedClocksEventReasons(h) == nvml.nvmlClocksEventReasonAll
    assert nvml.nvmlDeviceGetCurrentClocksEventReasons(h) == 0
    counter = _field(nvml, h, nvml.NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP)
    assert (counter.nvmlReturn, counter.valueType) == (0, nvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG)
    for unsupported in (nvml.NVML_FI_DEV_MEMORY_TEMP, nvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL, 12345):
        assert _field(nvml, h, unsupported).nvmlReturn == nvml.NVML_ERROR_NOT_SUPPORTED
    assert _code(nvml, nvml.nvmlDeviceGetEccMode, h) == nvml.NVML_ERROR_NOT_SUPPORTED
    assert nvml.nvmlDeviceGetPciInfo(h).busId == "00000000:0C:00.0"
    assert nvml.nvmlSystemGetDriverVersion() == "595.58.03"


def test_gtx_1070_ti_v10(monkeypatch, nvml):
    h = _use(monkeypatch, nvml, "gtx-1070-ti-v10")
    assert nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) == 39
    assert _code(nvml, nvml.nvmlDeviceGetPowerUsage, h) == nvml.NVML_ERROR_NOT_SUPPORTED
    assert nvml.nvmlDeviceGetMemoryInfo(h).used == 42 * MIB
    assert _code(nvml, nvml.nvmlDeviceGetMemoryInfo, h, nvml.nvmlMemory_v2) \
        == nvml.NVML_ERROR_FUNCTION_NOT_FOUND
    assert nvml.nvmlDeviceGetPerformanceState(h) == 8
    assert nvml.nvmlDeviceGetFanSpeed(h) == 100
    assert nvml.nvmlDeviceGetPciInfo(h).busId == "00000000:01:00.0"  # from <gpu id>
    assert nvml.nvmlDeviceGetCurrPcieLinkGeneration(h) == 1
    assert _code(nvml, nvml.nvmlDeviceGetMaxPcieLinkGeneration, h) == 3


def test_a100_sxm4_v12(monkeypatch, nvml):
    h = _use(monkeypatch, nvml, "a100-sxm4-v12")
    assert nvml.nvmlDeviceGetPowerUsage(h) == 67030
    assert nvml.nvmlDeviceGetMemoryInfo(h).total == 81920 * MIB  # not a MIG device's
    assert _field(nvml, h, nvml.NVML_FI_DEV_MEMORY_TEMP).value.uiVal == 44
    ecc = _field(nvml, h, nvml.NVML_FI_DEV_ECC_DBE_AGG_TOTAL)
    assert (ecc.nvmlReturn, ecc.value.ullVal) == (nvml.NVML_SUCCESS, 0)
    assert nvml.nvmlDeviceGetTotalEccErrors(h, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
                                            nvml.NVML_VOLATILE_ECC) == 0
    assert nvml.nvmlDeviceGetEccMode(h) == [1, 1]
    assert nvml.nvmlDeviceGetTemperatureThreshold(
        h, nvml.NVML_TEMPERATURE_THRESHOLD_MEM_MAX) == 95
    assert _code(nvml, nvml.nvmlDeviceGetUtilizationRates, h) == nvml.NVML_ERROR_NOT_SUPPORTED
    assert nvml.nvmlDeviceGetPerformanceState(h) == 0


def test_tesla_p4_v11(monkeypatch, nvml):
    h = _use(monkeypatch, nvml, "tesla-p4-v11")
    assert nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) == 0
    assert nvml.nvmlDeviceGetMemoryInfo(h).used == (807 + 110) * MIB
    for call in (nvml.nvmlDeviceGetFanSpeed, nvml.nvmlDeviceGetPowerUsage,
                 nvml.nvmlDeviceGetCurrentClocksEventReasons):
        assert _code(nvml, call, h) == nvml.NVML_ERROR_NOT_SUPPORTED, call.__name__
    assert _field(nvml, h, nvml.NVML_FI_DEV_ECC_SBE_VOL_TOTAL).nvmlReturn == 3  # single_bit N/A
    assert nvml.nvmlDeviceGetPerformanceState(h) == 8


def test_older_layouts_and_two_gpus(monkeypatch, nvml):
    h = _use(monkeypatch, nvml, "gtx-1660-ti-v10")
    assert nvml.nvmlDeviceGetCurrentClocksThrottleReasons(h) == nvml.nvmlClocksThrottleReasonGpuIdle
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(h) == 130000
    h = _use(monkeypatch, nvml, "tesla-t4-v11")
    fields = nvml.nvmlDeviceGetFieldValues(h, [nvml.NVML_FI_DEV_RETIRED_DBE,
                                               nvml.NVML_FI_DEV_RETIRED_PENDING])
    assert [(f.nvmlReturn, f.value.uiVal) for f in fields] == [(0, 0), (0, 0)]
    h = _use(monkeypatch, nvml, "a10g-v11")
    assert _field(nvml, h, nvml.NVML_FI_DEV_REMAPPED_FAILURE).nvmlReturn == 0
    _use(monkeypatch, nvml, "dual-2080-v13")
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    assert len({nvml.nvmlDeviceGetUUID(h) for h in handles}) == 1
    assert [nvml.nvmlDeviceGetPciInfo(h).bus for h in handles] == [1, 2]
    assert [nvml.nvmlDeviceGetIndex(h) for h in handles] == [0, 1]
    assert _code(nvml, nvml.nvmlDeviceGetHandleByIndex, 2) == nvml.NVML_ERROR_INVALID_ARGUMENT


# --- modes ---------------------------------------------------------------------------------------
def test_calls_before_init_and_after_shutdown_are_uninitialized(nvml):
    assert _code(nvml, nvml.nvmlDeviceGetCount) == nvml.NVML_ERROR_UNINITIALIZED
    assert _code(nvml, nvml.nvmlSystemGetDriverVersion) == nvml.NVML_ERROR_UNINITIALIZED
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlShutdown()
    with pytest.raises(nvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)
    assert _code(nvml, nvml.nvmlShutdown) == nvml.NVML_ERROR_UNINITIALIZED


@pytest.mark.parametrize(("mode", "code", "text"), [
    ("no_library", 12, "NVML Shared Library Not Found"),
    ("driver_not_loaded", 9, "Driver Not Loaded"),
    ("version_mismatch", 18, "RM has detected an NVML/RM version mismatch.")])
def test_modes_that_fail_init(monkeypatch, nvml, mode, code, text):
    monkeypatch.setenv("NVML_STANDIN_MODE", mode)
    with pytest.raises(nvml.NVMLError) as caught:
        nvml.nvmlInit()
    assert (caught.value.value, str(caught.value)) == (code, text)
    assert _code(nvml, nvml.nvmlDeviceGetCount) == nvml.NVML_ERROR_UNINITIALIZED


def test_modes_of_the_device_queries(monkeypatch, nvml, tmp_path):
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    temperature = (nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU)
    mode_file = tmp_path / "mode"
    monkeypatch.setenv("NVML_STANDIN_MODE_FILE", str(mode_file))
    mode_file.write_text("no_devices\n")
    assert nvml.nvmlDeviceGetCount() == 0
    mode_file.write_text("gpu_not_found")
    assert _code(nvml, nvml.nvmlDeviceGetHandleByIndex, 0) == nvml.NVML_ERROR_GPU_NOT_FOUND
    mode_file.write_text("uninitialized")
    assert _code(nvml, *temperature) == nvml.NVML_ERROR_UNINITIALIZED
    mode_file.write_text("unknown_error")
    assert _code(nvml, *temperature) == nvml.NVML_ERROR_UNKNOWN
    assert nvml.nvmlDeviceGetUUID(h).startswith("GPU-")
    mode_file.write_text("not_supported")
    assert _code(nvml, *temperature) == nvml.NVML_ERROR_NOT_SUPPORTED
    assert nvml.nvmlDeviceGetName(h) == "NVIDIA GeForce RTX 3080"
    assert nvml.nvmlSystemGetDriverVersion() == "595.58.03"
    fields = nvml.nvmlDeviceGetFieldValues(h, [nvml.NVML_FI_DEV_POWER_INSTANT])
    assert fields[0].nvmlReturn == nvml.NVML_ERROR_NOT_SUPPORTED
    mode_file.unlink()
    assert nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) == 27


def test_gpu_lost(monkeypatch, nvml):
    monkeypatch.setenv("NVML_STANDIN_FIXTURE", str(FIXTURES / "dual-2080-v13.xml"))
    monkeypatch.setenv("NVML_STANDIN_MODE", "gpu_lost")
    monkeypatch.setenv("NVML_STANDIN_LOST_GPUS", "1")
    nvml.nvmlInit()
    assert nvml.nvmlDeviceGetCount() == 2
    good, lost = nvml.nvmlDeviceGetHandleByIndex(0), nvml.nvmlDeviceGetHandleByIndex(1)
    assert nvml.nvmlDeviceGetFanSpeed(good) >= 0
    with pytest.raises(nvml.NVMLError_GpuIsLost) as caught:
        nvml.nvmlDeviceGetFieldValues(lost, [nvml.NVML_FI_DEV_POWER_INSTANT])
    assert str(caught.value) == "GPU is lost"
    assert _code(nvml, nvml.nvmlDeviceGetUUID, lost) == nvml.NVML_ERROR_GPU_IS_LOST
    monkeypatch.delenv("NVML_STANDIN_LOST_GPUS")
    assert _code(nvml, nvml.nvmlDeviceGetFanSpeed, good) == nvml.NVML_ERROR_GPU_IS_LOST


def test_hang_sleeps_then_answers(monkeypatch, nvml):
    monkeypatch.setenv("NVML_STANDIN_MODE", "hang")
    monkeypatch.setenv("NVML_STANDIN_HANG_SEC", "0.2")
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    start = time.monotonic()
    assert nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) == 27
    assert 0.2 <= time.monotonic() - start < 1.5
    start = time.monotonic()
    nvml.nvmlDeviceGetPcieThroughput(h, nvml.NVML_PCIE_UTIL_TX_BYTES)  # samples 20 ms
    assert time.monotonic() - start >= 0.02


def test_heat_file_raises_temperature_and_power(monkeypatch, nvml, tmp_path):
    heat = tmp_path / "heat"
    monkeypatch.setenv("NVSMI_STANDIN_HEAT_FILE", str(heat))
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) == 27
    heat.write_text(f"{int(time.time())} 123\n")
    assert nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) in (52, 57)
    assert nvml.nvmlDeviceGetPowerUsage(h) == 139620 + 150000
    average, instant = nvml.nvmlDeviceGetFieldValues(
        h, [nvml.NVML_FI_DEV_POWER_AVERAGE, nvml.NVML_FI_DEV_POWER_INSTANT])
    assert (average.value.uiVal, instant.value.uiVal) == (289620, 292330)
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(h) == 320000  # a limit, not a draw
    heat.write_text(f"{int(time.time()) - 60} 123\n")
    assert nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) == 27 + 45


def test_log_counts_the_calls(monkeypatch, nvml, tmp_path):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("NVML_STANDIN_LOG", str(log))
    monkeypatch.setenv("NVML_STANDIN_FIXTURE", str(FIXTURES / "dual-2080-v13.xml"))
    nvml.nvmlInit()
    for index in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(index)
        nvml.nvmlDeviceGetFieldValues(h, [nvml.NVML_FI_DEV_POWER_INSTANT,
                                          nvml.NVML_FI_DEV_MEMORY_TEMP])
    lines = [line.split() for line in log.read_text().splitlines()]
    assert all(len(words) == 3 and words[1] == str(os.getpid()) for words in lines)
    assert [words[2] for words in lines].count("nvmlDeviceGetFieldValues") == 2
    assert lines[0][2] == "nvmlInit" and float(lines[0][0]) <= time.time()


def test_files_are_not_read_at_every_call(monkeypatch, nvml, tmp_path):
    """Once the mode file has been quiet for _HOT_SEC (none here), it is read again at most
    every 50 ms and at every nvmlInit, and the document's mtime is checked as seldom: a call
    opens and stats nothing, as the real library's calls cost microseconds."""
    monkeypatch.setattr(nvml, "_HOT_SEC", 0.0)
    mode_file = tmp_path / "mode"
    mode_file.write_text("ok\n")
    monkeypatch.setenv("NVML_STANDIN_MODE_FILE", str(mode_file))
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    counts = {"_read_words": 0, "_load": 0}

    def counting(name, real):
        def counted(*args):
            counts[name] += 1
            return real(*args)
        return counted

    for name in counts:
        monkeypatch.setattr(nvml, name, counting(name, getattr(nvml, name)))
    start = time.monotonic()
    for _ in range(200):
        assert nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) == 27
        nvml.nvmlDeviceGetFieldValues(h, [nvml.NVML_FI_DEV_POWER_INSTANT])
    polls = (time.monotonic() - start) / 0.05 + 1
    assert counts["_read_words"] <= polls and counts["_load"] <= polls, counts
    mode_file.write_text("unknown_error\n")
    time.sleep(0.06)
    assert _code(nvml, nvml.nvmlDeviceGetTemperature, h, 0) == nvml.NVML_ERROR_UNKNOWN
    mode_file.write_text("ok\n")
    nvml.nvmlInit()  # reads the mode file whatever its schedule
    assert nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) == 27
