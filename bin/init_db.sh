#!/usr/bin/env bash
# Apply the schema (sql/*.sql, in lexical order, each file once) to the PostgreSQL database,
# and optionally create the collector's writer role and Grafana's read-only role.
#
# Usage: bin/init_db.sh [--env PATH] [--writer-role NAME] [--reader-role NAME]
#
#   --env PATH          read configuration from PATH instead of <repo>/.env
#   --writer-role NAME  create (if missing) a LOGIN role that may INSERT telemetry, and SELECT
#                       it (ON CONFLICT needs that), but never UPDATE, DELETE or TRUNCATE;
#                       password from WRITER_PGPASSWORD when set
#   --reader-role NAME  create (if missing) a read-only LOGIN role (Grafana);
#                       password from READER_PGPASSWORD when set
#   -h, --help          show this help
#
# Example: PGHOST=db.lan PGDATABASE=telemetry bin/init_db.sh --writer-role gpu_writer
#
# Configuration: process environment > .env > libpq defaults. The connection uses libpq's own
# PG* variables (PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD PGSSLMODE); passwords never go on
# a command line. PSQL names the psql executable (default: psql).
# Every applied file is recorded in telemetry.schema_migrations; a second run skips it.
#
# Exit status: 0 done; 1 database unreachable or an SQL error; 2 usage; 78 unreadable --env
# file; 127 psql not found.
set -euo pipefail

PROG=init_db.sh
REPO_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
readonly PROG REPO_ROOT
readonly ROLE_NAME_RE='^[a-z_][a-z0-9_]*$'

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

die() {
  local status=$1
  shift
  echo "$PROG: $*" >&2
  exit "$status"
}

