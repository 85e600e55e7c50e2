"""The thermal report of one run: per GPU the idle temperature before the bench, peak, steady
state, time to 90 % of the rise, heating and cooling time constants (first-order fits), the
share of the bench under each throttle reason, SM clock drop, mean power and degrees per watt.

Writes Markdown and a PNG beside it (default docs/reports/<run id or range>.md) and prints the
paths; with --json prints the figures as JSON instead (files only when --out is given).

Exit status: 0 done; 1 no rows for that run or range; 2 usage (a bad value, or options
that contradict each other); 70 internal error (a bug: --debug shows the traceback); 73 the
report or PNG cannot be written there; 75 database unreachable; 77 the database role may not
read telemetry (use the reader role); 78 configuration error; 130 interrupted.
"""

import argparse
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from gpu_telemetry.cli.common import OneLineParser, add_common_options, run

PROG = "report_run.py"
EXAMPLES = """\
examples:
  uv run ./bin/report_run.py --run-id gpuburn-20260104-000000
                                  report of one gpu-burn run (bin/run_gpuburn.sh)
  uv run ./bin/report_run.py --run-id gpuburn-20260104-000000 --json
                                  the figures as JSON: {"run_id": ..., "gpus": [...]}
  uv run ./bin/report_run.py --start 2026-01-04T10:00 --end 2026-01-04T11:30 --host x1ai
                                  a run without a run id, by time range (times in --tz)
  uv run ./bin/report_run.py --compare gpuburn-20260104-000000 gpuburn-20260105-000000
                                  two runs side by side (fan 100 % vs 25 %)
  uv run ./bin/report_run.py --run-id gpuburn-20260104-000000 --gpu 01:00.0 --out /tmp/p40.md
"""


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what cannot mean one report (exit 2), saying which options or value."""
    given = [name for name, value in (("--run-id", args.run_id), ("--start", args.start),
                                      ("--compare", args.compare)) if value is not None]
    if len(given) > 1:
        parser.error(f"{' and '.join(given)} contradict each other: give one of --run-id, "
                     "--start [--end] or --compare")
    if args.end is not None and args.start is None:
        parser.error(f"--end goes with --start, not with {given[0]}" if given
                     else "--end needs --start")
    if not given:
        parser.error("say which run: --run-id RUN, --start TIME [--end TIME] or "
                     "--compare RUN RUN")
    for option, value in (("--run-id", args.run_id), ("--host", args.host),
                          ("--gpu", args.gpu), *(("--compare", v) for v in args.compare or ())):
        if value is not None and not value.strip():
            parser.error(f"{option} is empty: give a value")
    if args.compare and args.compare[0] == args.compare[1]:
        parser.error(f"--compare needs two different runs, got {args.compare[0]} twice")
    if args.out is not None and args.out.name in ("", ".."):
        parser.error(f"--out {str(args.out)!r} names no file: give one, e.g. /tmp/report.md")
    if args.out is not None and args.out.suffix.lower() == ".png":
        parser.error(f"--out {args.out}: name the Markdown file (e.g. "
                     f"{args.out.with_suffix('.md')}); the PNG is written beside it")


def report_command(selections: Sequence, *, tz: tzinfo, as_json: bool, out: Path | None) -> int:
    """Fetch, analyse, write (always without --json; with --json only when --out is given)
    and print."""
    from gpu_telemetry.analysis.report.output import default_markdown_path, write_outputs
    from gpu_telemetry.analysis.report.query import fetch_reports
    from gpu_telemetry.analysis.report.text import one_line_summary, report_json

    reports = fetch_reports(selections)
    written: tuple[Path, Path] | None = None
    if out is not None or not as_json:
        written = write_outputs(reports, out or default_markdown_path(reports), tz)
    if as_json:
        body = report_json(reports, tz)
        if written:
            body["markdown"], body["png"] = (str(p) for p in written)
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    for report in reports:
        for line in one_line_summary(report):
            print(line)
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog=PROG,
        description="Thermal report of one run: heating and cooling time constants, steady "
                    "state, throttling, clocks and power, per GPU.",
        epilog=EXAMPLES + "\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run-id", metavar="RUN",
                        help="the run's id, e.g. gpuburn-20260104-000000")
    parser.add_argument("--start", metavar="TIME",
                        help="instead of --run-id: start of the range, ISO 8601 (bench = rows "
                             "tagged bench in the range)")
    parser.add_argument("--end", metavar="TIME", help="with --start: end of the range "
                                                      "(default: now)")
    parser.add_argument("--compare", nargs=2, metavar="RUN",
                        help="two runs side by side (one table, one plot)")
    parser.add_argument("--host", help="only this host's rows")
    parser.add_argument("--gpu", metavar="GPU",
                        help="only this GPU: UUID (or prefix), index, or PCI bus id")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON; write files only with --out")
    parser.add_argument("--out", metavar="PATH", type=Path,
                        help="the Markdown file (the PNG goes beside it, .png); default "
                             "docs/reports/<run id or range>.md")
    parser.add_argument("--tz", metavar="ZONE",
                        help="time zone of the times shown and of --start/--end without an "
                             "offset: an IANA name, or jst / utc (default: this machine's)")
    add_common_options(parser)
    args = parser.parse_args(argv)

    check_options(parser, args)
    from gpu_telemetry.analysis.report.model import Selection
    from gpu_telemetry.analysis.timerange import RangeError, parse_time, zone

    try:
        tz = zone(args.tz)
    except RangeError as exc:
        parser.error(f"--tz: {exc}")
    common = {"host": args.host, "gpu": args.gpu}
    if args.start is not None:
        times = {}
        for option, text in (("--start", args.start), ("--end", args.end)):
            try:
                times[option] = parse_time(text, tz) if text is not None else None
            except RangeError as exc:
                parser.error(f"{option}: {exc}")
        start, end = times["--start"], times["--end"]
        if end is None:
            # A bench still running: its rows up to this second.
            end = datetime.now(tz) + timedelta(seconds=1)
            if end <= start:
                parser.error(f"--start {args.start} is in the future (now is "
                             f"{datetime.now(tz):%Y-%m-%dT%H:%M:%S%z} in {tz.key})")
        elif end <= start:
            parser.error(f"the range is empty: --end {args.end} is not after --start "
                         f"{args.start}")
        selections = [Selection(start=start, end=end, **common)]
    else:
        selections = [Selection(run_id=run_id, **common)
                      for run_id in (args.compare or [args.run_id])]

    def body() -> int:
        from gpu_telemetry.config import load_config

        load_config(args.env)
        return report_command(selections, tz=tz, as_json=args.json, out=args.out)

    return run(body, debug=args.debug, program=PROG)

