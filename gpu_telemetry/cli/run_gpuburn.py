"""bin/run_gpuburn.sh: the command line of a gpu-burn run (gpu_telemetry.ops.gpuburn).

Options, then `--` and gpu_burn's own options. The run inside tmux (--tmux) is started with
this very argument list minus the tmux options, so an option added here needs no other edit
to reach it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import fields
from datetime import UTC, datetime

from gpu_telemetry.cli.common import OneLineParser, add_common_options, run
from gpu_telemetry.config import load_config
from gpu_telemetry.ops.gpuburn import tmux
from gpu_telemetry.ops.gpuburn.plan import (
    EXIT_GPU_BURN_MISSING,
    PROG,
    BurnError,
    BurnOptions,
    build_plan,
    format_plan,
)
from gpu_telemetry.ops.gpuburn.runner import (
    HANG_GRACE_SEC,
    Runner,
    find_gpu_burn,
    host_diagnostics,
)
from gpu_telemetry.ops.status import read_status
from gpu_telemetry.tags import TAGS

DEFAULTS = BurnOptions()


def _finite_seconds(text: str) -> float:
    """The number of seconds an option gives: any finite number, fractions allowed; the
    options' own bounds are checked by their types below."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds")
    return value


def _phase_seconds(text: str) -> float:
    """An idle phase's length: zero or more seconds, 0 skipping the phase."""
    value = _finite_seconds(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative: give zero or more seconds "
                                         "(0 skips the phase)")
    return value


def _whole_seconds(text: str) -> int:
    """gpu_burn reads its duration with atoi(): whole seconds, more than zero."""
    value = _finite_seconds(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds (gpu_burn "
                                         "reads whole seconds)")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is {'negative' if value < 0 else 'zero'}: "
                                         "gpu_burn needs 1 second or more")
    return int(value)


def _tag(text: str) -> str:
    if text not in TAGS:
        raise argparse.ArgumentTypeError(f"unknown tag {text!r}: use one of {', '.join(TAGS)}")
    return text


