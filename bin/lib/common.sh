# shellcheck shell=bash
# What the shell entry points share: usage from the header comment, one-line errors, reading
# .env the way the Python side does. Sourced by bin/*.sh after they set PROG and REPO_ROOT.

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

# Export the KEY=VALUE lines of an env file whose keys the process environment does not set
# (precedence: environment > .env > defaults). The file is parsed, never sourced: it is
# configuration, not code. A file holding PGPASSWORD that others may read is refused (78).
load_env_file() {
  local file=$1 line key value lineno=0 mode
  [[ -r $file ]] || die 78 "cannot read env file $file"
  mode=$(stat -L -c %a -- "$file")
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
    if [[ $key == PGPASSWORD && -n $value ]]; then
      if (((8#$mode & 8#044) != 0)); then
        die 78 "refusing $file: it holds PGPASSWORD and others can read it (mode $mode); fix: chmod 600 $file"
      fi
    fi
    if [[ -z ${!key+set} ]]; then
      export "$key=$value"
    fi
  done <"$file"
}

# The configuration: the env file given with --env (it must exist), else the repository's
# .env when there is one.
load_configuration() {
  local env_file=$1
  if [[ -n $env_file ]]; then
    [[ -f $env_file && -r $env_file ]] || die 78 "env file not found or unreadable: $env_file"
    load_env_file "$env_file"
  elif [[ -f $REPO_ROOT/.env ]]; then
    load_env_file "$REPO_ROOT/.env"
  fi
}

# Relative paths in the configuration are taken from the repository root.
from_repo() {
  if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$REPO_ROOT/$1"; fi
}
