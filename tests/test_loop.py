"""collect_once.py --loop: one process, a drift-free schedule, outages spooled and flushed,
every change of state recorded once. The real script, the stand-in nvidia-smi, a real
PostgreSQL that the tests stop and start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, base_env, spool_files
from tests.reliability.harness import Processes, RunningLoop, wait_until


@pytest.fixture
def loops() -> Iterator[Processes]:
    """The loops a test starts (and their nvidia-smi calls), killed at the end if still up."""
    processes = Processes()
    try:
        yield processes
    finally:
        processes.cleanup()


def start(loops: Processes, tmp_path: Path, env: dict, interval: float | None = None,
          *extra: str) -> RunningLoop:
    return RunningLoop(loops, tmp_path, env, interval, extra=extra)


def wait_for(condition, loop: RunningLoop, what: str, timeout: float = 30) -> None:
    wait_until(condition, timeout=timeout, what=what, alive=loop.process, output=loop.output)


def query(db, statement: str):
    with db.connect() as conn:
        return conn.execute(statement).fetchall()


def row_counts(db) -> tuple[int, int]:
    ((rows, keys),) = query(db, "SELECT count(*), count(DISTINCT (ts, host, gpu_uuid))"
                                " FROM telemetry.gpu_telemetry")
    return rows, keys


def events(db) -> list[str]:
    return [kind for (kind,) in query(db, "SELECT kind FROM telemetry.collector_events"
                                          " ORDER BY ts, kind")]


def test_every_call_is_stored_once_and_sigterm_exits_0(db, tmp_path, loops):
    loop = start(loops, tmp_path, base_env(tmp_path, db.env), 0.2)
    loop.wait_for_calls(6)
    assert loop.stop() == 0
    calls = len(loop.calls())
    assert row_counts(db) == (2 * calls, 2 * calls)  # dual-2080: two GPUs per call
    output = loop.output()
    assert output.count("stored GPU0") == calls
    assert f"stopped after {calls} samples" in output
    assert "Traceback" not in output


def test_sigint_finishes_the_sample_and_exits_0(db, tmp_path, loops):
    env = base_env(tmp_path, db.env, mode="hang", NVSMI_STANDIN_HANG_SEC="1")
    loop = start(loops, tmp_path, env, 0.2)
    loop.wait_for_calls(1)
    time.sleep(0.3)  # the call is in flight
    assert loop.stop(signal.SIGINT) == 0
    assert len(loop.calls()) == 1
    assert row_counts(db) == (2, 2)  # the sample in hand was finished and stored


def test_schedule_does_not_drift(db, tmp_path, loops):
    interval = 0.2
    loop = start(loops, tmp_path, base_env(tmp_path, db.env), interval, "--quiet")
    loop.wait_for_calls(40)
    assert loop.stop() == 0
    calls = loop.calls()[:40]
    output = loop.output()
    assert "stored" not in output  # --quiet: no line per sample
    if "skipped" in output:
        pytest.skip("the machine was too loaded to hold every tick")  # said, and not a drift
    # Call k lands on start + k * interval: a late wake-up does not move the following ones.
    # A loop that slept `interval` after each sample would be 40 calls' time (> 1 s) late by
    # now; a loaded machine delays some calls, but not every one of the last ten.
    offsets = [(t - calls[0]) - k * interval for k, t in enumerate(calls)]
    assert min(abs(offset) for offset in offsets[-10:]) < 0.1, offsets


def test_slow_nvidia_smi_delays_ticks_and_never_overlaps(db, tmp_path, loops):
    env = base_env(tmp_path, db.env, mode="hang", NVSMI_STANDIN_HANG_SEC="0.5")
    loop = start(loops, tmp_path, env, 0.2)
    loop.wait_for_calls(4)
    assert loop.stop() == 0
    calls = loop.calls()
    gaps = [later - earlier for earlier, later in zip(calls, calls[1:], strict=False)]
    assert min(gaps) >= 0.5, gaps  # the next call starts only after the previous one ended
    assert "skipped" in loop.output()
    assert row_counts(db)[0] == 2 * len(calls)


def test_database_stop_and_start_under_the_loop(db, pg_server, tmp_path, loops):
    if not pg_server.can_restart:
        pytest.skip("an external test server cannot be stopped")
    loop = start(loops, tmp_path, base_env(tmp_path, db.env), 0.2)
    loop.wait_for_calls(3)
    pg_server.stop("fast")
    calls_before_outage = len(loop.calls())
    loop.wait_for_calls(calls_before_outage + 5)
    assert spool_files(tmp_path), loop.output()
    pg_server.start()
    deadline = time.monotonic() + 30
    while spool_files(tmp_path) or "outage_end" not in events(db):
        assert time.monotonic() < deadline, loop.output()
        time.sleep(0.2)
    assert loop.stop() == 0
    calls = len(loop.calls())
    assert row_counts(db) == (2 * calls, 2 * calls)
    assert spool_files(tmp_path) == []
    kinds = events(db)
    assert kinds.count("outage_start") == 1 and kinds.count("outage_end") == 1
    ((spooled,),) = query(db, "SELECT (data->>'spooled')::int FROM telemetry.collector_events"
                              " WHERE kind = 'outage_end'")
    assert spooled >= 5
    output = loop.output()
    assert output.count("spooling samples to") == 1 and output.count("database back") == 1


def test_a_database_never_initialised_is_delivered_once_init_db_has_run(empty_db, tmp_path,
                                                                        loops):
    """The server answers but has no schema: the loop spools, says so once with the fix, keeps
    retrying, and delivers everything after bin/init_db.sh, without a restart."""
    loop = start(loops, tmp_path, base_env(tmp_path, empty_db.env), 0.2)
    wait_for(lambda: len(spool_files(tmp_path)) >= 15, loop, "15 spooled samples")
    said = [line for line in loop.output().splitlines() if "bin/init_db.sh" in line]
    assert len(said) == 1 and "schema missing" in said[0], loop.output()
    init = subprocess.run(["bash", str(REPO_ROOT / "bin" / "init_db.sh")],
                          env={**os.environ, **empty_db.env}, capture_output=True, text=True,
                          timeout=120, check=False)
    assert init.returncode == 0, init.stdout + init.stderr
    wait_for(lambda: not spool_files(tmp_path) and "outage_end" in events(empty_db), loop,
             "the spool delivered after init_db.sh")
    assert loop.stop() == 0
    calls = len(loop.calls())
    assert row_counts(empty_db) == (2 * calls, 2 * calls)
    assert loop.output().count("spooling samples to") == 1
    assert "Traceback" not in loop.output()


def test_terminated_backend_reconnects_without_losing_a_sample(db, tmp_path, loops):
    loop = start(loops, tmp_path, base_env(tmp_path, db.env), 0.2)
    loop.wait_for_calls(3)
    query(db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
              " WHERE application_name = 'gpu-telemetry'")
    loop.wait_for_calls(len(loop.calls()) + 5)
    deadline = time.monotonic() + 15
    while spool_files(tmp_path):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert loop.stop() == 0
    calls = len(loop.calls())
    assert row_counts(db) == (2 * calls, 2 * calls)
    assert loop.process.returncode == 0 and "Traceback" not in loop.output()


def test_source_failure_is_recorded_once_per_change(db, tmp_path, loops):
    mode_file = tmp_path / "mode"
    env = base_env(tmp_path, db.env, NVSMI_STANDIN_MODE_FILE=str(mode_file))
    loop = start(loops, tmp_path, env, 0.15)
    loop.wait_for_calls(2)
    mode_file.write_text("gpu_lost\n")
    loop.wait_for_calls(len(loop.calls()) + 5)
    mode_file.unlink()
    loop.wait_for_calls(len(loop.calls()) + 3)
    assert loop.stop() == 0
    assert events(db).count("source_failed") == 1
    assert events(db).count("source_recovered") == 1
    ((detail, failed),) = query(db, "SELECT detail, (data->>'failed_samples')::int"
                                    " FROM telemetry.collector_events"
                                    " WHERE kind = 'source_recovered'")
    assert failed >= 5 and "answers again" in detail
    errors = [line for line in loop.output().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "GPU is lost" in errors[0], errors  # the alert says it apart


def test_leftover_spool_is_flushed_by_the_loop(db, tmp_path, loops):
    down = base_env(tmp_path, None)
    for _ in range(3):
        subprocess.run([sys.executable, str(REPO_ROOT / "bin" / "collect_once.py")], env=down,
                       capture_output=True, check=False)
    assert len(spool_files(tmp_path)) == 3
    loop = start(loops, tmp_path, base_env(tmp_path, db.env), 0.2)
    loop.wait_for_calls(3)
    deadline = time.monotonic() + 15
    while spool_files(tmp_path):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert loop.stop() == 0
    assert row_counts(db)[0] == 2 * (3 + len(loop.calls()))


@pytest.mark.parametrize("args", [["--interval", "0"], ["--interval", "-1"],
                                  ["--interval", "abc"], ["--dry-run"]])
def test_bad_loop_options_are_usage_errors(tmp_path, args):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bin" / "collect_once.py"),
                             "--loop", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_interval_needs_loop(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bin" / "collect_once.py"),
                             "--interval", "1"], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "need --loop" in result.stderr


def test_a_database_that_never_answers_does_not_hold_up_sampling(tmp_path, loops):
    """A host that accepts the connection and then says nothing (a hung server, a half-open
    network path) holds a connect for PGCONNECT_TIMEOUT; the ticks must not wait for it."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
    try:
        env = base_env(tmp_path, {"PGHOST": "127.0.0.1", "PGPORT": str(silent.getsockname()[1]),
                                  "PGUSER": "postgres", "PGDATABASE": "postgres"},
                       PGCONNECT_TIMEOUT="3")
        loop = start(loops, tmp_path, env, 0.2)
        loop.wait_for_calls(20)
        assert loop.stop() == 0
    finally:
        silent.close()
    calls = loop.calls()
    gaps = [later - earlier for earlier, later in zip(calls, calls[1:], strict=False)]
    assert max(gaps) < 0.2 + 1.2, gaps  # at most the short wait for a connect, never 3 s
    assert len(spool_files(tmp_path)) == len(calls)  # every sample kept
    assert "spooling samples to" in loop.output()
