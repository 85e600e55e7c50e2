"""Alerts: the kernel log's Xid and AER lines parsed from real driver output, each alert's
rule with an injected clock, and the loop end to end (the nvidia-smi stand-in heated past the
slowdown threshold and back, an Xid 79 in a kernel-log stand-in, the GPU lost and back, a
restart in the middle of an episode, a hanging alert command)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gpu_telemetry.collector.alert_send import run_command
from gpu_telemetry.collector.alerts import Alerts, Thresholds
from gpu_telemetry.collector.kernel_log import parse_line
from gpu_telemetry.collector.parser import parse_document
from gpu_telemetry.errors import SourceError
from tests.helpers import FIXTURES, REPO_ROOT, base_env
from tests.reliability.harness import wait_until

# Real lines, as drivers and kernels print them (journald short-iso-precise, dmesg, bare).
XID_LINES = [
    ("2026-01-04T03:12:55.041263+00:00 x1ai kernel: NVRM: Xid (PCI:0000:01:00): 79, "
     "pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
     79, "00000000:01:00.0", None, None, "GPU has fallen off the bus."),
    ("[ 1843.308145] NVRM: Xid (PCI:0000:44:00): 79, GPU has fallen off the bus.",
     79, "00000000:44:00.0", None, None, "GPU has fallen off the bus."),
    ("NVRM: Xid (PCI:0000:af:00): 31, pid=137425, name=python, Ch 00000008, intr 00000000. "
     "MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted @ 0x7f85_2f000000. Fault is of type "
     "FAULT_PDE ACCESS_TYPE_VIRT_READ",
     31, "00000000:AF:00.0", 137425, "python", "Ch 00000008, intr 00000000. MMU Fault"),
    ("Jan  4 03:12:55 x1ai kernel: [ 99.1] NVRM: Xid (0000:82:00): 43, Ch 00000010",
     43, "00000000:82:00.0", None, None, "Ch 00000010"),
    ("NVRM: Xid (PCI:0000:17:00): 119, pid=2433, name=python3, Timeout after 6s of waiting "
     "for RPC response from GPU0 GSP! Expected function 76 (GSP_RM_CONTROL) (0x20800a4c 0x4).",
     119, "00000000:17:00.0", 2433, "python3", "Timeout after 6s"),
    ("[Sun Jan  4 03:12:55 2026] NVRM: Xid (PCI:0000:3b:00): 13, Graphics SM Warp Exception "
     "on (GPC 0, TPC 0): Out Of Range Address",
     13, "00000000:3B:00.0", None, None, "Graphics SM Warp Exception"),
]
AER_LINES = [
    ("2026-01-04T03:12:50.000001+00:00 x1ai kernel: pcieport 0000:00:1c.0: AER: Corrected "
     "error received: 0000:01:00.0", "00000000:01:00.0"),
    ("[ 5.2] nvidia 0000:01:00.0: AER: PCIe Bus Error: severity=Corrected, type=Physical "
     "Layer, (Receiver ID)", "00000000:01:00.0"),
]
NOT_EVENTS = [
    "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024",
    "[ 1843.439662] NVRM: The NVIDIA probe routine failed for 1 device(s).",
    "pcieport 0000:00:1c.0: PME: Signaling with IRQ 122",
]


@pytest.mark.parametrize(("line", "xid", "bus", "pid", "process", "text"), XID_LINES)
def test_xid_lines_of_current_and_older_drivers(line, xid, bus, pid, process, text):
    event = parse_line(line)
    assert event is not None and event.kind == "xid"
    assert (event.xid, event.pci_bus_id, event.pid, event.process) == (xid, bus, pid, process)
    assert event.text.startswith(text)
    assert event.meaning()


def test_aer_lines_name_the_device_and_other_lines_are_nothing():
    for line, bus in AER_LINES:
        event = parse_line(line)
        assert event is not None and (event.kind, event.pci_bus_id) == ("aer", bus), line
    assert parse_line(AER_LINES[0][0]).ts == datetime(2026, 1, 4, 3, 12, 50, 1, tzinfo=UTC)
    assert [parse_line(line) for line in NOT_EVENTS] == [None] * len(NOT_EVENTS)


# -- the rules, with an injected clock -------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


GPU = parse_document((FIXTURES / "rtx-3080-v13.xml").read_bytes()).gpus[0]  # slowdown 95 C
T0 = datetime(2026, 1, 4, tzinfo=UTC)


def alerts(tmp_path: Path, clock: Clock) -> Alerts:
    return Alerts(Thresholds(temp_margin_c=5, temp_c=85, outage_sec=300, source_sec=60),
                  "x1ai", tmp_path, clock, warn=lambda line: None)


def names(fired) -> list[tuple[str, str]]:
    return [(a.alert, a.state) for a in fired]


def test_gpu_hot_fires_once_hovering_and_resolves_below_the_hysteresis(tmp_path):
    clock, seen = Clock(), []
    rules = alerts(tmp_path, clock)
    for temp in (80, 89, 90, 89, 90, 91, 88, 87, 86, 80):  # threshold 95 - 5 = 90
        seen += rules.evaluate(T0, [replace(GPU, temp_c=temp)], None, None, False)
    assert names(seen) == [("gpu_hot", "firing"), ("gpu_hot", "resolved")]
    assert (seen[0].value, seen[0].threshold, seen[1].value) == (90, 90, 86)
    assert "95 °C" in seen[0].summary and seen[0].pci_bus_id == GPU.pci_bus_id
    # Without a slowdown threshold, ALERT_TEMP_C; a thermal slowdown reason fires too.
    other = alerts(tmp_path / "b", Clock())
    assert names(other.evaluate(T0, [replace(GPU, temp_slowdown_c=None, temp_c=85)], None,
                                None, False)) == [("gpu_hot", "firing")]
    third = alerts(tmp_path / "c", Clock())
    assert names(third.evaluate(T0, [replace(GPU, temp_c=60, throttle_hw_thermal=True)], None,
                                None, False)) == [("gpu_hot", "firing")]


def test_an_open_alert_survives_a_restart(tmp_path):
    rules = alerts(tmp_path, Clock())
    assert names(rules.evaluate(T0, [replace(GPU, temp_c=93)], None, None, False)) == [
        ("gpu_hot", "firing")]
    again = alerts(tmp_path, Clock())  # the collector restarted
    assert again.evaluate(T0, [replace(GPU, temp_c=93)], None, None, False) == []
    resolved = again.evaluate(T0 + timedelta(minutes=3), [replace(GPU, temp_c=70)], None,
                              None, False)
    assert names(resolved) == [("gpu_hot", "resolved")] and resolved[0].since == T0


def test_gpu_lost_by_missing_and_by_nvidia_smi_then_back(tmp_path):
    rules = alerts(tmp_path, Clock())
    rules.evaluate(T0, [GPU], None, None, False)
    assert names(rules.evaluate(T0, [], None, None, False)) == [("gpu_lost", "firing")]
    assert names(rules.evaluate(T0, [GPU], None, None, False)) == [("gpu_lost", "resolved")]
    lost = SourceError("gpu_lost", "Unable to determine the device handle for GPU0000:0C:00.0: "
                       "GPU is lost. Reboot the system to recover this GPU", 15)
    fired = rules.evaluate(T0, [], lost, None, False)
    assert names(fired) == [("gpu_lost", "firing")] and fired[0].gpu_uuid == GPU.gpu_uuid
    assert rules.evaluate(T0, [], lost, None, False) == []


def test_source_failed_after_alert_source_sec_and_database_outage_after_alert_outage_sec(
        tmp_path):
    clock = Clock()
    rules = alerts(tmp_path, clock)
    broken = SourceError("timeout", "nvidia-smi timed out after 10 s and was killed")
    assert rules.evaluate(T0, [], broken, None, False) == []
    clock.now += 59
    assert rules.evaluate(T0, [], broken, None, False) == []
    clock.now += 2
    assert names(rules.evaluate(T0, [], broken, None, False)) == [("source_failed", "firing")]
    assert names(rules.evaluate(T0, [GPU], None, None, False)) == [("source_failed", "resolved")]
    started = clock.now
    clock.now += 299
    assert rules.evaluate(T0, [GPU], None, started, True) == []
    clock.now += 2
    fired = rules.evaluate(T0, [GPU], None, started, True)
    assert names(fired) == [("database_outage", "firing")] and fired[0].threshold == 300
    assert rules.evaluate(T0, [GPU], None, None, True) == []  # stored again, backlog left
    assert names(rules.evaluate(T0, [GPU], None, None, False)) == [
        ("database_outage", "resolved")]


def test_memory_errors_and_pcie_errors_fire_and_go_quiet(tmp_path):
    clock = Clock()
    rules = alerts(tmp_path, clock)
    rules.evaluate(T0, [replace(GPU, ecc_volatile_uncorrected=0)], None, None, False)
    fired = rules.evaluate(T0, [replace(GPU, ecc_volatile_uncorrected=2)], None, None, False)
    assert names(fired) == [("memory_errors", "firing")]
    assert "uncorrectable ECC errors 2" in fired[0].summary
    clock.now += 601
    assert names(rules.evaluate(T0, [replace(GPU, ecc_volatile_uncorrected=2)], None, None,
                                False)) == [("memory_errors", "resolved")]
    assert names(rules.evaluate(T0, [replace(GPU, remapped_rows_failure=True)], None, None,
                                False)) == [("memory_errors", "firing")]
    aer = parse_line("pcieport 0000:00:1c.0: AER: Corrected error received: 0000:0C:00.0")
    assert names(rules.evaluate(T0, [GPU], None, None, False, [aer, aer])) == [
        ("pcie_errors", "firing")]
    clock.now += 601
    assert ("pcie_errors", "resolved") in names(rules.evaluate(T0, [GPU], None, None, False))


def test_every_xid_line_fires_with_its_meaning(tmp_path):
    rules = alerts(tmp_path, Clock())
    rules.evaluate(T0, [GPU], None, None, False)
    line = parse_line("NVRM: Xid (PCI:0000:0c:00): 79, pid='<unknown>', name=<unknown>, "
                      "GPU has fallen off the bus.")
    fired = rules.evaluate(T0, [GPU], None, None, False, [line, line])
    assert names(fired) == [("xid", "firing")] * 2
    alert = fired[0].to_json()
    assert (alert["xid"], alert["gpu_uuid"], alert["pci_bus_id"]) == (
        79, GPU.gpu_uuid, "00000000:0C:00.0")
    assert "fallen off the bus" in alert["summary"] and alert["gpu_name"] == GPU.gpu_name
    assert fired[0].event().kind == "xid" and fired[0].event().data["xid"] == 79


def test_the_command_gets_one_json_object_and_a_hanging_one_is_killed(tmp_path):
    out = tmp_path / "got.json"
    assert run_command(f"cat > {out}", {"alert": "test", "state": "firing"}, 5) is None
    assert json.loads(out.read_text()) == {"alert": "test", "state": "firing"}
    start = time.monotonic()
    assert "timed out after 0.5 s" in run_command("sleep 30", {"alert": "x"}, 0.5)
    assert time.monotonic() - start < 5
    assert run_command("echo nope >&2; exit 3", {}, 5) == "ALERT_COMMAND exited with status 3: nope"


# -- the loop, end to end --------------------------------------------------------------------

def start_loop(env: dict, tmp_path: Path, label: str) -> subprocess.Popen:
    (tmp_path / "empty.env").touch()
    with (tmp_path / f"{label}.out").open("w") as log:
        return subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "bin" / "collect_once.py"), "--loop",
             "--interval", "0.2", "--env", str(tmp_path / "empty.env")],
            env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)


def test_the_loop_alerts_once_per_episode_and_records_it(db, tmp_path):
    received, kernel, heat = tmp_path / "alerts.jsonl", tmp_path / "kern.log", tmp_path / "heat"
    mode = tmp_path / "mode"
    kernel.touch()
    mode.write_text("ok\n")
    env = base_env(tmp_path, db.env, fixture="rtx-3080-v13.xml",
                   ALERT_COMMAND=f"cat >> {received}", ALERT_TEMP_MARGIN_C="30",
                   KERNEL_LOG_COMMAND=f"tail -n 0 -F {kernel}",
                   NVSMI_STANDIN_HEAT_FILE=str(heat), NVSMI_STANDIN_MODE_FILE=str(mode))

    def got() -> list[tuple]:
        if not received.exists():
            return []
        return [(a["alert"], a["state"], a.get("xid"))
                for a in map(json.loads, received.read_text().splitlines())]

    loop = start_loop(env, tmp_path, "first")
    try:
        with db.connect() as conn:
            wait_until(lambda: conn.execute("SELECT count(*) FROM telemetry.gpu_samples")
                       .fetchone()[0] >= 3, timeout=60, what="3 samples", alive=loop)
        heat.write_text(f"{int(time.time()) - 10} 1\n")  # +45 C: 72 C, past 95 - 30
        wait_until(lambda: ("gpu_hot", "firing", None) in got(), timeout=30, what="gpu_hot",
                   alive=loop)
        loop.send_signal(signal.SIGTERM)
        assert loop.wait(timeout=30) == 0
        loop = start_loop(env, tmp_path, "second")  # restarted in the middle of the episode
        time.sleep(2)
        heat.unlink()
        wait_until(lambda: ("gpu_hot", "resolved", None) in got(), timeout=30,
                   what="gpu_hot resolved", alive=loop)
        with kernel.open("a") as log:
            log.write("2026-01-04T03:12:55.041263+00:00 x1ai kernel: NVRM: Xid (PCI:0000:0c:00): "
                      "79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n")
        wait_until(lambda: ("xid", "firing", 79) in got(), timeout=30, what="xid", alive=loop)
        mode.write_text("gpu_lost\n")
        wait_until(lambda: ("gpu_lost", "firing", None) in got(), timeout=30, what="gpu_lost",
                   alive=loop)
        mode.write_text("ok\n")
        wait_until(lambda: ("gpu_lost", "resolved", None) in got(), timeout=30,
                   what="gpu_lost resolved", alive=loop)
        time.sleep(1)
        loop.send_signal(signal.SIGTERM)
        assert loop.wait(timeout=30) == 0
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    assert sorted(got()) == sorted([("gpu_hot", "firing", None), ("gpu_hot", "resolved", None),
                                    ("xid", "firing", 79), ("gpu_lost", "firing", None),
                                    ("gpu_lost", "resolved", None)])
    with db.connect() as conn:
        rows = conn.execute("SELECT kind, data->>'state', data->>'xid' FROM "
                            "telemetry.collector_events WHERE kind LIKE 'alert%%' OR kind = 'xid'"
                            " ORDER BY ts").fetchall()
    assert sorted(rows) == sorted([("alert_gpu_hot", "firing", None),
                                   ("alert_gpu_hot", "resolved", None), ("xid", "firing", "79"),
                                   ("alert_gpu_lost", "firing", None),
                                   ("alert_gpu_lost", "resolved", None)])


def test_a_hanging_alert_command_does_not_move_a_sample(db, tmp_path):
    """...nor does a kernel log the user may not read: said once, with the fix."""
    journal = ("sh -c 'echo \"Hint: You are currently not seeing messages from other users and "
               "the system.\" >&2; exec sleep 60'")
    env = base_env(tmp_path, db.env, fixture="rtx-3080-v13.xml", ALERT_COMMAND="sleep 60",
                   ALERT_COMMAND_TIMEOUT_SEC="30", ALERT_TEMP_C="20", ALERT_TEMP_MARGIN_C="90",
                   KERNEL_LOG_COMMAND=journal)
    loop = start_loop(env, tmp_path, "loop")
    try:
        with db.connect() as conn:
            def count() -> int:
                return conn.execute("SELECT count(*) FROM telemetry.gpu_samples").fetchone()[0]

            wait_until(lambda: count() >= 25, timeout=60, what="25 samples", alive=loop)
            gaps = [float(row[0]) for row in conn.execute(
                "SELECT extract(epoch FROM ts - lag(ts) OVER (ORDER BY ts)) "
                "FROM telemetry.gpu_samples ORDER BY ts").fetchall()[1:]]
            fired = conn.execute("SELECT count(*) FROM telemetry.collector_events "
                                 "WHERE kind = 'alert_gpu_hot'").fetchone()[0]
    finally:
        loop.send_signal(signal.SIGTERM)
        loop.wait(timeout=30)
    assert fired == 1  # the alert fired at the first sample; its command hangs meanwhile
    assert max(gaps) < 0.2 * 3, gaps
    said = [line for line in (tmp_path / "loop.out").read_text().splitlines()
            if "not seeing messages" in line]
    assert len(said) == 1 and "sudo usermod -aG systemd-journal $USER" in said[0], said


def test_test_alert_sends_a_sample_through_the_command(tmp_path):
    from tests.helpers import run_script

    out = tmp_path / "alert.json"
    result = run_script("collect_once.py", "--test-alert",
                        env=base_env(tmp_path, None, ALERT_COMMAND=f"cat > {out}"),
                        tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    alert = json.loads(out.read_text())
    assert (alert["alert"], alert["state"]) == ("test", "firing") and alert["summary"]
    result = run_script("collect_once.py", "--test-alert",
                        env=base_env(tmp_path, None, ALERT_COMMAND="exit 3"), tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "collect_once.py: test alert not sent: ALERT_COMMAND exited with status 3")
    result = run_script("collect_once.py", "--test-alert", env=base_env(tmp_path, None),
                        tmp_path=tmp_path)
    assert result.returncode == 78 and "ALERT_COMMAND is not set" in result.stderr


def test_the_kernel_log_command_is_restarted_and_a_refusal_is_said(tmp_path, monkeypatch):
    from gpu_telemetry.collector.kernel_log import KernelLog

    starts = tmp_path / "starts"
    monkeypatch.setattr(KernelLog, "RESTART_SEC", 0.2)
    follower = KernelLog(f"sh -c 'echo x >> {starts}; echo \"NVRM: Xid (PCI:0000:01:00): 79, "
                         f"GPU has fallen off the bus.\"'")
    got = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and (len(got) < 2 or len(starts.read_text().split()) < 3):
        got += follower.take()
        time.sleep(0.05)
    follower.close()
    assert len(starts.read_text().split()) >= 3 and {e.xid for e in got} == {79}
    assert "ended (status 0)" in follower.problem
    journal = KernelLog("sh -c 'echo \"Hint: You are currently not seeing messages from other "
                        "users and the system.\" >&2; exec sleep 30'")
    journal.take()
    wait_until(lambda: journal.problem, timeout=5, what="the refusal")
    journal.close()
    assert "not seeing messages" in journal.problem
    assert "sudo usermod -aG systemd-journal $USER" in journal.problem


def test_a_failing_command_is_said_counted_and_tried_again(monkeypatch):
    import gpu_telemetry.collector.alert_send as alert_send

    monkeypatch.setattr(alert_send, "RETRY_SEC", 0.05)
    said = []
    sender = alert_send.AlertSender("exit 1", 5, said.append)
    sender.send({"alert": "gpu_hot", "state": "firing"})
    wait_until(lambda: len(said) == 3, timeout=10, what="three tries")
    sender.close(wait_sec=5)
    assert sender.failures == 3 and sender.sent == 0
    assert said[0].startswith("warning: alert gpu_hot firing not sent: ALERT_COMMAND exited "
                              "with status 1; trying again")
    assert "given up (3 failed run(s)" in said[2]


def test_a_gpu_missing_after_a_restart_is_lost(tmp_path):
    alerts(tmp_path, Clock()).evaluate(T0, [GPU], None, None, False)
    again = alerts(tmp_path, Clock())
    assert names(again.evaluate(T0, [], None, None, False)) == [("gpu_lost", "firing")]
