-- gpu-telemetry schema, version 5: the COMMENT of collector_events.kind names every kind the
-- collector records. Version 1 left out outage_reason, which the loop records when the reason
-- of an outage changes (another error class or message, e.g. the server back without the
-- schema); tests/test_schema.py holds this list against the kinds the code records.

COMMENT ON COLUMN telemetry.collector_events.kind IS
    'source_failed, source_recovered, gpu_unreadable, gpu_missing, gpu_back, outage_start, '
    'outage_reason, outage_end, spool_flushed, spool_dropped';
