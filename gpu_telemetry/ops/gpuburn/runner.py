"""The run itself: each phase written to status.json, gpu_burn in its own process group with
its output to the terminal and the log, the diagnostics before and after, and the final status
restored on every way out (the end, Ctrl-C, TERM, HUP, a failure).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from gpu_telemetry.config import Config
from gpu_telemetry.errors import EXIT_IO, EXIT_SOFTWARE, TelemetryError
from gpu_telemetry.ops.gpuburn.plan import (
    EXIT_GPU_BURN_MISSING,
    EXIT_HUNG,
    PROG,
    BurnError,
    Phase,
    Plan,
    diagnostic_commands,
    format_seconds,
    interrupted_memo,
)
from gpu_telemetry.ops.status import write_status

BUILD_HINT = ("build it with: git clone https://github.com/wilicc/gpu-burn {dir} && make -C {dir} "
              "(needs the CUDA toolkit), or point GPU_BURN_DIR or --gpu-burn-dir at its folder")
ENGLISH_ENV = {"LC_ALL": "C", "LANG": "C"}
# gpu_burn ends on its own after SEC seconds (plus its start-up and the final compare). One that
# is still running well past that is hung, as a GPU that fell off the bus leaves it (Xid 79 on
# the P40 dock): killed, exit 124, so the status does not stay `bench` for ever.
HANG_GRACE_SEC = 120.0
HANG_GRACE_FRACTION = 0.1
KILL_GRACE_SEC = 10.0
DIAG_TIMEOUT_SEC = 30.0


class Stopped(BaseException):
    """A signal asked the run to stop; BaseException so no `except Exception` swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def nvme_controllers() -> list[str]:
    return sorted(str(path) for path in Path("/dev").glob("nvme*")
                  if re.fullmatch(r"nvme\d+", path.name))


def host_diagnostics(config: Config) -> list[list[str]]:
    """The diagnostic commands for this host (its NVMe controllers; SUDO, default sudo)."""
    return diagnostic_commands(config.nvidia_smi, os.environ.get("SUDO") or "sudo",
                               nvme_controllers())


