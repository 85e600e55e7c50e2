-- gpu-telemetry schema, version 6: narrow, partitioned storage under the same
-- telemetry.gpu_telemetry, which becomes a view with the same columns and types.
--
-- What never changes between two samples of a GPU is stored once: telemetry.gpus holds each
-- identity of a GPU on a host (host, uuid, bus id, name, driver version) and
-- telemetry.statuses each (tag, memo, run id), both with a small integer id and when they were
-- first and last seen. telemetry.gpu_samples holds the readings: the time, the two ids, the
-- typed values, range-partitioned by month (UTC) with the primary key (ts, gpu_id), which the
-- time-range queries of plots and reports read. telemetry.gpu_raw holds the raw snapshots,
-- keyed and partitioned the same way. Retention drops whole partitions (telemetry.prune).
--
-- A database with rows in the wide table of versions 1 to 5 keeps them: the table is renamed
-- telemetry.gpu_telemetry_wide here, and bin/init_db.sh moves its rows into the new tables in
-- batches right after this file (gpu_telemetry/db/narrow.py), then drops it. The one-minute
-- rollup of those rows is already there and is kept as it is.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'telemetry' AND c.relname = 'gpu_telemetry'
                 AND c.relkind = 'r') THEN
        ALTER TABLE telemetry.gpu_telemetry RENAME TO gpu_telemetry_wide;
        DROP TRIGGER IF EXISTS gpu_telemetry_rollup ON telemetry.gpu_telemetry_wide;
        DROP TRIGGER IF EXISTS gpu_telemetry_rollup_truncate ON telemetry.gpu_telemetry_wide;
    END IF;
END
$$;
DROP FUNCTION IF EXISTS telemetry.gpu_telemetry_rollup_truncate();

CREATE TABLE telemetry.gpus (
    gpu_id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host            text NOT NULL,
    gpu_uuid        text NOT NULL,
    pci_bus_id      text,
    gpu_name        text,
    driver_version  text,
    first_seen      timestamptz,
    last_seen       timestamptz
);
CREATE INDEX gpus_host_uuid_idx ON telemetry.gpus (host, gpu_uuid);

CREATE TABLE telemetry.statuses (
    status_id    integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status_tag   text,
    status_memo  text,
    run_id       text,
    first_seen   timestamptz,
    last_seen    timestamptz
);
-- An index for the lookup of telemetry.status_id(), which compares NULLs as equal.
CREATE INDEX statuses_lookup_idx ON telemetry.statuses
    ((coalesce(status_tag, '')), (coalesce(status_memo, '')), (coalesce(run_id, '')));
