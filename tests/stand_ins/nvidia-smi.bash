#!/usr/bin/env bash
# nvidia-smi stand-in for tests: prints a real `nvidia-smi -q -x` capture, or fails the way
# the real tool does, so the collector can be tested without a GPU.
#
# Usage: nvidia-smi -q -x      print the fixture document
#        nvidia-smi -L         list the fixture's GPUs: "GPU 0: <name> (UUID: <uuid>)"
#        nvidia-smi            one summary line per GPU
# Anything else: the real tool's usage error, exit 2.
#
# Environment:
#   NVSMI_STANDIN_FIXTURE    XML document to print
#                            (default: ../fixtures/nvidia-smi/rtx-3080-v13.xml from this script)
#   NVSMI_STANDIN_MODE       ok (default) | gpu_lost | unknown_error | no_devices |
#                            driver_mismatch | no_driver | hang | hang_ignore_term | empty |
#                            truncated | garbage | stderr_fail
#   NVSMI_STANDIN_MODE_FILE  when the file exists, its first line overrides the mode
#                            (changes the behaviour under a running collector loop)
#   NVSMI_STANDIN_HANG_SEC   how long the hang modes sleep before printing (default 3600)
#   NVSMI_STANDIN_LOG        append "<epoch.ns> <pid> <mode> <args>" per call
#   NVSMI_STANDIN_HEAT_FILE  while this file exists (the gpu_burn stand-in writes it, holding
#                            "<start epoch> <pid>", and removes it when it ends) the document
#                            reads hot: every <gpu_temp> +25 C, +5 C more per second since the
#                            start, at most +45 C; every numeric power draw +150 W
#
# Failure modes reproduce the real tool: the text goes to stdout (nvidia-smi prints its
# errors there) and the exit status is the NVML return code:
#   gpu_lost         "Unable to determine the device handle for GPU0000:01:00.0: GPU is lost.
#                    Reboot the system to recover this GPU", 15 (NVML_ERROR_GPU_IS_LOST;
#                    GPU fallen off the bus, Xid 79)
#   unknown_error    "Unable to determine the device handle for GPU0000:01:00.0: Unknown
#                    Error", 255 (NVML_ERROR_UNKNOWN)
#   no_devices       "No devices were found", 6 (NVML_ERROR_NOT_FOUND)
#   driver_mismatch  "Failed to initialize NVML: Driver/library version mismatch" and
#                    "NVML library version: 570.133", 18 (NVML_ERROR_LIB_RM_VERSION_MISMATCH;
#                    drivers >= 535 print the second line)
#   no_driver        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA
#                    driver. ..." and an empty line, 9 (NVML_ERROR_DRIVER_NOT_LOADED)
#   stderr_fail      an error on stderr, 3 (NVML_ERROR_NOT_SUPPORTED)
# hang sleeps, then prints; hang_ignore_term also ignores SIGTERM and SIGINT (only SIGKILL of
# the process group ends it early, as with a real nvidia-smi stuck in the driver).
# Kept to bash builtins and cat: the collector spawns it every few seconds in tests.

set -euo pipefail

script=${BASH_SOURCE[0]}
if [[ -L $script ]]; then
  script=$(readlink -f -- "$script")
