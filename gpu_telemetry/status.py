"""status.json: what the machine is doing now (tag, memo, run id), read for every sample.

A missing, huge or malformed file must never cost a sample: the sample is taken with null
status and one warning line says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MAX_STATUS_BYTES = 64 * 1024
MAX_TEXT_CHARS = 1000


@dataclass(frozen=True)
class Status:
    tag: str | None = None
    memo: str | None = None
    run_id: str | None = None


def _text(value, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} is {type(value).__name__}, not text")
    return value[:MAX_TEXT_CHARS] or None


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
        document = json.loads(data.decode("utf-8", errors="replace"))
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        tag = _text(document.get("tag"), "tag")
        if tag is None:
            raise ValueError("no tag")
        status = Status(
            tag=tag,
            memo=_text(document.get("memo"), "memo"),
            run_id=_text(document.get("run_id"), "run_id"),
        )
    except (ValueError, RecursionError) as exc:
        return Status(), f"status file {path} is malformed ({exc}); status is null"
    return status, None
