"""The collector loop's decisions (collector/loopstate.py and its timing, collector/cadence.py),
driven by a fake clock.

A `World` plays the loop's shell in a few lines: a fake source (readings parsed from real
captures in tests/fixtures/nvidia-smi/ by the real parser, or an nvidia-smi failure) and a fake
database at the store boundary (up, or raising one of the named errors). Nothing sleeps: an
hour of ticks runs in milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gpu_telemetry.collector.cadence import MAX_BACKOFF_SEC, Schedule
from gpu_telemetry.collector.collect import Taken
from gpu_telemetry.collector.loopstate import BACKLOG_CHECK_EVERY_SEC, LoopState
from gpu_telemetry.collector.parser import parse_document
from gpu_telemetry.errors import (
    DatabaseError,
    DatabaseUnreachable,
    LoginRefused,
    PermissionDenied,
    RejectedValue,
    SchemaMissing,
    SourceError,
)
from gpu_telemetry.records import Event, GpuReading, Sample, Status
from tests.helpers import FIXTURES

REFUSED = DatabaseUnreachable("database unreachable: connection refused")
NO_SCHEMA = SchemaMissing('database schema missing or out of date: relation '
                          '"telemetry.gpu_telemetry" does not exist; run bin/init_db.sh')
GPU_LOST = SourceError("gpu_lost", "Unable to determine the device handle for GPU0000:01:00.0: "
                       "GPU is lost. Reboot the system to recover this GPU", 15)


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start
        self.epoch = datetime(2026, 1, 4, tzinfo=UTC)

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return self.epoch + timedelta(seconds=self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def gpus_of(fixture: str = "dual-2080-v13.xml", *, keep: int | None = None
            ) -> list[GpuReading]:
    return parse_document((FIXTURES / fixture).read_bytes()).gpus[:keep]


class World:
    """The shell's side of one tick, with a fake source and a fake database."""

    def __init__(self, interval: float = 5.0, *, raw_every_sec: float = 600.0,
                 backlog: bool = False):
        self.clock = FakeClock()
        self.state = LoopState(interval, raw_every_sec=raw_every_sec, spool_label="/spool",
                               clock=self.clock, wall=self.clock.wall, backlog=backlog)
        self.gpus = gpus_of()
        self.failure: SourceError | None = None
        self.database: DatabaseError | None = None  # what connect/insert raises; None: up
        self.insert_error: DatabaseError | None = None  # raised by insert only
        self.connects = 0
        self.stored: list[Taken] = []
        self.spooled: list[tuple[str, Taken]] = []  # (reason, sample and its events)
        self.recorded: list[Event] = []  # events the shell writes directly (outage_end)
        self.flushed: list[Taken] = []  # spooled, then drained by the loop
        self.lines: list[str] = []
        self.changes: list[str] = []  # the lines said with --quiet too
        self.call_sec = 0.1

    def tick(self) -> None:
        """One tick at the time the schedule asked for: read, store or spool, next tick."""
        state = self.state
        gpus = [] if self.failure else [replace(g) for g in self.gpus]
        for gpu in gpus:
            gpu.raw_json = {"gpu": gpu.gpu_uuid} if state.raw.due(gpu.gpu_uuid) else None
        taken = Taken(Sample(self.clock.wall(), "h", Status("idle"), gpus), self.failure)
        self.clock.advance(self.call_sec)
        taken.events = state.observe(taken)
        rejected = None
        if state.want_connection():
            self.connects += 1
            if self.database is not None:
                state.connection_failed(self.database)
            else:
                state.connection_opened()
        if state.connected:
            error = self.insert_error
            if error is None:
                self.stored.append(taken)
                self.recorded += state.stored(taken.sample.gpus)
                if state.backlog_check_due():
                    state.backlog_found(bool(self.spooled))
                if state.drain_wanted():
                    self.flushed += [spooled for _, spooled in self.spooled]
                    self.spooled.clear()
                    state.drained(True, "flushed")
            elif not state.store_failed(error):
                rejected = error
        if taken not in self.stored:
            reason, events = state.to_spool(rejected)
            taken.events += events
            self.spooled.append((reason, taken))
            state.spooled(taken.sample.gpus)
        due = state.after_tick()
        for line in state.take_lines():
            self.lines.append(line.text)
            if line.change:
                self.changes.append(line.text)
        self.clock.now = max(self.clock.now, due)

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick()

    def said(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def events(self, kind: str) -> list[Event]:
        found = [e for _, taken in self.spooled for e in taken.events]
        found += [e for taken in self.stored + self.flushed for e in taken.events]
        return [e for e in found + self.recorded if e.kind == kind]


# -- the schedule ----------------------------------------------------------------------------

def test_ticks_fall_on_start_plus_k_intervals_whatever_the_calls_take():
    schedule = Schedule(0.25, start=100.0)
    now, starts = 100.0, []
    for k in range(10_000):
        starts.append(now)
        now += 0.05 + (k % 7) * 0.02  # calls of 50 to 170 ms
        now = schedule.after_tick(now)[0] + (k % 3) * 0.001  # the sleep wakes a little late
    drift = [start - (100.0 + k * 0.25) for k, start in enumerate(starts)]
    assert max(drift) < 0.0025 and min(drift) >= 0  # no error adds up over 10 000 ticks


def test_a_slow_call_skips_the_missed_ticks_never_bursts_them():
    schedule = Schedule(1.0, start=0.0)
    due, warning = schedule.after_tick(2.5)  # tick 0 took 2.5 s
    assert due == 3.0  # ticks 1 and 2 are skipped, not run late one after another
    assert warning.text == "warning: the sample took 2.5 s; skipped 2 tick(s)"
    due, warning = schedule.after_tick(3.2)
    assert (due, warning) == (4.0, None)


@pytest.mark.parametrize("ended", [1.0, 1.0 + 1e-12, 0.999999])
def test_a_call_ending_as_the_next_tick_is_due_runs_it(ended):
    due, warning = Schedule(1.0, start=0.0).after_tick(ended)
    assert due == 1.0 and warning is None


def test_the_next_tick_never_starts_before_the_call_in_hand_ended():
    schedule = Schedule(0.2, start=0.0)
    now = 0.0
    for duration in (0.5, 0.05, 0.61, 0.2, 0.39, 3.0, 0.0):
        ended = now + duration
        now = schedule.after_tick(ended)[0]
        assert now >= ended and math.isclose(now / 0.2, round(now / 0.2))


def test_a_slow_nvidia_smi_is_said_each_time_it_skips():
    world = World(interval=1.0)
    world.call_sec = 2.5
    world.run(3)
    assert len(world.said("skipped 2 tick(s)")) == 3
    assert world.clock.now == pytest.approx(world.state.schedule.start + 9.0)


# -- outages ---------------------------------------------------------------------------------

def test_an_outage_is_said_once_and_ends_with_the_spooled_count():
    world = World()
    world.run(2)
    world.database = REFUSED
    world.insert_error = REFUSED
    world.run(5)
    world.database = world.insert_error = None
    world.clock.advance(MAX_BACKOFF_SEC)  # past any backoff
    world.run(2)
    assert len(world.spooled) == 0  # drained by the loop once back
    assert world.said("spooling samples to /spool") == [
        "database unreachable: connection refused; spooling samples to /spool"]
    (end,) = world.events("outage_end")
    assert end.data["spooled"] == 5 and end.data["reason"] == str(REFUSED)
    assert len(world.said("database back after")) == 1
    assert "5 sample(s) spooled meanwhile" in world.said("database back after")[0]
    assert len(world.events("outage_start")) == 1


def test_the_outage_start_travels_with_the_first_spooled_sample():
    world = World()
    world.database = REFUSED
    world.run(3)
    first, *others = [taken for _, taken in world.spooled]
    assert [e.kind for e in first.events] == ["outage_start"]
    assert first.events[0].detail == str(REFUSED)
    assert all(not taken.events for taken in others)
    assert {reason for reason, _ in world.spooled} == {str(REFUSED)}


def test_a_change_of_reason_is_said_and_recorded_once():
    world = World()
    world.database = REFUSED
    world.run(4)
    world.database = None
    world.insert_error = NO_SCHEMA  # the server is up but was never initialised
    world.clock.advance(MAX_BACKOFF_SEC)
    world.run(30)
    assert len(world.changes) == len(set(world.changes)) == 3, world.changes  # none twice
    assert world.said("run bin/init_db.sh") == [f"{NO_SCHEMA}; samples still spooled"]
    assert [e.detail for e in world.events("outage_reason")] == [str(NO_SCHEMA)]
    assert world.spooled[-1][0] == str(NO_SCHEMA)


@pytest.mark.parametrize("second", [
    DatabaseUnreachable("database unreachable: timeout expired"),  # same class, new message
    LoginRefused("database login refused: password authentication failed; check PGUSER"),
    PermissionDenied("database permission denied: permission denied for table gpu_telemetry"),
])
def test_another_class_or_message_is_a_change(second):
    world = World()
    world.database = REFUSED
    world.run(3)
    world.database = second
    world.clock.advance(MAX_BACKOFF_SEC)
    world.run(20)
    assert len(world.said(str(REFUSED))) == 1 and len(world.said(str(second))) == 1
    assert len(world.events("outage_reason")) == 1


def test_a_database_never_initialised_is_retried_with_backoff_until_it_delivers():
    world = World(interval=1.0)
    world.insert_error = NO_SCHEMA
    world.run(60)
    assert world.stored == [] and len(world.spooled) == 60
    assert 6 <= world.connects <= 12  # 1, 2, 4, 8, 10, 10 ... s apart, not once a tick
    world.insert_error = None  # ./bin/init_db.sh was run
    world.run(int(MAX_BACKOFF_SEC) + 1)
    assert world.spooled == [] and world.stored
    assert len(world.said("spooling samples to")) == 1
    assert len(world.said("database back after")) == 1
    assert world.said("run bin/init_db.sh; spooling samples to /spool")


def test_a_rejected_value_spools_that_sample_only_and_keeps_the_connection():
    world = World()
    world.run(1)
    bad = RejectedValue("database rejected a value: value out of range")
    world.insert_error = bad
    world.run(3)
    world.insert_error = None
    world.run(1)
    assert world.connects == 1
    assert [reason for reason, _ in world.spooled] == [] and len(world.stored) == 2
    assert world.events("outage_start") == []
    assert len(world.said("value out of range")) == 1


# -- the source ------------------------------------------------------------------------------

def test_source_failure_and_recovery_are_said_and_recorded_once_per_change():
    world = World()
    world.run(2)
    world.failure = GPU_LOST
    world.run(5)
    world.failure = SourceError("timeout", "nvidia-smi did not answer within 10 s")
    world.run(2)
    world.failure = None
    world.run(3)
    failed = world.events("source_failed")
    assert [(e.data["failure"], e.data["exit_code"]) for e in failed] == [
        ("gpu_lost", 15), ("timeout", None)]
    assert failed[0].detail == GPU_LOST.message
    (recovered,) = world.events("source_recovered")
    assert recovered.data == {"failed_samples": 7, "failure": "timeout"}
    assert world.said("error: nvidia-smi failed (gpu_lost, exit 15): Unable to determine") != []
    assert len(world.said("GPU is lost")) == 1
    assert world.said("answers again") == ["nvidia-smi answers again after 7 failed sample(s)"]


def test_a_failed_reading_says_nothing_about_the_gpus():
    world = World()
    world.run(1)
    world.failure = GPU_LOST
    world.run(3)
    world.failure = None
    world.run(1)
    assert world.events("gpu_missing") == [] and world.events("gpu_back") == []


def test_a_gpu_lost_and_back_is_told_by_its_uuid():
    world = World()
    both = world.gpus
    world.run(2)
    world.gpus = both[:1]
    world.run(3)
    world.gpus = both
    world.run(3)
    gone = both[1].gpu_uuid
    assert [e.gpu_uuid for e in world.events("gpu_missing")] == [gone]
    assert [e.gpu_uuid for e in world.events("gpu_back")] == [gone]
    assert world.said("is no longer listed") == [
        f"warning: GPU NVIDIA GeForce RTX 2080 (00000000:02:00.0, {gone}) is no longer listed"
        " by nvidia-smi"]


def test_a_new_gpu_is_not_a_gpu_back():
    world = World()
    world.gpus = gpus_of("rtx-3080-v13.xml")
    world.run(2)
    world.gpus = [*world.gpus, *gpus_of("tesla-t4-v11.xml")]
    world.run(2)
    assert world.events("gpu_back") == []


def test_unreadable_gpus_and_the_status_file_are_said_once_per_change():
    state = World().state

    def observe(unreadable: list[str], status_problem: str | None) -> list[str]:
        taken = Taken(Sample(datetime.now(UTC), "h", Status(), gpus_of()), None,
                      unreadable, status_problem)
        return [e.kind for e in state.observe(taken)]

    bad = ["GPU 1 (id=00000000:02:00.0) unreadable: no uuid"]
    assert observe(bad, "status file x not found") == ["gpu_unreadable"]
    assert observe(bad, "status file x not found") == []
    assert observe([], None) == []
    assert [line.text for line in state.take_lines()] == [
        f"warning: {bad[0]}", "warning: status file x not found", "status file readable again"]


# -- raw snapshots ---------------------------------------------------------------------------

def test_raw_snapshots_once_every_raw_every_sec_per_gpu():
    world = World(interval=5.0, raw_every_sec=60.0)
    world.run(36)  # three minutes
    with_raw = [[g.raw_json is not None for g in t.sample.gpus] for t in world.stored]
    assert [i for i, row in enumerate(with_raw) if any(row)] == [0, 12, 24]
    assert all(all(row) for row in with_raw if any(row))  # each GPU on its own clock, both due


def test_raw_every_sec_zero_keeps_every_snapshot_and_a_seed_counts():
    world = World(raw_every_sec=0)
    world.run(3)
    assert all(g.raw_json for t in world.stored for g in t.sample.gpus)
    seeded = World(raw_every_sec=600)
    seeded.state.raw.seed({seeded.gpus[0].gpu_uuid: 590.0})  # stored by an earlier run
    seeded.run(3)
    first = [t.sample.gpus[0].raw_json for t in seeded.stored]
    second = [t.sample.gpus[1].raw_json for t in seeded.stored]
    assert [r is not None for r in first] == [False, False, True]  # due 10 s after start
    assert [r is not None for r in second] == [True, False, False]


# -- backoff and backlog ---------------------------------------------------------------------

def test_reconnect_backoff_doubles_to_ten_seconds_and_resets_after_a_store():
    clock = FakeClock()
    state = LoopState(0.125, raw_every_sec=600, spool_label="/s", clock=clock, wall=clock.wall)
    attempts = []
    for _ in range(640):  # 80 s of 0.125 s ticks
        if state.want_connection():
            attempts.append(clock.now)
            state.connection_failed(REFUSED)
        clock.advance(0.125)
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[:6] == [0.125, 1.0, 2.0, 4.0, 8.0, 10.0] and set(gaps[5:]) == {10.0}
    state.connection_opened()
    state.stored([])
    assert state.store_failed(REFUSED) is True  # a backend terminated under a working loop
    assert state.want_connection()  # reconnects at once
    state.connection_failed(REFUSED)
    assert not state.want_connection()
    clock.advance(1.0)
    assert state.want_connection()


def test_a_connection_that_fails_before_any_sample_gives_the_outage_its_reason():
    world = World()
    world.database = LoginRefused("database login refused: password authentication failed")
    world.run(1)
    assert world.spooled[0][0] == str(world.database)
    assert world.said("spooling samples to") == [f"{world.database}; spooling samples to /spool"]


def test_a_leftover_spool_is_drained_at_once_and_the_spool_looked_at_every_minute():
    world = World(backlog=True)
    world.spooled.append(("left by a one-shot", {}))
    world.run(1)
    assert world.spooled == [] and world.said("flushed")
    world.spooled.append(("another one-shot", {}))
    world.run(int(BACKLOG_CHECK_EVERY_SEC / 5) - 1)
    assert world.spooled  # not looked at yet
    world.run(2)
    assert world.spooled == []


def test_per_sample_lines_are_not_changes_and_a_tick_error_is_said_once():
    world = World()
    world.run(1)
    world.database = world.insert_error = REFUSED
    world.run(1)
    state = world.state
    assert [line.change for line in state.take_lines()] == []
    state.stored(world.gpus)
    state.to_spool()
    state.spooled(world.gpus)
    changes = {line.text.split()[0]: line.change for line in state.take_lines()}
    assert changes["stored"] is False and changes["spooled"] is False
    for _ in range(3):
        state.tick_failed("KeyError: 'temp_c'")
    state.tick_ok()
    state.tick_failed("KeyError: 'temp_c'")
    assert [line.text for line in state.take_lines()] == [
        "error: sample failed: KeyError: 'temp_c'"] * 2


def test_an_outage_end_that_could_not_be_written_goes_with_the_next_sample():
    world = World()
    world.database = REFUSED
    world.run(2)
    state = world.state
    state.connection_opened()
    events = state.stored(world.gpus)
    assert [e.kind for e in events] == ["outage_end"]
    state.unrecorded(events)  # the database failed again right then
    assert state.store_failed(REFUSED)
    _, carried = state.to_spool()
    assert [e.kind for e in carried] == ["outage_start", "outage_end"]
    state.connection_closed()
    assert not state.connected