fi
if [[ $script == */* ]]; then
  script_dir=${script%/*}
else
  script_dir=.
fi

fixture=${NVSMI_STANDIN_FIXTURE:-$script_dir/../fixtures/nvidia-smi/rtx-3080-v13.xml}
mode=${NVSMI_STANDIN_MODE:-ok}
if [[ -n ${NVSMI_STANDIN_MODE_FILE:-} && -f $NVSMI_STANDIN_MODE_FILE ]]; then
  file_mode=
  IFS=$' \t\r' read -r file_mode _ <"$NVSMI_STANDIN_MODE_FILE" || true
  mode=${file_mode:-$mode}
fi

log_call() {
  [[ -n ${NVSMI_STANDIN_LOG:-} ]] || return 0
  local now=${EPOCHREALTIME:-}
  if [[ -n $now ]]; then
    now="${now/,/.}000"  # microseconds from bash, padded to the nanosecond field
  else
    now=$(date +%s.%N)
  fi
  printf '%s %s %s %s\n' "$now" "$$" "$mode" "$*" >>"$NVSMI_STANDIN_LOG"
}

usage_error() {
  echo "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
  exit 2
}

print_document() {
  if [[ ! -r $fixture ]]; then
    echo "nvidia-smi stand-in: fixture not readable: $fixture" >&2
    exit 64
  fi
  cat -- "$fixture"
}

# The document as it reads under gpu_burn: hotter, and drawing more power.
print_hot_document() {
  local start='' now elapsed heat line newline
  local temp_re='^(.*<gpu_temp>)([0-9]+)( C</gpu_temp>.*)$'
  local power_re='^(.*<(instant_power_draw|power_draw|average_power_draw)>)([0-9]+)(\.[0-9]+)?( W<.*)$'
  read -r start _ <"$NVSMI_STANDIN_HEAT_FILE" || true
  now=${EPOCHREALTIME:-$(date +%s.%N)}
  now=${now/,/.}
  elapsed=0
  if [[ $start =~ ^[0-9]+ ]]; then
    elapsed=$((${now%%.*} - BASH_REMATCH))
  fi
  heat=$((25 + 5 * elapsed))
  ((heat <= 45)) || heat=45
  while true; do
    if IFS= read -r line; then
      newline=$'\n'
    elif [[ -n $line ]]; then
      newline=''  # the last line has none: keep the document byte for byte
    else
      break
    fi
    if [[ $line =~ $temp_re ]]; then
      line="${BASH_REMATCH[1]}$((10#${BASH_REMATCH[2]} + heat))${BASH_REMATCH[3]}"
    elif [[ $line =~ $power_re ]]; then
      line="${BASH_REMATCH[1]}$((10#${BASH_REMATCH[3]} + 150))${BASH_REMATCH[4]}${BASH_REMATCH[5]}"
    fi
    printf '%s%s' "$line" "$newline"
    [[ -n $newline ]] || break
  done <"$fixture"
}

# "GPU <i>: <name> (UUID: <uuid>)" per <gpu> element, in document order.
list_gpus() {
  local line name='' index=0
  local name_re='<product_name>(.*)</product_name>' uuid_re='<uuid>(.*)</uuid>'
  while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line =~ $name_re ]]; then
      name=${BASH_REMATCH[1]}
    elif [[ $line =~ $uuid_re ]]; then
      printf 'GPU %d: %s (UUID: %s)\n' "$index" "$name" "${BASH_REMATCH[1]}"
      index=$((index + 1))
    fi
  done < <(print_document)
}

fail_like_nvidia_smi() {
  case $mode in
    ok | hang | hang_ignore_term | empty | truncated | garbage) return 0 ;;
    gpu_lost)
      echo "Unable to determine the device handle for GPU0000:01:00.0: GPU is lost.  Reboot the system to recover this GPU"
      exit 15
      ;;
    unknown_error)
      echo "Unable to determine the device handle for GPU0000:01:00.0: Unknown Error"
      exit 255
      ;;
    no_devices)
      echo "No devices were found"
      exit 6
      ;;
    driver_mismatch)
      echo "Failed to initialize NVML: Driver/library version mismatch"
      echo "NVML library version: 570.133"
      exit 18
      ;;
    no_driver)
      echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
      echo
      exit 9
      ;;
    stderr_fail)
      echo "Unable to query the GPUs: the requested operation is not available on target device (stand-in stderr_fail)" >&2
      exit 3
      ;;
    *)
      echo "nvidia-smi stand-in: unknown NVSMI_STANDIN_MODE '$mode'" >&2
      exit 64
      ;;
  esac
}

main() {
  local query=0 xml=0 list=0 arg
  for arg in "$@"; do
    case $arg in
      -q | --query) query=1 ;;
      -x | --xml-format) xml=1 ;;
      -qx | -xq) query=1 xml=1 ;;
      -L | --list-gpus) list=1 ;;
      *) usage_error ;;
    esac
  done
  if ((list && (query || xml))) || ((xml && !query)); then
    usage_error
  fi

  log_call "$@"
  fail_like_nvidia_smi

  case $mode in
    hang) sleep "${NVSMI_STANDIN_HANG_SEC:-3600}" ;;
    hang_ignore_term)
      trap '' TERM INT
      sleep "${NVSMI_STANDIN_HANG_SEC:-3600}"
      ;;
    empty) exit 0 ;;
    truncated)
      local size
      size=$(wc -c <"$fixture")
      head -c "$((size / 2))" -- "$fixture"
      exit 0
      ;;
    garbage)
      printf 'this is not xml \xff\n'
      exit 0
      ;;
  esac

  if ((list)); then
    list_gpus
  elif ((query && xml)); then
    if [[ -n ${NVSMI_STANDIN_HEAT_FILE:-} && -f $NVSMI_STANDIN_HEAT_FILE ]]; then
      [[ -r $fixture ]] || print_document  # its message and exit status
      print_hot_document
    else
      print_document
    fi
  elif ((query)); then
    echo "nvidia-smi stand-in: only the XML query (-q -x) is reproduced" >&2
    exit 2
  else
    list_gpus
  fi
}

main "$@"