def find_gpu_burn(gpu_burn_dir: Path) -> str | None:
    """None when gpu_burn is there and executable, else what is wrong and how to fix it."""
    path = gpu_burn_dir / "gpu_burn"
    hint = BUILD_HINT.format(dir=shlex.quote(str(gpu_burn_dir)))
    if not path.is_file():
        return f"gpu_burn not found at {path}: {hint}"
    if not os.access(path, os.X_OK):
        return f"{path} is not executable: chmod +x it or rebuild it with make"
    return None


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _signal_exit(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Runner:
    def __init__(self, plan: Plan, config: Config, passed: list[str]):
        self.plan = plan
        self.config = config
        self.passed = passed
        self.phase = "start"
        self.stopping = False
        self.process: subprocess.Popen | None = None
        self.log = None

    # output: every line to stdout (the terminal or tmux pane) and to the log

    def _emit(self, data: bytes) -> None:
        if self.log is not None:
            self.log.write(data)
            self.log.flush()
        with contextlib.suppress(OSError, ValueError):  # a closed terminal must not stop a run
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    def say(self, text: str) -> None:
        self._emit(f"[{_now_text()}] {text}\n".encode())

    def _on_signal(self, signum, _frame) -> None:
        if self.stopping:  # already finishing: let the final status be written
            return
        self.stopping = True
        raise Stopped(signum)

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.plan.english:
            env.update(ENGLISH_ENV)
        return env

    def enter(self, phase: Phase, run_id: str | None) -> None:
        self.phase = phase.name
        document = write_status(self.plan.status_file, phase.tag, phase.memo, run_id=run_id,
                                keep_run_id=False)
        duration = (f" for {'at least ' if phase.name == 'post' else ''}"
                    f"{format_seconds(phase.seconds)} s" if phase.seconds else "")
        self.say(f"phase {phase.name}{duration}: status {json.dumps(document, ensure_ascii=False)}")

    def _open_log(self) -> None:
        path = self.plan.log_path
        # Two runs started in the same second get log files of their own.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for n in range(1, 100):
                candidate = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
                with contextlib.suppress(FileExistsError):
                    self.log = candidate.open("xb")
                    self.log_path = candidate
                    return
        except OSError as exc:
            raise BurnError(f"cannot create the log {path}: {exc.strerror or exc}",
                            exit_code=EXIT_IO) from None
        raise BurnError(f"cannot find a free log file name next to {path}", exit_code=EXIT_IO)

    def run(self) -> int:
        self._open_log()  # before anything changes: a run that cannot log does not start
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            code = self._phases()
        except Stopped as stop:
            self.stopping = True
            code = 128 + stop.signum
            self.say(f"{stop} during {self.phase}: stopping")
            self._finish(code, self.phase)
            return code
        except TelemetryError as exc:
            self.stopping = True
            self.say(f"{PROG}: {exc}")
            self._finish(exc.exit_code, self.phase)
            raise
        except BaseException:
            self.stopping = True
            self._finish(EXIT_SOFTWARE, self.phase)
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.stopping = True
        self._finish(code, "bench" if code else None)
        return code

    def _phases(self) -> int:
        plan = self.plan
        self._header()
        if plan.pre_idle:
            self.enter(plan.pre_idle, plan.run_id)
            time.sleep(plan.pre_idle.seconds)
        if plan.diag:
            self.phase = "diagnostics"
            self.diagnostics("before")
        self.enter(plan.bench, plan.run_id)
        code = self.run_gpu_burn()
        self.enter(plan.post, plan.run_id)
        post_started = time.monotonic()
        if plan.diag:
            self.diagnostics("after")
        # A status that lasts a millisecond is never sampled: post stays one sample interval.
        time.sleep(max(0.0, plan.post.seconds - (time.monotonic() - post_started)))
        if plan.cooldown:
            self.enter(plan.cooldown, plan.run_id)
            time.sleep(plan.cooldown.seconds)
        return code

    def _report(self, text: str) -> None:
        """A line for the log only (details the terminal does not need)."""
        if self.log is not None:
            self.log.write(f"[{_now_text()}] {text}\n".encode())
            self.log.flush()

    def _finish(self, code: int, failed_phase: str | None) -> None:
        self._stop_gpu_burn()
        final = self.plan.final
        if failed_phase is not None:
            final = Phase(final.name, final.tag, interrupted_memo(self.plan, failed_phase, code))
        try:
            self.enter(final, self.plan.final_run_id)
        except TelemetryError as exc:
            self.say(f"final status not written: {exc}")
            print(f"{PROG}: final status not written: {exc}", file=sys.stderr)
        self.say(f"run {self.plan.run_id} ended with exit {code}"
                 + (f" ({failed_phase})" if failed_phase else ""))
        if self.log is not None:
            self.log.close()

    def _header(self) -> None:
        plan = self.plan
        self.say(f"{PROG}: run {plan.run_id}, log {self.log_path}")
        self.say(f"status file {plan.status_file}; gpu_burn in {plan.gpu_burn_dir}; "
                 f"english {'on' if plan.english else 'off'}; diagnostics "
                 f"{'on' if plan.diag else 'off'}; memo suffix {plan.memo_suffix!r}")
        for key in self.passed:
            self.say(f"configuration: {key} received from the caller through a private file")

    # gpu_burn

    def run_gpu_burn(self) -> int:
        plan = self.plan
        self.say(f"running {shlex.join(plan.gpu_burn_argv)} in {plan.gpu_burn_dir}")
        started = time.monotonic()
        deadline = started + plan.sec * (1 + HANG_GRACE_FRACTION) + HANG_GRACE_SEC
        try:
            # A process group of its own: Ctrl-C reaches only this runner, which then stops
            # gpu_burn and the per-GPU processes it forks, together.
            self.process = subprocess.Popen(
                plan.gpu_burn_argv, cwd=plan.gpu_burn_dir, env=self._child_env(),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                process_group=0)
        except OSError as exc:
            raise BurnError(f"cannot start {plan.gpu_burn_dir / 'gpu_burn'}: {exc.strerror}",
                            exit_code=EXIT_GPU_BURN_MISSING) from None
        process = self.process
        fd = process.stdout.fileno()
        while True:
            if time.monotonic() > deadline:
                self.say(f"gpu_burn still running {time.monotonic() - started:.0f} s after it "
                         f"started with {plan.sec} s: hung, killing it")
                self._stop_gpu_burn()
                return EXIT_HUNG
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._emit(chunk)
            elif process.poll() is not None:
                break  # exited; something it started may still hold the pipe
        self._drain(0.5)
        try:
            returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.say("gpu_burn closed its output but did not exit: killing it")
            self._stop_gpu_burn()
            return EXIT_HUNG
        self.process = None
        process.stdout.close()
        code = _signal_exit(returncode)
        self.say(f"gpu_burn exited with {code} after {time.monotonic() - started:.1f} s")
        return code

    def _drain(self, timeout_sec: float) -> None:
        process = self.process
        if process is None or process.stdout is None or process.stdout.closed:
            return
        fd = process.stdout.fileno()
        deadline = time.monotonic() + timeout_sec
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            self._emit(chunk)

    def _stop_gpu_burn(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            self.say(f"stopping gpu_burn (process group {process.pid})")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=KILL_GRACE_SEC)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
        self.process = process
        self._drain(0.5)
        self.process = None
        if process.stdout is not None:
            process.stdout.close()
        if process.returncode is not None:
            self.say(f"gpu_burn ended with {_signal_exit(process.returncode)}")
        else:
            self.say("gpu_burn did not end even after SIGKILL (stuck in the driver?)")

    # diagnostics

    def diagnostics(self, when: str) -> None:
        commands = host_diagnostics(self.config)
        devices = [argv[-1] for argv in commands if argv[2:3] == ["nvme"]]
        failed = sum(not self._diagnostic(when, argv) for argv in commands)
        if not devices:
            self._report(f"diagnostics {when}: no NVMe controller under /dev, nvme and smartctl "
                         "not run")
        self.say(f"diagnostics {when}: {len(commands) - failed} of {len(commands)} commands "
                 "answered (details in the log)")

    def _diagnostic(self, when: str, argv: list[str]) -> bool:
        title = f"--- diagnostics {when}: {shlex.join(argv)}"
        tools = argv[:1] if argv[1:2] != ["-n"] else [argv[0], argv[2]]
        missing = [tool for tool in tools if shutil.which(tool) is None]
        if missing:
            self._report(f"{title}: not run, {' and '.join(missing)} not found")
            return False
        timeout = (self.config.nvidia_smi_timeout_sec if argv[0] == self.config.nvidia_smi
                   else DIAG_TIMEOUT_SEC)
        started = time.monotonic()
        process = subprocess.Popen(argv, env=self._child_env(), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   process_group=0)
        try:
            output, _ = process.communicate(timeout=timeout)
            note = f"exit {process.returncode}"
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            note = f"timed out after {timeout:g} s"
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        self._report(f"{title} ({note}, {time.monotonic() - started:.1f} s)")
        if self.log is not None:
            self.log.write(output if output.endswith(b"\n") or not output else output + b"\n")
            self.log.flush()
        return process.returncode == 0
