"""Print the configuration an env file adds to the environment, as bash `export` lines.

The shell scripts (bin/lib/common.sh, load_configuration) eval this listing instead of parsing
.env themselves, so that they and the Python commands read one file one way: python-dotenv's
quoting, escapes and ${VAR} expansion, the process environment winning, and the refusal of a
file holding PGPASSWORD that others can read. The values reach the shell on this command's
stdout, never on a command line.

Exit status: 0 printed (nothing when there is no file or it adds nothing); 2 usage; 70
internal error (a bug: --debug shows the traceback); 78 the env file is missing, unreadable,
or holds PGPASSWORD while others can read it.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys

from gpu_telemetry.cli.common import OneLineParser, add_common_options, run

# Bash can only export names of this shape; python-dotenv accepts others (a.b=1).
_SHELL_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

EXAMPLES = """\
examples:
  python -m gpu_telemetry.cli.env                     what <repo>/.env adds
  eval "$(python -m gpu_telemetry.cli.env --env ~/.config/gpu-telemetry/owner.env)"
"""


def export_lines(values: dict[str, str]) -> list[str]:
    """`export KEY='value'` for each key bash can hold, quoted so that eval gives the value
    back byte for byte."""
    return [f"export {key}={shlex.quote(value)}" for key, value in values.items()
            if _SHELL_NAME_RE.fullmatch(key)]


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="env",
        description="Print, as bash export lines, the keys of the env file that the process "
                    "environment does not set.",
        epilog=EXAMPLES + "\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--program", metavar="NAME", default="env",
                        help="the name errors start with (the calling script's)")
    add_common_options(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from gpu_telemetry.config import env_file_additions

        _, additions = env_file_additions(args.env)
        for line in export_lines(additions):
            sys.stdout.write(line + "\n")
        return 0

    return run(body, debug=args.debug, program=args.program)


if __name__ == "__main__":
    raise SystemExit(main())
