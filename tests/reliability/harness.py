"""What the reliability scenarios share: the real scripts as subprocesses (every one of them
registered so that it is killed at the end, even on failure), the nvidia-smi stand-in's call
log, spooled samples made the way the collector makes them, and waiting on conditions."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gpu_telemetry.collector.parser import parse_document
from gpu_telemetry.collector.sample import default_host
from gpu_telemetry.collector.spool import write_spool
from gpu_telemetry.records import GpuReading, Sample, Status
from tests.helpers import FIXTURES, REPO_ROOT

CALL_LOG = "nvidia-smi-calls.log"
DEFAULT_TIMEOUT = 60.0


def wait_until(condition: Callable[[], object], *, timeout: float = DEFAULT_TIMEOUT,
               what: str = "condition", interval: float = 0.05,
               alive: subprocess.Popen | None = None, output: Callable[[], str] | None = None):
    """Poll `condition` until it is true (returned), failing after `timeout` seconds or as
    soon as the `alive` process has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"process exited ({alive.returncode}) while waiting for {what}"
                                 + (f":\n{output()}" if output else ""))
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + (f":\n{output()}" if output else ""))
        time.sleep(interval)


# -- processes ------------------------------------------------------------------------------

class Processes:
    """Every subprocess a scenario starts; `cleanup()` kills what is still running, and any
    nvidia-smi stand-in (with its `sleep`) that a killed collector left behind."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []
        self.call_logs: list[Path] = []

    def popen(self, argv: list[str], *, env: dict, cwd: Path, stdout: Path,
              stderr: Path | None = None) -> subprocess.Popen:
        out = stdout.open("w")
        err = stderr.open("w") if stderr is not None else subprocess.STDOUT
        try:
            process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=err)
        finally:
            out.close()
            if stderr is not None:
                err.close()
        self.started.append(process)
        if env.get("NVSMI_STANDIN_LOG"):
            self.call_logs.append(Path(env["NVSMI_STANDIN_LOG"]))
        return process

    def cleanup(self) -> None:
        for process in self.started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        for log in set(self.call_logs):
            for pgid in logged_pids(log):
                kill_stand_in_group(pgid)


def script_argv(name: str, *args: str, tmp_path: Path) -> list[str]:
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.touch()
    return [sys.executable, str(REPO_ROOT / "bin" / name), "--env", str(empty_env_file), *args]


def start_script(procs: Processes, name: str, *args: str, env: dict, tmp_path: Path,
                 label: str) -> Script:
    out, err = tmp_path / f"{label}.out", tmp_path / f"{label}.err"
    process = procs.popen(script_argv(name, *args, tmp_path=tmp_path), env=env, cwd=tmp_path,
                          stdout=out, stderr=err)
    return Script(process, out, err)


class Script:
    def __init__(self, process: subprocess.Popen, out: Path, err: Path):
        self.process = process
        self.out = out
        self.err = err

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        return self.process.wait(timeout=timeout)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout\n{self.stdout()}--- stderr\n{self.stderr()}"


def run_flush(procs: Processes, env: dict, tmp_path: Path, *args: str, label: str = "flush",
              timeout: float = DEFAULT_TIMEOUT) -> Script:
    """flush_spool.py to completion."""
    script = start_script(procs, "flush_spool.py", *args, env=env, tmp_path=tmp_path, label=label)
    script.wait(timeout)
    return script


def logged_pids(log: Path) -> list[int]:
    if not log.exists():
        return []
    pids = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            pids.append(int(parts[1]))
    return pids


def live_group_members(pgid: int) -> list[int]:
    """Processes (not zombies) whose process group is `pgid`."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 3 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def kill_stand_in_group(pgid: int) -> None:
    """SIGKILL a stand-in's process group if any of it is still alive (each stand-in call runs
    in a session of its own, led by the logged pid)."""
    for pid in live_group_members(pgid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"nvidia-smi" in cmdline or b"sleep" in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


# -- the nvidia-smi stand-in's log ----------------------------------------------------------

def calls(log: Path, *modes: str) -> list[float]:
    """Epoch of each logged call (in `modes` when given), in order."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue  # a line being written right now
        if not modes or parts[2] in modes:
            found.append(float(parts[0]))
    return found


def ok_calls(log: Path, *, hang_finished: bool = False) -> list[float]:
    """The calls that gave a reading: mode `ok`, and `hang` too when the scenario's
    NVSMI_STANDIN_HANG_SEC is shorter than NVIDIA_SMI_TIMEOUT_SEC (`hang_finished`)."""
    return calls(log, "ok", "hang") if hang_finished else calls(log, "ok")


def set_mode(mode_file: Path, mode: str | None) -> None:
    """Switch the stand-in's mode under a running loop (atomically; None: back to the env's)."""
    if mode is None:
        with contextlib.suppress(FileNotFoundError):
            mode_file.unlink()
        return
    staged = mode_file.with_name(mode_file.name + ".new")
    staged.write_text(mode + "\n")
    staged.replace(mode_file)


class RunningLoop:
    """`collect_once.py --loop` with the stand-in logging every call to tmp_path's call log;
    `interval` None runs it at SAMPLE_INTERVAL_SEC. The one copy of this helper: the loop's own
    tests and the reliability scenarios both use it."""

    def __init__(self, procs: Processes, tmp_path: Path, env: dict,
                 interval: float | None = None, *, label: str = "loop",
                 extra: tuple[str, ...] = ()):
        self.log = tmp_path / CALL_LOG
        self.out = tmp_path / f"{label}.out"
        env = {**env, "NVSMI_STANDIN_LOG": str(self.log)}
        every = ("--interval", f"{interval:g}") if interval is not None else ()
        self.process = procs.popen(
            script_argv("collect_once.py", "--loop", *every, *extra, tmp_path=tmp_path),
            env=env, cwd=tmp_path, stdout=self.out)

    def calls(self, *modes: str) -> list[float]:
        return calls(self.log, *modes)

    def wait_for_calls(self, count: int, *modes: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_until(lambda: len(self.calls(*modes)) >= count, timeout=timeout,
                   what=f"{count} nvidia-smi calls {modes or ''}", alive=self.process,
                   output=self.output)

    def wait_for_more_calls(self, more: int, *modes: str,
                            timeout: float = DEFAULT_TIMEOUT) -> None:
        self.wait_for_calls(len(self.calls(*modes)) + more, *modes, timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""


# -- samples and the spool -------------------------------------------------------------------

def fixture_gpus(fixture: str = "dual-2080-v13.xml") -> list[GpuReading]:
    """GPU readings as the collector takes them from a real capture (raw_json left out)."""
    return parse_document((FIXTURES / fixture).read_bytes()).gpus


def past_base(hours_ago: float = 24) -> datetime:
    """A start time in the past, on a whole minute, far from anything the loop samples now."""
    base = datetime.now(UTC) - timedelta(hours=hours_ago)
    return base.replace(second=0, microsecond=0)


def make_samples(count: int, *, base: datetime | None = None, step_sec: float = 1.0,
                 fixture: str = "dual-2080-v13.xml") -> list[Sample]:
    """Samples as the collector takes them, for this host, `step_sec` apart."""
    base = base or past_base()
    gpus = fixture_gpus(fixture)
    status = Status("bench", "reliability", "rel-run")
    return [Sample(base + timedelta(seconds=i * step_sec), default_host(), status,
                   [replace(gpu) for gpu in gpus]) for i in range(count)]


def spool_samples(spool_dir: Path, samples: list[Sample]) -> list[Path]:
    return [write_spool(spool_dir, sample, [], "database unreachable: reliability test")
            for sample in samples]


def spool_json(spool_dir: Path) -> list[Path]:
    """Files a flush would deliver (what pending_files lists)."""
    if not spool_dir.exists():
        return []
    return sorted(p for p in spool_dir.iterdir()
                  if p.is_file() and p.name.endswith(".json") and not p.name.startswith("."))


# -- the database ----------------------------------------------------------------------------

def query(db, sql: str, params: tuple = ()) -> list[tuple]:
    with db.connect() as conn:
        return conn.execute(sql, params).fetchall()


def stored_ts(db, host: str | None = None) -> list[datetime]:
    return [ts for (ts,) in query(
        db, "SELECT DISTINCT ts FROM telemetry.gpu_telemetry WHERE host = %s ORDER BY ts",
        (host or default_host(),))]


def stored_count(db) -> int:
    ((count,),) = query(db, "SELECT count(DISTINCT ts) FROM telemetry.gpu_telemetry")
    return count


def event_rows(db, kind: str | None = None) -> list[tuple]:
    """(kind, detail, data) of the events, in time order."""
    if kind is None:
        return query(db, "SELECT kind, detail, data FROM telemetry.collector_events"
                         " ORDER BY ts, kind")
    return query(db, "SELECT kind, detail, data FROM telemetry.collector_events"
                     " WHERE kind = %s ORDER BY ts", (kind,))


def event_kinds(db) -> list[str]:
    return [kind for kind, _, _ in event_rows(db)]


def synchronous_commit_on(db) -> None:
    """The test server runs with synchronous_commit off for speed: a crash (immediate stop)
    may then lose a COMMIT the client was told about, which is the server's configuration
    and not the collector's doing. Scenarios that crash the server turn it back on for their
    own database (new sessions only)."""
    from psycopg import sql

    with db.connect() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = on")
                     .format(sql.Identifier(db.name)))
