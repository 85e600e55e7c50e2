"""Time zones and time ranges as the command line gives them."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_HOURS = 24 * 365 * 100
ALIASES = {"jst": "Asia/Tokyo", "utc": "UTC", "z": "UTC"}


class RangeError(ValueError):
    """A time zone or range the user gave cannot be used; the message says why."""


def local_zone() -> ZoneInfo:
    """The machine's zone by its IANA name: TZ, else where /etc/localtime points, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    return ZoneInfo("UTC")


def zone(name: str | None) -> ZoneInfo:
    if not name:
        return local_zone()
    try:
        return ZoneInfo(ALIASES.get(name.lower(), name))
    except (ZoneInfoNotFoundError, ValueError):
        raise RangeError(f"unknown time zone {name!r} (use an IANA name such as Asia/Tokyo, "
                         "or jst / utc)") from None


def parse_time(text: str, tz: ZoneInfo) -> datetime:
    """ISO 8601; a time without an offset is taken in tz."""
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise RangeError(f"not an ISO 8601 time: {text!r} (e.g. 2026-01-04T00:00:00+09:00)"
                         ) from None
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


def resolve_range(start: str | None, end: str | None, hours: float | None, tz: ZoneInfo,
                  now: datetime | None = None) -> tuple[datetime, datetime]:
    """[start, end) from --start / --end / --hours: without --start, the last `hours` (6 by
    default) up to --end or now."""
    if hours is not None and not hours > 0:
        raise RangeError(f"--hours must be more than zero, got {hours:g}")
    if hours is not None and hours > MAX_HOURS:
        raise RangeError(f"--hours {hours:g} reaches back more than 100 years: at most "
                         f"{MAX_HOURS} hours")
    end_at = parse_time(end, tz) if end else (now or datetime.now(UTC))
    start_at = (parse_time(start, tz) if start
                else end_at - timedelta(hours=hours if hours is not None else 6))
    if start_at >= end_at:
        raise RangeError(f"the range is empty: --start {start_at.isoformat()} is not before "
                         f"the end {end_at.isoformat()}")
    return start_at.astimezone(UTC), end_at.astimezone(UTC)
