"""bin/run_gpuburn.sh: the phases in status.json, the log, signals, tmux; with a gpu_burn
stand-in that heats the nvidia-smi stand-in while it runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpu_telemetry.cli import run_gpuburn as cli
from gpu_telemetry.ops.gpuburn import plan as burn_plan
from gpu_telemetry.ops.gpuburn import runner
from gpu_telemetry.ops.gpuburn import tmux as burn_tmux
from gpu_telemetry.ops.status import Status
from tests.helpers import REPO_ROOT, STAND_IN, base_env

RUN_GPUBURN = REPO_ROOT / "bin" / "run_gpuburn.sh"
GPU_BURN_STAND_IN = REPO_ROOT / "tests" / "stand_ins" / "gpu_burn"
RUN_ID_RE = re.compile(r"gpuburn-\d{8}-\d{6}")
PHASE_RE = re.compile(r"\] phase (\S+)(?: for [^:]+ s)?: status (\{.*\})$", re.M)
SUFFIX = " fan=25%"
ODD_MEMO = """he said "hi" & it's  two  spaces $HOME `date` \\n"""


@pytest.fixture
def burn_env(tmp_path) -> dict[str, str]:
    """The stand-ins in place, and nothing that could reach real sudo, tmux or gpu_burn."""
    burn_dir = tmp_path / "gpu-burn"
    burn_dir.mkdir()
    shutil.copy(GPU_BURN_STAND_IN, burn_dir / "gpu_burn")
    (tmp_path / "empty.env").touch()
    return base_env(tmp_path, None, fixture="rtx-3080-v13.xml",
                    GPU_BURN_DIR=str(burn_dir),
                    NVSMI_STANDIN_HEAT_FILE=str(tmp_path / "heat"),
                    SUDO=str(tmp_path / "no-sudo"),
                    TMUX_TMPDIR=str(tmp_path / "no-tmux"),
                    SAMPLE_INTERVAL_SEC="0.3")  # how long post lasts at least


def burn_command(tmp_path: Path, *args: str) -> list[str]:
    return ["bash", str(RUN_GPUBURN), "--env", str(tmp_path / "empty.env"), *args]


def run_burn(tmp_path: Path, env: dict, *args: str,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(burn_command(tmp_path, *args), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout, check=False)


def status(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "status.json").read_text())


def log_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "logs").glob("gpu-burn-*.log"))


def phases(log_text: str) -> list[tuple[str, dict]]:
    """(phase, status.json as written) for each phase, in the order the log tells."""
    return [(name, json.loads(doc)) for name, doc in PHASE_RE.findall(log_text)]


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def current_tag(tmp_path: Path) -> str | None:
    try:
        return status(tmp_path)["tag"]
    except (OSError, ValueError):
        return None


