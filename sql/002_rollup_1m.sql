-- gpu-telemetry schema, version 2: a one-minute rollup that plots and dashboards read for long
-- ranges instead of every row. 30 days of 1 Hz samples for 2 GPUs are 5.2 million rows but
-- 86,400 rollup rows; min and max are kept, so the plotted maximum is the true maximum.
--
-- A statement-level trigger keeps it current: one aggregate upsert per INSERT or COPY statement
-- (not per row), over the rows that statement really inserted (a replayed spool, absorbed by ON
-- CONFLICT DO NOTHING, adds nothing). SECURITY DEFINER, so the insert-only writer role needs no
-- rights on the rollup.

CREATE TABLE IF NOT EXISTS telemetry.gpu_telemetry_1m (
    bucket              timestamptz NOT NULL,
    host                text NOT NULL,
    gpu_uuid            text NOT NULL,
    status_tag          text,
    status_memo         text,
    run_id              text,
    samples             integer NOT NULL,
    gpu_name            text,
    pci_bus_id          text,
    gpu_index           smallint,
    temp_slowdown_c     smallint,
    thermal_slowdown_n  integer NOT NULL DEFAULT 0,
    power_cap_n         integer NOT NULL DEFAULT 0,
    temp_c_min smallint,
    temp_c_max smallint,
    temp_c_sum double precision NOT NULL DEFAULT 0,
    temp_c_n integer NOT NULL DEFAULT 0,
    memory_temp_c_min smallint,
    memory_temp_c_max smallint,
    memory_temp_c_sum double precision NOT NULL DEFAULT 0,
    memory_temp_c_n integer NOT NULL DEFAULT 0,
    power_draw_w_min real,
    power_draw_w_max real,
    power_draw_w_sum double precision NOT NULL DEFAULT 0,
    power_draw_w_n integer NOT NULL DEFAULT 0,
    clocks_sm_mhz_min smallint,
    clocks_sm_mhz_max smallint,
    clocks_sm_mhz_sum double precision NOT NULL DEFAULT 0,
    clocks_sm_mhz_n integer NOT NULL DEFAULT 0,
    fan_pct_min smallint,
    fan_pct_max smallint,
    fan_pct_sum double precision NOT NULL DEFAULT 0,
    fan_pct_n integer NOT NULL DEFAULT 0,
    util_gpu_pct_min smallint,
    util_gpu_pct_max smallint,
    util_gpu_pct_sum double precision NOT NULL DEFAULT 0,
    util_gpu_pct_n integer NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX IF NOT EXISTS gpu_telemetry_1m_key ON telemetry.gpu_telemetry_1m
    (bucket, host, gpu_uuid, (coalesce(status_tag, '')), (coalesce(status_memo, '')),
     (coalesce(run_id, '')));
CREATE INDEX IF NOT EXISTS gpu_telemetry_1m_host_bucket_idx
    ON telemetry.gpu_telemetry_1m (host, bucket);

COMMENT ON TABLE telemetry.gpu_telemetry_1m IS
    'one row per minute, GPU and status of telemetry.gpu_telemetry, kept by a trigger: '
    'x_min / x_max / x_sum / x_n per metric (mean = x_sum / x_n)';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.bucket IS 'start of the minute (UTC)';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.host IS 'host name of the collector';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.gpu_uuid IS 'GPU UUID';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.status_tag IS 'status tag of the samples';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.status_memo IS 'status memo of the samples';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.run_id IS 'run id of the samples';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.samples IS 'rows summarised';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.gpu_name IS 'product name';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.pci_bus_id IS 'PCI bus id';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.gpu_index IS 'position in the nvidia-smi document';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.temp_slowdown_c IS 'hardware slowdown threshold, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.thermal_slowdown_n IS
    'samples with a thermal or hardware slowdown active';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.power_cap_n IS
    'samples with the power cap or power brake active';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.temp_c_min IS 'lowest temp_c, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.temp_c_max IS 'highest temp_c, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.temp_c_sum IS 'sum of temp_c, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.temp_c_n IS 'samples reporting temp_c';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.memory_temp_c_min IS 'lowest memory_temp_c, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.memory_temp_c_max IS 'highest memory_temp_c, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.memory_temp_c_sum IS 'sum of memory_temp_c, °C';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.memory_temp_c_n IS 'samples reporting memory_temp_c';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.power_draw_w_min IS 'lowest power_draw_w, W';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.power_draw_w_max IS 'highest power_draw_w, W';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.power_draw_w_sum IS 'sum of power_draw_w, W';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.power_draw_w_n IS 'samples reporting power_draw_w';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.clocks_sm_mhz_min IS 'lowest clocks_sm_mhz, MHz';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.clocks_sm_mhz_max IS 'highest clocks_sm_mhz, MHz';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.clocks_sm_mhz_sum IS 'sum of clocks_sm_mhz, MHz';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.clocks_sm_mhz_n IS 'samples reporting clocks_sm_mhz';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.fan_pct_min IS 'lowest fan_pct, %';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.fan_pct_max IS 'highest fan_pct, %';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.fan_pct_sum IS 'sum of fan_pct, %';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.fan_pct_n IS 'samples reporting fan_pct';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.util_gpu_pct_min IS 'lowest util_gpu_pct, %';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.util_gpu_pct_max IS 'highest util_gpu_pct, %';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.util_gpu_pct_sum IS 'sum of util_gpu_pct, %';
COMMENT ON COLUMN telemetry.gpu_telemetry_1m.util_gpu_pct_n IS 'samples reporting util_gpu_pct';

CREATE OR REPLACE FUNCTION telemetry.gpu_telemetry_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, telemetry AS $$
BEGIN
    -- ORDER BY: concurrent writers (the loop and a flush) lock rollup rows in one order.
    INSERT INTO telemetry.gpu_telemetry_1m AS r (
        bucket, host, gpu_uuid, status_tag, status_memo, run_id, samples, gpu_name, pci_bus_id,
        gpu_index, temp_slowdown_c, thermal_slowdown_n, power_cap_n, temp_c_min, temp_c_max,
        temp_c_sum, temp_c_n, memory_temp_c_min, memory_temp_c_max, memory_temp_c_sum,
        memory_temp_c_n, power_draw_w_min, power_draw_w_max, power_draw_w_sum, power_draw_w_n,
        clocks_sm_mhz_min, clocks_sm_mhz_max, clocks_sm_mhz_sum, clocks_sm_mhz_n, fan_pct_min,
        fan_pct_max, fan_pct_sum, fan_pct_n, util_gpu_pct_min, util_gpu_pct_max, util_gpu_pct_sum,
        util_gpu_pct_n)
    SELECT
        date_trunc('minute', ts), host, gpu_uuid, status_tag, status_memo, run_id, count(*),
        max(gpu_name), max(pci_bus_id), max(gpu_index), max(temp_slowdown_c),
        count(*) FILTER (WHERE throttle_hw_thermal OR throttle_sw_thermal OR throttle_hw_slowdown),
        count(*) FILTER (WHERE throttle_sw_power_cap OR throttle_hw_power_brake), min(temp_c),
        max(temp_c), coalesce(sum(temp_c), 0), count(temp_c), min(memory_temp_c),
        max(memory_temp_c), coalesce(sum(memory_temp_c), 0), count(memory_temp_c),
        min(power_draw_w), max(power_draw_w), coalesce(sum(power_draw_w), 0), count(power_draw_w),
        min(clocks_sm_mhz), max(clocks_sm_mhz), coalesce(sum(clocks_sm_mhz), 0),
        count(clocks_sm_mhz), min(fan_pct), max(fan_pct), coalesce(sum(fan_pct), 0),
        count(fan_pct), min(util_gpu_pct), max(util_gpu_pct), coalesce(sum(util_gpu_pct), 0),
        count(util_gpu_pct)
    FROM inserted_rows
    GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (bucket, host, gpu_uuid, (coalesce(status_tag, '')), (coalesce(status_memo, '')),
                 (coalesce(run_id, ''))) DO UPDATE SET
        samples = r.samples + EXCLUDED.samples,
        gpu_name = coalesce(EXCLUDED.gpu_name, r.gpu_name),
        pci_bus_id = coalesce(EXCLUDED.pci_bus_id, r.pci_bus_id),
        gpu_index = coalesce(EXCLUDED.gpu_index, r.gpu_index),
        temp_slowdown_c = GREATEST(r.temp_slowdown_c, EXCLUDED.temp_slowdown_c),
        thermal_slowdown_n = r.thermal_slowdown_n + EXCLUDED.thermal_slowdown_n,
        power_cap_n = r.power_cap_n + EXCLUDED.power_cap_n,
        temp_c_min = LEAST(r.temp_c_min, EXCLUDED.temp_c_min),
        temp_c_max = GREATEST(r.temp_c_max, EXCLUDED.temp_c_max),
        temp_c_sum = r.temp_c_sum + EXCLUDED.temp_c_sum,
        temp_c_n = r.temp_c_n + EXCLUDED.temp_c_n,
        memory_temp_c_min = LEAST(r.memory_temp_c_min, EXCLUDED.memory_temp_c_min),
        memory_temp_c_max = GREATEST(r.memory_temp_c_max, EXCLUDED.memory_temp_c_max),
        memory_temp_c_sum = r.memory_temp_c_sum + EXCLUDED.memory_temp_c_sum,
        memory_temp_c_n = r.memory_temp_c_n + EXCLUDED.memory_temp_c_n,
        power_draw_w_min = LEAST(r.power_draw_w_min, EXCLUDED.power_draw_w_min),
        power_draw_w_max = GREATEST(r.power_draw_w_max, EXCLUDED.power_draw_w_max),
        power_draw_w_sum = r.power_draw_w_sum + EXCLUDED.power_draw_w_sum,
        power_draw_w_n = r.power_draw_w_n + EXCLUDED.power_draw_w_n,
        clocks_sm_mhz_min = LEAST(r.clocks_sm_mhz_min, EXCLUDED.clocks_sm_mhz_min),
        clocks_sm_mhz_max = GREATEST(r.clocks_sm_mhz_max, EXCLUDED.clocks_sm_mhz_max),
        clocks_sm_mhz_sum = r.clocks_sm_mhz_sum + EXCLUDED.clocks_sm_mhz_sum,
        clocks_sm_mhz_n = r.clocks_sm_mhz_n + EXCLUDED.clocks_sm_mhz_n,
        fan_pct_min = LEAST(r.fan_pct_min, EXCLUDED.fan_pct_min),
        fan_pct_max = GREATEST(r.fan_pct_max, EXCLUDED.fan_pct_max),
        fan_pct_sum = r.fan_pct_sum + EXCLUDED.fan_pct_sum,
        fan_pct_n = r.fan_pct_n + EXCLUDED.fan_pct_n,
        util_gpu_pct_min = LEAST(r.util_gpu_pct_min, EXCLUDED.util_gpu_pct_min),
        util_gpu_pct_max = GREATEST(r.util_gpu_pct_max, EXCLUDED.util_gpu_pct_max),
        util_gpu_pct_sum = r.util_gpu_pct_sum + EXCLUDED.util_gpu_pct_sum,
        util_gpu_pct_n = r.util_gpu_pct_n + EXCLUDED.util_gpu_pct_n;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS gpu_telemetry_rollup ON telemetry.gpu_telemetry;
CREATE TRIGGER gpu_telemetry_rollup AFTER INSERT ON telemetry.gpu_telemetry
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION telemetry.gpu_telemetry_rollup();

-- Rows stored before this migration.
INSERT INTO telemetry.gpu_telemetry_1m (
    bucket, host, gpu_uuid, status_tag, status_memo, run_id, samples, gpu_name, pci_bus_id,
    gpu_index, temp_slowdown_c, thermal_slowdown_n, power_cap_n, temp_c_min, temp_c_max,
    temp_c_sum, temp_c_n, memory_temp_c_min, memory_temp_c_max, memory_temp_c_sum, memory_temp_c_n,
    power_draw_w_min, power_draw_w_max, power_draw_w_sum, power_draw_w_n, clocks_sm_mhz_min,
    clocks_sm_mhz_max, clocks_sm_mhz_sum, clocks_sm_mhz_n, fan_pct_min, fan_pct_max, fan_pct_sum,
    fan_pct_n, util_gpu_pct_min, util_gpu_pct_max, util_gpu_pct_sum, util_gpu_pct_n)
SELECT
    date_trunc('minute', ts), host, gpu_uuid, status_tag, status_memo, run_id, count(*),
    max(gpu_name), max(pci_bus_id), max(gpu_index), max(temp_slowdown_c),
    count(*) FILTER (WHERE throttle_hw_thermal OR throttle_sw_thermal OR throttle_hw_slowdown),
    count(*) FILTER (WHERE throttle_sw_power_cap OR throttle_hw_power_brake), min(temp_c),
    max(temp_c), coalesce(sum(temp_c), 0), count(temp_c), min(memory_temp_c), max(memory_temp_c),
    coalesce(sum(memory_temp_c), 0), count(memory_temp_c), min(power_draw_w), max(power_draw_w),
    coalesce(sum(power_draw_w), 0), count(power_draw_w), min(clocks_sm_mhz), max(clocks_sm_mhz),
    coalesce(sum(clocks_sm_mhz), 0), count(clocks_sm_mhz), min(fan_pct), max(fan_pct),
    coalesce(sum(fan_pct), 0), count(fan_pct), min(util_gpu_pct), max(util_gpu_pct),
    coalesce(sum(util_gpu_pct), 0), count(util_gpu_pct)
FROM telemetry.gpu_telemetry
WHERE NOT EXISTS (SELECT 1 FROM telemetry.gpu_telemetry_1m)
GROUP BY 1, 2, 3, 4, 5, 6;

-- The documented reset (TRUNCATE telemetry.gpu_telemetry) empties the rollup too, or long plots
-- would go on drawing the data that was reset.
CREATE OR REPLACE FUNCTION telemetry.gpu_telemetry_rollup_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, telemetry AS $$
BEGIN
    TRUNCATE telemetry.gpu_telemetry_1m;
    RETURN NULL;
EXCEPTION WHEN object_in_use THEN
    -- TRUNCATE of both tables in one statement: the rollup is being emptied already.
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS gpu_telemetry_rollup_truncate ON telemetry.gpu_telemetry;
CREATE TRIGGER gpu_telemetry_rollup_truncate AFTER TRUNCATE ON telemetry.gpu_telemetry
    FOR EACH STATEMENT EXECUTE FUNCTION telemetry.gpu_telemetry_rollup_truncate();
