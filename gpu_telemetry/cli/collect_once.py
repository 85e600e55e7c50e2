"""Take one sample of every GPU and store it in PostgreSQL (spooled while the database is down).

Exit status: 0 stored (with --dry-run: printed; with --test-alert: sent); 1 --test-alert:
ALERT_COMMAND failed; 2 usage (a bad value, or options that
contradict each other); 65 the database refused a value of the sample (spooled; the flush
moves it to spool/bad/ with the reason); 69 the GPU source failed, nvidia-smi or NVML (event
recorded or spooled); 70 internal error (a bug: --debug shows the traceback); 74 the spool
could not be written either; 75 spooled (database unreachable: the sample is safe on disk);
77 spooled, the role may not insert (use the writer role as PGUSER); 78 configuration error,
or spooled: the schema is missing (run bin/init_db.sh) or the login is refused (check PGUSER,
PGPASSWORD, PGDATABASE, PGPORT); 130 interrupted. With --loop: runs until SIGTERM or SIGINT,
finishes the sample in hand and exits 0 (a failing sample is reported and the loop goes on).
"""

import argparse

from gpu_telemetry.cli.common import (
    OneLineParser,
    add_common_options,
    check_positive_seconds,
    run,
)

EXAMPLES = """\
examples:
  uv run ./bin/collect_once.py                 store one sample
  uv run ./bin/collect_once.py --dry-run       print the sample as JSON, store nothing
  uv run ./bin/collect_once.py --loop          sample every SAMPLE_INTERVAL_SEC until stopped
  uv run ./bin/collect_once.py --loop --interval 1 --quiet
  NVIDIA_SMI=tests/stand_ins/nvidia-smi uv run ./bin/collect_once.py --dry-run
                                               try it without a GPU
  GPU_SOURCE=nvml uv run ./bin/collect_once.py --loop --interval 0.1
                                               read NVML instead of nvidia-smi, 10 a second
  uv run ./bin/collect_once.py --test-alert    send a sample alert through ALERT_COMMAND

GPU_SOURCE (configuration): nvidia-smi (default; one `nvidia-smi -q -x` per sample) or nvml
(NVIDIA's library, through nvidia-ml-py in a worker process the collector kills and restarts
when a call hangs; raw snapshots still come from nvidia-smi every RAW_EVERY_SEC). Both fill
the same columns; docs/nvml.md lists what each is read from.
"""


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A bad value says what is wrong with it; an option that would be ignored is refused,
    since whoever gave it meant something else."""
    check_positive_seconds(parser, "--interval", args.interval, "interval")
    if args.loop and args.dry_run:
        parser.error("--loop and --dry-run cannot be combined (--dry-run takes one sample)")
    if args.interval is not None and not args.loop:
        parser.error("--interval without --loop: options of the loop need --loop (a single "
                     "sample has no interval)")
    if args.quiet and not args.loop:
        parser.error("--quiet without --loop: options of the loop need --loop (a single "
                     "sample prints one line anyway)")
    if args.test_alert and (args.loop or args.dry_run or args.raw):
        parser.error("--test-alert takes no sample: it cannot be combined with --loop, "
                     "--dry-run or --raw")
    if args.raw and not args.dry_run:
        parser.error("--raw without --dry-run: it only changes what --dry-run prints (stored "
                     "samples keep raw_json every RAW_EVERY_SEC)")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="collect_once.py",
        description="Read nvidia-smi (or NVML, GPU_SOURCE=nvml) once and store every GPU's "
                    "reading in PostgreSQL.",
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
    parser.add_argument("--test-alert", action="store_true",
                        help="send a sample alert through ALERT_COMMAND and say how it went "
                             "(docs/alerts.md); takes no sample")
    add_common_options(parser)
    args = parser.parse_args(argv)
    check_options(parser, args)

    def body() -> int:
        from gpu_telemetry.collector.collect import collect_once
        from gpu_telemetry.config import load_config

        config = load_config(args.env)
        if args.test_alert:
            from gpu_telemetry.collector.alert_send import test_alert

            return test_alert(config)
        if args.loop:
            from gpu_telemetry.collector.loop import CollectorLoop

            interval = args.interval or config.sample_interval_sec
            return CollectorLoop(config, interval, quiet=args.quiet).run()
        return collect_once(config, dry_run=args.dry_run, raw=args.raw)

    return run(body, debug=args.debug, program="collect_once.py")

