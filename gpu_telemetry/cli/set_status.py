"""bin/set_status.sh: set the status every sample carries (gpu_telemetry.ops.status)."""

from __future__ import annotations

import argparse
import json

from gpu_telemetry.cli.common import OneLineParser, add_common_options, run
from gpu_telemetry.config import load_config
from gpu_telemetry.ops.status import write_status
from gpu_telemetry.tags import TAGS

PROG = "set_status.sh"
EXAMPLES = """\
examples:
  bin/set_status.sh idle "baseline"
  bin/set_status.sh prod "inference (Open-WebUI/ollama)"
  bin/set_status.sh bench "gpu-burn fan=25%" --run-id manual-20260104
  bin/set_status.sh idle --clear-run-id

The file is STATUS_FILE (default <repo>/status.json); it is replaced atomically.

Exit status: 0 written; 2 usage or a refused tag, memo or run id; 70 internal error (a bug:
--debug shows the traceback); 74 the file cannot be written; 78 configuration error; 127
neither .venv nor uv to run this with; 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Set the status every sample carries: tag, memo, run id (status.json).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tag", metavar="TAG", help=f"one of {', '.join(TAGS)}")
    parser.add_argument("memo", metavar="MEMO", nargs="?",
                        help="free text, one line (default: the tag)")
    run_ids = parser.add_mutually_exclusive_group()
    run_ids.add_argument("--run-id", metavar="ID",
                         help="set this run id (default: keep the file's current one)")
    run_ids.add_argument("--clear-run-id", action="store_true", help="set the run id to null")
    add_common_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        config = load_config(args.env)
        document = write_status(config.status_file, args.tag, args.memo, run_id=args.run_id,
                                keep_run_id=not args.clear_run_id)
        print(json.dumps(document, ensure_ascii=False))
        return 0

    return run(body, debug=args.debug, program=PROG)


if __name__ == "__main__":
    raise SystemExit(main())
