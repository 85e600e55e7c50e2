#!/usr/bin/env bash
# Run gpu_burn through the phases pre-idle, bench, post, cooldown and final, writing each phase
# to status.json (tag, memo, one run id for the whole run) so the collected samples carry it.
#
# Usage: bin/run_gpuburn.sh [options] [-- GPU_BURN_ARGS...]
#
#   --sec SEC                gpu_burn duration, whole seconds (default 600)
#   --pre-idle-sec SEC       idle baseline first; 0 skips it (default 0)
#   --pre-idle-memo MEMO     (default "pre gpu-burn idle (baseline)")
#   --pre-tag TAG            tag while gpu_burn runs (default bench)
#   --pre-memo MEMO          (default "gpu-burn")
#   --post-tag TAG           written when gpu_burn ends, kept at least SAMPLE_INTERVAL_SEC
#                            (default idle)
#   --post-memo MEMO         (default "post gpu-burn idle")
#   --cooldown-sec SEC       idle cooldown after gpu_burn; 0 skips it (default 0)
#   --cooldown-memo MEMO     (default "cooldown idle (post gpu-burn)")
#   --final-tag TAG          written at the end and on Ctrl-C, TERM or failure
#                            (default: the status before the run; idle if none)
#   --final-memo MEMO        (default: the restored memo, else the tag)
#   --memo-suffix TEXT       appended to every memo of the run, e.g. " fan=25%"
#   --gpu-burn-dir DIR       folder holding gpu_burn (default GPU_BURN_DIR, ~/projects/gpu-burn)
#   --tmux | --no-tmux       run detached in a new tmux session (default --no-tmux)
#   --tmux-session NAME      with --tmux only (default gpuburn; an existing session is refused)
#   --english | --no-english LC_ALL=C LANG=C for gpu_burn and diagnostics (default on)
#   --diag | --no-diag       diagnostics before and after into the log (default on)
#   --dry-run                print the plan, write and start nothing
#   --env PATH, --debug, -h | --help (the full help, with exit statuses)
#
# Example: bin/run_gpuburn.sh --pre-idle-sec 180 --sec 900 --cooldown-sec 600 \
#            --final-tag prod --final-memo "prod (normal usage)" --memo-suffix " fan=25%" --tmux
#
# Log: LOG_DIR/gpu-burn-YYYYmmdd-HHMMSS.log. The command line is gpu_telemetry/cli/run_gpuburn.py,
# the run gpu_telemetry/ops/gpuburn/.
#
# Exit status: gpu_burn's own (0 every GPU passed), or 1 tmux refused, 2 usage, 70 internal error, 74 status file or
# log not writable, 78 configuration error, 124 gpu_burn hung, 127 gpu_burn (or uv) not found,
# 129 HUP, 130 INT, 143 TERM; --help says more.
set -euo pipefail

PROG=run_gpuburn.sh
REPO_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
readonly PROG REPO_ROOT
# shellcheck source=lib/common.sh
source "$REPO_ROOT/bin/lib/common.sh"

# --exec: signals (Ctrl-C, TERM, tmux's HUP) go straight to the runner, which restores the
# status.
main() {
  project_python --exec -m gpu_telemetry.cli.run_gpuburn "$@"
}

main "$@"
