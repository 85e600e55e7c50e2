"""The kernel log: NVIDIA Xid lines and PCIe AER lines, parsed; and its follower, a child
process of the loop (KERNEL_LOG_COMMAND) whose lines a thread reads, restarted when it dies.

An Xid is the driver's report of a GPU error ("NVRM: Xid (PCI:0000:01:00): 79, pid=...,
name=..., GPU has fallen off the bus."). NVML cannot report some of them (79, 119, 120), so the
kernel log is the one complete source. The formats handled, all seen from real drivers:

  NVRM: Xid (PCI:0000:01:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.
  NVRM: Xid (PCI:0000:3b:00): 13, Graphics SM Warp Exception on (GPC 0, TPC 0): Out Of Range
  NVRM: Xid (0000:82:00): 43, Ch 00000010                       (older drivers: no "PCI:")
  NVRM: Xid (PCI:0000:af:00): 31, pid=137425, name=python, Ch 00000008, intr 00000000. MMU ...

behind a journald prefix ("2026-01-04T00:00:00.123456+00:00 host kernel: "), a dmesg one
("[ 1234.567890] ") or none. AER lines name the device they are about:

  pcieport 0000:00:1c.0: AER: Corrected error received: 0000:01:00.0
  nvidia 0000:01:00.0: AER: PCIe Bus Error: severity=Corrected, type=Physical Layer, (Receiver ID)
"""

from __future__ import annotations

import contextlib
import queue
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime

# What an operator needs to know of each Xid they are likely to meet (NVIDIA's Xid catalogue,
# shortened).
XID_MEANINGS = {
    8: "GPU stopped processing (timeout)",
    13: "graphics engine exception (often an application fault)",
    31: "GPU memory page fault (usually an application bug)",
    32: "invalid or corrupted push buffer stream",
    38: "driver firmware error",
    43: "GPU stopped processing (an application hit a fault)",
    45: "preemptive cleanup after a previous error or a killed process",
    48: "double-bit ECC error: uncorrectable memory error",
    61: "internal micro-controller breakpoint (firmware)",
    62: "internal micro-controller halt (firmware)",
    63: "ECC page retirement or row remapping recorded",
    64: "ECC page retirement or row remapping failed",
    68: "video processor exception",
    69: "graphics engine class error",
    74: "NVLink error",
    79: "GPU has fallen off the bus (power, heat, the PCIe link)",
    92: "high single-bit ECC error rate",
    94: "contained ECC error: the application was stopped, the GPU is usable",
    95: "uncontained ECC error: every application on the GPU stopped; reset the GPU",
    109: "context switch timeout",
    119: "GSP firmware timeout (the GPU stopped answering the driver)",
    120: "GSP firmware error",
    121: "C2C link error",
    140: "unrecovered ECC error",
}

_PREFIX = re.compile(
    r"^(?:(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:?\d\d|Z)?)\s+\S+\s+"
    r"kernel:\s*|\[\s*(?P<uptime>\d+\.\d+)\]\s*|\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ kernel:\s*)?")
_XID = re.compile(r"NVRM: Xid \((?:PCI:)?(?P<bus>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:"
                  r"[0-9a-fA-F]{2})(?:\.\d)?\): (?P<xid>\d+), (?P<rest>.*)$")
_PID = re.compile(r"^pid=(?P<pid>'?[^,']*'?), name=(?P<name>[^,]*), (?P<text>.*)$")
_AER = re.compile(r"(?:AER:|PCIe Bus Error)")
_BUS_ID = re.compile(r"\b([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.(\d)\b")


@dataclass(frozen=True)
class KernelEvent:
    """One Xid or AER line: `kind` "xid" or "aer", the bus (normalised to nvidia-smi's
    `00000000:01:00.0`), and for an Xid its number, pid, process and the driver's text."""

    kind: str
    pci_bus_id: str
    line: str
    xid: int | None = None
    pid: int | None = None
    process: str | None = None
    text: str = ""
    ts: datetime | None = None

    def meaning(self) -> str:
        return XID_MEANINGS.get(self.xid, "see NVIDIA's Xid catalogue") if self.xid else ""


