"""The NVML worker: the one process that calls the driver when GPU_SOURCE=nvml.

Started by collector/nvml.py as `python -m gpu_telemetry.cli.nvml_worker`; it reads one
request per line on stdin ("read") and answers each with one JSON line on stdout: the GPUs'
values in gpu_telemetry.schema.GPU_COLUMNS order, or the failure. A driver call that hangs
(a wedged GPU) hangs only this process, which the collector kills and starts again.

An NVML session (nvmlInit, the handles, the static values of collector/nvml_fields.py) lasts
until something goes wrong: after any failure, of the library or of one GPU, the session is
shut down and opened afresh at the next request, so a GPU back on the bus, a reloaded driver
or a library installed since is found without restarting the collector.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import threading
import time
from dataclasses import dataclass

from gpu_telemetry.collector.nvml_fields import (
    BESIDE,
    BY_COLUMN,
    FIELD_IDS,
    VALUE_ABSENT,
    Call,
    Field,
    Reason,
    as_text,
    field_value,
)
from gpu_telemetry.schema import BY_NAME, GPU_COLUMNS

_ABSENT = object()
PCIE_EVERY_SEC = 1.0

# NVML return codes by what they mean for the reading. The kinds are those of nvidia-smi's
# failures (collector/source.py), so events and alerts read the same whichever the source.
_GPU_GONE = {"NVML_ERROR_GPU_IS_LOST": "gpu_lost", "NVML_ERROR_RESET_REQUIRED": "gpu_lost",
             "NVML_ERROR_GPU_NOT_FOUND": "no_devices"}
_LIBRARY = {"NVML_ERROR_LIB_RM_VERSION_MISMATCH": "driver_mismatch",
            "NVML_ERROR_DRIVER_NOT_LOADED": "driver_unreachable",
            "NVML_ERROR_UNINITIALIZED": "nvml_init",
            "NVML_ERROR_LIBRARY_NOT_FOUND": "not_found"}
_HINTS = {"not_found": " (libnvidia-ml.so.1 comes with the NVIDIA driver; is it installed?)"}


class Failed(Exception):
    """The whole reading failed: `kind`, NVML's `code` and its message."""

    def __init__(self, kind: str, message: str, code: int | None):
        super().__init__(message)
        self.kind, self.message, self.code = kind, message, code

    def reply(self) -> dict:
        """The worker's answer for it (collector/nvml.py's reading_from reads it)."""
        return {"error": {"kind": self.kind, "message": self.message, "code": self.code}}


@dataclass(frozen=True)
class _Step:
    """One way into a column, resolved on the binding once: a call (memoised per reading, or
    per session when static), a field value, or a clock-event reason bit."""

    kind: str  # "call", "field" or "reason"
    key: object
    static: bool = False
    function: object = None
    args: tuple = ()
    kwargs: dict | None = None
    attr: str = ""
    item: int | None = None


def _compile(nv) -> list[tuple]:
    """(column, steps, convert, integer limit, static) per GPU column, in GPU_COLUMNS order;
    steps is "index" / "driver" / ("beside", i) for the columns read elsewhere; static: every
    way is a static call, so the value is kept for the session."""
    plan = []
    for column in GPU_COLUMNS:
        sql_type = BY_NAME[column].sql_type
        limit = _LIMITS.get(sql_type, 0 if sql_type == "real" else None)
        if column == "gpu_index":
            plan.append((column, "index", None, limit, False))
        elif column == "driver_version":
            plan.append((column, "driver", None, limit, False))
        elif column in BESIDE:
            plan.append((column, ("beside", BESIDE.index(column)), None, limit, False))
        else:
            way = BY_COLUMN[column]
            steps = [_step(nv, source) for source in way.ways]
            plan.append((column, steps, way.convert, limit,
                         all(step.kind == "call" and step.static for step in steps)))
    return plan


def _step(nv, source) -> _Step:
    if isinstance(source, Field):
        return _Step("field", source.field_id)
    if isinstance(source, Reason):
        return _Step("reason", getattr(nv, source.bit, None))
    return _Step("call", (source.function, source.args, source.kwargs), source.static,
                 getattr(nv, source.function, None), tuple(getattr(nv, a) for a in source.args),
                 {k: getattr(nv, v) for k, v in source.kwargs}, source.attr, source.item)


_LIMITS = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
_REASON_CALLS = {True: (Call("nvmlDeviceGetSupportedClocksEventReasons", static=True),
                        Call("nvmlDeviceGetSupportedClocksThrottleReasons", static=True)),
                 False: (Call("nvmlDeviceGetCurrentClocksEventReasons"),
                         Call("nvmlDeviceGetCurrentClocksThrottleReasons"))}


