"""Every stored column, once: name, SQL type, unit, comment, where nvidia-smi reports it, how
the one-minute rollup keeps it, and how plots show it.

The parser reads GPU_FIELDS, the sample validates against column_types(), the store writes
ROW_COLUMNS, plots and the rollup reader take plot_metrics() and rollup_fields(), the report
throttle_flags() and its panels' titles and units, and
tests/test_schema.py holds all of it against the columns and COMMENTs of the database that
bin/init_db.sh builds, in both directions (docs/architecture.md).

Adding a GPU field is one edit here plus a migration:

1. Add a Column to _READINGS below: name with its unit (`_c`, `_w`, `_pct`, `_mib`, `_mhz`),
   SQL type, unit, comment, parser kind and XML paths (most preferred first). A field plots
   draw also gets rollup="stats", its --metric name, axis title and metric_order.
2. Write the next sql/00N_<what>.sql from migration_sql(name): the column of
   telemetry.gpu_samples, the view telemetry.gpu_telemetry replaced with the column at its end
   (VIEW_COLUMNS), its COMMENT, and for a field the rollup keeps (rollup="stats") its x_min /
   x_max / x_sum / x_n columns in telemetry.gpu_telemetry_1m; such a field also needs the
   rollup trigger function (sql/006) replaced to fill them.
3. Run tests/test_schema.py and tests/test_parser.py: the first fails until the database and
   this module agree, the second until a fixture shows the new value.

Nothing here imports a wing of the package: the collector, the store and the plots all read it.

Longer than usual: it is the one list of every column (most of its lines), with the little SQL
that is derived from that list (the view, a new column's migration) kept beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "telemetry.gpu_telemetry"
ROLLUP_TABLE = "telemetry.gpu_telemetry_1m"

# How the parser reads a column (collector/parser.py):
#   number   the leading number of the text, units stripped, None outside the SQL type's range
#   text     the text as reported
#   pstate   P0 .. P12, anything else None
#   active   "Active" / "Not Active" -> True / False
#   enabled  "Enabled" / "Yes" -> True, "Disabled" / "No" -> False
#   sum      each path is a group of paths whose reported values are added; the first group
#            with any reported value wins (ECC totals are split into SRAM and DRAM since v11)
#   position the GPU's position in the document
#   document a leaf of <nvidia_smi_log> itself, shared by every GPU
#   sample   not from nvidia-smi: set by the collector for the whole sample
FROM_SAMPLE = "sample"
KINDS = frozenset({"number", "text", "pstate", "active", "enabled", "sum", "position",
                   "document", FROM_SAMPLE})

# How the one-minute rollup keeps a column (sql/002_rollup_1m.sql):
#   key    part of the rollup row's key
#   max    one column of the same name, the minute's maximum (identity: any one value)
#   stats  four columns: x_min, x_max, x_sum (double precision), x_n (samples reporting it)
ROLLUPS = frozenset({"", "key", "max", "stats"})


@dataclass(frozen=True)
class Column:
    """One stored column (of telemetry.gpu_telemetry, or of its rollup from rollup_columns()).

    `paths` are tried in order and the first reported value wins; an `@name` path is an
    attribute of the <gpu> element. `counted_in` names the rollup column that counts the
    samples in which this flag is true. `metric` and `label` are the plot's --metric name and
    axis title, `metric_order` its place in plot_metrics() (the --metric list), `short_label`
    the axis title where panels are small (the report's picture). `rollup_comment` is the
    rollup column's COMMENT where it differs."""

    name: str
    sql_type: str
    comment: str
    unit: str | None = None
    kind: str = FROM_SAMPLE
    paths: tuple = ()
    rollup: str = ""
    counted_in: str = ""
    metric: str = ""
    label: str = ""
    metric_order: int = 0
    short_label: str = ""
    rollup_comment: str = ""

    def __post_init__(self):
        if self.kind not in KINDS or self.rollup not in ROLLUPS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r} or rollup {self.rollup!r}")


def _power(*names: str) -> tuple[str, ...]:
    # v12 moved power_readings to gpu_power_readings; each name is looked for in both.
    return tuple(f"{section}/{name}" for name in names
                 for section in ("gpu_power_readings", "power_readings"))


