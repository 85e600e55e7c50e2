"""The report's SQL: the rows of a run, of a time range, and the rows just before and after a
bench, read from telemetry.gpu_telemetry through gpu_telemetry.db (which turns the database's
failures into named errors)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gpu_telemetry.analysis.report.model import COLUMNS, RunReport, Selection, build_report
from gpu_telemetry.db.read import reading, select_dicts
from gpu_telemetry.db.series import RUN_SPAN
from gpu_telemetry.tags import BENCH


class TelemetryRows:
    """The row source of analysis.report.model, on one connection."""

    def __init__(self, conn, columns: Sequence[str] = COLUMNS):
        self.conn = conn
        self._select = f"SELECT {', '.join(columns)} FROM telemetry.gpu_telemetry"

    def _rows(self, where: str, params: Sequence, order: str = "host, gpu_uuid, ts"
              ) -> list[dict]:
        return select_dicts(self.conn, f"{self._select} WHERE {where} ORDER BY {order}", params)

    def of_run(self, run_id: str, host: str | None) -> list[dict]:
        return self._rows(f"run_id = %s AND {RUN_SPAN} AND (%s::text IS NULL OR host = %s)",
                          (run_id, run_id, run_id, host, host))

    def of_range(self, start: datetime, end: datetime, host: str | None) -> list[dict]:
        return self._rows("ts >= %s AND ts < %s AND (%s::text IS NULL OR host = %s)",
                          (start, end, host, host))

    def not_bench_before(self, host: str, gpu_uuid: str, start: datetime,
                         end: datetime) -> list[dict]:
        """The GPU's rows in [start, end) not tagged bench."""
        return self._rows("ts >= %s AND ts < %s AND host = %s AND gpu_uuid = %s"
                          " AND status_tag IS DISTINCT FROM %s",
                          (start, end, host, gpu_uuid, BENCH), order="ts")

    def after(self, host: str, gpu_uuid: str, start: datetime, end: datetime) -> list[dict]:
        """The GPU's rows in (start, end]."""
        return self._rows("ts > %s AND ts <= %s AND host = %s AND gpu_uuid = %s",
                          (start, end, host, gpu_uuid), order="ts")


def build_reports(conn, selections: Sequence[Selection]) -> list[RunReport]:
    rows = TelemetryRows(conn)
    return [build_report(rows, selection) for selection in selections]


def fetch_reports(selections: Sequence[Selection]) -> list[RunReport]:
    """Connect (the PG* configuration), read and analyse every selection."""
    with reading() as conn:
        return build_reports(conn, selections)
