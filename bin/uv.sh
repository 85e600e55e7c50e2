#!/usr/bin/env bash
# Run uv with these arguments, wherever uv is installed: a systemd user manager's PATH is short
# (no ~/.local/bin, where uv's installer puts it), so the units call this script instead of uv.
#
# Usage: bin/uv.sh UV-ARGUMENTS...
#
# Example: bin/uv.sh run --project ~/projects/gpu-telemetry --frozen bin/collect_once.py --loop
#
# Search order: UV_BIN (when set it must be an executable file), then ~/.local/bin/uv,
# ~/.cargo/bin/uv, /usr/local/bin/uv, /usr/bin/uv, then PATH. UV_SEARCH_PATH, a colon-separated
# list of files, replaces the fixed list in between (tests use it).
#
# Exit status: uv's own; 127 when no uv is found (or UV_BIN is not executable).
set -euo pipefail

PROG=uv.sh
readonly PROG

INSTALL_HINT="install it with: curl -LsSf https://astral.sh/uv/install.sh | sh  or  pip install uv"
readonly INSTALL_HINT

# The first executable file among the colon-separated candidates, then uv on PATH; printed.
# Builtins only, so that an empty PATH still gets the message below.
find_uv() {
  local candidates=$1 candidate found
  local -a list
  IFS=: read -ra list <<<"$candidates"
  for candidate in "${list[@]}"; do
    if [[ -n $candidate && -f $candidate && -x $candidate ]]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  found=$(command -v uv) || return 1
  printf '%s\n' "$found"
}

main() {
  local home=${HOME:-} uv candidates
  if [[ -n ${UV_BIN:-} ]]; then
    if [[ ! -f $UV_BIN || ! -x $UV_BIN ]]; then
      echo "$PROG: UV_BIN=$UV_BIN is not an executable file (unset UV_BIN to search the usual places)" >&2
      exit 127
    fi
    exec "$UV_BIN" "$@"
  fi
  candidates=${UV_SEARCH_PATH-$home/.local/bin/uv:$home/.cargo/bin/uv:/usr/local/bin/uv:/usr/bin/uv}
  if ! uv=$(find_uv "$candidates"); then
    candidates=${candidates//:/, }
    echo "$PROG: uv not found (looked in ${candidates:+$candidates, }PATH=${PATH:-}); $INSTALL_HINT" >&2
    exit 127
  fi
  exec "$uv" "$@"
}

main "$@"