def normal_bus_id(domain: str, bus: str, device: str, function: str = "0") -> str:
    """`0000:01:00` or `00000000:01:00.0` -> nvidia-smi's `00000000:01:00.0`."""
    return f"{int(domain, 16):08X}:{bus.upper()}:{device.upper()}.{function}"


def parse_line(line: str) -> KernelEvent | None:
    """The Xid or AER event a kernel log line reports, else None."""
    line = line.rstrip("\n")
    prefix = _PREFIX.match(line)
    body = line[prefix.end():] if prefix else line
    ts = None
    if prefix and prefix.group("iso"):
        with contextlib.suppress(ValueError):
            ts = datetime.fromisoformat(prefix.group("iso").replace("Z", "+00:00"))
    xid = _XID.search(body)
    if xid:
        domain, bus, device = xid.group("bus").split(":")
        rest = xid.group("rest").strip()
        pid = process = None
        named = _PID.match(rest)
        if named:
            raw_pid = named.group("pid").strip("'")
            pid = int(raw_pid) if raw_pid.isdigit() else None
            process = named.group("name").strip() or None
            if process in ("<unknown>", ""):
                process = None
            rest = named.group("text").strip()
        return KernelEvent("xid", normal_bus_id(domain, bus, device), body,
                           int(xid.group("xid")), pid, process, rest, ts)
    if _AER.search(body):
        found = _BUS_ID.findall(body)
        if found:
            # The device the error is about: the last one named ("... received: 0000:01:00.0"),
            # else the reporting device itself.
            return KernelEvent("aer", normal_bus_id(*found[-1]), body, text=body, ts=ts)
    return None


class KernelLog:
    """KERNEL_LOG_COMMAND as a long-lived child: a thread queues its parsed lines, and `take()`
    gives what came since the last call, never blocking. When the command ends it is started
    again after a pause (at most every RESTART_SEC); what it printed on stderr when it ended
    (e.g. no permission to read the journal) is said once by `take()`'s caller."""

    RESTART_SEC = 10.0

    def __init__(self, command: str):
        self.command = command
        self.lines: queue.Queue = queue.Queue()
        self.process: subprocess.Popen | None = None
        self._started_at = -self.RESTART_SEC
        self._thread: threading.Thread | None = None
        self.problem: str | None = None

    def _start(self) -> None:
        try:
            self.process = subprocess.Popen(
                shlex.split(self.command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
        except OSError as exc:
            self.process = None
            self.problem = f"cannot run the kernel log command {self.command!r}: {exc.strerror}"
            return
        self._thread = threading.Thread(target=self._read, args=(self.process,),
                                        name="kernel-log", daemon=True)
        self._thread.start()
        threading.Thread(target=self._errors, args=(self.process,), name="kernel-log-errors",
                         daemon=True).start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            event = parse_line(line)
            if event is not None:
                self.lines.put(event)
        process.wait()
        if self.problem is None:
            self.problem = (f"the kernel log command {self.command!r} ended (status "
                            f"{process.returncode})")

    def _errors(self, process: subprocess.Popen) -> None:
        """journalctl without the right to read the system journal keeps running and says so
        on stderr ("You are currently not seeing messages from other users and the system")."""
        for line in process.stderr:
            said = " ".join(line.split())[:300]
            if said:
                self.problem = (f"kernel log ({self.command}): {said}"
                                + (_PERMISSION_HINT if _looks_like_permission(said) else ""))

    def take(self) -> list[KernelEvent]:
        """The events read since the last call; (re)starts the command when it is not running."""
        running = self.process is not None and self.process.poll() is None
        if not running and time.monotonic() - self._started_at >= self.RESTART_SEC:
            if self._thread is not None:
                self._thread.join(timeout=0.5)
            self._started_at = time.monotonic()
            self._start()
        events = []
        while True:
            try:
                events.append(self.lines.get_nowait())
            except queue.Empty:
                return events

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


_PERMISSION_HINT = ("; to read the kernel log the collector's user must be in the "
                    "systemd-journal (or adm) group: sudo usermod -aG systemd-journal $USER, "
                    "then log in again")


def _looks_like_permission(said: str) -> bool:
    lowered = said.lower()
    return any(word in lowered for word in ("permission", "not seeing messages", "insufficient",
                                            "operation not permitted"))
