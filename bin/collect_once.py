#!/usr/bin/env python3
"""Take one sample of every GPU and store it in PostgreSQL (spooled while the database is down).

Exit status: 0 stored; 75 spooled (database unreachable, sample safe on disk); 69 the GPU
source failed (event recorded or spooled); 74 the spool could not be written either; 78
configuration error; 2 usage. With --loop: runs until SIGTERM or SIGINT, finishes the sample in
hand and exits 0.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_telemetry.cli import OneLineParser, add_common_options, run  # noqa: E402

EXAMPLES = """\
examples:
  uv run ./bin/collect_once.py                 store one sample
  uv run ./bin/collect_once.py --dry-run       print the sample as JSON, store nothing
  uv run ./bin/collect_once.py --loop          sample every SAMPLE_INTERVAL_SEC until stopped
  uv run ./bin/collect_once.py --loop --interval 1 --quiet
  NVIDIA_SMI=tests/stand_ins/nvidia-smi uv run ./bin/collect_once.py --dry-run
                                               try it without a GPU
"""


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="collect_once.py",
        description="Read nvidia-smi once and store every GPU's reading in PostgreSQL.",
        epilog=EXAMPLES + "\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dry-run", action="store_true",
                        help="print the sample as one JSON object; touch neither database nor "
                             "spool")
    parser.add_argument("--raw", action="store_true",
                        help="with --dry-run: include each GPU's raw_json")
    parser.add_argument("--loop", action="store_true",
                        help="keep sampling on a fixed schedule with one database connection; "
                             "spool while the database is down and flush when it is back")
    parser.add_argument("--interval", type=float, metavar="SEC",
                        help="with --loop: seconds between samples, fractions allowed "
                             "(default: SAMPLE_INTERVAL_SEC, 5)")
    parser.add_argument("--quiet", action="store_true",
                        help="with --loop: no line per sample, only changes of state")
    add_common_options(parser)
    args = parser.parse_args(argv)
    if args.loop and args.dry_run:
        parser.error("--loop and --dry-run cannot be combined")
    if (args.interval is not None or args.quiet) and not args.loop:
        parser.error("--interval and --quiet need --loop")
    if args.interval is not None and not (0 < args.interval < float("inf")):
        parser.error(f"--interval must be more than zero, got {args.interval:g}")

    def body() -> int:
        from gpu_telemetry.collect import collect_once
        from gpu_telemetry.config import load_config

        config = load_config(args.env)
        if args.loop:
            from gpu_telemetry.loop import CollectorLoop

            interval = args.interval or config.sample_interval_sec
            return CollectorLoop(config, interval, quiet=args.quiet).run()
        return collect_once(config, dry_run=args.dry_run, raw=args.raw)

    return run(body, debug=args.debug, program="collect_once.py")


if __name__ == "__main__":
    raise SystemExit(main())
