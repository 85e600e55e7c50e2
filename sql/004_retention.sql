-- gpu-telemetry schema, version 4: retention. With RETENTION_DAYS set, the flush timer calls
-- this to delete rows (raw snapshots with them) and collector events older than that; the
-- one-minute rollup is kept, so long-range plots still cover the pruned time. SECURITY DEFINER:
-- the writer role may call it, but may not DELETE on its own.

CREATE OR REPLACE FUNCTION telemetry.prune(days double precision)
RETURNS TABLE (rows_deleted bigint, events_deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, telemetry AS $$
DECLARE
    cutoff timestamptz;
BEGIN
    IF days IS NULL OR days <= 0 THEN
        RAISE EXCEPTION 'retention must be more than zero days, got %', days;
    END IF;
    cutoff := now() - make_interval(secs => days * 86400);
    DELETE FROM telemetry.gpu_telemetry WHERE ts < cutoff;
    GET DIAGNOSTICS rows_deleted = ROW_COUNT;
    DELETE FROM telemetry.collector_events WHERE ts < cutoff;
    GET DIAGNOSTICS events_deleted = ROW_COUNT;
    RETURN NEXT;
END
$$;

COMMENT ON FUNCTION telemetry.prune(double precision) IS
    'delete telemetry rows and collector events older than this many days (RETENTION_DAYS)';
