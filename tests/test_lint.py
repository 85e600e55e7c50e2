"""The README's test command also runs the linters: ruff on Python, shellcheck on shell."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".ruff_cache", ".pytest_cache"}
SHELL_RE = re.compile(rb"#!\s*(/usr/bin/env\s+)?(/usr)?(/bin/)?(ba)?sh\b")


def shell_scripts() -> list[str]:
    """Every shell script of the repository: *.sh, and any file whose first line names sh or
    bash (the stand-ins, .ci/run, bench helpers)."""
    scripts = []
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            path = Path(folder) / name
            if name.endswith(".sh"):
                scripts.append(path)
                continue
            try:
                with path.open("rb") as handle:
                    first = handle.readline(200)
            except OSError:
                continue
            if SHELL_RE.match(first):
                scripts.append(path)
    return [str(path) for path in scripts]


def test_every_shell_script_is_found():
    found = {Path(path).relative_to(REPO_ROOT).as_posix() for path in shell_scripts()}
    for expected in (".ci/run", "bin/run_gpuburn.sh", "bin/set_status.sh", "bin/lib/common.sh",
                     "tests/stand_ins/gpu_burn", "tests/stand_ins/nvidia-smi"):
        assert expected in found, expected


def test_ruff_is_clean():
    result = subprocess.run([str(BIN / "ruff"), "check", str(REPO_ROOT)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_is_clean():
    result = subprocess.run([str(BIN / "shellcheck"), *shell_scripts()], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
