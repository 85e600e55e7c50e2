"""ALERT_COMMAND: run once per alert firing or resolving, the alert as one JSON object on its
stdin, beside the loop (a thread of its own), so that a slow or hanging command never moves a
sample. A command that runs longer than ALERT_COMMAND_TIMEOUT_SEC is killed with its process
group; one that fails (non-zero exit, killed, cannot start) is said in the log, counted, and
tried again up to RETRIES times, RETRY_SEC apart. The command is run by /bin/sh, so it can be
a pipeline: `curl -fsS -d @- https://ntfy.sh/my-gpu` (docs/alerts.md has more).
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from gpu_telemetry.collector.alerts import Alert
from gpu_telemetry.collector.sample import default_host, now_utc
from gpu_telemetry.collector.source import kill_group
from gpu_telemetry.config import Config
from gpu_telemetry.errors import EXIT_CONFIG, EXIT_OK

RETRIES = 2
RETRY_SEC = 5.0
QUEUE_MAX = 200
KILL_GRACE_SEC = 2.0
# Commands that outlived SIGKILL (stuck in the kernel); reaped by kill_group's thread if ever.
_abandoned: list[subprocess.Popen] = []


def run_command(command: str, alert: dict, timeout_sec: float) -> str | None:
    """Run it once; None when it exited 0, else what went wrong (one line)."""
    body = json.dumps(alert, ensure_ascii=False).encode() + b"\n"
    try:
        process = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   start_new_session=True)
    except OSError as exc:
        return f"cannot run ALERT_COMMAND: {exc.strerror}"
    try:
        _, err = process.communicate(body, timeout=timeout_sec)
    except subprocess.TimeoutExpired:
        outcome = kill_group(process, KILL_GRACE_SEC, _abandoned)
        return f"ALERT_COMMAND timed out after {timeout_sec:g} s and {outcome}"
    if process.returncode != 0:
        said = " ".join(err.decode(errors="replace").split())[:200]
        return f"ALERT_COMMAND exited with status {process.returncode}" + (
            f": {said}" if said else "")
    return None


class AlertSender:
    """The queue of alerts to send and the thread that sends them, in order."""

    def __init__(self, command: str, timeout_sec: float, say: Callable[[str], None]):
        self.command = command
        self.timeout_sec = timeout_sec
        self.say = say
        self.failures = 0
        self.sent = 0
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_MAX)
        self._thread: threading.Thread | None = None

    def send(self, alert: dict) -> None:
        if not self.command:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alert-command", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            self.say(f"warning: {self.dropped} alert(s) not sent: ALERT_COMMAND is too slow")

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            for attempt in range(RETRIES + 1):
                problem = run_command(self.command, alert, self.timeout_sec)
                if problem is None:
                    self.sent += 1
                    break
                self.failures += 1
                again = f"; trying again in {RETRY_SEC * (attempt + 1):g} s" \
                    if attempt < RETRIES else "; given up"
                self.say(f"warning: alert {alert['alert']} {alert['state']} not sent: "
                         f"{problem}{again} ({self.failures} failed run(s) of ALERT_COMMAND "
                         "since the start)")
                if attempt < RETRIES:
                    time.sleep(RETRY_SEC * (attempt + 1))

    def close(self, wait_sec: float = 0.0) -> None:
        """Stop after what is queued (waiting at most wait_sec for it)."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout=wait_sec)


def send_now(config: Config, alert: str, state: str, summary: str, *, value=None,
             program: str = "collect_once.py") -> int:
    """One alert of the host through ALERT_COMMAND, now (not queued): 0 sent, 1 the command
    failed, 78 no ALERT_COMMAND."""
    if not config.alert_command:
        print(f"{program}: ALERT_COMMAND is not set: alerts are only logged and recorded "
              "(docs/alerts.md)", file=sys.stderr)
        return EXIT_CONFIG
    body = Alert(alert, state, now_utc(), default_host(), summary, value=value).to_json()
    problem = run_command(config.alert_command, body, config.alert_command_timeout_sec)
    if problem is not None:
        print(f"{program}: {alert} alert not sent: {problem}", file=sys.stderr)
        return 1
    print(f"{alert} {state} sent through ALERT_COMMAND")
    return EXIT_OK


def test_alert(config: Config) -> int:
    """collect_once.py --test-alert: a sample alert through ALERT_COMMAND."""
    return send_now(config, "test", "firing",
                    f"{default_host()}: a test alert from collect_once.py --test-alert")
