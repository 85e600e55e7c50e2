"""bin/host_healthcheck.sh: the verdict from the GPU, the kernel log, the spool, the units and
the age of the last stored sample, on a real PostgreSQL with stand-ins for the host tools."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from gpu_telemetry.cli import health
from gpu_telemetry.ops.health import stale_after_sec
from tests.conftest import Database
from tests.helpers import FIXTURES, REPO_ROOT, base_env

SCRIPT = REPO_ROOT / "bin" / "host_healthcheck.sh"
HOST = socket.gethostname().split(".")[0]
XID_79 = ("[ 8141.120334] NVRM: Xid (PCI:0000:01:00): 79, pid=1234, name=python3, "
          "GPU has fallen off the bus.")


def write_tool(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """Stand-ins first on PATH: sudo records its calls and refuses (no password), systemctl
    says the units are inactive, dmesg prints an ordinary kernel log, sensors reads fine."""
    folder = tmp_path / "tools"
    folder.mkdir()
    write_tool(folder, "sudo", f'echo "$*" >>"{tmp_path}/sudo.calls"\n'
                               'echo "sudo: a password is required" >&2; exit 1')
    write_tool(folder, "systemctl", 'echo "${SYSTEMCTL_STATE:-inactive}"\n'
                                    '[[ ${SYSTEMCTL_STATE:-} == active ]] || exit 3')
    write_tool(folder, "dmesg", 'cat "$DMESG_TEXT"')
    write_tool(folder, "sensors", 'echo "coretemp-isa-0000"; echo "Package id 0:  +45.0 C"')
    (tmp_path / "dmesg.txt").write_text("[    1.0] pcieport 0000:00:1c.0: AER: enabled\n")
    return folder


def healthcheck(tmp_path: Path, tools: Path, *args: str, pg_env: dict | None = None,
                default_log: bool = False, **extra: str) -> subprocess.CompletedProcess[str]:
    env = base_env(tmp_path, pg_env, **extra)
    env["PATH"] = f"{tools}{os.pathsep}{env['PATH']}"
    env.setdefault("DMESG_TEXT", str(tmp_path / "dmesg.txt"))
    for key in ("DMESG", "PSQL", "SYSTEMCTL", "SUDO"):
        env.pop(key, None)
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.touch()
    if not default_log and "--log" not in args:
        args = (*args, "--no-log")
    return subprocess.run(["bash", str(SCRIPT), "--env", str(empty_env_file), *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)


def verdict_lines(result: subprocess.CompletedProcess[str], kind: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(f"{kind}: ")]


def store_sample(db: Database, age: str = "0 seconds") -> None:
    with db.connect() as conn:
        conn.execute("INSERT INTO telemetry.gpu_telemetry (ts, host, gpu_uuid)"
                     " VALUES (now() - %s::interval, %s, 'GPU-test')", (age, HOST))


def test_healthy_host_is_ok(tmp_path, tools, db):
    store_sample(db)
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, SYSTEMCTL_STATE="active")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "verdict: OK"
    assert not verdict_lines(result, "WARN") and not verdict_lines(result, "FAIL")
    assert any("sees 2 GPU(s)" in line for line in verdict_lines(result, "OK"))
    assert any("last sample" in line for line in verdict_lines(result, "OK"))
    for section in ("Host", "NVIDIA GPU", "Driver", "Kernel log", "Sensors", "Collector"):
        assert f"===== {section}" in result.stdout
    assert "ollama" not in result.stdout  # no site-specific sections


def test_units_not_running_is_a_warning(tmp_path, tools, db):
    store_sample(db)
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "verdict: WARN"
    assert not verdict_lines(result, "FAIL")
    warnings = "\n".join(verdict_lines(result, "WARN"))
    assert "gpu-telemetry.service is inactive" in warnings
    assert "gpu-telemetry-flush.timer is inactive" in warnings


@pytest.mark.parametrize(("mode", "message"), [
    ("gpu_lost", "GPU is lost"),
    ("no_devices", "No devices were found"),
    ("no_driver", "couldn't communicate with the NVIDIA driver"),
])
def test_gpu_not_visible_fails(tmp_path, tools, db, mode, message):
    store_sample(db)
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, mode=mode,
                         SYSTEMCTL_STATE="active")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "verdict: FAIL"
    assert any(message in line for line in verdict_lines(result, "FAIL"))


def test_xid_79_in_the_kernel_log_fails(tmp_path, tools, db):
    store_sample(db)
    (tmp_path / "dmesg.txt").write_text(XID_79 + "\n")
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, SYSTEMCTL_STATE="active")
    assert result.returncode == 2, result.stdout + result.stderr
    assert any("Xid 79" in line for line in verdict_lines(result, "FAIL"))
    assert XID_79 in result.stdout


def test_spooled_samples_are_a_warning(tmp_path, tools, db):
    store_sample(db)
    (tmp_path / "spool" / "bad").mkdir(parents=True)
    # Only pending samples count: not the drop ledger, a temp file being written, a lock, or
    # the .reason notes beside the quarantined files.
    for name in ("a.json", "b.json", ".dropped.json", ".tmp-x.json", ".flush.lock",
                 "bad/c.json", "bad/c.json.reason"):
        (tmp_path / "spool" / name).write_text("{}")
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, SYSTEMCTL_STATE="active")
    assert result.returncode == 1, result.stdout + result.stderr
    warnings = verdict_lines(result, "WARN")
    assert any("spool depth 2" in line for line in warnings)
    assert any("spool depth 1 quarantined" in line for line in warnings)


def test_stale_or_missing_sample_is_a_warning(tmp_path, tools, db):
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, SYSTEMCTL_STATE="active")
    assert result.returncode == 1
    warnings = verdict_lines(result, "WARN")
    assert any(f"no sample stored for host {HOST}" in line for line in warnings)
    store_sample(db, "10 minutes")
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, SYSTEMCTL_STATE="active")
    assert result.returncode == 1
    # The default interval of 5 s: stale after max(3 x 5 s, 60 s).
    assert any(re.search(r"stored 6\d\d s ago \(more than 60 s\)$", line)
               for line in verdict_lines(result, "WARN")), result.stdout


def test_staleness_follows_the_sample_interval(tmp_path, tools, db):
    store_sample(db, "5 minutes")
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, SYSTEMCTL_STATE="active",
                         SAMPLE_INTERVAL_SEC="120")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stale after 360 s: 3 x SAMPLE_INTERVAL_SEC 120" in result.stdout
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, SYSTEMCTL_STATE="active",
                         SAMPLE_INTERVAL_SEC="60")
    assert result.returncode == 1
    assert any("more than 180 s" in line for line in verdict_lines(result, "WARN"))


def test_collector_section_shows_the_last_events(tmp_path, tools, db):
    store_sample(db)
    with db.connect() as conn:
        conn.execute("INSERT INTO telemetry.collector_events (ts, host, kind, detail) VALUES"
                     " (now() - interval '1 minute', %s, 'source_failed', 'GPU is lost'),"
                     " (now(), %s, 'source_recovered', NULL)", (HOST, HOST))
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, SYSTEMCTL_STATE="active")
    assert result.returncode == 0, result.stdout + result.stderr
    collector = result.stdout.split("===== Collector")[1].split("===== Verdict")[0]
    assert f"last 2 collector events of {HOST}:" in collector
    lines = collector.splitlines()
    recovered = next(i for i, line in enumerate(lines) if "source_recovered" in line)
    failed = next(i for i, line in enumerate(lines) if "source_failed: GPU is lost" in line)
    assert recovered < failed  # newest first


def test_dead_database_is_a_warning(tmp_path, tools):
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=None, SYSTEMCTL_STATE="active")
    assert result.returncode == 1, result.stdout + result.stderr
    assert not verdict_lines(result, "FAIL")
    assert any("database unreachable" in line for line in verdict_lines(result, "WARN"))


def test_thermal_slowdown_is_a_warning(tmp_path, tools, db):
    store_sample(db)
    fixture = (FIXTURES / "rtx-3080-v13.xml").read_text()
    hot = fixture.replace("<clocks_event_reason_sw_thermal_slowdown>Not Active<",
                          "<clocks_event_reason_sw_thermal_slowdown>Active<")
    assert hot != fixture
    (tmp_path / "hot.xml").write_text(hot)
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, SYSTEMCTL_STATE="active",
                         NVSMI_STANDIN_FIXTURE=str(tmp_path / "hot.xml"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert any("thermal slowdown active on GPU 0" in line and "sw thermal slowdown" in line
               and "nvidia-smi reading" in line for line in verdict_lines(result, "WARN"))


def store_thermal(db: Database, temp_c: int, slowdown_c: int, hw_thermal: bool) -> None:
    with db.connect() as conn:
        conn.execute("INSERT INTO telemetry.gpu_telemetry (ts, host, gpu_uuid, gpu_index,"
                     " gpu_name, temp_c, temp_slowdown_c, throttle_hw_thermal)"
                     " VALUES (now(), %s, 'GPU-test', 0, 'Tesla P40', %s, %s, %s)",
                     (HOST, temp_c, slowdown_c, hw_thermal))


@pytest.mark.parametrize(("temp_c", "hw_thermal", "says"), [
    (60, False, None),
    (89, False, "GPU 0 (Tesla P40) at 89 °C, within 5 °C of its slowdown threshold 92 °C"),
    (93, True, "thermal slowdown active on GPU 0 (Tesla P40): hw thermal slowdown"),
], ids=["cool", "near-threshold", "throttling"])
def test_thermal_state_comes_from_the_latest_stored_row(tmp_path, tools, db, temp_c,
                                                        hw_thermal, says):
    store_thermal(db, temp_c, 92, hw_thermal)
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, SYSTEMCTL_STATE="active")
    assert f"thermal (database, latest rows): GPU 0 (Tesla P40): {temp_c} °C" in result.stdout
    warnings = verdict_lines(result, "WARN")
    if says is None:
        assert result.returncode == 0 and not warnings, result.stdout
    else:
        assert result.returncode == 1, result.stdout
        assert any(says in line for line in warnings), warnings


def test_no_sudo_never_runs_sudo(tmp_path, tools):
    calls = tmp_path / "sudo.calls"
    write_tool(tools, "dmesg",
               'echo "dmesg: read kernel buffer failed: Operation not permitted" >&2; exit 1')
    result = healthcheck(tmp_path, tools, "--no-sudo")
    assert result.returncode in (1, 2), result.stdout + result.stderr
    assert not calls.exists()
    assert "skipped: --no-sudo" in result.stdout

    result = healthcheck(tmp_path, tools)
    recorded = calls.read_text().splitlines()
    assert recorded and all(line.startswith("-n ") for line in recorded)
    assert "-n dmesg" in recorded and "-n nvme list" in recorded


def test_log_file_holds_the_report(tmp_path, tools):
    log = tmp_path / "health.log"
    result = healthcheck(tmp_path, tools, "--no-sudo", "--log", str(log))
    assert result.returncode == 1
    text = log.read_text()
    assert "===== Collector" in text and text.splitlines()[-1] == "verdict: WARN"
    assert text in result.stdout


def test_log_goes_to_log_dir_by_default(tmp_path, tools):
    result = healthcheck(tmp_path, tools, "--no-sudo", default_log=True)
    assert result.returncode == 1, result.stdout + result.stderr
    logs = sorted((tmp_path / "logs").glob("healthcheck-*.log"))
    assert len(logs) == 1 and logs[0].read_text().splitlines()[-1] == "verdict: WARN"


def test_help_and_usage_errors(tmp_path, tools):
    result = healthcheck(tmp_path, tools, "--help")
    assert result.returncode == 0 and "Usage: bin/host_healthcheck.sh" in result.stdout
    result = healthcheck(tmp_path, tools, "--bogus")
    assert result.returncode == 2 and "unknown argument: --bogus" in result.stderr
    result = healthcheck(tmp_path, tools, "--log")
    assert result.returncode == 2 and "--log needs a value" in result.stderr


def test_contradictory_log_options_are_refused_before_any_check(tmp_path, tools):
    result = healthcheck(tmp_path, tools, "--log", str(tmp_path / "h.log"), "--no-log")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"host_healthcheck.sh: --log {tmp_path / 'h.log'} and "
                                     "--no-log contradict each other (see --help)")
    assert not (tmp_path / "h.log").exists()
    result = healthcheck(tmp_path, tools, "--no-sudo", f"--log={tmp_path / 'h.log'}",
                         default_log=True)
    assert result.returncode == 1, result.stderr
    assert (tmp_path / "h.log").read_text().splitlines()[-1] == "verdict: WARN"


def test_every_nvidia_smi_call_is_answered_in_the_report(tmp_path, tools):
    """The stand-in answers the summary, -L, the CSV query and the topology as the real tool
    does, so the report shows what an operator would see."""
    result = healthcheck(tmp_path, tools, "--no-sudo")
    report = result.stdout
    for missing in ("(query not available)", "(topology not available)", "(exit "):
        assert missing not in report.split("===== Driver")[0], missing
    gpu_section = report.split("===== NVIDIA GPU")[1].split("===== Driver")[0]
    assert "| NVIDIA-SMI " in gpu_section and "Driver Version: " in gpu_section
    assert ("name, uuid, pci.bus_id, temperature.gpu, power.draw [W], power.limit [W], "
            "clocks.current.sm [MHz], pstate, fan.speed [%]") in gpu_section
    assert gpu_section.count("NVIDIA GeForce RTX 2080, GPU-") == 2
    assert "GPU0\t X \tPHB" in gpu_section and "Legend:" in gpu_section


@pytest.mark.skipif(shutil.which("timeout") is None, reason="coreutils timeout missing")
def test_hung_nvidia_smi_is_cut_short(tmp_path, tools, db):
    store_sample(db)
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, mode="hang",
                         CHECK_TIMEOUT_SEC="0.5", NVSMI_STANDIN_HANG_SEC="30")
    assert result.returncode == 2, result.stdout + result.stderr
    assert any("nvidia-smi -L timed out" in line for line in verdict_lines(result, "FAIL"))


@pytest.mark.parametrize(("interval", "stale_after"), [(5, 60), (0.5, 60), (20, 60), (30, 90),
                                                       (120, 360)])
def test_stale_after_three_intervals_and_never_under_a_minute(interval, stale_after):
    assert stale_after_sec(interval) == stale_after


@pytest.mark.parametrize(("value", "says"), [
    ("0", "--reading-timeout 0: the reading timeout must be more than zero seconds"),
    ("-1", "--reading-timeout -1: the reading timeout must be more than zero seconds"),
    ("inf", "--reading-timeout inf: not a finite number of seconds"),
    ("nan", "--reading-timeout nan: not a finite number of seconds"),
])
def test_a_reading_timeout_no_timer_can_use_is_usage(capsys, value, says):
    with pytest.raises(SystemExit) as exited:
        health.main(["--reading-timeout", value])
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"health: {says} (see --help)\n"


def test_env_file_problems_are_exit_78_before_any_check(tmp_path, tools):
    missing = tmp_path / "absent.env"
    result = healthcheck(tmp_path, tools, "--no-sudo", "--env", str(missing))
    assert result.returncode == 78 and result.stdout == ""
    assert result.stderr == f"host_healthcheck.sh: env file not found: {missing}\n"
    readable = tmp_path / "site.env"
    readable.write_text("PGPASSWORD='x'\n")
    readable.chmod(0o644)
    result = healthcheck(tmp_path, tools, "--no-sudo", "--env", str(readable))
    assert result.returncode == 78 and result.stdout == ""
    assert f"fix: chmod 600 {readable}" in result.stderr and "'x'" not in result.stderr


@pytest.fixture
def writer(db):
    """The collector's insert-only role, made by bin/init_db.sh."""
    name = f"hc_writer_{os.getpid()}_{db.name.rsplit('_', 1)[-1]}"
    result = subprocess.run(["bash", str(REPO_ROOT / "bin" / "init_db.sh"), "--writer-role",
                             name], env={**os.environ, **db.env}, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    yield name
    with db.connect() as conn:
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


def test_as_the_writer_role_the_thermal_state_comes_from_nvidia_smi(tmp_path, tools, db,
                                                                    writer):
    """The writer may read the key columns only: the age and the events' kinds still come
    from the database, the temperatures from one reading."""
    store_thermal(db, 60, 92, False)
    with db.connect() as conn:
        conn.execute("INSERT INTO telemetry.collector_events (ts, host, kind, detail)"
                     " VALUES (now(), %s, 'spool_flushed', 'secret detail')", (HOST,))
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env={**db.env, "PGUSER": writer},
                         SYSTEMCTL_STATE="active")
    assert result.returncode == 0, result.stdout + result.stderr
    assert any("last sample of" in line for line in verdict_lines(result, "OK"))
    assert "thermal (nvidia-smi reading): GPU 0 (NVIDIA GeForce RTX 2080)" in result.stdout
    assert "spool_flushed" in result.stdout
    assert "secret detail" not in result.stdout and "not readable" not in result.stdout


