#!/usr/bin/env bash
# Set the status every sample carries (tag, memo, run id) by replacing status.json atomically.
#
# Usage: bin/set_status.sh [options] TAG [MEMO]
#
#   TAG                 idle | prod | bench (anything else is refused, exit 2)
#   MEMO                free text, one line (default: the tag)
#   --run-id ID         set this run id (default: keep the run id the file already has)
#   --clear-run-id      set the run id to null
#   --env PATH          read configuration from PATH instead of <repo>/.env
#   --debug             show a traceback on unexpected errors
#   -h, --help          show this help
#
# Examples: bin/set_status.sh idle "baseline"
#           bin/set_status.sh prod "inference (Open-WebUI/ollama)"
#           STATUS_FILE=/run/user/1000/status.json bin/set_status.sh bench "gpu-burn fan=25%"
#
# Writes {"tag", "memo", "run_id", "since"} (since: now, UTC) to STATUS_FILE (default
# <repo>/status.json) through a temporary file in the same folder and a rename, so the
# collector never reads half a file. Prints the document written.
#
# Exit status: 0 written; 2 usage or a refused tag, memo or run id; 70 internal error (a bug:
# --debug shows the traceback); 74 the file cannot be written; 78 configuration error; 127
# neither <repo>/.venv nor uv to run the Python side with (bin/uv.sh); 130 interrupted.
set -euo pipefail

PROG=set_status.sh
REPO_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
readonly PROG REPO_ROOT
# shellcheck source=lib/common.sh
source "$REPO_ROOT/bin/lib/common.sh"

main() {
  local -a options=() positional=()
  while (($#)); do
    case $1 in
      -h | --help)
        usage
        exit 0
        ;;
      --run-id | --env)
        (($# >= 2)) || die 2 "$1 needs a value (see --help)"
        # As one word, so that a value starting with "-" reaches the check of values.
        options+=("$1=$2")
        shift
        ;;
      --run-id=* | --env=* | --clear-run-id | --debug) options+=("$1") ;;
      --)
        shift
        positional+=("$@")
        break
        ;;
      -?*) die 2 "unknown option $1 (see --help)" ;;
      *) positional+=("$1") ;;
    esac
    shift
  done
  ((${#positional[@]} >= 1)) || die 2 "a TAG is needed (see --help for the tags)"
  ((${#positional[@]} <= 2)) \
    || die 2 "${#positional[@]} arguments (${positional[*]}): TAG [MEMO] takes at most 2; quote a memo with spaces (see --help)"
  project_python --exec -m gpu_telemetry.cli.set_status "${options[@]}" -- "${positional[@]}"
}

main "$@"
