"""Send one alert through ALERT_COMMAND, for what the collector cannot say itself: the host
health check's verdict (bin/host_healthcheck.sh --alert) and the collector's unit failing
(systemd/gpu-telemetry-down.service, its OnFailure= unit). docs/alerts.md.

Exit status: 0 sent; 1 ALERT_COMMAND failed or timed out; 2 usage; 70 internal error (a bug:
--debug shows the traceback); 78 configuration error, or ALERT_COMMAND is not set; 130
interrupted.
"""

from __future__ import annotations

import argparse

from gpu_telemetry.cli.common import OneLineParser, add_common_options, run

EXAMPLES = """\
examples:
  python -m gpu_telemetry.cli.send_alert collector_down firing "x1ai: the collector stopped"
  python -m gpu_telemetry.cli.send_alert host_health resolved "x1ai: health check OK" --value OK
"""


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="send_alert",
        description="Send one alert (NAME, STATE, SUMMARY) through ALERT_COMMAND.",
        epilog=EXAMPLES + "\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("alert", metavar="NAME", help="e.g. collector_down, host_health")
    parser.add_argument("state", choices=("firing", "resolved"))
    parser.add_argument("summary", metavar="SUMMARY", help="one line a person reads")
    parser.add_argument("--value", help="the value behind it (e.g. the verdict)")
    add_common_options(parser)
    args = parser.parse_args(argv)
    if not args.summary.strip():
        parser.error("SUMMARY is empty: say what happened")

    def body() -> int:
        from gpu_telemetry.collector.alert_send import send_now
        from gpu_telemetry.config import load_config

        return send_now(load_config(args.env), args.alert, args.state, args.summary,
                        value=args.value, program="send_alert")

    return run(body, debug=args.debug, program="send_alert")


if __name__ == "__main__":
    raise SystemExit(main())
