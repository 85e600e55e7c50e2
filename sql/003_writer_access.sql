-- gpu-telemetry schema, version 3: what the insert-only writer role may ask of the database.
--
-- The collector needs to know when each GPU last kept a raw snapshot (RAW_EVERY_SEC). Asking
-- the table directly would need SELECT on raw_json, i.e. read access to the raw readings; this
-- function answers only the question, with the owner's rights.

CREATE OR REPLACE FUNCTION telemetry.raw_snapshot_times(hosts text[], since timestamptz)
RETURNS TABLE (host text, gpu_uuid text, ts timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, telemetry AS $$
    SELECT t.host, t.gpu_uuid, t.ts
    FROM telemetry.gpu_telemetry AS t
    WHERE t.raw_json IS NOT NULL AND t.host = ANY(hosts) AND t.ts >= since
    ORDER BY t.ts
$$;

COMMENT ON FUNCTION telemetry.raw_snapshot_times(text[], timestamptz) IS
    'when each GPU of these hosts kept a raw snapshot since a time (for RAW_EVERY_SEC)';
