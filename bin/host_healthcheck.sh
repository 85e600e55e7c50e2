#!/usr/bin/env bash
# Host health check for a GPU telemetry host: the OS, the GPU and its driver, the kernel log,
# the disks and sensors, the units, and the collector's own health; ends with a verdict.
#
# Usage: bin/host_healthcheck.sh [--no-sudo] [--log FILE | --no-log] [--env PATH] [--alert]
#
#   --no-sudo   never call sudo (sudo is only ever `sudo -n`, which never asks for a password)
#   --alert     send the verdict through ALERT_COMMAND when it changes (WARN or FAIL: alert
#               host_health firing; OK again: resolved), for a timer; docs/alerts.md
#   --log FILE  also write the report to FILE (default: LOG_DIR/healthcheck-<stamp>.log)
#   --no-log    write the report to stdout only
#   --env PATH  read configuration from PATH instead of <repo>/.env
#   -h, --help  show this help
#
# Example: bin/host_healthcheck.sh --no-sudo --log /tmp/health.log
#
# Configuration: process environment > .env > defaults (NVIDIA_SMI, NVIDIA_SMI_TIMEOUT_SEC,
# SAMPLE_INTERVAL_SEC, SPOOL_DIR, LOG_DIR and the PG* connection, as for the collector), read
# by the project's Python (<repo>/.venv, else bin/uv.sh). Every command runs under `timeout`
# (CHECK_TIMEOUT_SEC, default 10); a missing one is noted, never fatal. DMESG, SYSTEMCTL, SUDO
# name those executables. The Collector section comes from gpu_telemetry/cli/health.py: spool
# depth (pending samples; quarantined files in spool/bad), the age of this host's last stored
# sample, the thermal state (the latest stored rows, else one nvidia-smi reading), the last
# collector events, the collector's open alerts (each a WARN) and the last Xids.
#
# Verdict, the last line: "verdict: FAIL" (exit 2) when nvidia-smi -L fails or lists no GPU,
# or dmesg shows Xid 79 (GPU fallen off the bus) since boot; "verdict: WARN" (exit 1) when
# samples wait in the spool or are quarantined, the last stored sample of this host is missing
# or stale (older than 3 x SAMPLE_INTERVAL_SEC and than 60 s), the database is unreachable, a
# unit is not active, a GPU is in thermal slowdown or within 5 °C of its slowdown threshold,
# the collector section could not run, or sensors is missing; "verdict: OK" (exit 0) otherwise.
#
# Exit status: 0 verdict OK; 1 verdict WARN, or the log file cannot be written (use --no-log);
# 2 verdict FAIL, or usage (before any check); 78 the --env file is unreadable, or an env file
# holding PGPASSWORD that others can read. With --alert, a verdict that could not be sent is
# said on stderr (send_alert's line) and does not change the status.
set -euo pipefail

PROG=host_healthcheck.sh
REPO_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
readonly PROG REPO_ROOT
# shellcheck source=lib/common.sh
source "$REPO_ROOT/bin/lib/common.sh"
# Its exit status is not this script's: its OK/WARN lines join the verdict.
readonly COLLECTOR_HEALTH=gpu_telemetry.cli.health
# --alert's sender; its status is not this script's either (a failure is said, not passed on).
readonly SEND_ALERT=gpu_telemetry.cli.send_alert
FAILS=()
WARNS=()
OKS=()
GPU_LISTED=0

section() { printf '\n===== %s =====\n' "$*"; }

# nvidia-smi stuck in the driver may ignore SIGTERM; SIGKILL follows 5 s later.
limited() { timeout -k 5 "$CHECK_TIMEOUT_SEC" "$@"; }

# Run a command under the timeout, its stderr with its output; absence and failure are noted.
run() {
  echo "\$ $*"
  run_quietly "$@"
}

run_quietly() {
  local status=0
  command -v "$1" >/dev/null 2>&1 || { echo "($1: not installed)"; return 127; }
  limited "$@" 2>&1 || status=$?
  ((status == 0)) || echo "(exit $status$( ((status != 124 && status != 137)) || echo ', timed out'))"
  return "$status"
}

# Like run, keeping only the output lines that match the pattern.
run_grep() {
  local pattern=$1
  shift
  echo "\$ $* | grep -E '$pattern'"
  run_quietly "$@" | { grep -E "$pattern|^\(.*\)$" || echo "(nothing matching)"; }
}

# Root-only commands, through `sudo -n` (never a password prompt); none with --no-sudo.
run_sudo() {
  if ((NO_SUDO)); then
    echo "\$ sudo -n $* (skipped: --no-sudo)"
  elif command -v "$SUDO" >/dev/null 2>&1; then
    run "$SUDO" -n "$@"
  elif ((EUID == 0)); then
    run "$@"
  else
    echo "\$ sudo -n $* (skipped: no sudo)"
  fi
}

