"""The README's test command also runs the linters: ruff on Python, shellcheck on shell."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def shell_scripts() -> list[str]:
    scripts = [REPO_ROOT / ".ci" / "run", *sorted((REPO_ROOT / "tests" / "stand_ins").iterdir())]
    scripts += sorted((REPO_ROOT / "bin").glob("*.sh"))
    scripts += sorted((REPO_ROOT / "bin" / "lib").glob("*.sh"))
    return [str(path) for path in scripts if path.exists()]


def test_ruff_is_clean():
    result = subprocess.run([str(BIN / "ruff"), "check", str(REPO_ROOT)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_is_clean():
    result = subprocess.run([str(BIN / "shellcheck"), *shell_scripts()], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
