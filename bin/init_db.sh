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
# Example: PGHOST=db.lan PGDATABASE=gpu_telemetry bin/init_db.sh --writer-role gpu_writer
#
# Run it as the role that owns the database (README.md, Setting up, creates one named after
# your login); --writer-role and --reader-role also need CREATEROLE.
# Configuration: process environment > .env > libpq defaults. The connection uses libpq's own
# PG* variables (PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD PGSSLMODE); passwords never go on
# a command line. PSQL names the psql executable (default: psql).
# Every applied file is recorded in telemetry.schema_migrations; a second run skips it.
# A failure is one line: what failed, psql's reason, and a hint at the fix.
#
# Exit status: 0 done, 1 SQL error (a failed migration is rolled back), 2 usage, 75 server
# unreachable, 77 login refused or no rights, 78 configuration (no such role or database, TLS,
# env file), 127 no psql.
set -euo pipefail

PROG=init_db.sh
REPO_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
readonly PROG REPO_ROOT
# shellcheck source=lib/common.sh
source "$REPO_ROOT/bin/lib/common.sh"
readonly ROLE_NAME_RE='^[a-z_][a-z0-9_]*$'

# -w: never prompt for a password. psql runs several times, often with no terminal to ask on;
# the password comes from PGPASSWORD or ~/.pgpass, and a missing one gets a hint instead.
run_psql() {
  "$PSQL" -X -q -w -v ON_ERROR_STOP=1 "$@"
}

# psql's stderr on one line: its "psql: error:" and "psql:<stdin>:N:" prefixes say nothing,
# and a file's path is shortened to its name (the line number stays).
one_line() {
  tr -s '\n\t ' '   ' | sed -E 's/^ +//; s/ +$//; s/^psql: error: //; s/^psql:<stdin>:[0-9]+: //;
    s#^psql:([^ ]*/)?([^/ ]+:[0-9]+:) #\2 #'
}

# The command of README.md's "Setting up" that makes a database and the role that owns it.
create_command() {
  local role=$1 database=$2
  printf 'sudo -u postgres createuser --createrole %q && sudo -u postgres createdb --owner %q %q' \
    "$role" "$role" "$database"
}

