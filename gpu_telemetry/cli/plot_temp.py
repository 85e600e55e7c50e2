"""Plot GPU temperature (and other metrics) from PostgreSQL into a PNG.

The range is reduced in SQL to about one point per pixel (min, max and mean per bucket), so the
plotted maximum is the true maximum however long the range; a short range draws every sample.
Status periods are background bands, thermal and power slowdowns shaded strips, the slowdown
temperature a dashed line, stretches without samples hatched. When a tag, memo or run filter
selects the rows, the picture spans the samples found (--full-range keeps the whole range);
--run-id alone draws the run with a margin before and after (--margin). It prints one line: the
path, the range drawn, the number of samples and the resolution.

Exit status: 0 written (also when there is no data: the picture says so); 2 usage; 70
internal error (a bug: --debug shows the traceback); 73 the PNG cannot be written there; 75
database unreachable; 77 the database role may not read telemetry (use the reader role); 78
configuration error; 130 interrupted.
"""

import argparse
import threading
from pathlib import Path

from gpu_telemetry import REPO_ROOT
from gpu_telemetry.cli.common import OneLineParser, add_common_options, run
from gpu_telemetry.schema import plot_metrics
from gpu_telemetry.tags import PROD

METRIC_NAMES = tuple(plot_metrics())

EXAMPLES = """\
examples:
  uv run ./bin/plot_temp.py --hours 6
  uv run ./bin/plot_temp.py --start 2026-01-04T00:00:00+09:00 --end 2026-01-04T06:00:00+09:00
  uv run ./bin/plot_temp.py --hours 24 --status-tag prod
  uv run ./bin/plot_temp.py --hours 24 --exclude-prod --include-memo "fan=25%" \\
      --out docs/images/gpu-temp-fan25.png
  uv run ./bin/plot_temp.py --run-id gpuburn-20260104-000000 --metric temperature \\
      --metric sm_clock --metric power
  uv run ./bin/plot_temp.py --run-id gpuburn-20260104-000000 --margin 30
  uv run ./bin/plot_temp.py --hours 720 --gpu 0 --tz jst
"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="plot_temp.py", description=__doc__.split("\n\n", 1)[0],
        epilog=EXAMPLES + "\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    when = parser.add_argument_group("range")
    when.add_argument("--hours", type=float, metavar="H",
                      help="the last H hours (default 6; with --end: the H hours before it; "
                           "not with --start)")
    when.add_argument("--start", metavar="TIME", help="ISO 8601 start (no offset: in --tz)")
    when.add_argument("--end", metavar="TIME", help="ISO 8601 end (default: now)")
    when.add_argument("--margin", type=float, metavar="MIN",
                      help="with --run-id and no range: minutes drawn before and after the "
                           "run (default: a fifth of the run's length)")
    when.add_argument("--full-range", action="store_true",
                      help="draw the whole range even when a tag, memo or run filter selects "
                           "only part of it (default: span the samples found)")
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
    rows.add_argument("--run-id", metavar="ID",
                      help="only rows of this run; without a range, the run's own span "
                           "(with --margin) and its host's rows around it")
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

    def __init__(self, *arguments, **options):
        super().__init__(name="fetch-series", daemon=True)
        self.arguments, self.options = arguments, options
        self.series = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            from gpu_telemetry.analysis.series import fetch_plot
            from gpu_telemetry.db.store import connect

            with connect() as conn:
                self.series = fetch_plot(conn, *self.arguments, **self.options)
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


def check_options(parser: argparse.ArgumentParser, args) -> None:
    """Options that contradict each other, or a value out of its range: exit 2, one line."""
    if args.hours is not None and args.start:
        parser.error("--hours and --start contradict each other: give --start (and --end), "
                     "or --hours (with --end or up to now)")
    explicit_range = bool(args.start or args.end or args.hours is not None)
    if args.margin is not None:
        if not args.run_id or explicit_range:
            parser.error("--margin applies only to --run-id without --start/--end/--hours")
        if not 0 <= args.margin <= 7 * 24 * 60:
            parser.error(f"--margin must be 0 to 10080 minutes (a week), got {args.margin:g}")
    if args.full_range and args.run_id and not explicit_range:
        parser.error("--full-range needs a range (--start/--end/--hours); --run-id alone "
                     "draws the run's own span")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_options(parser, args)

    from datetime import timedelta

    from gpu_telemetry.analysis.series import Filters
    from gpu_telemetry.analysis.timerange import RangeError, resolve_range, zone

    try:
        tz = zone(args.tz)
        start, end = resolve_range(args.start, args.end, args.hours, tz)
    except RangeError as exc:
        parser.error(str(exc))
    if args.run_id and not (args.start or args.end or args.hours is not None):
        start = end = None  # the run decides
    exclude = list(args.exclude_status_tag) + ([PROD] if args.exclude_prod else [])
    args.exclude_status_tag = exclude
    filters = Filters(host=args.host, status_tags=tuple(args.status_tag),
                      exclude_tags=tuple(exclude), include_memos=tuple(args.include_memo),
                      exclude_memos=tuple(args.exclude_memo), gpus=tuple(args.gpu),
                      run_id=args.run_id)
    metrics = tuple(dict.fromkeys(args.metric or ["temperature"]))
    # A run inside an explicit range keeps the range (to compare runs on one time axis).
    fit = filters.selects_periods and not args.run_id and not args.full_range
    margin = None if args.margin is None else timedelta(minutes=args.margin)

    def body() -> int:
        from gpu_telemetry.config import load_config

        load_config(args.env)
        fetch = _Fetch(filters, metrics, start, end, run_margin=margin, fit=fit)
        fetch.start()
        from gpu_telemetry.analysis.plotting import (
            render,  # matplotlib: imported while the query runs
        )

        series = fetch.result()
        out = args.out.resolve()
        render(series, out, title=args.title, tz=tz,
               description=describe(args, series.start, series.end, tz))
        drawn = (f"{series.start.astimezone(tz).isoformat(timespec='seconds')} to "
                 f"{series.end.astimezone(tz).isoformat(timespec='seconds')}")
        if series.empty and args.run_id and start is None:
            print(f"wrote {out}: no samples with run id {args.run_id}")
        elif series.empty:
            print(f"wrote {out}: {drawn}, no data in this range for these filters")
        else:
            print(f"wrote {out}: {drawn}, {series.samples} samples, {len(series.gpus)} GPU(s), "
                  f"{series.resolution}")
        return 0

    return run(body, debug=args.debug, program="plot_temp.py")

