"""nvidia-smi failing under the loop for a few ticks, then answering again: hung (and deaf to
SIGTERM), the GPU fallen off the bus, the driver and library out of step. The loop keeps its
schedule, records one source_failed and one source_recovered, and stores every good reading
exactly once."""

from __future__ import annotations

import pytest

from tests.helpers import base_env
from tests.reliability.harness import (
    RunningLoop,
    event_kinds,
    event_rows,
    live_group_members,
    logged_pids,
    set_mode,
)
from tests.reliability.invariants import assert_invariants

INTERVAL = 0.15
FAILING_TICKS = 3


def _failing_for_a_while(procs, db, tmp_path, mode: str, **extra: str) -> RunningLoop:
    """ok, then `mode` for FAILING_TICKS calls, then ok again; the loop stopped with SIGTERM
    (exit 0 checked)."""
    mode_file = tmp_path / "nvidia-smi.mode"
    env = base_env(tmp_path, db.env, NVSMI_STANDIN_MODE_FILE=str(mode_file), **extra)
    loop = RunningLoop(procs, tmp_path, env, INTERVAL)
    loop.wait_for_calls(3, "ok")
    set_mode(mode_file, mode)
    loop.wait_for_calls(FAILING_TICKS, mode)
    set_mode(mode_file, None)
    loop.wait_for_more_calls(3, "ok")
    assert loop.stop() == 0, loop.output()
    assert "Traceback" not in loop.output()
    return loop


def _one_failure_and_one_recovery(db, failure: str) -> tuple[str, dict]:
    kinds = event_kinds(db)
    assert kinds.count("source_failed") == 1, kinds
    assert kinds.count("source_recovered") == 1, kinds
    assert kinds.index("source_failed") < kinds.index("source_recovered"), kinds
    ((_, detail, data),) = event_rows(db, "source_failed")
    assert data["failure"] == failure, data
    ((_, _, recovered),) = event_rows(db, "source_recovered")
    assert recovered["failure"] == failure and recovered["failed_samples"] >= FAILING_TICKS
    # The GPUs did not go anywhere: no reading said so.
    assert not {"gpu_missing", "gpu_back"} & set(kinds), kinds
    return detail, data


def test_nvidia_smi_hanging_and_ignoring_term(db, tmp_path, procs):
    loop = _failing_for_a_while(procs, db, tmp_path, "hang_ignore_term",
                                NVIDIA_SMI_TIMEOUT_SEC="0.3")
    detail, _ = _one_failure_and_one_recovery(db, "timeout")
    assert "timed out after 0.3 s" in detail, detail
    assert "skipped" in loop.output()  # the hung calls held the schedule, never overlapped
    # Every hung call was killed with its whole process group: nothing is left sleeping.
    hung = [pid for pid, mode in zip(logged_pids(loop.log), _modes(loop), strict=True)
            if mode == "hang_ignore_term"]
    assert len(hung) >= FAILING_TICKS
    assert not [pid for pid in hung if live_group_members(pid)], "a hung nvidia-smi survived"
    assert_invariants(db, tmp_path, len(loop.calls("ok")), calls=loop.calls("ok"))


def _modes(loop: RunningLoop) -> list[str]:
    return [line.split()[2] for line in loop.log.read_text().splitlines()]


@pytest.mark.parametrize(("mode", "failure", "said"), [
    pytest.param("gpu_lost", "gpu_lost",
                 ["Unable to determine the device handle for GPU0000:01:00.0: GPU is lost.",
                  "Reboot the system to recover this GPU"], id="gpu_lost"),
    pytest.param("driver_mismatch", "driver_mismatch",
                 ["Failed to initialize NVML: Driver/library version mismatch",
                  "NVML library version: 570.133"], id="driver_mismatch"),
])
def test_source_failing_for_a_few_ticks_then_back(db, tmp_path, procs, mode, failure, said):
    """A GPU falling off the bus and coming back; a driver/library mismatch, then fixed. The
    event keeps nvidia-smi's own message (on one line)."""
    loop = _failing_for_a_while(procs, db, tmp_path, mode)
    detail, data = _one_failure_and_one_recovery(db, failure)
    for words in said:
        assert words in detail, detail
    assert data["exit_code"] == {"gpu_lost": 15, "driver_mismatch": 18}[mode], data
    # Said once, on the change (the alert's line, apart, quotes it too).
    errors = [line for line in loop.output().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and said[0] in errors[0], loop.output()
    assert_invariants(db, tmp_path, len(loop.calls("ok")), calls=loop.calls("ok"))
