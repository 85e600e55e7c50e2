"""When the collector loop acts, from an injected monotonic clock: the ticks of the schedule,
each GPU's raw snapshot, the reconnect attempts. Pure: no I/O, no sleeping (the loop's shell,
collector/loop.py, sleeps until the time these give)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

FIRST_BACKOFF_SEC = 1.0
MAX_BACKOFF_SEC = 10.0


@dataclass(frozen=True)
class Line:
    """One log line; `change` lines (a change of state) are said even with --quiet."""

    text: str
    change: bool = True


class Schedule:
    """Ticks at start + k * interval of the monotonic clock, so errors never add up. A tick that
    ends after the following one was due makes the loop skip the ticks it missed (never run
    them late in a burst); the next tick is always after the one in hand has ended, so two
    nvidia-smi calls never overlap."""

    def __init__(self, interval_sec: float, start: float):
        self.interval = interval_sec
        self.start = start
        self.tick = 0

    @property
    def due(self) -> float:
        return self.start + self.tick * self.interval

    def after_tick(self, now: float) -> tuple[float, Line | None]:
        """The tick in hand ended at `now`: when the next one starts, and a warning line when
        ticks were skipped."""
        elapsed = now - self.start
        # A tick that ends exactly when the next is due runs it, not skips it (the epsilon
        # absorbs the float error of k * interval).
        following = max(self.tick + 1, math.ceil(elapsed / self.interval - 1e-9))
        skipped = following - self.tick - 1
        line = None
        if skipped:
            line = Line(f"warning: the sample took {now - self.due:.1f} s; "
                        f"skipped {skipped} tick(s)")
        self.tick = following
        return self.due, line


class RawCadence:
    """Whether a GPU's sample keeps its raw snapshot: once every RAW_EVERY_SEC per GPU, timed
    on the monotonic clock so a wall clock stepped back cannot suspend the snapshots."""

    def __init__(self, every_sec: float, clock: Callable[[], float]):
        self.every_sec = every_sec
        self.clock = clock
        self.last: dict[str, float] = {}  # gpu_uuid -> clock()

    def due(self, gpu_uuid: str) -> bool:
        now = self.clock()
        last = self.last.get(gpu_uuid)
        if last is not None and now - last < self.every_sec:
            return False
        self.last[gpu_uuid] = now
        return True

    def seed(self, ages_sec: dict[str, float]) -> None:
        """Snapshots already stored (by an earlier run), `age` seconds ago, count too."""
        now = self.clock()
        for gpu_uuid, age in ages_sec.items():
            stored = now - age
            if gpu_uuid not in self.last or self.last[gpu_uuid] < stored:
                self.last[gpu_uuid] = stored


class Backoff:
    """When to try the database again after a failure: at once after a store that worked
    (a terminated backend reconnects on the next tick), then 1, 2, 4, 8 and at most 10 s apart.
    Only a stored sample resets it: a server that accepts the login but lacks the schema or
    the grant must not be retried every tick."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.delay = 0.0
        self.retry_at = clock()

    def ready(self) -> bool:
        return self.clock() >= self.retry_at

    def failed(self) -> None:
        self.retry_at = self.clock() + self.delay
        self.delay = min(max(self.delay * 2, FIRST_BACKOFF_SEC), MAX_BACKOFF_SEC)

    def succeeded(self) -> None:
        self.delay = 0.0
