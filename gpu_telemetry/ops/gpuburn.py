"""gpu-burn driven through phases, each one written to status.json so every sample the collector
takes during the run carries the phase's tag, memo and the run's id (body of bin/run_gpuburn.sh).

    pre-idle   idle, --pre-idle-memo, --pre-idle-sec seconds (skipped when 0)
    bench      --pre-tag, --pre-memo: `./gpu_burn [ARGS] SEC` inside the gpu-burn folder
    post       --post-tag, --post-memo: written the moment gpu_burn ends, kept through the
               diagnostics after and at least SAMPLE_INTERVAL_SEC (one sample records it)
    cooldown   idle, --cooldown-memo, --cooldown-sec seconds (skipped when 0)
    final      --final-tag, --final-memo: written at the end and on any exit (Ctrl-C, TERM,
               HUP, failure), then with "[<phase> exit=<code>]" in the memo

The plan (build_plan, format_plan, tmux_command) is pure; Runner does the I/O.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gpu_telemetry import REPO_ROOT
from gpu_telemetry.cli.common import OneLineParser, add_common_options, run
from gpu_telemetry.config import DEFAULTS, PG_KEYS, Config, load_config
from gpu_telemetry.errors import (
    EXIT_IO,
    EXIT_SOFTWARE,
    StatusError,
    TelemetryError,
)
from gpu_telemetry.ops.status import (
    MAX_TEXT_CHARS,
    VALID_TAGS,
    check_memo,
    read_status,
    write_status,
)

PROG = "run_gpuburn.sh"
BUILD_HINT = ("build it with: git clone https://github.com/wilicc/gpu-burn {dir} && make -C {dir} "
              "(needs the CUDA toolkit), or point GPU_BURN_DIR or --gpu-burn-dir at its folder")
ENGLISH_ENV = {"LC_ALL": "C", "LANG": "C"}
# gpu_burn ends on its own after SEC seconds (plus its start-up and the final compare). One that
# is still running well past that is hung, as a GPU that fell off the bus leaves it (Xid 79 on
# the P40 dock): killed, exit 124, so the status does not stay `bench` for ever.
HANG_GRACE_SEC = 120.0
HANG_GRACE_FRACTION = 0.1
KILL_GRACE_SEC = 10.0
DIAG_TIMEOUT_SEC = 30.0
EXIT_FAILED = 1
EXIT_GPU_BURN_MISSING = 127
EXIT_HUNG = 124
# The keys whose values a run started in tmux gets from the caller, not from the tmux server's
# own (stale) environment. PGPASSWORD travels apart: see start_in_tmux.
SECRET_KEYS = ("PGPASSWORD",)
PASSED_KEYS = (*DEFAULTS, *(key for key in PG_KEYS if key not in SECRET_KEYS), "PATH", "SUDO",
               "UV_BIN")
SESSION_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OUTCOME_RE = re.compile(r" \[[a-z-]+ exit=\d+\]")


class BurnError(TelemetryError):
    exit_code = EXIT_FAILED

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        self.exit_code = exit_code
        super().__init__(message)


class Stopped(BaseException):
    """A signal asked the run to stop; BaseException so no `except Exception` swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


# --- options ---------------------------------------------------------------------------------



def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative: give zero or more seconds "
                                         "(0 skips the phase)")
    return value


def _whole_seconds(text: str) -> int:
    """gpu_burn reads its duration with atoi(): whole seconds, more than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds")
    if value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds (gpu_burn "
                                         "reads whole seconds)")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is {'negative' if value < 0 else 'zero'}: "
                                         "gpu_burn needs 1 second or more")
    return int(value)


def _tag(text: str) -> str:
    if text not in VALID_TAGS:
        raise argparse.ArgumentTypeError(f"unknown tag {text!r}: use one of "
                                         f"{', '.join(VALID_TAGS)}")
    return text


def _session(text: str) -> str:
    # tmux turns "." and ":" into "_" in session names, and a target needs neither.
    if not SESSION_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use 1-64 letters, digits, _ or -")
    return text


HELP_EPILOG = f"""\
examples:
  bin/run_gpuburn.sh --sec 60 --no-diag                 a short burn, status bench then restored
  bin/run_gpuburn.sh --pre-idle-sec 180 --sec 900 --cooldown-sec 600 \\
      --final-tag prod --final-memo "prod (normal usage)" --memo-suffix " fan=25%" --tmux
  bin/run_gpuburn.sh --dry-run --sec 900                print the plan, change nothing
  bin/run_gpuburn.sh --sec 300 -- -d -tc                gpu_burn options go after --

