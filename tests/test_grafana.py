"""grafana/gpu-telemetry.json: a valid dashboard whose every query runs against the real schema.

Grafana never sends the dashboard's SQL as written: the browser first replaces template
variables (`$host`, `${gpu:sqlstring}`, `$__interval`, ...), then the PostgreSQL data source's
backend expands its macros (`$__timeFilter(ts)`, `$__timeGroupAlias(ts, 1m)`, ...).
`grafana_sql()` below does both the way Grafana 10/11 does (packages/grafana-sql
SqlDatasource.interpolateVariable, pkg/tsdb/sqleng Interpolate and
pkg/tsdb/grafana-postgresql-datasource/macros.go), and refuses a query in which anything that
looks like a variable or a macro is left over, so a macro it does not know is caught here
rather than in front of the operator.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import REPO_ROOT, Database, conninfo

GRAFANA_DIR = REPO_ROOT / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "gpu-telemetry.json"
PROVISIONING = GRAFANA_DIR / "provisioning"
DS_TYPE = "grafana-postgresql-datasource"
DS_REF = {"type": DS_TYPE, "uid": "${DS_POSTGRES}"}
FORMATS = {"time_series", "table"}

_numbers = itertools.count(1)


# --- Grafana's substitution ------------------------------------------------------------------

class GrafanaSqlError(ValueError):
    """What Grafana would refuse: an unknown macro, a bad interval, a variable left over."""


@dataclass(frozen=True)
class Request:
    """What one panel refresh gives the query: time range, interval, variable values."""

    time_from: datetime
    time_to: datetime
    interval: timedelta
    variables: dict[str, list[str]]


def _rfc3339nano(moment: datetime) -> str:
    """Go's time.RFC3339Nano in UTC: trailing zeros of the fraction dropped, 'Z' suffix."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _format_interval(interval: timedelta) -> str:
    """gtime.FormatInterval: the largest whole unit (1d, 2h, 1m, 30s, 500ms)."""
    ms = round(interval.total_seconds() * 1000)
    for unit, size in (("y", 31536000000), ("w", 604800000), ("d", 86400000),
                       ("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


_INTERVAL_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
                   "M": 2592000, "y": 31536000}


def _parse_interval(text: str) -> float:
    """gtime.ParseInterval (quotes already trimmed): '1m' -> 60.0 seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|M|y)", text.strip())
    if not match:
        raise GrafanaSqlError(f"error parsing interval {text!r}")
    return float(match.group(1)) * _INTERVAL_UNITS[match.group(2)]


def _go_float(value: float) -> str:
    """Go's %v of a float64: 60 -> '60', 0.5 -> '0.5'."""
    return format(value, "g") if value != int(value) or abs(value) >= 1e21 else str(int(value))


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format_variable(values: list[str], fmt: str | None) -> str:
    """A multi-value (or All) variable as Grafana's templateSrv writes it for SQL."""
    if fmt is None or fmt == "sqlstring":  # the SQL data source's own interpolateVariable
        return ",".join(_quote_literal(v) for v in values)
    formats = {
        "singlequote": lambda: ",".join("'" + v.replace("'", "\\'") + "'" for v in values),
        "doublequote": lambda: ",".join('"' + v.replace('"', '\\"') + '"' for v in values),
        "csv": lambda: ",".join(values),
        "raw": lambda: ",".join(values),
        "text": lambda: " + ".join(values),
        "pipe": lambda: "|".join(values),
        "json": lambda: json.dumps(values),
    }
    if fmt not in formats:
        raise GrafanaSqlError(f"variable format {fmt!r} is not supported by this test")
    return formats[fmt]()


# templateSrv's variable syntax: $name, [[name]], [[name:fmt]], ${name}, ${name:fmt}
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")  # macros.go sExpr
_LEFTOVER = re.compile(r"\$\{?\w|\[\[\w")


def _frontend(text: str, request: Request) -> str:
    """templateSrv.replace with the SQL data source's interpolateVariable."""
    builtins = {
        "__interval": _format_interval(request.interval),
        "__interval_ms": str(round(request.interval.total_seconds() * 1000)),
        "__from": str(int(request.time_from.timestamp() * 1000)),
        "__to": str(int(request.time_to.timestamp() * 1000)),
        "__range_s": str(int((request.time_to - request.time_from).total_seconds())),
        "__range_ms": str(int((request.time_to - request.time_from).total_seconds() * 1000)),
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(5)
        if name in request.variables:
            return _format_variable(request.variables[name], fmt)
        if name in builtins and fmt is None:
            return builtins[name]
        return match.group(0)  # not a variable (a macro, or unknown): left as it is

    return _VARIABLE.sub(replace, text)


def _backend(text: str, request: Request) -> str:
    """sqleng.Interpolate, then the PostgreSQL macro engine (macros.go)."""
    start, end = request.time_from.astimezone(UTC), request.time_to.astimezone(UTC)
    text = text.replace("$__interval_ms",
                        str(round(request.interval.total_seconds() * 1000)))
    text = text.replace("$__interval", _format_interval(request.interval))
    text = text.replace("$__unixEpochFrom()", str(int(start.timestamp())))
    text = text.replace("$__unixEpochTo()", str(int(end.timestamp())))

    def group(args: list[str], name: str) -> str:
        if len(args) < 2:
            raise GrafanaSqlError(f"macro {name} needs time column and interval")
        seconds = _go_float(_parse_interval(args[1].strip("'")))
        if len(args) == 3 and not re.fullmatch(r"NULL|previous|-?\d+(\.\d+)?", args[2]):
            raise GrafanaSqlError(f"macro {name}: bad fill value {args[2]!r}")
        if name == "__unixEpochGroup":
            return f"floor(({args[0]})/{seconds})*{seconds}"
        return f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"

    def evaluate(name: str, args: list[str]) -> str:
        column = args[0]
        nanos = (int(start.timestamp()) * 10**9 + start.microsecond * 1000,
                 int(end.timestamp()) * 10**9 + end.microsecond * 1000)
        simple = {
            "__time": lambda: f'{column} AS "time"',
            "__timeEpoch": lambda: f'extract(epoch from {column}) as "time"',
            "__timeFilter": lambda: (f"{column} BETWEEN '{_rfc3339nano(start)}'"
                                     f" AND '{_rfc3339nano(end)}'"),
            "__timeFrom": lambda: f"'{_rfc3339nano(start)}'",
            "__timeTo": lambda: f"'{_rfc3339nano(end)}'",
            "__timeGroup": lambda: group(args, name),
            "__timeGroupAlias": lambda: group(args, "__timeGroup") + ' AS "time"',
            "__unixEpochFilter": lambda: (f"{column} >= {int(start.timestamp())}"
                                          f" AND {column} <= {int(end.timestamp())}"),
            "__unixEpochNanoFilter": lambda: (f"{column} >= {nanos[0]}"
                                              f" AND {column} <= {nanos[1]}"),
            "__unixEpochNanoFrom": lambda: str(nanos[0]),
            "__unixEpochNanoTo": lambda: str(nanos[1]),
            "__unixEpochGroup": lambda: group(args, name),
            "__unixEpochGroupAlias": lambda: group(args, "__unixEpochGroup") + ' AS "time"',
        }
        if name not in simple:
            raise GrafanaSqlError(f"unknown macro {name!r}")
        if name in ("__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter",
                    "__unixEpochNanoFilter") and not column:
            raise GrafanaSqlError(f"missing time column argument for macro {name}")
        return simple[name]()

    def replace(match: re.Match[str]) -> str:
        name, args = match.group(1), [a.strip(" ") for a in match.group(2).split(",")]
        # macros.go: "$__timeGroup(...)," is the pre-5.3 spelling of $__timeGroupAlias
        if name == "__timeGroup" and text[match.end():match.end() + 1] == ",":
            name = "__timeGroupAlias"
        return evaluate(name, args)

    return _MACRO.sub(replace, text)


def grafana_sql(text: str, request: Request) -> str:
    """The SQL PostgreSQL receives when Grafana runs `text` for `request`."""
    final = _backend(_frontend(text, request), request)
    leftover = _LEFTOVER.search(final)
    if leftover:
        raise GrafanaSqlError(f"left unsubstituted at {final[leftover.start():][:40]!r}")
    return final


# --- the dashboard ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    where: str
    sql: str
    format: str


def _walk(node: object, path: str = "") -> Iterator[tuple[str, object]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def load_dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def dashboard_queries(dashboard: dict) -> list[Query]:
    """Every SQL string in the dashboard: targets (panels, annotations) and variable queries."""
    queries = []
    for path, node in _walk(dashboard):
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("rawSql"), str):
            queries.append(Query(path, node["rawSql"], node.get("format", "time_series")))
        if node.get("type") == "query" and "name" in node and ".templating" in path:
            for key in ("query", "definition"):
                value = node.get(key)
                if isinstance(value, dict):
                    value = value.get("rawSql") or value.get("query")
                if isinstance(value, str) and value.strip():
                    queries.append(Query(f"{path}.{key}", value, "table"))
    return queries


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return load_dashboard()


def test_dashboard_is_valid_json_with_its_identity(dashboard):
    assert dashboard["uid"] == "gpu-telemetry"
    assert dashboard["title"] == "GPU telemetry"
    assert dashboard["time"] == {"from": "now-6h", "to": "now"}
    assert dashboard["refresh"] == "30s"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_POSTGRES"]["type"] == "datasource"
    assert inputs["DS_POSTGRES"]["pluginId"] == DS_TYPE
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_the_panels_the_operator_needs_are_there(dashboard):
    sql_by_title = {panel["title"]: " ".join(t["rawSql"] for t in panel.get("targets", []))
                    for panel in panels(dashboard)}
    everything = " ".join(sql_by_title.values())
    for column in ("temp_c", "memory_temp_c", "temp_slowdown_c", "temp_shutdown_c",
                   "temp_target_c", "power_draw_w", "power_limit_w", "clocks_sm_mhz",
                   "clocks_mem_mhz", "clocks_max_sm_mhz", "fan_pct", "util_gpu_pct",
                   "util_mem_pct", "util_enc_pct", "util_dec_pct", "mem_used_mib",
                   "mem_total_mib", "throttle_hw_thermal", "throttle_sw_thermal",
                   "throttle_sw_power_cap", "throttle_hw_slowdown", "throttle_hw_power_brake",
                   "pcie_gen_cur", "pcie_width_cur", "pcie_tx_kbps", "pcie_rx_kbps",
                   "status_tag", "status_memo", "run_id", "collector_events"):
        assert re.search(rf"\b{column}\b", everything), f"no panel shows {column}"
    types = {panel["title"]: panel["type"] for panel in panels(dashboard)}
    assert types["Status timeline"] == "state-timeline"
    assert types["Collector events"] == "table"
    assert types["Age of the last sample"] == "stat"


def test_every_datasource_reference_is_the_imported_postgres(dashboard):
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == DS_REF, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == DS_REF, panel["title"]
    references = [(path, node["datasource"]) for path, node in _walk(dashboard)
                  if isinstance(node, dict) and "datasource" in node]
    assert references
    for path, reference in references:
        assert reference == DS_REF, path


def test_targets_are_raw_sql_in_code_mode(dashboard):
    targets = [node for _, node in _walk(dashboard)
               if isinstance(node, dict) and "rawSql" in node]
    assert len(targets) >= 14
    for target in targets:
        assert target["rawQuery"] is True and target["editorMode"] == "code", target["refId"]
        assert target["format"] in FORMATS, target["refId"]
    for panel in panels(dashboard):
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_host_and_gpu_variables(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"host", "gpu"} <= variables.keys()
    for name in ("host", "gpu"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DS_REF
        assert variable["multi"] is True and variable["includeAll"] is True
        assert variable["refresh"] == 2, "options must follow the time range"
        assert variable["query"] == variable["definition"]
    assert "$__timeFilter(ts)" in variables["host"]["query"]
    assert "__text" in variables["gpu"]["query"] and "__value" in variables["gpu"]["query"]
    assert "$host" in variables["gpu"]["query"]


def test_panels_filter_by_the_variables_and_the_time_range(dashboard):
    host_index = next(i for i, v in enumerate(dashboard["templating"]["list"])
                      if v["name"] == "host")
    for query in dashboard_queries(dashboard):
        assert "$__timeFilter(ts)" in query.sql or "now()" in query.sql, query.where
        if not query.where.startswith(f".templating.list[{host_index}]"):
            assert "$host" in query.sql, query.where
    for panel in panels(dashboard):
        per_gpu = panel["title"] not in ("Age of the last sample", "Status timeline",
                                         "Status changes and runs", "Collector events",
                                         "Open alerts")
        for target in panel.get("targets", []):
            assert ("gpu_uuid IN ($gpu)" in target["rawSql"]) == per_gpu, panel["title"]
            if target["format"] == "time_series" and "now()" not in target["rawSql"]:
                assert "$__timeGroupAlias(ts, $__interval)" in target["rawSql"], panel["title"]


# --- the substitution itself -----------------------------------------------------------------

REQUEST = Request(datetime(2026, 1, 4, 0, 0, tzinfo=UTC),
                  datetime(2026, 1, 4, 6, 0, 0, 500000, tzinfo=UTC),
                  timedelta(minutes=1), {"host": ["host-a", "o'host"], "gpu": ["GPU-1"]})


@pytest.mark.parametrize(("written", "sent"), [
    ("$__timeFilter(ts)",
     "ts BETWEEN '2026-01-04T00:00:00Z' AND '2026-01-04T06:00:00.5Z'"),
    ("$__timeFrom() $__timeTo()", "'2026-01-04T00:00:00Z' '2026-01-04T06:00:00.5Z'"),
    ("$__timeGroupAlias(ts, $__interval)", 'floor(extract(epoch from ts)/60)*60 AS "time"'),
    ("$__timeGroup(ts, '5m', NULL)", "floor(extract(epoch from ts)/300)*300"),
    ("$__timeGroup(ts, 1h), x", 'floor(extract(epoch from ts)/3600)*3600 AS "time", x'),
    ("$__time(ts)", 'ts AS "time"'),
    ("$__timeEpoch(ts)", 'extract(epoch from ts) as "time"'),
    ("$__unixEpochFilter(t)", "t >= 1767484800 AND t <= 1767506400"),
    ("$__unixEpochGroupAlias(t, 30s)", 'floor((t)/30)*30 AS "time"'),
    ("$__interval $__interval_ms", "1m 60000"),
    ("host IN ($host)", "host IN ('host-a','o''host')"),
    ("host IN (${host})", "host IN ('host-a','o''host')"),
    ("host IN (${host:sqlstring})", "host IN ('host-a','o''host')"),
    ("[[gpu]] ${gpu:csv}", "'GPU-1' GPU-1"),
    ("'^a$'", "'^a$'"),
])
def test_macros_and_variables_are_substituted_as_grafana_does(written, sent):
    assert grafana_sql(written, REQUEST) == sent


@pytest.mark.parametrize("written", ["$__timeBucket(ts)", "$nosuchvariable", "${region}",
                                     "$__timeGroup(ts, soon)", "${host:percentencode}",
                                     "[[zone]]"])
def test_a_macro_or_variable_left_over_fails(written):
    with pytest.raises(GrafanaSqlError):
        grafana_sql(written, REQUEST)


# --- the queries against the real schema -----------------------------------------------------

HOSTS = ["host-a", "host-b", "host-c"]
GPUS = {"GPU-a0": "host-a", "GPU-b0": "host-b", "GPU-b1": "host-b"}

_SAMPLES = """
INSERT INTO telemetry.gpu_telemetry (
    ts, host, gpu_uuid, pci_bus_id, gpu_name, gpu_index, status_tag, status_memo, run_id,
    temp_c, memory_temp_c, temp_slowdown_c, temp_shutdown_c, temp_target_c,
    power_draw_w, power_limit_w, fan_pct, pstate, util_gpu_pct, util_mem_pct, util_enc_pct,
    util_dec_pct, mem_used_mib, mem_total_mib, clocks_gr_mhz, clocks_sm_mhz, clocks_mem_mhz,
    clocks_max_sm_mhz, pcie_gen_cur, pcie_gen_max, pcie_width_cur, pcie_width_max,
    pcie_tx_kbps, pcie_rx_kbps, pcie_replay_count, throttle_gpu_idle, throttle_sw_power_cap,
    throttle_hw_slowdown, throttle_hw_thermal, throttle_hw_power_brake, throttle_sw_thermal,
    throttle_sw_power_cap_us, throttle_sw_thermal_us, throttle_hw_thermal_us,
    throttle_hw_power_brake_us, ecc_volatile_corrected, ecc_volatile_uncorrected,
    retired_pages_sbe, retired_pages_dbe, driver_version)
SELECT
    now() - (g * interval '1 minute') - gpu.age, gpu.host, gpu.uuid, gpu.bus, gpu.name,
    gpu.idx,
    CASE WHEN gpu.host = 'host-b' AND g > 150 THEN NULL
         WHEN g < 60 THEN 'bench' WHEN g < 90 THEN 'idle' ELSE 'prod' END,
    CASE WHEN g < 60 THEN 'gpu-burn (max workload) fan=25%' END,
    CASE WHEN g < 60 THEN 'gpuburn-20260104-000000' END,
    40 + (180 - g) / 4, CASE WHEN gpu.fan IS NULL THEN NULL ELSE 50 + (180 - g) / 5 END,
    90, 95, 83,
    50 + (180 - g), 250, gpu.fan, 'P0', least(100, 180 - g), 40, 0, 0,
    10000 + g, 24576, 1300, 1300 - (g % 15) * 10, 3615, 1531,
    3, 3, 16, 16, 1000 * g, 2000 * g, 0,
    false, g % 7 = 0, false, g % 15 = 0, false, g % 30 = 0,
    CASE WHEN gpu.fan IS NOT NULL THEN (180 - g) * 1000000::bigint END,
    CASE WHEN gpu.fan IS NOT NULL THEN (180 - g) * 500000::bigint END,
    CASE WHEN gpu.fan IS NOT NULL THEN (180 - g) * 250000::bigint END,
    CASE WHEN gpu.fan IS NOT NULL THEN 0::bigint END,
    0, 0, 0, 0, '580.95.05'
FROM generate_series(0, 179) AS g,
     (VALUES ('host-a', 'GPU-a0', '00000000:01:00.0', 'Tesla P40', 0, NULL::smallint,
              interval '0'),
             ('host-b', 'GPU-b0', '00000000:01:00.0', 'NVIDIA GeForce RTX 2080', 0, 30,
              interval '0'),
             ('host-b', 'GPU-b1', '00000000:02:00.0', 'NVIDIA GeForce RTX 2080', 1, 35,
              interval '0'),
             -- host-c's GPU fell off the bus two days ago: samples only before the range
             ('host-c', 'GPU-c0', '00000000:05:00.0', 'Tesla P40', 0, NULL, interval '2 days')
     ) AS gpu(host, uuid, bus, name, idx, fan, age)
"""

_EVENTS = """
INSERT INTO telemetry.collector_events (ts, host, kind, detail, gpu_uuid, data) VALUES
    (now() - interval '95 minutes', 'host-a', 'outage_start', 'database unreachable', NULL,
     NULL),
    (now() - interval '90 minutes', 'host-a', 'outage_end', '60 samples spooled', NULL,
     '{"spooled": 60}'),
    (now() - interval '30 minutes', 'host-c', 'source_failed',
     'Unable to determine the device handle for GPU0000:05:00.0: GPU is lost.  Reboot the '
     'system to recover this GPU', 'GPU-c0', '{"exit_code": 15}'),
    (now() - interval '20 minutes', 'host-b', 'spool_flushed', '12 samples delivered', NULL,
     '{"delivered": 12}'),
    (now() - interval '3 days', 'host-b', 'gpu_missing', 'out of the range', 'GPU-b1', NULL),
    (now() - interval '40 minutes', 'host-a', 'alert_gpu_hot',
     'host-a: Tesla P40 00000000:01:00.0 hot: 86 °C', 'GPU-a0',
     '{"alert": "gpu_hot", "state": "firing", "since": "2026-01-04T00:00:00+00:00"}'),
    (now() - interval '35 minutes', 'host-a', 'alert_gpu_lost', 'host-a: GPU lost', 'GPU-a0',
     '{"alert": "gpu_lost", "state": "firing"}'),
    (now() - interval '34 minutes', 'host-a', 'alert_gpu_lost', 'host-a: GPU back', 'GPU-a0',
     '{"alert": "gpu_lost", "state": "resolved"}'),
    (now() - interval '36 minutes', 'host-a', 'xid',
     'host-a: Xid 79 on 00000000:01:00.0: GPU has fallen off the bus', 'GPU-a0',
     '{"alert": "xid", "state": "firing", "xid": 79}'),
    (now() - interval '10 minutes', 'host-b', 'alert_pcie_errors',
     'host-b: PCIe errors on 00000000:02:00.0', 'GPU-b1',
     '{"alert": "pcie_errors", "state": "firing"}')
"""


def insert_telemetry(database: Database) -> None:
    with database.connect() as conn:
        conn.execute(_SAMPLES)
        conn.execute(_EVENTS)


def current_request(**variables: list[str]) -> Request:
    to = datetime.now(UTC) + timedelta(seconds=1)
    return Request(to - timedelta(hours=6), to, timedelta(minutes=1),
                   {"host": HOSTS, "gpu": list(GPUS), **variables})


def run_read_only(conn: psycopg.Connection, text: str) -> tuple[list[str], list[tuple]]:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    conn.read_only = True
    with conn.transaction(), conn.cursor() as cur:
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        cur.execute(text)
        assert cur.description is not None, "the query returns no result set"
        return [column.name for column in cur.description], cur.fetchall()


def check_shape(query: Query, columns: list[str], rows: list[tuple]) -> None:
    """What Grafana needs of a time-series result: a `time` column, numeric values."""
    if query.format != "time_series":
        return
    assert "time" in columns, f"{query.where}: no time column in {columns}"
    for index, name in enumerate(columns):
        if name in ("time", "metric"):
            continue
        for row in rows:
            value = row[index]
            assert value is None or isinstance(value, int | float | Decimal), (
                f"{query.where}: column {name!r} is {type(value).__name__}, not a number")


def run_every_query(conn: psycopg.Connection, dashboard: dict,
                    request: Request) -> dict[str, tuple[list[str], list[tuple]]]:
    results = {}
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 16
    for query in queries:
        text = grafana_sql(query.sql, request)
        try:
            columns, rows = run_read_only(conn, text)
        except psycopg.Error as exc:
            pytest.fail(f"{query.where} fails: {exc}\n{text}")
        assert rows, f"{query.where} returns no rows:\n{text}"
        check_shape(query, columns, rows)
        results[query.where] = (columns, rows)
    return results


def _result_of(results: dict, dashboard: dict, title: str) -> tuple[list[str], list[tuple]]:
    index = next(i for i, panel in enumerate(dashboard["panels"]) if panel["title"] == title)
    return results[f".panels[{index}].targets[0]"]


def test_every_query_runs_against_the_schema(db: Database, dashboard):
    insert_telemetry(db)
    with psycopg.connect(**conninfo(db.env)) as conn:
        results = run_every_query(conn, dashboard, current_request())

    variables = {v["name"]: i for i, v in enumerate(dashboard["templating"]["list"])}
    _, hosts = results[f".templating.list[{variables['host']}].query"]
    assert [row[0] for row in hosts] == HOSTS, "hosts with samples or events in the range"
    columns, gpus = results[f".templating.list[{variables['gpu']}].query"]
    assert columns == ["__text", "__value"]
    assert sorted(row[1] for row in gpus) == sorted(GPUS)
    assert ("Tesla P40 00000000:01:00.0 (host-a)", "GPU-a0") in gpus

    columns, rows = _result_of(results, dashboard, "Temperature")
    assert {"time", "metric", "core", "slowdown", "shutdown", "target"} <= set(columns)
    assert {row[columns.index("metric")] for row in rows} == {
        "host-a Tesla P40 00000000:01:00.0", "host-b NVIDIA GeForce RTX 2080 00000000:01:00.0",
        "host-b NVIDIA GeForce RTX 2080 00000000:02:00.0"}
    assert [row[0] for row in rows] == sorted(row[0] for row in rows), "ordered by time"

    columns, rows = _result_of(results, dashboard, "Throttle reasons")
    assert any(row[columns.index("hw thermal")] == 1 for row in rows)

    columns, rows = _result_of(results, dashboard, "Status timeline")
    codes = {row[columns.index("status")] for row in rows}
    assert {0, 1, 2, 3} <= codes, "untagged, idle, prod and bench all appear"

    columns, rows = _result_of(results, dashboard, "Status changes and runs")
    assert any(row[columns.index("run_id")] == "gpuburn-20260104-000000" for row in rows)

    columns, rows = _result_of(results, dashboard, "Collector events")
    assert sorted(row[columns.index("kind")] for row in rows) == [
        "alert_gpu_hot", "alert_gpu_lost", "alert_gpu_lost", "alert_pcie_errors", "outage_end",
        "outage_start", "source_failed", "spool_flushed", "xid"], "only the range's"

    columns, rows = _result_of(results, dashboard, "Open alerts")
    assert sorted((row[columns.index("host")], row[columns.index("alert")]) for row in rows) == [
        ("host-a", "gpu_hot"), ("host-b", "pcie_errors")], "gpu_lost resolved: not open"

    columns, rows = _result_of(results, dashboard, "Age of the last sample")
    ages = {row[columns.index("metric")]: row[columns.index("age")] for row in rows}
    assert ages["host-a"] < 120 and ages["host-b"] < 120
    assert ages["host-c"] > 86400, "a host whose GPU is lost shows how long ago"

    columns, rows = _result_of(results, dashboard, "Throttled time (v13 counters)")
    assert any(row[columns.index("hw thermal")] for row in rows)


def test_queries_run_for_one_host_and_one_gpu_at_a_long_interval(db: Database, dashboard):
    insert_telemetry(db)
    request = current_request(host=["host-b"], gpu=["GPU-b1"])
    request = Request(request.time_from, request.time_to, timedelta(minutes=5),
                      request.variables)
    with psycopg.connect(**conninfo(db.env)) as conn:
        results = run_every_query(conn, dashboard, request)
    columns, rows = _result_of(results, dashboard, "Power draw vs limit")
    assert {row[columns.index("metric")] for row in rows} == {
        "host-b NVIDIA GeForce RTX 2080 00000000:02:00.0"}
    assert len(rows) <= 37, "a long interval reduces the rows in SQL"


# --- the read-only role ----------------------------------------------------------------------

@pytest.fixture
def reader_role(db: Database) -> Iterator[str]:
    """A cluster-wide role name unique to this test (roles outlive databases), dropped after."""
    name = f"gt_grafana_reader_{os.getpid()}_{next(_numbers)}"
    yield name
    with db.connect() as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_the_read_only_role_runs_every_query(db: Database, dashboard, reader_role: str,
                                             tmp_path: Path):
    insert_telemetry(db)
    password = "grafana-reader-secret"
    empty_env = tmp_path / "empty.env"
    empty_env.touch()
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("PG", "WRITER_PGPASSWORD", "READER_PGPASSWORD", "PSQL"))}
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "bin" / "init_db.sh"), "--env", str(empty_env),
         "--reader-role", reader_role],
        env={**environ, **db.env, "READER_PGPASSWORD": password}, cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

    with psycopg.connect(**conninfo(db.env, user=reader_role, password=password)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (reader_role,)
        run_every_query(conn, dashboard, current_request())
        conn.rollback()
        conn.read_only = False
        with pytest.raises((psycopg.errors.ReadOnlySqlTransaction,
                            psycopg.errors.InsufficientPrivilege)):
            conn.execute("DELETE FROM telemetry.gpu_samples")


# --- import and provisioning -----------------------------------------------------------------

def _yaml_value(text: str, key: str) -> str:
    match = re.search(rf"^\s*-?\s*{key}:\s*(\S.*?)\s*$", text, re.M)
    assert match, f"{key} not found"
    return match.group(1).strip("'\"")


def test_provisioning_examples_match_the_dashboard(dashboard):
    datasource = (PROVISIONING / "datasources" / "gpu-telemetry.yaml").read_text()
    providers = (PROVISIONING / "dashboards" / "gpu-telemetry.yaml").read_text()
    readme = (GRAFANA_DIR / "README.md").read_text()

    assert _yaml_value(datasource, "type") == DS_TYPE
    assert _yaml_value(datasource, "user") == "grafana_reader"
    assert "READER_PGPASSWORD" in datasource
    for key in ("postgresVersion", "sslmode", "database"):
        assert re.search(rf"^\s+{key}:", datasource, re.M), key
    uid = _yaml_value(datasource, "uid")
    assert _yaml_value(providers, "type") == "file"
    assert _yaml_value(providers, "path")

    # The README's sed line turns the import file into a provisionable one.
    sed = re.search(r"sed (['\"])(s[^'\"]+)\1", readme)
    assert sed, "README shows the sed that replaces ${DS_POSTGRES}"
    assert uid in sed.group(2)
    result = subprocess.run(["sed", sed.group(2), str(DASHBOARD_FILE)], capture_output=True,
                            text=True, check=True)
    provisioned = json.loads(result.stdout)
    assert "${DS_POSTGRES}" not in result.stdout
    for path, node in _walk(provisioned):
        if isinstance(node, dict) and "datasource" in node:
            assert node["datasource"] == {"type": DS_TYPE, "uid": uid}, path
    assert "--reader-role grafana_reader" in readme
    assert "Import" in readme