def test_alert_sends_each_change_of_the_verdict_once(tmp_path, tools, db):
    received = tmp_path / "alerts.jsonl"
    store_sample(db)
    for _ in range(2):  # WARN twice (the units are inactive): one firing
        result = healthcheck(tmp_path, tools, "--no-sudo", "--alert", pg_env=db.env,
                             ALERT_COMMAND=f"cat >> {received}")
        assert result.returncode == 1, result.stdout + result.stderr
    result = healthcheck(tmp_path, tools, "--no-sudo", "--alert", pg_env=db.env,
                         ALERT_COMMAND=f"cat >> {received}", SYSTEMCTL_STATE="active")
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = [json.loads(line) for line in received.read_text().splitlines()]
    assert [(a["alert"], a["state"], a["value"]) for a in alerts] == [
        ("host_health", "firing", "WARN"), ("host_health", "resolved", "OK")]
    assert "gpu-telemetry.service is inactive" in alerts[0]["summary"]


def test_open_alerts_are_listed_and_warned_about(tmp_path, tools, db):
    store_sample(db)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / ".alerts.json").write_text(json.dumps({
        "open": {"gpu_hot|GPU-test": {"since": "2026-01-04T00:00:00+00:00"}}, "known": {}}))
    with db.connect() as conn:
        conn.execute("INSERT INTO telemetry.collector_events (ts, host, kind, detail)"
                     " VALUES (now(), %s, 'xid', 'Xid 79 on 00000000:01:00.0: fallen off')",
                     (HOST,))
    result = healthcheck(tmp_path, tools, "--no-sudo", pg_env=db.env, SYSTEMCTL_STATE="active")
    assert result.returncode == 1
    assert "WARN: alert gpu_hot open since 2026-01-04T00:00:00+00:00 (GPU-test)" in result.stdout
    assert "last 1 Xid events of" in result.stdout and "Xid 79 on" in result.stdout
