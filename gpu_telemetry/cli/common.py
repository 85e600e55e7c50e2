"""What every entry point shares: the common options and turning failures into one line and
an exit code (a traceback only with --debug)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Callable

from gpu_telemetry.errors import (
    EXIT_NO_PERMISSION,
    EXIT_SOFTWARE,
    EXIT_SPOOLED,
    EXIT_USAGE,
    TelemetryError,
)


class OneLineParser(argparse.ArgumentParser):
    """Bad input is one line on stderr and exit 2 (argparse would print the usage too)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", metavar="PATH",
                        help="read configuration from this .env file (default: <repo>/.env); "
                             "the process environment still wins")
    parser.add_argument("--debug", action="store_true",
                        help="show a traceback on unexpected errors")


def check_positive_seconds(parser: argparse.ArgumentParser, option: str, value: float | None,
                           what: str) -> None:
    """Refuse a number of seconds that is not finite or not more than zero, naming `option`
    and `what` it sets: argparse's float takes "nan", "inf" and negatives, which no schedule
    or timeout can use. None (the option not given) passes."""
    if value is None:
        return
    if not math.isfinite(value):
        parser.error(f"{option} {value:g}: not a finite number of seconds")
    if value <= 0:
        parser.error(f"{option} {value:g}: the {what} must be more than zero seconds")


def run(body: Callable[[], int], *, debug: bool, program: str) -> int:
    try:
        return body()
    except TelemetryError as exc:
        # One line, whatever the message holds: a database's reason can span several.
        print(f"{program}: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`... --dry-run | head`): nothing left to say to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the entry point's last line of defence
        # psycopg is not imported here (plot_temp.py starts without it); its errors are
        # recognised by module.
        if type(exc).__module__.startswith("psycopg") and not debug:
            return _database_error(exc, program)
        if debug:
            traceback.print_exc()
        else:
            print(f"{program}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
                  file=sys.stderr)
        return EXIT_SOFTWARE


def _database_error(exc: Exception, program: str) -> int:
    message = " ".join((str(exc).strip() or type(exc).__name__).splitlines()[0].split())
    if type(exc).__name__ == "InsufficientPrivilege":
        print(f"{program}: the database role may not do this: {message} (plots and reports "
              "read telemetry: connect as a role that may, e.g. the reader role of "
              "bin/init_db.sh --reader-role)", file=sys.stderr)
        return EXIT_NO_PERMISSION
    print(f"{program}: database error: {message}", file=sys.stderr)
    return EXIT_SPOOLED
