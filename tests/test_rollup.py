"""The one-minute rollup kept by the trigger matches the rows it summarises, exactly."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from gpu_telemetry.collector.sample import sample_from_json
from gpu_telemetry.db.store import insert_samples
from gpu_telemetry.schema import counted_in, rollup_fields

METRICS = tuple(column.name for column in rollup_fields())
COUNTERS = ("thermal_slowdown_n", "power_cap_n")
START = datetime(2026, 1, 4, 0, 0, 30, tzinfo=UTC)


def synthetic_samples(count: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    samples = []
    for i in range(count):
        tag = "bench" if 40 <= i < 100 else "idle"
        gpus = []
        for index in range(2):
            # Every metric the rollup keeps gets a value, so a new one is checked too.
            gpu = {column.name: round(rng.uniform(10, 250), 2) if column.sql_type == "real"
                   else rng.randint(0, 100) for column in rollup_fields()}
            flags = {flag: rng.random() < 0.2 for counter in COUNTERS
                     for flag in counted_in(counter)}
            gpus.append({
                **gpu, **flags,
                "gpu_uuid": f"GPU-{index}", "gpu_name": "Tesla P40",
                "pci_bus_id": f"00000000:0{index + 1}:00.0", "gpu_index": index,
                "temp_c": rng.randint(30, 90), "memory_temp_c": None,
                "clocks_sm_mhz": rng.choice([544, 1303, 1531]),
                "fan_pct": None if index == 0 else rng.randint(20, 100),
                "temp_slowdown_c": 92, "throttle_sw_power_cap": None,
            })
        samples.append({"ts": (START + timedelta(seconds=2 * i)).isoformat(), "host": "x1ai",
                        "status_tag": tag, "status_memo": f"{tag} fan=25%", "run_id": None,
                        "gpus": gpus})
    return [sample_from_json(sample).sample for sample in samples]


def compare(conn) -> list:
    checks = ", ".join(
        f"min({m}) AS {m}_min, max({m}) AS {m}_max, coalesce(sum({m}), 0) AS {m}_sum, "
        f"count({m}) AS {m}_n" for m in METRICS)
    counts = ", ".join(f"count(*) FILTER (WHERE {' OR '.join(counted_in(c))})"
                       for c in COUNTERS)
    raw = conn.execute(
        f"SELECT date_trunc('minute', ts), gpu_uuid, status_tag, count(*), {checks}, {counts},"
        " max(temp_slowdown_c) FROM telemetry.gpu_telemetry GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).fetchall()
    columns = ", ".join(f"{m}_min, {m}_max, {m}_sum, {m}_n" for m in METRICS)
    rolled = conn.execute(
        f"SELECT bucket, gpu_uuid, status_tag, samples, {columns}, {', '.join(COUNTERS)},"
        " temp_slowdown_c FROM telemetry.gpu_telemetry_1m ORDER BY 1, 2, 3").fetchall()
    return [raw, rolled]


def test_rollup_matches_the_rows_whatever_the_batches(db):
    samples = synthetic_samples(150)
    with db.connect() as conn:
        insert_samples(conn, samples[:1], raw_every_sec=600)  # one row at a time, like the loop
        insert_samples(conn, samples[1:7], raw_every_sec=600)
        insert_samples(conn, samples[7:], raw_every_sec=600)  # a flush batch
        raw, rolled = compare(conn)
    assert len(rolled) > 5 and len(rolled) == len(raw)
    for got, want in zip(rolled, raw, strict=True):
        # Sums of real (float4) columns differ in the last digits by summation order.
        for mine, theirs in zip(got, want, strict=True):
            if isinstance(theirs, float):
                assert mine == pytest.approx(theirs, rel=1e-6), (got, want)
            else:
                assert mine == theirs, (got, want)


def test_replayed_rows_add_nothing_to_the_rollup(db):
    samples = synthetic_samples(60)
    with db.connect() as conn:
        insert_samples(conn, samples, raw_every_sec=600)
        before = conn.execute("SELECT sum(samples), sum(temp_c_sum)"
                              " FROM telemetry.gpu_telemetry_1m").fetchone()
        inserted, offered = insert_samples(conn, samples, raw_every_sec=600)
        after = conn.execute("SELECT sum(samples), sum(temp_c_sum)"
                             " FROM telemetry.gpu_telemetry_1m").fetchone()
    assert (inserted, offered) == (0, 120)
    assert before == after and before[0] == 120