The run id (gpuburn-YYYYmmdd-HHMMSS, UTC) stays in status.json from the first phase to the
last; the final status carries the run id it restores (usually none). The log is
LOG_DIR/gpu-burn-YYYYmmdd-HHMMSS.log: phases, diagnostics and gpu_burn's own output.
A gpu_burn still running {HANG_GRACE_SEC:.0f} s (plus 10 %) past --sec is killed (exit 124).
Environment: GPU_BURN_DIR, STATUS_FILE, LOG_DIR, NVIDIA_SMI (diagnostics), SUDO (default sudo),
TMUX_BIN (default tmux); precedence: environment > .env > defaults.

Exit status: gpu_burn's own (0 when every GPU passed, other: a GPU computed wrong results);
1 tmux missing, too old or refused (the session exists); 2 usage (a bad value, or a memo the
status file refuses); 70 internal error (a bug: --debug shows the traceback); 74 status.json or
the log not writable; 78 configuration error; 124 gpu_burn hung and was killed; 127 gpu_burn
not found, or neither .venv nor uv to run this with; 129 HUP, 130 Ctrl-C, 143 TERM (the final
status is written first).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run gpu_burn through the phases pre-idle, bench, post, cooldown and final, "
                    "writing each phase to status.json so the collected samples carry it.")
    add = parser.add_argument
    add("--sec", type=_whole_seconds, default=600, metavar="SEC",
        help="gpu_burn duration, whole seconds (default: 600)")
    add("--pre-tag", type=_tag, default="bench", metavar="TAG",
        help="tag while gpu_burn runs (default: bench)")
    add("--pre-memo", default="gpu-burn", metavar="MEMO",
        help="memo while gpu_burn runs (default: 'gpu-burn')")
    add("--post-tag", type=_tag, default="idle", metavar="TAG",
        help="tag written when gpu_burn ends, kept for the diagnostics after and at least "
             "SAMPLE_INTERVAL_SEC so a sample records it (default: idle)")
    add("--post-memo", default="post gpu-burn idle", metavar="MEMO",
        help="memo written when gpu_burn ends (default: 'post gpu-burn idle')")
    add("--pre-idle-sec", type=_number, default=0.0, metavar="SEC",
        help="idle baseline before gpu_burn, fractions allowed; 0 skips it (default: 0)")
    add("--pre-idle-memo", default="pre gpu-burn idle (baseline)", metavar="MEMO",
        help="memo of the idle baseline (default: 'pre gpu-burn idle (baseline)')")
    add("--cooldown-sec", type=_number, default=0.0, metavar="SEC",
        help="idle cooldown after gpu_burn, fractions allowed; 0 skips it (default: 0)")
    add("--cooldown-memo", default="cooldown idle (post gpu-burn)", metavar="MEMO",
        help="memo of the cooldown (default: 'cooldown idle (post gpu-burn)')")
    add("--final-tag", type=_tag, metavar="TAG",
        help="tag written at the end and on any exit (default: the tag status.json had before "
             "the run; idle when it had none or had bench)")
    add("--final-memo", metavar="MEMO",
        help="memo written at the end (default: the restored memo, else the final tag)")
    add("--memo-suffix", default="", metavar="TEXT",
        help="appended to every memo written during the run, e.g. ' fan=25%%' (default: none)")
    add("--gpu-burn-dir", metavar="DIR",
        help="folder holding the built gpu_burn (default: GPU_BURN_DIR, ~/projects/gpu-burn)")
    add("--tmux", action=argparse.BooleanOptionalAction, default=False,
        help="run detached in a new tmux session (default: --no-tmux)")
    add("--tmux-session", type=_session, default="gpuburn", metavar="NAME",
        help="tmux session name (default: gpuburn); an existing one is refused")
    add("--english", action=argparse.BooleanOptionalAction, default=True,
        help="LC_ALL=C LANG=C for gpu_burn and diagnostics (default: --english)")
    add("--diag", action=argparse.BooleanOptionalAction, default=True,
        help="diagnostics before and after gpu_burn into the log: nvidia-smi temperature, "
             "performance, power; sensors; nvme and smartctl through `sudo -n` (default: --diag)")
    add("--dry-run", action="store_true", help="print the plan; write and start nothing")
    add("--secret-file", help=argparse.SUPPRESS)
    add_common_options(parser)
    parser.usage = "%(prog)s [options] [-- GPU_BURN_ARGS...]"
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options, then `--` and gpu_burn's own options (which go before its duration). Only
    after `--`: a stray word (an unquoted memo) is an error, not an argument for gpu_burn."""
    if "--" in argv:
        split = argv.index("--")
        argv, gpu_burn_args = argv[:split], argv[split + 1:]
    else:
        gpu_burn_args = []
    args = build_parser().parse_args(argv)
    args.gpu_burn_args = gpu_burn_args
    return args


# --- the plan (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    tag: str
    memo: str
    seconds: float | None = None  # None: not a timed phase


@dataclass(frozen=True)
class Plan:
    run_id: str
    log_path: Path
    status_file: Path
    gpu_burn_dir: Path
    gpu_burn_argv: tuple[str, ...]
    sec: int
    pre_idle: Phase | None
    bench: Phase
    post: Phase
    cooldown: Phase | None
    final: Phase
    final_run_id: str | None
    memo_suffix: str
    english: bool
    diag: bool


def run_stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%d-%H%M%S")


def format_seconds(value: float) -> str:
    """900.0 -> '900', 0.5 -> '0.5': what was typed, so a tmux run gets the same text."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def final_status(args: argparse.Namespace, previous) -> tuple[str, str, str | None]:
    """(tag, memo, run id) of the final phase: what was asked, else the status before the run.

    A `bench` before the run is a run that died without restoring; it is not restored again.
    A restored memo that a previous run wrote (its suffix, its "[bench exit=143]") gets neither
    a second time.
    """
    restore = previous.tag is not None and previous.tag != "bench"
    if args.final_tag is not None:
        tag = args.final_tag
        restored = restore and tag == previous.tag
    else:
        tag = previous.tag if restore else "idle"
        restored = restore
    if args.final_memo is not None:
        memo = args.final_memo
    elif restored and previous.memo:
        memo = previous.memo
        if args.memo_suffix and memo.endswith(args.memo_suffix):
            memo = memo[:-len(args.memo_suffix)]
        memo = _OUTCOME_RE.sub("", memo) or tag
    else:
        memo = tag
    return tag, memo, previous.run_id if restored else None


