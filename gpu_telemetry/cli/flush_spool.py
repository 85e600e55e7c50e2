"""Deliver every spooled sample to PostgreSQL, then delete its file.

Files are deleted only after the COMMIT of their batch returned; an unreadable file is moved to
spool/bad/ with a .reason file and the others are delivered. One flusher at a time. Files
written by the original scripts (whole nvidia-smi XML under raw_json.nvidia_smi_q_x) are read
too. With RETENTION_DAYS set, rows and events older than that are deleted afterwards (the
one-minute rollup is kept).

Exit status: 0 spool delivered (also: nothing to deliver); 2 usage; 65 the database refused a
value of some file(s): each moved to spool/bad/ with the reason, the others delivered; 70
internal error (a bug: --debug shows the traceback); 75 database unreachable or failed mid-way,
or another flush running (files kept; the timer tries again); 77 the database role may not
write telemetry (files kept; connect as the writer role); 78 configuration error: the schema is
missing (run bin/init_db.sh) or the login is refused (check PGUSER, PGPASSWORD, PGDATABASE,
PGPORT), files kept; 130 interrupted.
"""

import argparse
import math

from gpu_telemetry.cli.common import OneLineParser, add_common_options, run
from gpu_telemetry.errors import EXIT_DATAERR, EXIT_OK

EXAMPLES = """\
examples:
  uv run ./bin/flush_spool.py                  deliver the spool
  uv run ./bin/flush_spool.py --wait 30        wait up to 30 s for a running flush to finish
"""


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="flush_spool.py",
        description=__doc__.split("\n\n", 1)[0],
        epilog=EXAMPLES + "\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch", type=int, default=1000, metavar="N",
                        help="samples per transaction (default: 1000)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SEC",
                        help="wait this long for another flush to finish (default: 0)")
    add_common_options(parser)
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    if not math.isfinite(args.wait):
        parser.error(f"--wait {args.wait:g}: not a finite number of seconds")
    if args.wait < 0:
        parser.error(f"--wait must be zero or more seconds, got {args.wait:g}")

    def body() -> int:
        from gpu_telemetry.collector.flush import flush_spool
        from gpu_telemetry.config import load_config

        config = load_config(args.env)
        result = flush_spool(config, batch_samples=args.batch, wait_sec=args.wait)
        if result.samples or result.quarantined or result.dropped:
            print(result.summary())
        else:
            print(f"spool is empty ({config.spool_dir})")
        if result.pruned is not None:
            rows, events = result.pruned
            print(f"retention {config.retention_days:g} days: deleted {rows} rows and "
                  f"{events} events older than that")
        return EXIT_DATAERR if result.refused else EXIT_OK

    return run(body, debug=args.debug, program="flush_spool.py")

