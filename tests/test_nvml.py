"""GPU_SOURCE=nvml: the NVML source against the nvidia-smi source on every real capture, and
its failures (lost GPU, no library, version mismatch, a hung call, a dead worker), through the
real worker process and the NVML stand-in (tests/stand_ins/nvml/pynvml.py), which answers the
binding's calls from the same captures by a mapping of its own."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from gpu_telemetry.collector.nvml import NvmlSource
from gpu_telemetry.collector.nvml_fields import mapping_table
from gpu_telemetry.collector.parser import parse_document
from gpu_telemetry.errors import SourceError
from gpu_telemetry.records import GPU_READING_FIELDS
from tests.helpers import (
    FIXTURES,
    NVML_STAND_IN,
    REPO_ROOT,
    STAND_IN,
    base_env,
    nvml_env,
    run_script,
)

ALL_FIXTURES = sorted(path.name for path in FIXTURES.glob("*.xml"))
IDENTITY = ("gpu_uuid", "pci_bus_id", "gpu_name", "gpu_index", "driver_version")


@pytest.fixture
def standin(monkeypatch, tmp_path):
    """The NVML stand-in for worker processes started by this test; returns a setter for the
    fixture and mode."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, (str(NVML_STAND_IN), os.environ.get("PYTHONPATH")))))
    for key in list(os.environ):
        if key.startswith("NVML_STANDIN_"):
            monkeypatch.delenv(key)
    mode_file = tmp_path / "nvml-mode"
    monkeypatch.setenv("NVML_STANDIN_MODE_FILE", str(mode_file))

    def use(fixture: str = "rtx-3080-v13.xml", mode: str = "ok", **extra: str) -> Path:
        monkeypatch.setenv("NVML_STANDIN_FIXTURE", str(FIXTURES / fixture))
        mode_file.write_text(mode + "\n")
        for key, value in extra.items():
            monkeypatch.setenv(key, value)
        return mode_file

    return use


def source(timeout: float = 10) -> NvmlSource:
    return NvmlSource(str(STAND_IN), timeout, background=False, warn=print)


def as_rows(gpus) -> list[dict]:
    return [{name: getattr(gpu, name) for name in GPU_READING_FIELDS if name != "raw_json"}
            for gpu in gpus]


@pytest.mark.parametrize("fixture", ALL_FIXTURES)
def test_every_fixture_gives_the_same_row_through_both_sources(standin, fixture):
    standin(fixture)
    expected = as_rows(parse_document((FIXTURES / fixture).read_bytes()).gpus)
    nvml = source()
    try:
        got = as_rows(nvml.read().gpus)
    finally:
        nvml.close()
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        differ = {k: (mine[k], theirs[k]) for k in theirs if mine[k] != theirs[k]}
        assert not differ, f"{fixture}: NVML vs nvidia-smi differ in {differ}"
    # Not vacuous: even the v10 captures report identity and a dozen readings.
    assert sum(v is not None for v in got[0].values()) >= 15


