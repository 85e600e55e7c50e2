"""The collector loop's process: one long-lived process, one database connection.

What to do and when is decided by collector/loopstate.py (the schedule, outages and their
reasons, source and GPU changes, raw-snapshot cadence, reconnect backoff, backlog draining);
this module does it: the GPU source through `take_sample`, the database through
gpu_telemetry.db.store, the spool, the signals, the sleeping, the log lines on stdout.

The loop never exits on a database error: whatever the class (unreachable, schema missing,
login refused, permission denied), samples go to the spool, the reason is logged once per
change, and the connection is retried with backoff, so that fixing the cause (starting the
server, running bin/init_db.sh, granting the role) delivers everything without a restart.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from datetime import timedelta

from gpu_telemetry.collector.alert_send import AlertSender
from gpu_telemetry.collector.alerts import Alerts, Thresholds
from gpu_telemetry.collector.collect import Taken, open_source, take_sample
from gpu_telemetry.collector.flush import deliver, record_flush
from gpu_telemetry.collector.kernel_log import KernelLog
from gpu_telemetry.collector.loopstate import LoopState
from gpu_telemetry.collector.sample import default_host, now_utc
from gpu_telemetry.collector.spool import (
    SpoolBusy,
    SpoolCap,
    pending_files,
    spool_lock,
    write_spool,
)
from gpu_telemetry.config import Config
from gpu_telemetry.db.store import (
    Connection,
    connect,
    insert_events,
    insert_samples,
    last_raw_times,
)
from gpu_telemetry.errors import DatabaseError, RejectedValue, SpoolError
from gpu_telemetry.records import Event

CONNECT_WAIT_SEC = 1.0


class _Connect(threading.Thread):
    """One connection attempt, off the sampling thread: a database host that does not answer
    holds a connect for PGCONNECT_TIMEOUT seconds, and the schedule waits for it at most a
    fraction of a tick."""

    def __init__(self):
        super().__init__(name="connect", daemon=True)
        self.conn: Connection | None = None
        self.error: DatabaseError | None = None
        self._abandoned = False
        self._lock = threading.Lock()
        self.start()

    def run(self) -> None:
        try:
            conn = connect()
        except DatabaseError as exc:
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
        self.state = LoopState(interval_sec, raw_every_sec=config.raw_every_sec,
                               spool_label=str(config.spool_dir), clock=time.monotonic,
                               wall=now_utc, backlog=bool(pending_files(config.spool_dir)))
        self.conn: Connection | None = None
        self._connecting: _Connect | None = None
        self.cap = SpoolCap(config.spool_dir, config.spool_max_mb)
        self.source = open_source(config, background=True)
        self.alerts = Alerts(Thresholds(config.alert_temp_margin_c, config.alert_temp_c,
                                        config.alert_outage_sec, config.alert_source_sec),
                             self.host, config.log_dir, time.monotonic, warn=self.say)
        self.sender = AlertSender(config.alert_command, config.alert_command_timeout_sec,
                                  self.say)
        self.kernel = KernelLog(config.kernel_log_command) if config.kernel_log_command \
            else None
        self._kernel_said: str | None = None
        self.stopping = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)

    # -- output ------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        print(message, flush=True)

    def _say_decided(self) -> None:
        """The state's lines for journald; with --quiet only changes of state."""
        for line in self.state.take_lines():
            if line.change or not self.quiet:
                self.say(line.text)

    # -- the schedule ------------------------------------------------------------------------

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
        source = (f"NVML, raw snapshots from {self.config.nvidia_smi}"
                  if self.config.gpu_source == "nvml" else f"nvidia-smi: {self.config.nvidia_smi}")
        self.say(f"collecting every {self.interval:g} s on {self.host} "
                 f"({source}, spool: {self.config.spool_dir})")
        self.state.schedule.start = time.monotonic()
        try:
            while not self.stopping:
                self._guarded_tick()
                if self.stopping:
                    break
                due = self.state.after_tick()
                self._say_decided()
                self._sleep_until(due)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        self.say(f"stopped after {self.state.samples} samples")
        return 0

    def close(self) -> None:
        if self._connecting is not None:
            self._connecting.abandon()
        self._drop_connection()
        self.source.close()
        if self.kernel is not None:
            self.kernel.close()
        self.sender.close(wait_sec=1.0)
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- one tick ----------------------------------------------------------------------------

    def _guarded_tick(self) -> None:
        """A tick that fails in an unforeseen way is said once and the loop goes on: a crash
        would only restart the unit into the same failure."""
        try:
            self.tick()
            self.state.tick_ok()
        except Exception as exc:  # noqa: BLE001 - the service's last line of defence
            self.state.tick_failed(f"{type(exc).__name__}: {exc}")
        self._say_decided()

    def tick(self) -> None:
        taken = take_sample(self.config, self.host, self.source, self.state.raw.due)
        taken.events = self.state.observe(taken)
        self._say_decided()
        taken.events += self._alerts(taken)
        self._store(taken)

    def _alerts(self, taken: Taken) -> list[Event]:
        """This sample's alerts: said, handed to ALERT_COMMAND, and recorded with it; the
        kernel log's AER lines recorded too."""
        kernel = self.kernel.take() if self.kernel is not None else []
        if self.kernel is not None and self.kernel.problem != self._kernel_said:
            self._kernel_said = self.kernel.problem
            if self._kernel_said:
                self.say(f"warning: {self._kernel_said}; sampling goes on")
        outage = self.state.outage
        alerts = self.alerts.evaluate(taken.sample.ts, taken.sample.gpus, taken.failure,
                                      outage.started if outage is not None else None,
                                      self.state.backlog, kernel)
        events = [Event("pcie_aer", line.text[:500], data={"pci_bus_id": line.pci_bus_id})
                  for line in kernel if line.kind == "aer"]
        for alert in alerts:
            self.say(f"alert {alert.alert} {alert.state}: {alert.summary}")
            self.sender.send(alert.to_json())
            events.append(alert.event())
        return events

    # -- the database ------------------------------------------------------------------------

    def _connection(self) -> Connection | None:
        """The open connection, or None (the caller spools)."""
        conn = self.conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            self._drop_connection()
            self.state.connection_closed()
        if self._connecting is None:
            if not self.state.want_connection():
                return None
            self._connecting = _Connect()
        self._connecting.join(timeout=min(self.interval / 2, CONNECT_WAIT_SEC))
        if self._connecting.is_alive():
            return None
        attempt, self._connecting = self._connecting, None
        if attempt.error is not None or attempt.conn is None:
            self.state.connection_failed(attempt.error or DatabaseError("connect failed"))
            return None
        self.conn = attempt.conn
        try:
            self._seed_raw_times()
        except DatabaseError as exc:
            # The first query of the connection: a schema never initialised or a role without
            # the grant fails here, with the same message at every retry.
            self._drop_connection()
            self.state.connection_failed(exc)
            return None
        self.state.connection_opened()
        return self.conn

    def _seed_raw_times(self) -> None:
        """Snapshots already stored (by an earlier run) count towards RAW_EVERY_SEC."""
        wall = now_utc()
        since = wall - timedelta(seconds=self.config.raw_every_sec)
        found = last_raw_times(self.conn, [self.host], since)
        self.state.raw.seed({gpu_uuid: (wall - times[-1]).total_seconds()
                             for (_, gpu_uuid), times in found.items()})

    def _drop_connection(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def _store(self, taken: Taken) -> None:
        sample = taken.sample
        conn = self._connection()
        rejected = None
        if conn is not None:
            try:
                insert_samples(conn, [sample], self.config.raw_every_sec,
                               [e.placed(sample.ts, sample.host) for e in taken.events])
            except DatabaseError as exc:
                if self.state.store_failed(exc):
                    self._drop_connection()
                else:
                    rejected = exc  # this sample only: spooled for flush_spool.py
            else:
                self._record(conn, self.state.stored(sample.gpus))
                self._say_decided()
                self._drain(conn)
                return
        self._spool(taken, rejected)

    def _record(self, conn: Connection, events: list[Event]) -> None:
        """Events of the loop itself (an outage's end), stored on their own; when the database
        fails right then, they go with the next sample."""
        if not events:
            return
        now = now_utc()
        try:
            insert_events(conn, [e.placed(now, self.host) for e in events])
        except DatabaseError as exc:
            self.state.unrecorded(events)
            if self.state.store_failed(exc):
                self._drop_connection()

    def _spool(self, taken: Taken, rejected: RejectedValue | None) -> None:
        reason, events = self.state.to_spool(rejected)
        try:
            path = write_spool(self.config.spool_dir, taken.sample, [*taken.events, *events],
                               reason)
        except SpoolError as exc:
            self.state.spool_failed(exc, events)
            return
        self.state.spooled(taken.sample.gpus, self.cap.after_write(path),
                           self.config.spool_max_mb)

    def _drain(self, conn: Connection) -> None:
        """Deliver part of the spool, under the same lock as flush_spool.py."""
        if self.state.backlog_check_due():
            self.state.backlog_found(bool(pending_files(self.config.spool_dir)))
        if not self.state.drain_wanted():
            return
        try:
            with spool_lock(self.config.spool_dir):
                result = deliver(self.config, conn, deadline=self.state.drain_deadline())
                if result.samples:
                    record_flush(conn, result)
        except SpoolBusy:
            return  # another flusher is delivering it
        except DatabaseError as exc:
            if self.state.drain_failed(exc):
                self._drop_connection()
            return
        self.state.drained(result.complete,
                           result.summary() if result.samples or result.quarantined else None)
        if result.complete:
            self.cap.estimate = None  # drained: count afresh at the next outage