def _session(text: str) -> str:
    # tmux turns "." and ":" into "_" in session names, and a target needs neither.
    if not tmux.SESSION_RE.fullmatch(text):
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
Options are spelled out in full (no abbreviations). --tmux-session goes with --tmux: alone it
is refused (exit 2).
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
    # No abbreviations: the run inside tmux drops --tmux and --tmux-session by their full
    # names (ops/gpuburn/tmux.py), and `--tmux-s x` would slip through.
    parser = OneLineParser(
        prog=PROG, epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        description="Run gpu_burn through the phases pre-idle, bench, post, cooldown and final, "
                    "writing each phase to status.json so the collected samples carry it.")
    add = parser.add_argument
    add("--sec", type=_whole_seconds, default=DEFAULTS.sec, metavar="SEC",
        help=f"gpu_burn duration, whole seconds (default: {DEFAULTS.sec})")
    add("--pre-tag", type=_tag, default=DEFAULTS.pre_tag, metavar="TAG",
        help=f"tag while gpu_burn runs (default: {DEFAULTS.pre_tag})")
    add("--pre-memo", default=DEFAULTS.pre_memo, metavar="MEMO",
        help=f"memo while gpu_burn runs (default: {DEFAULTS.pre_memo!r})")
    add("--post-tag", type=_tag, default=DEFAULTS.post_tag, metavar="TAG",
        help="tag written when gpu_burn ends, kept for the diagnostics after and at least "
             f"SAMPLE_INTERVAL_SEC so a sample records it (default: {DEFAULTS.post_tag})")
    add("--post-memo", default=DEFAULTS.post_memo, metavar="MEMO",
        help=f"memo written when gpu_burn ends (default: {DEFAULTS.post_memo!r})")
    add("--pre-idle-sec", type=_phase_seconds, default=DEFAULTS.pre_idle_sec, metavar="SEC",
        help="idle baseline before gpu_burn, fractions allowed; 0 skips it (default: 0)")
    add("--pre-idle-memo", default=DEFAULTS.pre_idle_memo, metavar="MEMO",
        help=f"memo of the idle baseline (default: {DEFAULTS.pre_idle_memo!r})")
    add("--cooldown-sec", type=_phase_seconds, default=DEFAULTS.cooldown_sec, metavar="SEC",
        help="idle cooldown after gpu_burn, fractions allowed; 0 skips it (default: 0)")
    add("--cooldown-memo", default=DEFAULTS.cooldown_memo, metavar="MEMO",
        help=f"memo of the cooldown (default: {DEFAULTS.cooldown_memo!r})")
    add("--final-tag", type=_tag, metavar="TAG",
        help="tag written at the end and on any exit (default: the tag status.json had before "
             "the run; idle when it had none or had bench)")
    add("--final-memo", metavar="MEMO",
        help="memo written at the end (default: the restored memo, else the final tag)")
    add("--memo-suffix", default=DEFAULTS.memo_suffix, metavar="TEXT",
        help="appended to every memo written during the run, e.g. ' fan=25%%' (default: none)")
    add("--gpu-burn-dir", metavar="DIR",
        help="folder holding the built gpu_burn (default: GPU_BURN_DIR, ~/projects/gpu-burn)")
    add("--tmux", action=argparse.BooleanOptionalAction, default=False,
        help="run detached in a new tmux session (default: --no-tmux)")
    add("--tmux-session", type=_session, metavar="NAME",
        help=f"tmux session name, with --tmux only (default: {tmux.DEFAULT_SESSION}); an "
             "existing one is refused")
    add("--english", action=argparse.BooleanOptionalAction, default=DEFAULTS.english,
        help="LC_ALL=C LANG=C for gpu_burn and diagnostics (default: --english)")
    add("--diag", action=argparse.BooleanOptionalAction, default=DEFAULTS.diag,
        help="diagnostics before and after gpu_burn into the log: nvidia-smi temperature, "
             "performance, power; sensors; nvme and smartctl through `sudo -n` (default: --diag)")
    add("--dry-run", action="store_true", help="print the plan; write and start nothing")
    add(tmux.SECRET_OPTION, help=argparse.SUPPRESS)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tmux_session is not None and not args.tmux:
        parser.error("--tmux-session goes with --tmux: add --tmux to run detached")
    args.tmux_session = args.tmux_session or tmux.DEFAULT_SESSION
    args.gpu_burn_args = tuple(gpu_burn_args)
    return args


def burn_options(args: argparse.Namespace) -> BurnOptions:
    return BurnOptions(**{field.name: getattr(args, field.name) for field in fields(BurnOptions)})


def main(argv: list[str] | None = None) -> int:
    caller_env = dict(os.environ)  # before .env is merged in: what a tmux run must be given
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)

    def body() -> int:
        received = tmux.read_secret_file(args.secret_file) if args.secret_file else []
        config = load_config(args.env)
        previous, _warning = read_status(config.status_file)
        plan = build_plan(burn_options(args), config, previous, datetime.now(UTC))
        problem = find_gpu_burn(plan.gpu_burn_dir)
        if args.dry_run:
            command = (tmux.dry_run_command(argv, args.tmux_session, caller_env)
                       if args.tmux else None)
            print(format_plan(plan, gpu_burn_problem=problem, tmux=command,
                              diag_commands=host_diagnostics(config)))
            return 0
        if problem:
            raise BurnError(problem, exit_code=EXIT_GPU_BURN_MISSING)
        if args.tmux:
            return tmux.start_in_tmux(argv, args.tmux_session, plan.log_path.parent, caller_env)
        return Runner(plan, config, received).run()

    return run(body, debug=args.debug, program=PROG)


if __name__ == "__main__":
    raise SystemExit(main())
