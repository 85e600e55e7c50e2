"""Synthetic telemetry generated inside PostgreSQL (generate_series), fast enough for
millions of rows: idle most of the day, a gpu-burn-like bench every day from 10:00 to 10:30
UTC with a first-order temperature rise, a thermal slowdown near its top, noise throughout."""

from __future__ import annotations

from datetime import datetime

import psycopg

GPUS = (("GPU-5a1b0000-0000-4000-8000-000000000001", "00000000:01:00.0", "Tesla P40", 0),
        ("GPU-5a1b0000-0000-4000-8000-000000000002", "00000000:02:00.0", "Tesla P40", 1))
DRIVER = "535.230.02"

_READINGS = ("gpu_index, temp_c, power_draw_w, power_limit_w, fan_pct, pstate, util_gpu_pct,"
             " util_mem_pct, mem_used_mib, mem_total_mib, clocks_gr_mhz, clocks_sm_mhz,"
             " clocks_mem_mhz, memory_temp_c, temp_slowdown_c, temp_shutdown_c,"
             " throttle_hw_thermal, throttle_sw_thermal, throttle_hw_slowdown,"
             " throttle_sw_power_cap, throttle_hw_power_brake")

# The statuses the rows below are taken in: idle all day, one bench run a day.
_STATUSES = """
SELECT telemetry.status_id('idle', 'baseline', NULL)
UNION ALL
SELECT telemetry.status_id('bench', 'gpu-burn fan=25%%',
                           'gpuburn-' || to_char(day, 'YYYYMMDD') || '-100000')
FROM generate_series(date_trunc('day', %(start)s::timestamptz), %(end)s::timestamptz,
                     interval '1 day') AS day
"""

# Straight into the narrow tables under telemetry.gpu_telemetry (one statement per GPU; the
# view's own INSERT trigger goes a row at a time).
_INSERT = f"""
INSERT INTO telemetry.gpu_samples (ts, gpu_id, status_id, {_READINGS})
SELECT r.ts, %(gpu_id)s, st.status_id, {_READINGS}
FROM (
SELECT ts, %(index)s AS gpu_index,
       CASE WHEN bench THEN 'bench' ELSE 'idle' END AS status_tag,
       CASE WHEN bench THEN 'gpu-burn fan=25%%' ELSE 'baseline' END AS status_memo,
       CASE WHEN bench THEN 'gpuburn-' || to_char(ts, 'YYYYMMDD') || '-100000' END AS run_id,
       round(temp)::smallint AS temp_c,
       CASE WHEN bench THEN 245 + random() * 5 ELSE 50 + random() * 3 END AS power_draw_w,
       250 AS power_limit_w, NULL::smallint AS fan_pct,
       CASE WHEN bench THEN 'P0' ELSE 'P8' END AS pstate,
       CASE WHEN bench THEN 100 ELSE 0 END AS util_gpu_pct,
       CASE WHEN bench THEN 60 ELSE 0 END AS util_mem_pct,
       CASE WHEN bench THEN 20000 ELSE 100 END AS mem_used_mib, 24576 AS mem_total_mib,
       CASE WHEN throttled THEN 1100 WHEN bench THEN 1531 ELSE 544 END AS clocks_gr_mhz,
       CASE WHEN throttled THEN 1100 WHEN bench THEN 1531 ELSE 544 END AS clocks_sm_mhz,
       CASE WHEN bench THEN 3615 ELSE 405 END AS clocks_mem_mhz,
       NULL::smallint AS memory_temp_c, 92 AS temp_slowdown_c, 95 AS temp_shutdown_c,
       throttled AS throttle_hw_thermal, false AS throttle_sw_thermal,
       false AS throttle_hw_slowdown, false AS throttle_sw_power_cap,
       false AS throttle_hw_power_brake
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
) AS r
JOIN telemetry.statuses AS st ON st.status_tag = r.status_tag AND st.status_memo = r.status_memo
    AND st.run_id IS NOT DISTINCT FROM r.run_id
"""


def load(conn: psycopg.Connection, start: datetime, end: datetime, *, step_sec: float = 1.0,
         host: str = "x1ai", gpus=GPUS) -> int:
    """Insert rows for every GPU from start to end; returns the number of rows."""
    total = 0
    span = {"start": start, "end": end}
    with conn.transaction():
        conn.execute("SELECT telemetry.ensure_partitions(%(start)s, %(end)s)", span)
        conn.execute(_STATUSES, span).fetchall()
        for uuid, bus, name, index in gpus:
            (gpu_id,) = conn.execute("SELECT telemetry.gpu_id(%s, %s, %s, %s, %s)",
                                     (host, uuid, bus, name, DRIVER)).fetchone()
            cur = conn.execute(_INSERT, {
                **span, "gpu_id": gpu_id, "index": index, "offset": 3 * index,
                "slowdown": 76, "step": f"{step_sec} seconds"})
            total += cur.rowcount
    return total