CREATE INDEX statuses_run_idx ON telemetry.statuses (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE telemetry.gpu_samples (
    -- Ordered by width (8, 4, 2, 1 bytes, then text): no alignment padding.
    ts                           timestamptz NOT NULL,
    throttle_sw_power_cap_us     bigint,
    throttle_sync_boost_us       bigint,
    throttle_sw_thermal_us       bigint,
    throttle_hw_thermal_us       bigint,
    throttle_hw_power_brake_us   bigint,
    gpu_id                       integer NOT NULL,
    status_id                    integer NOT NULL,
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
    pstate                       text,
    PRIMARY KEY (ts, gpu_id)
) PARTITION BY RANGE (ts);

CREATE TABLE telemetry.gpu_raw (
    ts        timestamptz NOT NULL,
    gpu_id    integer NOT NULL,
    raw_json  jsonb NOT NULL,
    PRIMARY KEY (ts, gpu_id)
) PARTITION BY RANGE (ts);

-- The month partitions of both tables that cover [from_ts, to_ts], created where missing; how
-- many were created. The collector and the flush call it when an insert finds no partition,
-- and the flush (each run) and bin/init_db.sh for the coming month, so none is missing at
-- midnight of a new month.
CREATE FUNCTION telemetry.ensure_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, telemetry SET TimeZone = 'UTC'
AS $f$
DECLARE
    month    timestamptz := date_trunc('month', from_ts);
    parent   text;
    name     text;
    created  integer := 0;
BEGIN
    IF from_ts IS NULL OR to_ts IS NULL OR to_ts - from_ts > interval '100 years' THEN
        RAISE EXCEPTION 'partitions from % to %: not a range of times', from_ts, to_ts;
    END IF;
    WHILE month <= to_ts LOOP
        FOREACH parent IN ARRAY ARRAY['gpu_samples', 'gpu_raw'] LOOP
            name := parent || '_' || to_char(month, 'YYYYMM');
            IF to_regclass('telemetry.' || name) IS NULL THEN
                -- Two writers meeting a new month at once: the second waits, then finds it.
                PERFORM pg_advisory_xact_lock(hashtext('telemetry.ensure_partitions'));
                IF to_regclass('telemetry.' || name) IS NULL THEN
                    EXECUTE format('CREATE TABLE telemetry.%I PARTITION OF telemetry.%I'
                                   ' FOR VALUES FROM (%L) TO (%L)', name, parent, month,
                                   month + interval '1 month');
                    created := created + 1;
                END IF;
            END IF;
        END LOOP;
        month := month + interval '1 month';
    END LOOP;
    RETURN created;
END
$f$;

-- The id of a GPU identity, added when new. SECURITY DEFINER: the writer adds identities
-- without reading or changing the table.
CREATE FUNCTION telemetry.gpu_id(p_host text, p_gpu_uuid text, p_pci_bus_id text,
                                 p_gpu_name text, p_driver_version text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, telemetry AS $f$
DECLARE
    found_id integer;
BEGIN
    FOR attempt IN 1..2 LOOP
        SELECT g.gpu_id INTO found_id FROM telemetry.gpus AS g
        WHERE g.host = p_host AND g.gpu_uuid = p_gpu_uuid
          AND g.pci_bus_id IS NOT DISTINCT FROM p_pci_bus_id
          AND g.gpu_name IS NOT DISTINCT FROM p_gpu_name
          AND g.driver_version IS NOT DISTINCT FROM p_driver_version;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
        -- A new identity: one writer at a time adds it (then the other finds it above).
        PERFORM pg_advisory_xact_lock(hashtext('telemetry.gpus'));
    END LOOP;
    INSERT INTO telemetry.gpus (host, gpu_uuid, pci_bus_id, gpu_name, driver_version)
    VALUES (p_host, p_gpu_uuid, p_pci_bus_id, p_gpu_name, p_driver_version)
    RETURNING gpu_id INTO found_id;
    RETURN found_id;
END
$f$;

-- The id of a status (tag, memo, run id), added when new.
CREATE FUNCTION telemetry.status_id(p_status_tag text, p_status_memo text, p_run_id text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, telemetry AS $f$
DECLARE
    found_id integer;
BEGIN
    FOR attempt IN 1..2 LOOP
        SELECT s.status_id INTO found_id FROM telemetry.statuses AS s
        WHERE coalesce(s.status_tag, '') = coalesce(p_status_tag, '')
          AND coalesce(s.status_memo, '') = coalesce(p_status_memo, '')
          AND coalesce(s.run_id, '') = coalesce(p_run_id, '')
          AND s.status_tag IS NOT DISTINCT FROM p_status_tag
          AND s.status_memo IS NOT DISTINCT FROM p_status_memo
          AND s.run_id IS NOT DISTINCT FROM p_run_id;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
        PERFORM pg_advisory_xact_lock(hashtext('telemetry.statuses'));
    END LOOP;
    INSERT INTO telemetry.statuses (status_tag, status_memo, run_id)
    VALUES (p_status_tag, p_status_memo, p_run_id)
    RETURNING status_id INTO found_id;
    RETURN found_id;
END
$f$;

-- The same columns, in the same order and of the same types, as the table of versions 1 to 5.
CREATE VIEW telemetry.gpu_telemetry AS
SELECT
    s.ts, s.throttle_sw_power_cap_us, s.throttle_sync_boost_us, s.throttle_sw_thermal_us,
    s.throttle_hw_thermal_us, s.throttle_hw_power_brake_us, s.ecc_volatile_corrected,
    s.ecc_volatile_uncorrected, s.ecc_aggregate_corrected, s.ecc_aggregate_uncorrected,
    s.power_draw_w, s.power_limit_w, s.mem_used_mib, s.mem_total_mib, s.power_avg_w,
    s.power_limit_default_w, s.power_limit_min_w, s.power_limit_max_w, s.pcie_tx_kbps,
    s.pcie_rx_kbps, s.pcie_replay_count, s.retired_pages_sbe, s.retired_pages_dbe,
    s.remapped_rows_corr, s.remapped_rows_unc, s.gpu_index, s.temp_c, s.fan_pct, s.util_gpu_pct,
    s.util_mem_pct, s.clocks_gr_mhz, s.clocks_sm_mhz, s.clocks_mem_mhz, s.memory_temp_c,
    s.temp_tlimit_c, s.temp_slowdown_c, s.temp_shutdown_c, s.temp_max_operating_c,
    s.temp_target_c, s.memory_temp_max_c, s.clocks_video_mhz, s.clocks_max_gr_mhz,
    s.clocks_max_sm_mhz, s.clocks_max_mem_mhz, s.util_enc_pct, s.util_dec_pct, s.pcie_gen_cur,
    s.pcie_gen_max, s.pcie_width_cur, s.pcie_width_max, s.throttle_gpu_idle,
    s.throttle_app_clocks, s.throttle_sw_power_cap, s.throttle_hw_slowdown,
    s.throttle_hw_thermal, s.throttle_hw_power_brake, s.throttle_sync_boost,
    s.throttle_sw_thermal, s.throttle_display_clocks, s.ecc_enabled, s.retired_pages_pending,
    s.remapped_rows_pending, s.remapped_rows_failure, s.persistence_mode, g.host, g.gpu_uuid,
    g.pci_bus_id, g.gpu_name, st.status_tag, st.status_memo, st.run_id, s.pstate,
    g.driver_version,
    -- A subquery rather than a join: a query that does not ask for raw_json does not read
    -- telemetry.gpu_raw at all.
    (SELECT r.raw_json FROM telemetry.gpu_raw AS r WHERE r.ts = s.ts AND r.gpu_id = s.gpu_id)
        AS raw_json
FROM telemetry.gpu_samples AS s
JOIN telemetry.gpus AS g ON g.gpu_id = s.gpu_id
JOIN telemetry.statuses AS st ON st.status_id = s.status_id;

-- INSERT INTO telemetry.gpu_telemetry keeps working for hand-written SQL, a row at a time (the
-- collector and the flush write the tables directly, a statement per batch). A row already
-- stored is a unique violation, as it was on the table.
CREATE FUNCTION telemetry.gpu_telemetry_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, telemetry AS $f$
DECLARE
    ids jsonb := jsonb_build_object(
        'gpu_id', telemetry.gpu_id(NEW.host, NEW.gpu_uuid, NEW.pci_bus_id, NEW.gpu_name,
                                   NEW.driver_version),
        'status_id', telemetry.status_id(NEW.status_tag, NEW.status_memo, NEW.run_id));
BEGIN
    PERFORM telemetry.ensure_partitions(NEW.ts, NEW.ts);
    -- Every column of the view that telemetry.gpu_samples has, by name.
    INSERT INTO telemetry.gpu_samples
    SELECT (jsonb_populate_record(NULL::telemetry.gpu_samples, to_jsonb(NEW) || ids)).*;
    IF NEW.raw_json IS NOT NULL THEN
        INSERT INTO telemetry.gpu_raw (ts, gpu_id, raw_json)
        VALUES (NEW.ts, (ids ->> 'gpu_id')::integer, NEW.raw_json);
    END IF;
    RETURN NEW;
END
$f$;

CREATE TRIGGER gpu_telemetry_insert INSTEAD OF INSERT ON telemetry.gpu_telemetry
    FOR EACH ROW EXECUTE FUNCTION telemetry.gpu_telemetry_insert();

-- After every INSERT or COPY statement (not every row), over the rows it really inserted.
CREATE OR REPLACE FUNCTION telemetry.gpu_samples_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, telemetry AS $$
BEGIN
    -- First and last seen: the GPU inventory and the span of every run. Locked in id order, so
    -- that concurrent writers (the loop and a flush) never wait on each other in a circle.
    PERFORM 1 FROM telemetry.gpus
    WHERE gpu_id IN (SELECT gpu_id FROM inserted_rows) ORDER BY gpu_id FOR UPDATE;
    UPDATE telemetry.gpus AS g
    SET first_seen = LEAST(g.first_seen, m.first_ts), last_seen = GREATEST(g.last_seen, m.last_ts)
    FROM (SELECT gpu_id, min(ts) AS first_ts, max(ts) AS last_ts FROM inserted_rows
          GROUP BY gpu_id) AS m
    WHERE g.gpu_id = m.gpu_id
      AND (g.first_seen IS NULL OR m.first_ts < g.first_seen OR m.last_ts > g.last_seen);
    PERFORM 1 FROM telemetry.statuses
    WHERE status_id IN (SELECT status_id FROM inserted_rows) ORDER BY status_id FOR UPDATE;
    UPDATE telemetry.statuses AS s
    SET first_seen = LEAST(s.first_seen, m.first_ts), last_seen = GREATEST(s.last_seen, m.last_ts)
    FROM (SELECT status_id, min(ts) AS first_ts, max(ts) AS last_ts FROM inserted_rows
          GROUP BY status_id) AS m
    WHERE s.status_id = m.status_id
      AND (s.first_seen IS NULL OR m.first_ts < s.first_seen OR m.last_ts > s.last_seen);
    -- Rows moved from the wide table of versions 1 to 5 are in the rollup already.
    IF current_setting('telemetry.rollup', true) = 'off' THEN
        RETURN NULL;
    END IF;
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
    FROM (SELECT n.*, g.host, g.gpu_uuid, g.gpu_name, g.pci_bus_id, st.status_tag,
                 st.status_memo, st.run_id
          FROM inserted_rows AS n
          JOIN telemetry.gpus AS g ON g.gpu_id = n.gpu_id
          JOIN telemetry.statuses AS st ON st.status_id = n.status_id) AS inserted
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


CREATE TRIGGER gpu_samples_inserted AFTER INSERT ON telemetry.gpu_samples
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION telemetry.gpu_samples_inserted();
DROP FUNCTION IF EXISTS telemetry.gpu_telemetry_rollup();

-- When each GPU of these hosts kept a raw snapshot since a time (for RAW_EVERY_SEC), now from
-- telemetry.gpu_raw.
CREATE OR REPLACE FUNCTION telemetry.raw_snapshot_times(hosts text[], since timestamptz)
RETURNS TABLE (host text, gpu_uuid text, ts timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, telemetry AS $f$
    SELECT g.host, g.gpu_uuid, r.ts
    FROM telemetry.gpu_raw AS r JOIN telemetry.gpus AS g ON g.gpu_id = r.gpu_id
    WHERE g.host = ANY(hosts) AND r.ts >= since
    ORDER BY r.ts
$f$;

-- When the host's last sample was taken (the health check), from the inventory: a question the
-- insert-only writer may ask without reading the tables.
CREATE FUNCTION telemetry.last_sample_time(p_host text) RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, telemetry AS $f$
    SELECT max(last_seen) FROM telemetry.gpus WHERE host = p_host
$f$;

-- Retention: partitions wholly older than the cutoff are dropped, the rows of the partition
-- that holds the cutoff deleted; rows_deleted counts both. The one-minute rollup is kept.
CREATE OR REPLACE FUNCTION telemetry.prune(days double precision)
RETURNS TABLE (rows_deleted bigint, events_deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, telemetry AS $f$
DECLARE
    cutoff     timestamptz;
    part       record;
    counted    bigint;
BEGIN
    IF days IS NULL OR days <= 0 THEN
        RAISE EXCEPTION 'retention must be more than zero days, got %', days;
    END IF;
    cutoff := now() - make_interval(secs => days * 86400);
    rows_deleted := 0;
    FOR part IN
        SELECT c.oid::regclass AS name, p.relname AS parent,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                             'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper_bound
        FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        JOIN pg_class AS p ON p.oid = i.inhparent
        WHERE i.inhparent IN ('telemetry.gpu_samples'::regclass, 'telemetry.gpu_raw'::regclass)
        ORDER BY 3
    LOOP
        IF part.upper_bound <= cutoff THEN
            IF part.parent = 'gpu_samples' THEN
                EXECUTE format('SELECT count(*) FROM %s', part.name) INTO counted;
                rows_deleted := rows_deleted + counted;
            END IF;
            EXECUTE format('DROP TABLE %s', part.name);
        END IF;
    END LOOP;
    DELETE FROM telemetry.gpu_samples WHERE ts < cutoff;
    GET DIAGNOSTICS counted = ROW_COUNT;
    rows_deleted := rows_deleted + counted;
    DELETE FROM telemetry.gpu_raw WHERE ts < cutoff;
    DELETE FROM telemetry.collector_events WHERE ts < cutoff;
    GET DIAGNOSTICS events_deleted = ROW_COUNT;
    RETURN NEXT;
END
$f$;

-- Only the roles granted them (bin/init_db.sh --writer-role) may add identities, statuses and
-- partitions.
REVOKE EXECUTE ON FUNCTION telemetry.gpu_id(text, text, text, text, text),
    telemetry.status_id(text, text, text),
    telemetry.ensure_partitions(timestamptz, timestamptz) FROM PUBLIC;

-- This month and the next.
SELECT telemetry.ensure_partitions(now(), now() + interval '1 month');

COMMENT ON TABLE telemetry.gpus IS
    'one row per identity of a GPU on a host, as it was at the time: a GPU moved to another '
    'slot, a new driver or a renamed host is a new row; the GPU inventory';
COMMENT ON COLUMN telemetry.gpus.gpu_id IS 'the identity''s id in telemetry.gpu_samples';
COMMENT ON COLUMN telemetry.gpus.host IS 'host name of the collector';
COMMENT ON COLUMN telemetry.gpus.gpu_uuid IS 'GPU UUID (nvidia-smi uuid)';
COMMENT ON COLUMN telemetry.gpus.pci_bus_id IS 'PCI bus id, domain:bus:device.function';
COMMENT ON COLUMN telemetry.gpus.gpu_name IS 'product name';
COMMENT ON COLUMN telemetry.gpus.driver_version IS 'NVIDIA driver version';
COMMENT ON COLUMN telemetry.gpus.first_seen IS 'time of the first sample with this identity';
COMMENT ON COLUMN telemetry.gpus.last_seen IS 'time of the last sample with this identity';
COMMENT ON TABLE telemetry.statuses IS
    'one row per status (tag, memo, run id) samples were taken in: every run with its span';
COMMENT ON COLUMN telemetry.statuses.status_id IS 'the status''s id in telemetry.gpu_samples';
COMMENT ON COLUMN telemetry.statuses.status_tag IS 'what the machine was doing: idle, prod or bench (status.json)';
COMMENT ON COLUMN telemetry.statuses.status_memo IS 'free-text memo from status.json';
COMMENT ON COLUMN telemetry.statuses.run_id IS 'run id from status.json, e.g. gpuburn-20260104-000000';
COMMENT ON COLUMN telemetry.statuses.first_seen IS 'time of the first sample in this status';
COMMENT ON COLUMN telemetry.statuses.last_seen IS 'time of the last sample in this status';
COMMENT ON TABLE telemetry.gpu_samples IS
    'the readings of one GPU at one sample time, partitioned by month (UTC); identity and '
    'status by id; NULL means not reported, never 0';
COMMENT ON COLUMN telemetry.gpu_samples.gpu_id IS 'the GPU identity (telemetry.gpus)';
COMMENT ON COLUMN telemetry.gpu_samples.status_id IS 'the status (telemetry.statuses)';
COMMENT ON TABLE telemetry.gpu_raw IS
    'the GPU''s own nvidia-smi XML element as JSON, kept every RAW_EVERY_SEC, keyed and '
    'partitioned as telemetry.gpu_samples';
COMMENT ON VIEW telemetry.gpu_telemetry IS
    'one row per GPU per sample; NULL means not reported by nvidia-smi, never 0 (a view over '
    'telemetry.gpu_samples, gpus, statuses and gpu_raw)';
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
COMMENT ON COLUMN telemetry.gpu_samples.ts IS 'sample time (collector clock, UTC)';
COMMENT ON COLUMN telemetry.gpu_samples.gpu_index IS 'position of the GPU in the nvidia-smi document';
COMMENT ON COLUMN telemetry.gpu_samples.temp_c IS 'GPU core temperature, °C';
COMMENT ON COLUMN telemetry.gpu_samples.power_draw_w IS 'board power draw, W (instant, else power_draw, else average)';
COMMENT ON COLUMN telemetry.gpu_samples.power_limit_w IS 'power limit in force, W';
COMMENT ON COLUMN telemetry.gpu_samples.fan_pct IS 'fan speed, % of maximum (NULL on fanless cards such as the Tesla P40)';
COMMENT ON COLUMN telemetry.gpu_samples.pstate IS 'performance state, P0..P12';
COMMENT ON COLUMN telemetry.gpu_samples.util_gpu_pct IS 'GPU utilisation, %';
COMMENT ON COLUMN telemetry.gpu_samples.util_mem_pct IS 'memory controller utilisation, %';
COMMENT ON COLUMN telemetry.gpu_samples.mem_used_mib IS 'framebuffer used, MiB';
COMMENT ON COLUMN telemetry.gpu_samples.mem_total_mib IS 'framebuffer total, MiB';
COMMENT ON COLUMN telemetry.gpu_samples.clocks_gr_mhz IS 'graphics clock, MHz';
COMMENT ON COLUMN telemetry.gpu_samples.clocks_sm_mhz IS 'SM clock, MHz';
COMMENT ON COLUMN telemetry.gpu_samples.clocks_mem_mhz IS 'memory clock, MHz';
COMMENT ON COLUMN telemetry.gpu_samples.memory_temp_c IS 'HBM/GDDR temperature, °C';
COMMENT ON COLUMN telemetry.gpu_samples.temp_tlimit_c IS 'headroom to the slowdown temperature (T.Limit), °C';
COMMENT ON COLUMN telemetry.gpu_samples.temp_slowdown_c IS 'hardware slowdown threshold, °C';
COMMENT ON COLUMN telemetry.gpu_samples.temp_shutdown_c IS 'shutdown threshold, °C';
COMMENT ON COLUMN telemetry.gpu_samples.temp_max_operating_c IS 'maximum operating temperature, °C';
COMMENT ON COLUMN telemetry.gpu_samples.temp_target_c IS 'target temperature, °C';
COMMENT ON COLUMN telemetry.gpu_samples.memory_temp_max_c IS 'maximum memory temperature, °C';
COMMENT ON COLUMN telemetry.gpu_samples.power_avg_w IS 'power draw averaged by the driver, W';
COMMENT ON COLUMN telemetry.gpu_samples.power_limit_default_w IS 'default power limit, W';
COMMENT ON COLUMN telemetry.gpu_samples.power_limit_min_w IS 'lowest settable power limit, W';
COMMENT ON COLUMN telemetry.gpu_samples.power_limit_max_w IS 'highest settable power limit, W';
COMMENT ON COLUMN telemetry.gpu_samples.clocks_video_mhz IS 'video clock, MHz';
COMMENT ON COLUMN telemetry.gpu_samples.clocks_max_gr_mhz IS 'maximum graphics clock, MHz';
COMMENT ON COLUMN telemetry.gpu_samples.clocks_max_sm_mhz IS 'maximum SM clock, MHz';
COMMENT ON COLUMN telemetry.gpu_samples.clocks_max_mem_mhz IS 'maximum memory clock, MHz';
COMMENT ON COLUMN telemetry.gpu_samples.util_enc_pct IS 'encoder utilisation, %';
COMMENT ON COLUMN telemetry.gpu_samples.util_dec_pct IS 'decoder utilisation, %';
COMMENT ON COLUMN telemetry.gpu_samples.pcie_gen_cur IS 'current PCIe generation';
COMMENT ON COLUMN telemetry.gpu_samples.pcie_gen_max IS 'maximum PCIe generation of GPU and host';
COMMENT ON COLUMN telemetry.gpu_samples.pcie_width_cur IS 'current PCIe lanes';
COMMENT ON COLUMN telemetry.gpu_samples.pcie_width_max IS 'maximum PCIe lanes';
COMMENT ON COLUMN telemetry.gpu_samples.pcie_tx_kbps IS 'PCIe transmit, KB/s';
COMMENT ON COLUMN telemetry.gpu_samples.pcie_rx_kbps IS 'PCIe receive, KB/s';
COMMENT ON COLUMN telemetry.gpu_samples.pcie_replay_count IS 'PCIe replays since driver load (link errors)';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_gpu_idle IS 'clock event (throttle) reason gpu_idle active';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_app_clocks IS 'clock event (throttle) reason applications_clocks_setting active';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_sw_power_cap IS 'clock event (throttle) reason sw_power_cap active';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_hw_slowdown IS 'clock event (throttle) reason hw_slowdown active';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_hw_thermal IS 'clock event (throttle) reason hw_thermal_slowdown active';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_hw_power_brake IS 'clock event (throttle) reason hw_power_brake_slowdown active';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_sync_boost IS 'clock event (throttle) reason sync_boost active';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_sw_thermal IS 'clock event (throttle) reason sw_thermal_slowdown active';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_display_clocks IS 'clock event (throttle) reason display_clocks_setting active';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_sw_power_cap_us IS 'time sw_power_cap was active since driver load, µs (v13+)';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_sync_boost_us IS 'time sync_boost was active since driver load, µs (v13+)';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_sw_thermal_us IS 'time sw_therm_slowdown was active since driver load, µs (v13+)';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_hw_thermal_us IS 'time hw_therm_slowdown was active since driver load, µs (v13+)';
COMMENT ON COLUMN telemetry.gpu_samples.throttle_hw_power_brake_us IS 'time hw_power_brake was active since driver load, µs (v13+)';
COMMENT ON COLUMN telemetry.gpu_samples.ecc_enabled IS 'ECC mode in force';
COMMENT ON COLUMN telemetry.gpu_samples.ecc_volatile_corrected IS 'corrected ECC errors since driver load';
COMMENT ON COLUMN telemetry.gpu_samples.ecc_volatile_uncorrected IS 'uncorrected ECC errors since driver load';
COMMENT ON COLUMN telemetry.gpu_samples.ecc_aggregate_corrected IS 'corrected ECC errors over the GPU''s life';
COMMENT ON COLUMN telemetry.gpu_samples.ecc_aggregate_uncorrected IS 'uncorrected ECC errors over the GPU''s life';
COMMENT ON COLUMN telemetry.gpu_samples.retired_pages_sbe IS 'pages retired for repeated single-bit errors';
COMMENT ON COLUMN telemetry.gpu_samples.retired_pages_dbe IS 'pages retired for double-bit errors';
COMMENT ON COLUMN telemetry.gpu_samples.retired_pages_pending IS 'a page retirement waits for the next driver load';
COMMENT ON COLUMN telemetry.gpu_samples.remapped_rows_corr IS 'rows remapped for correctable errors';
COMMENT ON COLUMN telemetry.gpu_samples.remapped_rows_unc IS 'rows remapped for uncorrectable errors';
COMMENT ON COLUMN telemetry.gpu_samples.remapped_rows_pending IS 'a row remap waits for a GPU reset';
COMMENT ON COLUMN telemetry.gpu_samples.remapped_rows_failure IS 'a row remap failed';
COMMENT ON COLUMN telemetry.gpu_samples.persistence_mode IS 'driver persistence mode';
COMMENT ON COLUMN telemetry.gpu_raw.ts IS 'sample time (collector clock, UTC)';
COMMENT ON COLUMN telemetry.gpu_raw.gpu_id IS 'the GPU identity (telemetry.gpus)';
COMMENT ON COLUMN telemetry.gpu_raw.raw_json IS
    'the GPU''s own nvidia-smi XML element as JSON, kept every RAW_EVERY_SEC';
