"""The database failing under the collector and the flusher: down from the start, stopped
(fast, immediate) or restarted under the loop, a backend terminated in the middle of a flush,
every connection cut by the network. Each ends with assert_invariants."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gpu_telemetry.collector.sample import default_host
from tests.helpers import base_env, run_script
from tests.reliability.harness import (
    CALL_LOG,
    RunningLoop,
    event_kinds,
    make_samples,
    ok_calls,
    past_base,
    query,
    run_flush,
    spool_json,
    spool_samples,
    start_script,
    stored_ts,
    synchronous_commit_on,
    wait_until,
)
from tests.reliability.invariants import assert_invariants

INTERVAL = 0.2


def _drained_after(db, tmp_path, since: datetime):
    """True once the spool is empty and a sample taken after `since` is stored."""
    def check():
        if spool_json(tmp_path / "spool"):
            return False
        stored = stored_ts(db)
        return bool(stored) and stored[-1] > since
    return check


def test_database_down_from_the_start_then_flushed_twice(db, tmp_path, procs):
    """collect_once.py against a dead database: exit 75 and one spool file per run; the
    database comes up, a flush delivers them all, a second flush changes nothing."""
    log = tmp_path / CALL_LOG
    down = base_env(tmp_path, None, NVSMI_STANDIN_LOG=str(log))
    runs = 4
    for number in range(1, runs + 1):
        result = run_script("collect_once.py", env=down, tmp_path=tmp_path)
        assert result.returncode == 75, result.stderr
        assert "sample spooled to" in result.stderr
        assert len(spool_json(tmp_path / "spool")) == number
    assert len(ok_calls(log)) == runs

    up = base_env(tmp_path, db.env)
    first = run_flush(procs, up, tmp_path, label="flush-1")
    assert first.process.returncode == 0, first.output()
    assert f"flushed {runs} samples ({2 * runs} rows stored, 0 already there)" in first.stdout()
    before = query(db, "SELECT count(*) FROM telemetry.gpu_telemetry")
    events_before = event_kinds(db)

    second = run_flush(procs, up, tmp_path, label="flush-2")
    assert second.process.returncode == 0, second.output()
    assert "spool is empty" in second.stdout()
    assert query(db, "SELECT count(*) FROM telemetry.gpu_telemetry") == before
    assert event_kinds(db) == events_before
    assert events_before.count("spool_flushed") == 1

    assert_invariants(db, tmp_path, len(ok_calls(log)), calls=ok_calls(log))


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_database_stopped_under_the_loop(db, restartable, tmp_path, procs, mode):
    """The server stops (fast: clean shutdown; immediate: a crash) while the loop runs; the
    loop spools, and drains the spool once the server is back."""
    if mode == "immediate":
        synchronous_commit_on(db)
    loop = RunningLoop(procs, tmp_path, base_env(tmp_path, db.env), INTERVAL)
    wait_until(lambda: len(stored_ts(db)) >= 3, what="3 stored samples", alive=loop.process,
               output=loop.output)
    restartable.stop(mode)
    loop.wait_for_more_calls(5, "ok")
    wait_until(lambda: spool_json(tmp_path / "spool"), what="a spooled sample",
               alive=loop.process, output=loop.output)
    restartable.start()
    back = datetime.now(UTC)
    wait_until(_drained_after(db, tmp_path, back), what="the spool drained",
               alive=loop.process, output=loop.output)
    assert loop.stop() == 0, loop.output()
    kinds = event_kinds(db)
    assert kinds.count("outage_start") == 1 and kinds.count("outage_end") == 1, kinds
    assert "Traceback" not in loop.output()
    assert_invariants(db, tmp_path, len(loop.calls("ok")), calls=loop.calls("ok"))


def test_backend_terminated_in_the_middle_of_a_big_flush(db, tmp_path, procs):
    """3000 spooled samples flushed in batches of 200; the flusher's backend is terminated
    once some batches are committed: exit 75, exactly the uncommitted files kept; the next
    flush delivers the rest.

    To terminate it mid-way every time, another transaction holds an uncommitted copy of one
    GPU row of sample 2000 (its identity and status committed before, the row inserted with
    triggers off, so that the transaction holds that row's key and nothing else): the flusher
    commits the batches before it, then waits on that row's key in its own INSERT ... ON
    CONFLICT and is terminated while it waits."""
    total, batch = 3000, 200
    base = past_base()
    samples = make_samples(total, base=base, step_sec=1.0)
    spool_samples(tmp_path / "spool", samples)
    env = base_env(tmp_path, db.env)

    blocker_sample = samples[2000]
    gpu = blocker_sample.gpus[0]
    status = blocker_sample.status
    with db.connect() as conn:
        ids = conn.execute(
            "SELECT telemetry.gpu_id(%s, %s, %s, %s, %s), telemetry.status_id(%s, %s, %s)",
            (default_host(), gpu.gpu_uuid, gpu.pci_bus_id, gpu.gpu_name, gpu.driver_version,
             status.tag, status.memo, status.run_id)).fetchone()
        conn.execute("SELECT telemetry.ensure_partitions(%s, %s)",
                     (samples[0].ts, samples[-1].ts))
    blocker = db.connect()
    try:
        blocker.execute("BEGIN")
        blocker.execute("SET LOCAL session_replication_role = replica")
        blocker.execute("INSERT INTO telemetry.gpu_samples (ts, gpu_id, status_id)"
                        " VALUES (%s, %s, %s)", (blocker_sample.ts, *ids))
        flush = start_script(procs, "flush_spool.py", "--batch", str(batch), env=env,
                             tmp_path=tmp_path, label="flush-1")

        def waiting_backend():
            rows = query(db, "SELECT pid FROM pg_stat_activity WHERE application_name ="
                             " 'gpu-telemetry' AND datname = %s AND wait_event_type = 'Lock'",
                         (db.name,))
            return rows[0][0] if rows else None

        pid = wait_until(waiting_backend, what="the flusher waiting on the lock",
                         alive=flush.process, output=flush.output)
        ((terminated,),) = query(db, "SELECT pg_terminate_backend(%s)", (pid,))
        assert terminated
        assert flush.wait() == 75, flush.output()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert "undelivered files kept" in flush.stderr()

    committed = len(stored_ts(db))
    assert 0 < committed < total, committed
    assert committed % batch == 0, f"{committed} samples: a batch was half committed"
    assert len(spool_json(tmp_path / "spool")) == total - committed, (
        "files are kept exactly for the batches that did not commit")

    second = run_flush(procs, env, tmp_path, "--batch", str(batch), label="flush-2")
    assert second.process.returncode == 0, second.output()
    assert (f"flushed {total - committed} samples ({2 * (total - committed)} rows stored,"
            f" 0 already there)") in second.stdout()
    assert_invariants(db, tmp_path, total)


def test_database_restart_under_the_loop(db, restartable, tmp_path, procs):
    loop = RunningLoop(procs, tmp_path, base_env(tmp_path, db.env), INTERVAL)
    wait_until(lambda: len(stored_ts(db)) >= 3, what="3 stored samples", alive=loop.process,
               output=loop.output)
    restartable.restart()
    back = datetime.now(UTC)
    wait_until(_drained_after(db, tmp_path, back), what="a sample stored after the restart",
               alive=loop.process, output=loop.output)
    assert loop.stop() == 0, loop.output()
    assert "Traceback" not in loop.output()
    assert_invariants(db, tmp_path, len(loop.calls("ok")), calls=loop.calls("ok"))


def test_network_cut_under_the_loop(db, tmp_path, procs, make_proxy):
    """Every connection dropped by the network (the proxy), new ones refused for a while,
    then let through again: spooled meanwhile, drained after."""
    proxy = make_proxy()
    loop = RunningLoop(procs, tmp_path, base_env(tmp_path, {**db.env, **proxy.env()}),
                       INTERVAL)
    wait_until(lambda: len(stored_ts(db)) >= 3, what="3 stored samples", alive=loop.process,
               output=loop.output)
    assert proxy.drop_all(refuse=True) >= 1
    wait_until(lambda: len(spool_json(tmp_path / "spool")) >= 3, what="3 spooled samples",
               alive=loop.process, output=loop.output)
    proxy.refuse_new(False)
    back = datetime.now(UTC)
    wait_until(_drained_after(db, tmp_path, back), what="the spool drained",
               alive=loop.process, output=loop.output)
    assert loop.stop() == 0, loop.output()
    kinds = event_kinds(db)
    assert kinds.count("outage_start") == 1 and kinds.count("outage_end") == 1, kinds
    assert_invariants(db, tmp_path, len(loop.calls("ok")), calls=loop.calls("ok"))