def build_plan(args: argparse.Namespace, config: Config, previous, now: datetime) -> Plan:
    stamp = run_stamp(now)
    suffix = args.memo_suffix
    gpu_burn_dir = (Path(args.gpu_burn_dir).expanduser().absolute() if args.gpu_burn_dir
                    else config.gpu_burn_dir)
    final_tag, final_memo, final_run_id = final_status(args, previous)

    def phase(name: str, tag: str, memo: str, seconds: float | None = None) -> Phase:
        memo = (memo or tag) + suffix
        try:
            check_memo(memo)
        except StatusError as exc:
            raise StatusError(f"the {name} memo (memo suffix included): {exc}") from None
        return Phase(name, tag, memo, seconds)

    return Plan(
        run_id=f"gpuburn-{stamp}",
        log_path=config.log_dir / f"gpu-burn-{stamp}.log",
        status_file=config.status_file,
        gpu_burn_dir=gpu_burn_dir,
        gpu_burn_argv=("./gpu_burn", *args.gpu_burn_args, str(args.sec)),
        sec=args.sec,
        pre_idle=(phase("pre-idle", "idle", args.pre_idle_memo, args.pre_idle_sec)
                  if args.pre_idle_sec > 0 else None),
        bench=phase("bench", args.pre_tag, args.pre_memo, args.sec),
        post=phase("post", args.post_tag, args.post_memo, config.sample_interval_sec),
        cooldown=(phase("cooldown", "idle", args.cooldown_memo, args.cooldown_sec)
                  if args.cooldown_sec > 0 else None),
        final=phase("final", final_tag, final_memo),
        final_run_id=final_run_id,
        memo_suffix=suffix,
        english=args.english,
        diag=args.diag,
    )


