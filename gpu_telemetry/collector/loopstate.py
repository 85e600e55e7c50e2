"""What the collector loop decides, without doing any of it.

`LoopState` is the pure half of the loop (collector/loop.py is the other, which runs
nvidia-smi, talks to the database, writes the spool and handles signals). It reads the time
from an injected monotonic clock (and a wall clock, for the timestamps of events), is told what
happened (a reading, a connection attempt, a store, a spool write, a drain of the backlog) and
answers with decisions: when the next tick is due, whether to connect now, whether a GPU keeps
its raw snapshot, whether to drain the spool; plus the events to record and the lines to log
(`take_lines`). The timing itself (schedule, raw cadence, backoff) is collector/cadence.py.
It never sleeps and does no I/O, so tests drive hours of the loop in milliseconds
(docs/architecture.md, Collector).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from gpu_telemetry.collector.cadence import Backoff, Line, RawCadence, Schedule
from gpu_telemetry.errors import DatabaseError, RejectedValue, SourceError
from gpu_telemetry.records import Event, GpuReading

if TYPE_CHECKING:
    from gpu_telemetry.collector.collect import Taken

BACKLOG_CHECK_EVERY_SEC = 60.0
NOT_CONNECTED_YET = "database not connected yet"


def reading_line(gpus: list[GpuReading]) -> str:
    def value(number, unit):
        return "-" if number is None else f"{number:g}{unit}"

    return " | ".join(
        f"GPU{g.gpu_index} {value(g.temp_c, 'C')} {value(g.power_draw_w, 'W')} "
        f"{g.pstate or '-'} {value(g.clocks_sm_mhz, 'MHz')}"
        for g in gpus) or "no GPU"


@dataclass
class Outage:
    """Samples are being spooled: since when, why (first and latest reason), how many."""

    started: float
    reason: str
    latest: str
    spooled: int = 0
    reasons: list[str] = field(default_factory=list)


class LoopState:
    """Every decision of the collector loop; see the module docstring.

    The shell calls, per tick: `observe(taken)` after reading nvidia-smi (the events to attach
    to the sample), then either `stored(...)` or `store_failed(error)` and `to_spool()` /
    `spooled(...)`; around the connection `want_connection()`, `connection_opened()`,
    `connection_failed(error)`; after a store `backlog_check_due()`, `drain_wanted()`,
    `drained(...)` or `drain_failed(error)`; then `after_tick()` for the next tick's time.
    """

    def __init__(self, interval_sec: float, *, raw_every_sec: float, spool_label: str,
                 clock: Callable[[], float], wall: Callable[[], datetime],
                 backlog: bool = False):
        self.interval = interval_sec
        self.spool_label = spool_label
        self.clock = clock
        self.wall = wall
        self.schedule = Schedule(interval_sec, clock())
        self.raw = RawCadence(raw_every_sec, clock)
        self.backoff = Backoff(clock)
        self.samples = 0
        self._lines: list[Line] = []
        # the source: (kind, message, source) while failing
        self.source_state: tuple[str, str, str] | None = None
        self.source_failures = 0
        self.said_unreadable: list[str] = []
        self.known_gpus: dict[str, str] | None = None  # gpu_uuid -> label, last reading
        self.seen_gpus: set[str] = set()
        self.said_status_problem: str | None = None
        self.said_tick_error: str | None = None
        # the database
        self.connected = False
        self.reason = NOT_CONNECTED_YET
        self.outage: Outage | None = None
        self.pending_events: list[Event] = []  # reason changes, recorded with the next sample
        self.said_rejected: str | None = None
        self.backlog = backlog
        self.next_backlog_check = clock() + BACKLOG_CHECK_EVERY_SEC

    # -- output ------------------------------------------------------------------------------

    def say(self, text: str, *, change: bool = True) -> None:
        self._lines.append(Line(text, change))

    def take_lines(self) -> list[Line]:
        """The lines to log since the last call, in order."""
        lines, self._lines = self._lines, []
        return lines

    # -- the schedule ------------------------------------------------------------------------

    def after_tick(self) -> float:
        """The tick in hand has ended: the clock() time the next one starts."""
        due, warning = self.schedule.after_tick(self.clock())
        if warning is not None:
            self._lines.append(warning)
        return due

    def tick_failed(self, message: str) -> None:
        """A tick failed in an unforeseen way: said once per different failure."""
        if message != self.said_tick_error:
            self.say(f"error: sample failed: {message}")
            self.said_tick_error = message

    def tick_ok(self) -> None:
        self.said_tick_error = None

    # -- the reading -------------------------------------------------------------------------

    def observe(self, taken: Taken) -> list[Event]:
        """A reading was taken: the events its sample carries (source failed or recovered,
        GPUs unreadable, missing or back), each once per change."""
        self.samples += 1
        events = [*self._source_events(taken.failure, taken.unreadable),
                  *self._gpu_events(taken.failure, taken.sample.gpus)]
        self._note_status(taken.status_problem)
        return events

    def _note_status(self, problem: str | None) -> None:
        if problem != self.said_status_problem:
            self.say(f"warning: {problem}" if problem else "status file readable again")
            self.said_status_problem = problem

    def _source_events(self, failure: SourceError | None, unreadable: list[str]) -> list[Event]:
        events = []
        if failure is not None:
            state = (failure.kind, failure.message, failure.source)
            if state != self.source_state:
                self.say(f"error: {failure.describe()}")
                events.append(Event("source_failed", failure.message,
                                    data={"failure": failure.kind,
                                          "exit_code": failure.returncode,
                                          "source": failure.source}))
            self.source_state = state
            self.source_failures += 1
        elif self.source_state is not None:
            detail = (f"{self.source_state[2]} answers again after {self.source_failures} "
                      "failed sample(s)")
            self.say(detail)
            events.append(Event("source_recovered", detail,
                                data={"failed_samples": self.source_failures,
                                      "failure": self.source_state[0]}))
            self.source_state = None
            self.source_failures = 0
        if unreadable != self.said_unreadable:
            for line in unreadable:
                self.say(f"warning: {line}")
                events.append(Event("gpu_unreadable", line))
            self.said_unreadable = list(unreadable)
        return events

    def _gpu_events(self, failure: SourceError | None, gpus: list[GpuReading]) -> list[Event]:
        """GPUs are compared by uuid between readings; a failed reading lists none, which
        says nothing about any one GPU."""
        if failure is not None:
            return []
        current = {gpu.gpu_uuid: gpu.label() for gpu in gpus}
        events = []
        if self.known_gpus is not None:
            for uuid, label in self.known_gpus.items():
                if uuid not in current:
                    detail = f"GPU {label} is no longer listed by nvidia-smi"
                    self.say(f"warning: {detail}")
                    events.append(Event("gpu_missing", detail, gpu_uuid=uuid))
            for uuid, label in current.items():
                if uuid not in self.known_gpus and uuid in self.seen_gpus:
                    detail = f"GPU {label} is listed again"
                    self.say(detail)
                    events.append(Event("gpu_back", detail, gpu_uuid=uuid))
        self.known_gpus = current
        self.seen_gpus.update(current)
        return events

    # -- the connection ----------------------------------------------------------------------

    def want_connection(self) -> bool:
        """Whether to start a connection attempt now: none is open and the backoff passed."""
        return not self.connected and self.backoff.ready()

    def connection_opened(self) -> None:
        self.connected = True

    def connection_closed(self) -> None:
        """The connection was found closed or broken between samples: open another at once."""
        self.connected = False

    def connection_failed(self, error: DatabaseError) -> None:
        self.connected = False
        self._down(str(error))
        self.backoff.failed()

    def _down(self, reason: str) -> None:
        """The database cannot take samples, for `reason`. During an outage a different reason
        (another error class or message) is said once and recorded with the next sample."""
        self.reason = reason
        outage = self.outage
        if outage is None or reason == outage.latest:
            return
        outage.latest = reason
        if reason not in outage.reasons:
            outage.reasons.append(reason)
        self.say(f"{reason}; samples still spooled")
        self.pending_events.append(Event("outage_reason", reason, ts=self.wall()))

    # -- storing and spooling ----------------------------------------------------------------

    def stored(self, gpus: list[GpuReading]) -> list[Event]:
        """A sample was stored: the events to record now (the end of an outage, reasons not
        yet recorded)."""
        self.backoff.succeeded()
        self.said_rejected = None
        self.say(f"stored {reading_line(gpus)}", change=False)
        events, self.pending_events = self.pending_events, []
        outage, self.outage = self.outage, None
        if outage is not None:
            seconds = self.clock() - outage.started
            detail = (f"database back after {seconds:.0f} s; {outage.spooled} sample(s) "
                      "spooled meanwhile")
            self.say(detail)
            events.append(Event("outage_end", detail, ts=self.wall(), data={
                "spooled": outage.spooled, "seconds": round(seconds, 3),
                "reason": outage.reason, "reasons": outage.reasons}))
        return events

    def store_failed(self, error: DatabaseError) -> bool:
        """The database refused the sample. True: the connection goes and is tried again
        with backoff (whatever the class: a schema created or a grant given later must be
        picked up without a restart). False: only this sample was refused (RejectedValue);
        it is spooled for flush_spool.py to quarantine and the connection stays."""
        if isinstance(error, RejectedValue):
            if str(error) != self.said_rejected:
                self.say(f"warning: {error}; sample spooled for flush_spool.py")
                self.said_rejected = str(error)
            return False
        self.connected = False
        self._down(str(error))
        self.backoff.failed()
        return True

    def to_spool(self, rejected: RejectedValue | None = None) -> tuple[str, list[Event]]:
        """A sample goes to the spool: the reason its file carries, and the events to add to
        it (the outage's start, reason changes). A rejected sample starts no outage."""
        if rejected is not None:
            return str(rejected), []
        if self.outage is None:
            started = self.wall()
            self.outage = Outage(started=self.clock(),
                                 reason=self.reason, latest=self.reason, reasons=[self.reason])
            self.say(f"{self.reason}; spooling samples to {self.spool_label}")
            self.pending_events.insert(0, Event("outage_start", self.reason, ts=started))
        events, self.pending_events = self.pending_events, []
        return self.reason, events

    def spooled(self, gpus: list[GpuReading], dropped: int = 0, cap_mb: float = 0.0) -> None:
        if self.outage is not None:
            self.outage.spooled += 1
        self.backlog = True
        self.say(f"spooled {reading_line(gpus)}", change=False)
        if dropped:
            self.say(f"warning: spool over SPOOL_MAX_MB={cap_mb:g}: dropped the {dropped} "
                     "oldest sample(s) (recorded once the database is back)")

    def spool_failed(self, error: Exception, events: list[Event]) -> None:
        """The spool could not be written: the sample is lost (said each time: it is), and the
        events it carried wait for the next sample."""
        self.say(f"error: sample lost: {error}")
        self.unrecorded(events)

    def unrecorded(self, events: list[Event]) -> None:
        """Events the shell could not write: they go with the next sample, stored or spooled."""
        self.pending_events[:0] = events

    # -- the backlog -------------------------------------------------------------------------

    def backlog_check_due(self) -> bool:
        """Whether to look at the spool for files left by others (a one-shot collect_once.py
        while the database was down); every BACKLOG_CHECK_EVERY_SEC at most."""
        now = self.clock()
        if self.backlog or now < self.next_backlog_check:
            return False
        self.next_backlog_check = now + BACKLOG_CHECK_EVERY_SEC
        return True

    def backlog_found(self, found: bool) -> None:
        self.backlog = self.backlog or found

    def drain_wanted(self) -> bool:
        return self.connected and self.backlog

    def drain_deadline(self) -> float:
        """A drain stops after the batch that passes this clock() time: half a tick, so the
        next sample is not delayed."""
        return self.clock() + max(self.interval / 2, 0.2)

    def drained(self, complete: bool, summary: str | None) -> None:
        if summary:
            self.say(summary)
        if complete:
            self.backlog = False

    def drain_failed(self, error: DatabaseError) -> bool:
        """The drain failed; True: drop the connection (as for a failed store). A rejected
        value leaves the backlog to flush_spool.py (which quarantines the file) until the
        next backlog check."""
        if isinstance(error, RejectedValue):
            if str(error) != self.said_rejected:
                self.say(f"warning: {error}; the spool is left to flush_spool.py")
                self.said_rejected = str(error)
            self.backlog = False
            self.next_backlog_check = self.clock() + BACKLOG_CHECK_EVERY_SEC
            return False
        self.say(f"flush interrupted: {error}")
        self.connected = False
        self._down(str(error))
        self.backoff.failed()
        return True
