"""status.json: what the machine is doing now (tag, memo, run id), read for every sample.

A missing, huge or malformed file must never cost a sample: the sample is taken with null
status and one warning line says why.

Writing replaces the file atomically (gpu_telemetry/files.py), so
the collector, reading it every few seconds, sees the old status or the new one, never half
of either. The command is bin/set_status.sh (gpu_telemetry/cli/set_status.py).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from gpu_telemetry.errors import EXIT_IO, StatusError
from gpu_telemetry.files import write_atomically
from gpu_telemetry.records import MAX_TEXT_CHARS, Status, storable_text
from gpu_telemetry.tags import TAGS

MAX_STATUS_BYTES = 64 * 1024
# Run ids end up in file names, SQL filters and plot titles: one word, no quoting needed.
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,99}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def status_from_document(document) -> Status:
    """The status a status.json document holds; ValueError saying what is wrong with it.

    Only `tag` is required (the original scripts wrote tag and memo); texts are cut to
    MAX_TEXT_CHARS and made storable, empty ones are null.
    """
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    tag = _text(document.get("tag"), "tag")
    if tag is None:
        raise ValueError("no tag")
    return Status(tag=tag, memo=_text(document.get("memo"), "memo"),
                  run_id=_text(document.get("run_id"), "run_id"))


def _text(value, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} is {type(value).__name__}, not text")
    return storable_text(value[:MAX_TEXT_CHARS]) or None


def read_status(path: Path) -> tuple[Status, str | None]:
    """The status and, when it could not be read, a one-line warning."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        return Status(), f"status file {path} not found; status is null (bin/set_status.sh sets it)"
    except OSError as exc:
        return Status(), f"cannot read status file {path}: {exc.strerror}; status is null"
    if len(data) > MAX_STATUS_BYTES:
        return Status(), f"status file {path} is over {MAX_STATUS_BYTES} bytes; status is null"
    try:
        status = status_from_document(json.loads(data.decode("utf-8", errors="replace")))
    except (ValueError, RecursionError) as exc:
        return Status(), f"status file {path} is malformed ({exc}); status is null"
    return status, None


def check_tag(tag: str) -> str:
    if tag not in TAGS:
        raise StatusError(f"unknown tag {tag!r}: use one of {', '.join(TAGS)}")
    return tag


def check_memo(memo: str) -> str:
    """A memo is one line of at most MAX_TEXT_CHARS (what read_status keeps)."""
    if _CONTROL_RE.search(memo):
        raise StatusError(f"memo {memo!r} must be one line without control characters")
    if len(memo) > MAX_TEXT_CHARS:
        raise StatusError(f"memo is {len(memo)} characters; at most {MAX_TEXT_CHARS} are kept")
    return memo


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.fullmatch(run_id):
        raise StatusError(f"run id {run_id!r} must be 1-100 letters, digits or ._:@+- "
                          "(starting with a letter or digit)")
    return run_id


def _new_file_mode(path: Path) -> int:
    """The replaced file's permissions, or what a plain open() would give a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def write_status(path: Path, tag: str, memo: str | None = None, run_id: str | None = None,
                 keep_run_id: bool = True) -> dict:
    """Replace status.json atomically with {"tag", "memo", "run_id", "since"}; return it.

    memo None or empty: the tag. run_id given: that one; else the file's current run id when
    keep_run_id (a memo changed in the middle of a run stays in the run), else null.
    """
    check_tag(tag)
    memo = check_memo(memo) if memo else tag
    if run_id is not None:
        check_run_id(run_id)
    elif keep_run_id:
        run_id = read_status(path)[0].run_id
    document = {"tag": tag, "memo": memo, "run_id": run_id,
                "since": datetime.now(UTC).isoformat(timespec="seconds")}
    data = (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        write_atomically(path, data, mode=_new_file_mode(path))
    except OSError as exc:
        raise StatusError(f"cannot write status file {path}: {exc.strerror or exc}",
                          exit_code=EXIT_IO) from None
    return document