def interrupted_memo(plan: Plan, phase: str, code: int) -> str:
    """The final memo naming where the run ended and how, kept within what read_status keeps."""
    base = plan.final.memo[:len(plan.final.memo) - len(plan.memo_suffix)]
    note = f" [{phase} exit={code}]"
    room = MAX_TEXT_CHARS - len(note) - len(plan.memo_suffix)
    return base[:room] + note + plan.memo_suffix


def diagnostic_commands(nvidia_smi: str, sudo: str, nvme_devices: list[str]) -> list[list[str]]:
    commands = [[nvidia_smi, "-q", "-d", "TEMPERATURE,PERFORMANCE,POWER"], ["sensors"]]
    for device in nvme_devices:
        # Both need root; `sudo -n` fails at once instead of waiting for a password.
        commands.append([sudo, "-n", "nvme", "smart-log", device])
        commands.append([sudo, "-n", "smartctl", "-H", "-A", device])
    return commands


def nvme_controllers() -> list[str]:
    return sorted(str(path) for path in Path("/dev").glob("nvme*")
                  if re.fullmatch(r"nvme\d+", path.name))


def format_plan(plan: Plan, *, gpu_burn_problem: str | None, diag_commands: list[list[str]],
                tmux: list[str] | None) -> str:
    def memo(phase: Phase) -> str:
        return json.dumps(phase.memo, ensure_ascii=False)

    lines = [f"{PROG} plan (dry run: nothing is written or started)",
             f"  run id       {plan.run_id} (a real run takes its own when it starts)",
             f"  status file  {plan.status_file}",
             f"  log          {plan.log_path}",
             f"  gpu_burn     {plan.gpu_burn_dir / 'gpu_burn'}"
             + (f" -- {gpu_burn_problem}" if gpu_burn_problem else ""),
             "  english      " + ("on: LC_ALL=C LANG=C for gpu_burn and diagnostics"
                                  if plan.english else "off"),
             "  diagnostics  " + ("before and after gpu_burn: "
                                  + "; ".join(shlex.join(c) for c in diag_commands)
                                  if plan.diag else "off")]
    pre = plan.pre_idle
    lines.append(f"  1 pre-idle   idle   {memo(pre)} for {format_seconds(pre.seconds)} s"
                 if pre else "  1 pre-idle   skipped (--pre-idle-sec 0)")
    lines.append(f"  2 bench      {plan.bench.tag:<6} {memo(plan.bench)}: "
                 f"{shlex.join(plan.gpu_burn_argv)} in {plan.gpu_burn_dir}")
    lines.append(f"  3 post       {plan.post.tag:<6} {memo(plan.post)} when gpu_burn ends, for "
                 f"at least {format_seconds(plan.post.seconds)} s (SAMPLE_INTERVAL_SEC: one "
                 "sample records it)")
    cool = plan.cooldown
    lines.append(f"  4 cooldown   idle   {memo(cool)} for {format_seconds(cool.seconds)} s"
                 if cool else "  4 cooldown   skipped (--cooldown-sec 0)")
    lines.append(f"  5 final      {plan.final.tag:<6} {memo(plan.final)}, run id "
                 f"{plan.final_run_id or 'null'}; on Ctrl-C, TERM or failure the memo also "
                 "says \"[<phase> exit=<code>]\"")
    if tmux is not None:
        lines.append(f"  tmux         {shlex.join(tmux)}")
    return "\n".join(lines)


