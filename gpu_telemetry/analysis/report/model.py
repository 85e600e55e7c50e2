"""The thermal report of one run as data: which rows are the idle before, the bench and the
cooling of each GPU, their statistics (analysis.thermal), and the report as JSON-ready figures.

Pure: the rows come from a source (analysis.report.query reads them from the database) and
nothing here draws or writes. The lists of what a report reads and shows are at the top.

Phases, as bin/run_gpuburn.sh tags them under one run id: pre-idle (idle), bench (bench), post
(idle), cooldown (idle); the final status carries no run id.

    --run-id   bench = the run's rows tagged bench; idle = the run's rows before the first
               bench row (none: the GPU's non-bench rows in the 5 min before the run);
               cooling = the run's rows after the last bench row (none: the GPU's rows up to
               30 min after the bench, until the next bench row)
    --start    bench = rows tagged bench in [start, end); idle = non-bench rows before the
               first of them; cooling = non-bench rows after the last
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from gpu_telemetry.analysis.thermal import Phase, ThermalSummary, analyse
from gpu_telemetry.errors import TelemetryError
from gpu_telemetry.schema import BY_NAME, IDENTITY_COLUMNS, SAMPLE_HEAD, throttle_flags
from gpu_telemetry.tags import BENCH

# ---------------------------------------------------------------- what a report reads and shows

THROTTLE_COLUMNS = throttle_flags()
#: The readings a report analyses and draws, top to bottom: (column, relative panel height).
#: Temperature on top and taller; SM clock and power each on their own axis (on one twin axis
#: 1600 MHz and 250 W land on the same line and read as one).
_PANEL_HEIGHTS = (("temp_c", 3.0), ("clocks_sm_mhz", 1.3), ("power_draw_w", 1.3))
#: The panels of the picture: (column, axis label, unit, relative height), titled by the schema.
PANELS = tuple((name, f"{BY_NAME[name].short_label} ({BY_NAME[name].unit})", BY_NAME[name].unit,
                height) for name, height in _PANEL_HEIGHTS)
#: The columns of telemetry.gpu_telemetry a report reads.
COLUMNS = (*(column.name for column in SAMPLE_HEAD), *IDENTITY_COLUMNS,
           *(name for name, _ in _PANEL_HEIGHTS), *THROTTLE_COLUMNS)
#: The figures of the table: (title, JSON key, unit, digits); unit None is a duration.
METRICS = (
    ("Bench duration", "bench_s", None, 0),
    ("Idle before bench", "idle_temp_c", " °C", 1),
    ("Peak", "peak_temp_c", " °C", 0),
    ("Steady state", "steady_temp_c", " °C", 1),
    ("Time to 90 % of the rise", "rise_90_s", None, 0),
    ("τ heating", "tau_heat_s", " s", 0),
    ("τ cooling", "tau_cool_s", " s", 0),
    ("Mean bench power", "mean_power_w", " W", 1),
    ("Idle power", "idle_power_w", " W", 1),
    ("°C per W above idle", "degrees_per_watt", "", 3),
    ("SM clock drop vs run max", "sm_clock_drop_pct", " %", 1),
)
# Rounding of the JSON numbers: finer than any sensor, coarse enough to read.
DIGITS = {"bench_s": 1, "idle_temp_c": 2, "peak_temp_c": 2, "steady_temp_c": 2,
          "rise_90_s": 1, "tau_heat_s": 1, "tau_cool_s": 1, "sm_clock_drop_pct": 2,
          "mean_power_w": 2, "idle_power_w": 2, "degrees_per_watt": 4}
EXIT_NO_ROWS = 1
IDLE_LOOKBACK = timedelta(minutes=5)
COOL_LOOKAHEAD = timedelta(minutes=30)


class NoRows(TelemetryError):
    exit_code = EXIT_NO_ROWS


class RowSource(Protocol):
    """Where the rows come from (analysis.report.query.TelemetryRows): each list sorted by
    host, GPU and time, each row a dict of COLUMNS."""

    def of_run(self, run_id: str, host: str | None) -> list[dict]: ...

    def of_range(self, start: datetime, end: datetime, host: str | None) -> list[dict]: ...

    def not_bench_before(self, host: str, gpu_uuid: str, start: datetime,
                         end: datetime) -> list[dict]: ...

    def after(self, host: str, gpu_uuid: str, start: datetime, end: datetime) -> list[dict]: ...


@dataclass(frozen=True)
class Selection:
    """Which rows make the run: a run id, or a time range (start inclusive, end exclusive)."""

    run_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    host: str | None = None
    gpu: str | None = None

    def describe(self) -> str:
        where = f" on host {self.host}" if self.host else ""
        which = f" GPU {self.gpu}" if self.gpu else ""
        if self.run_id is not None:
            return f"run {self.run_id}{where}{which}"
        return f"{self.start.isoformat()} to {self.end.isoformat()}{where}{which}"


@dataclass
class GpuRun:
    host: str
    gpu_uuid: str
    gpu_name: str | None
    pci_bus_id: str | None
    gpu_index: int | None
    idle: list[dict] = field(default_factory=list)
    bench: list[dict] = field(default_factory=list)
    cool: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: ThermalSummary | None = None

    @property
    def origin(self) -> datetime:
        """Time zero of the plots and fits: the first bench row (else the first row)."""
        rows = self.bench or self.idle or self.cool
        return rows[0]["ts"]

    @property
    def label(self) -> str:
        index = f"GPU{self.gpu_index}" if self.gpu_index is not None else "GPU"
        bus = f" ({short_bus_id(self.pci_bus_id)})" if self.pci_bus_id else ""
        return f"{index} {self.gpu_name or self.gpu_uuid}{bus}"

    def rows(self) -> list[dict]:
        return [*self.idle, *self.bench, *self.cool]

    def phase(self, name: str) -> Phase:
        rows = getattr(self, name)
        origin = self.origin
        throttle = {column.removeprefix("throttle_"): [row[column] for row in rows]
                    for column in THROTTLE_COLUMNS}
        return Phase(
            t_s=[(row["ts"] - origin).total_seconds() for row in rows],
            temp_c=[_number(row["temp_c"]) for row in rows],
            power_w=[_number(row["power_draw_w"]) for row in rows],
            sm_mhz=[_number(row["clocks_sm_mhz"]) for row in rows],
            throttle=throttle,
        )

    def analyse(self) -> ThermalSummary:
        self.summary = analyse(self.phase("idle"), self.phase("bench"), self.phase("cool"))
        return self.summary

    def to_json(self, tz: tzinfo) -> dict:
        summary = self.summary or self.analyse()
        values = {key: _round(getattr(summary, key), digits) for key, digits in DIGITS.items()}
        share = summary.throttle_share
        return {
            "gpu_uuid": self.gpu_uuid,
            "gpu_name": self.gpu_name,
            "pci_bus_id": self.pci_bus_id,
            "gpu_index": self.gpu_index,
            "host": self.host,
            "samples": len(self.idle) + len(self.bench) + len(self.cool),
            "phase_samples": {"idle": len(self.idle), "bench": len(self.bench),
                              "cool": len(self.cool)},
            "bench_start": _iso(self.bench[0]["ts"], tz) if self.bench else None,
            "bench_end": _iso(self.bench[-1]["ts"], tz) if self.bench else None,
            "bench_s": values["bench_s"],
            "idle_temp_c": values["idle_temp_c"],
            "peak_temp_c": values["peak_temp_c"],
            "steady_temp_c": values["steady_temp_c"],
            "rise_90_s": values["rise_90_s"],
            "tau_heat_s": values["tau_heat_s"],
            "tau_cool_s": values["tau_cool_s"],
            "throttle_share": ({k: round(v, 4) for k, v in share.items()}
                               if share is not None else None),
            "sm_clock_drop_pct": values["sm_clock_drop_pct"],
            "mean_power_w": values["mean_power_w"],
            "idle_power_w": values["idle_power_w"],
            "degrees_per_watt": values["degrees_per_watt"],
            "fit_rmse_c": {
                "heat": _round(summary.heat_fit.rmse_c, 3) if summary.heat_fit else None,
                "cool": _round(summary.cool_fit.rmse_c, 3) if summary.cool_fit else None,
            },
            "notes": [*self.notes, *summary.notes],
        }


@dataclass
class RunReport:
    selection: Selection
    gpus: list[GpuRun]
    run_id: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The report's file name stem."""
        if self.selection.run_id is not None:
            return safe_name(self.selection.run_id)
        start, end = self.selection.start, self.selection.end
        return safe_name(f"range-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}")

    @property
    def title(self) -> str:
        if self.selection.run_id is not None:
            return self.selection.run_id
        return self.run_id or "time range"

    @property
    def memo(self) -> str | None:
        for gpu in self.gpus:
            for row in gpu.bench:
                if row["status_memo"]:
                    return row["status_memo"]
        return None

    @property
    def hosts(self) -> list[str]:
        return sorted({gpu.host for gpu in self.gpus})

    def rows(self) -> list[dict]:
        return [row for gpu in self.gpus for row in (*gpu.idle, *gpu.bench, *gpu.cool)]

    def to_json(self, tz: tzinfo) -> dict:
        times = [row["ts"] for row in self.rows()]
        return {
            "run_id": self.run_id,
            "hosts": self.hosts,
            "memo": self.memo,
            "start": _iso(min(times), tz) if times else None,
            "end": _iso(max(times), tz) if times else None,
            "gpus": [gpu.to_json(tz) for gpu in self.gpus],
            "notes": self.notes,
        }