def _num(name, sql_type, unit, paths, comment, **extra) -> Column:
    paths = (paths,) if isinstance(paths, str) else tuple(paths)
    return Column(name, sql_type, comment, unit, "number", paths, **extra)


def _flag(name, kind, path, comment) -> Column:
    return Column(name, "boolean", comment, None, kind, (path,))


# Columns of every row that describe the sample, not one GPU's reading.
SAMPLE_HEAD: tuple[Column, ...] = (
    Column("ts", "timestamptz", "sample time (collector clock, UTC)"),
    Column("host", "text", "host name of the collector", rollup="key"),
    Column("status_tag", "text", "what the machine was doing: idle, prod or bench (status.json)",
           rollup="key", rollup_comment="status tag of the samples"),
    Column("status_memo", "text", "free-text memo from status.json", rollup="key",
           rollup_comment="status memo of the samples"),
    Column("run_id", "text", "run id from status.json, e.g. gpuburn-20260104-000000",
           rollup="key", rollup_comment="run id of the samples"),
)

IDENTITY: tuple[Column, ...] = (
    Column("gpu_uuid", "text", "GPU UUID (nvidia-smi uuid)", kind="text", paths=("uuid",),
           rollup="key", rollup_comment="GPU UUID"),
    # nvsmi_device_v10 minimal documents have no <pci_bus_id>, only <gpu id="...">.
    Column("pci_bus_id", "text", "PCI bus id, domain:bus:device.function", kind="text",
           paths=("pci/pci_bus_id", "@id"), rollup="max", rollup_comment="PCI bus id"),
    Column("gpu_name", "text", "product name", kind="text", paths=("product_name",),
           rollup="max"),
    Column("gpu_index", "smallint", "position of the GPU in the nvidia-smi document",
           kind="position", rollup="max",
           rollup_comment="position in the nvidia-smi document"),
)

# Column, the reason as v11..v13 name it, the rollup counter of samples with it active.
_THROTTLE = (
    ("throttle_gpu_idle", "gpu_idle", ""),
    ("throttle_app_clocks", "applications_clocks_setting", ""),
    ("throttle_sw_power_cap", "sw_power_cap", "power_cap_n"),
    ("throttle_hw_slowdown", "hw_slowdown", "thermal_slowdown_n"),
    ("throttle_hw_thermal", "hw_thermal_slowdown", "thermal_slowdown_n"),
    ("throttle_hw_power_brake", "hw_power_brake_slowdown", "power_cap_n"),
    ("throttle_sync_boost", "sync_boost", ""),
    ("throttle_sw_thermal", "sw_thermal_slowdown", "thermal_slowdown_n"),
    ("throttle_display_clocks", "display_clocks_setting", ""),
)

# v13 cumulative time each reason was active since driver load.
_THROTTLE_COUNTERS = (
    ("throttle_sw_power_cap_us", "sw_power_cap"),
    ("throttle_sync_boost_us", "sync_boost"),
    ("throttle_sw_thermal_us", "sw_therm_slowdown"),
    ("throttle_hw_thermal_us", "hw_therm_slowdown"),
    ("throttle_hw_power_brake_us", "hw_power_brake"),
)

_ECC_UNCORRECTED = ("sram_uncorrectable", "sram_uncorrectable_parity",
                    "sram_uncorrectable_secded", "dram_uncorrectable")


def _ecc(name: str, scope: str, corrected: bool, comment: str) -> Column:
    if corrected:
        split = ("sram_correctable", "dram_correctable")
        before_v11 = f"ecc_errors/{scope}/single_bit/total"
    else:
        split = _ECC_UNCORRECTED
        before_v11 = f"ecc_errors/{scope}/double_bit/total"
    groups = (tuple(f"ecc_errors/{scope}/{part}" for part in split), (before_v11,))
    return Column(name, "integer", comment, None, "sum", groups)


_PCIE = "pci/pci_gpu_link_info"

