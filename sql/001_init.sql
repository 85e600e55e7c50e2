-- gpu-telemetry schema, version 1: telemetry rows, collector events, applied migrations.
-- Idempotent: every statement can run again on a database that already has it.

CREATE SCHEMA IF NOT EXISTS telemetry;

CREATE TABLE IF NOT EXISTS telemetry.schema_migrations (
    filename    text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS telemetry.gpu_telemetry (
    -- Columns are ordered by width (8, 4, 2, 1 bytes, then text): no alignment padding in a
    -- row that is stored once per GPU per sample.
    ts                           timestamptz NOT NULL,
    throttle_sw_power_cap_us     bigint,
    throttle_sync_boost_us       bigint,
    throttle_sw_thermal_us       bigint,
    throttle_hw_thermal_us       bigint,
    throttle_hw_power_brake_us   bigint,
    ecc_volatile_corrected       integer,
    ecc_volatile_uncorrected     integer,
    ecc_aggregate_corrected      integer,
    ecc_aggregate_uncorrected    integer,
    power_draw_w                 real,
    power_limit_w                real,
    mem_used_mib                 integer,
    mem_total_mib                integer,
    power_avg_w                  real,
    power_limit_default_w        real,
    power_limit_min_w            real,
    power_limit_max_w            real,
    pcie_tx_kbps                 integer,
    pcie_rx_kbps                 integer,
    pcie_replay_count            integer,
    retired_pages_sbe            integer,
    retired_pages_dbe            integer,
    remapped_rows_corr           integer,
    remapped_rows_unc            integer,
    gpu_index                    smallint,
    temp_c                       smallint,
    fan_pct                      smallint,
    util_gpu_pct                 smallint,
    util_mem_pct                 smallint,
    clocks_gr_mhz                smallint,
    clocks_sm_mhz                smallint,
    clocks_mem_mhz               smallint,
    memory_temp_c                smallint,
    temp_tlimit_c                smallint,
    temp_slowdown_c              smallint,
    temp_shutdown_c              smallint,
    temp_max_operating_c         smallint,
    temp_target_c                smallint,
    memory_temp_max_c            smallint,
    clocks_video_mhz             smallint,
    clocks_max_gr_mhz            smallint,
    clocks_max_sm_mhz            smallint,
    clocks_max_mem_mhz           smallint,
    util_enc_pct                 smallint,
    util_dec_pct                 smallint,
    pcie_gen_cur                 smallint,
    pcie_gen_max                 smallint,
    pcie_width_cur               smallint,
    pcie_width_max               smallint,
    throttle_gpu_idle            boolean,
    throttle_app_clocks          boolean,
    throttle_sw_power_cap        boolean,
    throttle_hw_slowdown         boolean,
    throttle_hw_thermal          boolean,
    throttle_hw_power_brake      boolean,
    throttle_sync_boost          boolean,
    throttle_sw_thermal          boolean,
    throttle_display_clocks      boolean,
    ecc_enabled                  boolean,
    retired_pages_pending        boolean,
    remapped_rows_pending        boolean,
    remapped_rows_failure        boolean,
    persistence_mode             boolean,
    host                         text NOT NULL,
    gpu_uuid                     text NOT NULL,
    pci_bus_id                   text,
    gpu_name                     text,
    status_tag                   text,
    status_memo                  text,
    run_id                       text,
    pstate                       text,
    driver_version               text,
    raw_json                     jsonb,
    -- Appended in time order, so the key's pages are filled completely.
    PRIMARY KEY (ts, host, gpu_uuid) WITH (fillfactor = 100)
);

-- No other index on every row: a time range is the primary key's leading column, and long
-- ranges by host or status tag are read from the one-minute rollup (002), which has its own.
-- Thermal reports select one run.
CREATE INDEX IF NOT EXISTS gpu_telemetry_run_idx ON telemetry.gpu_telemetry (run_id, ts)
    WHERE run_id IS NOT NULL;
-- The collector asks when each GPU's raw snapshot was last kept; few rows carry one.
CREATE INDEX IF NOT EXISTS gpu_telemetry_raw_idx ON telemetry.gpu_telemetry (host, gpu_uuid, ts)
    WHERE raw_json IS NOT NULL;

CREATE TABLE IF NOT EXISTS telemetry.collector_events (
    ts        timestamptz NOT NULL,
    host      text NOT NULL,
    kind      text NOT NULL,
    detail    text,
    gpu_uuid  text,
    data      jsonb
);
-- Replaying a spooled event must not duplicate it.
CREATE UNIQUE INDEX IF NOT EXISTS collector_events_key
    ON telemetry.collector_events (ts, host, kind, coalesce(gpu_uuid, ''));
CREATE INDEX IF NOT EXISTS collector_events_host_ts_idx ON telemetry.collector_events (host, ts);

COMMENT ON TABLE telemetry.gpu_telemetry IS
    'one row per GPU per sample; NULL means not reported by nvidia-smi, never 0';
COMMENT ON TABLE telemetry.collector_events IS
    'what happened to the collector: GPU source failures (nvidia-smi''s own message), GPUs lost '
    'and back, outages spooled and flushed, samples dropped';
COMMENT ON COLUMN telemetry.schema_migrations.filename IS 'the sql/ file applied';
COMMENT ON COLUMN telemetry.schema_migrations.applied_at IS 'when bin/init_db.sh applied it';
COMMENT ON COLUMN telemetry.collector_events.ts IS 'when it happened (collector clock, UTC)';
COMMENT ON COLUMN telemetry.collector_events.host IS 'host name of the collector';
COMMENT ON COLUMN telemetry.collector_events.gpu_uuid IS 'the GPU concerned, when there is one';
COMMENT ON COLUMN telemetry.collector_events.kind IS
    'source_failed, source_recovered, gpu_unreadable, gpu_missing, gpu_back, outage_start, '
    'outage_end, spool_flushed, spool_dropped';
COMMENT ON COLUMN telemetry.collector_events.detail IS 'one line, e.g. nvidia-smi''s own message';
COMMENT ON COLUMN telemetry.collector_events.data IS 'structured detail: failure class, exit code, counts';
COMMENT ON COLUMN telemetry.gpu_telemetry.ts IS 'sample time (collector clock, UTC)';
COMMENT ON COLUMN telemetry.gpu_telemetry.host IS 'host name of the collector';
COMMENT ON COLUMN telemetry.gpu_telemetry.gpu_uuid IS 'GPU UUID (nvidia-smi uuid)';
COMMENT ON COLUMN telemetry.gpu_telemetry.pci_bus_id IS 'PCI bus id, domain:bus:device.function';
COMMENT ON COLUMN telemetry.gpu_telemetry.gpu_name IS 'product name';
COMMENT ON COLUMN telemetry.gpu_telemetry.gpu_index IS 'position of the GPU in the nvidia-smi document';
COMMENT ON COLUMN telemetry.gpu_telemetry.status_tag IS 'what the machine was doing: idle, prod or bench (status.json)';
COMMENT ON COLUMN telemetry.gpu_telemetry.status_memo IS 'free-text memo from status.json';
COMMENT ON COLUMN telemetry.gpu_telemetry.run_id IS 'run id from status.json, e.g. gpuburn-20260104-000000';
COMMENT ON COLUMN telemetry.gpu_telemetry.temp_c IS 'GPU core temperature, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry.power_draw_w IS 'board power draw, W (instant, else power_draw, else average)';
COMMENT ON COLUMN telemetry.gpu_telemetry.power_limit_w IS 'power limit in force, W';
COMMENT ON COLUMN telemetry.gpu_telemetry.fan_pct IS 'fan speed, % of maximum (NULL on fanless cards such as the Tesla P40)';
COMMENT ON COLUMN telemetry.gpu_telemetry.pstate IS 'performance state, P0..P12';
COMMENT ON COLUMN telemetry.gpu_telemetry.util_gpu_pct IS 'GPU utilisation, %';
COMMENT ON COLUMN telemetry.gpu_telemetry.util_mem_pct IS 'memory controller utilisation, %';
COMMENT ON COLUMN telemetry.gpu_telemetry.mem_used_mib IS 'framebuffer used, MiB';
COMMENT ON COLUMN telemetry.gpu_telemetry.mem_total_mib IS 'framebuffer total, MiB';
COMMENT ON COLUMN telemetry.gpu_telemetry.clocks_gr_mhz IS 'graphics clock, MHz';
COMMENT ON COLUMN telemetry.gpu_telemetry.clocks_sm_mhz IS 'SM clock, MHz';
COMMENT ON COLUMN telemetry.gpu_telemetry.clocks_mem_mhz IS 'memory clock, MHz';
COMMENT ON COLUMN telemetry.gpu_telemetry.memory_temp_c IS 'HBM/GDDR temperature, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry.temp_tlimit_c IS 'headroom to the slowdown temperature (T.Limit), °C';
COMMENT ON COLUMN telemetry.gpu_telemetry.temp_slowdown_c IS 'hardware slowdown threshold, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry.temp_shutdown_c IS 'shutdown threshold, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry.temp_max_operating_c IS 'maximum operating temperature, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry.temp_target_c IS 'target temperature, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry.memory_temp_max_c IS 'maximum memory temperature, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry.power_avg_w IS 'power draw averaged by the driver, W';
COMMENT ON COLUMN telemetry.gpu_telemetry.power_limit_default_w IS 'default power limit, W';
COMMENT ON COLUMN telemetry.gpu_telemetry.power_limit_min_w IS 'lowest settable power limit, W';
COMMENT ON COLUMN telemetry.gpu_telemetry.power_limit_max_w IS 'highest settable power limit, W';
COMMENT ON COLUMN telemetry.gpu_telemetry.clocks_video_mhz IS 'video clock, MHz';
COMMENT ON COLUMN telemetry.gpu_telemetry.clocks_max_gr_mhz IS 'maximum graphics clock, MHz';
COMMENT ON COLUMN telemetry.gpu_telemetry.clocks_max_sm_mhz IS 'maximum SM clock, MHz';
COMMENT ON COLUMN telemetry.gpu_telemetry.clocks_max_mem_mhz IS 'maximum memory clock, MHz';
COMMENT ON COLUMN telemetry.gpu_telemetry.util_enc_pct IS 'encoder utilisation, %';
COMMENT ON COLUMN telemetry.gpu_telemetry.util_dec_pct IS 'decoder utilisation, %';
COMMENT ON COLUMN telemetry.gpu_telemetry.pcie_gen_cur IS 'current PCIe generation';
COMMENT ON COLUMN telemetry.gpu_telemetry.pcie_gen_max IS 'maximum PCIe generation of GPU and host';
COMMENT ON COLUMN telemetry.gpu_telemetry.pcie_width_cur IS 'current PCIe lanes';
COMMENT ON COLUMN telemetry.gpu_telemetry.pcie_width_max IS 'maximum PCIe lanes';
COMMENT ON COLUMN telemetry.gpu_telemetry.pcie_tx_kbps IS 'PCIe transmit, KB/s';
COMMENT ON COLUMN telemetry.gpu_telemetry.pcie_rx_kbps IS 'PCIe receive, KB/s';
COMMENT ON COLUMN telemetry.gpu_telemetry.pcie_replay_count IS 'PCIe replays since driver load (link errors)';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_gpu_idle IS 'clock event (throttle) reason gpu_idle active';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_app_clocks IS 'clock event (throttle) reason applications_clocks_setting active';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_sw_power_cap IS 'clock event (throttle) reason sw_power_cap active';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_hw_slowdown IS 'clock event (throttle) reason hw_slowdown active';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_hw_thermal IS 'clock event (throttle) reason hw_thermal_slowdown active';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_hw_power_brake IS 'clock event (throttle) reason hw_power_brake_slowdown active';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_sync_boost IS 'clock event (throttle) reason sync_boost active';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_sw_thermal IS 'clock event (throttle) reason sw_thermal_slowdown active';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_display_clocks IS 'clock event (throttle) reason display_clocks_setting active';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_sw_power_cap_us IS 'time sw_power_cap was active since driver load, µs (v13+)';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_sync_boost_us IS 'time sync_boost was active since driver load, µs (v13+)';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_sw_thermal_us IS 'time sw_therm_slowdown was active since driver load, µs (v13+)';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_hw_thermal_us IS 'time hw_therm_slowdown was active since driver load, µs (v13+)';
COMMENT ON COLUMN telemetry.gpu_telemetry.throttle_hw_power_brake_us IS 'time hw_power_brake was active since driver load, µs (v13+)';
COMMENT ON COLUMN telemetry.gpu_telemetry.ecc_enabled IS 'ECC mode in force';
COMMENT ON COLUMN telemetry.gpu_telemetry.ecc_volatile_corrected IS 'corrected ECC errors since driver load';
COMMENT ON COLUMN telemetry.gpu_telemetry.ecc_volatile_uncorrected IS 'uncorrected ECC errors since driver load';
COMMENT ON COLUMN telemetry.gpu_telemetry.ecc_aggregate_corrected IS 'corrected ECC errors over the GPU''s life';
COMMENT ON COLUMN telemetry.gpu_telemetry.ecc_aggregate_uncorrected IS 'uncorrected ECC errors over the GPU''s life';
COMMENT ON COLUMN telemetry.gpu_telemetry.retired_pages_sbe IS 'pages retired for repeated single-bit errors';
COMMENT ON COLUMN telemetry.gpu_telemetry.retired_pages_dbe IS 'pages retired for double-bit errors';
COMMENT ON COLUMN telemetry.gpu_telemetry.retired_pages_pending IS 'a page retirement waits for the next driver load';
COMMENT ON COLUMN telemetry.gpu_telemetry.remapped_rows_corr IS 'rows remapped for correctable errors';
COMMENT ON COLUMN telemetry.gpu_telemetry.remapped_rows_unc IS 'rows remapped for uncorrectable errors';
COMMENT ON COLUMN telemetry.gpu_telemetry.remapped_rows_pending IS 'a row remap waits for a GPU reset';
COMMENT ON COLUMN telemetry.gpu_telemetry.remapped_rows_failure IS 'a row remap failed';
COMMENT ON COLUMN telemetry.gpu_telemetry.persistence_mode IS 'driver persistence mode';
COMMENT ON COLUMN telemetry.gpu_telemetry.driver_version IS 'NVIDIA driver version';
COMMENT ON COLUMN telemetry.gpu_telemetry.raw_json IS 'the GPU''s own nvidia-smi XML element as JSON, kept every RAW_EVERY_SEC';
