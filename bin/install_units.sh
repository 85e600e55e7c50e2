#!/usr/bin/env bash
# Install the systemd user units for this clone: writes systemd/gpu-telemetry.service,
# gpu-telemetry-flush.service, gpu-telemetry-flush.timer and gpu-telemetry-down.service (the
# collector's OnFailure= alert) into the user unit folder with the
# clone's real path in place of %h/projects/gpu-telemetry, then reloads the user manager.
#
# Usage: bin/install_units.sh [--no-reload] [--enable] [--print]
#
#   --no-reload  write the units, do not run `systemctl --user daemon-reload`
#   --enable     also `systemctl --user enable --now` the collector and the flush timer
#   --print      print the rendered units on stdout; write nothing
#   -h, --help   show this help
#
# Example: bin/install_units.sh --enable
#
# Units go to ${XDG_CONFIG_HOME:-~/.config}/systemd/user (an existing file is replaced).
# Without a reachable user manager (no `systemctl --user`), the reload is skipped with a note.
# SYSTEMCTL names the systemctl executable (default: systemctl). Units keep running after
# logout only with lingering: loginctl enable-linger "$USER".
#
# Interrupted (Ctrl-C, SIGTERM, SIGHUP), it removes the temp file it was writing and ends by
# that signal (status 128 + its number).
#
# Exit status: 0 done; 1 a unit could not be written or systemctl failed; 2 usage.
set -euo pipefail

PROG=install_units.sh
REPO_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
readonly PROG REPO_ROOT
# shellcheck source=lib/common.sh
source "$REPO_ROOT/bin/lib/common.sh"
readonly PLACEHOLDER='%h/projects/gpu-telemetry'
readonly UNITS=(gpu-telemetry.service gpu-telemetry-flush.service gpu-telemetry-flush.timer
  gpu-telemetry-down.service)
# Temp files not yet renamed into place: removed on any exit, Ctrl-C and kill included, so
# the unit folder never keeps a half-written .<unit>.XXXXXX.
TEMP_FILES=()

cleanup() {
  ((${#TEMP_FILES[@]} == 0)) || rm -f -- "${TEMP_FILES[@]}"
}

# Clean up, then die of the same signal, so the caller sees how the script ended (130, 143).
on_signal() {
  local signal=$1
  cleanup
  trap - "$signal" EXIT
  kill -s "$signal" "$$"
}

# systemd would split a path at whitespace and expand % and $ in it; refuse rather than guess.
check_root_path() {
  if [[ $REPO_ROOT =~ [[:space:]\"\'\\%\$] ]]; then
    die 1 "the clone's path '$REPO_ROOT' holds whitespace, a quote, \\, % or \$, which unit files cannot hold as written; move the clone"
  fi
}

# The template with the clone's path; its leading comment (about the committed paths) gives
# way to one naming the clone and the template.
render() {
  local unit=$1 line in_header=1
  printf '# Written by bin/install_units.sh for the clone at %s;\n' "$REPO_ROOT"
  printf '# edit systemd/%s there and run the script again.\n' "$unit"
  while IFS= read -r line || [[ -n $line ]]; do
    if ((in_header)) && [[ $line == \#* ]]; then
      continue
    fi
    in_header=0
    printf '%s\n' "${line//"$PLACEHOLDER"/"$REPO_ROOT"}"
  done <"$REPO_ROOT/systemd/$unit"
}

install_unit() {
  local unit=$1 dir=$2 tmp
  tmp=$(mktemp "$dir/.$unit.XXXXXX") || die 1 "cannot write in $dir"
  TEMP_FILES+=("$tmp")
  if ! render "$unit" >"$tmp" || ! chmod 644 "$tmp" || ! mv -f "$tmp" "$dir/$unit"; then
    rm -f "$tmp"
    die 1 "cannot write $dir/$unit"
  fi
  echo "installed $dir/$unit"
}

user_manager_reachable() {
  command -v "$SYSTEMCTL" >/dev/null 2>&1 && "$SYSTEMCTL" --user show-environment >/dev/null 2>&1
}

main() {
  local reload=1 enable=0 print=0 unit signal
  trap cleanup EXIT
  for signal in INT TERM HUP; do
    # shellcheck disable=SC2064 # the signal's name is fixed now, on purpose
    trap "on_signal $signal" "$signal"
  done
  while (($#)); do
    case $1 in
      -h | --help)
        usage
        return 0
        ;;
      --no-reload) reload=0 ;;
      --enable) enable=1 ;;
      --print) print=1 ;;
      *) die 2 "unknown argument: $1 (see --help)" ;;
    esac
    shift
  done
  ((enable && !reload)) && die 2 "--enable needs the reload; drop --no-reload"
  ((print && enable)) && die 2 "--print writes nothing, so there is nothing to --enable; drop one"
  check_root_path

  if ((print)); then
    for unit in "${UNITS[@]}"; do
      echo "### $unit"
      render "$unit"
    done
    return 0
  fi

  local home=${HOME:?HOME is not set}
  local dir=${XDG_CONFIG_HOME:-$home/.config}/systemd/user
  mkdir -p "$dir" || die 1 "cannot create $dir"
  for unit in "${UNITS[@]}"; do
    install_unit "$unit" "$dir"
  done

  ((reload)) || return 0
  SYSTEMCTL=${SYSTEMCTL:-systemctl}
  if ! user_manager_reachable; then
    echo "note: systemctl --user is not available here (no user manager); once it is, run:"
    echo "  systemctl --user daemon-reload"
    echo "  systemctl --user enable --now gpu-telemetry.service gpu-telemetry-flush.timer"
    ((enable)) && die 1 "cannot enable the units without a user manager"
    return 0
  fi
  "$SYSTEMCTL" --user daemon-reload || die 1 "systemctl --user daemon-reload failed"
  echo "reloaded the user manager"
  if ((enable)); then
    "$SYSTEMCTL" --user enable --now gpu-telemetry.service gpu-telemetry-flush.timer \
      || die 1 "systemctl --user enable --now failed"
    echo "enabled and started gpu-telemetry.service and gpu-telemetry-flush.timer"
  else
    echo "next: systemctl --user enable --now gpu-telemetry.service gpu-telemetry-flush.timer"
  fi
}

main "$@"