# --- tmux ------------------------------------------------------------------------------------


def inner_arguments(args: argparse.Namespace, gpu_burn_dir: Path,
                    secret_file: str | None) -> list[str]:
    """The options of this run, in full and canonical, for the copy started inside tmux.

    Every value goes as --option=VALUE, so a memo that starts with "-" stays a value.
    """
    pairs = [("--sec", str(args.sec)), ("--pre-tag", args.pre_tag),
             ("--pre-memo", args.pre_memo), ("--post-tag", args.post_tag),
             ("--post-memo", args.post_memo),
             ("--pre-idle-sec", format_seconds(args.pre_idle_sec)),
             ("--pre-idle-memo", args.pre_idle_memo),
             ("--cooldown-sec", format_seconds(args.cooldown_sec)),
             ("--cooldown-memo", args.cooldown_memo),
             ("--final-tag", args.final_tag), ("--final-memo", args.final_memo),
             ("--memo-suffix", args.memo_suffix), ("--gpu-burn-dir", str(gpu_burn_dir)),
             ("--env", str(Path(args.env).expanduser().absolute()) if args.env else None),
             ("--secret-file", secret_file)]
    argv = [f"{option}={value}" for option, value in pairs if value is not None]
    argv += ["--english" if args.english else "--no-english",
             "--diag" if args.diag else "--no-diag", "--no-tmux"]
    if args.debug:
        argv.append("--debug")
    return [*argv, "--", *args.gpu_burn_args]


def tmux_command(tmux_bin: str, session: str, cwd: str, caller_env: dict[str, str],
                 inner: list[str]) -> list[str]:
    """`tmux new-session` running bin/run_gpuburn.sh with the caller's configuration.

    A tmux server already running keeps the environment of whoever started it, so each
    configuration key is set (`env KEY=VALUE`) or unset (`env -u KEY`) explicitly. The command
    goes to tmux as separate arguments (tmux >= 3.0 then execs it without any shell, so the
    user's default-shell cannot re-split it); shlex.join shows it.
    PGPASSWORD never goes on an argument list: see start_in_tmux.
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


def _tmux_version_ok(tmux_bin: str) -> tuple[bool, str]:
    try:
        result = subprocess.run([tmux_bin, "-V"], capture_output=True, text=True, timeout=10,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    text = (result.stdout or result.stderr).strip()
    match = re.search(r"(\d+)\.(\d+)", text)
    return (match is None or (int(match[1]), int(match[2])) >= (3, 0)), text


def _attach_hint(tmux_bin: str, session: str) -> str:
    if os.environ.get("TMUX"):
        return f"switch to it: {shlex.join([tmux_bin, 'switch-client', '-t', session])}"
    return f"attach: {shlex.join([tmux_bin, 'attach', '-t', session])} (detach again: Ctrl-b d)"


def _write_secret_file(secrets: dict[str, str]) -> str:
    """A private file (mode 600) the run inside tmux reads and deletes at once."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = runtime if runtime and os.path.isdir(runtime) else None
    fd, name = tempfile.mkstemp(prefix="run_gpuburn-", suffix=".secret", dir=folder)
    with os.fdopen(fd, "w") as handle:
        json.dump(secrets, handle)
    return name


