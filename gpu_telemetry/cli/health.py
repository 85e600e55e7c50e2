"""The collector section of bin/host_healthcheck.sh: spool depth, the age of the last stored
sample, the GPUs' thermal state and the latest collector events, as evidence lines and then
one `OK: ...` / `WARN: ...` line per finding (gpu_telemetry/ops/health.py says the rules).

Exit status: 0 every finding OK; 1 a WARN finding; 2 usage; 70 internal error (a bug:
--debug shows the traceback); 78 configuration error; 130 interrupted.
"""

from __future__ import annotations

import argparse

from gpu_telemetry.cli.common import (
    OneLineParser,
    add_common_options,
    check_positive_seconds,
    run,
)

EXIT_WARN = 1

EXAMPLES = """\
examples:
  python -m gpu_telemetry.cli.health
  python -m gpu_telemetry.cli.health --env ~/.config/gpu-telemetry/reader.env --no-reading
"""


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="health",
        description="Report the collector's health: spool, last sample, thermal state, events.",
        epilog=EXAMPLES + "\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--reading-timeout", type=float, metavar="SEC",
                        help="seconds the nvidia-smi reading may take (default: "
                             "NVIDIA_SMI_TIMEOUT_SEC)")
    parser.add_argument("--no-reading", action="store_true",
                        help="never run nvidia-smi (the thermal state from the database only)")
    add_common_options(parser)
    args = parser.parse_args(argv)
    check_positive_seconds(parser, "--reading-timeout", args.reading_timeout, "reading timeout")

    def body() -> int:
        from gpu_telemetry.config import load_config
        from gpu_telemetry.ops.health import collector_health, report_lines

        report = collector_health(load_config(args.env),
                                  reading_timeout_sec=args.reading_timeout,
                                  read_gpu=not args.no_reading)
        for line in report_lines(report):
            print(line, flush=True)
        return 0 if report.worst == "OK" else EXIT_WARN

    return run(body, debug=args.debug, program="health")


if __name__ == "__main__":
    raise SystemExit(main())
