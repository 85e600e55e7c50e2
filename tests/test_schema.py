"""gpu_telemetry.schema against the database bin/init_db.sh builds: every column of the telemetry
table and of the one-minute rollup, its type and its COMMENT, in both directions."""

from __future__ import annotations

import re

import pytest

from gpu_telemetry import schema
from gpu_telemetry.collector.alerts import EVENT_KINDS
from gpu_telemetry.schema import Column
from tests.helpers import REPO_ROOT

# information_schema spells some types out; the schema uses PostgreSQL's short names.
_TYPE_NAMES = {"timestamp with time zone": "timestamptz"}


def catalogue(conn, table: str) -> dict[str, tuple[str, str | None]]:
    """Column name -> (type, COMMENT) of a table (or view), as the database has them."""
    table_schema, table_name = table.split(".")
    rows = conn.execute(
        "SELECT c.column_name, c.data_type, d.description"
        " FROM information_schema.columns AS c"
        " LEFT JOIN pg_catalog.pg_description AS d"
        "   ON d.objoid = format('%%I.%%I', c.table_schema, c.table_name)::regclass"
        "   AND d.classoid = 'pg_catalog.pg_class'::regclass"
        "   AND d.objsubid = c.ordinal_position"
        " WHERE c.table_schema = %s AND c.table_name = %s ORDER BY c.ordinal_position",
        (table_schema, table_name)).fetchall()
    assert rows, f"{table} has no columns"
    return {name: (_TYPE_NAMES.get(data_type, data_type), comment)
            for name, data_type, comment in rows}


def differences(expected: tuple[Column, ...], found: dict[str, tuple[str, str | None]]
                ) -> list[str]:
    """One line per disagreement between the schema module and the database."""
    lines = []
    wanted = {column.name: column for column in expected}
    for name in found.keys() - wanted.keys():
        lines.append(f"{name}: in the database, not in gpu_telemetry.schema")
    for name in wanted.keys() - found.keys():
        lines.append(f"{name}: in gpu_telemetry.schema, not in the database "
                     f"(a migration needs: {schema.migration_sql(name).strip()!r})"
                     if name in schema.BY_NAME else
                     f"{name}: in gpu_telemetry.schema, not in the database")
    for name in sorted(wanted.keys() & found.keys()):
        column, (sql_type, comment) = wanted[name], found[name]
        if column.sql_type != sql_type:
            lines.append(f"{name}: type {column.sql_type} in the schema, {sql_type} in the "
                         "database")
        if column.comment != comment:
            lines.append(f"{name}: COMMENT {column.comment!r} in the schema, {comment!r} in the "
                         "database")
    return sorted(lines)


def test_the_telemetry_table_is_the_schema(db):
    with db.connect() as conn:
        assert differences(schema.ROW, catalogue(conn, schema.TABLE)) == []


def test_the_rollup_table_is_the_schema(db):
    with db.connect() as conn:
        assert differences(schema.rollup_columns(), catalogue(conn, schema.ROLLUP_TABLE)) == []


def test_a_column_only_in_the_database_is_found(db):
    with db.connect() as conn:
        conn.execute("ALTER TABLE telemetry.gpu_samples ADD COLUMN fan2_pct smallint")
        conn.execute(schema.view_sql((*schema.VIEW_COLUMNS, "fan2_pct")))
        found = differences(schema.ROW, catalogue(conn, schema.TABLE))
    assert found == ["fan2_pct: in the database, not in gpu_telemetry.schema"]


@pytest.mark.parametrize("name", ["persistence_mode", "fan_pct"])
def test_a_column_only_in_the_schema_is_found_and_its_migration_fixes_it(db, name,
                                                                         monkeypatch):
    rolled_up = name == "fan_pct"
    # As if the field had just been added: the last column of the view.
    monkeypatch.setattr(schema, "VIEW_COLUMNS",
                        (*(c for c in schema.VIEW_COLUMNS if c != name), name))
    with db.connect() as conn:
        conn.execute(f"DROP VIEW {schema.TABLE}")
        conn.execute(f"ALTER TABLE telemetry.gpu_samples DROP COLUMN {name}")
        conn.execute(schema.view_sql(tuple(c for c in schema.VIEW_COLUMNS if c != name)))
        if rolled_up:
            conn.execute(f"ALTER TABLE {schema.ROLLUP_TABLE} DROP COLUMN {name}_min,"
                         f" DROP COLUMN {name}_max, DROP COLUMN {name}_sum, DROP COLUMN {name}_n")
        found = differences(schema.ROW, catalogue(conn, schema.TABLE))
        assert len(found) == 1 and found[0].startswith(f"{name}: in gpu_telemetry.schema")
        rollup = differences(schema.rollup_columns(), catalogue(conn, schema.ROLLUP_TABLE))
        assert len(rollup) == (4 if rolled_up else 0)
        conn.execute(schema.migration_sql(name))
        assert differences(schema.ROW, catalogue(conn, schema.TABLE)) == []
        assert differences(schema.rollup_columns(), catalogue(conn, schema.ROLLUP_TABLE)) == []


def test_the_view_answers_select_star_in_the_order_of_the_table_it_replaced(db):
    with db.connect() as conn:
        assert tuple(catalogue(conn, schema.TABLE)) == schema.VIEW_COLUMNS


def test_every_column_is_stored_in_one_narrow_table(db):
    with db.connect() as conn:
        samples = set(catalogue(conn, "telemetry.gpu_samples"))
        gpus = set(catalogue(conn, "telemetry.gpus"))
        statuses = set(catalogue(conn, "telemetry.statuses"))
    assert samples == {*schema.STORED_IN_SAMPLES, "gpu_id", "status_id"}
    assert set(schema.STORED_IN_GPUS) <= gpus and set(schema.STORED_IN_STATUSES) <= statuses


