"""The spool over its cap: the oldest samples go first, every one of them is counted, and the
count (with the events those files carried) reaches the database once it is back."""

from __future__ import annotations

import json

from tests.helpers import base_env, run_script, spool_files
from tests.reliability.harness import RunningLoop
from tests.test_loop import loops  # noqa: F401 - fixture


def spool_size(tmp_path) -> int:
    return sum(path.stat().st_size for path in spool_files(tmp_path))


def test_the_spool_over_its_cap_drops_the_oldest_and_counts_them(db, tmp_path,
                                                                  loops):  # noqa: F811
    cap_mb = 0.05
    down = base_env(tmp_path, None, SPOOL_MAX_MB=str(cap_mb))
    loop = RunningLoop(loops, tmp_path, down, 0.05)
    loop.wait_for_calls(60)
    assert loop.stop() == 0
    calls = len(loop.calls())
    ledger = json.loads((tmp_path / "spool" / ".dropped.json").read_text())
    dropped = ledger["samples"]
    left = spool_files(tmp_path)
    assert dropped > 0 and dropped + len(left) == calls
    assert spool_size(tmp_path) <= cap_mb * 1024 * 1024
    # Oldest first: what is left is the newest, in one unbroken run.
    assert min(json.loads(p.read_text())["ts"] for p in left) > ledger["last_ts"]
    assert "dropped the" in loop.output()
    # The outage_start event was in the oldest file: it survives in the ledger.
    assert [e["kind"] for e in ledger["events"]] == ["outage_start"]

    flushed = run_script("flush_spool.py", env=base_env(tmp_path, db.env), tmp_path=tmp_path)
    assert flushed.returncode == 0, flushed.stderr
    assert f"{dropped} sample(s) had been dropped by the spool cap" in flushed.stdout
    with db.connect() as conn:
        samples, duplicates = conn.execute(
            "SELECT count(DISTINCT ts), count(*) - count(DISTINCT (ts, host, gpu_uuid))"
            " FROM telemetry.gpu_telemetry").fetchone()
        events = conn.execute("SELECT kind, (data->>'samples')::int FROM"
                              " telemetry.collector_events ORDER BY kind").fetchall()
    assert samples + dropped == calls and duplicates == 0
    assert ("spool_dropped", dropped) in events
    assert ("outage_start", None) in events
    assert not (tmp_path / "spool" / ".dropped.json").exists()
    again = run_script("flush_spool.py", env=base_env(tmp_path, db.env), tmp_path=tmp_path)
    assert again.returncode == 0 and "spool is empty" in again.stdout


def test_one_shot_collection_keeps_the_cap_too(db, tmp_path):
    down = base_env(tmp_path, None, SPOOL_MAX_MB="0.03", RAW_EVERY_SEC="0")
    for _ in range(8):
        assert run_script("collect_once.py", env=down, tmp_path=tmp_path).returncode == 75
    assert spool_size(tmp_path) <= 0.03 * 1024 * 1024
    ledger = json.loads((tmp_path / "spool" / ".dropped.json").read_text())
    assert ledger["samples"] + len(spool_files(tmp_path)) == 8
