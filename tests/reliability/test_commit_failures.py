"""The moment between the server's COMMIT and the flusher knowing of it: the reply lost (the
connection dies with the transaction committed), or the flusher killed while it waits for the
reply. Either way the files are still there, the next flush replays them and ON CONFLICT
absorbs what was already stored."""

from __future__ import annotations

import re
import signal

from tests.helpers import base_env
from tests.reliability.harness import (
    RunningLoop,
    event_kinds,
    make_samples,
    run_flush,
    spool_json,
    spool_samples,
    start_script,
    stored_ts,
    wait_until,
)
from tests.reliability.invariants import assert_invariants


def test_commit_that_fails_after_committing_is_replayed(db, tmp_path, procs, make_proxy):
    total, batch = 600, 200
    spool_samples(tmp_path / "spool", make_samples(total))
    proxy = make_proxy()
    proxy.arm_commit("fail", nth=2)  # the second batch: committed, its reply never arrives

    through_proxy = base_env(tmp_path, {**db.env, **proxy.env()})
    first = run_flush(procs, through_proxy, tmp_path, "--batch", str(batch), label="flush-1")
    assert proxy.commit_intercepted.is_set(), first.output()
    assert first.process.returncode != 0, first.output()
    assert first.process.returncode == 75, first.output()
    assert "undelivered files kept" in first.stderr()
    # Batch 1 is stored and its files gone; batch 2 is stored but its files are kept.
    assert len(stored_ts(db)) == 2 * batch
    assert len(spool_json(tmp_path / "spool")) == total - batch

    second = run_flush(procs, base_env(tmp_path, db.env), tmp_path, "--batch", str(batch),
                       label="flush-2")
    assert second.process.returncode == 0, second.output()
    replayed = total - batch
    assert (f"flushed {replayed} samples ({2 * (replayed - batch)} rows stored, "
            f"{2 * batch} already there)") in second.stdout(), second.output()
    assert_invariants(db, tmp_path, total)


def test_flusher_killed_between_commit_and_unlink(db, tmp_path, procs, make_proxy):
    total, batch = 400, 200
    spool_samples(tmp_path / "spool", make_samples(total))
    proxy = make_proxy()
    proxy.arm_commit("hold", nth=1)

    through_proxy = base_env(tmp_path, {**db.env, **proxy.env()})
    flush = start_script(procs, "flush_spool.py", "--batch", str(batch), env=through_proxy,
                         tmp_path=tmp_path, label="flush-1")
    assert proxy.commit_intercepted.wait(60), flush.output()
    flush.process.send_signal(signal.SIGKILL)
    assert flush.wait() == -signal.SIGKILL
    proxy.release()
    # The first batch is committed, and not one file was deleted.
    assert len(stored_ts(db)) == batch
    assert len(spool_json(tmp_path / "spool")) == total

    second = run_flush(procs, base_env(tmp_path, db.env), tmp_path, "--batch", str(batch),
                       label="flush-2")
    assert second.process.returncode == 0, second.output()
    assert (f"flushed {total} samples ({2 * (total - batch)} rows stored, "
            f"{2 * batch} already there)") in second.stdout(), second.output()
    assert_invariants(db, tmp_path, total)


def test_loop_insert_whose_commit_reply_is_lost(db, tmp_path, procs, make_proxy):
    """The loop's own sample committed but the reply lost: the loop cannot know, so it spools
    the sample; once reconnected it drains it and ON CONFLICT absorbs the copy."""
    proxy = make_proxy()
    loop = RunningLoop(procs, tmp_path, base_env(tmp_path, {**db.env, **proxy.env()}), 0.2)
    wait_until(lambda: len(stored_ts(db)) >= 3, what="3 stored samples", alive=loop.process,
               output=loop.output)
    proxy.arm_commit("fail", nth=1)
    wait_until(proxy.commit_intercepted.is_set, what="a COMMIT reply dropped",
               alive=loop.process, output=loop.output)
    wait_until(lambda: "outage_end" in event_kinds(db) and not spool_json(tmp_path / "spool"),
               what="the spooled copy drained", alive=loop.process, output=loop.output)
    assert loop.stop() == 0, loop.output()
    absorbed = [int(already) for already in
                re.findall(r"flushed \d+ samples \(\d+ rows stored, (\d+) already there\)",
                           loop.output())]
    assert sum(absorbed) >= 2, loop.output()  # the committed sample's two GPU rows
    assert_invariants(db, tmp_path, len(loop.calls("ok")), calls=loop.calls("ok"))