_READINGS: tuple[Column, ...] = (
    _num("temp_c", "smallint", "°C", "temperature/gpu_temp", "GPU core temperature, °C",
         rollup="stats", metric="temperature", label="GPU temperature", metric_order=1,
         short_label="temperature"),
    _num("power_draw_w", "real", "W",
         _power("instant_power_draw", "power_draw", "average_power_draw"),
         "board power draw, W (instant, else power_draw, else average)",
         rollup="stats", metric="power", label="Power draw", metric_order=2, short_label="power"),
    _num("power_limit_w", "real", "W",
         _power("current_power_limit", "enforced_power_limit", "power_limit"),
         "power limit in force, W"),
    _num("fan_pct", "smallint", "%", "fan_speed",
         "fan speed, % of maximum (NULL on fanless cards such as the Tesla P40)",
         rollup="stats", metric="fan", label="Fan", metric_order=4),
    Column("pstate", "text", "performance state, P0..P12", None, "pstate",
           ("performance_state",)),
    _num("util_gpu_pct", "smallint", "%", "utilization/gpu_util", "GPU utilisation, %",
         rollup="stats", metric="utilization", label="GPU utilisation", metric_order=5),
    _num("util_mem_pct", "smallint", "%", "utilization/memory_util",
         "memory controller utilisation, %"),
    _num("mem_used_mib", "integer", "MiB", "fb_memory_usage/used", "framebuffer used, MiB"),
    _num("mem_total_mib", "integer", "MiB", "fb_memory_usage/total", "framebuffer total, MiB"),
    _num("clocks_gr_mhz", "smallint", "MHz", "clocks/graphics_clock", "graphics clock, MHz"),
    _num("clocks_sm_mhz", "smallint", "MHz", "clocks/sm_clock", "SM clock, MHz",
         rollup="stats", metric="sm_clock", label="SM clock", metric_order=3,
         short_label="SM clock"),
    _num("clocks_mem_mhz", "smallint", "MHz", "clocks/mem_clock", "memory clock, MHz"),
    # Thermal investigation.
    _num("memory_temp_c", "smallint", "°C", "temperature/memory_temp",
         "HBM/GDDR temperature, °C",
         rollup="stats", metric="memory_temperature", label="Memory temperature",
         metric_order=6),
    _num("temp_tlimit_c", "smallint", "°C", "temperature/gpu_temp_tlimit",
         "headroom to the slowdown temperature (T.Limit), °C"),
    _num("temp_slowdown_c", "smallint", "°C", "temperature/gpu_temp_slow_threshold",
         "hardware slowdown threshold, °C", rollup="max"),
    _num("temp_shutdown_c", "smallint", "°C", "temperature/gpu_temp_max_threshold",
         "shutdown threshold, °C"),
    _num("temp_max_operating_c", "smallint", "°C", "temperature/gpu_temp_max_gpu_threshold",
         "maximum operating temperature, °C"),
    _num("temp_target_c", "smallint", "°C", "temperature/gpu_target_temperature",
         "target temperature, °C"),
    _num("memory_temp_max_c", "smallint", "°C", "temperature/gpu_temp_max_mem_threshold",
         "maximum memory temperature, °C"),
    _num("power_avg_w", "real", "W", _power("average_power_draw"),
         "power draw averaged by the driver, W"),
    _num("power_limit_default_w", "real", "W", _power("default_power_limit"),
         "default power limit, W"),
    _num("power_limit_min_w", "real", "W", _power("min_power_limit"),
         "lowest settable power limit, W"),
    _num("power_limit_max_w", "real", "W", _power("max_power_limit"),
         "highest settable power limit, W"),
    _num("clocks_video_mhz", "smallint", "MHz", "clocks/video_clock", "video clock, MHz"),
    _num("clocks_max_gr_mhz", "smallint", "MHz", "max_clocks/graphics_clock",
         "maximum graphics clock, MHz"),
    _num("clocks_max_sm_mhz", "smallint", "MHz", "max_clocks/sm_clock", "maximum SM clock, MHz"),
    _num("clocks_max_mem_mhz", "smallint", "MHz", "max_clocks/mem_clock",
         "maximum memory clock, MHz"),
    _num("util_enc_pct", "smallint", "%", "utilization/encoder_util", "encoder utilisation, %"),
    _num("util_dec_pct", "smallint", "%", "utilization/decoder_util", "decoder utilisation, %"),
    _num("pcie_gen_cur", "smallint", None, f"{_PCIE}/pcie_gen/current_link_gen",
         "current PCIe generation"),
    _num("pcie_gen_max", "smallint", None, f"{_PCIE}/pcie_gen/max_link_gen",
         "maximum PCIe generation of GPU and host"),
    _num("pcie_width_cur", "smallint", None, f"{_PCIE}/link_widths/current_link_width",
         "current PCIe lanes"),
    _num("pcie_width_max", "smallint", None, f"{_PCIE}/link_widths/max_link_width",
         "maximum PCIe lanes"),
    _num("pcie_tx_kbps", "integer", "KB/s", "pci/tx_util", "PCIe transmit, KB/s"),
    _num("pcie_rx_kbps", "integer", "KB/s", "pci/rx_util", "PCIe receive, KB/s"),
    _num("pcie_replay_count", "integer", None, "pci/replay_counter",
         "PCIe replays since driver load (link errors)"),
    # v12/v13 renamed clocks_throttle_reasons to clocks_event_reasons.
    *(Column(name, "boolean", f"clock event (throttle) reason {reason} active", None, "active",
             (f"clocks_event_reasons/clocks_event_reason_{reason}",
              f"clocks_throttle_reasons/clocks_throttle_reason_{reason}"),
             counted_in=counted_in)
      for name, reason, counted_in in _THROTTLE),
    *(_num(name, "bigint", "µs",
           f"clocks_event_reasons_counters/clocks_event_reasons_counters_{reason}",
           f"time {reason} was active since driver load, µs (v13+)")
      for name, reason in _THROTTLE_COUNTERS),
    _flag("ecc_enabled", "enabled", "ecc_mode/current_ecc", "ECC mode in force"),
    _ecc("ecc_volatile_corrected", "volatile", True, "corrected ECC errors since driver load"),
    _ecc("ecc_volatile_uncorrected", "volatile", False,
         "uncorrected ECC errors since driver load"),
    _ecc("ecc_aggregate_corrected", "aggregate", True,
         "corrected ECC errors over the GPU's life"),
    _ecc("ecc_aggregate_uncorrected", "aggregate", False,
         "uncorrected ECC errors over the GPU's life"),
    _num("retired_pages_sbe", "integer", None,
         "retired_pages/multiple_single_bit_retirement/retired_count",
         "pages retired for repeated single-bit errors"),
    _num("retired_pages_dbe", "integer", None, "retired_pages/double_bit_retirement/retired_count",
         "pages retired for double-bit errors"),
    _flag("retired_pages_pending", "enabled", "retired_pages/pending_retirement",
          "a page retirement waits for the next driver load"),
    _num("remapped_rows_corr", "integer", None, "remapped_rows/remapped_row_corr",
         "rows remapped for correctable errors"),
    _num("remapped_rows_unc", "integer", None, "remapped_rows/remapped_row_unc",
         "rows remapped for uncorrectable errors"),
    _flag("remapped_rows_pending", "enabled", "remapped_rows/remapped_row_pending",
          "a row remap waits for a GPU reset"),
    _flag("remapped_rows_failure", "enabled", "remapped_rows/remapped_row_failure",
          "a row remap failed"),
    _flag("persistence_mode", "enabled", "persistence_mode", "driver persistence mode"),
)