def read_secret_file(name: str) -> None:
    path = Path(name)
    try:
        secrets = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BurnError(f"cannot read the private configuration file {path}: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    for key in SECRET_KEYS:
        if isinstance(secrets.get(key), str):
            os.environ[key] = secrets[key]


def start_in_tmux(args: argparse.Namespace, plan: Plan, caller_env: dict[str, str]) -> int:
    """Start this run detached in a new tmux session; refuse when the session exists.

    PGPASSWORD, when the caller has it, is written to a private temporary file (mode 600, in
    XDG_RUNTIME_DIR when there is one) whose name goes on the command line; the run inside
    tmux reads and deletes it first thing. Neither `env PGPASSWORD=...` nor `tmux -e` would
    keep it off the argument lists that `ps` shows.
    """
    tmux_bin = os.environ.get("TMUX_BIN") or "tmux"
    if shutil.which(tmux_bin) is None:
        raise BurnError(f"{tmux_bin} not found: install tmux (apt-get install tmux) or run "
                        "without --tmux")
    ok, version = _tmux_version_ok(tmux_bin)
    if not ok:
        raise BurnError(f"--tmux needs tmux 3.0 or newer, found {version!r}; start tmux "
                        "yourself and run without --tmux inside it")
    session = args.tmux_session
    exists = subprocess.run([tmux_bin, "has-session", "-t", f"={session}"],
                            capture_output=True, timeout=10, check=False).returncode == 0
    if exists:
        raise BurnError(f"tmux session {session!r} already exists (a run in progress?): "
                        f"{_attach_hint(tmux_bin, session)}, or choose another --tmux-session")
    secrets = {key: caller_env[key] for key in SECRET_KEYS if key in caller_env}
    secret_file = _write_secret_file(secrets) if secrets else None
    try:
        command = tmux_command(tmux_bin, session, os.getcwd(), caller_env,
                               inner_arguments(args, plan.gpu_burn_dir, secret_file))
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
    print(f"{PROG}: started in tmux session {session!r}; {_attach_hint(tmux_bin, session)}; "
          f"log: {plan.log_path.parent}/gpu-burn-*.log")
    return 0


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


# --- the run (I/O) ---------------------------------------------------------------------------


def find_gpu_burn(gpu_burn_dir: Path) -> str | None:
    """None when gpu_burn is there and executable, else what is wrong and how to fix it."""
    path = gpu_burn_dir / "gpu_burn"
    hint = BUILD_HINT.format(dir=shlex.quote(str(gpu_burn_dir)))
    if not path.is_file():
        return f"gpu_burn not found at {path}: {hint}"
    if not os.access(path, os.X_OK):
        return f"{path} is not executable: chmod +x it or rebuild it with make"
    return None


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _signal_exit(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Runner:
    def __init__(self, plan: Plan, config: Config, passed: list[str]):
        self.plan = plan
        self.config = config
        self.passed = passed
        self.phase = "start"
        self.stopping = False
        self.process: subprocess.Popen | None = None
        self.log = None

    # output: every line to stdout (the terminal or tmux pane) and to the log

    def _emit(self, data: bytes) -> None:
        if self.log is not None:
            self.log.write(data)
            self.log.flush()
        with contextlib.suppress(OSError, ValueError):  # a closed terminal must not stop a run
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    def say(self, text: str) -> None:
        self._emit(f"[{_now_text()}] {text}\n".encode())

    def _on_signal(self, signum, _frame) -> None:
        if self.stopping:  # already finishing: let the final status be written
            return
        self.stopping = True
        raise Stopped(signum)

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.plan.english:
            env.update(ENGLISH_ENV)
        return env

    def enter(self, phase: Phase, run_id: str | None) -> None:
        self.phase = phase.name
        document = write_status(self.plan.status_file, phase.tag, phase.memo, run_id=run_id,
                                keep_run_id=False)
        duration = (f" for {'at least ' if phase.name == 'post' else ''}"
                    f"{format_seconds(phase.seconds)} s" if phase.seconds else "")
        self.say(f"phase {phase.name}{duration}: status {json.dumps(document, ensure_ascii=False)}")

    def _open_log(self) -> None:
        path = self.plan.log_path
        # Two runs started in the same second get log files of their own.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for n in range(1, 100):
                candidate = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
                with contextlib.suppress(FileExistsError):
                    self.log = candidate.open("xb")
                    self.log_path = candidate
                    return
        except OSError as exc:
            raise BurnError(f"cannot create the log {path}: {exc.strerror or exc}",
                            exit_code=EXIT_IO) from None
        raise BurnError(f"cannot find a free log file name next to {path}", exit_code=EXIT_IO)

    def run(self) -> int:
        self._open_log()  # before anything changes: a run that cannot log does not start
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            code = self._phases()
        except Stopped as stop:
            self.stopping = True
            code = 128 + stop.signum
            self.say(f"{stop} during {self.phase}: stopping")
            self._finish(code, self.phase)
            return code
        except TelemetryError as exc:
            self.stopping = True
            self.say(f"{PROG}: {exc}")
            self._finish(exc.exit_code, self.phase)
            raise
        except BaseException:
            self.stopping = True
            self._finish(EXIT_SOFTWARE, self.phase)
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.stopping = True
        self._finish(code, "bench" if code else None)
        return code

    def _phases(self) -> int:
        plan = self.plan
        self._header()
        if plan.pre_idle:
            self.enter(plan.pre_idle, plan.run_id)
            time.sleep(plan.pre_idle.seconds)
        if plan.diag:
            self.phase = "diagnostics"
            self.diagnostics("before")
        self.enter(plan.bench, plan.run_id)
        code = self.run_gpu_burn()
        self.enter(plan.post, plan.run_id)
        post_started = time.monotonic()
        if plan.diag:
            self.diagnostics("after")
        # A status that lasts a millisecond is never sampled: post stays one sample interval.
        time.sleep(max(0.0, plan.post.seconds - (time.monotonic() - post_started)))
        if plan.cooldown:
            self.enter(plan.cooldown, plan.run_id)
            time.sleep(plan.cooldown.seconds)
        return code

    def _report(self, text: str) -> None:
        """A line for the log only (details the terminal does not need)."""
        if self.log is not None:
            self.log.write(f"[{_now_text()}] {text}\n".encode())
            self.log.flush()

    def _finish(self, code: int, failed_phase: str | None) -> None:
        self._stop_gpu_burn()
        final = self.plan.final
        if failed_phase is not None:
            final = Phase(final.name, final.tag, interrupted_memo(self.plan, failed_phase, code))
        try:
            self.enter(final, self.plan.final_run_id)
        except TelemetryError as exc:
            self.say(f"final status not written: {exc}")
            print(f"{PROG}: final status not written: {exc}", file=sys.stderr)
        self.say(f"run {self.plan.run_id} ended with exit {code}"
                 + (f" ({failed_phase})" if failed_phase else ""))
        if self.log is not None:
            self.log.close()

    def _header(self) -> None:
        plan = self.plan
        self.say(f"{PROG}: run {plan.run_id}, log {self.log_path}")
        self.say(f"status file {plan.status_file}; gpu_burn in {plan.gpu_burn_dir}; "
                 f"english {'on' if plan.english else 'off'}; diagnostics "
                 f"{'on' if plan.diag else 'off'}; memo suffix {plan.memo_suffix!r}")
        for key in self.passed:
            self.say(f"configuration: {key} received from the caller through a private file")

    # gpu_burn

    def run_gpu_burn(self) -> int:
        plan = self.plan
        self.say(f"running {shlex.join(plan.gpu_burn_argv)} in {plan.gpu_burn_dir}")
        started = time.monotonic()
        deadline = started + plan.sec * (1 + HANG_GRACE_FRACTION) + HANG_GRACE_SEC
        try:
            # A process group of its own: Ctrl-C reaches only this runner, which then stops
            # gpu_burn and the per-GPU processes it forks, together.
            self.process = subprocess.Popen(
                plan.gpu_burn_argv, cwd=plan.gpu_burn_dir, env=self._child_env(),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                process_group=0)
        except OSError as exc:
            raise BurnError(f"cannot start {plan.gpu_burn_dir / 'gpu_burn'}: {exc.strerror}",
                            exit_code=EXIT_GPU_BURN_MISSING) from None
        process = self.process
        fd = process.stdout.fileno()
        while True:
            if time.monotonic() > deadline:
                self.say(f"gpu_burn still running {time.monotonic() - started:.0f} s after it "
                         f"started with {plan.sec} s: hung, killing it")
                self._stop_gpu_burn()
                return EXIT_HUNG
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._emit(chunk)
            elif process.poll() is not None:
                break  # exited; something it started may still hold the pipe
        self._drain(0.5)
        try:
            returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.say("gpu_burn closed its output but did not exit: killing it")
            self._stop_gpu_burn()
            return EXIT_HUNG
        self.process = None
        process.stdout.close()
        code = _signal_exit(returncode)
        self.say(f"gpu_burn exited with {code} after {time.monotonic() - started:.1f} s")
        return code

    def _drain(self, timeout_sec: float) -> None:
        process = self.process
        if process is None or process.stdout is None or process.stdout.closed:
            return
        fd = process.stdout.fileno()
        deadline = time.monotonic() + timeout_sec
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            self._emit(chunk)

    def _stop_gpu_burn(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            self.say(f"stopping gpu_burn (process group {process.pid})")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=KILL_GRACE_SEC)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
        self.process = process
        self._drain(0.5)
        self.process = None
        if process.stdout is not None:
            process.stdout.close()
        if process.returncode is not None:
            self.say(f"gpu_burn ended with {_signal_exit(process.returncode)}")
        else:
            self.say("gpu_burn did not end even after SIGKILL (stuck in the driver?)")

    # diagnostics

    def diagnostics(self, when: str) -> None:
        devices = nvme_controllers()
        commands = diagnostic_commands(self.config.nvidia_smi, os.environ.get("SUDO") or "sudo",
                                       devices)
        failed = sum(not self._diagnostic(when, argv) for argv in commands)
        if not devices:
            self._report(f"diagnostics {when}: no NVMe controller under /dev, nvme and smartctl "
                         "not run")
        self.say(f"diagnostics {when}: {len(commands) - failed} of {len(commands)} commands "
                 "answered (details in the log)")

    def _diagnostic(self, when: str, argv: list[str]) -> bool:
        title = f"--- diagnostics {when}: {shlex.join(argv)}"
        tools = argv[:1] if argv[1:2] != ["-n"] else [argv[0], argv[2]]
        missing = [tool for tool in tools if shutil.which(tool) is None]
        if missing:
            self._report(f"{title}: not run, {' and '.join(missing)} not found")
            return False
        timeout = (self.config.nvidia_smi_timeout_sec if argv[0] == self.config.nvidia_smi
                   else DIAG_TIMEOUT_SEC)
        started = time.monotonic()
        process = subprocess.Popen(argv, env=self._child_env(), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   process_group=0)
        try:
            output, _ = process.communicate(timeout=timeout)
            note = f"exit {process.returncode}"
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            note = f"timed out after {timeout:g} s"
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        self._report(f"{title} ({note}, {time.monotonic() - started:.1f} s)")
        if self.log is not None:
            self.log.write(output if output.endswith(b"\n") or not output else output + b"\n")
            self.log.flush()
        return process.returncode == 0


# --- entry -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    caller_env = dict(os.environ)  # before .env is merged in: what a tmux run must be given
    args = parse_args(sys.argv[1:] if argv is None else list(argv))

    def body() -> int:
        passed = []
        if args.secret_file:
            read_secret_file(args.secret_file)
            passed = [key for key in SECRET_KEYS if key in os.environ]
        config = load_config(args.env)
        previous, _warning = read_status(config.status_file)
        plan = build_plan(args, config, previous, datetime.now(UTC))
        problem = find_gpu_burn(plan.gpu_burn_dir)
        if args.dry_run:
            tmux = None
            if args.tmux:
                secret = "<private file>" if any(k in caller_env for k in SECRET_KEYS) else None
                tmux = tmux_command(os.environ.get("TMUX_BIN") or "tmux", args.tmux_session,
                                    os.getcwd(), caller_env,
                                    inner_arguments(args, plan.gpu_burn_dir, secret))
            sudo = os.environ.get("SUDO") or "sudo"
            print(format_plan(plan, gpu_burn_problem=problem, tmux=tmux,
                              diag_commands=diagnostic_commands(config.nvidia_smi, sudo,
                                                                nvme_controllers())))
            return 0
        if problem:
            raise BurnError(problem, exit_code=EXIT_GPU_BURN_MISSING)
        if args.tmux:
            return start_in_tmux(args, plan, caller_env)
        return Runner(plan, config, passed).run()

    return run(body, debug=args.debug, program=PROG)


if __name__ == "__main__":
    raise SystemExit(main())
