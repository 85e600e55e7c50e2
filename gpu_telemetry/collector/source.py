"""Run `nvidia-smi -q -x` and return its bytes: the one module that runs the GPU tool, and
the source of readings for GPU_SOURCE=nvidia-smi (NvidiaSmiSource; NVML's is collector/nvml.py).

Parsing lives in parser.py. Here a failed call becomes a SourceError whose `kind` says what
went wrong and whose one-line `message` keeps nvidia-smi's own words, so the event row in the
database shows what the driver said ("GPU is lost", "Driver/library version mismatch", ...).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import threading
from collections.abc import Callable

from gpu_telemetry.collector.parser import Reading, element_to_json, parse_document
from gpu_telemetry.errors import SourceError

MESSAGE_MAX_CHARS = 500

# Calls that outlived SIGKILL. While one lives, no new call starts: a second nvidia-smi queued
# behind a wedged driver only adds a second stuck process, and the contract is never two in
# flight.
_abandoned: list[subprocess.Popen] = []

# nvidia-smi's own words, checked in this order against what it printed on a non-zero exit.
# It prints these on stdout, not stderr, and its exit status is the NVML return code
# (15 GPU_IS_LOST, 6 NOT_FOUND, 18 LIB_RM_VERSION_MISMATCH, 9 DRIVER_NOT_LOADED, 255 UNKNOWN),
# which is less stable across driver versions than the text, so the text decides.
_KINDS_BY_TEXT = (
    # "Unable to determine the device handle for GPU0000:01:00.0: GPU is lost.  Reboot the
    # system to recover this GPU": the P40 on an OCuLink dock falling off the bus (Xid 79).
    ("gpu is lost", "gpu_lost"),
    ("unable to determine the device handle", "device_handle"),
    ("no devices were found", "no_devices"),
    # After a driver upgrade without a reboot; the second line names the NVML version.
    ("driver/library version mismatch", "driver_mismatch"),
    ("couldn't communicate with the nvidia driver", "driver_unreachable"),
    ("failed to initialize nvml", "nvml_init"),
)


def read_nvidia_smi(executable: str, timeout_sec: float, grace_sec: float = 2.0) -> bytes:
    """Run `executable -q -x` (a path, or a name looked up on PATH) and return its stdout.

    Raises SourceError with kind not_found, not_executable, timeout, empty_output, one of
    the kinds in _KINDS_BY_TEXT, or exit_status (any other non-zero exit or a signal).
    """
    _abandoned[:] = [process for process in _abandoned if process.poll() is None]
    if _abandoned:
        raise SourceError("still_running",
                          f"an earlier nvidia-smi (pid {_abandoned[0].pid}) is still stuck after "
                          "SIGKILL; not starting another until it exits")
    try:
        # A session of its own, so a timeout can kill nvidia-smi and anything it started.
        process = subprocess.Popen(
            [executable, "-q", "-x"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise SourceError("not_found",
                          f"nvidia-smi not found: {executable} (set NVIDIA_SMI)") from None
    except OSError as exc:
        kind = "not_executable" if exc.errno in (errno.EACCES, errno.EPERM, errno.ENOEXEC) \
            else "spawn_failed"
        raise SourceError(kind, f"cannot run nvidia-smi {executable}: {exc.strerror}") from None

    try:
        stdout, stderr = process.communicate(timeout=timeout_sec)
    except subprocess.TimeoutExpired:
        raise _kill_after_timeout(process, timeout_sec, grace_sec) from None

    returncode = process.returncode
    if returncode != 0:
        raise _classify_failure(returncode, _one_line(stdout + b"\n" + stderr))
    if not stdout.strip():
        said = _one_line(stderr)
        raise SourceError("empty_output", "nvidia-smi exited with status 0 but printed nothing"
                          + (f": {said}" if said else ""), returncode)
    return stdout


def _kill_after_timeout(process: subprocess.Popen, timeout_sec: float,
                        grace_sec: float) -> SourceError:
    outcome = kill_group(process, grace_sec, _abandoned)
    return SourceError("timeout", f"nvidia-smi timed out after {timeout_sec:g} s and {outcome}",
                       process.returncode)


def kill_group(process: subprocess.Popen, grace_sec: float,
               abandoned: list[subprocess.Popen]) -> str:
    """SIGKILL the process's whole group (it was started in a session of its own); give up on
    it if it survives grace_sec. Returns what happened, for the message.

    nvidia-smi hangs inside the driver when a GPU is wedged (seen with the P40 after an Xid
    79), and so does an NVML call; a process in uninterruptible sleep ignores even SIGKILL
    until the ioctl returns, which may be never. The collector must keep sampling, so such a
    process is abandoned: put on `abandoned`, our pipe ends closed, and a daemon thread reaps
    it if it ever exits.
    """
    # Not yet reaped (communicate timed out), so the group id cannot have been reused.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        process.wait(timeout=grace_sec)
        outcome = "was killed"
    except subprocess.TimeoutExpired:
        outcome = "could not be killed; abandoned"
        abandoned.append(process)
        threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    return outcome


def _classify_failure(returncode: int, said: str) -> SourceError:
    lowered = said.lower()
    for needle, kind in _KINDS_BY_TEXT:
        if needle in lowered:
            return SourceError(kind, said, returncode)
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    return SourceError("exit_status",
                       f"nvidia-smi {how}: {said}" if said else f"nvidia-smi {how} with no output",
                       returncode)


def _one_line(output: bytes) -> str:
    """Whitespace runs (newlines included) folded to one space, trimmed to fit an event row."""
    text = " ".join(output.decode("utf-8", errors="replace").split())
    if len(text) > MESSAGE_MAX_CHARS:
        text = text[:MESSAGE_MAX_CHARS - 3].rstrip() + "..."
    return text


class NvidiaSmiSource:
    """GPU_SOURCE=nvidia-smi: one `nvidia-smi -q -x` per reading; the raw snapshot of a GPU is
    its element of that same document."""

    def __init__(self, executable: str, timeout_sec: float):
        self.executable = executable
        self.timeout_sec = timeout_sec

    def read(self) -> Reading:
        return parse_document(read_nvidia_smi(self.executable, self.timeout_sec))

    def attach_raw(self, reading: Reading, raw_due: Callable[[str], bool]) -> None:
        for gpu in reading.gpus:
            if raw_due(gpu.gpu_uuid):
                gpu.raw_json = element_to_json(reading.elements[gpu.gpu_uuid])

    def close(self) -> None:
        pass
