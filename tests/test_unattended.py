"""The whole unattended story at once: the collector loop running, a gpu-burn run in tmux
through every phase, and what the database shows afterwards."""

from __future__ import annotations

import itertools

from tests.helpers import spool_files
from tests.reliability.harness import RunningLoop
from tests.test_loop import loops  # noqa: F401 - fixture
from tests.test_run_gpuburn import (  # noqa: F401 - fixtures
    burn_env,
    has_session,
    log_files,
    run_burn,
    tmux_server,
    wait_for,
)


def test_loop_and_gpuburn_in_tmux_record_every_phase(db, tmp_path, tmux_server, loops):  # noqa: F811
    env = {**tmux_server, **db.env, "SAMPLE_INTERVAL_SEC": "0.2"}
    loop = RunningLoop(loops, tmp_path, env)
    loop.wait_for_calls(2)
    result = run_burn(tmp_path, env, "--tmux", "--tmux-session", "accept",
                      "--pre-idle-sec", "1.5", "--pre-idle-memo", "pre gpu-burn idle (baseline)",
                      "--sec", "2", "--pre-tag", "bench", "--pre-memo", "gpu-burn (max workload)",
                      "--post-tag", "idle", "--post-memo", "post gpu-burn idle",
                      "--cooldown-sec", "1.5", "--cooldown-memo", "cooldown idle (post gpu-burn)",
                      "--final-tag", "prod", "--final-memo", "prod (normal usage)",
                      "--memo-suffix", " fan=25%", "--no-diag")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: not has_session(env, "accept") and log_files(tmp_path), timeout=40,
             what="the run in tmux to finish")
    loop.wait_for_calls(len(loop.calls()) + 3)
    assert loop.stop() == 0
    assert spool_files(tmp_path) == []

    with db.connect() as conn:
        rows = conn.execute("SELECT status_tag, status_memo, run_id, temp_c"
                            " FROM telemetry.gpu_telemetry ORDER BY ts").fetchall()
    periods = [(tag, memo) for (tag, memo), _ in itertools.groupby(rows, lambda r: r[:2])]
    assert periods[-5:] == [
        ("idle", "pre gpu-burn idle (baseline) fan=25%"),
        ("bench", "gpu-burn (max workload) fan=25%"),
        ("idle", "post gpu-burn idle fan=25%"),
        ("idle", "cooldown idle (post gpu-burn) fan=25%"),
        ("prod", "prod (normal usage) fan=25%"),
    ]
    run_ids = {run_id for tag, memo, run_id, _ in rows if tag == "bench"}
    assert len(run_ids) == 1 and next(iter(run_ids)).startswith("gpuburn-")
    idle = [t for tag, memo, _, t in rows if (memo or "").startswith("pre gpu-burn")]
    bench = sorted(t for tag, _, _, t in rows if tag == "bench")
    assert bench[len(bench) // 2] > max(idle) + 10  # the rise under bench
    [log] = log_files(tmp_path)
    assert "GPU 0: OK" in log.read_text()
