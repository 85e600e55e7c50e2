#!/usr/bin/env python3
"""Plot GPU temperature (and other metrics) from PostgreSQL into a PNG.

The range is reduced in SQL to about one point per pixel (min, max and mean per bucket), so the
plotted maximum is the true maximum however long the range. Status periods are background
bands, thermal and power slowdowns shaded strips, the slowdown temperature a dashed line.
Exit status: 0 written (also when there is no data: the picture says so); 2 usage; 75
database unreachable; 77 the database role may not read telemetry (use the reader role); 78
configuration error.
"""

import argparse
import sys
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from gpu_telemetry.cli import OneLineParser, add_common_options, run  # noqa: E402

METRIC_NAMES = ("temperature", "power", "sm_clock", "fan", "utilization", "memory_temperature")

EXAMPLES = """\
examples:
  uv run ./bin/plot_temp.py --hours 6
  uv run ./bin/plot_temp.py --start 2026-01-04T00:00:00+09:00 --end 2026-01-04T06:00:00+09:00
  uv run ./bin/plot_temp.py --hours 24 --status-tag prod
  uv run ./bin/plot_temp.py --hours 24 --exclude-prod --include-memo "fan=25%" \\
      --out docs/images/gpu-temp-fan25.png
  uv run ./bin/plot_temp.py --run-id gpuburn-20260104-000000 --metric temperature \\
      --metric sm_clock --metric power
  uv run ./bin/plot_temp.py --hours 720 --gpu 0 --tz jst
"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="plot_temp.py", description=__doc__.split("\n\n", 1)[0],
        epilog=EXAMPLES + "\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    when = parser.add_argument_group("range")
    when.add_argument("--hours", type=float, metavar="H",
                      help="the last H hours (default 6; with --end: the H hours before it)")
    when.add_argument("--start", metavar="TIME", help="ISO 8601 start (no offset: in --tz)")
    when.add_argument("--end", metavar="TIME", help="ISO 8601 end (default: now)")
    when.add_argument("--tz", metavar="ZONE",
                      help="time zone of the axis and of times without an offset: an IANA name "
                           "(Asia/Tokyo), or jst / utc (default: this machine's zone)")
    rows = parser.add_argument_group("which rows")
    rows.add_argument("--host", help="only this collector host")
    rows.add_argument("--status-tag", action="append", default=[], metavar="TAG",
                      help="only rows with this status tag (repeatable)")
    rows.add_argument("--exclude-status-tag", action="append", default=[], metavar="TAG",
                      help="leave out rows with this status tag (repeatable)")
    rows.add_argument("--exclude-prod", action="store_true",
                      help="leave out prod rows (same as --exclude-status-tag prod)")
    rows.add_argument("--include-memo", action="append", default=[], metavar="TEXT",
                      help="only rows whose memo contains TEXT, any case (repeatable: any)")
    rows.add_argument("--exclude-memo", action="append", default=[], metavar="TEXT",
                      help="leave out rows whose memo contains TEXT, any case (repeatable)")
    rows.add_argument("--gpu", action="append", default=[], metavar="GPU",
                      help="only this GPU: uuid, index or PCI bus id (repeatable)")
    rows.add_argument("--run-id", metavar="ID", help="only rows of this run")
    picture = parser.add_argument_group("picture")
    picture.add_argument("--metric", action="append", choices=METRIC_NAMES, metavar="METRIC",
                         help="panel to draw, repeatable, stacked on one time axis: "
                              f"{', '.join(METRIC_NAMES)} (default: temperature)")
    picture.add_argument("--title", help="title of the picture")
    picture.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "images" /
                         "gpu-temp.png", metavar="PNG",
                         help="where to write (default: docs/images/gpu-temp.png)")
    add_common_options(parser)
    return parser


class _Fetch(threading.Thread):
    """Connect and query while the main thread imports matplotlib: the database works while
    Python imports."""

    def __init__(self, filters, metrics, start, end, max_points):
        super().__init__(name="fetch-series", daemon=True)
        self.arguments = (filters, metrics, start, end, max_points)
        self.series = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            from gpu_telemetry.series import fetch_series
            from gpu_telemetry.store import connect

            with connect() as conn:
                self.series = fetch_series(conn, *self.arguments)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.series


def describe(args, start, end, tz) -> str:
    text = (f"{start.astimezone(tz):%Y-%m-%d %H:%M} – {end.astimezone(tz):%Y-%m-%d %H:%M} "
            f"{tz.key}")
    chosen = [f"host {args.host}" if args.host else "", f"run {args.run_id}" if args.run_id else "",
              *(f"tag {t}" for t in args.status_tag),
              *(f"not {t}" for t in args.exclude_status_tag),
              *(f"memo ~ {m!r}" for m in args.include_memo),
              *(f"memo !~ {m!r}" for m in args.exclude_memo),
              *(f"GPU {g}" for g in args.gpu)]
    chosen = [c for c in chosen if c]
    return text + (f"  ({', '.join(chosen)})" if chosen else "")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from gpu_telemetry.series import Filters
    from gpu_telemetry.timerange import RangeError, resolve_range, zone

    try:
        tz = zone(args.tz)
        start, end = resolve_range(args.start, args.end, args.hours, tz)
    except RangeError as exc:
        parser.error(str(exc))
    exclude = list(args.exclude_status_tag) + (["prod"] if args.exclude_prod else [])
    args.exclude_status_tag = exclude
    filters = Filters(host=args.host, status_tags=tuple(args.status_tag),
                      exclude_tags=tuple(exclude), include_memos=tuple(args.include_memo),
                      exclude_memos=tuple(args.exclude_memo), gpus=tuple(args.gpu),
                      run_id=args.run_id)
    metrics = tuple(dict.fromkeys(args.metric or ["temperature"]))

    def body() -> int:
        from gpu_telemetry.config import load_config

        load_config(args.env)
        from gpu_telemetry.series import MAX_POINTS

        fetch = _Fetch(filters, metrics, start, end, MAX_POINTS)
        fetch.start()
        from gpu_telemetry.plotting import render  # matplotlib: imported while the query runs

        series = fetch.result()
        out = args.out.resolve()
        render(series, out, title=args.title, tz=tz, description=describe(args, start, end, tz))
        if series.empty:
            print(f"wrote {out} (no data in this range for these filters)")
        else:
            print(f"wrote {out} ({series.samples} samples, {len(series.gpus)} GPU(s), "
                  f"{series.bucket_sec} s per point"
                  f"{', from the one-minute rollup' if series.from_rollup else ''})")
        return 0

    return run(body, debug=args.debug, program="plot_temp.py")


if __name__ == "__main__":
    raise SystemExit(main())
