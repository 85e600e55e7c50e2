"""Files that are whole or absent: the spool, its drop ledger and status.json are written here.

`write_atomically` writes to a temporary file in the same folder, fsyncs it, renames it over
the target and fsyncs the folder, so a reader (or a crash, or a power cut) sees the old file or
the new one, never half of either; an interrupted write leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make the folder's entries (a rename, an unlink) survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600,
                     temp: Path | None = None) -> None:
    """Replace `path` by `data` with permissions `mode`. `temp` is the temporary file's path
    (in the same folder; by default `.NAME.XXXXXXXX.tmp`). Raises OSError."""
    temp = temp or path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:  # also a signal in the middle: no temporary file left behind
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)