def test_the_whole_run_goes_through_every_phase_and_bench_reads_hotter(tmp_path, burn_env):
    """What the collector sees: a sample loop beside the run (collect_once.py --dry-run)."""
    (tmp_path / "status.json").write_text('{"tag": "prod", "memo": "inference"}')
    run = subprocess.Popen(
        burn_command(tmp_path, "--pre-idle-sec", "0.8", "--sec", "2", "--cooldown-sec", "0.8",
                     "--memo-suffix", SUFFIX, "--final-tag", "prod",
                     "--final-memo", "prod (normal usage)"),
        env=burn_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    while run.poll() is None:
        sample = subprocess.run(
            [sys.executable, str(REPO_ROOT / "bin" / "collect_once.py"), "--dry-run",
             "--env", str(tmp_path / "empty.env")],
            env=burn_env, cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
        if sample.returncode == 0:
            samples.append(json.loads(sample.stdout))
    stdout, stderr = run.communicate()
    assert run.returncode == 0, stderr

    [log] = log_files(tmp_path)
    log_text = log.read_text()
    written = phases(log_text)
    assert [name for name, _ in written] == ["pre-idle", "bench", "post", "cooldown", "final"]
    assert [doc["tag"] for _, doc in written] == ["idle", "bench", "idle", "idle", "prod"]
    assert [doc["memo"] for _, doc in written] == [
        "pre gpu-burn idle (baseline)" + SUFFIX, "gpu-burn" + SUFFIX,
        "post gpu-burn idle" + SUFFIX, "cooldown idle (post gpu-burn)" + SUFFIX,
        "prod (normal usage)" + SUFFIX]
    run_ids = {doc["run_id"] for _, doc in written[:-1]}
    assert len(run_ids) == 1 and RUN_ID_RE.fullmatch(run_id := run_ids.pop())
    assert log.name == f"gpu-burn-{run_id.removeprefix('gpuburn-')}.log"
    assert written[-1][1]["run_id"] is None
    assert status(tmp_path) == written[-1][1]

    # gpu_burn's own output, in the log and on the terminal; diagnostics in the log
    for text in (log_text, stdout):
        assert "Burning for 2 seconds." in text and "\tGPU 0: OK" in text
    assert "diagnostics before" in log_text and "diagnostics after" in log_text
    assert "-q -d TEMPERATURE,PERFORMANCE,POWER" in log_text
    assert "not run, " in log_text  # sudo (a missing stand-in here) only noted
    assert "phase post for at least 0.3 s" in log_text
    assert not (tmp_path / "heat").exists()

    # every sample in the run carries the run id; the bench ones are hotter, with the suffix
    in_run = [s for s in samples if s["run_id"] == run_id]
    bench = [s for s in in_run if s["status_tag"] == "bench"]
    idle = [s for s in in_run if s["status_tag"] == "idle"]
    assert bench and idle, [(s["status_tag"], s["status_memo"]) for s in samples]
    assert all(s["status_memo"] == "gpu-burn" + SUFFIX for s in bench)
    assert all(s["status_memo"].endswith(SUFFIX) for s in in_run)
    # A sample reads status.json and nvidia-smi one after the other, so one taken right at a
    # boundary (gpu_burn starting or ending between the two) may mix them: most, not all.
    cold_c = min(s["gpus"][0]["temp_c"] for s in samples)

    def hot(sample) -> bool:
        return sample["gpus"][0]["temp_c"] >= cold_c + 25

    assert sum(map(hot, bench)) > len(bench) / 2, [s["gpus"][0]["temp_c"] for s in bench]
    assert sum(map(hot, idle)) < len(idle) / 2, [s["gpus"][0]["temp_c"] for s in idle]


def test_gpu_burn_failing_is_the_exit_status_and_named_in_the_final_memo(tmp_path, burn_env):
    burn_env["GPU_BURN_STANDIN_EXIT"] = "3"
    result = run_burn(tmp_path, burn_env, "--sec", "1", "--cooldown-sec", "0.2", "--no-diag",
                      "--memo-suffix", SUFFIX)
    assert result.returncode == 3, result.stderr
    [log] = log_files(tmp_path)
    log_text = log.read_text()
    assert "GPU 0: FAULTY" in log_text and "gpu_burn exited with 3" in log_text
    # the cooldown of a faulty GPU is still recorded
    assert [name for name, _ in phases(log_text)] == ["bench", "post", "cooldown", "final"]
    final = status(tmp_path)
    assert final["tag"] == "idle" and final["memo"] == "idle [bench exit=3]" + SUFFIX


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_bench_stops_gpu_burn_and_writes_the_final_status(
        tmp_path, burn_env, signum, code):
    run = subprocess.Popen(
        burn_command(tmp_path, "--sec", "60", "--no-diag", "--final-tag", "prod",
                     "--final-memo", "prod (normal usage)", "--memo-suffix", SUFFIX),
        env=burn_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "heat").exists() and current_tag(tmp_path) == "bench",
                 what="bench")
        stand_in_pid = int(wait_for(lambda: (tmp_path / "heat").read_text().split()[1:],
                                    what="the heat file")[0])
        started = time.monotonic()
        run.send_signal(signum)
        run.communicate(timeout=20)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == code
    assert time.monotonic() - started < 10
    final = status(tmp_path)
    assert final == {**final, "tag": "prod", "run_id": None,
                     "memo": f"prod (normal usage) [bench exit={code}]{SUFFIX}"}
    assert not (tmp_path / "heat").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(stand_in_pid, 0)
    [log] = log_files(tmp_path)
    assert f"{signal.Signals(signum).name} during bench" in log.read_text()


@pytest.mark.parametrize(("option", "expected"), [("--english", "LC_ALL=C LANG=C"),
                                                   ("--no-english", "LC_ALL=de_DE.UTF-8 "
                                                    "LANG=de_DE.UTF-8")])
def test_english_output_is_asked_of_gpu_burn(tmp_path, burn_env, option, expected):
    seen = tmp_path / "locale"
    gpu_burn = tmp_path / "gpu-burn" / "gpu_burn"
    gpu_burn.write_text(f'#!/bin/sh\necho "LC_ALL=$LC_ALL LANG=$LANG" >{seen}\n')
    burn_env.update(LC_ALL="de_DE.UTF-8", LANG="de_DE.UTF-8")
    result = run_burn(tmp_path, burn_env, "--sec", "1", "--no-diag", option)
    assert result.returncode == 0, result.stderr
    assert seen.read_text().strip() == expected


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, burn_env):
    burn_env["PGPASSWORD"] = "s3cret-pw"
    result = run_burn(tmp_path, burn_env, "--dry-run", "--pre-idle-sec", "180", "--sec", "900",
                      "--cooldown-sec", "600", "--pre-memo", ODD_MEMO, "--memo-suffix", SUFFIX,
                      "--tmux", "--", "-d", "-tc")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ("1 pre-idle   idle", "for 180 s", "2 bench      bench",
                     "./gpu_burn -d -tc 900", "3 post       idle", "4 cooldown   idle",
                     "for 600 s", "5 final      idle", json.dumps(ODD_MEMO + SUFFIX),
                     "tmux new-session -d -s gpuburn", "'--secret-file=<private file>'"):
        assert expected in out, expected
    assert "s3cret-pw" not in out
    assert not (tmp_path / "status.json").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("args", [["--sec", "abc"], ["--sec", "-1"], ["--sec", "0"],
                                  ["--sec", "1.5"], ["--sec", "inf"], ["--pre-idle-sec", "x"],
                                  ["--cooldown-sec", "-2"], ["--cooldown-sec", "nan"],
                                  ["--pre-tag", "busy"], ["--final-tag", ""],
                                  ["--tmux-session", "a:b"], ["--pre-memo", "gpu", "burn"],
                                  ["--bogus"]])
