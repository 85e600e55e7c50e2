#!/usr/bin/env python3
"""Deliver every spooled sample to PostgreSQL, then delete its file.

Files are deleted only after the COMMIT of their batch returned; an unreadable file is moved to
spool/bad/ with a .reason file and the others are delivered. One flusher at a time. Files
written by the original scripts (whole nvidia-smi XML under raw_json.nvidia_smi_q_x) are read
too. With RETENTION_DAYS set, rows and events older than that are deleted afterwards (the
one-minute rollup is kept). Exit status: 0 spool delivered; 75 database unreachable or
another flush running (files kept); 78 configuration error; 2 usage.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_telemetry.cli import OneLineParser, add_common_options, run  # noqa: E402

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
        parser.error("--batch must be at least 1")
    if args.wait < 0:
        parser.error("--wait must be zero or more")

    def body() -> int:
        from gpu_telemetry.config import load_config
        from gpu_telemetry.flush import flush_spool

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
        return 0

    return run(body, debug=args.debug, program="flush_spool.py")


if __name__ == "__main__":
    raise SystemExit(main())
