"""The README's commands work as written."""

import json
import re
import subprocess
import sys

from tests.helpers import REPO_ROOT, base_env

README = (REPO_ROOT / "README.md").read_text()


def code_block_after(heading: str) -> str:
    section = README.split(f"## {heading}", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def commands(block: str) -> list[str]:
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def run_as_documented(command: str, tmp_path) -> subprocess.CompletedProcess[str]:
    # `uv run X` is `python X` in the project's environment, which this interpreter is.
    shim = f'uv() {{ shift; "{sys.executable}" "$@"; }}\n'
    env = base_env(tmp_path, None)
    for key in ("NVIDIA_SMI", "NVSMI_STANDIN_FIXTURE", "NVSMI_STANDIN_MODE"):
        env.pop(key)
    return subprocess.run(["bash", "-c", shim + command], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_two_commands_are_documented():
    block = code_block_after("The two commands")
    assert "uv run ./bin/collect_once.py" in block and "uv run pytest" in block
    assert "uv run pytest" in (REPO_ROOT / ".ci" / "run").read_text().splitlines()


def test_trying_it_without_a_gpu_works_as_written(tmp_path):
    first, second, lost = commands(code_block_after("Trying it without a GPU"))
    for command, gpus in ((first, 1), (second, 2)):
        result = run_as_documented(command, tmp_path)
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)["gpus"]) == gpus
    result = run_as_documented(lost, tmp_path)
    assert result.returncode == 69 and "GPU is lost" in result.stderr