def _number(value) -> float | None:
    return None if value is None else float(value)


def _round(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _iso(ts: datetime, tz: tzinfo) -> str:
    return ts.astimezone(tz).isoformat()


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "report"


def short_bus_id(bus_id: str) -> str:
    """00000000:01:00.0 -> 01:00.0 (the domain is 0 on every machine this serves)."""
    parts = bus_id.split(":")
    if len(parts) == 3 and set(parts[0]) <= {"0"}:
        return ":".join(parts[1:])
    return bus_id


def gpu_matches(spec: str, gpu: GpuRun) -> bool:
    """--gpu: a UUID (or its prefix), an index, or a PCI bus id with or without the domain."""
    wanted = spec.strip().lower()
    if wanted.isdigit():
        return gpu.gpu_index is not None and int(wanted) == gpu.gpu_index
    if wanted.startswith("gpu-"):
        return gpu.gpu_uuid.lower().startswith(wanted)
    bus = (gpu.pci_bus_id or "").lower()
    if not bus or ":" not in wanted:
        return False
    if bus == wanted or bus.endswith(":" + wanted):
        return True
    # 0000:01:00.0 (lspci, sysfs) against nvidia-smi's 00000000:01:00.0
    return wanted.count(":") == 2 and bus.split(":", 1)[1] == wanted.split(":", 1)[1]


def _group(rows: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["host"], row["gpu_uuid"]), []).append(row)
    return groups


