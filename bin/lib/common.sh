# shellcheck shell=bash
# What the shell entry points share: usage from the header comment, one-line errors, reading
# .env through the Python side, so both read it one way. Sourced by bin/*.sh after they set
# PROG and REPO_ROOT.

# The calling script's header comment (from line 2 to `set -euo pipefail`), without the '#'.
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[-1]}"
}

die() {
  local status=$1
  shift
  echo "$PROG: $*" >&2
  exit "$status"
}

# The project's interpreter: GPU_TELEMETRY_PYTHON when set (an interpreter that has the
# dependencies, e.g. on a machine without uv: bench/device_check.sh), else its virtual
# environment when there is one, else through uv (bin/uv.sh, which exits 127 when it finds
# no uv). -P: the caller's working directory is not
# on the module path; the repository is. `project_python --exec ...` replaces the shell with
# it, so that signals (Ctrl-C, TERM, tmux's HUP) and the exit status are the Python side's.
project_python() {
  local replace=0 path="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
  local -a python=("$REPO_ROOT/bin/uv.sh" run --quiet --project "$REPO_ROOT" python -P)
  if [[ ${1-} == --exec ]]; then
    replace=1
    shift
  fi
  if [[ -n ${GPU_TELEMETRY_PYTHON:-} ]]; then
    python=("$GPU_TELEMETRY_PYTHON" -P)
  elif [[ -x $REPO_ROOT/.venv/bin/python ]]; then
    python=("$REPO_ROOT/.venv/bin/python" -P)
  fi
  if ((replace)); then
    PYTHONPATH=$path exec "${python[@]}" "$@"
  fi
  PYTHONPATH=$path "${python[@]}" "$@"
}

# Whether project_python has an interpreter to run (without starting it).
python_available() {
  [[ -n ${GPU_TELEMETRY_PYTHON:-} ]] && return 0
  [[ -x $REPO_ROOT/.venv/bin/python ]] && return 0
  "$REPO_ROOT/bin/uv.sh" --version >/dev/null 2>&1
}

# The configuration: the env file given with --env (it must exist), else the repository's
# .env when there is one. The Python side reads it (gpu_telemetry/config.py, python-dotenv)
# and prints `export KEY='value'` lines for the keys the process environment does not set;
# they are evaluated here, so the shell scripts and the Python commands see the same values.
# The file's own problems (missing, unreadable, PGPASSWORD readable by others) are one line
# from the Python side and exit 78.
load_configuration() {
  local env_file=$1 listing status=0
  local -a args=("--program=$PROG")
  if [[ -n $env_file ]]; then
    args+=("--env=$env_file")
  elif [[ ! -f $REPO_ROOT/.env ]]; then
    return 0
  fi
  listing=$(project_python -m gpu_telemetry.cli.env "${args[@]}") || status=$?
  ((status != 78)) || exit 78
  ((status == 0)) || die 78 "cannot read the configuration${env_file:+ in $env_file}: the project's Python failed (exit $status)"
  eval "$listing"
}

# Relative paths in the configuration are taken from the repository root.
from_repo() {
  if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$REPO_ROOT/$1"; fi
}