DRIVER_VERSION = Column("driver_version", "text", "NVIDIA driver version", kind="document",
                        paths=("driver_version",))

RAW_JSON = Column("raw_json", "jsonb",
                  "the GPU's own nvidia-smi XML element as JSON, kept every RAW_EVERY_SEC")

# One GPU's part of a sample, in the order of the sample's "gpus" entries.
GPU_FIELDS: tuple[Column, ...] = (*IDENTITY, *_READINGS, DRIVER_VERSION)
# Every column of a row, in the order the store writes them.
ROW: tuple[Column, ...] = (*SAMPLE_HEAD, *GPU_FIELDS, RAW_JSON)

IDENTITY_COLUMNS = tuple(column.name for column in IDENTITY)
GPU_COLUMNS = tuple(column.name for column in GPU_FIELDS)
ROW_COLUMNS = tuple(column.name for column in ROW)
BY_NAME: dict[str, Column] = {column.name: column for column in ROW}
assert len(BY_NAME) == len(ROW), "a column is named twice"

# Where a row's columns are stored under the view TABLE (sql/006_narrow_storage.sql): what
# names the GPU once per identity in telemetry.gpus, the status once per (tag, memo, run id)
# in telemetry.statuses, the raw snapshot in telemetry.gpu_raw, every other column (the time
# and the readings) in telemetry.gpu_samples, beside the ids of the first two.
STORED_IN_GPUS = ("host", "gpu_uuid", "pci_bus_id", "gpu_name", "driver_version")
STORED_IN_STATUSES = ("status_tag", "status_memo", "run_id")
STORED_IN_SAMPLES = tuple(name for name in ROW_COLUMNS
                          if name not in (*STORED_IN_GPUS, *STORED_IN_STATUSES, RAW_JSON.name))