check_host() {
  section "Host: ${HOSTNAME%%.*}"
  grep -h '^PRETTY_NAME=' /etc/os-release 2>/dev/null
  run uname -a
  run uptime
  run_grep '^(Model name|CPU\(s\)|Thread|Core|Socket)' lscpu
  run free -h
  run df -h -x tmpfs -x devtmpfs -x overlay -x squashfs
}

check_gpu() {
  local list status=0 count
  section "NVIDIA GPU ($NVIDIA_SMI)"
  run "$NVIDIA_SMI"
  echo "\$ $NVIDIA_SMI -L"
  list=$(limited "$NVIDIA_SMI" -L 2>&1) || status=$?
  printf '%s\n' "$list"
  count=$(grep -c '^GPU [0-9]' <<<"$list" || true)
  if ((status == 124 || status == 137)); then
    FAILS+=("nvidia-smi -L timed out after $CHECK_TIMEOUT_SEC s (exit $status)")
  elif ((status != 0)); then
    FAILS+=("nvidia-smi -L failed (exit $status): $(head -n 1 <<<"$list")")
  elif ((count == 0)); then
    FAILS+=("nvidia-smi -L lists no GPU")
  else
    OKS+=("nvidia-smi sees $count GPU(s)")
    GPU_LISTED=1
  fi
  run "$NVIDIA_SMI" --format=csv \
    --query-gpu=name,uuid,pci.bus_id,temperature.gpu,power.draw,power.limit,clocks.sm,pstate,fan.speed \
    || echo "(query not available)"
  run "$NVIDIA_SMI" topo -m || echo "(topology not available)"
}

check_driver() {
  section "Driver"
  echo "\$ grep -E '^(nvidia|nouveau)' /proc/modules"
  grep -E '^(nvidia|nouveau)' /proc/modules 2>/dev/null | cut -d' ' -f1-3 || echo "(none loaded)"
  echo "\$ ls -l /dev/nvidia*"
  ls -l /dev/nvidia* 2>&1
  cat /proc/driver/nvidia/version 2>/dev/null || echo "(no /proc/driver/nvidia/version)"
  run_grep '^(filename|version|vermagic|signer):' modinfo nvidia
  run_grep 'libcuda\.so|libnvidia-ml\.so' ldconfig -p
  run mokutil --sb-state
}

check_kernel_log() {
  local log
  section "Kernel log: NVRM, Xid, PCIe AER"
  echo "\$ $DMESG | grep -E 'NVRM|Xid|AER|pcieport' | tail -n 50"
  if ! log=$(limited "$DMESG" 2>/dev/null); then
    if ((NO_SUDO)) || ! log=$(limited "$SUDO" -n "$DMESG" 2>/dev/null); then
      echo "(kernel log not readable without root$( ((!NO_SUDO)) || echo '; --no-sudo'))"
      return 0
    fi
  fi
  grep -E 'NVRM|Xid|AER|pcieport' <<<"$log" | tail -n 50 | grep . || echo "(none)"
  # "NVRM: Xid (PCI:0000:01:00): 79, ... GPU has fallen off the bus": the P40 on its dock.
  if grep -Eq 'Xid \([^)]*\): 79\b' <<<"$log"; then
    FAILS+=("Xid 79 in the kernel log since boot: the GPU fell off the bus (reboot to recover)")
  fi
}

check_hardware() {
  local device
  section "Sensors and disks"
  run sensors || [[ $? != 127 ]] || WARNS+=("sensors not installed (apt-get install lm-sensors)")
  run_sudo nvme list
  for device in /dev/nvme[0-9]; do
    [[ ! -e $device ]] || run_sudo nvme smart-log "$device"
  done
  for device in /dev/sd[a-z] /dev/nvme[0-9]n1; do
    [[ ! -e $device ]] || run_sudo smartctl -H "$device"
  done
}

check_collector() {
  local unit state output line status=0
  local -a args=("--reading-timeout=$CHECK_TIMEOUT_SEC")
  section "Collector"
  for unit in gpu-telemetry.service gpu-telemetry-flush.timer; do
    state=$(limited "$SYSTEMCTL" --user is-active "$unit" 2>/dev/null)
    echo "$unit: ${state:-unknown (no systemctl --user)}"
    [[ $state == active ]] || WARNS+=("$unit is ${state:-unknown}, not active")
  done
  [[ -z $ENV_FILE ]] || args+=("--env=$ENV_FILE")
  # A GPU that nvidia-smi -L cannot list gives no reading either; do not wait for it twice.
  ((GPU_LISTED)) || args+=(--no-reading)
  output=$(project_python -m "$COLLECTOR_HEALTH" "${args[@]}" 2>&1) || status=$?
  while IFS= read -r line; do
    case $line in
      "OK: "*) OKS+=("${line#OK: }") ;;
      "WARN: "*) WARNS+=("${line#WARN: }") ;;
      "FAIL: "*) FAILS+=("${line#FAIL: }") ;;
      *) printf '%s\n' "$line" ;;
    esac
  done <<<"$output"
  if ((status > 1)); then
    WARNS+=("collector section not checked (exit $status): $(tail -n 1 <<<"$output")")
  fi
}