def _new_gpu(rows: list[dict]) -> GpuRun:
    last = rows[-1]
    return GpuRun(host=last["host"], gpu_uuid=last["gpu_uuid"], gpu_name=last["gpu_name"],
                  pci_bus_id=last["pci_bus_id"], gpu_index=last["gpu_index"])


def split_phases(gpu: GpuRun, rows: list[dict]) -> tuple[int, int] | None:
    """Put rows into bench and the non-bench rows before / after it; returns the index range
    of the bench rows, or None when there are none."""
    bench_at = [i for i, row in enumerate(rows) if row["status_tag"] == BENCH]
    if not bench_at:
        gpu.idle = rows
        gpu.notes.append("no rows tagged bench: only idle figures")
        return None
    first, last = bench_at[0], bench_at[-1]
    gpu.bench = [rows[i] for i in bench_at]
    gpu.idle = [row for row in rows[:first] if row["status_tag"] != BENCH]
    gpu.cool = [row for row in rows[last + 1:] if row["status_tag"] != BENCH]
    gaps = (last - first + 1) - len(bench_at)
    if gaps:
        gpu.notes.append(f"{gaps} rows inside the bench were not tagged bench and are left out")
    return first, last


def _gpus_of_run(source: RowSource, selection: Selection) -> list[GpuRun]:
    gpus = []
    for group in _group(source.of_run(selection.run_id, selection.host)).values():
        gpu = _new_gpu(group)
        if selection.gpu and not gpu_matches(selection.gpu, gpu):
            continue
        span = split_phases(gpu, group)
        gpus.append(gpu)
        if span is None:
            continue
        if not gpu.idle:
            # No pre-idle phase (--pre-idle-sec 0): what the GPU did just before the run.
            start = group[0]["ts"]
            gpu.idle = source.not_bench_before(gpu.host, gpu.gpu_uuid, start - IDLE_LOOKBACK,
                                               start)
            gpu.notes.append("the run has no rows before the bench: idle taken from the "
                             f"{IDLE_LOOKBACK.seconds // 60} min before it "
                             f"({len(gpu.idle)} rows)")
        if not gpu.cool:
            end = gpu.bench[-1]["ts"]
            for row in source.after(gpu.host, gpu.gpu_uuid, end, end + COOL_LOOKAHEAD):
                if row["status_tag"] == BENCH:
                    break
                gpu.cool.append(row)
            gpu.notes.append("the run has no rows after the bench: cooling taken from the "
                             f"{COOL_LOOKAHEAD.seconds // 60} min after it "
                             f"({len(gpu.cool)} rows)")
    return gpus


