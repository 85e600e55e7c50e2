"""The collector's health, as the host health check reports it: the spool, the age of the last
stored sample, the GPUs' thermal state, the collector's latest events, its open alerts and
the last Xids.

Each check gives evidence lines (what was seen) and findings (OK / WARN / FAIL with one line
each); bin/host_healthcheck.sh prints the evidence in its Collector section and counts the
findings into its verdict. Nothing here stops at the first problem: a database that cannot be
reached still leaves the spool and a reading of nvidia-smi to report.

Staleness: the last stored sample is stale when it is older than three sample intervals
(SAMPLE_INTERVAL_SEC), and never sooner than 60 s, so that a short interval does not warn
about one slow sample or a collector restart (systemd restarts it 5 s after an exit).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from gpu_telemetry.collector import spool
from gpu_telemetry.config import Config
from gpu_telemetry.errors import DatabaseError, SourceError

STALE_INTERVALS = 3
STALE_MIN_SEC = 60.0
HOT_MARGIN_C = 5  # this close to the GPU's own slowdown threshold is worth a warning
EVENTS_SHOWN = 5


def stale_after_sec(sample_interval_sec: float) -> float:
    """How old the last stored sample may be before the collector counts as stalled."""
    return max(STALE_INTERVALS * sample_interval_sec, STALE_MIN_SEC)


@dataclass
class Report:
    evidence: list[str] = field(default_factory=list)
    findings: list[tuple[str, str]] = field(default_factory=list)  # (OK|WARN|FAIL, line)

    def ok(self, line: str) -> None:
        self.findings.append(("OK", line))

    def warn(self, line: str) -> None:
        self.findings.append(("WARN", line))

    @property
    def worst(self) -> str:
        levels = {level for level, _ in self.findings}
        return next((level for level in ("FAIL", "WARN") if level in levels), "OK")


@dataclass(frozen=True)
class GpuThermal:
    """One GPU's temperature and what it says about throttling; None: not reported."""

    gpu_index: int | None
    gpu_name: str | None
    temp_c: float | None
    temp_slowdown_c: float | None
    hw_thermal: bool | None
    sw_thermal: bool | None

    @classmethod
    def from_row(cls, row: dict) -> GpuThermal:
        return cls(row.get("gpu_index"), row.get("gpu_name"), row.get("temp_c"),
                   row.get("temp_slowdown_c"), row.get("throttle_hw_thermal"),
                   row.get("throttle_sw_thermal"))

    @property
    def label(self) -> str:
        index = "?" if self.gpu_index is None else self.gpu_index
        return f"GPU {index} ({self.gpu_name or 'unnamed'})"

    @property
    def slowdown_reasons(self) -> list[str]:
        return [name for name, active in (("hw thermal slowdown", self.hw_thermal),
                                          ("sw thermal slowdown", self.sw_thermal)) if active]


def _number(value) -> str:
    return "n/a" if value is None else f"{value:g}"


def check_spool(report: Report, config: Config) -> None:
    """Pending samples (what a flush would deliver: no temp files, no drop ledger) and the
    quarantined files of spool/bad/ (their .reason notes not counted)."""
    waiting = len(spool.pending_files(config.spool_dir))
    bad_dir = config.spool_dir / spool.BAD_DIR
    try:
        bad = sum(1 for path in bad_dir.iterdir()
                  if path.is_file() and not path.name.endswith(".reason"))
    except FileNotFoundError:
        bad = 0
    except OSError as exc:
        report.warn(f"spool folder {bad_dir} unreadable: {exc.strerror or exc}")
        bad = 0
    report.evidence.append(f"spool depth: {waiting} waiting, {bad} quarantined in bad/ "
                           f"({config.spool_dir})")
    if waiting:
        report.warn(f"spool depth {waiting}: samples waiting in {config.spool_dir}")
    if bad:
        report.warn(f"spool depth {bad} quarantined in {bad_dir} (see the .reason files)")


def thermal_findings(report: Report, gpus: list[GpuThermal], source: str) -> None:
    """Active thermal slowdown, or a temperature within HOT_MARGIN_C of the GPU's own
    slowdown threshold, is a warning."""
    for gpu in gpus:
        reasons = gpu.slowdown_reasons
        report.evidence.append(
            f"thermal ({source}): {gpu.label}: {_number(gpu.temp_c)} °C, slowdown at "
            f"{_number(gpu.temp_slowdown_c)} °C, thermal slowdown "
            f"{', '.join(reasons) if reasons else 'not active'}")
        if reasons:
            report.warn(f"thermal slowdown active on {gpu.label}: {', '.join(reasons)} "
                        f"(from {source})")
        elif (gpu.temp_c is not None and gpu.temp_slowdown_c is not None
              and gpu.temp_c >= gpu.temp_slowdown_c - HOT_MARGIN_C):
            report.warn(f"{gpu.label} at {_number(gpu.temp_c)} °C, within {HOT_MARGIN_C} °C of "
                        f"its slowdown threshold {_number(gpu.temp_slowdown_c)} °C "
                        f"(from {source})")