# The view's column order: the order of the table it replaced (by width, as that table was
# laid out), so that `SELECT *` answers as it did. A new column goes at the end.
VIEW_COLUMNS = (
    "ts", "throttle_sw_power_cap_us", "throttle_sync_boost_us", "throttle_sw_thermal_us",
    "throttle_hw_thermal_us", "throttle_hw_power_brake_us", "ecc_volatile_corrected",
    "ecc_volatile_uncorrected", "ecc_aggregate_corrected", "ecc_aggregate_uncorrected",
    "power_draw_w", "power_limit_w", "mem_used_mib", "mem_total_mib", "power_avg_w",
    "power_limit_default_w", "power_limit_min_w", "power_limit_max_w", "pcie_tx_kbps",
    "pcie_rx_kbps", "pcie_replay_count", "retired_pages_sbe", "retired_pages_dbe",
    "remapped_rows_corr", "remapped_rows_unc", "gpu_index", "temp_c", "fan_pct",
    "util_gpu_pct", "util_mem_pct", "clocks_gr_mhz", "clocks_sm_mhz", "clocks_mem_mhz",
    "memory_temp_c", "temp_tlimit_c", "temp_slowdown_c", "temp_shutdown_c",
    "temp_max_operating_c", "temp_target_c", "memory_temp_max_c", "clocks_video_mhz",
    "clocks_max_gr_mhz", "clocks_max_sm_mhz", "clocks_max_mem_mhz", "util_enc_pct",
    "util_dec_pct", "pcie_gen_cur", "pcie_gen_max", "pcie_width_cur", "pcie_width_max",
    "throttle_gpu_idle", "throttle_app_clocks", "throttle_sw_power_cap",
    "throttle_hw_slowdown", "throttle_hw_thermal", "throttle_hw_power_brake",
    "throttle_sync_boost", "throttle_sw_thermal", "throttle_display_clocks", "ecc_enabled",
    "retired_pages_pending", "remapped_rows_pending", "remapped_rows_failure",
    "persistence_mode", "host", "gpu_uuid", "pci_bus_id", "gpu_name", "status_tag",
    "status_memo", "run_id", "pstate", "driver_version", "raw_json",
)
assert sorted(VIEW_COLUMNS) == sorted(ROW_COLUMNS), "VIEW_COLUMNS is not every column of ROW"

def column_types(columns: tuple[Column, ...] = GPU_FIELDS) -> dict[str, str]:
    """Column name -> SQL type, in order; by default one GPU's fields (the sample's gpus)."""
    return {column.name: column.sql_type for column in columns}


def rollup_fields() -> tuple[Column, ...]:
    """The columns the one-minute rollup keeps as x_min, x_max, x_sum and x_n."""
    return tuple(column for column in ROW if column.rollup == "stats")


def counted_in(rollup_column: str) -> tuple[str, ...]:
    """The flags a rollup counter (thermal_slowdown_n, power_cap_n) counts samples of."""
    return tuple(column.name for column in ROW if column.counted_in == rollup_column)


def plot_metrics() -> dict[str, Column]:
    """--metric name -> column, for the metrics plots draw (all of them kept by the rollup), in
    metric_order: the order --metric lists them."""
    plotted = sorted((column for column in ROW if column.metric),
                     key=lambda column: column.metric_order)
    return {column.metric: column for column in plotted}