# Say what failed, psql's reason and what to do about it, and exit with the status of that
# kind of failure: psql's own 1, 2 and 3 would tell the caller nothing. STEP is connect,
# schema, migration, roles or grants; login problems can only happen at connect.
fail() {
  local step=$1 what=$2 reason=$3 status hint login role database target
  login=$(id -un 2>/dev/null || printf '%s' "${USER:-}")
  role=${PGUSER:-$login}
  database=${PGDATABASE:-$role}
  case ${PGHOST:-} in
    "") target="the local socket (PGHOST unset), port ${PGPORT:-5432}" ;;
    /*) target="the socket in $PGHOST, port ${PGPORT:-5432}" ;;
    *) target="host $PGHOST, port ${PGPORT:-5432}" ;;
  esac
  local lower=${reason,,}
  case $step:$lower in
    *"connection refused"* | *"timeout expired"* | *"could not translate host name"* \
      | *"network is unreachable"* | *"no route to host"* | *socket*"no such file or directory"* \
      | *"server closed the connection"* | *"terminating connection"* \
      | *"connection to server was lost"* | *"could not receive data"* \
      | *"could not send data"* | *"ssl syscall error"* | *"the database system is"* \
      | *"too many clients"* | *"too many connections"* | *"remaining connection slots"*)
      status=75
      hint="no server answers at $target: is PostgreSQL running there (systemctl status postgresql)? Without PGHOST libpq uses the local socket; set PGHOST and PGPORT in $CONFIG_PLACE for another server"
      ;;
    connect:*"peer authentication failed"* | connect:*"ident authentication failed"*)
      status=77
      hint="over the local socket the server admits only the role named after your login ($login): leave PGUSER unset (README.md, Setting up, creates that role: $(create_command "$login" "${PGDATABASE:-gpu_telemetry}")), or for role $role set PGHOST=localhost and its PGPASSWORD in $CONFIG_PLACE"
      ;;
    connect:*"authentication failed"* | connect:*"no password supplied"* \
      | connect:*"password is required"*)
      status=77
      hint="role $role needs its password: set PGUSER and PGPASSWORD in $CONFIG_PLACE (mode 600) or use ~/.pgpass; for a server on this host, leave PGHOST, PGUSER and PGPASSWORD unset to log in without one as the role README.md (Setting up) creates: $(create_command "$login" "${PGDATABASE:-gpu_telemetry}")"
      ;;
    connect:*"no pg_hba.conf entry"*)
      status=77
      hint="the server's pg_hba.conf admits no connection from here as role $role to database $database: add a line for it there and reload the server (docs/operations.md, 1.3)"
      ;;
    connect:*"not permitted to log in"*)
      status=77
      hint="role $role exists but may not log in: give it LOGIN (ALTER ROLE ... LOGIN, as a superuser), or set PGUSER in $CONFIG_PLACE to the database's owner"
      ;;
    connect:*"connect privilege"*)
      status=77
      hint="role $role may not connect to database $database: its owner can GRANT CONNECT ON DATABASE to it, or set PGUSER in $CONFIG_PLACE to the owner"
      ;;
    connect:*"role \""*"\" does not exist"*)
      status=78
      hint="create it and its database (README.md, Setting up): $(create_command "$role" "$database"); or set PGUSER in $CONFIG_PLACE to a role that exists"
      ;;
    connect:*"database \""*"\" does not exist"*)
      status=78
      hint="create it, owned by role $role (README.md, Setting up): sudo -u postgres createdb --owner $(printf '%q %q' "$role" "$database"); or set PGDATABASE in $CONFIG_PLACE to a database that exists"
      ;;
    *ssl* | *certificate*)
      status=78
      hint="the TLS settings do not fit the server: check PGSSLMODE (and PGSSLROOTCERT) in $CONFIG_PLACE"
      ;;
    roles:*"permission denied"* | roles:*"must have"* | roles:*"must be"*)
      status=77
      hint="creating roles needs CREATEROLE: run init_db.sh as the owner README.md (Setting up) creates (createuser --createrole), or let a superuser give role $role CREATEROLE"
      ;;
    *"permission denied"* | *"must be owner of"* | *"must have"* | *"must be superuser"*)
      status=77
      hint="role $role may not change the schema of database $database: run init_db.sh as the database's owner (README.md, Setting up: $(create_command "$login" gpu_telemetry)), e.g. with --env naming the owner's connection"
      ;;
    connect:*)
      status=75
      hint="check PGHOST, PGPORT, PGDATABASE, PGUSER and PGPASSWORD in $CONFIG_PLACE (README.md, Setting up)"
      ;;
    *)
      status=1
      hint=""
      ;;
  esac
  die "$status" "$what: ${reason:-psql failed}${hint:+; hint: $hint}"
}

# Run psql for STEP (see fail); its output goes on to stdout, warnings of a call that worked
# to stderr, and a failure ends the script through fail. Inside $(...) or a pipeline the exit
# only leaves the subshell: callers add `|| exit`.
psql_step() {
  local step=$1 what=$2 errors status=0
  shift 2
  { errors=$(run_psql "$@" 2>&1 >&3 3>&-) || status=$?; } 3>&1
  if ((status == 0)); then
    [[ -z $errors ]] || printf '%s\n' "$errors" >&2
    return 0
  fi
  fail "$step" "$what" "$(printf '%s' "$errors" | one_line)"
}

check_connection() {
  psql_step connect "cannot connect to the database" -tA -c 'SELECT 1' >/dev/null
}

apply_migrations() {
  local file name applied
  psql_step schema "cannot create the schema telemetry" <<'SQL'
CREATE SCHEMA IF NOT EXISTS telemetry;
CREATE TABLE IF NOT EXISTS telemetry.schema_migrations (
    filename    text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
SQL
  applied=$(psql_step schema "cannot read telemetry.schema_migrations" \
    -tA -c 'SELECT filename FROM telemetry.schema_migrations') || exit
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
    psql_step migration "$name failed; nothing of it was applied" \
      --single-transaction -f "$file" \
      -c "INSERT INTO telemetry.schema_migrations (filename) VALUES ('${name//\'/\'\'}')"
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
  } | psql_step roles "cannot create role $role" -v role="$role" || exit
}

grant_writer() {
  local role=$1
  ensure_role "$role" "${WRITER_PGPASSWORD:-}"
  psql_step grants "cannot grant role $role its rights" -v role="$role" <<'SQL'
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
  psql_step grants "cannot grant role $role its rights" -v role="$role" <<'SQL'
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
  # Where the hints send the reader to change a setting.
  CONFIG_PLACE=${env_file:-$REPO_ROOT/.env}

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
