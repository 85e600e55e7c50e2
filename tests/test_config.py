"""Configuration precedence: process environment > .env > defaults (DESIGN.md)."""

import os
from pathlib import Path

import pytest

from gpu_telemetry import REPO_ROOT
from gpu_telemetry.config import DEFAULTS, load_config
from gpu_telemetry.errors import ConfigError

KEYS = (*DEFAULTS, "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    yield
    for key in KEYS:  # load_config exports .env keys into os.environ
        os.environ.pop(key, None)


def env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test.env"
    path.write_text(text)
    return path


def test_defaults(tmp_path):
    config = load_config(env_file(tmp_path, ""))
    assert config.sample_interval_sec == 5 and config.nvidia_smi_timeout_sec == 10
    assert config.nvidia_smi == "nvidia-smi"
    assert config.spool_dir == REPO_ROOT / "spool"
    assert config.status_file == REPO_ROOT / "status.json"
    assert config.raw_every_sec == 600 and config.spool_max_mb == 1024
    assert config.retention_days is None


def test_env_file_then_environment_wins(tmp_path, monkeypatch):
    path = env_file(tmp_path, "SAMPLE_INTERVAL_SEC=2.5\nPGHOST=from-file\nPGPORT=6543\n"
                              "export RAW_EVERY_SEC=0\nNVIDIA_SMI_TIMEOUT_SEC='0.25'\n")
    monkeypatch.setenv("PGHOST", "from-env")
    config = load_config(path)
    assert config.sample_interval_sec == 2.5 and config.raw_every_sec == 0
    assert config.nvidia_smi_timeout_sec == 0.25
    assert os.environ["PGHOST"] == "from-env"  # libpq reads the process environment
    assert os.environ["PGPORT"] == "6543"  # the file fills what the environment lacks


def test_relative_paths_are_taken_from_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPOOL_DIR", "var/spool")
    monkeypatch.setenv("NVIDIA_SMI", "tests/stand_ins/nvidia-smi")
    config = load_config(env_file(tmp_path, ""))
    assert config.spool_dir == REPO_ROOT / "var" / "spool"
    assert config.nvidia_smi == str(REPO_ROOT / "tests" / "stand_ins" / "nvidia-smi")


@pytest.mark.parametrize(("key", "value"), [
    ("SAMPLE_INTERVAL_SEC", "0"), ("SAMPLE_INTERVAL_SEC", "-1"), ("SAMPLE_INTERVAL_SEC", "nan"),
    ("NVIDIA_SMI_TIMEOUT_SEC", "soon"), ("RAW_EVERY_SEC", "-5"), ("SPOOL_MAX_MB", "inf"),
    ("RETENTION_DAYS", "0"),
])
def test_bad_numbers_are_configuration_errors(tmp_path, monkeypatch, key, value):
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=key):
        load_config(env_file(tmp_path, ""))


def test_missing_explicit_env_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="env file not found"):
        load_config(tmp_path / "absent.env")
