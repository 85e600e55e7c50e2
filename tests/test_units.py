"""The systemd user units (committed and as installed by bin/install_units.sh) and bin/uv.sh,
which the units call to find uv under a user manager's short PATH."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

UNITS = ("gpu-telemetry.service", "gpu-telemetry-flush.service", "gpu-telemetry-flush.timer",
         "gpu-telemetry-down.service")
INSTALL = REPO_ROOT / "bin" / "install_units.sh"
UV_SH = REPO_ROOT / "bin" / "uv.sh"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                           reason="systemd-analyze not installed")


def executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/bash\n{body}\n")  # absolute: some tests run with a bare PATH
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A private HOME, config and runtime folder: nothing of the real user manager is touched."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {key: value for key, value in os.environ.items()
           if key not in ("SYSTEMCTL", "UV_BIN", "UV_SEARCH_PATH")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_RUNTIME_DIR=str(runtime))
    (tmp_path / "home").mkdir()
    return env


def install(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=30, check=False)


def verify(paths: list[Path], env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--user", *map(str, paths)], env=env,
                            cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Unknown keys and bad values are only warnings to verify; they name the unit.
    assert "gpu-telemetry" not in output, output


def directives(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if "=" in line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def test_committed_units_keep_the_contract():
    loop = directives(REPO_ROOT / "systemd" / "gpu-telemetry.service")
    assert loop["ExecStart"].endswith("/bin/collect_once.py --loop")
    assert loop["ExecStart"].startswith("%h/projects/gpu-telemetry/bin/uv.sh run --project ")
    assert (loop["Restart"], loop["RestartSec"], loop["KillSignal"]) == ("always", "5", "SIGTERM")
    # A configuration error stops the collector instead of restarting it every 5 s forever;
    # database errors are not among them (the loop spools through them and never exits).
    assert set(loop["RestartPreventExitStatus"].split()) == {"78", "127"}
    assert int(loop["TimeoutStopSec"]) > 10  # longer than NVIDIA_SMI_TIMEOUT_SEC's default
    assert loop["Environment"] == "PYTHONUNBUFFERED=1"
    flush = directives(REPO_ROOT / "systemd" / "gpu-telemetry-flush.service")
    # Only "try again later" is a success: 65, 77 and 78 fail the run, visibly.
    assert flush["Type"] == "oneshot" and flush["SuccessExitStatus"] == "75"
    assert "RestartPreventExitStatus" not in flush and "Restart" not in flush
    assert flush["ExecStart"].endswith("/bin/flush_spool.py --wait 30")
    timer = directives(REPO_ROOT / "systemd" / "gpu-telemetry-flush.timer")
    assert timer["OnCalendar"] == "minutely" and timer["Persistent"] == "true"
    assert timer["WantedBy"] == "timers.target"


@needs_systemd_analyze
def test_committed_units_verify_for_a_clone_at_home_projects(tmp_path, user_env):
    # As committed, the units name %h/projects/gpu-telemetry; verify checks ExecStart exists.
    projects = Path(user_env["HOME"]) / "projects"
    projects.mkdir()
    (projects / "gpu-telemetry").symlink_to(REPO_ROOT)
    verify([REPO_ROOT / "systemd" / unit for unit in UNITS], user_env, tmp_path)


@needs_systemd_analyze
def test_installed_units_verify_and_point_at_this_clone(tmp_path, user_env):
    result = install("--no-reload", env=user_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    unit_dir = tmp_path / "config" / "systemd" / "user"
    installed = [unit_dir / unit for unit in UNITS]
    assert all(path.is_file() for path in installed), result.stdout
    for path in installed:
        text = path.read_text()
        assert "%h/projects" not in text and f"clone at {REPO_ROOT};" in text
    loop = directives(unit_dir / "gpu-telemetry.service")
    assert loop["ExecStart"] == (f"{REPO_ROOT}/bin/uv.sh run --project {REPO_ROOT} --frozen "
                                 f"{REPO_ROOT}/bin/collect_once.py --loop")
    assert loop["WorkingDirectory"] == str(REPO_ROOT)
    verify(installed, user_env, tmp_path)


def test_install_defaults_to_home_config_and_reloads(tmp_path, user_env):
    calls = tmp_path / "systemctl.calls"
    user_env["SYSTEMCTL"] = str(executable(tmp_path / "bin" / "systemctl",
                                           f'echo "$*" >>"{calls}"'))
    del user_env["XDG_CONFIG_HOME"]
    result = install("--enable", env=user_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "home" / ".config" / "systemd" / "user" / UNITS[0]).is_file()
    assert calls.read_text().splitlines() == [
        "--user show-environment", "--user daemon-reload",
        "--user enable --now gpu-telemetry.service gpu-telemetry-flush.timer"]


def test_install_without_a_user_manager_notes_the_steps(tmp_path, user_env):
    user_env["SYSTEMCTL"] = str(executable(tmp_path / "bin" / "systemctl",
                                           'echo "Failed to connect to bus" >&2; exit 1'))
    result = install(env=user_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "systemctl --user is not available" in result.stdout
    assert "systemctl --user daemon-reload" in result.stdout
    assert install("--enable", env=user_env, cwd=tmp_path).returncode == 1


def test_install_print_writes_nothing_and_usage(tmp_path, user_env):
    result = install("--print", env=user_env, cwd=tmp_path)
    assert result.returncode == 0 and f"WorkingDirectory={REPO_ROOT}" in result.stdout
    assert all(f"### {unit}" in result.stdout for unit in UNITS)
    assert not (tmp_path / "config").exists()
    assert install("--help", env=user_env, cwd=tmp_path).returncode == 0
    result = install("--bogus", env=user_env, cwd=tmp_path)
    assert result.returncode == 2 and "unknown argument" in result.stderr


def test_install_refuses_a_path_units_cannot_hold(tmp_path, user_env):
    clone = tmp_path / "my clone"
    (clone / "bin").mkdir(parents=True)
    shutil.copy2(INSTALL, clone / "bin" / INSTALL.name)
    shutil.copytree(REPO_ROOT / "bin" / "lib", clone / "bin" / "lib")
    shutil.copytree(REPO_ROOT / "systemd", clone / "systemd")
    result = subprocess.run(["bash", str(clone / "bin" / INSTALL.name), "--no-reload"],
                            env=user_env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1 and "move the clone" in result.stderr
    assert not (tmp_path / "config").exists()


@pytest.mark.parametrize("signal_name", ["INT", "TERM", "HUP"])
def test_an_interrupted_install_leaves_no_temp_file(tmp_path, user_env, signal_name):
    """Ctrl-C or a kill while a unit is being written: the script removes its .<unit>.XXXXXX
    file and ends by that signal (a shell reports 128 + its number)."""
    tools = tmp_path / "tools"
    # chmod runs while the temp file exists, between mktemp and the rename into place.
    executable(tools / "chmod", f'kill -{signal_name} "$PPID"; sleep 0.2')
    user_env["PATH"] = f"{tools}{os.pathsep}{user_env['PATH']}"
    result = install("--no-reload", env=user_env, cwd=tmp_path)
    assert result.returncode == -getattr(signal, f"SIG{signal_name}"), result.stderr
    unit_dir = tmp_path / "config" / "systemd" / "user"
    assert unit_dir.is_dir()
    assert sorted(path.name for path in unit_dir.iterdir()) == []


def run_uv_sh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/bash", str(UV_SH), *args], env=env, capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.fixture
def fake_uv(tmp_path: Path) -> Path:
    return executable(tmp_path / "fake" / "uv", 'echo "fake uv: $*"')


def test_uv_sh_prefers_uv_bin(tmp_path, user_env, fake_uv):
    user_env["UV_BIN"] = str(fake_uv)
    result = run_uv_sh(user_env, "run", "--frozen", "a b")
    assert result.returncode == 0 and result.stdout == "fake uv: run --frozen a b\n"
    user_env["UV_BIN"] = str(tmp_path / "missing" / "uv")
    result = run_uv_sh(user_env, "--version")
    assert result.returncode == 127 and "UV_BIN=" in result.stderr


def test_uv_sh_looks_in_home_local_bin_before_path(tmp_path, user_env, fake_uv):
    executable(Path(user_env["HOME"]) / ".local" / "bin" / "uv", 'echo "home uv: $*"')
    user_env["PATH"] = str(fake_uv.parent)
    assert run_uv_sh(user_env, "sync").stdout == "home uv: sync\n"


def test_uv_sh_falls_back_to_path(tmp_path, user_env, fake_uv):
    user_env.update(PATH=str(fake_uv.parent), UV_SEARCH_PATH=str(tmp_path / "none" / "uv"))
    result = run_uv_sh(user_env, "sync")
    assert result.returncode == 0 and result.stdout == "fake uv: sync\n"


def test_uv_sh_without_uv_says_how_to_install(tmp_path, user_env):
    empty = tmp_path / "empty"
    empty.mkdir()
    user_env.update(PATH=str(empty), UV_SEARCH_PATH=str(tmp_path / "none" / "uv"))
    result = run_uv_sh(user_env, "sync")
    assert result.returncode == 127
    assert result.stderr.startswith("uv.sh: uv not found (looked in ")
    assert "https://astral.sh/uv/install.sh" in result.stderr and "pip install uv" in result.stderr

    # The fixed list too, unless this machine has a uv in one of its system folders.
    if not any(Path(folder, "uv").exists() for folder in ("/usr/local/bin", "/usr/bin")):
        del user_env["UV_SEARCH_PATH"]
        result = run_uv_sh(user_env, "sync")
        assert result.returncode == 127
        assert "/.local/bin/uv" in result.stderr and "/usr/bin/uv" in result.stderr
