"""The collector loop: one long-lived process, one database connection, a drift-free schedule.

Ticks fall on start + k * interval of the monotonic clock. A slow nvidia-smi delays the next
tick (the missed ones are skipped, never run late in a burst) and a call is never started while
another is in flight. While the database is away, samples go to the spool; once it is back, the
loop drains the spool a little every tick, under the same lock as flush_spool.py. Every change of
state (database lost or back, nvidia-smi failing or back, a GPU missing or back) is said once on
stdout and recorded once in telemetry.collector_events.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from gpu_telemetry.collector.collect import Taken, take_sample
from gpu_telemetry.collector.flush import deliver, record_flush
from gpu_telemetry.collector.sample import default_host, event, now_utc, validate_sample
from gpu_telemetry.collector.spool import (
    SpoolBusy,
    SpoolCap,
    pending_files,
    spool_lock,
    write_spool,
)
from gpu_telemetry.config import Config
from gpu_telemetry.db.errors import first_line
from gpu_telemetry.db.store import connect, insert_samples, last_raw_times
from gpu_telemetry.errors import DatabaseUnreachable, SpoolError

MAX_RECONNECT_BACKOFF_SEC = 10.0
CONNECT_WAIT_SEC = 1.0
BACKLOG_CHECK_EVERY_SEC = 60.0


@dataclass
class Outage:
    started: datetime
    reason: str
    spooled: int = 0


def _gpu_label(gpu: dict) -> str:
    return f"{gpu['gpu_name']} ({gpu['pci_bus_id']}, {gpu['gpu_uuid']})"


def _reading_line(gpus: list[dict]) -> str:
    def value(number, unit):
        return "-" if number is None else f"{number:g}{unit}"

    return " | ".join(
        f"GPU{g['gpu_index']} {value(g['temp_c'], 'C')} {value(g['power_draw_w'], 'W')} "
        f"{g['pstate'] or '-'} {value(g['clocks_sm_mhz'], 'MHz')}"
        for g in gpus) or "no GPU"


class _Connect(threading.Thread):
    """One connection attempt, off the sampling thread."""

    def __init__(self):
        super().__init__(name="connect", daemon=True)
        self.conn: psycopg.Connection | None = None
        self.error: DatabaseUnreachable | None = None
        self._abandoned = False
        self._lock = threading.Lock()
        self.start()

    def run(self) -> None:
        try:
            conn = connect()
        except DatabaseUnreachable as exc:
            self.error = exc
            return
        with self._lock:
            if self._abandoned:
                conn.close()
            else:
                self.conn = conn

    def abandon(self) -> None:
        """The loop is stopping: a connection that arrives later is closed, not kept."""
        with self._lock:
            self._abandoned = True
            if self.conn is not None:
                self.conn.close()


class CollectorLoop:
    def __init__(self, config: Config, interval_sec: float, *, quiet: bool = False,
                 host: str | None = None):
        self.config = config
        self.interval = interval_sec
        self.quiet = quiet
        self.host = host or default_host()
        self.conn: psycopg.Connection | None = None
        self._connecting: _Connect | None = None
        self.next_connect = 0.0
        self.backoff = 1.0
        self.down_reason = "database not connected yet"
        self.outage: Outage | None = None
        self.backlog = bool(pending_files(config.spool_dir))
        self.cap = SpoolCap(config.spool_dir, config.spool_max_mb)
        self.next_backlog_check = time.monotonic() + BACKLOG_CHECK_EVERY_SEC
        self.last_raw: dict[str, float] = {}  # gpu_uuid -> time.monotonic()
        self.source_state: tuple[str, str] | None = None
        self.source_failures = 0
        self.known_gpus: dict[str, str] | None = None
        self.seen_gpus: set[str] = set()
        self.said_status_problem: str | None = None
        self.said_unreadable: list[str] = []
        self.said_tick_error: str | None = None
        self.stopping = False
        self.samples = 0
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)

    # -- output ------------------------------------------------------------------------------

    def say(self, message: str, *, change: bool = False) -> None:
        """One line for journald; in quiet mode only changes of state are said."""
        if change or not self.quiet:
            print(message, flush=True)

    # -- the schedule --------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"x")

    def _sleep_until(self, when: float) -> None:
        while not self.stopping:
            left = when - time.monotonic()
            if left <= 0:
                return
            select.select([self._wake_read], [], [], left)

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        self.say(f"collecting every {self.interval:g} s on {self.host} "
                 f"(nvidia-smi: {self.config.nvidia_smi}, spool: {self.config.spool_dir})",
                 change=True)
        start = time.monotonic()
        due = 0
        try:
            while not self.stopping:
                self._guarded_tick()
                if self.stopping:
                    break
                elapsed = time.monotonic() - start
                following = math.floor(elapsed / self.interval) + 1
                if following > due + 1:
                    self.say(f"warning: the sample took {elapsed - due * self.interval:.1f} s; "
                             f"skipped {following - due - 1} tick(s)", change=True)
                due = following
                self._sleep_until(start + due * self.interval)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        self.say(f"stopped after {self.samples} samples", change=True)
        return 0

    def close(self) -> None:
        if self._connecting is not None:
            self._connecting.abandon()
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- one tick ------------------------------------------------------------------------------

    def _guarded_tick(self) -> None:
        """A tick that fails in an unforeseen way is said once and the loop goes on: a crash
        would only restart the unit into the same failure."""
        try:
            self.tick()
            self.said_tick_error = None
        except Exception as exc:  # noqa: BLE001 - the service's last line of defence
            message = f"error: sample failed: {type(exc).__name__}: {exc}"
            if message != self.said_tick_error:
                self.say(message, change=True)
                self.said_tick_error = message

    def tick(self) -> None:
        taken = take_sample(self.config, self.host, self._raw_due)
        self.samples += 1
        events = [*self._source_events(taken), *self._gpu_events(taken)]
        self._note_status(taken.status_problem)
        if events:
            taken.sample["events"] = events
        self._store(taken)

    def _raw_due(self, gpu_uuid: str) -> bool:
        # The monotonic clock: a wall clock stepped back must not suspend the snapshots.
        now = time.monotonic()
        last = self.last_raw.get(gpu_uuid)
        if last is not None and now - last < self.config.raw_every_sec:
            return False
        self.last_raw[gpu_uuid] = now
        return True

    def _note_status(self, problem: str | None) -> None:
        if problem != self.said_status_problem:
            self.say(f"warning: {problem}" if problem else "status file readable again",
                     change=True)
            self.said_status_problem = problem

    def _source_events(self, taken: Taken) -> list[dict]:
        events = []
        failure = taken.failure
        if failure is not None:
            state = (failure.kind, failure.message)
            if state != self.source_state:
                code = f", exit {failure.returncode}" if failure.returncode is not None else ""
                self.say(f"error: nvidia-smi failed ({failure.kind}{code}): {failure.message}",
                         change=True)
                events.append(taken.failure_event())
            self.source_state = state
            self.source_failures += 1
        elif self.source_state is not None:
            detail = f"nvidia-smi answers again after {self.source_failures} failed sample(s)"
            self.say(detail, change=True)
            events.append(event("source_recovered", detail,
                                data={"failed_samples": self.source_failures,
                                      "failure": self.source_state[0]}))
            self.source_state = None
            self.source_failures = 0
        if taken.unreadable != self.said_unreadable:
            for line in taken.unreadable:
                self.say(f"warning: {line}", change=True)
                events.append(event("gpu_unreadable", line))
            self.said_unreadable = taken.unreadable
        return events

    def _gpu_events(self, taken: Taken) -> list[dict]:
        if taken.failure is not None:
            return []
        current = {gpu["gpu_uuid"]: _gpu_label(gpu) for gpu in taken.sample["gpus"]}
        events = []
        if self.known_gpus is not None:
            for uuid, label in self.known_gpus.items():
                if uuid not in current:
                    detail = f"GPU {label} is no longer listed by nvidia-smi"
                    self.say(f"warning: {detail}", change=True)
                    events.append(event("gpu_missing", detail, gpu_uuid=uuid))
            for uuid, label in current.items():
                if uuid not in self.known_gpus and uuid in self.seen_gpus:
                    detail = f"GPU {label} is listed again"
                    self.say(detail, change=True)
                    events.append(event("gpu_back", detail, gpu_uuid=uuid))
        self.known_gpus = current
        self.seen_gpus.update(current)
        return events

    # -- the database and the spool --------------------------------------------------------

    def _connection(self) -> psycopg.Connection | None:
        """The open connection, or None (the caller spools). Connecting runs in a thread: a
        database host that does not answer holds a connect for PGCONNECT_TIMEOUT seconds,
        and the schedule waits for it at most a fraction of a tick."""
        if self.conn is not None and not self.conn.closed and not self.conn.broken:
            return self.conn
        if self._connecting is None:
            if time.monotonic() < self.next_connect:
                return None
            self._connecting = _Connect()
        self._connecting.join(timeout=min(self.interval / 2, CONNECT_WAIT_SEC))
        if self._connecting.is_alive():
            return None
        attempt, self._connecting = self._connecting, None
        if attempt.error is not None:
            self.down_reason = str(attempt.error)
            self.next_connect = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, MAX_RECONNECT_BACKOFF_SEC)
            return None
        self.conn = attempt.conn
        self.backoff = 1.0
        self._seed_raw_times()
        return self.conn

    def _seed_raw_times(self) -> None:
        """Snapshots already stored (by an earlier run) count towards RAW_EVERY_SEC."""
        wall, mono = now_utc(), time.monotonic()
        since = wall - timedelta(seconds=self.config.raw_every_sec)
        with contextlib.suppress(psycopg.Error):
            for (_, gpu_uuid), times in last_raw_times(self.conn, [self.host], since).items():
                stored = mono - (wall - times[-1]).total_seconds()
                if gpu_uuid not in self.last_raw or self.last_raw[gpu_uuid] < stored:
                    self.last_raw[gpu_uuid] = stored

    def _drop_connection(self, exc: psycopg.Error) -> None:
        self.down_reason = f"database error: {first_line(exc)}"
        with contextlib.suppress(Exception):
            self.conn.close()
        self.conn = None
        self.next_connect = time.monotonic()

    def _store(self, taken: Taken) -> None:
        sample = validate_sample(taken.sample)
        conn = self._connection()
        if conn is not None:
            try:
                insert_samples(conn, [sample], self.config.raw_every_sec)
            except psycopg.Error as exc:
                self._drop_connection(exc)
            else:
                if not self.quiet:
                    self.say(f"stored {_reading_line(sample['gpus'])}")
                self._after_success(conn)
                return
        self._spool(taken)

    def _spool(self, taken: Taken) -> None:
        if self.outage is None:
            self.outage = Outage(started=now_utc(), reason=self.down_reason)
            self.say(f"{self.down_reason}; spooling samples to {self.config.spool_dir}",
                     change=True)
            taken.sample.setdefault("events", []).append(
                event("outage_start", self.down_reason, ts=self.outage.started))
        try:
            path = write_spool(self.config.spool_dir, taken.sample, self.down_reason)
        except SpoolError as exc:
            self.say(f"error: sample lost: {exc}", change=True)
            return
        self.outage.spooled += 1
        self.backlog = True
        self.say(f"spooled {_reading_line(taken.sample['gpus'])}")
        dropped = self.cap.after_write(path)
        if dropped:
            self.say(f"warning: spool over SPOOL_MAX_MB={self.config.spool_max_mb:g}: dropped "
                     f"the {dropped} oldest sample(s) (recorded once the database is back)",
                     change=True)

    def _after_success(self, conn: psycopg.Connection) -> None:
        if self.outage is not None:
            outage, self.outage = self.outage, None
            seconds = (now_utc() - outage.started).total_seconds()
            detail = (f"database back after {seconds:.0f} s; {outage.spooled} sample(s) "
                      "spooled meanwhile")
            self.say(detail, change=True)
            with contextlib.suppress(psycopg.Error):
                conn.execute(
                    "INSERT INTO telemetry.collector_events (ts, host, kind, detail, data)"
                    " VALUES (now(), %s, 'outage_end', %s, %s) ON CONFLICT DO NOTHING",
                    (self.host, detail, Jsonb(
                        {"spooled": outage.spooled, "seconds": round(seconds, 3),
                         "reason": outage.reason})))
        now = time.monotonic()
        if not self.backlog and now >= self.next_backlog_check:
            self.next_backlog_check = now + BACKLOG_CHECK_EVERY_SEC
            self.backlog = bool(pending_files(self.config.spool_dir))
        if self.backlog:
            self._drain(conn)

    def _drain(self, conn: psycopg.Connection) -> None:
        """Deliver part of the spool, leaving time for the next sample."""
        deadline = time.monotonic() + max(self.interval / 2, 0.2)
        try:
            with spool_lock(self.config.spool_dir):
                result = deliver(self.config, conn, deadline=deadline)
                if result.samples:
                    record_flush(conn, result)
        except SpoolBusy:
            return  # another flusher is delivering it
        except psycopg.Error as exc:
            self._drop_connection(exc)
            self.say(f"flush interrupted: {self.down_reason}", change=True)
            return
        if result.samples or result.quarantined:
            self.say(result.summary(), change=True)
        if result.complete:
            self.backlog = False
            self.cap.estimate = None  # drained: count afresh at the next outage