class Device:
    """One GPU of a session: its handle, the values that cannot change, this reading's calls."""

    def __init__(self, nv, index: int, handle, plan: list[tuple], absent: frozenset):
        self.nv, self.index, self.handle = nv, index, handle
        self.plan, self.absent = plan, absent
        self.static: dict = {}
        self.now: dict = {}
        self.fields: dict[str, object] = {}
        self.kept: dict[int, object] = {}  # position in the row -> a static column's value
        self._masks: tuple | None = None  # this reading's (supported, current) reasons
        self.label = f"GPU {index}"
        self._field_ids = [(name, getattr(nv, name)) for name in FIELD_IDS if hasattr(nv, name)]
        self._reason_steps = {static: [_step(nv, call) for call in calls]
                              for static, calls in _REASON_CALLS.items()}
        self._pcie_steps = [_step(nv, BY_COLUMN[column].ways[0]) for column in BESIDE]

    def _ask(self, step: _Step):
        if step.function is None:
            return _ABSENT  # an older binding without this function
        try:
            return step.function(self.handle, *step.args, **step.kwargs)
        except self.nv.NVMLError as exc:
            if exc.value in self.absent:
                return _ABSENT
            raise

    def _get(self, step: _Step):
        cache = self.static if step.static else self.now
        result = cache.get(step.key, _ABSENT)
        if result is _ABSENT and step.key not in cache:
            result = cache[step.key] = self._ask(step)
        if result is _ABSENT:
            return None
        if step.attr:
            return getattr(result, step.attr)
        return result[step.item] if step.item is not None else result

    def fetch_fields(self) -> None:
        """Every field value of the mapping in one nvmlDeviceGetFieldValues call."""
        nv = self.nv
        self.fields = {}
        try:
            values = nv.nvmlDeviceGetFieldValues(self.handle, [fid for _, fid in self._field_ids])
        except nv.NVMLError as exc:
            if exc.value in self.absent:
                return
            raise
        for (name, _), value in zip(self._field_ids, values, strict=False):
            self.fields[name] = field_value(nv, value)

    def _reasons(self, static: bool):
        """The event-reason call, else its older name (drivers before 535 have only that)."""
        for step in self._reason_steps[static]:
            value = self._get(step)
            if value is not None:
                return value
        return None

    def _value(self, steps: list[_Step], convert):
        for step in steps:
            if step.kind == "call":
                value = self._get(step)
            elif step.kind == "field":
                value = self.fields.get(step.key)
            else:
                if self._masks is None:
                    self._masks = (self._reasons(True), self._reasons(False))
                supported, current = self._masks
                value = (None if supported is None or current is None or step.key is None
                         or not supported & step.key else bool(current & step.key))
            if value is not None:
                return convert(value) if convert else value
        return None

    def read(self, pcie: tuple | None) -> list:
        """This GPU's values in GPU_COLUMNS order; raises NVMLError for a GPU in trouble."""
        self.now = {}
        self._masks = None
        self.fetch_fields()
        row = []
        kept = self.kept
        for position, (_column, steps, convert, limit, static) in enumerate(self.plan):
            if static and position in kept:
                row.append(kept[position])
                continue
            if steps == "index":
                value = self.index
            elif steps == "driver":
                value = None  # filled by the session
            elif isinstance(steps, tuple):
                value = None if pcie is None else pcie[steps[1]]
            else:
                value = self._value(steps, convert)
            if value is not None:
                if limit:
                    value = _integer(value, limit)
                elif limit == 0:
                    value = float(value)
            if static:
                kept[position] = value
            row.append(value)
        self.label = f"GPU {self.index} ({row[_BUS_ID]})"
        return row

    def pcie_throughput(self) -> tuple:
        """(tx, rx) KB/s, each None when not supported; made by PcieRates' thread, so it keeps
        to its own calls and leaves the reading's memo alone."""
        results = (self._ask(step) for step in self._pcie_steps)
        return tuple(None if result is _ABSENT else result for result in results)


def _integer(value, limit: int):
    """An integer column's value, None out of its SQL type's range (0xFFFFFFFF and the like,
    which some drivers answer for "no value")."""
    if isinstance(value, float):
        value = round(value)
    return value if -limit <= value < limit else None


_BUS_ID = GPU_COLUMNS.index("pci_bus_id")
_DRIVER = GPU_COLUMNS.index("driver_version")


