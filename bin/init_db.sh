#!/usr/bin/env bash
# Apply the schema (sql/*.sql, in lexical order, each file once) to the PostgreSQL database,
# and optionally create the collector's writer role and Grafana's read-only role.
#
# Usage: bin/init_db.sh [--env PATH] [--writer-role NAME] [--reader-role NAME]
#                        [--upgrade | --reset [--events] [--yes]] [--batch-rows N] [--debug]
#
#   --env PATH          read configuration from PATH instead of <repo>/.env
#   --writer-role NAME  create (if missing) a LOGIN role that may INSERT telemetry, and SELECT
#                       it (ON CONFLICT needs that), but never UPDATE, DELETE or TRUNCATE;
#                       password from WRITER_PGPASSWORD when set
#   --reader-role NAME  create (if missing) a read-only LOGIN role (Grafana);
#                       password from READER_PGPASSWORD when set
#   --upgrade           convert a database of the original scripts: keep their table as
#                       telemetry.gpu_telemetry_original, create the schema, and fill every
#                       column of every old row from the XML stored with it (docs/upgrading.md);
#                       resumable, and a second run changes nothing. Without it, init_db.sh
#                       stops on such a database before changing anything (exit 78)
#   --reset             then empty the samples, raw snapshots and the one-minute rollup (what
#                       TRUNCATE telemetry.gpu_telemetry did before it became a view), after
#                       a question answered y; GPU identities and statuses are kept
#   --events            with --reset: empty telemetry.collector_events too
#   --yes               with --reset: do not ask (needed when stdin is not a terminal)
#   --batch-rows N      rows per transaction when moving a wide table of schema versions 1 to
#                       5 into the narrow tables (default 20000) or converting the original
#                       rows (default 5000); progress on stderr
#   --debug             show a traceback on unexpected errors
#   -h, --help          show this help
#
# Example: PGHOST=db.lan PGDATABASE=gpu_telemetry bin/init_db.sh --writer-role gpu_writer
#
# Run it as the role that owns the database (README.md, Setting up, creates one named after
# your login); --writer-role and --reader-role also need CREATEROLE.
# Configuration: process environment > .env > libpq defaults. The connection uses libpq's own
# PG* variables (PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD PGSSLMODE, ~/.pgpass), read by
# psycopg; passwords never go on a command line. A role's password reaches the server only as
# its SCRAM-SHA-256 verifier, computed here. The work is done by the project's Python
# (gpu_telemetry/cli/init_db.py), run from <repo>/.venv or through bin/uv.sh.
# Every applied file is recorded in telemetry.schema_migrations; a second run skips it.
# A failure is one line: what failed, the server's reason, and a hint at the fix.
#
# Exit status: 0 done, 1 SQL error (a failed migration is rolled back) or a declined --reset,
# 2 usage, 70 internal
# error (--debug shows the traceback), 75 server unreachable, 77 no rights, 78 login refused
# (wrong or missing password, no such role or database, pg_hba.conf, no LOGIN) or
# configuration (TLS, env file, a database of the original scripts without --upgrade), 127
# no Python to run it with (neither <repo>/.venv nor uv), 130 interrupted.
set -euo pipefail

PROG=init_db.sh
REPO_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
readonly PROG REPO_ROOT
# shellcheck source=lib/common.sh
source "$REPO_ROOT/bin/lib/common.sh"

main() {
  local -a args=("$@")
  # --help is answered here, from the header above; every other argument, checked or not, is
  # the Python side's (a value such as `--env --help` stays a value).
  while (($#)); do
    case $1 in
      -h | --help)
        usage
        return 0
        ;;
      --env | --writer-role | --reader-role | --batch-rows) shift ;;
    esac
    (($# == 0)) || shift
  done
  python_available \
    || die 127 "no Python to run the schema with: neither $REPO_ROOT/.venv nor uv (bin/uv.sh); install uv (curl -LsSf https://astral.sh/uv/install.sh | sh), then run uv sync in $REPO_ROOT"
  project_python -m gpu_telemetry.cli.init_db "${args[@]}"
}

main "$@"
