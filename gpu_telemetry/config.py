"""Configuration: process environment > .env > defaults (docs/architecture.md, Configuration).

The PostgreSQL connection is left to libpq's own PG* variables: values from .env are exported
into the process environment (never overriding it), and psycopg reads them itself, so no
password is ever put into a DSN string, an argument list or a log line.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from gpu_telemetry import REPO_ROOT
from gpu_telemetry.errors import ConfigError

DEFAULTS: dict[str, str] = {
    "SAMPLE_INTERVAL_SEC": "5",
    "NVIDIA_SMI": "nvidia-smi",
    "NVIDIA_SMI_TIMEOUT_SEC": "10",
    "SPOOL_DIR": str(REPO_ROOT / "spool"),
    "STATUS_FILE": str(REPO_ROOT / "status.json"),
    "LOG_DIR": str(REPO_ROOT / "logs"),
    "GPU_BURN_DIR": "~/projects/gpu-burn",
    "RAW_EVERY_SEC": "600",
    "SPOOL_MAX_MB": "1024",
    "RETENTION_DAYS": "",
    "GPU_SOURCE": "nvidia-smi",
    "ALERT_COMMAND": "",
    "ALERT_COMMAND_TIMEOUT_SEC": "10",
    "ALERT_TEMP_MARGIN_C": "5",
    "ALERT_TEMP_C": "85",
    "ALERT_OUTAGE_SEC": "300",
    "ALERT_SOURCE_SEC": "60",
    "KERNEL_LOG_COMMAND": "journalctl -k -f -n 0 -o short-iso-precise --no-pager",
}

# Where readings come from: one `nvidia-smi -q -x` per sample, or NVML through nvidia-ml-py
# (collector/nvml.py), which still takes the raw snapshots from nvidia-smi.
GPU_SOURCES = ("nvidia-smi", "nvml")

PG_KEYS = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE")


@dataclass(frozen=True)
class Config:
    sample_interval_sec: float
    nvidia_smi: str
    nvidia_smi_timeout_sec: float
    spool_dir: Path
    status_file: Path
    log_dir: Path
    gpu_burn_dir: Path
    raw_every_sec: float
    spool_max_mb: float
    retention_days: float | None
    env_file: Path | None
    gpu_source: str = "nvidia-smi"
    alert_command: str = ""
    alert_command_timeout_sec: float = 10
    alert_temp_margin_c: float = 5
    alert_temp_c: float = 85
    alert_outage_sec: float = 300
    alert_source_sec: float = 60
    kernel_log_command: str = ""  # empty: not read


def read_env_file(env_path: str | Path | None = None) -> tuple[Path | None, dict[str, str]]:
    """The file read (None when there is none) and its KEY=value pairs, as python-dotenv reads
    them: the one reading of .env that the Python commands and the shell scripts share.

    An explicit path must exist; the default <repo>/.env is optional. A file holding
    PGPASSWORD that others may read is refused.
    """
    if env_path is not None:
        path = Path(env_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"env file not found: {path}")
    else:
        path = REPO_ROOT / ".env"
        if not path.is_file():
            return None, {}
    try:
        values = dotenv_values(path)
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read env file {path}: {exc}") from exc
    if values.get("PGPASSWORD") and mode & 0o044:
        raise ConfigError(f"refusing {path}: it holds PGPASSWORD and others can read it "
                          f"(mode {stat.S_IMODE(mode):o}); fix: chmod 600 {path}")
    return path, {key: value for key, value in values.items() if value is not None}


def env_file_additions(env_path: str | Path | None = None) -> tuple[Path | None, dict[str, str]]:
    """The keys of the env file that the process environment does not set (the environment
    wins), with their values."""
    path, values = read_env_file(env_path)
    return path, {key: value for key, value in values.items() if key not in os.environ}


def load_env_file(env_path: str | Path | None = None) -> Path | None:
    """Export the keys of the .env file that the process environment does not already set."""
    path, additions = env_file_additions(env_path)
    os.environ.update(additions)
    return path


def _path(raw: str) -> Path:
    """Relative paths are taken from the repository root, so a .env means the same thing
    whatever the working directory (systemd starts units in $HOME)."""
    path = Path(raw).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _executable(raw: str) -> str:
    """A bare name is looked up on PATH; a relative path is taken from the repository root."""
    return str(_path(raw)) if "/" in raw else raw


def _number(key: str, raw: str, *, positive: bool, allow_zero: bool = False) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number of seconds or units, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and positive and not allow_zero):
        limit = "zero or more" if allow_zero else "more than zero"
        raise ConfigError(f"{key} must be {limit}, got {raw!r}")
    return value


def load_config(env_path: str | Path | None = None) -> Config:
    env_file = load_env_file(env_path)

    def get(key: str) -> str:
        value = os.environ.get(key, "")
        return value.strip() if value.strip() else DEFAULTS[key]

    retention_raw = get("RETENTION_DAYS")
    gpu_source = get("GPU_SOURCE").lower()
    if gpu_source not in GPU_SOURCES:
        raise ConfigError(f"GPU_SOURCE must be nvidia-smi or nvml, got {get('GPU_SOURCE')!r}")
    return Config(
        sample_interval_sec=_number("SAMPLE_INTERVAL_SEC", get("SAMPLE_INTERVAL_SEC"),
                                    positive=True),
        nvidia_smi=_executable(get("NVIDIA_SMI")),
        nvidia_smi_timeout_sec=_number("NVIDIA_SMI_TIMEOUT_SEC", get("NVIDIA_SMI_TIMEOUT_SEC"),
                                       positive=True),
        spool_dir=_path(get("SPOOL_DIR")),
        status_file=_path(get("STATUS_FILE")),
        log_dir=_path(get("LOG_DIR")),
        gpu_burn_dir=_path(get("GPU_BURN_DIR")),
        raw_every_sec=_number("RAW_EVERY_SEC", get("RAW_EVERY_SEC"), positive=True,
                              allow_zero=True),
        spool_max_mb=_number("SPOOL_MAX_MB", get("SPOOL_MAX_MB"), positive=True),
        retention_days=(_number("RETENTION_DAYS", retention_raw, positive=True)
                        if retention_raw else None),
        env_file=env_file,
        gpu_source=gpu_source,
        alert_command=get("ALERT_COMMAND"),
        alert_command_timeout_sec=_number("ALERT_COMMAND_TIMEOUT_SEC",
                                          get("ALERT_COMMAND_TIMEOUT_SEC"), positive=True),
        alert_temp_margin_c=_number("ALERT_TEMP_MARGIN_C", get("ALERT_TEMP_MARGIN_C"),
                                    positive=True, allow_zero=True),
        alert_temp_c=_number("ALERT_TEMP_C", get("ALERT_TEMP_C"), positive=True),
        alert_outage_sec=_number("ALERT_OUTAGE_SEC", get("ALERT_OUTAGE_SEC"), positive=True,
                                 allow_zero=True),
        alert_source_sec=_number("ALERT_SOURCE_SEC", get("ALERT_SOURCE_SEC"), positive=True,
                                 allow_zero=True),
        kernel_log_command="" if get("KERNEL_LOG_COMMAND").lower() == "none"
        else get("KERNEL_LOG_COMMAND"),
    )
