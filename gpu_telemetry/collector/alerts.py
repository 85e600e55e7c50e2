"""Alerts: what the loop notices going wrong, once per episode (docs/alerts.md).

`Alerts.evaluate` runs on every sample with the reading, the source's failure, the outage and
the kernel log's new lines, and returns the alerts that start (`firing`) or end (`resolved`)
now. Each alert has a key (its name and the GPU's uuid, or none for the host); an open alert is
not fired again until it resolved, with hysteresis where a reading can hover at a threshold.
Open alerts and the GPUs seen are kept in a state file in LOG_DIR, so a restart in the
middle of an episode does not fire it again. Sending them (ALERT_COMMAND) is
collector/alert_send.py's; recording them is the loop's (one collector_events row each).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from gpu_telemetry.collector.kernel_log import KernelEvent
from gpu_telemetry.errors import SourceError, SpoolError
from gpu_telemetry.files import write_atomically
from gpu_telemetry.records import Event, GpuReading, format_ts

STATE_FILE = ".alerts.json"
HOT_HYSTERESIS_C = 3  # gpu_hot resolves this far below its threshold
QUIET_SEC = 600.0  # memory_errors and pcie_errors resolve after this long without a new one
KINDS = ("gpu_hot", "gpu_lost", "xid", "pcie_errors", "memory_errors", "database_outage",
         "source_failed")
# The collector_events kind of each alert's rows: alert_<name>; an Xid line is kind xid.
EVENT_KINDS = {name: "xid" if name == "xid" else f"alert_{name}" for name in KINDS}


@dataclass(frozen=True)
class Thresholds:
    temp_margin_c: float = 5
    temp_c: float = 85
    outage_sec: float = 300
    source_sec: float = 60


@dataclass
class Alert:
    """One firing or resolving, as ALERT_COMMAND receives it (to_json)."""

    alert: str
    state: str  # "firing" or "resolved"
    ts: datetime
    host: str
    summary: str
    gpu_uuid: str | None = None
    pci_bus_id: str | None = None
    gpu_name: str | None = None
    value: object = None
    threshold: object = None
    xid: int | None = None
    since: datetime | None = None
    data: dict = field(default_factory=dict)  # more of what is behind it (an Xid's pid, ...)

    def to_json(self) -> dict:
        return {"alert": self.alert, "state": self.state, "ts": format_ts(self.ts),
                "host": self.host, "gpu_uuid": self.gpu_uuid, "pci_bus_id": self.pci_bus_id,
                "gpu_name": self.gpu_name, "summary": self.summary, "value": self.value,
                "threshold": self.threshold, "xid": self.xid,
                "since": format_ts(self.since) if self.since else None, **self.data}

    def event(self) -> Event:
        """Its collector_events row: kind alert_<name> (an Xid line: kind xid)."""
        kind = EVENT_KINDS[self.alert]
        data = {k: v for k, v in self.to_json().items()
                if k not in ("ts", "host", "gpu_uuid", "summary") and v is not None}
        return Event(kind, self.summary, gpu_uuid=self.gpu_uuid, data=data)


@dataclass
class _Gpu:
    pci_bus_id: str | None
    gpu_name: str | None


class Alerts:
    def __init__(self, thresholds: Thresholds, host: str, state_dir: Path | None,
                 clock: Callable[[], float], warn: Callable[[str], None] = print):
        self.limits = thresholds
        self.host = host
        self.clock = clock
        self.warn = warn
        self.path = state_dir / STATE_FILE if state_dir is not None else None
        self.open: dict[str, dict] = {}  # key -> {"since": iso, ...}
        self.known: dict[str, _Gpu] = {}
        self.failing_since: float | None = None
        self.last_uncorrected: dict[str, int] = {}
        self.last_memory_error: dict[str, float] = {}
        self.last_aer: dict[str, float] = {}
        self._load()

    # -- the state file ------------------------------------------------------------------------

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            saved = json.loads(self.path.read_text())
            self.open = dict(saved["open"])
            self.known = {uuid: _Gpu(*gpu) for uuid, gpu in saved["known"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.warn(f"warning: alert state {self.path} unreadable ({exc}); starting afresh")
            self.open, self.known = {}, {}

    def _save(self) -> None:
        if self.path is None:
            return
        body = json.dumps({"open": self.open,
                           "known": {u: [g.pci_bus_id, g.gpu_name]
                                     for u, g in self.known.items()}}).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, body)
        except (OSError, SpoolError) as exc:
            self.warn(f"warning: cannot save the alert state to {self.path}: {exc}")

    # -- transitions ---------------------------------------------------------------------------

    def _fire(self, out: list[Alert], now: datetime, name: str, uuid: str | None,
              summary: str, **values) -> None:
        key = _key(name, uuid)
        if key in self.open:
            return
        self.open[key] = {"since": format_ts(now)}
        out.append(self._alert(name, "firing", now, uuid, summary, since=now, **values))

    def _resolve(self, out: list[Alert], now: datetime, name: str, uuid: str | None,
                 summary: str, **values) -> None:
        opened = self.open.pop(_key(name, uuid), None)
        if opened is None:
            return
        since = datetime.fromisoformat(opened["since"])
        out.append(self._alert(name, "resolved", now, uuid, summary, since=since, **values))

    def _alert(self, name, state, now, uuid, summary, **values) -> Alert:
        gpu = self.known.get(uuid) if uuid else None
        bus_id = values.pop("pci_bus_id", None)
        return Alert(name, state, now, self.host, summary, uuid,
                     gpu.pci_bus_id if gpu else bus_id, gpu.gpu_name if gpu else None,
                     **values)

    # -- the rules -----------------------------------------------------------------------------

    def evaluate(self, now: datetime, gpus: list[GpuReading], failure: SourceError | None,
                 outage_started: float | None, backlog: bool,
                 kernel: list[KernelEvent] = ()) -> list[Alert]:
        """The alerts that start or end with this sample. `outage_started`: when (on the
        injected clock) samples began going to the spool, None while they are stored;
        `backlog`: spooled samples not delivered yet."""
        before, known_before = dict(self.open), set(self.known)
        out: list[Alert] = []
        mono = self.clock()
        for gpu in gpus:
            self.known[gpu.gpu_uuid] = _Gpu(gpu.pci_bus_id, gpu.gpu_name)
        self._lost(out, now, gpus, failure)
        self._source(out, now, mono, failure)
        for gpu in gpus:
            self._hot(out, now, gpu)
            self._memory(out, now, mono, gpu)
        self._kernel(out, now, mono, kernel)
        self._outage(out, now, mono, outage_started, backlog)
        if self.open != before or set(self.known) != known_before:
            self._save()  # a GPU first seen counts too: missing after a restart, it is lost
        return out

    def _hot(self, out, now, gpu: GpuReading) -> None:
        if gpu.temp_c is None:
            return
        if gpu.temp_slowdown_c is not None:
            threshold = gpu.temp_slowdown_c - self.limits.temp_margin_c
            of = f"{self.limits.temp_margin_c:g} °C from its slowdown at {gpu.temp_slowdown_c} °C"
        else:
            threshold = self.limits.temp_c
            of = "ALERT_TEMP_C"
        slowing = bool(gpu.throttle_hw_thermal or gpu.throttle_sw_thermal)
        label = self._label(gpu.gpu_uuid)
        if gpu.temp_c >= threshold or slowing:
            why = "thermal slowdown active" if slowing and gpu.temp_c < threshold else \
                f"{gpu.temp_c} °C, {of}"
            self._fire(out, now, "gpu_hot", gpu.gpu_uuid, f"{self.host}: {label} hot: {why}",
                       value=gpu.temp_c, threshold=threshold)
        elif gpu.temp_c < threshold - HOT_HYSTERESIS_C:
            self._resolve(out, now, "gpu_hot", gpu.gpu_uuid,
                          f"{self.host}: {label} cooled to {gpu.temp_c} °C",
                          value=gpu.temp_c, threshold=threshold)

    def _lost(self, out, now, gpus: list[GpuReading], failure: SourceError | None) -> None:
        present = {gpu.gpu_uuid for gpu in gpus}
        if failure is not None and failure.kind == "gpu_lost":
            named = [uuid for uuid, gpu in self.known.items()
                     if gpu.pci_bus_id and _bus_in(gpu.pci_bus_id, failure.message)]
            for uuid in named or list(self.known) or [None]:
                label = self._label(uuid)
                self._fire(out, now, "gpu_lost", uuid,
                           f"{self.host}: {label} lost: {failure.message}"[:300])
            return
        if failure is not None:
            return  # a failed reading says nothing about any one GPU
        for uuid in self.known:
            if uuid in present:
                self._resolve(out, now, "gpu_lost", uuid,
                              f"{self.host}: {self._label(uuid)} is back")
            else:
                self._fire(out, now, "gpu_lost", uuid,
                           f"{self.host}: {self._label(uuid)} is no longer listed")
        self._resolve(out, now, "gpu_lost", None, f"{self.host}: the GPUs answer again")

    def _source(self, out, now, mono: float, failure: SourceError | None) -> None:
        if failure is None or failure.kind == "gpu_lost":
            self.failing_since = None
            if failure is None:
                self._resolve(out, now, "source_failed", None,
                              f"{self.host}: the GPU source answers again")
            return
        if self.failing_since is None:
            self.failing_since = mono
        failing = mono - self.failing_since
        if failing >= self.limits.source_sec:
            self._fire(out, now, "source_failed", None,
                       f"{self.host}: {failure.describe()}"[:300],
                       value=round(failing, 1), threshold=self.limits.source_sec,
                       data={"failure": failure.kind})

    def _memory(self, out, now, mono: float, gpu: GpuReading) -> None:
        uuid = gpu.gpu_uuid
        count = gpu.ecc_volatile_uncorrected
        grew = (count is not None and uuid in self.last_uncorrected
                and count > self.last_uncorrected[uuid])
        if count is not None:
            self.last_uncorrected[uuid] = count
        reasons = [why for why, on in (
            (f"uncorrectable ECC errors {count}", grew),
            ("a page retirement is pending", gpu.retired_pages_pending),
            ("a row remap is pending", gpu.remapped_rows_pending),
            ("a row remap failed", gpu.remapped_rows_failure)) if on]
        if reasons:
            self.last_memory_error[uuid] = mono
            self._fire(out, now, "memory_errors", uuid,
                       f"{self.host}: {self._label(uuid)} memory: {', '.join(reasons)}",
                       value=count)
        elif mono - self.last_memory_error.get(uuid, mono - QUIET_SEC) >= QUIET_SEC:
            self._resolve(out, now, "memory_errors", uuid,
                          f"{self.host}: {self._label(uuid)} memory errors quiet", value=count)

    def _kernel(self, out, now, mono: float, kernel: list[KernelEvent]) -> None:
        by_bus = {gpu.pci_bus_id: uuid for uuid, gpu in self.known.items() if gpu.pci_bus_id}
        for line in kernel:
            uuid = by_bus.get(line.pci_bus_id)
            if line.kind == "xid":
                who = f", {line.process} (pid {line.pid})" if line.process else ""
                out.append(self._alert(
                    "xid", "firing", line.ts or now, uuid,
                    f"{self.host}: Xid {line.xid} on {line.pci_bus_id}: {line.meaning()}{who}",
                    xid=line.xid, pci_bus_id=line.pci_bus_id,
                    data={"pid": line.pid, "process": line.process, "text": line.text[:300],
                          "meaning": line.meaning()}))
            elif uuid is not None:
                self.last_aer[uuid] = mono
                self._fire(out, now, "pcie_errors", uuid,
                           f"{self.host}: {self._label(uuid)} PCIe errors: {line.text[:200]}")
        for uuid, seen in list(self.last_aer.items()):
            if mono - seen >= QUIET_SEC:
                del self.last_aer[uuid]
                self._resolve(out, now, "pcie_errors", uuid,
                              f"{self.host}: {self._label(uuid)} PCIe errors quiet")

    def _outage(self, out, now, mono: float, started: float | None, backlog: bool) -> None:
        if started is not None:
            spooling = mono - started
            if spooling >= self.limits.outage_sec:
                self._fire(out, now, "database_outage", None,
                           f"{self.host}: samples spooled for {spooling:.0f} s: the database "
                           "does not take them", value=round(spooling),
                           threshold=self.limits.outage_sec)
        elif not backlog:
            self._resolve(out, now, "database_outage", None,
                          f"{self.host}: the database has every sample again")

    def _label(self, uuid: str | None) -> str:
        gpu = self.known.get(uuid) if uuid else None
        if gpu is None:
            return "GPU" if uuid is None else f"GPU {uuid}"
        return f"{gpu.gpu_name or 'GPU'} {gpu.pci_bus_id or uuid}"


def _key(name: str, uuid: str | None) -> str:
    """An open alert's key in the state file: its name and its GPU (none for the host)."""
    return f"{name}|{uuid or ''}"


def _bus_in(pci_bus_id: str, message: str) -> bool:
    """Whether a message names this bus: `00000000:01:00.0` is `0000:01:00.0` in nvidia-smi's
    "GPU0000:01:00.0" and `0000:01:00` in the kernel's."""
    short = pci_bus_id.split(":", 1)[-1].lower()  # "01:00.0"
    return short in message.lower() or short.rsplit(".", 1)[0] + ")" in message.lower()


def open_alerts(state_dir: Path) -> list[tuple[str, str | None, str]]:
    """(alert, gpu_uuid or None, since) of the alerts open in the state file (LOG_DIR);
    none when there is no file (OSError or ValueError when it cannot be read)."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    found = []
    for key, opened in sorted(saved.get("open", {}).items()):
        name, _, uuid = key.partition("|")  # as _key wrote it
        found.append((name, uuid or None, opened.get("since", "?")))
    return found
