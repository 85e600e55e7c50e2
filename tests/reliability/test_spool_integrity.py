"""The spool itself under stress: a collector killed -9 in the middle of its writes, unreadable
files among good ones, two flushers and the loop racing for one backlog."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time

from gpu_telemetry.collector import flush as flush_module
from gpu_telemetry.collector.sample import default_host
from gpu_telemetry.collector.spool import BAD_DIR, TEMP_PREFIX
from gpu_telemetry.config import load_config
from gpu_telemetry.records import Sample
from tests.helpers import base_env
from tests.reliability.harness import (
    CALL_LOG,
    RunningLoop,
    make_samples,
    ok_calls,
    past_base,
    run_flush,
    spool_json,
    spool_samples,
    start_script,
    stored_ts,
    wait_until,
)
from tests.reliability.invariants import assert_invariants

SEED = int(os.environ.get("RELIABILITY_SEED", "20260104"))


def _spooled_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("spooled "))


def _spool_name(sample: Sample, suffix: str, *, temp: bool = False) -> str:
    stamp = "".join(ch for ch in sample.to_json()["ts"] if ch.isdigit())[:20]
    return f"{TEMP_PREFIX if temp else ''}{stamp}-{default_host()}-{suffix}.json"


def _body(sample: Sample) -> bytes:
    return json.dumps({**sample.to_json(), "_spool_reason": "reliability test"},
                      separators=(",", ":")).encode()


def test_collector_killed_in_the_middle_of_spool_writes(db, tmp_path, procs):
    """The loop spools every 0.02 s against a dead database and is killed -9 at random moments,
    15 times. Every sample it said it spooled is delivered, every delivered sample comes from
    one nvidia-smi call, and a temp file (torn or whole) is never delivered."""
    rng = random.Random(SEED)
    rounds = 15
    spool = tmp_path / "spool"
    down = base_env(tmp_path, None)
    loops = []
    for number in range(rounds):
        loop = RunningLoop(procs, tmp_path, down, 0.02, label=f"loop-{number}")
        loops.append(loop)
        wait_until(lambda loop=loop: _spooled_lines(loop.output()) >= 1,
                   what="a spooled sample", alive=loop.process, output=loop.output)
        time.sleep(rng.uniform(0.0, 0.25))
        loop.process.send_signal(signal.SIGKILL)
        assert loop.process.wait(timeout=30) == -signal.SIGKILL
    said_spooled = sum(_spooled_lines(loop.output()) for loop in loops)
    files = len(spool_json(spool))
    # A kill between the rename and the "spooled" line leaves a file nobody announced.
    assert said_spooled <= files <= said_spooled + rounds, (SEED, said_spooled, files)

    # What a writer killed mid-write leaves: a torn temp file and a whole one, both old enough
    # for the flusher to clean, and a whole young one that it must leave alone. None of them is
    # ever delivered (their samples are from 2001, far from anything the loop took).
    planted = make_samples(3, base=past_base(hours_ago=25 * 365 * 24))
    torn = spool / _spool_name(planted[0], "torn", temp=True)
    torn.write_bytes(_body(planted[0])[: len(_body(planted[0])) // 2])
    whole_old = spool / _spool_name(planted[1], "whole", temp=True)
    whole_old.write_bytes(_body(planted[1]))
    whole_young = spool / _spool_name(planted[2], "young", temp=True)
    whole_young.write_bytes(_body(planted[2]))
    old = time.time() - 1200
    for path in (torn, whole_old):
        os.utime(path, (old, old))

    flush = run_flush(procs, base_env(tmp_path, db.env), tmp_path)
    assert flush.process.returncode == 0, flush.output()
    delivered = len(stored_ts(db))
    assert delivered == files, (SEED, delivered, files)
    assert delivered >= said_spooled, (SEED, delivered, said_spooled)
    assert not torn.exists() and not whole_old.exists(), "stale temp files were not cleaned"
    assert whole_young.exists(), "a young temp file (maybe still being written) was removed"

    calls = ok_calls(tmp_path / CALL_LOG)
    dropped = len(calls) - delivered
    # Each kill loses at most the sample in hand (taken, not yet renamed into the spool).
    assert 0 <= dropped <= rounds, (SEED, len(calls), delivered)
    assert_invariants(db, tmp_path, len(calls), dropped=dropped, calls=calls)


def test_unreadable_files_are_quarantined_and_the_good_ones_delivered(db, tmp_path, procs):
    spool = tmp_path / "spool"
    good = make_samples(5)
    spool_samples(spool, good)
    body = _body(good[2])
    bad = {
        _spool_name(good[1], "corrupt"): (b"\x00\x01 not json at all \xfe", "not valid JSON"),
        _spool_name(good[2], "empty"): (b"", "empty file"),
        _spool_name(good[3], "torn"): (body[: len(body) // 2], "not valid JSON"),
    }
    for name, (content, _) in bad.items():
        (spool / name).write_bytes(content)

    env = base_env(tmp_path, db.env)
    flush = run_flush(procs, env, tmp_path)
    assert flush.process.returncode == 0, flush.output()
    assert "flushed 5 samples (10 rows stored, 0 already there)" in flush.stdout()
    assert "3 unreadable file(s) moved to spool/bad/" in flush.stdout()
    for name, (content, reason) in bad.items():
        kept = spool / BAD_DIR / name
        assert kept.read_bytes() == content, f"{name} was altered"
        assert reason in kept.with_name(name + ".reason").read_text(), name

    again = run_flush(procs, env, tmp_path, label="flush-2")
    assert again.process.returncode == 0 and "spool is empty" in again.stdout(), again.output()
    assert_invariants(db, tmp_path, len(good), quarantined=len(bad))


def test_two_flushers_and_the_loop_race_for_one_backlog(db, tmp_path, procs):
    backlog = 2000
    spool_samples(tmp_path / "spool", make_samples(backlog, step_sec=0.5))
    env = base_env(tmp_path, db.env)
    loop = RunningLoop(procs, tmp_path, env, 0.2)  # it drains the backlog too
    flushers = [start_script(procs, "flush_spool.py", "--wait", "10", env=env,
                             tmp_path=tmp_path, label=f"flush-{n}") for n in (1, 2)]
    for flusher in flushers:
        assert flusher.wait() == 0, flusher.output()
    wait_until(lambda: not spool_json(tmp_path / "spool"), what="the backlog delivered",
               alive=loop.process, output=loop.output)
    loop.wait_for_more_calls(2, "ok")
    assert loop.stop() == 0, loop.output()

    # Under the lock, each sample was offered by exactly one of the three.
    summaries = re.findall(r"flushed (\d+) samples \((\d+) rows stored, (\d+) already there\)",
                           "".join(f.stdout() for f in flushers) + loop.output())
    assert sum(int(samples) for samples, _, _ in summaries) == backlog, summaries
    assert all(int(already) == 0 for _, _, already in summaries), summaries
    calls = loop.calls("ok")
    assert_invariants(db, tmp_path, backlog + len(calls), calls=calls)


def test_a_spool_file_vanishing_under_the_flush_is_skipped(db, tmp_path, monkeypatch):
    """A file removed after the flusher listed the spool (by the operator, or a flusher that
    does not take the lock) is skipped, as flush._load_batch's own comment intends; the others
    are delivered."""
    samples = make_samples(5)
    spool_samples(tmp_path / "spool", samples)
    for key, value in base_env(tmp_path, db.env).items():
        monkeypatch.setenv(key, value)
    listed = flush_module.pending_files

    def listed_then_one_gone(spool_dir):
        found = listed(spool_dir)
        found[2].unlink()
        return found

    monkeypatch.setattr(flush_module, "pending_files", listed_then_one_gone)
    (tmp_path / "empty.env").touch()
    result = flush_module.flush_spool(load_config(tmp_path / "empty.env"))
    assert result.samples == len(samples) - 1 and not result.quarantined
    assert_invariants(db, tmp_path, len(samples) - 1)
