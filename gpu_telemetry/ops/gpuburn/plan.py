"""The plan of a gpu-burn run, pure: options and the status before the run -> the phases with
their tags and memos, the run id, the log name, gpu_burn's argument list; and the plan in words
(--dry-run). Nothing here reads a file, starts a process or looks at the clock."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gpu_telemetry.config import Config
from gpu_telemetry.errors import StatusError, TelemetryError
from gpu_telemetry.ops.status import MAX_TEXT_CHARS, Status, check_memo
from gpu_telemetry.tags import BENCH, IDLE

PROG = "run_gpuburn.sh"
EXIT_FAILED = 1
EXIT_GPU_BURN_MISSING = 127
EXIT_HUNG = 124
# What a previous run appended to the final memo when it ended early: " [bench exit=143]".
_OUTCOME_RE = re.compile(r" \[[a-z-]+ exit=\d+\]")


class BurnError(TelemetryError):
    exit_code = EXIT_FAILED

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        self.exit_code = exit_code
        super().__init__(message)


@dataclass(frozen=True)
class BurnOptions:
    """What the command line asks of a run (the defaults are the command's)."""

    sec: int = 600
    pre_tag: str = BENCH
    pre_memo: str = "gpu-burn"
    post_tag: str = IDLE
    post_memo: str = "post gpu-burn idle"
    pre_idle_sec: float = 0.0
    pre_idle_memo: str = "pre gpu-burn idle (baseline)"
    cooldown_sec: float = 0.0
    cooldown_memo: str = "cooldown idle (post gpu-burn)"
    final_tag: str | None = None
    final_memo: str | None = None
    memo_suffix: str = ""
    gpu_burn_dir: str | None = None
    english: bool = True
    diag: bool = True
    gpu_burn_args: tuple[str, ...] = ()


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
    """900.0 -> '900', 0.5 -> '0.5'."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def final_status(options: BurnOptions, previous: Status) -> tuple[str, str, str | None]:
    """(tag, memo, run id) of the final phase: what was asked, else the status before the run.

    A `bench` before the run is a run that died without restoring; it is not restored again.
    A restored memo that a previous run wrote (its suffix, its "[bench exit=143]") gets neither
    a second time.
    """
    restore = previous.tag is not None and previous.tag != BENCH
    if options.final_tag is not None:
        tag = options.final_tag
        restored = restore and tag == previous.tag
    else:
        tag = previous.tag if restore else IDLE
        restored = restore
    if options.final_memo is not None:
        memo = options.final_memo
    elif restored and previous.memo:
        memo = previous.memo
        if options.memo_suffix and memo.endswith(options.memo_suffix):
            memo = memo[:-len(options.memo_suffix)]
        memo = _OUTCOME_RE.sub("", memo) or tag
    else:
        memo = tag
    return tag, memo, previous.run_id if restored else None


def build_plan(options: BurnOptions, config: Config, previous: Status, now: datetime) -> Plan:
    """The whole run; StatusError (exit 2) when a memo with its suffix is one status.json
    refuses, before anything is written."""
    stamp = run_stamp(now)
    suffix = options.memo_suffix
    gpu_burn_dir = (Path(options.gpu_burn_dir).expanduser().absolute() if options.gpu_burn_dir
                    else config.gpu_burn_dir)
    final_tag, final_memo, final_run_id = final_status(options, previous)

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
        gpu_burn_argv=("./gpu_burn", *options.gpu_burn_args, str(options.sec)),
        sec=options.sec,
        pre_idle=(phase("pre-idle", IDLE, options.pre_idle_memo, options.pre_idle_sec)
                  if options.pre_idle_sec > 0 else None),
        bench=phase("bench", options.pre_tag, options.pre_memo, options.sec),
        post=phase("post", options.post_tag, options.post_memo, config.sample_interval_sec),
        cooldown=(phase("cooldown", IDLE, options.cooldown_memo, options.cooldown_sec)
                  if options.cooldown_sec > 0 else None),
        final=phase("final", final_tag, final_memo),
        final_run_id=final_run_id,
        memo_suffix=suffix,
        english=options.english,
        diag=options.diag,
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
