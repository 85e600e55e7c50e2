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
# shellcheck source=lib/common.sh
source "$REPO_ROOT/bin/lib/common.sh"
readonly ROLE_NAME_RE='^[a-z_][a-z0-9_]*$'



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

# The SCRAM-SHA-256 verifier of a password, computed here: the server (and any statement log
# it keeps) then sees only the verifier, never the password. Without python3, the password
# itself (the server hashes it).
scram_verifier() {
  local password=$1
  if ! command -v python3 >/dev/null 2>&1; then
    printf '%s' "${password//\'/\'\'}"
    return
  fi
  SCRAM_PASSWORD=$password python3 - <<'PY'
import base64, hashlib, hmac, os
password = os.environ["SCRAM_PASSWORD"].encode()
salt, iterations = os.urandom(16), 4096
salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
client_key = hmac.new(salted, b"Client Key", "sha256").digest()
server_key = hmac.new(salted, b"Server Key", "sha256").digest()
b64 = lambda data: base64.b64encode(data).decode()
print(f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}"
      f":{b64(server_key)}", end="")
PY
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
      printf "ALTER ROLE :\"role\" PASSWORD '%s';\n" "$(scram_verifier "$password")"
    fi
  } | run_psql -v role="$role"
}

grant_writer() {
  local role=$1
  ensure_role "$role" "${WRITER_PGPASSWORD:-}"
  run_psql -v role="$role" <<'SQL'
SELECT current_database() AS dbname \gset
GRANT USAGE ON SCHEMA telemetry TO :"role";
REVOKE ALL ON ALL TABLES IN SCHEMA telemetry FROM :"role";
GRANT INSERT ON telemetry.gpu_telemetry, telemetry.collector_events TO :"role";
-- ON CONFLICT compares the key; nothing else may be read back.
GRANT SELECT (ts, host, gpu_uuid) ON telemetry.gpu_telemetry TO :"role";
GRANT SELECT (ts, host, kind, gpu_uuid) ON telemetry.collector_events TO :"role";
GRANT EXECUTE ON FUNCTION telemetry.raw_snapshot_times(text[], timestamptz) TO :"role";
-- RETENTION_DAYS: the flush timer prunes through this function, not with DELETE rights.
GRANT EXECUTE ON FUNCTION telemetry.prune(double precision) TO :"role";
-- The flush stages each batch in a temporary table.
GRANT TEMP ON DATABASE :"dbname" TO :"role";
SQL
  echo "writer role $role: INSERT on telemetry.gpu_telemetry and telemetry.collector_events," \
    "SELECT on their key columns; no UPDATE, DELETE or TRUNCATE"
  [[ -n ${WRITER_PGPASSWORD:-} ]] || echo "note: WRITER_PGPASSWORD not set; $role has no password set by this run"
}

grant_reader() {
  local role=$1
  ensure_role "$role" "${READER_PGPASSWORD:-}"
  run_psql -v role="$role" <<'SQL'
GRANT USAGE ON SCHEMA telemetry TO :"role";
GRANT SELECT ON ALL TABLES IN SCHEMA telemetry TO :"role";
-- Tables of later migrations too.
ALTER DEFAULT PRIVILEGES IN SCHEMA telemetry GRANT SELECT ON TABLES TO :"role";
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

  load_configuration "$env_file"

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