# Export the KEY=VALUE lines of an env file whose keys the process environment does not set.
# The file is parsed, never sourced: it is configuration, not code.
load_env_file() {
  local file=$1 line key value lineno=0
  while IFS= read -r line || [[ -n $line ]]; do
    lineno=$((lineno + 1))
    line=${line%$'\r'}
    line=${line#"${line%%[![:space:]]*}"}
    [[ -z $line || $line == \#* ]] && continue
    if [[ $line =~ ^export[[:space:]]+(.*)$ ]]; then
      line=${BASH_REMATCH[1]}
    fi
    if [[ ! $line =~ ^([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]]; then
      echo "$PROG: $file:$lineno: not KEY=VALUE, ignored" >&2
      continue
    fi
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    if [[ $value =~ ^\"(.*)\"[[:space:]]*(#.*)?$ ]]; then
      value=${BASH_REMATCH[1]}
    elif [[ $value =~ ^\'(.*)\'[[:space:]]*(#.*)?$ ]]; then
      value=${BASH_REMATCH[1]}
    else
      value=${value%%[[:space:]]#*}
      value=${value%"${value##*[![:space:]]}"}
    fi
    if [[ -z ${!key+set} ]]; then
      export "$key=$value"
    fi
  done <"$file"
}

run_psql() {
  "$PSQL" -X -q -v ON_ERROR_STOP=1 "$@"
}

check_connection() {
  local message
  if ! message=$(run_psql -tA -c 'SELECT 1' 2>&1 >/dev/null); then
    # psql's own words, folded onto one line (it may list several addresses it tried).
    message=$(printf '%s' "$message" | tr -s '\n\t' '  ')
    die 1 "cannot connect to the database: ${message:-psql failed}"
  fi
}

apply_migrations() {
  local file name applied
  run_psql <<'SQL'
CREATE SCHEMA IF NOT EXISTS telemetry;
CREATE TABLE IF NOT EXISTS telemetry.schema_migrations (
    filename    text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
SQL
  applied=$(run_psql -tA -c 'SELECT filename FROM telemetry.schema_migrations')
  shopt -s nullglob
  local files=("$REPO_ROOT"/sql/*.sql)
  shopt -u nullglob
  ((${#files[@]})) || die 1 "no sql/*.sql files under $REPO_ROOT"
  for file in "${files[@]}"; do
    name=${file##*/}
    if grep -Fxq -- "$name" <<<"$applied"; then
      echo "skipped $name (already applied)"
      continue
    fi
    # psql -c does not interpolate variables, so the name goes in as an SQL literal.
    run_psql --single-transaction -f "$file" \
      -c "INSERT INTO telemetry.schema_migrations (filename) VALUES ('${name//\'/\'\'}')" \
      || die 1 "$name failed; nothing of it was applied"
    echo "applied $name"
  done
}

# Create a LOGIN role if missing and set its password when one is given. The password
# travels on psql's stdin, never in its argument list.
ensure_role() {
  local role=$1 password=$2
  {
    cat <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') AS missing \gset
\if :missing
CREATE ROLE :"role" LOGIN;
\endif
ALTER ROLE :"role" LOGIN;
SQL
    if [[ -n $password ]]; then
      printf "ALTER ROLE :\"role\" PASSWORD '%s';\n" "${password//\'/\'\'}"
    fi
  } | run_psql -v role="$role"
}

grant_writer() {
  local role=$1
  ensure_role "$role" "${WRITER_PGPASSWORD:-}"
  run_psql -v role="$role" <<'SQL'
SELECT current_database() AS dbname \gset
GRANT USAGE ON SCHEMA telemetry TO :"role";
GRANT SELECT, INSERT ON telemetry.gpu_telemetry, telemetry.collector_events TO :"role";
REVOKE UPDATE, DELETE, TRUNCATE ON telemetry.gpu_telemetry, telemetry.collector_events
    FROM :"role";
GRANT TEMP ON DATABASE :"dbname" TO :"role";
SQL
  echo "writer role $role: INSERT and SELECT on telemetry.gpu_telemetry, telemetry.collector_events"
  [[ -n ${WRITER_PGPASSWORD:-} ]] || echo "note: WRITER_PGPASSWORD not set; $role has no password set by this run"
}

grant_reader() {
  local role=$1
  ensure_role "$role" "${READER_PGPASSWORD:-}"
  run_psql -v role="$role" <<'SQL'
GRANT USAGE ON SCHEMA telemetry TO :"role";
GRANT SELECT ON ALL TABLES IN SCHEMA telemetry TO :"role";
ALTER ROLE :"role" SET default_transaction_read_only = on;
SQL
  echo "reader role $role: SELECT on every telemetry table, read-only sessions"
  [[ -n ${READER_PGPASSWORD:-} ]] || echo "note: READER_PGPASSWORD not set; $role has no password set by this run"
}

main() {
  local env_file="" writer_role="" reader_role=""
  while (($#)); do
    case $1 in
      -h | --help)
        usage
        return 0
        ;;
      --env | --writer-role | --reader-role)
        (($# >= 2)) || die 2 "$1 needs a value (see --help)"
        case $1 in
          --env) env_file=$2 ;;
          --writer-role) writer_role=$2 ;;
          --reader-role) reader_role=$2 ;;
        esac
        shift 2
        ;;
      --env=* | --writer-role=* | --reader-role=*)
        case $1 in
          --env=*) env_file=${1#*=} ;;
          --writer-role=*) writer_role=${1#*=} ;;
          --reader-role=*) reader_role=${1#*=} ;;
        esac
        shift
        ;;
      *) die 2 "unknown argument: $1 (see --help)" ;;
    esac
  done
  local role
  for role in "$writer_role" "$reader_role"; do
    if [[ -n $role && ! $role =~ $ROLE_NAME_RE ]]; then
      die 2 "invalid role name '$role': use lower-case letters, digits and _ (${ROLE_NAME_RE})"
    fi
  done

  if [[ -n $env_file ]]; then
    [[ -f $env_file && -r $env_file ]] || die 78 "env file not found or unreadable: $env_file"
    load_env_file "$env_file"
  elif [[ -f $REPO_ROOT/.env ]]; then
    load_env_file "$REPO_ROOT/.env"
  fi

  PSQL=${PSQL:-psql}
  command -v "$PSQL" >/dev/null 2>&1 \
    || die 127 "psql not found ($PSQL); install the PostgreSQL client, e.g. apt-get install postgresql-client"
  # An unroutable host would otherwise hang for minutes; IF NOT EXISTS notices are noise.
  export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}
  export PGOPTIONS="${PGOPTIONS:+$PGOPTIONS }-c client_min_messages=warning"

  check_connection
  apply_migrations
  [[ -z $writer_role ]] || grant_writer "$writer_role"
  [[ -z $reader_role ]] || grant_reader "$reader_role"
}

main "$@"