class PcieRates(threading.Thread):
    """nvmlDeviceGetPcieThroughput counts bytes for 20 ms inside the driver, per call: two calls
    per GPU would cost 40 ms a GPU on the sampling path, so they are made here, after a
    reading asks for them, and the next reading takes the result. At most once every
    PCIE_EVERY_SEC: sampling ten times a second, each GPU's throughput is measured once a
    second (each round costs a thread wake-up per call), not at every sample."""

    def __init__(self, devices: list[Device]):
        super().__init__(name="pcie-rates", daemon=True)
        self.devices = devices
        self.latest: dict[int, tuple] = {}
        self.wanted = threading.Event()
        self.stopped = False

    def run(self) -> None:
        last = -PCIE_EVERY_SEC
        while True:
            self.wanted.wait()
            rest = last + PCIE_EVERY_SEC - time.monotonic()
            if rest > 0 and not self.stopped:
                time.sleep(rest)
            self.wanted.clear()
            if self.stopped:
                return
            last = time.monotonic()
            for device in self.devices:
                try:
                    self.latest[device.index] = device.pcie_throughput()
                except Exception:  # noqa: BLE001 - the reading itself reports a GPU in trouble
                    self.latest[device.index] = (None, None)

    def stop(self) -> None:
        self.stopped = True
        self.wanted.set()


class Session:
    """nvmlInit .. nvmlShutdown, opened at the first request and after every failure."""

    def __init__(self, nv):
        self.nv = nv
        self.devices: list[Device] | None = None
        self.driver_version: str | None = None
        self.rates: PcieRates | None = None

    def open(self) -> None:
        nv = self.nv
        nv.nvmlInit()
        try:
            self.driver_version = as_text(nv.nvmlSystemGetDriverVersion())
        except nv.NVMLError as exc:
            if _code_name(nv, exc.value) not in VALUE_ABSENT:
                raise
            self.driver_version = None
        count = nv.nvmlDeviceGetCount()
        if count == 0:
            raise Failed("no_devices", "NVML found no GPU (nvmlDeviceGetCount() is 0)",
                         getattr(nv, "NVML_ERROR_NOT_FOUND", None))
        plan = _compile(nv)
        absent = frozenset(getattr(nv, name) for name in VALUE_ABSENT if hasattr(nv, name))
        self.devices = [Device(nv, index, nv.nvmlDeviceGetHandleByIndex(index), plan, absent)
                        for index in range(count)]

    def close(self) -> None:
        if self.rates is not None:
            self.rates.stop()
            self.rates = None
        if self.devices is not None:
            self.devices = None
            with contextlib.suppress(Exception):  # reopened at the next request anyway
                self.nv.nvmlShutdown()

    def read(self) -> dict:
        try:
            return self._read()
        except Failed as failure:
            self.close()
            return failure.reply()
        except self.nv.NVMLError as exc:
            self.close()
            name = _code_name(self.nv, exc.value)
            kind = _LIBRARY.get(name) or _GPU_GONE.get(name) or "nvml_error"
            return Failed(kind, f"{exc}{_HINTS.get(kind, '')}", exc.value).reply()

    def _read(self) -> dict:
        if self.devices is None:
            self.open()
        first = self.rates is None
        rows, problems, gone = [], [], []
        for device in self.devices:
            try:
                pcie = device.pcie_throughput() if first else self.rates.latest.get(device.index)
                row = device.read(pcie)
            except self.nv.NVMLError as exc:
                name = _code_name(self.nv, exc.value)
                if name in _LIBRARY:
                    raise
                gone.append((_GPU_GONE.get(name, "nvml_error"), exc.value))
                problems.append(f"{device.label} unreadable: NVML: {exc}")
                continue
            row[_DRIVER] = self.driver_version
            rows.append(row)
        if not rows:
            kind, code = gone[0]
            raise Failed(kind, "; ".join(problems), code)
        if gone:
            self.close()  # handles of a GPU that fell off the bus are not to be trusted again
        else:
            if first:
                self.rates = PcieRates(self.devices)
                self.rates.start()
            self.rates.wanted.set()
        return {"gpus": rows, "problems": problems}


def _code_name(nv, code) -> str:
    for name in (*VALUE_ABSENT, *_GPU_GONE, *_LIBRARY):
        if getattr(nv, name, None) == code:
            return name
    return ""


def _binding():
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise Failed("not_installed", f"nvidia-ml-py is not installed ({exc}); run uv sync",
                     None) from None


def serve(requests, out) -> None:
    """Answer each "read" line of `requests` with one JSON line on `out`, until the input
    ends (the collector closed it, or died)."""
    session = None
    for line in requests:
        if line.strip() != "read":
            continue
        try:
            if session is None:
                session = Session(_binding())
            reply = session.read()
        except Failed as failure:  # no binding to open a session with
            reply = failure.reply()
        out.write(json.dumps(reply, separators=(",", ":")) + "\n")
        out.flush()
    if session is not None:
        session.close()
