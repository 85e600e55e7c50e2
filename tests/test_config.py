"""Configuration precedence: process environment > .env > defaults; one reading of .env for
the Python commands and the shell scripts (bin/lib/common.sh evals what cli.env prints)."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_telemetry import REPO_ROOT
from gpu_telemetry.cli.env import export_lines
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


# --- one reader of .env for the shell scripts and the Python commands -----------------------

# Each value as python-dotenv reads it: escapes and ${VAR} expanded, $VAR kept, unquoted values
# trimmed of their comment. bin/lib/common.sh used to read these differently.
TRICKY_ENV = (
    'PGPASSWORD="a\\\\b ${HOME} it\'s \\"quoted\\" $1 %s;--"\n'
    "PGUSER='single $HOME ${HOME} \\\\ \"x\"'\n"
    "PGDATABASE=plain value with spaces   # a comment\n"
    'export PGHOST="two\\nlines"\n'
    'STATUS_FILE="/tmp/a dir/it\'s $x.json"\n'
)
TRICKY_KEYS = ("PGPASSWORD", "PGUSER", "PGDATABASE", "PGHOST", "STATUS_FILE")


def tricky_expected(home: str) -> dict[str, str]:
    return {
        "PGPASSWORD": f'a\\b {home} it\'s "quoted" $1 %s;--',
        # python-dotenv expands ${VAR} inside single quotes too (not $VAR), and reads \\ as \.
        "PGUSER": f'single $HOME {home} \\ "x"',
        "PGDATABASE": "plain value with spaces",
        "PGHOST": "two\nlines",
        "STATUS_FILE": "/tmp/a dir/it's $x.json",
    }


def clean_process_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in KEYS}
    env["HOME"] = str(home)
    return env


def shell_sees(env_path: Path, env: dict[str, str], tmp_path: Path,
               ) -> subprocess.CompletedProcess[str]:
    """What a script sourcing bin/lib/common.sh has after load_configuration, NUL-separated."""
    script = tmp_path / "show.sh"
    script.write_text(
        "#!/usr/bin/env bash\nset -euo pipefail\nPROG=show.sh\n"
        f"REPO_ROOT={shlex.quote(str(REPO_ROOT))}\n"
        'source "$REPO_ROOT/bin/lib/common.sh"\n'
        'load_configuration "$1"\n'
        f"for key in {' '.join(TRICKY_KEYS)}; do printf '%s=%s\\0' \"$key\" \"${{!key}}\"; done\n")
    return subprocess.run(["bash", str(script), str(env_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)


def python_sees(env_path: Path, env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    code = ("import os, sys\nfrom gpu_telemetry.config import load_config\n"
            "load_config(sys.argv[1])\n"
            f"for key in {TRICKY_KEYS!r}: sys.stdout.write(f'{{key}}={{os.environ[key]}}\\0')\n")
    result = subprocess.run([sys.executable, "-c", code, str(env_path)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=True)
    return nul_pairs(result.stdout)


def nul_pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split("\0") if item)


def test_shell_scripts_and_python_read_env_values_alike(tmp_path):
    path = env_file(tmp_path, TRICKY_ENV)
    path.chmod(0o600)
    env = clean_process_env(tmp_path / "home dir")
    shell = shell_sees(path, env, tmp_path)
    assert shell.returncode == 0, shell.stderr
    expected = tricky_expected(str(tmp_path / "home dir"))
    assert nul_pairs(shell.stdout) == expected
    assert python_sees(path, env, tmp_path) == expected


def test_collect_once_reads_the_same_status_file_path_as_the_shell(tmp_path):
    path = env_file(tmp_path, TRICKY_ENV)
    path.chmod(0o600)
    env = clean_process_env(tmp_path)
    env.update(NVIDIA_SMI=str(REPO_ROOT / "tests" / "stand_ins" / "nvidia-smi"),
               NVSMI_STANDIN_FIXTURE=str(REPO_ROOT / "tests" / "fixtures" / "nvidia-smi"
                                         / "dual-2080-v13.xml"))
    shell = nul_pairs(shell_sees(path, env, tmp_path).stdout)
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bin" / "collect_once.py"),
                             "--dry-run", "--env", str(path)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    # The status file does not exist: the warning names the path collect_once.py read.
    assert f"status file {shell['STATUS_FILE']} not found" in result.stderr


def test_the_shell_keeps_environment_first_and_refuses_a_readable_password_file(tmp_path):
    path = env_file(tmp_path, TRICKY_ENV)
    path.chmod(0o600)
    env = {**clean_process_env(tmp_path), "PGUSER": "from the 'environment' $HOME"}
    shell = shell_sees(path, env, tmp_path)
    assert nul_pairs(shell.stdout)["PGUSER"] == "from the 'environment' $HOME"
    path.chmod(0o640)
    refused = shell_sees(path, env, tmp_path)
    assert refused.returncode == 78 and refused.stdout == ""
    assert refused.stderr == (f"show.sh: refusing {path}: it holds PGPASSWORD and others can "
                              f"read it (mode 640); fix: chmod 600 {path}\n")


def test_the_export_listing_quotes_every_value_for_bash():
    listing = export_lines({"A": "it's $HOME `id` \\ \"x\"\n", "B": "", "not.a.name": "x"})
    assert listing == ["export A='it'\"'\"'s $HOME `id` \\ \"x\"\n'", "export B=''"]