def test_the_one_shot_with_nvml_stores_the_same_sample(tmp_path):
    """collect_once.py --dry-run --raw, both sources, same capture: the same JSON but the time;
    with NVML the raw snapshot still comes from nvidia-smi."""
    samples = []
    for env in (base_env(tmp_path, None), nvml_env(tmp_path, None)):
        result = run_script("collect_once.py", "--dry-run", "--raw", env=env,
                            tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        sample = json.loads(result.stdout)
        sample.pop("ts")
        samples.append(sample)
    assert samples[0] == samples[1]
    assert samples[1]["gpus"][0]["raw_json"]["temperature"]["gpu_temp"] == "15 C"


def test_without_a_driver_the_dry_run_exits_69_naming_nvml(tmp_path):
    """The real binding on a machine without the NVIDIA driver (this one)."""
    env = base_env(tmp_path, None, GPU_SOURCE="nvml")
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this machine has an NVIDIA driver")
    result = run_script("collect_once.py", "--dry-run", env=env, tmp_path=tmp_path)
    assert result.returncode == 69, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "NVML failed" in errors[0], result.stderr
    assert "NVML Shared Library Not Found" in errors[0]
    assert result.stdout == ""


@pytest.mark.parametrize(("mode", "kind", "code", "words"), [
    ("gpu_lost", "gpu_lost", 15, "GPU is lost"),
    ("version_mismatch", "driver_mismatch", 18, "version mismatch"),
    ("driver_not_loaded", "driver_unreachable", 9, "Driver Not Loaded"),
    ("uninitialized", "nvml_init", 1, "Uninitialized"),
    ("gpu_not_found", "no_devices", 28, ""),
    ("no_library", "not_found", 12, "NVML Shared Library Not Found"),
    ("no_devices", "no_devices", 6, "no GPU"),
])
def test_each_failure_is_a_classified_source_failure(standin, mode, kind, code, words):
    standin(mode=mode)
    nvml = source()
    try:
        with pytest.raises(SourceError) as caught:
            nvml.read()
    finally:
        nvml.close()
    failure = caught.value
    assert (failure.kind, failure.returncode, failure.source) == (kind, code, "NVML")
    assert words in failure.message and "\n" not in failure.message
    assert failure.describe().startswith(f"NVML failed ({kind}, code {code}): ")


def test_a_lost_gpu_fails_the_one_shot_with_exit_69_and_an_event(tmp_path):
    env = nvml_env(tmp_path, None, mode="gpu_lost")
    result = run_script("collect_once.py", env=env, tmp_path=tmp_path)
    assert result.returncode == 69, result.stderr
    assert "NVML failed (gpu_lost, code 15)" in result.stderr
    spooled = json.loads(next((tmp_path / "spool").glob("*.json")).read_text())
    assert spooled["gpus"] == []
    assert [(e["kind"], e["data"]["failure"], e["data"]["source"])
            for e in spooled["events"]] == [("source_failed", "gpu_lost", "NVML")]


def test_one_lost_gpu_of_two_keeps_the_other(standin):
    standin("dual-2080-v13.xml", mode="gpu_lost", NVML_STANDIN_LOST_GPUS="1")
    nvml = source()
    try:
        reading = nvml.read()
        assert [gpu.pci_bus_id for gpu in reading.gpus] == ["00000000:01:00.0"]
        assert len(reading.problems) == 1 and "GPU is lost" in reading.problems[0]
        # The session is opened again for the next sample: the GPU back on the bus is read.
        standin("dual-2080-v13.xml", mode="ok")
        assert len(nvml.read().gpus) == 2
    finally:
        nvml.close()


def test_what_nvml_does_not_support_is_none_never_zero(standin):
    standin(mode="not_supported")
    nvml = source()
    try:
        (gpu,) = nvml.read().gpus
    finally:
        nvml.close()
    row = as_rows([gpu])[0]
    assert all(row[name] is not None for name in IDENTITY)
    assert {name: value for name, value in row.items()
            if name not in IDENTITY and value is not None} == {}


def test_field_values_are_fetched_in_one_call_per_gpu(standin, tmp_path):
    log = tmp_path / "calls.log"
    standin("dual-2080-v13.xml", NVML_STANDIN_LOG=str(log))
    nvml = source()
    try:
        for _ in range(3):
            nvml.read()
    finally:
        nvml.close()
    calls = [line.split()[2] for line in log.read_text().splitlines()]
    assert calls.count("nvmlDeviceGetFieldValues") == 3 * 2
    assert calls.count("nvmlInit") + calls.count("nvmlInitWithFlags") == 1
    # Static values (identity, thresholds, maximum clocks) are asked once per session.
    assert calls.count("nvmlDeviceGetUUID") == 2
    assert calls.count("nvmlDeviceGetTemperature") == 3 * 2


def test_a_hung_call_is_killed_and_the_next_sample_reads_again(standin):
    mode_file = standin(mode="hang")
    nvml = source(timeout=1)
    try:
        start = time.monotonic()
        with pytest.raises(SourceError) as caught:
            nvml.read()
        took = time.monotonic() - start
        assert caught.value.kind == "timeout" and "was killed" in caught.value.message
        assert took < 1 + 2 + 1, took  # the timeout, the kill's grace, slack
        mode_file.write_text("ok\n")
        assert len(nvml.read().gpus) == 1
    finally:
        nvml.close()


def test_a_worker_that_dies_is_started_again(standin):
    standin()
    nvml = source()
    try:
        nvml.read()
        worker = nvml.worker.process
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        with pytest.raises(SourceError) as caught:
            nvml.read()
        assert caught.value.kind == "worker_failed" and "-9" in caught.value.message
        assert len(nvml.read().gpus) == 1
        assert nvml.worker.process.pid != worker.pid
    finally:
        nvml.close()


def test_the_mapping_table_is_in_the_docs():
    docs = (REPO_ROOT / "docs" / "nvml.md").read_text()
    for column, ways in mapping_table():
        assert f"| `{column}` | {ways} |" in docs, f"docs/nvml.md lacks the row of {column}"


def test_the_loop_on_nvml_records_a_lost_gpu_and_keeps_raw_snapshots(db, tmp_path):
    """The loop with GPU_SOURCE=nvml against the database: samples every 0.2 s, the GPU lost
    and back (one source_failed, one source_recovered, with NVML's words), raw snapshots from
    nvidia-smi every RAW_EVERY_SEC, and the schedule kept."""
    import subprocess
    import sys

    from tests.reliability.harness import wait_until

    mode_file = tmp_path / "nvml-mode"
    mode_file.write_text("ok\n")
    env = nvml_env(tmp_path, db.env, fixture="rtx-3080-v13.xml", RAW_EVERY_SEC="1",
                   NVML_STANDIN_MODE_FILE=str(mode_file))
    (tmp_path / "empty.env").touch()
    out = tmp_path / "loop.out"
    with out.open("w") as log:
        loop = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "bin" / "collect_once.py"), "--loop",
             "--interval", "0.2", "--env", str(tmp_path / "empty.env")],
            env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        with db.connect() as conn:
            def count(sql: str) -> int:
                return conn.execute(sql).fetchone()[0]

            def events(kind: str) -> int:
                return count("SELECT count(*) FROM telemetry.collector_events "
                             f"WHERE kind = '{kind}'")

            def wait(what, condition):
                wait_until(condition, timeout=60, what=what, alive=loop,
                           output=out.read_text)

            wait("10 samples", lambda: count("SELECT count(*) FROM telemetry.gpu_samples") >= 10)
            mode_file.write_text("gpu_lost\n")
            wait("source_failed", lambda: events("source_failed") >= 1)
            mode_file.write_text("ok\n")
            wait("source_recovered", lambda: events("source_recovered") >= 1)
            before = count("SELECT count(*) FROM telemetry.gpu_samples")
            wait("10 more samples",
                 lambda: count("SELECT count(*) FROM telemetry.gpu_samples") >= before + 10)
            loop.send_signal(signal.SIGTERM)
            assert loop.wait(timeout=30) == 0, out.read_text()
            failed = conn.execute(
                "SELECT detail, data FROM telemetry.collector_events "
                "WHERE kind = 'source_failed'").fetchall()
            assert len(failed) == 1 and "GPU is lost" in failed[0][0], failed
            assert (failed[0][1]["failure"], failed[0][1]["source"]) == ("gpu_lost", "NVML")
            raw = conn.execute("SELECT raw_json -> 'temperature' ->> 'gpu_temp' "
                               "FROM telemetry.gpu_telemetry WHERE raw_json IS NOT NULL"
                               ).fetchall()
            assert len(raw) >= 2 and {r[0] for r in raw} == {"27 C"}, raw
            gaps = [r[0] for r in conn.execute(
                "SELECT extract(epoch FROM ts - lag(ts) OVER (ORDER BY ts)) "
                "FROM telemetry.gpu_telemetry").fetchall()[1:]]
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    assert "NVML, raw snapshots from" in out.read_text()
    # On schedule while the source answered: the median gap is the interval.
    gaps.sort()
    assert abs(float(gaps[len(gaps) // 2]) - 0.2) < 0.05, gaps


def test_an_unknown_source_is_a_configuration_error(tmp_path):
    env = base_env(tmp_path, None, GPU_SOURCE="dcgm")
    result = run_script("collect_once.py", "--dry-run", env=env, tmp_path=tmp_path)
    assert result.returncode == 78
    assert result.stderr.strip().splitlines()[-1] == (
        "collect_once.py: GPU_SOURCE must be nvidia-smi or nvml, got 'dcgm'")
