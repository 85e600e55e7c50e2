"""read_nvidia_smi against the nvidia-smi stand-in: every way the real tool fails."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gpu_telemetry.collector import source
from gpu_telemetry.collector.parser import parse_document
from gpu_telemetry.collector.source import read_nvidia_smi
from gpu_telemetry.errors import SourceError
from gpu_telemetry.ops.gpuburn import plan as gpuburn

TESTS = Path(__file__).resolve().parent
STAND_IN = TESTS / "stand_ins" / "nvidia-smi"
FIXTURES = TESTS / "fixtures" / "nvidia-smi"
DEFAULT_FIXTURE = FIXTURES / "rtx-3080-v13.xml"


@pytest.fixture(autouse=True)
def stand_in_env(monkeypatch, tmp_path) -> Path:
    """A clean stand-in environment; returns the call log."""
    for name in list(os.environ):
        if name.startswith("NVSMI_STANDIN_"):
            monkeypatch.delenv(name)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("NVSMI_STANDIN_LOG", str(log))
    return log


def _calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split(" ", 3) for line in log.read_text().splitlines()]


def _live_group_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that still run (zombies excluded: PID 1 of a container may
    never reap an orphaned `sleep`, yet a zombie holds nothing)."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            live.append(int(entry.name))
    return live


def _assert_group_gone(pgid: int) -> None:
    deadline = time.monotonic() + 2.0
    while _live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _live_group_members(pgid) == []


def _script(tmp_path: Path, body: str, mode: int = 0o755) -> Path:
    path = tmp_path / "fake-nvidia-smi"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


FAILURES = [
    pytest.param("gpu_lost", "gpu_lost", 15,
                 "Unable to determine the device handle for GPU0000:01:00.0: GPU is lost. "
                 "Reboot the system to recover this GPU", id="gpu_lost"),
    pytest.param("unknown_error", "device_handle", 255,
                 "Unable to determine the device handle for GPU0000:01:00.0: Unknown Error",
                 id="unknown_error"),
    pytest.param("no_devices", "no_devices", 6, "No devices were found", id="no_devices"),
    pytest.param("driver_mismatch", "driver_mismatch", 18,
                 "Failed to initialize NVML: Driver/library version mismatch "
                 "NVML library version: 570.133", id="driver_mismatch"),
    pytest.param("no_driver", "driver_unreachable", 9,
                 "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                 "Make sure that the latest NVIDIA driver is installed and running.",
                 id="no_driver"),
    pytest.param("stderr_fail", "exit_status", 3,
                 "nvidia-smi exited with status 3: Unable to query the GPUs: the requested "
                 "operation is not available on target device (stand-in stderr_fail)",
                 id="stderr_fail"),
]


@pytest.mark.parametrize(("mode", "kind", "returncode", "message"), FAILURES)
def test_failure_modes_keep_nvidia_smis_words(monkeypatch, stand_in_env, mode, kind,
                                              returncode, message):
    monkeypatch.setenv("NVSMI_STANDIN_MODE", mode)
    with pytest.raises(SourceError) as caught:
        read_nvidia_smi(str(STAND_IN), timeout_sec=10)
    assert (caught.value.kind, caught.value.returncode) == (kind, returncode)
    assert caught.value.message == message
    assert "\n" not in caught.value.message
    assert [call[2:] for call in _calls(stand_in_env)] == [[mode, "-q -x"]]


@pytest.mark.parametrize("fixture", [DEFAULT_FIXTURE, FIXTURES / "dual-2080-v13.xml"],
                         ids=lambda path: path.name)
def test_ok_returns_the_document_byte_for_byte(monkeypatch, fixture):
    if fixture != DEFAULT_FIXTURE:
        monkeypatch.setenv("NVSMI_STANDIN_FIXTURE", str(fixture))
    assert read_nvidia_smi(str(STAND_IN), timeout_sec=10) == fixture.read_bytes()


def test_name_is_looked_up_on_path(monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").symlink_to(STAND_IN)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert read_nvidia_smi("nvidia-smi", timeout_sec=10) == DEFAULT_FIXTURE.read_bytes()


def test_slow_but_within_the_timeout_is_fine(monkeypatch):
    monkeypatch.setenv("NVSMI_STANDIN_MODE", "hang")
    monkeypatch.setenv("NVSMI_STANDIN_HANG_SEC", "0.3")
    assert read_nvidia_smi(str(STAND_IN), timeout_sec=10) == DEFAULT_FIXTURE.read_bytes()


@pytest.mark.parametrize("mode", ["hang", "hang_ignore_term"])
def test_hang_is_killed_with_its_whole_group(monkeypatch, stand_in_env, mode):
    monkeypatch.setenv("NVSMI_STANDIN_MODE", mode)
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        read_nvidia_smi(str(STAND_IN), timeout_sec=0.5, grace_sec=2.0)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 0.5 + 2.0
    assert caught.value.kind == "timeout"
    assert caught.value.message == "nvidia-smi timed out after 0.5 s and was killed"
    assert caught.value.returncode == -signal.SIGKILL
    (call,) = _calls(stand_in_env)
    _assert_group_gone(int(call[1]))  # start_new_session: the stand-in's pid is the group id


def test_unkillable_process_is_abandoned_without_blocking(monkeypatch, stand_in_env):
    """A process in uninterruptible sleep survives SIGKILL; simulated by a kill that does
    nothing."""
    real_killpg = os.killpg
    sent = []
    monkeypatch.setattr(source.os, "killpg", lambda pgid, sig: sent.append(sig))
    monkeypatch.setenv("NVSMI_STANDIN_MODE", "hang")
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        read_nvidia_smi(str(STAND_IN), timeout_sec=0.3, grace_sec=0.3)
    elapsed = time.monotonic() - started
    (call,) = _calls(stand_in_env)
    pgid = int(call[1])
    try:
        assert elapsed < 0.3 + 0.3 + 1.0
        assert sent == [signal.SIGKILL]
        assert caught.value.kind == "timeout"
        assert caught.value.message == (
            "nvidia-smi timed out after 0.3 s and could not be killed; abandoned")
        assert caught.value.returncode is None
        assert _live_group_members(pgid) != []
        # Never two in flight: while the abandoned call lives, no new one is started.
        with pytest.raises(SourceError) as again:
            read_nvidia_smi(str(STAND_IN), timeout_sec=0.3, grace_sec=0.3)
        assert again.value.kind == "still_running" and str(pgid) in again.value.message
        assert len(_calls(stand_in_env)) == 1
    finally:
        real_killpg(pgid, signal.SIGKILL)
    _assert_group_gone(pgid)
    monkeypatch.setenv("NVSMI_STANDIN_MODE", "ok")
    deadline = time.monotonic() + 5
    while source._abandoned and source._abandoned[0].poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert read_nvidia_smi(str(STAND_IN), timeout_sec=5).startswith(b"<?xml")


def test_missing_executable_path(tmp_path):
    missing = tmp_path / "no-such-nvidia-smi"
    with pytest.raises(SourceError) as caught:
        read_nvidia_smi(str(missing), timeout_sec=10)
    assert caught.value.kind == "not_found"
    assert caught.value.message == f"nvidia-smi not found: {missing} (set NVIDIA_SMI)"
    assert caught.value.returncode is None


def test_missing_executable_name(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SourceError) as caught:
        read_nvidia_smi("nvidia-smi", timeout_sec=10)
    assert caught.value.kind == "not_found"
    assert caught.value.message == "nvidia-smi not found: nvidia-smi (set NVIDIA_SMI)"


def test_file_without_execute_permission(tmp_path):
    script = _script(tmp_path, "cat /dev/null", mode=0o644)
    with pytest.raises(SourceError) as caught:
        read_nvidia_smi(str(script), timeout_sec=10)
    assert caught.value.kind == "not_executable"
    assert str(script) in caught.value.message
    assert "Permission denied" in caught.value.message


def test_empty_output(monkeypatch):
    monkeypatch.setenv("NVSMI_STANDIN_MODE", "empty")
    with pytest.raises(SourceError) as caught:
        read_nvidia_smi(str(STAND_IN), timeout_sec=10)
    assert (caught.value.kind, caught.value.returncode) == ("empty_output", 0)
    assert caught.value.message == "nvidia-smi exited with status 0 but printed nothing"


def test_whitespace_only_output_is_empty(tmp_path):
    script = _script(tmp_path, "printf '\\n  \\n'; echo 'warning: slow' >&2")
    with pytest.raises(SourceError) as caught:
        read_nvidia_smi(str(script), timeout_sec=10)
    assert caught.value.kind == "empty_output"
    assert caught.value.message == (
        "nvidia-smi exited with status 0 but printed nothing: warning: slow")


@pytest.mark.parametrize("mode", ["truncated", "garbage"])
def test_bad_documents_are_returned_and_the_parser_refuses_them(monkeypatch, mode):
    monkeypatch.setenv("NVSMI_STANDIN_MODE", mode)
    document = read_nvidia_smi(str(STAND_IN), timeout_sec=10)
    whole = DEFAULT_FIXTURE.read_bytes()
    expected = whole[: len(whole) // 2] if mode == "truncated" else b"this is not xml \xff\n"
    assert document == expected
    with pytest.raises(SourceError) as caught:
        parse_document(document)
    assert caught.value.kind == "malformed_xml"


CLASSIFIED = [
    pytest.param('echo "Failed to initialize NVML: Unknown Error"; exit 255', "nvml_init", 255,
                 "Failed to initialize NVML: Unknown Error", id="nvml_init"),
    # The exit status decides that it failed, even when stdout holds a whole document.
    pytest.param(f"cat '{DEFAULT_FIXTURE}' >/dev/null; echo 'No devices were found'; exit 6",
                 "no_devices", 6, "No devices were found", id="text_with_status"),
    pytest.param("exit 4", "exit_status", 4, "nvidia-smi exited with status 4 with no output",
                 id="silent_exit"),
    pytest.param("kill -SEGV $$", "exit_status", -signal.SIGSEGV,
                 "nvidia-smi was killed by SIGSEGV with no output", id="signal"),
    pytest.param("echo '  Insufficient\tPermissions\n\n' >&2; exit 4", "exit_status", 4,
                 "nvidia-smi exited with status 4: Insufficient Permissions", id="folded"),
]


@pytest.mark.parametrize(("body", "kind", "returncode", "message"), CLASSIFIED)
def test_classification(tmp_path, body, kind, returncode, message):
    with pytest.raises(SourceError) as caught:
        read_nvidia_smi(str(_script(tmp_path, body)), timeout_sec=10)
    assert (caught.value.kind, caught.value.returncode, caught.value.message) == (
        kind, returncode, message)


def test_long_output_is_trimmed_to_one_short_line(tmp_path):
    script = _script(tmp_path, "i=0; while [ $i -lt 300 ]; do echo \"line $i\"; i=$((i+1)); "
                               "done; exit 1")
    with pytest.raises(SourceError) as caught:
        read_nvidia_smi(str(script), timeout_sec=10)
    message = caught.value.message
    assert message.startswith("nvidia-smi exited with status 1: line 0 line 1 line 2 ")
    assert message.endswith("...")
    assert "\n" not in message
    assert len(message) <= len("nvidia-smi exited with status 1: ") + source.MESSAGE_MAX_CHARS


def test_mode_file_changes_a_running_setup(monkeypatch, tmp_path, stand_in_env):
    mode_file = tmp_path / "mode"
    monkeypatch.setenv("NVSMI_STANDIN_MODE_FILE", str(mode_file))
    assert read_nvidia_smi(str(STAND_IN), timeout_sec=10) == DEFAULT_FIXTURE.read_bytes()
    mode_file.write_text("gpu_lost\n")
    with pytest.raises(SourceError) as caught:
        read_nvidia_smi(str(STAND_IN), timeout_sec=10)
    assert caught.value.kind == "gpu_lost"
    mode_file.write_text("ok")
    assert read_nvidia_smi(str(STAND_IN), timeout_sec=10) == DEFAULT_FIXTURE.read_bytes()
    assert [call[2] for call in _calls(stand_in_env)] == ["ok", "gpu_lost", "ok"]


def test_stand_in_lists_gpus_and_refuses_unknown_arguments(monkeypatch):
    monkeypatch.setenv("NVSMI_STANDIN_FIXTURE", str(FIXTURES / "dual-2080-v13.xml"))
    listed = subprocess.run([STAND_IN, "-L"], capture_output=True, text=True, check=True)
    assert listed.stdout.splitlines() == [
        "GPU 0: NVIDIA GeForce RTX 2080 (UUID: GPU-12345678-aaaa-bbbb-cccc-0123456789ab)",
        "GPU 1: NVIDIA GeForce RTX 2080 (UUID: GPU-12345678-aaaa-bbbb-cccc-0123456789ab)",
    ]
    refused = subprocess.run([STAND_IN, "--no-such-option"], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "nvidia-smi -h" in refused.stdout


# --- the stand-in answers every call the toolkit makes, as the real tool does ------------------

REPO_ROOT = TESTS.parent
ALL_FIXTURES = sorted(FIXTURES.glob("*.xml"))


def stand_in(*args: str, fixture: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    if fixture is not None:
        environment["NVSMI_STANDIN_FIXTURE"] = str(fixture)
    return subprocess.run([str(STAND_IN), *args], capture_output=True, text=True, timeout=30,
                          env=environment, check=False, errors="replace")


def healthcheck_calls() -> list[list[str]]:
    """The arguments of every "$NVIDIA_SMI" call in bin/host_healthcheck.sh."""
    script = (REPO_ROOT / "bin" / "host_healthcheck.sh").read_text().replace("\\\n", " ")
    calls = []
    for tail in re.findall(r'"\$NVIDIA_SMI"([^|&;)\n]*)', script):
        words = shlex.split(re.sub(r"\d?>\S*", "", tail))
        calls.append(words)
    return calls


def toolkit_calls() -> list[list[str]]:
    calls = healthcheck_calls()
    calls += [argv[1:] for argv in gpuburn.diagnostic_commands("nvidia-smi", "sudo", [])
              if argv[0] == "nvidia-smi"]
    calls.append(["-q", "-x"])  # the collector's one call (gpu_telemetry/collector/source.py)
    return calls


def test_the_toolkits_calls_are_found():
    calls = toolkit_calls()
    assert [] in calls and ["-L"] in calls and ["-q", "-x"] in calls and ["topo", "-m"] in calls
    assert ["-q", "-d", "TEMPERATURE,PERFORMANCE,POWER"] in calls
    assert any(call and call[0].startswith("--format=csv") for call in calls)


@pytest.mark.parametrize("fixture", ALL_FIXTURES, ids=lambda path: path.name)
def test_every_call_the_toolkit_makes_is_answered(fixture):
    for call in toolkit_calls():
        result = stand_in(*call, fixture=fixture)
        assert result.returncode == 0, (call, result.stdout, result.stderr)
        assert result.stdout.strip() and not result.stderr, (call, result.stderr)


def xml_gpus(fixture: Path) -> list[ET.Element]:
    return ET.parse(fixture).getroot().findall("gpu")


def test_query_gpu_is_csv_with_a_header_units_and_the_documents_values():
    result = stand_in("--format=csv", "--query-gpu=name,uuid,pci.bus_id,temperature.gpu,"
                      "power.draw,power.limit,clocks.sm,pstate,fan.speed,memory.used,index")
    assert result.returncode == 0, result.stdout
    header, row, *rest = result.stdout.splitlines()
    assert not rest
    assert header == ("name, uuid, pci.bus_id, temperature.gpu, power.draw [W], power.limit [W], "
                      "clocks.current.sm [MHz], pstate, fan.speed [%], memory.used [MiB], index")
    [gpu] = xml_gpus(DEFAULT_FIXTURE)
    assert row.split(", ") == [
        gpu.findtext("product_name"), gpu.findtext("uuid"), gpu.findtext("pci/pci_bus_id"),
        gpu.findtext("temperature/gpu_temp").removesuffix(" C"),
        gpu.findtext("gpu_power_readings/average_power_draw"),
        gpu.findtext("gpu_power_readings/current_power_limit"),
        gpu.findtext("clocks/sm_clock"), gpu.findtext("performance_state"),
        gpu.findtext("fan_speed"), gpu.findtext("fb_memory_usage/used"), "0"]


def test_query_gpu_noheader_nounits_and_what_a_gpu_does_not_report():
    dual = stand_in("--query-gpu", "index,name,temperature.gpu,power.limit",
                    "--format", "csv,noheader,nounits", fixture=FIXTURES / "dual-2080-v13.xml")
    assert dual.returncode == 0
    limits = [gpu.findtext("gpu_power_readings/current_power_limit").removesuffix(" W")
              for gpu in xml_gpus(FIXTURES / "dual-2080-v13.xml")]
    assert dual.stdout.splitlines() == [f"{i}, NVIDIA GeForce RTX 2080, 15, {limit}"
                                        for i, limit in enumerate(limits)]
    # N/A in the document, or not there at all (a v10 document): "[N/A]", as the real tool
    minimal = stand_in("--query-gpu=name,power.draw,fan.speed,temperature.memory,pci.bus_id",
                       "--format=csv,noheader", fixture=FIXTURES / "gtx-1070-ti-v10.xml")
    assert minimal.stdout == "GeForce GTX 1070 Ti, [N/A], 100 %, [N/A], 00000000:01:00.0\n"
    t4 = stand_in("--query-gpu=fan.speed,clocks_throttle_reasons.active,"
                  "clocks_throttle_reasons.hw_slowdown,pcie.link.width.current,timestamp",
                  "--format=csv,noheader", fixture=FIXTURES / "tesla-t4-v11.xml")
    assert t4.stdout == "[N/A], 0x0000000000000000, Not Active, 8, 2023/04/24 16:22:39.000\n"
    idle = stand_in("--query-gpu=clocks_event_reasons.active", "--format=csv,noheader",
                    fixture=FIXTURES / "rtx-3060-v12.xml")
    assert idle.stdout == "0x0000000000000001\n"  # GpuIdle, the one reason active


@pytest.mark.parametrize(("args", "stdout"), [
    (["--query-gpu=name,bogus", "--format=csv"],
     'Field "bogus" is not a valid field to query.\n\n'),
    (["--query-gpu=name"], "Invalid combination of input arguments. Please run 'nvidia-smi -h' "
                           "for help.\n"),
    (["--query-gpu=name", "--format=json"], "Invalid combination of input arguments. Please run "
                                            "'nvidia-smi -h' for help.\n"),
    (["-q", "-d", "NOSUCH"], "Invalid combination of input arguments. Please run 'nvidia-smi "
                             "-h' for help.\n"),
    (["-d", "POWER"], "Invalid combination of input arguments. Please run 'nvidia-smi -h' for "
                      "help.\n"),
    (["-L", "-q"], "Invalid combination of input arguments. Please run 'nvidia-smi -h' for "
                   "help.\n"),
    (["topo"], "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n"),
])
def test_what_the_real_tool_refuses_is_refused_with_its_words(args, stdout):
    result = stand_in(*args, NVSMI_STANDIN_MODE="gpu_lost")  # the options are checked first
    assert (result.returncode, result.stdout, result.stderr) == (2, stdout, "")


@pytest.mark.parametrize("args", [["-i", "0", "-q", "-x"], ["-q"], ["-q", "-d", "ECC"],
                                  ["-q", "-x", "-d", "POWER"], ["pmon"], ["-l", "1"]])
def test_what_the_stand_in_does_not_reproduce_says_so_on_stderr(args):
    result = stand_in(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("nvidia-smi stand-in: ") and "not reproduced" in result.stderr


@pytest.mark.parametrize(("mode", "returncode", "first_line"), [
    ("gpu_lost", 15, "Unable to determine the device handle for GPU0000:01:00.0: GPU is lost."),
    ("no_devices", 6, "No devices were found"),
    ("driver_mismatch", 18, "Failed to initialize NVML: Driver/library version mismatch"),
])
def test_every_call_fails_the_same_way_when_the_gpu_does(mode, returncode, first_line):
    for call in toolkit_calls():
        result = stand_in(*call, NVSMI_STANDIN_MODE=mode)
        assert result.returncode == returncode, call
        assert result.stdout.startswith(first_line), (call, result.stdout)


def test_the_text_report_has_the_sections_asked_for_with_the_documents_values():
    result = stand_in("-q", "-d", "TEMPERATURE,PERFORMANCE,POWER")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[:3] == ["", "==============NVSMI LOG==============", ""]
    [gpu] = xml_gpus(DEFAULT_FIXTURE)
    driver = ET.parse(DEFAULT_FIXTURE).getroot().findtext("driver_version")
    # Driver 580 and later put the colon at column 55, earlier ones at 42.
    width = 55 if int(driver.split(".")[0]) >= 580 else 42
    assert f"{'Driver Version':<{width}}: {driver}" in lines
    assert f"GPU {gpu.findtext('pci/pci_bus_id')}" in lines
    for label, path in (("GPU Current Temp", "temperature/gpu_temp"),
                        ("GPU Slowdown Temp", "temperature/gpu_temp_slow_threshold"),
                        ("Performance State", "performance_state"),
                        ("Current Power Limit", "gpu_power_readings/current_power_limit")):
        indent = "    " if label == "Performance State" else "        "
        assert f"{indent + label:<{width}}: {gpu.findtext(path)}" in lines, label
    # nested under HW Slowdown in the report, side by side in the XML
    assert any(line.startswith("            HW Thermal Slowdown ") for line in lines)
    for absent in ("FB Memory Usage", "Clocks", "Utilization"):
        assert not any(line.strip() == absent for line in lines), absent

    old = stand_in("-q", "-d", "TEMPERATURE,MEMORY", fixture=FIXTURES / "tesla-t4-v11.xml")
    assert "        GPU Current Temp                  : 40 C" in old.stdout.splitlines()
    assert "    FB Memory Usage" in old.stdout.splitlines()


def test_the_summary_table_and_the_topology_read_the_document():
    fixture = FIXTURES / "dual-2080-v13.xml"
    table = stand_in(fixture=fixture).stdout.splitlines()
    boxed = [line for line in table[1:] if line and line[0] in "|+"]
    assert boxed and all(len(line) == 91 for line in boxed)
    rows = [line for line in table if re.match(r"\|\s+\d+\s+NVIDIA GeForce RTX 2080 ", line)]
    assert len(rows) == 2 and "00000000:02:00.0" in rows[1]
    topology = stand_in("topo", "-m", fixture=fixture).stdout.splitlines()
    assert topology[0].split("\t")[1:3] == ["GPU0", "GPU1"]
    assert topology[1].split("\t")[:3] == ["GPU0", " X ", "PHB"]
    assert "Legend:" in topology


def test_every_answer_reads_hot_while_gpu_burn_runs(tmp_path):
    heat = tmp_path / "heat"
    cold = stand_in("--query-gpu=temperature.gpu,power.draw", "--format=csv,noheader,nounits")
    # Started long enough ago that the heating has reached its ceiling (+45 C): the answers
    # below are read a second or more apart and must agree.
    heat.write_text(f"{int(time.time()) - 100} 1\n")
    hot = stand_in("--query-gpu=temperature.gpu,power.draw", "--format=csv,noheader,nounits",
                   NVSMI_STANDIN_HEAT_FILE=str(heat))
    (cold_temp, cold_power), (hot_temp, hot_power) = (
        [float(value) for value in result.stdout.split(", ")] for result in (cold, hot))
    assert hot_temp == cold_temp + 45 and hot_power == pytest.approx(cold_power + 150)
    report = stand_in("-q", "-d", "TEMPERATURE", NVSMI_STANDIN_HEAT_FILE=str(heat)).stdout
    assert f": {int(hot_temp)} C" in report


def test_the_misbehaving_modes_misbehave_for_every_answer():
    full = stand_in("--query-gpu=name,uuid", "--format=csv").stdout
    assert stand_in("--query-gpu=name,uuid", "--format=csv",
                    NVSMI_STANDIN_MODE="truncated").stdout == full[:len(full) // 2]
    assert stand_in("-L", NVSMI_STANDIN_MODE="empty").stdout == ""
    garbage = stand_in("-q", "-d", "POWER", NVSMI_STANDIN_MODE="garbage")
    assert garbage.returncode == 0 and "not xml" in garbage.stdout
    slow = stand_in("topo", "-m", NVSMI_STANDIN_MODE="hang", NVSMI_STANDIN_HANG_SEC="0.2")
    assert slow.returncode == 0 and "Legend:" in slow.stdout
