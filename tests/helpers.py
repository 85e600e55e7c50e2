"""Running the real scripts as subprocesses, with the stand-in nvidia-smi and a private spool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.pgserver import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "nvidia-smi"
STAND_IN = REPO_ROOT / "tests" / "stand_ins" / "nvidia-smi"
# Put first on PYTHONPATH, its pynvml answers NVML's calls from the fixtures.
NVML_STAND_IN = REPO_ROOT / "tests" / "stand_ins" / "nvml"

_OWN_KEYS = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE",
             "PGSERVICE", "PGPASSFILE", "SAMPLE_INTERVAL_SEC", "NVIDIA_SMI",
             "NVIDIA_SMI_TIMEOUT_SEC", "SPOOL_DIR", "STATUS_FILE", "LOG_DIR", "RAW_EVERY_SEC",
             "SPOOL_MAX_MB", "RETENTION_DAYS", "GPU_SOURCE", "ALERT_COMMAND",
             "ALERT_COMMAND_TIMEOUT_SEC", "ALERT_TEMP_MARGIN_C", "ALERT_TEMP_C", "ALERT_OUTAGE_SEC",
             "ALERT_SOURCE_SEC", "KERNEL_LOG_COMMAND")


def base_env(tmp_path: Path, pg_env: dict[str, str] | None, *,
             fixture: str = "dual-2080-v13.xml", mode: str = "ok", **extra: str) -> dict:
    """A clean environment: nothing of the developer's own configuration leaks in."""
    env = {key: value for key, value in os.environ.items()
           if key not in _OWN_KEYS and not key.startswith(("NVSMI_STANDIN_", "NVML_STANDIN_"))}
    env.update(pg_env if pg_env is not None else dead_database_env())
    env.update({
        "NVIDIA_SMI": str(STAND_IN),
        "NVSMI_STANDIN_FIXTURE": str(FIXTURES / fixture),
        "NVSMI_STANDIN_MODE": mode,
        "SPOOL_DIR": str(tmp_path / "spool"),
        "STATUS_FILE": str(tmp_path / "status.json"),
        "LOG_DIR": str(tmp_path / "logs"),
        "PGCONNECT_TIMEOUT": "3",
        # The machine's own kernel log is not the test's: a test that reads one names it.
        "KERNEL_LOG_COMMAND": "none",
    })
    env.update(extra)
    return env


def nvml_env(tmp_path: Path, pg_env: dict[str, str] | None, *,
             fixture: str = "dual-2080-v13.xml", mode: str = "ok", **extra: str) -> dict:
    """base_env with GPU_SOURCE=nvml and the NVML stand-in answering from the same fixture
    as the nvidia-smi stand-in (which still serves the raw snapshots)."""
    env = base_env(tmp_path, pg_env, fixture=fixture, **extra)
    env.update({"GPU_SOURCE": "nvml", "NVML_STANDIN_FIXTURE": str(FIXTURES / fixture),
                "NVML_STANDIN_MODE": mode,
                "PYTHONPATH": os.pathsep.join(filter(None, (str(NVML_STAND_IN),
                                                            env.get("PYTHONPATH"))))})
    env.update(extra)
    return env


def dead_database_env() -> dict[str, str]:
    """Points at a port where nothing listens: the database is down."""
    return {"PGHOST": "127.0.0.1", "PGPORT": str(free_port()), "PGUSER": "postgres",
            "PGDATABASE": "postgres"}


def run_script(name: str, *args: str, env: dict, tmp_path: Path,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run bin/<name> with the project's Python, from an unrelated working directory, with an
    empty --env file so that a developer's own .env cannot change the outcome."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.touch()
    command = [sys.executable, str(REPO_ROOT / "bin" / name), *args]
    if "--help" not in args and "--env" not in args:
        command += ["--env", str(empty_env_file)]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, check=False)


def write_status(tmp_path: Path, **fields) -> None:
    (tmp_path / "status.json").write_text(json.dumps(fields))


def spool_files(tmp_path: Path) -> list[Path]:
    """Spooled samples waiting (not temp files, not the drop ledger, not spool/bad/)."""
    spool = tmp_path / "spool"
    if not spool.exists():
        return []
    return sorted(path for path in spool.glob("*.json") if not path.name.startswith("."))


def init_db_command(*args: str) -> list[str]:
    """bin/init_db.sh with an empty env file: a developer's own .env cannot change it."""
    empty = Path(tempfile.gettempdir()) / "gpu-telemetry-tests-empty.env"
    empty.touch()
    return ["bash", str(REPO_ROOT / "bin" / "init_db.sh"), "--env", str(empty), *args]


def init_db_env(db) -> dict[str, str]:
    """The environment without the developer's PG* variables, pointed at `db`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, **db.env}


def init_db(db, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # stdin not a terminal: --reset without --yes refuses instead of asking.
    return subprocess.run(init_db_command(*args), env=init_db_env(db), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def init_db_killed(db, *args: str, when: Callable[[str], bool]) -> None:
    """Run bin/init_db.sh and kill -9 it (and its Python) at the first stderr line `when`
    accepts."""
    process = subprocess.Popen(init_db_command(*args), env=init_db_env(db),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        for line in process.stderr:
            if when(line):
                break
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()