def read_gpus(config: Config, timeout_sec: float) -> list[GpuThermal]:
    """One nvidia-smi reading through the collector's own source and parser."""
    from gpu_telemetry.collector.parser import parse_document
    from gpu_telemetry.collector.source import read_nvidia_smi

    reading = parse_document(read_nvidia_smi(config.nvidia_smi, timeout_sec))
    return [GpuThermal.from_row(gpu.as_dict()) for gpu in reading.gpus]


def _event_line(event: dict) -> str:
    ts = event["ts"]
    when = ts.isoformat(timespec="seconds") if isinstance(ts, datetime) else str(ts)
    detail = " ".join(str(event["detail"] or "").split())
    return f"  {when} {event['kind']}{': ' + detail if detail else ''}"


def _database_checks(report: Report, config: Config, host: str) -> list[GpuThermal] | None:
    """Age of the last sample and the latest events; the stored thermal state when fresh."""
    from gpu_telemetry.db import health as queries
    from gpu_telemetry.db.store import connect

    limit = stale_after_sec(config.sample_interval_sec)
    try:
        conn = connect()
    except DatabaseError as error:
        # "database unreachable: ...", "database login refused: ...; check ...", ...
        report.warn(str(error))
        return None
    with conn:
        try:
            age = queries.last_sample_age_sec(conn, host)
        except DatabaseError as error:
            report.warn(str(error))
            return None
        rule = (f"stale after {limit:g} s: {STALE_INTERVALS} x SAMPLE_INTERVAL_SEC "
                f"{config.sample_interval_sec:g}, at least {STALE_MIN_SEC:g} s")
        thermal = None
        if age is None:
            report.warn(f"no sample stored for host {host}")
        elif age > limit:
            report.evidence.append(f"last sample of {host}: {age:.0f} s ago ({rule})")
            report.warn(f"last sample of {host} stored {age:.0f} s ago (more than {limit:g} s)")
        else:
            report.evidence.append(f"last sample of {host}: {age:.0f} s ago ({rule})")
            report.ok(f"last sample of {host} stored {age:.0f} s ago")
            try:
                rows = queries.latest_thermal_rows(conn, host, limit)
                thermal = [GpuThermal.from_row(row) for row in rows
                           if row["temp_c"] is not None] or None
            except DatabaseError:
                thermal = None  # a role that may not read readings: nvidia-smi tells instead
        for what, query in (("collector events", queries.last_events),
                            ("Xid events", queries.last_xids)):
            try:
                events = query(conn, host, EVENTS_SHOWN)
            except DatabaseError as error:
                report.evidence.append(f"{what}: not readable ({error})")
            else:
                report.evidence.append(f"last {len(events)} {what} of {host}"
                                       f"{':' if events else ' (none)'}")
                report.evidence += [_event_line(event) for event in events]
    return thermal


def check_alerts(report: Report, config: Config) -> None:
    """The collector's open alerts (its state file in LOG_DIR): one WARN each."""
    from gpu_telemetry.collector.alerts import open_alerts

    try:
        found = open_alerts(config.log_dir)
    except (OSError, ValueError) as error:
        report.evidence.append(f"open alerts: not readable ({error})")
        return
    report.evidence.append(f"open alerts: {len(found) or 'none'}")
    for name, uuid, since in found:
        report.warn(f"alert {name} open since {since}" + (f" ({uuid})" if uuid else ""))


def collector_health(config: Config, *, reading_timeout_sec: float | None = None,
                     read_gpu: bool = True, host: str | None = None) -> Report:
    """Every check of the collector's health; the thermal state from the database's latest
    fresh rows, else from one nvidia-smi reading (unless read_gpu is False)."""
    report = Report()
    host = host or socket.gethostname().split(".")[0]
    check_spool(report, config)
    check_alerts(report, config)
    stored = _database_checks(report, config, host)
    if stored:
        thermal_findings(report, stored, "database, latest rows")
    elif read_gpu:
        timeout = reading_timeout_sec or config.nvidia_smi_timeout_sec
        try:
            gpus = read_gpus(config, timeout)
        except SourceError as error:
            report.evidence.append(f"thermal: no reading ({error.kind}: {error.message})")
        else:
            thermal_findings(report, gpus, "nvidia-smi reading")
    return report


def report_lines(report: Report) -> Iterator[str]:
    """The evidence, then one `LEVEL: line` per finding."""
    yield from report.evidence
    for level, line in report.findings:
        yield f"{level}: {line}"
