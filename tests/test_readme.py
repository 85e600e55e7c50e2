"""The README's commands work as written."""

import itertools
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from gpu_telemetry import config as config_module
from tests.conftest import conninfo
from tests.helpers import REPO_ROOT, base_env
from tests.pgserver import PgServer

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


# --- "Setting up", from a running server to the first stored sample -----------------------------

# What a fresh clone holds that the walk needs (no .venv: `uv run` is this interpreter).
CLONE_PARTS = ("bin", "gpu_telemetry", "sql", "tests/stand_ins", "tests/fixtures", ".env.example",
               "status.json.example", "pyproject.toml")
_role_numbers = itertools.count(1)


def fresh_clone(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    for part in CLONE_PARTS:
        source, target = REPO_ROOT / part, root / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return root


def write_shim(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def setup_shims(bin_dir: Path, server: PgServer) -> None:
    """`uv run X` runs X with the project's interpreter; `sudo -u postgres CMD` runs CMD as the
    test server's superuser, which is what the postgres system user is to a packaged server."""
    bin_dir.mkdir()
    write_shim(bin_dir / "uv", '[ "$1" != --version ] || { echo "uv shim"; exit 0; }\n'
                               '[ "$1" = run ] || { echo "uv shim: only uv run" >&2; exit 2; }\n'
                               "shift\n"
                               # uv's own options, and `python` naming the interpreter
                               'while :; do case $1 in --quiet | --frozen) shift ;;\n'
                               "  --project) shift 2 ;; *) break ;; esac; done\n"
                               '[ "$1" != python ] || shift\n'
                               f"exec {shlex.quote(sys.executable)} \"$@\"\n")
    superuser = {"PGUSER": server.user, "PGDATABASE": "postgres"}
    if server.password:
        superuser["PGPASSWORD"] = server.password
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in superuser.items())
    write_shim(bin_dir / "sudo",
               'if [ "$1" != -u ] || [ "$2" != postgres ]; then\n'
               '  echo "sudo shim: only sudo -u postgres COMMAND" >&2; exit 1\nfi\n'
               f'shift 2\nexec env {assignments} "$@"\n')


def newcomer_environment(tmp_path: Path, clone: Path, server: PgServer, login: str) -> dict:
    """A login shell of user `login` on the database's host: none of the developer's own
    PG*, configuration or stand-in settings. PGHOST and PGPORT stand for the packaged server's
    local socket; PGUSER for libpq's default user, the login name, which comes from the
    operating system's account and which a test cannot change."""
    env = {key: value for key, value in os.environ.items()
           if key not in config_module.DEFAULTS and key != "PSQL"
           and not key.startswith(("PG", "NVSMI_STANDIN_", "WRITER_", "READER_"))}
    bin_dir = tmp_path / "shims"
    setup_shims(bin_dir, server)
    home = tmp_path / "home"
    home.mkdir()
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "HOME": str(home),
        "USER": login,
        "PGHOST": server.host,
        "PGPORT": str(server.port),
        "PGUSER": login,
        "PGCONNECT_TIMEOUT": "5",
        "NVIDIA_SMI": str(clone / "tests" / "stand_ins" / "nvidia-smi"),
        # The clone's own package, as `uv run` in the clone would install it (this interpreter
        # has the checkout's installed).
        "PYTHONPATH": str(clone),
    })
    return env


def superuser_connect(server: PgServer, dbname: str) -> psycopg.Connection:
    return psycopg.connect(**conninfo(server.libpq_env(dbname)), autocommit=True)


def env_example_settings() -> dict[str, str]:
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z][A-Z0-9_]*=", line))


def test_env_example_leaves_the_connection_to_libpq_but_the_database():
    """Copied unedited, .env must fit what the README's first line creates; the walk below
    cannot see a PGHOST, PGPORT or PGUSER here, since its environment sets them."""
    settings = env_example_settings()
    assert {key for key in settings if key.startswith("PG")} == {"PGDATABASE"}
    assert f"createdb --owner \"$USER\" {settings['PGDATABASE']}" in code_block_after("Setting up")


def test_setting_up_works_as_written(tmp_path, pg_server):
    if pg_server.external:
        pytest.skip("needs the suite's own server: the new role logs in without a password")
    block = code_block_after("Setting up")
    database = env_example_settings()["PGDATABASE"]
    login = f"newcomer_{os.getpid()}_{next(_role_numbers)}"
    clone = fresh_clone(tmp_path)
    env = newcomer_environment(tmp_path, clone, pg_server, login)
    try:
        result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=clone,
                                env=env, capture_output=True, text=True, timeout=180,
                                check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "stored 1 of 1 GPU rows" in output, output
        assert stat.S_IMODE((clone / ".env").stat().st_mode) == 0o600
        with superuser_connect(pg_server, database) as conn:
            (stored,) = conn.execute("SELECT count(*) FROM telemetry.gpu_telemetry").fetchone()
            (owner,) = conn.execute("SELECT nspowner::regrole::text FROM pg_namespace"
                                    " WHERE nspname = 'telemetry'").fetchone()
        assert stored == 1
        assert owner == login  # the schema belongs to the role the README made, not postgres
    finally:
        with superuser_connect(pg_server, "postgres") as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(database)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login)))
