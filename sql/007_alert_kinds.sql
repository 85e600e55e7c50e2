-- gpu-telemetry schema, version 7: the COMMENT of collector_events.kind names the alerts' rows
-- (alert_<name>, one per firing and per resolving; docs/alerts.md), the kernel log's Xid lines
-- (xid) and PCIe AER lines (pcie_aer); tests/test_schema.py holds this list against the code.

COMMENT ON COLUMN telemetry.collector_events.kind IS
    'source_failed, source_recovered, gpu_unreadable, gpu_missing, gpu_back, outage_start, '
    'outage_reason, outage_end, spool_flushed, spool_dropped, xid, pcie_aer, alert_gpu_hot, '
    'alert_gpu_lost, alert_pcie_errors, alert_memory_errors, alert_database_outage, '
    'alert_source_failed';