def _gpus_of_range(source: RowSource, selection: Selection) -> list[GpuRun]:
    gpus = []
    for group in _group(source.of_range(selection.start, selection.end,
                                        selection.host)).values():
        gpu = _new_gpu(group)
        if selection.gpu and not gpu_matches(selection.gpu, gpu):
            continue
        split_phases(gpu, group)
        gpus.append(gpu)
    return gpus


def build_report(source: RowSource, selection: Selection) -> RunReport:
    """Split and analyse the selection's rows; NoRows when it matches nothing."""
    if selection.run_id is not None:
        gpus = _gpus_of_run(source, selection)
    else:
        gpus = _gpus_of_range(source, selection)
    if not gpus:
        hint = ("is the collector running? try --start/--end" if selection.run_id is not None
                else "is the collector running? check the range, --tz and --host")
        raise NoRows(f"no rows for {selection.describe()} ({hint})")
    gpus.sort(key=lambda g: (g.host, g.gpu_index if g.gpu_index is not None else 999,
                             g.pci_bus_id or "", g.gpu_uuid))
    for gpu in gpus:
        gpu.analyse()
    run_ids = sorted({row["run_id"] for gpu in gpus for row in gpu.bench if row["run_id"]})
    report = RunReport(selection=selection, gpus=gpus,
                       run_id=selection.run_id or (run_ids[0] if len(run_ids) == 1 else None))
    if selection.run_id is None and len(run_ids) > 1:
        report.notes.append(f"the range holds bench rows of {len(run_ids)} runs: "
                            + ", ".join(run_ids))
    return report


def reports_column(gpu: GpuRun, column: str) -> bool:
    """Whether the GPU has any value for column in the rows of the report."""
    return any(row[column] is not None for row in gpu.rows())


def panels_drawn(gpus: Sequence[GpuRun]) -> tuple[tuple, ...]:
    """The panels some GPU of the picture has values for; the temperature alone when none has
    any (the picture then says so)."""
    return (tuple(p for p in PANELS if any(reports_column(g, p[0]) for g in gpus))
            or PANELS[:1])
