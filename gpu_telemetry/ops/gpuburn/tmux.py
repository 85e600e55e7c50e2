"""--tmux: start the same run detached in a new tmux session.

The run inside tmux gets the caller's own arguments minus `--tmux` and `--tmux-session NAME`
(so a new option needs no edit here), in the caller's folder, with the caller's configuration
set explicitly: a tmux server already running keeps the environment of whoever started it.

PGPASSWORD never goes on an argument list (`ps` shows those to every user): when the caller
has it, it is written to a private temporary file (mode 600, in XDG_RUNTIME_DIR when there is
one) whose name goes on the command line; the run inside tmux reads and deletes it first thing.
Neither `env PGPASSWORD=...` nor `tmux -e` would keep it off the argument lists.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from gpu_telemetry import REPO_ROOT
from gpu_telemetry.config import DEFAULTS, PG_KEYS
from gpu_telemetry.ops.gpuburn.plan import PROG, BurnError

DEFAULT_SESSION = "gpuburn"
SESSION_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The keys whose values a run started in tmux gets from the caller, not from the tmux server's
# own (stale) environment. PGPASSWORD travels apart, in the private file.
SECRET_KEYS = ("PGPASSWORD",)
PASSED_KEYS = (*DEFAULTS, *(key for key in PG_KEYS if key not in SECRET_KEYS), "PATH", "SUDO",
               "UV_BIN")
SECRET_OPTION = "--secret-file"
# The options that are the caller's alone: the run inside tmux must not start tmux again, and
# a private file name is only ever the one this hand-off writes.
_VALUED = ("--tmux-session", SECRET_OPTION)
_FLAGS = ("--tmux",)


def child_arguments(argv: list[str], secret_file: str | None) -> list[str]:
    """The caller's arguments for the run inside tmux: the same, minus the tmux options.

    Only the options before `--` are looked at; gpu_burn's own arguments after it go as they
    are. The parser takes no abbreviations, so every option is spelled out in full here.
    """
    split = argv.index("--") if "--" in argv else len(argv)
    options, rest = argv[:split], argv[split:]
    kept: list[str] = []
    skip_value = False
    for token in options:
        if skip_value:
            skip_value = False
        elif token in _FLAGS:
            pass
        elif token in _VALUED:
            skip_value = True
        elif not token.startswith(tuple(f"{option}=" for option in _VALUED)):
            kept.append(token)
    if secret_file is not None:
        kept.append(f"{SECRET_OPTION}={secret_file}")
    return [*kept, *rest]


def tmux_command(tmux_bin: str, session: str, cwd: str, caller_env: dict[str, str],
                 inner: list[str]) -> list[str]:
    """`tmux new-session` running bin/run_gpuburn.sh with the caller's configuration.

    Each configuration key is set (`env KEY=VALUE`) or unset (`env -u KEY`) explicitly. The
    command goes to tmux as separate arguments (tmux >= 3.0 then execs it without any shell,
    so the user's default-shell cannot re-split it); shlex.join shows it.
    """
    keys = [*PASSED_KEYS, *sorted(k for k in caller_env if k.startswith("PG")
                                  and k not in PASSED_KEYS and k not in SECRET_KEYS)]
    keys = list(dict.fromkeys(keys))
    unset = [part for key in [*keys, *SECRET_KEYS] if key not in caller_env
             for part in ("-u", key)]
    assign = [f"{key}={caller_env[key]}" for key in keys if key in caller_env]
    script = str(REPO_ROOT / "bin" / "run_gpuburn.sh")
    return [tmux_bin, "new-session", "-d", "-s", session, "-c", cwd, "--",
            "env", *unset, *assign, "bash", script, *inner]


def dry_run_command(argv: list[str], session: str, caller_env: dict[str, str]) -> list[str]:
    """The tmux command --dry-run shows; the private file stands there as a placeholder."""
    secret = "<private file>" if any(key in caller_env for key in SECRET_KEYS) else None
    return tmux_command(tmux_bin(), session, os.getcwd(), caller_env,
                        child_arguments(argv, secret))


def tmux_bin() -> str:
    return os.environ.get("TMUX_BIN") or "tmux"


def _tmux_version_ok(tmux: str) -> tuple[bool, str]:
    try:
        result = subprocess.run([tmux, "-V"], capture_output=True, text=True, timeout=10,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    text = (result.stdout or result.stderr).strip()
    match = re.search(r"(\d+)\.(\d+)", text)
    return (match is None or (int(match[1]), int(match[2])) >= (3, 0)), text


def _attach_hint(tmux: str, session: str) -> str:
    if os.environ.get("TMUX"):
        return f"switch to it: {shlex.join([tmux, 'switch-client', '-t', session])}"
    return f"attach: {shlex.join([tmux, 'attach', '-t', session])} (detach again: Ctrl-b d)"


def _write_secret_file(secrets: dict[str, str]) -> str:
    """A private file (mode 600: mkstemp's) the run inside tmux reads and deletes at once."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = runtime if runtime and os.path.isdir(runtime) else None
    fd, name = tempfile.mkstemp(prefix="run_gpuburn-", suffix=".secret", dir=folder)
    with os.fdopen(fd, "w") as handle:
        json.dump(secrets, handle)
    return name


def read_secret_file(name: str) -> list[str]:
    """Take the caller's secrets into this process's environment and delete the file; returns
    the keys received."""
    path = Path(name)
    try:
        secrets = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BurnError(f"cannot read the private configuration file {path}: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    received = []
    for key in SECRET_KEYS:
        if isinstance(secrets, dict) and isinstance(secrets.get(key), str):
            os.environ[key] = secrets[key]
            received.append(key)
    return received


def _wait_until_taken(secret_file: str, timeout_sec: float = 30.0) -> None:
    """The run in tmux deletes the file first thing; one that never started must not leave a
    password behind."""
    deadline = time.monotonic() + timeout_sec
    while os.path.exists(secret_file):
        if time.monotonic() > deadline:
            os.unlink(secret_file)
            raise BurnError(f"the run in tmux did not start within {timeout_sec:.0f} s; "
                            "attach to the session to see why")
        time.sleep(0.05)


def start_in_tmux(argv: list[str], session: str, log_dir: Path,
                  caller_env: dict[str, str]) -> int:
    """Start the run detached in a new tmux session; refuse when the session exists."""
    tmux = tmux_bin()
    if shutil.which(tmux) is None:
        raise BurnError(f"{tmux} not found: install tmux (apt-get install tmux) or run "
                        "without --tmux")
    ok, version = _tmux_version_ok(tmux)
    if not ok:
        raise BurnError(f"--tmux needs tmux 3.0 or newer, found {version!r}; start tmux "
                        "yourself and run without --tmux inside it")
    exists = subprocess.run([tmux, "has-session", "-t", f"={session}"],
                            capture_output=True, timeout=10, check=False).returncode == 0
    if exists:
        raise BurnError(f"tmux session {session!r} already exists (a run in progress?): "
                        f"{_attach_hint(tmux, session)}, or choose another --tmux-session")
    secrets = {key: caller_env[key] for key in SECRET_KEYS if key in caller_env}
    secret_file = _write_secret_file(secrets) if secrets else None
    try:
        command = tmux_command(tmux, session, os.getcwd(), caller_env,
                               child_arguments(argv, secret_file))
        result = subprocess.run(command, capture_output=True, text=True, timeout=30,
                                check=False)
        if result.returncode != 0:
            message = " ".join((result.stderr or result.stdout).split())
            raise BurnError(f"tmux new-session failed ({result.returncode}): {message}")
        if secret_file:
            _wait_until_taken(secret_file)
    except BaseException:
        if secret_file:
            with contextlib.suppress(OSError):
                os.unlink(secret_file)
        raise
    print(f"{PROG}: started in tmux session {session!r}; {_attach_hint(tmux, session)}; "
          f"log: {log_dir}/gpu-burn-*.log")
    return 0