# Prints the verdict lines; returns 0 OK, 1 WARN, 2 FAIL.
verdict() {
  local line
  section "Verdict"
  for line in "${OKS[@]}"; do echo "OK: $line"; done
  for line in "${WARNS[@]}"; do echo "WARN: $line"; done
  for line in "${FAILS[@]}"; do echo "FAIL: $line"; done
  if [[ -n ${VERDICT_FILE:-} ]]; then
    # For --alert: the verdict and its first reasons, read by main after the report.
    if ((${#FAILS[@]})); then
      printf 'FAIL\t%s\n' "$(IFS=';'; echo "${FAILS[*]:0:3}")" >"$VERDICT_FILE"
    elif ((${#WARNS[@]})); then
      printf 'WARN\t%s\n' "$(IFS=';'; echo "${WARNS[*]:0:3}")" >"$VERDICT_FILE"
    else
      printf 'OK\t\n' >"$VERDICT_FILE"
    fi
  fi
  if ((${#FAILS[@]})); then echo "verdict: FAIL"; return 2; fi
  if ((${#WARNS[@]})); then echo "verdict: WARN"; return 1; fi
  echo "verdict: OK"
}

# --alert: the verdict through ALERT_COMMAND when it differs from the last one sent (kept in
# LOG_DIR/.healthcheck-alert), so a timer running the check says each change once.
send_verdict() {
  local level reasons last="" state summary host sent
  IFS=$'\t' read -r level reasons <"$VERDICT_FILE" || return 0
  sent=$(from_repo "${LOG_DIR:-logs}")/.healthcheck-alert
  [[ ! -f $sent ]] || last=$(<"$sent")
  [[ $level != "${last:-OK}" ]] || return 0
  host=$(hostname -s 2>/dev/null || hostname)
  if [[ $level == OK ]]; then
    state=resolved summary="$host: health check OK again (was $last)"
  else
    state=firing summary="$host: health check $level: $reasons"
  fi
  if project_python -m "$SEND_ALERT" host_health "$state" "${summary:0:300}" \
    --value "$level" ${ENV_FILE:+--env "$ENV_FILE"}; then
    mkdir -p "${sent%/*}" 2>/dev/null || true
    printf '%s\n' "$level" >"$sent"
  fi
}

# A check that trips over something unexpected must not cost the others (errexit is off inside
# a function called from a || list).
report() {
  local check
  echo "gpu-telemetry host health check, $(date -Is)"
  for check in check_host check_gpu check_driver check_kernel_log check_hardware check_collector; do
    "$check" || true
  done
  verdict
}

main() {
  local env_file="" log_file="" no_log=0 alert=0 status=0
  NO_SUDO=0
  while (($#)); do
    case $1 in
      -h | --help)
        usage
        return 0
        ;;
      --no-sudo) NO_SUDO=1 ;;
      --no-log) no_log=1 ;;
      --alert) alert=1 ;;
      --log=*) log_file=${1#*=} ;;
      --env=*) env_file=${1#*=} ;;
      --log | --env)
        (($# >= 2)) || die 2 "$1 needs a value (see --help)"
        if [[ $1 == --log ]]; then log_file=$2; else env_file=$2; fi
        shift
        ;;
      *) die 2 "unknown argument: $1 (see --help)" ;;
    esac
    shift
  done
  if ((no_log)) && [[ -n $log_file ]]; then
    die 2 "--log $log_file and --no-log contradict each other (see --help)"
  fi
  load_configuration "$env_file"
  ENV_FILE=$env_file
  NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
  [[ $NVIDIA_SMI != */* ]] || NVIDIA_SMI=$(from_repo "$NVIDIA_SMI")
  CHECK_TIMEOUT_SEC=${CHECK_TIMEOUT_SEC:-10}
  DMESG=${DMESG:-dmesg} SYSTEMCTL=${SYSTEMCTL:-systemctl} SUDO=${SUDO:-sudo}
  export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5}

  if ((alert)); then
    VERDICT_FILE=$(mktemp)
    trap 'rm -f "$VERDICT_FILE"' EXIT
  fi
  if ((no_log)); then
    report || status=$?
    ((!alert)) || send_verdict
    return "$status"
  fi
  if [[ -z $log_file ]]; then
    log_file=$(from_repo "${LOG_DIR:-logs}")/healthcheck-$(date +%Y%m%d-%H%M%S).log
    mkdir -p "${log_file%/*}" 2>/dev/null || true
  fi
  : >>"$log_file" || die 1 "cannot write the log $log_file (use --no-log)"
  echo "log: $log_file"
  # With pipefail the pipeline's status is the report's (tee succeeds).
  report 2>&1 | tee -a "$log_file" || status=$?
  ((!alert)) || send_verdict
  return "$status"
}

main "$@"