def throttle_flags() -> tuple[str, ...]:
    """The clock event (throttle) reason flags, in column order."""
    return tuple(column.name for column in ROW if column.kind == "active")


_ROLLUP_OWN = (
    Column("bucket", "timestamptz", "start of the minute (UTC)"),
    Column("samples", "integer", "rows summarised"),
    Column("thermal_slowdown_n", "integer", "samples with a thermal or hardware slowdown active"),
    Column("power_cap_n", "integer", "samples with the power cap or power brake active"),
)


def _stats_columns(column: Column) -> tuple[Column, Column, Column, Column]:
    unit = f", {column.unit}" if column.unit else ""
    return (Column(f"{column.name}_min", column.sql_type, f"lowest {column.name}{unit}"),
            Column(f"{column.name}_max", column.sql_type, f"highest {column.name}{unit}"),
            Column(f"{column.name}_sum", "double precision", f"sum of {column.name}{unit}"),
            Column(f"{column.name}_n", "integer", f"samples reporting {column.name}"))


def rollup_columns() -> tuple[Column, ...]:
    """Every column of the one-minute rollup table, with its type and COMMENT."""
    columns = [_ROLLUP_OWN[0]]
    for column in ROW:
        if column.rollup in ("key", "max"):
            columns.append(Column(column.name, column.sql_type,
                                  column.rollup_comment or column.comment, column.unit))
    columns.extend(_ROLLUP_OWN[1:])
    for column in rollup_fields():
        columns.extend(_stats_columns(column))
    return tuple(columns)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _view_source(name: str) -> str:
    if name in STORED_IN_GPUS:
        return f"g.{name}"
    if name in STORED_IN_STATUSES:
        return f"st.{name}"
    if name == RAW_JSON.name:
        # A subquery rather than a join: a query that does not ask for raw_json does not read
        # telemetry.gpu_raw at all.
        return ("(SELECT r.raw_json FROM telemetry.gpu_raw AS r"
                " WHERE r.ts = s.ts AND r.gpu_id = s.gpu_id) AS raw_json")
    return f"s.{name}"


def view_sql(columns: tuple[str, ...] = VIEW_COLUMNS) -> str:
    """CREATE OR REPLACE VIEW of TABLE over the narrow tables (sql/006_narrow_storage.sql),
    and the COMMENT of each of its columns."""
    return (f"CREATE OR REPLACE VIEW {TABLE} AS SELECT "
            + ", ".join(_view_source(name) for name in columns)
            + " FROM telemetry.gpu_samples AS s"
              " JOIN telemetry.gpus AS g ON g.gpu_id = s.gpu_id"
              " JOIN telemetry.statuses AS st ON st.status_id = s.status_id;\n"
            + "".join(f"COMMENT ON COLUMN {TABLE}.{name} IS {_quote(BY_NAME[name].comment)};\n"
                      for name in columns if name in BY_NAME))


def migration_sql(name: str) -> str:
    """The statements a migration needs to add this reading (and its rollup columns): the
    column of telemetry.gpu_samples, the view with it at the end, the COMMENTs."""
    column = BY_NAME[name]
    if name not in STORED_IN_SAMPLES:
        raise ValueError(f"{name} is not stored in telemetry.gpu_samples")
    statements = [f"ALTER TABLE telemetry.gpu_samples ADD COLUMN IF NOT EXISTS {name}"
                  f" {column.sql_type};\n",
                  view_sql(VIEW_COLUMNS if name in VIEW_COLUMNS else (*VIEW_COLUMNS, name))]
    if column.rollup == "stats":
        # As sql/002 has them: x_sum and x_n are NOT NULL DEFAULT 0, so a sum never meets NULL.
        low, high, total, count = _stats_columns(column)
        for c, extra in ((low, ""), (high, ""), (total, " NOT NULL DEFAULT 0"),
                         (count, " NOT NULL DEFAULT 0")):
            statements.append(f"ALTER TABLE {ROLLUP_TABLE} ADD COLUMN IF NOT EXISTS {c.name}"
                              f" {c.sql_type}{extra};\n"
                              f"COMMENT ON COLUMN {ROLLUP_TABLE}.{c.name} IS"
                              f" {_quote(c.comment)};\n")
    return "".join(statements)