def test_a_changed_type_or_comment_is_found(db):
    with db.connect() as conn:
        conn.execute(f"COMMENT ON COLUMN {schema.TABLE}.temp_c IS 'GPU temperature'")
        conn.execute(f"ALTER TABLE {schema.ROLLUP_TABLE} ALTER COLUMN fan_pct_max TYPE integer")
        table = differences(schema.ROW, catalogue(conn, schema.TABLE))
        rollup = differences(schema.rollup_columns(), catalogue(conn, schema.ROLLUP_TABLE))
    assert table == ["temp_c: COMMENT 'GPU core temperature, °C' in the schema, "
                     "'GPU temperature' in the database"]
    assert rollup == ["fan_pct_max: type smallint in the schema, integer in the database"]


# Where the package records a collector event: Event("kind", ...), {"kind": "kind", ...}, and a
# function's `kind: str = "kind"` default (flush.record_flush).
_RECORDED_KIND = re.compile(r'\bEvent\(\s*"(\w+)"|"kind":\s*"(\w+)"|\bkind: str = "(\w+)"')


def recorded_event_kinds() -> set[str]:
    """Every collector_events kind the source of gpu_telemetry records."""
    kinds: set[str] = set()
    for path in (REPO_ROOT / "gpu_telemetry").rglob("*.py"):
        for match in _RECORDED_KIND.finditer(path.read_text(encoding="utf-8")):
            kinds.update(group for group in match.groups() if group)
    return kinds | set(EVENT_KINDS.values())  # the alerts' kinds, made from their names


def test_the_kind_comment_names_every_kind_the_code_records(db):
    """Whoever reads the table (Grafana, psql) learns the kinds from the COMMENT; a kind the
    code records and the comment lacks, or one the code no longer records, is a migration
    to write."""
    recorded = recorded_event_kinds()
    assert {"source_failed", "outage_reason", "spool_flushed", "spool_dropped"} <= recorded, (
        "the search for recorded kinds finds none of the known ones: fix _RECORDED_KIND")
    with db.connect() as conn:
        _, comment = catalogue(conn, "telemetry.collector_events")["kind"]
    assert comment is not None
    assert sorted(comment.split(", ")) == sorted(recorded)


# --------------------------------------------------------------- the module on its own

_UNIT_SUFFIXES = {"_c": "°C", "_w": "W", "_pct": "%", "_mib": "MiB", "_mhz": "MHz",
                  "_kbps": "KB/s", "_us": "µs"}


@pytest.mark.parametrize("column", schema.GPU_FIELDS, ids=lambda c: c.name)
def test_a_unit_is_in_the_name(column):
    suffix = next((s for s in _UNIT_SUFFIXES if column.name.endswith(s)), None)
    assert column.unit == (_UNIT_SUFFIXES[suffix] if suffix else None)
    assert column.comment


@pytest.mark.parametrize("column", schema.GPU_FIELDS, ids=lambda c: c.name)
def test_every_gpu_field_says_where_it_comes_from(column):
    if column.kind == "position":
        assert not column.paths
    elif column.kind == "sum":
        assert column.paths and all(isinstance(group, tuple) and group for group in column.paths)
    else:
        assert column.paths and all(isinstance(path, str) for path in column.paths)
        assert all(re.fullmatch(r"@?[a-z0-9_]+(/[a-z0-9_]+)*", path) for path in column.paths)


def test_power_draw_prefers_instant_then_power_draw_then_average_in_both_sections():
    assert schema.BY_NAME["power_draw_w"].paths == (
        "gpu_power_readings/instant_power_draw", "power_readings/instant_power_draw",
        "gpu_power_readings/power_draw", "power_readings/power_draw",
        "gpu_power_readings/average_power_draw", "power_readings/average_power_draw")


def test_the_rollup_keeps_numbers_and_counts_flags():
    for column in schema.rollup_fields():
        assert column.sql_type in ("smallint", "integer", "bigint", "real"), column.name
    for counter in ("thermal_slowdown_n", "power_cap_n"):
        flags = schema.counted_in(counter)
        assert flags and all(schema.BY_NAME[f].sql_type == "boolean" for f in flags)
    assert schema.counted_in("thermal_slowdown_n") == (
        "throttle_hw_slowdown", "throttle_hw_thermal", "throttle_sw_thermal")


def test_plot_metrics_are_kept_by_the_rollup_and_labelled():
    metrics = schema.plot_metrics()
    # In the order plot_temp.py --help lists them.
    assert list(metrics) == ["temperature", "power", "sm_clock", "fan", "utilization",
                             "memory_temperature"]
    for column in metrics.values():
        assert column.rollup == "stats" and column.label and column.unit
    assert len({column.metric_order for column in metrics.values()}) == len(metrics)


def test_the_throttle_flags_are_every_boolean_throttle_column():
    assert schema.throttle_flags() == tuple(
        name for name, sql_type in schema.column_types().items()
        if name.startswith("throttle_") and sql_type == "boolean")


def test_row_columns_are_the_sample_head_the_gpu_fields_and_raw_json():
    head = ("ts", "host", "status_tag", "status_memo", "run_id")
    assert schema.ROW_COLUMNS[:5] == head and schema.ROW_COLUMNS[-1] == "raw_json"
    assert schema.ROW_COLUMNS[5:-1] == schema.GPU_COLUMNS
    assert schema.GPU_COLUMNS[:4] == schema.IDENTITY_COLUMNS
    assert schema.column_types()["gpu_index"] == "smallint"
    assert schema.column_types(schema.ROW)["ts"] == "timestamptz"


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        Column("x_c", "smallint", "x", "°C", kind="numbr", paths=("x",))
