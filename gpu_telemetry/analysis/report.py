"""The thermal report of one run (body of bin/report_run.py): fetch the run's rows, split each
GPU's rows into idle-before, bench and cooling, analyse them (analysis.thermal) and
write Markdown, a PNG and JSON.

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

import json
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg.rows import dict_row

from gpu_telemetry import REPO_ROOT
from gpu_telemetry.analysis.axes import note_not_reported, readable_limits
from gpu_telemetry.analysis.thermal import Phase, ThermalSummary, analyse
from gpu_telemetry.collector.sample import COLUMN_TYPES
from gpu_telemetry.db.errors import first_line
from gpu_telemetry.db.store import connect
from gpu_telemetry.errors import ConfigError, DatabaseUnreachable, OutputError, TelemetryError

EXIT_NO_ROWS = 1
REPORT_DIR = REPO_ROOT / "docs" / "reports"
IDLE_LOOKBACK = timedelta(minutes=5)
COOL_LOOKAHEAD = timedelta(minutes=30)
BENCH_TAG = "bench"

THROTTLE_COLUMNS = tuple(column for column, sql_type in COLUMN_TYPES.items()
                         if column.startswith("throttle_") and sql_type == "boolean")
COLUMNS = ("ts", "host", "gpu_uuid", "gpu_name", "pci_bus_id", "gpu_index", "status_tag",
           "status_memo", "run_id", "temp_c", "power_draw_w", "clocks_sm_mhz", *THROTTLE_COLUMNS)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM telemetry.gpu_telemetry"
_ORDER = " ORDER BY host, gpu_uuid, ts"

# Rounding of the JSON numbers: finer than any sensor, coarse enough to read.
_DIGITS = {"bench_s": 1, "idle_temp_c": 2, "peak_temp_c": 2, "steady_temp_c": 2,
           "rise_90_s": 1, "tau_heat_s": 1, "tau_cool_s": 1, "sm_clock_drop_pct": 2,
           "mean_power_w": 2, "idle_power_w": 2, "degrees_per_watt": 4}


class NoRows(TelemetryError):
    exit_code = EXIT_NO_ROWS


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
        values = {key: _round(getattr(summary, key), digits) for key, digits in _DIGITS.items()}
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


def _query(conn: psycopg.Connection, sql: str, params: Sequence) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def _split(gpu: GpuRun, rows: list[dict]) -> tuple[int, int] | None:
    """Put rows into bench and the non-bench rows before / after it; returns the index range
    of the bench rows, or None when there are none."""
    bench_at = [i for i, row in enumerate(rows) if row["status_tag"] == BENCH_TAG]
    if not bench_at:
        gpu.idle = rows
        gpu.notes.append("no rows tagged bench: only idle figures")
        return None
    first, last = bench_at[0], bench_at[-1]
    gpu.bench = [rows[i] for i in bench_at]
    gpu.idle = [row for row in rows[:first] if row["status_tag"] != BENCH_TAG]
    gpu.cool = [row for row in rows[last + 1:] if row["status_tag"] != BENCH_TAG]
    gaps = (last - first + 1) - len(bench_at)
    if gaps:
        gpu.notes.append(f"{gaps} rows inside the bench were not tagged bench and are left out")
    return first, last


def _gpus_of_run(conn: psycopg.Connection, selection: Selection) -> list[GpuRun]:
    rows = _query(conn, _SELECT + " WHERE run_id = %s AND (%s::text IS NULL OR host = %s)"
                  + _ORDER, (selection.run_id, selection.host, selection.host))
    gpus = []
    for group in _group(rows).values():
        gpu = _new_gpu(group)
        if selection.gpu and not gpu_matches(selection.gpu, gpu):
            continue
        span = _split(gpu, group)
        gpus.append(gpu)
        if span is None:
            continue
        same_gpu = " AND host = %s AND gpu_uuid = %s"
        if not gpu.idle:
            # No pre-idle phase (--pre-idle-sec 0): what the GPU did just before the run.
            gpu.idle = _query(
                conn, _SELECT + " WHERE ts >= %s AND ts < %s" + same_gpu
                + " AND status_tag IS DISTINCT FROM %s ORDER BY ts",
                (group[0]["ts"] - IDLE_LOOKBACK, group[0]["ts"], gpu.host, gpu.gpu_uuid,
                 BENCH_TAG))
            gpu.notes.append("the run has no rows before the bench: idle taken from the "
                             f"{IDLE_LOOKBACK.seconds // 60} min before it "
                             f"({len(gpu.idle)} rows)")
        if not gpu.cool:
            end = gpu.bench[-1]["ts"]
            after = _query(conn, _SELECT + " WHERE ts > %s AND ts <= %s" + same_gpu
                           + " ORDER BY ts", (end, end + COOL_LOOKAHEAD, gpu.host, gpu.gpu_uuid))
            for row in after:
                if row["status_tag"] == BENCH_TAG:
                    break
                gpu.cool.append(row)
            gpu.notes.append("the run has no rows after the bench: cooling taken from the "
                             f"{COOL_LOOKAHEAD.seconds // 60} min after it "
                             f"({len(gpu.cool)} rows)")
    return gpus


def _gpus_of_range(conn: psycopg.Connection, selection: Selection) -> list[GpuRun]:
    rows = _query(conn, _SELECT + " WHERE ts >= %s AND ts < %s AND (%s::text IS NULL OR host = %s)"
                  + _ORDER, (selection.start, selection.end, selection.host, selection.host))
    gpus = []
    for group in _group(rows).values():
        gpu = _new_gpu(group)
        if selection.gpu and not gpu_matches(selection.gpu, gpu):
            continue
        _split(gpu, group)
        gpus.append(gpu)
    return gpus


def build_report(conn: psycopg.Connection, selection: Selection) -> RunReport:
    """Fetch and analyse; NoRows when the selection matches nothing."""
    try:
        if selection.run_id is not None:
            gpus = _gpus_of_run(conn, selection)
        else:
            gpus = _gpus_of_range(conn, selection)
    except psycopg.errors.UndefinedTable as exc:
        raise ConfigError(f"no telemetry tables in this database ({first_line(exc)}); "
                          "run bin/init_db.sh") from exc
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(f"database unreachable: {first_line(exc)}") from exc
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


def fetch_reports(selections: Sequence[Selection]) -> list[RunReport]:
    with connect() as conn:
        return [build_report(conn, selection) for selection in selections]


# ---------------------------------------------------------------- Markdown

def md_code(text: str) -> str:
    """Text shown verbatim: a code span (quotes, SQL, asterisks, pipes stay text)."""
    text = " ".join(str(text).split())
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def md_text(text: str) -> str:
    """Plain text in a table cell or heading: Markdown's special characters escaped."""
    # Parentheses, # and ! only matter after [ or at a line start: [ is escaped, lines start
    # with our own text.
    return re.sub(r"([\\`*_\[\]<>|~])", r"\\\1", " ".join(str(text).split()))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _fmt(value, unit: str, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


METRICS = (
    ("Bench duration", "bench_s", fmt_duration),
    ("Idle before bench", "idle_temp_c", lambda v: _fmt(v, " °C")),
    ("Peak", "peak_temp_c", lambda v: _fmt(v, " °C", 0)),
    ("Steady state", "steady_temp_c", lambda v: _fmt(v, " °C")),
    ("Time to 90 % of the rise", "rise_90_s", fmt_duration),
    ("τ heating", "tau_heat_s", lambda v: _fmt(v, " s", 0)),
    ("τ cooling", "tau_cool_s", lambda v: _fmt(v, " s", 0)),
    ("Mean bench power", "mean_power_w", lambda v: _fmt(v, " W")),
    ("Idle power", "idle_power_w", lambda v: _fmt(v, " W")),
    ("°C per W above idle", "degrees_per_watt", lambda v: _fmt(v, "", 3)),
    ("SM clock drop vs run max", "sm_clock_drop_pct", lambda v: _fmt(v, " %")),
)


def metrics_table(columns: Sequence[tuple[str, dict]]) -> list[str]:
    """One row per metric, one column per (header, GPU JSON)."""
    lines = ["| | " + " | ".join(md_text(header) for header, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for title, key, fmt in METRICS:
        lines.append(f"| {title} | " + " | ".join(fmt(g[key]) for _, g in columns) + " |")
    reasons = sorted({r for _, g in columns for r in (g["throttle_share"] or {})})
    for reason in reasons:
        cells = []
        for _, g in columns:
            share = (g["throttle_share"] or {}).get(reason)
            cells.append("–" if share is None else f"{100 * share:.0f} %")
        lines.append(f"| Throttle: {reason} | " + " | ".join(cells) + " |")
    lines.append("| Samples (idle / bench / cooling) | " + " | ".join(
        "{idle} / {bench} / {cool}".format(**g["phase_samples"]) for _, g in columns) + " |")
    return lines


def _when(ts: datetime, tz: tzinfo) -> str:
    return ts.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def phases_table(gpu: GpuRun, tz: tzinfo) -> list[str]:
    lines = ["| Phase | From | To | Samples | Tag | Memo |", "|---|---|---|---:|---|---|"]
    for title, rows in (("idle before", gpu.idle), ("bench", gpu.bench), ("cooling", gpu.cool)):
        if not rows:
            lines.append(f"| {title} | – | – | 0 | | |")
            continue
        tags = ", ".join(sorted({row["status_tag"] or "null" for row in rows}))
        memos = list(dict.fromkeys(row["status_memo"] for row in rows if row["status_memo"]))
        memo = "; ".join(md_code(m) for m in memos[:3]) + (" …" if len(memos) > 3 else "")
        lines.append(f"| {title} | {_when(rows[0]['ts'], tz)} | {_when(rows[-1]['ts'], tz)} | "
                     f"{len(rows)} | {md_text(tags)} | {memo} |")
    return lines


METHOD = """\
## How the figures are made

- **Idle**: mean of the second half of the idle rows before the bench. **Peak**: highest
  reading of the run.
- **Steady state, τ heating**: a first-order response T(t) = T∞ + (T0 − T∞)·e^(−t/τ) fitted to
  the bench rows by least squares (τ searched on a log scale); the steady state is the fitted
  T∞. Without a usable fit, the mean of the last 20 % of the bench.
- **Time to 90 % of the rise**: from the first bench row until the fitted curve (else the
  smoothed readings) reaches idle + 0.9 × (steady − idle).
- **τ cooling**: the same fit over the rows after the bench.
- **Throttle**: share of bench samples with the reason active (unreported readings left out).
- **SM clock drop**: 1 − median SM clock over the last 20 % of the bench ÷ highest SM clock of
  the run. **°C per W**: (steady − idle) ÷ (mean bench power − mean idle power).
"""


def render_markdown(report: RunReport, tz: tzinfo, png_name: str | None) -> str:
    data = report.to_json(tz)
    lines = [f"# Thermal report: {md_text(report.title)}", ""]
    if report.hosts:
        lines.append(f"- Host: {md_text(', '.join(report.hosts))}")
    if report.selection.run_id is None:
        lines.append(f"- Range: {_when(report.selection.start, tz)} to "
                     f"{_when(report.selection.end, tz)}")
    if report.memo:
        lines.append(f"- Bench memo: {md_code(report.memo)}")
    first = report.gpus[0]
    if first.bench:
        lines.append(f"- Bench: {_when(first.bench[0]['ts'], tz)} to "
                     f"{_when(first.bench[-1]['ts'], tz)}")
    lines.append("")
    if png_name:
        lines += [f"![{_drawn(report.gpus)} of {md_text(report.title)}]"
                  f"({quote(png_name)})", ""]
    lines += metrics_table([(gpu.label, g) for gpu, g in zip(report.gpus, data["gpus"],
                                                               strict=True)])
    lines += ["", "## Phases", ""]
    for gpu in report.gpus:
        if len(report.gpus) > 1:
            lines += [f"**{md_text(gpu.label)}** ({md_code(gpu.gpu_uuid)})", ""]
        lines += phases_table(gpu, tz) + [""]
    notes = [*report.notes] + [f"{gpu.label}: {note}" for gpu, g in
                               zip(report.gpus, data["gpus"], strict=True) for note in g["notes"]]
    if notes:
        lines += ["## Notes", ""] + [f"- {md_text(note)}" for note in notes] + [""]
    lines.append(METHOD)
    return "\n".join(lines)


def render_compare_markdown(reports: Sequence[RunReport], tz: tzinfo,
                            png_name: str | None) -> str:
    titles = [report.title for report in reports]
    lines = [f"# Thermal comparison: {' vs '.join(md_text(t) for t in titles)}", ""]
    for report in reports:
        memo = f": {md_code(report.memo)}" if report.memo else ""
        first = report.gpus[0]
        when = (f", bench {_when(first.bench[0]['ts'], tz)}" if first.bench else "")
        lines.append(f"- {md_text(report.title)}{memo}{when}")
    lines.append("")
    if png_name:
        lines += [f"![{_drawn([g for r in reports for g in r.gpus])} of "
                  f"{' and '.join(md_text(t) for t in titles)}]"
                  f"({quote(png_name)})", ""]
    lines += metrics_table(compare_columns(reports, tz)) + [""]
    notes = [f"{report.title}, {gpu.label}: {note}" for report in reports
             for gpu, g in zip(report.gpus, report.to_json(tz)["gpus"], strict=True)
             for note in g["notes"]]
    if notes:
        lines += ["## Notes", ""] + [f"- {md_text(note)}" for note in notes] + [""]
    lines.append(METHOD)
    return "\n".join(lines)


def compare_columns(reports: Sequence[RunReport], tz: tzinfo) -> list[tuple[str, dict]]:
    """Columns side by side: each GPU of the first run next to the same GPU in the others."""
    per_run = [list(zip(report.gpus, report.to_json(tz)["gpus"], strict=True))
               for report in reports]
    order: list[tuple[str, str]] = []
    for gpus in per_run:
        for gpu, _ in gpus:
            if (gpu.host, gpu.gpu_uuid) not in order:
                order.append((gpu.host, gpu.gpu_uuid))
    columns = []
    for key in order:
        for report, gpus in zip(reports, per_run, strict=True):
            for gpu, data in gpus:
                if (gpu.host, gpu.gpu_uuid) == key:
                    columns.append((f"{report.title} · {gpu.label}", data))
    return columns


# ---------------------------------------------------------------- PNG

DPI = 110
# (column, axis label, unit, relative height): temperature on top and taller; SM clock and
# power each on their own axis (on one twin axis 1600 MHz and 250 W land on the same line and
# read as one).
PANELS = (("temp_c", "temperature (°C)", "°C", 3.0),
          ("clocks_sm_mhz", "SM clock (MHz)", "MHz", 1.3),
          ("power_draw_w", "power (W)", "W", 1.3))


@dataclass(frozen=True)
class Panel:
    """One panel as drawn, so that a caller can tell what the picture shows without reading it
    back: the metric's column, the y-range, the notes written in it and where it lies in the
    PNG (left, top, right, bottom in pixels from the top left corner)."""

    column: str
    ylim: tuple[float, float]
    notes: tuple[str, ...]
    box_px: tuple[int, int, int, int]


def _mpl_text(text: str) -> str:
    """Matplotlib reads $...$ as mathtext: a memo is shown as typed."""
    return text.replace("$", r"\$")


def _minutes(rows: Sequence[dict], origin: datetime) -> list[float]:
    return [(row["ts"] - origin).total_seconds() / 60 for row in rows]


def _values(rows: Sequence[dict], column: str) -> list[float]:
    return [math.nan if row[column] is None else float(row[column]) for row in rows]


def _rows(gpu: GpuRun) -> list[dict]:
    return [*gpu.idle, *gpu.bench, *gpu.cool]


def _reports(gpu: GpuRun, column: str) -> bool:
    return any(row[column] is not None for row in _rows(gpu))


def _panels(gpus: Sequence[GpuRun]) -> tuple[tuple, ...]:
    """The panels some GPU of the picture has values for; the temperature alone, saying so,
    when none has any."""
    return tuple(p for p in PANELS if any(_reports(g, p[0]) for g in gpus)) or PANELS[:1]


def _drawn(gpus: Sequence[GpuRun]) -> str:
    """The picture's panels in words, for its alt text: "Temperature and power"."""
    names = [label.split(" (")[0] for _, label, _, _ in _panels(gpus)]
    words = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return words[0].upper() + words[1:]


def _figure(title: str, panels: Sequence[tuple]):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ratios = [panel[3] for panel in panels]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False, dpi=DPI,
                             figsize=(11, 1.4 + 1.35 * sum(ratios)),
                             gridspec_kw={"height_ratios": ratios})
    fig.suptitle(_mpl_text(title), fontsize=12)
    for (_, label, _, _), (axis,) in zip(panels, axes, strict=True):
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("minutes since bench start")
    return plt, fig, {panel[0]: row[0] for panel, row in zip(panels, axes, strict=True)}


def _finish(plt, fig, axes: dict, values: dict[str, list[float]], path: Path
            ) -> tuple[Panel, ...]:
    """Set each panel's y-range, write the PNG and say what it shows."""
    units = {column: unit for column, _, unit, _ in PANELS}
    try:
        for column, axis in axes.items():
            limits = readable_limits(values[column], units[column])
            if limits:
                axis.set_ylim(*limits)
            else:
                axis.set_yticks([])  # no value at all: ticks around 0 would read as readings
        fig.tight_layout()
        with _writing(path):
            fig.savefig(path, dpi=DPI)
        height = fig.bbox.height
        panels = []
        for column, axis in axes.items():
            box = axis.get_window_extent()
            low, high = axis.get_ylim()
            panels.append(Panel(column, (float(low), float(high)),
                                tuple(text.get_text() for text in axis.texts),
                                (round(box.x0), round(height - box.y1), round(box.x1),
                                 round(height - box.y0))))
        return tuple(panels)
    finally:
        plt.close(fig)


def _legend(top, axes: dict) -> None:
    # Below the temperature curves there is room (they start and end at idle); a clock or
    # power panel on top is too short for a fixed place.
    top.legend(loc="lower center" if "temp_c" in axes else "best", fontsize=8)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def render_png(report: RunReport, path: Path) -> tuple[Panel, ...]:
    title = f"Thermal report: {report.title}"
    if report.memo:
        title += f"\n{report.memo}"
    panels = _panels(report.gpus)
    plt, fig, axes = _figure(title, panels)
    top = next(iter(axes.values()))
    values: dict[str, list[float]] = {column: [] for column in axes}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    first = report.gpus[0]
    origin = first.origin
    fitted = False
    shades = (("idle before", first.idle, "0.5", 0.12), ("bench", first.bench, "tab:red", 0.08),
              ("cooling", first.cool, "tab:blue", 0.08))
    for name, rows, color, alpha in shades:
        if rows:
            start, end = _minutes([rows[0], rows[-1]], origin)
            for axis in axes.values():
                axis.axvspan(start, end, color=color, alpha=alpha, lw=0,
                             label=name if axis is top else None)
    for i, gpu in enumerate(report.gpus):
        color = colors[i % len(colors)]
        rows = _rows(gpu)
        t = _minutes(rows, origin)
        summary = gpu.summary
        taus = [f"τ heat {summary.tau_heat_s:.0f} s" if summary.tau_heat_s else None,
                f"τ cool {summary.tau_cool_s:.0f} s" if summary.tau_cool_s else None]
        label = _mpl_text(gpu.label + "".join(f", {x}" for x in taus if x))
        for column, axis in axes.items():
            ys = _values(rows, column)
            values[column] += _finite(ys)
            if column == "temp_c":
                axis.plot(t, ys, color=color, lw=0.8, alpha=0.55, label=label)
            else:
                axis.plot(t, ys, color=color, lw=1, label=label if axis is top else None)
        if "temp_c" not in axes:
            continue
        shift = (gpu.origin - origin).total_seconds()
        for fit, good in ((summary.heat_fit, summary.tau_heat_s),
                          (summary.cool_fit, summary.tau_cool_s)):
            if fit is None or good is None:
                continue
            xs = [fit.t0_s + fit.duration_s * k / 200 for k in range(201)]
            ys = [float(y) for y in fit.at(xs)]
            values["temp_c"] += ys
            fitted = True
            axes["temp_c"].plot([(x + shift) / 60 for x in xs], ys, color=color, lw=2.2,
                                ls="--")
    for column, axis in axes.items():
        note_not_reported(axis, [_mpl_text(g.label) for g in report.gpus
                                 if not _reports(g, column)],
                          len(report.gpus))
    if fitted:
        top.plot([], [], color="k", lw=2.2, ls="--", label="first-order fit")
    _legend(top, axes)
    return _finish(plt, fig, axes, values, path)


def render_compare_png(reports: Sequence[RunReport], path: Path) -> tuple[Panel, ...]:
    """One colour per GPU, one line style per run."""
    title = "Thermal comparison: " + " vs ".join(r.title for r in reports)
    panels = _panels([gpu for report in reports for gpu in report.gpus])
    plt, fig, axes = _figure(title, panels)
    top = next(iter(axes.values()))
    values: dict[str, list[float]] = {column: [] for column in axes}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ("-", "--", "-.", ":")
    gpu_keys: dict[tuple[str, str], str] = {}
    for report in reports:
        for gpu in report.gpus:
            gpu_keys.setdefault((gpu.host, gpu.gpu_uuid), gpu.label)
    order = list(gpu_keys)
    for axis in axes.values():
        axis.axvline(0, color="0.4", lw=0.8)
    for r, report in enumerate(reports):
        style = styles[r % len(styles)]
        for gpu in report.gpus:
            color = colors[order.index((gpu.host, gpu.gpu_uuid)) % len(colors)]
            rows = _rows(gpu)
            t = _minutes(rows, gpu.origin)
            for column, axis in axes.items():
                ys = _values(rows, column)
                values[column] += _finite(ys)
                axis.plot(t, ys, color=color, lw=1.1 if column == "temp_c" else 1, ls=style)
            if gpu.bench:
                end = _minutes([gpu.bench[-1]], gpu.origin)[0]
                for axis in axes.values():
                    axis.axvline(end, color="0.4", lw=0.8, ls=style)
    for column, axis in axes.items():
        note_not_reported(axis, _missing_in_runs(reports, gpu_keys, column), len(gpu_keys))
    for key, label in gpu_keys.items():
        top.plot([], [], color=colors[order.index(key) % len(colors)], lw=2,
                 label=_mpl_text(label))
    for r, report in enumerate(reports):
        memo = f": {report.memo}" if report.memo else ""
        top.plot([], [], color="k", lw=1.1, ls=styles[r % len(styles)],
                 label=_mpl_text(f"{report.title}{memo}"))
    _legend(top, axes)
    return _finish(plt, fig, axes, values, path)


def _missing_in_runs(reports: Sequence[RunReport], gpu_keys: dict[tuple[str, str], str],
                     column: str) -> list[str]:
    """The GPUs without values for column: the label alone when no run has any, else which
    runs lack them."""
    missing = []
    for key, label in gpu_keys.items():
        runs = [(report.title, _reports(gpu, column)) for report in reports
                for gpu in report.gpus if (gpu.host, gpu.gpu_uuid) == key]
        without = [title for title, has in runs if not has]
        if len(without) == len(runs):
            missing.append(_mpl_text(label))
        elif without:
            missing.append(_mpl_text(f"{label} in {', '.join(without)}"))
    return missing


# ---------------------------------------------------------------- the command

def default_markdown_path(reports: Sequence[RunReport]) -> Path:
    if len(reports) == 1:
        return REPORT_DIR / f"{reports[0].name}.md"
    return REPORT_DIR / f"compare-{'-vs-'.join(r.name for r in reports)}.md"


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError while writing path is an OutputError naming it and what the system said;
    a file where a folder should be gets said in words (errno 17 and 20 read as riddles)."""
    try:
        yield
    except OSError as exc:
        existing = next((p for p in path.parents if p.exists()), None)
        why = (f"{existing} is a file, not a folder ({exc})"
               if existing is not None and not existing.is_dir() else str(exc))
        raise OutputError(f"cannot write {path}: {why}") from exc


def write_outputs(reports: Sequence[RunReport], markdown_path: Path, tz: tzinfo
                  ) -> tuple[Path, Path]:
    png_path = markdown_path.with_suffix(".png")
    if markdown_path.is_dir():
        raise OutputError(f"cannot write {markdown_path}: it is a folder (give a file in it, "
                          f"e.g. {markdown_path / 'report.md'})")
    with _writing(markdown_path):
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
    if len(reports) == 1:
        render_png(reports[0], png_path)
        text = render_markdown(reports[0], tz, png_path.name)
    else:
        render_compare_png(reports, png_path)
        text = render_compare_markdown(reports, tz, png_path.name)
    with _writing(markdown_path):
        markdown_path.write_text(text, encoding="utf-8")
    return markdown_path, png_path


def one_line_summary(report: RunReport) -> list[str]:
    lines = []
    for gpu in report.gpus:
        s = gpu.summary
        lines.append(f"{report.title} {gpu.label}: idle {_fmt(s.idle_temp_c, ' °C')}, "
                     f"peak {_fmt(s.peak_temp_c, ' °C', 0)}, "
                     f"steady {_fmt(s.steady_temp_c, ' °C')}, "
                     f"τ heat {_fmt(s.tau_heat_s, ' s', 0)}, "
                     f"τ cool {_fmt(s.tau_cool_s, ' s', 0)}")
    return lines


def report_command(selections: Sequence[Selection], *, tz: tzinfo, as_json: bool,
                   out: Path | None) -> int:
    """Fetch, analyse, write (always without --json; with --json only when --out is given)
    and print. Returns the exit status."""
    reports = fetch_reports(selections)
    written: tuple[Path, Path] | None = None
    if out is not None or not as_json:
        written = write_outputs(reports, out or default_markdown_path(reports), tz)
    if as_json:
        body = ({"runs": [r.to_json(tz) for r in reports]} if len(reports) > 1
                else reports[0].to_json(tz))
        if written:
            body["markdown"], body["png"] = (str(p) for p in written)
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    for report in reports:
        for line in one_line_summary(report):
            print(line)
    for path in written:
        print(f"wrote {path}")
    return 0