def test_bad_options_are_one_line_and_exit_2(args, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(args)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("run_gpuburn.sh: "), err


@pytest.mark.parametrize(("args", "says"), [
    (["--sec", "abc"], "argument --sec: 'abc' is not a number of seconds"),
    (["--sec", "1.5"], "argument --sec: '1.5' is not a whole number of seconds"),
    (["--sec", "0"], "argument --sec: '0' is zero: gpu_burn needs 1 second or more"),
    (["--sec", "-5"], "argument --sec: '-5' is negative: gpu_burn needs 1 second or more"),
    (["--sec", "inf"], "argument --sec: 'inf' is not a finite number of seconds"),
    (["--pre-idle-sec", "-2"], "argument --pre-idle-sec: '-2' is negative: give zero or more "
                               "seconds"),
    (["--cooldown-sec", "nan"], "argument --cooldown-sec: 'nan' is not a finite number"),
    (["--pre-tag", "busy"], "argument --pre-tag: unknown tag 'busy': use one of idle, prod, "
                            "bench"),
    (["--tmux-session", "a:b"], "argument --tmux-session: 'a:b': use 1-64 letters"),
])
def test_a_bad_value_is_named_with_what_is_wrong_with_it(args, says, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(args)
    assert caught.value.code == 2
    assert says in capsys.readouterr().err


def test_the_diagnostics_are_answered(tmp_path, burn_env):
    """nvidia-smi (the stand-in, in the real tool's text format) and sensors answer; NVMe
    controllers, where the host has any, need a sudo that is not there."""
    tools = tmp_path / "tools"
    tools.mkdir()
    sensors = tools / "sensors"
    sensors.write_text('#!/bin/sh\necho "coretemp-isa-0000"\necho "Package id 0:  +45.0 C"\n')
    sensors.chmod(0o755)
    burn_env["PATH"] = f"{tools}{os.pathsep}{burn_env['PATH']}"
    result = run_burn(tmp_path, burn_env, "--sec", "1")
    assert result.returncode == 0, result.stderr
    [log] = log_files(tmp_path)
    log_text = log.read_text()
    total = 2 + 2 * len(runner.nvme_controllers())
    for when in ("before", "after"):
        assert f"diagnostics {when}: 2 of {total} commands answered" in log_text
        assert re.search(rf"--- diagnostics {when}: \S*nvidia-smi -q -d "
                         r"TEMPERATURE,PERFORMANCE,POWER \(exit 0, ", log_text), log_text
    for line in ("        GPU Current Temp", "    Clocks Event Reasons", "    GPU Power Readings",
                 "Package id 0:  +45.0 C"):
        assert line in log_text, line


def test_a_bad_number_through_the_script_changes_nothing(tmp_path, burn_env):
    result = run_burn(tmp_path, burn_env, "--sec", "abc")
    assert result.returncode == 2
    assert result.stderr.strip() == ("run_gpuburn.sh: argument --sec: 'abc' is not a number of "
                                     "seconds (see --help)")
    assert not (tmp_path / "status.json").exists() and not (tmp_path / "logs").exists()


def test_a_missing_gpu_burn_says_how_to_build_it(tmp_path, burn_env):
    burn_env["GPU_BURN_DIR"] = str(tmp_path / "nowhere")
    result = run_burn(tmp_path, burn_env, "--sec", "1")
    assert result.returncode == 127
    assert len(result.stderr.splitlines()) == 1
    assert "gpu_burn not found" in result.stderr
    assert "git clone https://github.com/wilicc/gpu-burn" in result.stderr
    assert "make -C" in result.stderr
    assert not (tmp_path / "status.json").exists()


def test_help_lists_every_option_of_the_runbook(tmp_path, burn_env):
    result = run_burn(tmp_path, burn_env, "--help")
    assert result.returncode == 0
    for option in ("--sec", "--pre-tag", "--pre-memo", "--post-tag", "--post-memo",
                   "--pre-idle-sec", "--pre-idle-memo", "--cooldown-sec", "--cooldown-memo",
                   "--final-tag", "--final-memo", "--memo-suffix", "--tmux-session",
                   "--tmux, --no-tmux", "--english, --no-english", "--diag, --no-diag",
                   "--gpu-burn-dir", "--dry-run", "-h, --help"):
        assert option in result.stdout, option


# --- tmux --------------------------------------------------------------------------------------


@pytest.fixture
def tmux_server(burn_env) -> Iterator[dict[str, str]]:
    """A private tmux server (its own TMUX_TMPDIR: never the developer's), already running
    with an environment of its own: a session `existing`, started without the run's
    configuration and with a wrong STATUS_FILE, as a long-running server would have."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    # A short folder: the socket path must fit in a sockaddr_un (108 bytes).
    socket_dir = tempfile.mkdtemp(prefix="tmx", dir="/tmp")
    burn_env["TMUX_TMPDIR"] = socket_dir
    server_env = {key: value for key, value in burn_env.items()
                  if key not in ("STATUS_FILE", "LOG_DIR", "GPU_BURN_DIR")}
    server_env["STATUS_FILE"] = str(Path(socket_dir) / "wrong-status.json")
    subprocess.run(["tmux", "new-session", "-d", "-s", "existing", "sleep", "60"],
                   env=server_env, check=True, timeout=10)
    try:
        yield burn_env
    finally:
        subprocess.run(["tmux", "kill-server"], env=burn_env, capture_output=True, timeout=10,
                       check=False)
        shutil.rmtree(socket_dir, ignore_errors=True)


def has_session(env: dict, name: str) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", f"={name}"], env=env,
                          capture_output=True, timeout=10, check=False).returncode == 0


def test_tmux_runs_the_whole_thing_detached_with_every_option_intact(tmp_path, tmux_server):
    env = tmux_server
    env["PGPASSWORD"] = "s3cret-pw"
    env["TMPDIR"] = str(tmp_path / "private")  # where the password file goes, and must leave
    env.pop("XDG_RUNTIME_DIR", None)
    (tmp_path / "private").mkdir()
    started = time.monotonic()
    result = run_burn(tmp_path, env, "--tmux", "--tmux-session", "burn-test",
                      "--pre-idle-sec", "0.3", "--sec", "1", "--cooldown-sec", "0.3",
                      "--no-diag", "--pre-memo", ODD_MEMO, "--memo-suffix", SUFFIX,
                      "--final-tag", "prod", "--final-memo", "-prod (normal usage)")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10  # detached: returns before the run is over
    assert "tmux attach -t burn-test" in result.stdout

    wait_for(lambda: not has_session(env, "burn-test") and log_files(tmp_path), timeout=30,
             what="the run in tmux to finish")
    [log] = log_files(tmp_path)
    log_text = log.read_text()
    written = phases(log_text)
    assert [name for name, _ in written] == ["pre-idle", "bench", "post", "cooldown", "final"]
    assert written[1][1]["memo"] == ODD_MEMO + SUFFIX
    assert status(tmp_path) == written[-1][1]
    assert status(tmp_path)["memo"] == "-prod (normal usage)" + SUFFIX
    assert status(tmp_path)["tag"] == "prod"
    assert "\tGPU 0: OK" in log_text
    assert not (Path(env["TMUX_TMPDIR"]) / "wrong-status.json").exists()
    # the password reached the run through a private file, and nowhere else
    assert "PGPASSWORD received from the caller through a private file" in log_text
    assert "s3cret-pw" not in log_text + result.stdout + result.stderr
    assert list((tmp_path / "private").iterdir()) == []


def test_tmux_refuses_a_session_that_exists(tmp_path, tmux_server):
    (tmp_path / "status.json").write_text('{"tag": "prod"}')
    result = run_burn(tmp_path, tmux_server, "--tmux", "--tmux-session", "existing",
                      "--sec", "1")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "'existing' already exists" in result.stderr
    assert "tmux attach -t existing" in result.stderr
    assert (tmp_path / "status.json").read_text() == '{"tag": "prod"}'
    assert not (tmp_path / "logs").exists()


# --- the plan, pure ----------------------------------------------------------------------------


def options(*argv: str) -> burn_plan.BurnOptions:
    return cli.burn_options(cli.parse_args(list(argv)))


@pytest.mark.parametrize(("argv", "previous", "expected"), [
    ([], Status("prod", "inference", None), ("prod", "inference", None)),
    ([], Status("idle", "baseline", "manual-1"), ("idle", "baseline", "manual-1")),
    ([], Status(), ("idle", "idle", None)),
    ([], Status("bench", "gpu-burn", "gpuburn-20260104-000000"), ("idle", "idle", None)),
    (["--final-tag", "prod"], Status("idle", "baseline", None), ("prod", "prod", None)),
    (["--final-tag", "prod"], Status("prod", "inference", None), ("prod", "inference", None)),
    (["--final-memo", "back"], Status("prod", "inference", None), ("prod", "back", None)),
    (["--memo-suffix", SUFFIX], Status("prod", "inference [bench exit=143]" + SUFFIX, None),
     ("prod", "inference", None)),
    ([], Status("prod", "inference [bench exit=143]" + SUFFIX, None),
     ("prod", "inference" + SUFFIX, None)),
])
def test_the_final_status_restores_what_was_there(argv, previous, expected):
    assert burn_plan.final_status(options(*argv), previous) == expected


def test_the_interrupted_memo_names_the_phase_and_fits(tmp_path):
    config = Namespace(status_file=tmp_path / "s.json", log_dir=tmp_path,
                       gpu_burn_dir=tmp_path, sample_interval_sec=5.0)
    now = datetime(2026, 1, 4, tzinfo=UTC)
    plan = burn_plan.build_plan(options("--final-memo", "m" * 980, "--memo-suffix", SUFFIX),
                              config, Status(), now)
    assert plan.run_id == "gpuburn-20260104-000000"
    memo = burn_plan.interrupted_memo(plan, "cooldown", 143)
    assert memo.endswith(" [cooldown exit=143]" + SUFFIX) and len(memo) == 1000


def test_the_tmux_command_sets_and_unsets_the_configuration_and_never_the_password():
    caller = {"STATUS_FILE": "/s t/status.json", "PGHOST": "db", "PGAPPNAME": "x",
              "PGPASSWORD": "s3cret-pw", "PATH": "/usr/bin"}
    command = burn_tmux.tmux_command("tmux", "gpuburn", "/work dir", caller,
                                   ["--pre-memo=a 'b'", "--"])
    assert command[:8] == ["tmux", "new-session", "-d", "-s", "gpuburn", "-c", "/work dir",
                           "--"]
    assert "STATUS_FILE=/s t/status.json" in command and "PGAPPNAME=x" in command
    where = command.index("LOG_DIR")
    assert command[where - 1] == "-u"  # unset, so a stale value in tmux's server cannot count
    assert "PGPASSWORD" not in command  # it travels in a private file
    assert "s3cret-pw" not in " ".join(command)
    assert command[-2:] == ["--pre-memo=a 'b'", "--"]


@pytest.mark.parametrize(("argv", "child"), [
    (["--tmux", "--sec", "5"], ["--sec", "5"]),
    (["--sec", "5", "--tmux", "--tmux-session", "burn2", "--pre-memo", "tmux"],
     ["--sec", "5", "--pre-memo", "tmux"]),
    (["--tmux-session=burn2", "--tmux", "--pre-memo=--tmux-session", "--debug"],
     ["--pre-memo=--tmux-session", "--debug"]),
    (["--tmux", "--", "--tmux", "-d"], ["--", "--tmux", "-d"]),
    (["--tmux", "--secret-file", "/tmp/forged", "--sec", "1"], ["--sec", "1"]),
])
def test_the_run_in_tmux_gets_the_callers_arguments_minus_the_tmux_options(argv, child):
    assert burn_tmux.child_arguments(argv, None) == child
    # The private file's name goes last among the options, never among gpu_burn's.
    end = child.index("--") if "--" in child else len(child)
    assert burn_tmux.child_arguments(argv, "/run/x.secret") == [
        *child[:end], "--secret-file=/run/x.secret", *child[end:]]


def test_the_child_arguments_read_back_as_the_same_options(tmp_path):
    argv = ["--sec", "5", "--pre-memo", "-5C offset", "--memo-suffix", " fan=25%",
            "--pre-idle-sec", "0.5", "--no-english", "--final-tag", "prod", "--tmux",
            "--tmux-session", "b1", "--gpu-burn-dir", str(tmp_path), "--", "-d"]
    original = cli.parse_args(argv)
    again = cli.parse_args(burn_tmux.child_arguments(argv, None))
    assert cli.burn_options(again) == cli.burn_options(original)
    assert original.tmux and not again.tmux and again.tmux_session == "gpuburn"


def test_tmux_session_without_tmux_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["--tmux-session", "burn2", "--sec", "1"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--tmux-session goes with --tmux" in err and len(err.splitlines()) == 1


def test_options_are_not_abbreviated(capsys):
    """The run in tmux drops --tmux-session by its full name: `--tmux-s` must not slip by."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["--tmux", "--tmux-s", "burn2"])
    assert caught.value.code == 2


CONFIG = Namespace(status_file=Path("/s/status.json"), log_dir=Path("/logs"),
                   gpu_burn_dir=Path("/opt/gpu-burn"), sample_interval_sec=5.0)
NOW = datetime(2026, 1, 4, 12, 30, 5, tzinfo=UTC)


PLAN_CASES = {
    "defaults": ([], {"pre_idle": None, "cooldown": None, "bench": ("bench", "gpu-burn", 600),
                      "post": ("idle", "post gpu-burn idle", 5.0),
                      "gpu_burn_argv": ("./gpu_burn", "600")}),
    "every phase, suffixed": (
        ["--pre-idle-sec", "180", "--sec", "900", "--cooldown-sec", "0.5",
         "--memo-suffix", SUFFIX],
        {"pre_idle": ("idle", "pre gpu-burn idle (baseline)" + SUFFIX, 180.0),
         "bench": ("bench", "gpu-burn" + SUFFIX, 900),
         "cooldown": ("idle", "cooldown idle (post gpu-burn)" + SUFFIX, 0.5),
         "final": ("idle", "idle" + SUFFIX, None)}),
    "gpu_burn's own options go before its duration": (
        ["--sec", "30", "--", "-d", "-tc"], {"gpu_burn_argv": ("./gpu_burn", "-d", "-tc", "30")}),
    "other tags, an empty memo is the tag": (
        ["--pre-tag", "prod", "--post-tag", "bench", "--post-memo", ""],
        {"bench": ("prod", "gpu-burn", 600), "post": ("bench", "bench", 5.0)}),
    "the folder given": (["--gpu-burn-dir", "/x/gb"], {"gpu_burn_dir": Path("/x/gb")}),
    "the folder configured, run id and log from the start time": (
        [], {"gpu_burn_dir": Path("/opt/gpu-burn"), "run_id": "gpuburn-20260104-123005",
             "log_path": Path("/logs/gpu-burn-20260104-123005.log")}),
}


@pytest.mark.parametrize("case", PLAN_CASES)
def test_the_plan(case):
    argv, want = PLAN_CASES[case]
    plan = burn_plan.build_plan(options(*argv), CONFIG, Status(), NOW)
    for key, value in want.items():
        got = getattr(plan, key)
        if isinstance(got, burn_plan.Phase):
            got = (got.tag, got.memo, got.seconds)
        assert got == value, key


def test_a_memo_too_long_with_its_suffix_is_refused_before_anything_runs():
    with pytest.raises(burn_plan.StatusError) as caught:
        burn_plan.build_plan(options("--pre-memo", "m" * 995, "--memo-suffix", SUFFIX), CONFIG,
                             Status(), NOW)
    assert "the bench memo (memo suffix included)" in str(caught.value)
    assert caught.value.exit_code == 2


# --- the stand-ins -----------------------------------------------------------------------------


def gpu_temps(env: dict) -> list[int]:
    result = subprocess.run([str(STAND_IN), "-q", "-x"], env=env, capture_output=True,
                            text=True, timeout=10, check=True)
    return [int(t) for t in re.findall(r"<gpu_temp>(\d+) C</gpu_temp>", result.stdout)]


def test_the_nvidia_smi_stand_in_reads_hotter_while_gpu_burn_runs(tmp_path, burn_env):
    burn_env["NVSMI_STANDIN_FIXTURE"] = str(REPO_ROOT / "tests" / "fixtures" / "nvidia-smi"
                                            / "dual-2080-v13.xml")
    cold = gpu_temps(burn_env)
    burn = subprocess.Popen([str(GPU_BURN_STAND_IN), "5"], env=burn_env,
                            stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: (tmp_path / "heat").exists(), what="the heat file")
        hot = gpu_temps(burn_env)
    finally:
        burn.terminate()
        burn.wait(timeout=10)
    assert len(cold) == len(hot) == 2
    assert all(h >= c + 25 for c, h in zip(cold, hot, strict=True))
    assert not (tmp_path / "heat").exists()
    assert gpu_temps(burn_env) == cold
