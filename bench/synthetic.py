"""Synthetic telemetry generated inside PostgreSQL (generate_series), fast enough for
millions of rows: idle most of the day, a gpu-burn-like bench every day from 10:00 to 10:30
UTC with a first-order temperature rise, a thermal slowdown near its top, noise throughout."""

from __future__ import annotations

from datetime import datetime

import psycopg

GPUS = (("GPU-5a1b0000-0000-4000-8000-000000000001", "00000000:01:00.0", "Tesla P40", 0),
        ("GPU-5a1b0000-0000-4000-8000-000000000002", "00000000:02:00.0", "Tesla P40", 1))

_INSERT = """
INSERT INTO telemetry.gpu_telemetry (
    ts, host, gpu_uuid, pci_bus_id, gpu_name, gpu_index, status_tag, status_memo, run_id,
    temp_c, power_draw_w, power_limit_w, fan_pct, pstate, util_gpu_pct, util_mem_pct,
    mem_used_mib, mem_total_mib, clocks_gr_mhz, clocks_sm_mhz, clocks_mem_mhz, memory_temp_c,
    temp_slowdown_c, temp_shutdown_c, throttle_hw_thermal, throttle_sw_thermal,
    throttle_hw_slowdown, throttle_sw_power_cap, throttle_hw_power_brake, driver_version)
SELECT ts, %(host)s, %(uuid)s, %(bus)s, %(name)s, %(index)s,
       CASE WHEN bench THEN 'bench' ELSE 'idle' END,
       CASE WHEN bench THEN 'gpu-burn fan=25%%' ELSE 'baseline' END,
       CASE WHEN bench THEN 'gpuburn-' || to_char(ts, 'YYYYMMDD') || '-100000' END,
       round(temp)::smallint,
       CASE WHEN bench THEN 245 + random() * 5 ELSE 50 + random() * 3 END,
       250, NULL, CASE WHEN bench THEN 'P0' ELSE 'P8' END,
       CASE WHEN bench THEN 100 ELSE 0 END, CASE WHEN bench THEN 60 ELSE 0 END,
       CASE WHEN bench THEN 20000 ELSE 100 END, 24576,
       CASE WHEN throttled THEN 1100 WHEN bench THEN 1531 ELSE 544 END,
       CASE WHEN throttled THEN 1100 WHEN bench THEN 1531 ELSE 544 END,
       CASE WHEN bench THEN 3615 ELSE 405 END, NULL, 92, 95,
       throttled, false, false, false, false, '535.230.02'
FROM (
    SELECT ts, bench, temp, bench AND temp > %(slowdown)s AS throttled
    FROM (
        SELECT ts, bench,
               35 + %(offset)s + (random() - 0.5) * 2
                 + CASE WHEN bench THEN 45 * (1 - exp(-since / 120.0))
                        ELSE 45 * (1 - exp(-1800 / 120.0)) * exp(-least(after, 86400) / 200.0)
                   END AS temp
        FROM (
            SELECT ts,
                   (ts - date_trunc('day', ts)) BETWEEN interval '10 hours'
                       AND interval '10 hours 30 minutes' AS bench,
                   extract(epoch FROM ts - date_trunc('day', ts) - interval '10 hours')
                       AS since,
                   extract(epoch FROM ts - date_trunc('day', ts) - interval '10 hours 30 minutes')
                       + CASE WHEN ts - date_trunc('day', ts) < interval '10 hours 30 minutes'
                              THEN 86400 ELSE 0 END AS after
            FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - %(step)s::interval,
                                 %(step)s::interval) AS ts
        ) AS times
    ) AS temps
) AS rows
"""


def load(conn: psycopg.Connection, start: datetime, end: datetime, *, step_sec: float = 1.0,
         host: str = "x1ai", gpus=GPUS) -> int:
    """Insert rows for every GPU from start to end; returns the number of rows."""
    total = 0
    with conn.transaction():
        for uuid, bus, name, index in gpus:
            cur = conn.execute(_INSERT, {
                "host": host, "uuid": uuid, "bus": bus, "name": name, "index": index,
                "offset": 3 * index, "slowdown": 76, "start": start, "end": end,
                "step": f"{step_sec} seconds"})
            total += cur.rowcount
    return total
