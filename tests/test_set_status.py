"""bin/set_status.sh and status.write_status: the atomic replacement of status.json."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gpu_telemetry.errors import EXIT_IO, StatusError
from gpu_telemetry.ops import status as status_module
from gpu_telemetry.ops.status import Status, read_status, write_status
from tests.helpers import REPO_ROOT, base_env

SET_STATUS = REPO_ROOT / "bin" / "set_status.sh"


def set_status(tmp_path: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """The script as an operator runs it, from an unrelated folder, with an empty .env."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.touch()
    env = base_env(tmp_path, None, **extra_env)
    return subprocess.run(["bash", str(SET_STATUS), "--env", str(empty_env_file), *args],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)


def document(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "status.json").read_text())


def test_writes_tag_memo_run_id_and_since(tmp_path):
    result = set_status(tmp_path, "idle", "baseline")
    assert result.returncode == 0, result.stderr
    written = document(tmp_path)
    assert set(written) == {"tag", "memo", "run_id", "since"}
    assert (written["tag"], written["memo"], written["run_id"]) == ("idle", "baseline", None)
    since = datetime.fromisoformat(written["since"])
    assert since.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - since) < timedelta(seconds=30)
    assert json.loads(result.stdout) == written


def test_memo_defaults_to_the_tag(tmp_path):
    assert set_status(tmp_path, "prod").returncode == 0
    assert document(tmp_path)["memo"] == "prod"


def test_memo_with_quotes_and_spaces_is_kept_exactly(tmp_path):
    memo = """inference (Open-WebUI/ollama) "quoted"  it's  $HOME `x` fan=25%"""
    result = set_status(tmp_path, "prod", memo)
    assert result.returncode == 0, result.stderr
    assert document(tmp_path)["memo"] == memo
    status, warning = read_status(tmp_path / "status.json")
    assert warning is None
    assert status == Status(tag="prod", memo=memo, run_id=None)


def test_a_memo_that_starts_with_a_dash(tmp_path):
    assert set_status(tmp_path, "idle", "--", "-5C offset").returncode == 0
    assert document(tmp_path)["memo"] == "-5C offset"


def test_run_id_given_kept_and_cleared(tmp_path):
    assert set_status(tmp_path, "bench", "gpu-burn", "--run-id", "manual-1").returncode == 0
    assert document(tmp_path)["run_id"] == "manual-1"
    assert set_status(tmp_path, "bench", "gpu-burn fan=100%").returncode == 0
    assert document(tmp_path)["run_id"] == "manual-1"  # a memo changed mid-run stays in the run
    assert set_status(tmp_path, "idle", "--clear-run-id").returncode == 0
    assert document(tmp_path)["run_id"] is None
    assert read_status(tmp_path / "status.json")[0] == Status("idle", "idle", None)


@pytest.mark.parametrize("tag", ["busy", "IDLE", "", "bench2"])
def test_an_unknown_tag_is_refused_with_one_line(tmp_path, tag):
    (tmp_path / "status.json").write_text('{"tag": "idle"}')
    result = set_status(tmp_path, tag, "memo")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "idle, prod, bench" in result.stderr and repr(tag) in result.stderr
    assert (tmp_path / "status.json").read_text() == '{"tag": "idle"}'


@pytest.mark.parametrize("args", [[], ["idle", "a", "b"], ["--bogus", "idle"], ["--run-id"],
                                  ["idle", "--run-id", "has space"], ["idle", "two\nlines"]])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args):
    result = set_status(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "status.json").exists()


def test_help_shows_the_usage(tmp_path):
    result = set_status(tmp_path, "--help")
    assert result.returncode == 0
    assert "Usage: bin/set_status.sh [options] TAG [MEMO]" in result.stdout
    assert "--clear-run-id" in result.stdout and "STATUS_FILE" in result.stdout


def test_status_file_is_honoured(tmp_path):
    elsewhere = tmp_path / "run" / "state.json"
    elsewhere.parent.mkdir()
    result = set_status(tmp_path, "bench", "x", STATUS_FILE=str(elsewhere))
    assert result.returncode == 0, result.stderr
    assert json.loads(elsewhere.read_text())["tag"] == "bench"
    assert not (tmp_path / "status.json").exists()


def test_an_unwritable_place_is_one_line_and_exit_74(tmp_path):
    result = set_status(tmp_path, "idle", STATUS_FILE=str(tmp_path / "missing" / "s.json"))
    assert result.returncode == EXIT_IO
    assert len(result.stderr.splitlines()) == 1 and "cannot write status file" in result.stderr


def test_the_file_is_replaced_by_rename_and_no_temporary_file_stays(tmp_path):
    path = tmp_path / "status.json"
    write_status(path, "idle")
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    write_status(path, "prod", "inference")
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert path.stat().st_mode & 0o777 == 0o640  # permissions kept
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_a_reader_never_sees_half_a_file(tmp_path):
    path = tmp_path / "status.json"
    write_status(path, "idle")
    seen: list[Status] = []
    warnings: list[str] = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            status, warning = read_status(path)
            seen.append(status)
            if warning:
                warnings.append(warning)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(300):
            write_status(path, ("idle", "prod", "bench")[n % 3], "x" * (n % 7 * 100),
                         run_id=f"run-{n}")
    finally:
        done.set()
        thread.join()
    assert warnings == [] and len(seen) > 10
    assert all(status.tag in ("idle", "prod", "bench") for status in seen)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    write_status(path, "idle", "old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(status_module.os, "replace", broken_replace)
    with pytest.raises(StatusError) as caught:
        write_status(path, "bench", "new")
    assert caught.value.exit_code == EXIT_IO and "No space left" in str(caught.value)
    assert json.loads(path.read_text())["memo"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_the_tags_are_the_ones_every_part_uses(capsys):
    """One list of tags: the command's help, the refusal and the check all come from it."""
    from gpu_telemetry.cli import set_status as cli
    from gpu_telemetry.tags import TAGS

    assert TAGS == ("idle", "prod", "bench")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert f"one of {', '.join(TAGS)}" in capsys.readouterr().out
    for tag in TAGS:
        assert status_module.check_tag(tag) == tag


@pytest.mark.parametrize(("content", "says"), [
    ("{", "is malformed"), ("[1]", "not a JSON object"), ('{"memo": "x"}', "no tag"),
    ('{"tag": 3}', "tag is int, not text"), ("x" * 70000, "is over 65536 bytes"),
])
def test_a_broken_status_file_is_null_status_and_one_line(tmp_path, content, says):
    path = tmp_path / "status.json"
    path.write_text(content)
    status, warning = read_status(path)
    assert status == Status()
    assert says in warning and len(warning.splitlines()) == 1 and str(path) in warning
