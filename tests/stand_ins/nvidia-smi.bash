#!/usr/bin/env bash
# nvidia-smi stand-in for tests: answers every nvidia-smi call the toolkit makes (the collector,
# the health check, the gpu-burn diagnostics) in the real tool's formats, with the values of a
# real `nvidia-smi -q -x` capture, or fails the way the real tool fails, so all of it can be
# tested without a GPU.
#
# Usage: nvidia-smi -q -x                  print the fixture document, byte for byte
#        nvidia-smi -q -d TYPE[,TYPE...]   the text report of those sections, TYPE one of
#                                          TEMPERATURE, PERFORMANCE, POWER, MEMORY, UTILIZATION,
#                                          CLOCK (also --display=TYPE,...)
#        nvidia-smi --query-gpu=FIELD[,FIELD...] --format=csv[,noheader][,nounits]
#                                          one line per GPU: values with units ("142.33 W",
#                                          "545 MiB"), "[N/A]" where the document says N/A or
#                                          lacks the element, a header line unless noheader
#                                          (units in brackets: "power.draw [W]", also with
#                                          nounits); fields: see QUERY_FIELDS below
#        nvidia-smi -L                     list the fixture's GPUs: "GPU 0: <name> (UUID: <uuid>)"
#        nvidia-smi                        the summary table (driver 535+ layout)
#        nvidia-smi topo -m                the topology matrix; the document carries no topology,
#                                          so every pair of GPUs reads PHB and every GPU has all
#                                          of this host's CPUs
# A combination the real tool refuses, or an option it does not know: its usage error on
# stdout, exit 2. An unknown --query-gpu field: 'Field "<name>" is not a valid field to query.',
# exit 2. An option of the real tool this stand-in does not reproduce (-i, -l, -f, pmon, a -d
# type not listed above, ...): one line on stderr naming it, exit 2.
#
# Environment:
#   NVSMI_STANDIN_FIXTURE    XML document to answer from
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
#                            start, at most +45 C; every numeric power draw +150 W. Every answer
#                            (XML, text, CSV, summary) is taken from the hot document then.
#
# Failure modes reproduce the real tool, whatever was asked (its options are checked first):
# the text goes to stdout (nvidia-smi prints its errors there) and the exit status is the NVML
# return code:
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
# hang sleeps, then answers; hang_ignore_term also ignores SIGTERM and SIGINT (only SIGKILL of
# the process group ends it early, as with a real nvidia-smi stuck in the driver). empty prints
# nothing, truncated the first half of the answer, garbage a line that is no answer; all exit 0.
# Kept to bash builtins and cat: the collector spawns it every few seconds in tests, and the
# other answers read the document line by line in bash (a fraction of a second).

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

# Said on stderr so that it never passes for the real tool's own output.
not_reproduced() {
  echo "nvidia-smi stand-in: $* is not reproduced (what is: the header of ${script##*/})" >&2
  exit 2
}

print_document() {
  if [[ ! -r $fixture ]]; then
    echo "nvidia-smi stand-in: fixture not readable: $fixture" >&2
    exit 64
  fi
  cat -- "$fixture"
}

heating() {
  [[ -n ${NVSMI_STANDIN_HEAT_FILE:-} && -f $NVSMI_STANDIN_HEAT_FILE ]]
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

# The document this call answers from: the fixture, hot while gpu_burn runs.
emit_document() {
  if heating; then
    print_hot_document
  else
    print_document
  fi
}

# --- the document, read once into DOC (values by path) and EVENTS (the tree in order) -------

declare -A DOC=()     # "<gpu>/<path>" -> text (gpu -1: the top level); "<gpu>/@id" the bus id
declare -a EVENTS=()  # "<gpu>|<depth below gpu>|open|leaf|close|<tag>|<text>", document order
declare -a PROCESSES=() # "<gpu>|<gi>|<ci>|<pid>|<type>|<name>|<used memory>"
GPU_COUNT=0

unescape() {
  local text=$1
  text=${text//&lt;/<}
  text=${text//&gt;/>}
  text=${text//&quot;/\"}
  text=${text//&apos;/\'}
  text=${text//&amp;/&}
  REPLY=$text
}

# The captures put one element per line; that is all this reader handles.
load_document() {
  local line tag rest text gpu=-1 path depth=0 last_open=-1 skipping=0
  local -a stack=()
  local -A process=()
  local leaf_re='^[[:space:]]*<([A-Za-z0-9_.-]+)([^>]*)>([^<]*)</[A-Za-z0-9_.-]+>[[:space:]]*$'
  local empty_re='^[[:space:]]*<([A-Za-z0-9_.-]+)[^>]*/>[[:space:]]*$'
  local open_re='^[[:space:]]*<([A-Za-z0-9_.-]+)([^>]*)>[[:space:]]*$'
  local close_re='^[[:space:]]*</([A-Za-z0-9_.-]+)>[[:space:]]*$'
  local id_re='id="([^"]*)"'
  local text_re='^[[:space:]]*([^<[:space:]][^<]*[^<[:space:]]|[^<[:space:]])[[:space:]]*$'
  while IFS= read -r line || [[ -n $line ]]; do
    if ((skipping)); then
      # Hundreds of lines of supported clocks that no answer shows.
      [[ $line == *'</supported_clocks>'* ]] && skipping=0
      continue
    fi
    if [[ $line =~ $leaf_re || $line =~ $empty_re ]]; then
      tag=${BASH_REMATCH[1]}
      text=''
      if [[ $line != */\> ]]; then
        text=${BASH_REMATCH[3]}
        [[ $text != *'&'* ]] || { unescape "$text"; text=$REPLY; }
      fi
      path="${stack[*]:+${stack[*]}/}$tag"
      path=${path// //}
      DOC["$gpu/$path"]=$text
      EVENTS+=("$gpu|$depth|leaf|$tag|$text")
      last_open=-1
      if [[ ${stack[*]: -1} == process_info ]]; then
        process[$tag]=$text
      fi
    elif [[ $line =~ $open_re ]]; then
      tag=${BASH_REMATCH[1]}
      rest=${BASH_REMATCH[2]}
      if [[ $tag == gpu && ${#stack[@]} -eq 0 ]]; then
        gpu=$GPU_COUNT
        GPU_COUNT=$((GPU_COUNT + 1))
        depth=0
        [[ $rest =~ $id_re ]] && DOC["$gpu/@id"]=${BASH_REMATCH[1]}
        continue
      fi
      [[ $tag == nvidia_smi_log ]] && continue
      if [[ $tag == supported_clocks ]]; then
        skipping=1
        continue
      fi
      EVENTS+=("$gpu|$depth|open|$tag|")
      last_open=$((${#EVENTS[@]} - 1))
      stack+=("$tag")
      depth=$((depth + 1))
      [[ $tag == process_info ]] && process=()
    elif [[ $line =~ $close_re ]]; then
      tag=${BASH_REMATCH[1]}
      last_open=-1
      if [[ $tag == gpu && ${#stack[@]} -eq 0 ]]; then
        gpu=-1
        continue
      fi
      [[ $tag == nvidia_smi_log ]] && continue
      ((${#stack[@]})) || continue
      unset 'stack[-1]'
      depth=$((depth - 1))
      EVENTS+=("$gpu|$depth|close|$tag|")
      if [[ $tag == process_info ]]; then
        PROCESSES+=("$gpu|${process[gpu_instance_id]:-N/A}|${process[compute_instance_id]:-N/A}|${process[pid]:-}|${process[type]:-}|${process[process_name]:-}|${process[used_memory]:-N/A}")
      fi
    elif ((last_open >= 0)) && [[ $line =~ $text_re ]]; then
      # Text in an element of its own, as <mig_devices> None </mig_devices>.
      unescape "${BASH_REMATCH[1]}"
      EVENTS[last_open]+=$REPLY
      path="${stack[*]}"
      DOC["$gpu/${path// //}"]=$REPLY
      last_open=-1
    fi
  done
}

read_document() {
  [[ -r $fixture ]] || print_document  # its message and exit status
  load_document < <(emit_document)
}

# The driver's major version, 0 when the document does not say.
driver_major() {
  local version=${DOC[-1/driver_version]:-0}
  version=${version%%.*}
  [[ $version =~ ^[0-9]+$ ]] || version=0
  REPLY=$version
}

# The first of the GPU's paths the document has, else "N/A".
gpu_value() {
  local gpu=$1 path
  shift
  for path in "$@"; do
    if [[ -n ${DOC["$gpu/$path"]+set} ]]; then
      REPLY=${DOC["$gpu/$path"]}
      return 0
    fi
  done
  REPLY='N/A'
}

bus_id() {
  gpu_value "$1" pci/pci_bus_id
  [[ $REPLY != N/A ]] || REPLY=${DOC["$1/@id"]:-N/A}
}

timestamp_text() {
  REPLY=${DOC[-1/timestamp]:-}
  if [[ -z $REPLY ]]; then
    printf -v REPLY '%(%a %b %e %H:%M:%S %Y)T' -1
  fi
}

# --- nvidia-smi -L ----------------------------------------------------------------------------

list_gpus() {
  local gpu
  read_document
  for ((gpu = 0; gpu < GPU_COUNT; gpu++)); do
    gpu_value "$gpu" product_name
    local name=$REPLY
    gpu_value "$gpu" uuid
    printf 'GPU %d: %s (UUID: %s)\n' "$gpu" "$name" "$REPLY"
  done
}

# --- nvidia-smi --query-gpu=... --format=csv ---------------------------------------------------

# name -> "header|kind|path[ path...]"; kinds: text, temp (value without " C"), unit (the value's
# own unit, dropped with nounits, shown in the header), width ("16x" -> 16), index, count,
# timestamp, bus_id, reasons_mask, reason (Active / Not Active).
declare -A QUERY_FIELDS=(
  [timestamp]="timestamp|timestamp|"
  [driver_version]="driver_version|top|driver_version"
  [count]="count|count|"
  [index]="index|index|"
  [name]="name|text|product_name"
  [gpu_name]="name|text|product_name"
  [serial]="serial|text|serial"
  [gpu_serial]="serial|text|serial"
  [uuid]="uuid|text|uuid"
  [gpu_uuid]="uuid|text|uuid"
  [pci.bus_id]="pci.bus_id|bus_id|"
  [gpu_bus_id]="pci.bus_id|bus_id|"
  [pci.domain]="pci.domain|text|pci/pci_domain"
  [pci.bus]="pci.bus|text|pci/pci_bus"
  [pci.device]="pci.device|text|pci/pci_device"
  [pci.device_id]="pci.device_id|text|pci/pci_device_id"
  [pci.sub_device_id]="pci.sub_device_id|text|pci/pci_sub_system_id"
  [pcie.link.gen.current]="pcie.link.gen.current|text|pci/pci_gpu_link_info/pcie_gen/current_link_gen"
  [pcie.link.gen.max]="pcie.link.gen.max|text|pci/pci_gpu_link_info/pcie_gen/max_link_gen"
  [pcie.link.width.current]="pcie.link.width.current|width|pci/pci_gpu_link_info/link_widths/current_link_width"
  [pcie.link.width.max]="pcie.link.width.max|width|pci/pci_gpu_link_info/link_widths/max_link_width"
  [vbios_version]="vbios_version|text|vbios_version"
  [persistence_mode]="persistence_mode|text|persistence_mode"
  [display_active]="display_active|text|display_active"
  [display_mode]="display_mode|text|display_mode"
  [compute_mode]="compute_mode|text|compute_mode"
  [mig.mode.current]="mig.mode.current|text|mig_mode/current_mig"
  [fan.speed]="fan.speed|unit|fan_speed"
  [pstate]="pstate|text|performance_state"
  [memory.total]="memory.total|unit|fb_memory_usage/total"
  [memory.reserved]="memory.reserved|unit|fb_memory_usage/reserved"
  [memory.used]="memory.used|unit|fb_memory_usage/used"
  [memory.free]="memory.free|unit|fb_memory_usage/free"
  [utilization.gpu]="utilization.gpu|unit|utilization/gpu_util"
  [utilization.memory]="utilization.memory|unit|utilization/memory_util"
  [temperature.gpu]="temperature.gpu|temp|temperature/gpu_temp"
  [temperature.memory]="temperature.memory|temp|temperature/memory_temp"
  [power.management]="power.management|text|power_readings/power_management"
  # On Ampere and newer power.draw is the one-second average, as <average_power_draw>.
  [power.draw]="power.draw|unit|gpu_power_readings/power_draw gpu_power_readings/average_power_draw power_readings/power_draw"
  [power.draw.average]="power.draw.average|unit|gpu_power_readings/average_power_draw power_readings/average_power_draw"
  [power.draw.instant]="power.draw.instant|unit|gpu_power_readings/instant_power_draw power_readings/instant_power_draw"
  [power.limit]="power.limit|unit|gpu_power_readings/current_power_limit power_readings/power_limit"
  [enforced.power.limit]="enforced.power.limit|unit|power_readings/enforced_power_limit gpu_power_readings/current_power_limit"
  [power.default_limit]="power.default_limit|unit|gpu_power_readings/default_power_limit power_readings/default_power_limit"
  [power.min_limit]="power.min_limit|unit|gpu_power_readings/min_power_limit power_readings/min_power_limit"
  [power.max_limit]="power.max_limit|unit|gpu_power_readings/max_power_limit power_readings/max_power_limit"
  [clocks.gr]="clocks.current.graphics|unit|clocks/graphics_clock"
  [clocks.current.graphics]="clocks.current.graphics|unit|clocks/graphics_clock"
  [clocks.sm]="clocks.current.sm|unit|clocks/sm_clock"
  [clocks.current.sm]="clocks.current.sm|unit|clocks/sm_clock"
  [clocks.mem]="clocks.current.memory|unit|clocks/mem_clock"
  [clocks.current.memory]="clocks.current.memory|unit|clocks/mem_clock"
  [clocks.video]="clocks.current.video|unit|clocks/video_clock"
  [clocks.current.video]="clocks.current.video|unit|clocks/video_clock"
  [clocks.max.gr]="clocks.max.graphics|unit|max_clocks/graphics_clock"
  [clocks.max.graphics]="clocks.max.graphics|unit|max_clocks/graphics_clock"
  [clocks.max.sm]="clocks.max.sm|unit|max_clocks/sm_clock"
  [clocks.max.mem]="clocks.max.memory|unit|max_clocks/mem_clock"
  [clocks.max.memory]="clocks.max.memory|unit|max_clocks/mem_clock"
  [clocks_throttle_reasons.active]="clocks_throttle_reasons.active|reasons_mask|"
  [clocks_event_reasons.active]="clocks_event_reasons.active|reasons_mask|"
)
# The reasons by NVML's bit (nvmlClocksEventReason*), named as in the XML.
readonly REASON_BITS=(gpu_idle applications_clocks_setting sw_power_cap hw_slowdown sync_boost
  sw_thermal_slowdown hw_thermal_slowdown hw_power_brake_slowdown display_clocks_setting)

query_field_known() {
  local name=$1 family reason
  [[ -n ${QUERY_FIELDS[$name]+set} ]] && return 0
  family=${name%%.*}
  reason=${name#*.}
  [[ $family == clocks_throttle_reasons || $family == clocks_event_reasons ]] || return 1
  [[ $reason == display_clock_setting ]] && return 0
  [[ " ${REASON_BITS[*]} " == *" $reason "* ]]
}

reason_state() {
  local gpu=$1 reason=$2
  [[ $reason == display_clock_setting ]] && reason=display_clocks_setting
  gpu_value "$gpu" "clocks_event_reasons/clocks_event_reason_$reason" \
    "clocks_throttle_reasons/clocks_throttle_reason_$reason"
}

reasons_mask() {
  local gpu=$1 bit mask=0 seen=0
  for bit in "${!REASON_BITS[@]}"; do
    reason_state "$gpu" "${REASON_BITS[bit]}"
    [[ $REPLY == N/A ]] || seen=1
    [[ $REPLY != Active ]] || mask=$((mask | (1 << bit)))
  done
  if ((seen)); then
    printf -v REPLY '0x%016X' "$mask"
  else
    REPLY='[N/A]'
  fi
}

# "Fri Apr 10 10:23:01 2026" -> "2026/04/10 10:23:01.000", the CSV's own timestamp format.
csv_timestamp() {
  local -A months=([Jan]=01 [Feb]=02 [Mar]=03 [Apr]=04 [May]=05 [Jun]=06 [Jul]=07 [Aug]=08
    [Sep]=09 [Oct]=10 [Nov]=11 [Dec]=12)
  local -a parts
  timestamp_text
  read -ra parts <<<"$REPLY"
  if ((${#parts[@]} == 5)) && [[ -n ${months[${parts[1]}]:-} ]]; then
    printf -v REPLY '%s/%s/%02d %s.000' "${parts[4]}" "${months[${parts[1]}]}" \
      "$((10#${parts[2]}))" "${parts[3]}"
  fi
}

# The CSV form of an XML value: N/A and the like in brackets; the unit kept unless nounits.
csv_value() {
  local value=$1 kind=$2 nounits=$3
  case $value in
    N/A | '') REPLY='[N/A]' ;;
    'Not Supported' | '[Not Supported]') REPLY='[Not Supported]' ;;
    'Unknown Error') REPLY='[Unknown Error]' ;;
    *)
      case $kind in
        temp) REPLY=${value% C} ;;
        width) REPLY=${value%x} ;;
        unit)
          REPLY=$value
          if ((nounits)) && [[ $value =~ ^(-?[0-9.]+)\ [A-Za-z%/]+$ ]]; then
            REPLY=${BASH_REMATCH[1]}
          fi
          ;;
        *) REPLY=$value ;;
      esac
      ;;
  esac
}

# The unit a field's header shows, from the first GPU that reports it with one.
header_unit() {
  local kind=$1 gpu path
  shift
  REPLY=''
  [[ $kind == unit ]] || return 0
  for ((gpu = 0; gpu < GPU_COUNT; gpu++)); do
    for path in "$@"; do
      if [[ ${DOC["$gpu/$path"]:-} =~ ^-?[0-9.]+\ ([A-Za-z%/]+)$ ]]; then
        REPLY=" [${BASH_REMATCH[1]}]"
        return 0
      fi
    done
  done
  # No GPU reports a number: the unit nvidia-smi gives that field anyway.
  case $1 in
    *power* | *limit*) REPLY=' [W]' ;;
    *clock*) REPLY=' [MHz]' ;;
    fb_memory_usage/*) REPLY=' [MiB]' ;;
    *) REPLY=' [%]' ;;
  esac
}

# Checks the fields and the format before anything else, as the real tool does.
check_query_gpu() {
  local fields=$1 format=$2 option name
  local -a options
  IFS=, read -ra options <<<"$format"
  [[ ${options[0]:-} == csv ]] || usage_error
  for option in "${options[@]:1}"; do
    case $option in
      noheader) CSV_NOHEADER=1 ;;
      nounits) CSV_NOUNITS=1 ;;
      *) usage_error ;;
    esac
  done
  IFS=, read -ra QUERY_NAMES <<<"${fields// /}"
  ((${#QUERY_NAMES[@]})) || usage_error
  for name in "${QUERY_NAMES[@]}"; do
    if ! query_field_known "$name"; then
      printf 'Field "%s" is not a valid field to query.\n\n' "$name"
      exit 2
    fi
  done
}

answer_query_gpu() {
  local name gpu header kind paths line
  local -a headers row
  read_document
  for name in "${QUERY_NAMES[@]}"; do
    IFS='|' read -r header kind paths <<<"${QUERY_FIELDS[$name]:-$name|reason|}"
    read -ra row <<<"$paths"
    header_unit "$kind" "${row[@]}"
    headers+=("$header$REPLY")
  done
  if ((!CSV_NOHEADER)); then
    line=$(printf '%s, ' "${headers[@]}")
    printf '%s\n' "${line%, }"
  fi
  for ((gpu = 0; gpu < GPU_COUNT; gpu++)); do
    row=()
    for name in "${QUERY_NAMES[@]}"; do
      IFS='|' read -r header kind paths <<<"${QUERY_FIELDS[$name]:-$name|reason|}"
      case $kind in
        timestamp) csv_timestamp ;;
        count) REPLY=$GPU_COUNT ;;
        index) REPLY=$gpu ;;
        top) csv_value "${DOC[-1/$paths]:-N/A}" text "$CSV_NOUNITS" ;;
        bus_id) bus_id "$gpu" ;;
        reasons_mask) reasons_mask "$gpu" ;;
        reason)
          reason_state "$gpu" "${name#*.}"
          csv_value "$REPLY" text "$CSV_NOUNITS"
          ;;
        *)
          # shellcheck disable=SC2086  # a space-separated list of paths
          gpu_value "$gpu" $paths
          csv_value "$REPLY" "$kind" "$CSV_NOUNITS"
          ;;
      esac
      row+=("$REPLY")
    done
    line=$(printf '%s, ' "${row[@]}")
    printf '%s\n' "${line%, }"
  done
}

# --- nvidia-smi -q -d TYPE,... ------------------------------------------------------------------

# The top-level elements of each display type, and the text report's label of each element
# ("<parent>/<tag>", else "*/<tag>"); an element without one is left out, as power_state is.
declare -A DISPLAY_ELEMENTS=(
  [PERFORMANCE]="performance_state clocks_event_reasons clocks_throttle_reasons clocks_event_reasons_counters sparse_operation_mode"
  [MEMORY]="fb_memory_usage bar1_memory_usage cc_protected_memory_usage"
  [UTILIZATION]="utilization"
  [TEMPERATURE]="temperature"
  [POWER]="power_readings gpu_power_readings gpu_memory_power_readings module_power_readings"
  [CLOCK]="clocks applications_clocks default_applications_clocks deferred_clocks max_clocks max_customer_boost_clocks clock_policy"
)
# Display types of the real tool that this stand-in does not answer.
readonly OTHER_DISPLAY_TYPES=" ECC COMPUTE PIDS SUPPORTED_CLOCKS PAGE_RETIREMENT ACCOUNTING ENCODER_STATS SUPPORTED_GPU_TARGET_TEMP VOLTAGE FBC_STATS ROW_REMAPPER RESET_STATUS GSP_FIRMWARE_VERSION POWER_SMOOTHING POWER_PROFILES "
declare -A LABELS=(
  [*/performance_state]="Performance State"
  [*/clocks_event_reasons]="Clocks Event Reasons"
  [*/clocks_throttle_reasons]="Clocks Throttle Reasons"
  [*/clocks_event_reasons_counters]="Clocks Event Reasons Counters"
  [*/sparse_operation_mode]="Sparse Operation Mode"
  [reasons/gpu_idle]="Idle"
  [reasons/applications_clocks_setting]="Applications Clocks Setting"
  [reasons/sw_power_cap]="SW Power Cap"
  [reasons/hw_slowdown]="HW Slowdown"
  [reasons/hw_thermal_slowdown]="HW Thermal Slowdown"
  [reasons/hw_power_brake_slowdown]="HW Power Brake Slowdown"
  [reasons/sync_boost]="Sync Boost"
  [reasons/sw_thermal_slowdown]="SW Thermal Slowdown"
  [reasons/display_clocks_setting]="Display Clock Setting"
  [counters/sw_power_cap]="SW Power Capping"
  [counters/sync_boost]="Sync Boost"
  [counters/sw_therm_slowdown]="SW Thermal Slowdown"
  [counters/hw_therm_slowdown]="HW Thermal Slowdown"
  [counters/hw_power_brake]="HW Power Braking"
  [*/fb_memory_usage]="FB Memory Usage"
  [*/bar1_memory_usage]="BAR1 Memory Usage"
  [*/cc_protected_memory_usage]="Conf Compute Protected Memory Usage"
  [*/total]="Total"
  [*/reserved]="Reserved"
  [*/used]="Used"
  [*/free]="Free"
  [*/utilization]="Utilization"
  [utilization/gpu_util]="GPU"
  [utilization/memory_util]="Memory"
  [utilization/encoder_util]="Encoder"
  [utilization/decoder_util]="Decoder"
  [utilization/jpeg_util]="JPEG"
  [utilization/ofa_util]="OFA"
  [*/temperature]="Temperature"
  [temperature/gpu_temp]="GPU Current Temp"
  [temperature/gpu_temp_tlimit]="GPU T.Limit Temp"
  [temperature/gpu_temp_max_threshold]="GPU Shutdown Temp"
  [temperature/gpu_temp_slow_threshold]="GPU Slowdown Temp"
  [temperature/gpu_temp_max_gpu_threshold]="GPU Max Operating Temp"
  [temperature/gpu_target_temperature]="GPU Target Temperature"
  [temperature/memory_temp]="Memory Current Temp"
  [temperature/gpu_temp_max_mem_threshold]="Memory Max Operating Temp"
  [*/power_readings]="Power Readings"
  [*/gpu_power_readings]="GPU Power Readings"
  # The real report has the trailing space.
  [*/gpu_memory_power_readings]="GPU Memory Power Readings "
  [*/module_power_readings]="Module Power Readings"
  [*/power_management]="Power Management"
  [*/power_draw]="Power Draw"
  [*/average_power_draw]="Average Power Draw"
  [*/instant_power_draw]="Instantaneous Power Draw"
  [*/power_limit]="Power Limit"
  [*/current_power_limit]="Current Power Limit"
  [*/requested_power_limit]="Requested Power Limit"
  [*/default_power_limit]="Default Power Limit"
  [*/enforced_power_limit]="Enforced Power Limit"
  [*/min_power_limit]="Min Power Limit"
  [*/max_power_limit]="Max Power Limit"
  [*/clocks]="Clocks"
  [*/applications_clocks]="Applications Clocks"
  [*/default_applications_clocks]="Default Applications Clocks"
  [*/deferred_clocks]="Deferred Clocks"
  [*/max_clocks]="Max Clocks"
  [*/max_customer_boost_clocks]="Max Customer Boost Clocks"
  [*/clock_policy]="Clock Policy"
  [*/graphics_clock]="Graphics"
  [*/sm_clock]="SM"
  [*/mem_clock]="Memory"
  [*/video_clock]="Video"
  [clock_policy/auto_boost]="Auto Boost"
  [clock_policy/auto_boost_default]="Auto Boost Default"
)

# The label of <tag> under <parent> in the text report; fails for an element it leaves out.
label_for() {
  local parent=$1 tag=$2 key
  case $parent in
    clocks_event_reasons | clocks_throttle_reasons)
      parent=reasons
      tag=${tag#clocks_event_reason_}
      tag=${tag#clocks_throttle_reason_}
      ;;
    clocks_event_reasons_counters)
      parent=counters
      tag=${tag#clocks_event_reasons_counters_}
      ;;
  esac
  for key in "$parent/$tag" "*/$tag"; do
    if [[ -n ${LABELS[$key]+set} ]]; then
      REPLY=${LABELS[$key]}
      return 0
    fi
  done
  return 1
}

# "Label    : value" with the colon where the real report puts it: column 42, 55 from driver
# 580 on.
report_line() {
  local indent=$1 label=$2 value=$3 padded
  printf -v padded '%*s%s' "$indent" '' "$label"
  printf '%-*s: %s\n' "$REPORT_WIDTH" "$padded" "$value"
}

check_display() {
  local type
  local -a types
  IFS=, read -ra types <<<"$1"
  ((${#types[@]})) || usage_error
  for type in "${types[@]}"; do
    type=${type^^}
    if [[ -n ${DISPLAY_ELEMENTS[$type]+set} ]]; then
      DISPLAY_WANTED+="${DISPLAY_ELEMENTS[$type]} "
    elif [[ $OTHER_DISPLAY_TYPES == *" $type "* ]]; then
      not_reproduced "-d $type"
    else
      usage_error
    fi
  done
}

answer_display() {
  local gpu entry egpu depth kind tag text parent indent shown
  local -a parents
  read_document
  driver_major
  REPORT_WIDTH=42
  ((REPLY < 580)) || REPORT_WIDTH=55
  ((REPLY == 0 || REPLY >= 535)) || LABELS[utilization/gpu_util]="Gpu"
  timestamp_text
  printf '\n==============NVSMI LOG==============\n\n'
  report_line 0 Timestamp "$REPLY"
  report_line 0 'Driver Version' "${DOC[-1/driver_version]:-N/A}"
  [[ -z ${DOC[-1/cuda_version]+set} ]] || report_line 0 'CUDA Version' "${DOC[-1/cuda_version]}"
  printf '\n'
  report_line 0 'Attached GPUs' "$GPU_COUNT"
  for ((gpu = 0; gpu < GPU_COUNT; gpu++)); do
    bus_id "$gpu"
    printf 'GPU %s\n' "$REPLY"
    shown=0  # inside a wanted top-level element
    parents=(gpu)
    for entry in "${EVENTS[@]}"; do
      # Expansions, not `read`: a here-string per element is what made this slow.
      egpu=${entry%%|*}
      ((egpu == gpu)) || continue
      entry=${entry#*|}
      depth=${entry%%|*}
      entry=${entry#*|}
      kind=${entry%%|*}
      entry=${entry#*|}
      tag=${entry%%|*}
      text=${entry#*|}
      if ((depth == 0)); then
        shown=0
        parents=(gpu)
        [[ $kind != close && $DISPLAY_WANTED == *" $tag "* ]] || continue
        shown=1
      fi
      ((shown)) || continue
      if [[ $kind == close ]]; then
        ((${#parents[@]} <= 1)) || unset 'parents[-1]'
        continue
      fi
      parent=${parents[-1]}
      [[ $kind == open ]] && parents+=("$tag")
      label_for "$parent" "$tag" || continue
      indent=$((4 * (depth + 1)))
      # The report nests these two under HW Slowdown; the XML lists them side by side.
      [[ $tag == *_reason_hw_thermal_slowdown || $tag == *_reason_hw_power_brake_slowdown ]] \
        && indent=$((indent + 4))
      if [[ $kind == leaf || -n $text ]]; then
        report_line "$indent" "$REPLY" "$text"
      else
        printf '%*s%s\n' "$indent" '' "$REPLY"
      fi
    done
    printf '\n'
  done
}

# --- nvidia-smi (the summary table) -------------------------------------------------------------

readonly RULE='+-----------------------------------------+------------------------+----------------------+'
readonly WIDE_RULE='+-----------------------------------------------------------------------------------------+'

on_off() {
  case $1 in
    Enabled) REPLY=On ;;
    Disabled) REPLY=Off ;;
    *) REPLY=$1 ;;
  esac
}

# "142.33 W" -> "142W", "27 C" -> "27C", "545 MiB" -> "545MiB", N/A kept.
compact() {
  local value=$1
  if [[ $value =~ ^(-?[0-9]+)(\.[0-9]+)?\ (.+)$ ]]; then
    local number=${BASH_REMATCH[1]}
    [[ -z ${BASH_REMATCH[2]} || ${BASH_REMATCH[2]:1:1} -lt 5 ]] || number=$((number + 1))
    REPLY="$number${BASH_REMATCH[3]}"
  else
    REPLY=$value
  fi
}

summary() {
  local gpu name persistence display ecc fan temp perf draw limit used total util compute mig
  local processes=0 entry egpu gi ci pid type pname memory
  read_document
  timestamp_text
  printf '%s       \n' "$REPLY"
  printf '%s\n' "$WIDE_RULE"
  printf '| NVIDIA-SMI %-22s Driver Version: %-14s CUDA Version: %-8s |\n' \
    "${DOC[-1/driver_version]:-N/A}" "${DOC[-1/driver_version]:-N/A}" "${DOC[-1/cuda_version]:-N/A}"
  printf '|%s\n' "${RULE:1}"
  printf '| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |\n'
  printf '| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |\n'
  printf '|                                         |                        |               MIG M. |\n'
  printf '|=========================================+========================+======================|\n'
  for ((gpu = 0; gpu < GPU_COUNT; gpu++)); do
    gpu_value "$gpu" product_name
    name=$REPLY
    gpu_value "$gpu" persistence_mode
    on_off "$REPLY"
    persistence=$REPLY
    ((${#name} <= 33 - ${#persistence})) || name="${name:0:$((30 - ${#persistence}))}..."
    gpu_value "$gpu" display_active
    on_off "$REPLY"
    display=$REPLY
    gpu_value "$gpu" ecc_errors/volatile/dram_uncorrectable ecc_errors/volatile/double_bit/total
    ecc=$REPLY
    gpu_value "$gpu" fan_speed
    fan=${REPLY// /}
    gpu_value "$gpu" temperature/gpu_temp
    compact "$REPLY"
    temp=$REPLY
    gpu_value "$gpu" performance_state
    perf=$REPLY
    gpu_value "$gpu" gpu_power_readings/power_draw gpu_power_readings/average_power_draw \
      gpu_power_readings/instant_power_draw power_readings/power_draw
    compact "$REPLY"
    draw=$REPLY
    gpu_value "$gpu" gpu_power_readings/current_power_limit power_readings/power_limit
    compact "$REPLY"
    limit=$REPLY
    gpu_value "$gpu" fb_memory_usage/used
    compact "$REPLY"
    used=$REPLY
    gpu_value "$gpu" fb_memory_usage/total
    compact "$REPLY"
    total=$REPLY
    gpu_value "$gpu" utilization/gpu_util
    util=${REPLY// /}
    gpu_value "$gpu" compute_mode
    compute=$REPLY
    gpu_value "$gpu" mig_mode/current_mig
    mig=$REPLY
    bus_id "$gpu"
    printf '| %3d  %-*s%s | %18s %3s | %20s |\n' "$gpu" "$((34 - ${#persistence}))" "$name" \
      "$persistence" "$REPLY" "$display" "$ecc"
    printf '|%4s  %4s  %4s %23s | %22s | %8s %11s |\n' "$fan" "$temp" "$perf" \
      "$draw / $(printf '%5s' "$limit")" "$used / $(printf '%9s' "$total")" "$util" "$compute"
    printf '|                                         |                        | %20s |\n' "$mig"
    printf '%s\n' "$RULE"
  done
  printf '\n%s\n' "$WIDE_RULE"
  printf '| %-87s |\n' 'Processes:'
  printf '|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |\n'
  printf '|        ID   ID                                                               Usage      |\n'
  printf '|=========================================================================================|\n'
  for entry in "${PROCESSES[@]}"; do
    IFS='|' read -r egpu gi ci pid type pname memory <<<"$entry"
    ((${#pname} <= 37)) || pname="...${pname: -34}"
    compact "$memory"
    printf '|  %3s  %4s %4s %16s %6s   %-37s %7s |\n' "$egpu" "$gi" "$ci" "$pid" "$type" \
      "$pname" "$REPLY"
    processes=$((processes + 1))
  done
  ((processes)) || printf '| %-87s |\n' ' No running processes found'
  printf '%s\n' "$WIDE_RULE"
}

# --- nvidia-smi topo -m -------------------------------------------------------------------------

topology() {
  local gpu other cpus=0 line
  read_document
  while IFS= read -r line; do
    [[ $line == processor* ]] && cpus=$((cpus + 1))
  done </proc/cpuinfo
  printf '\t'
  for ((gpu = 0; gpu < GPU_COUNT; gpu++)); do printf 'GPU%d\t' "$gpu"; done
  printf 'CPU Affinity\tNUMA Affinity\tGPU NUMA ID\n'
  for ((gpu = 0; gpu < GPU_COUNT; gpu++)); do
    printf 'GPU%d\t' "$gpu"
    for ((other = 0; other < GPU_COUNT; other++)); do
      if ((other == gpu)); then printf ' X \t'; else printf 'PHB\t'; fi
    done
    printf '0-%d\t0\t\tN/A\n' "$((cpus > 0 ? cpus - 1 : 0))"
  done
  cat <<'LEGEND'

Legend:

  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)
  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
  PIX  = Connection traversing at most a single PCIe bridge
  NV#  = Connection traversing a bonded set of # NVLinks
LEGEND
}

# --- failing and misbehaving like the real tool --------------------------------------------------

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

# hang, empty, truncated and garbage, whatever the answer (a function that prints it).
misbehave() {
  local answer=$1 text size
  case $mode in
    hang) sleep "${NVSMI_STANDIN_HANG_SEC:-3600}" ;;
    hang_ignore_term)
      trap '' TERM INT
      sleep "${NVSMI_STANDIN_HANG_SEC:-3600}"
      ;;
    empty) exit 0 ;;
    truncated)
      if [[ $answer == xml_document ]]; then
        size=$(wc -c <"$fixture")
        head -c "$((size / 2))" -- "$fixture"
      else
        text=$("$answer"; echo .)
        text=${text%.}
        printf '%s' "${text:0:$((${#text} / 2))}"
      fi
      exit 0
      ;;
    garbage)
      printf 'this is not xml \xff\n'
      exit 0
      ;;
  esac
}

xml_document() {
  if heating; then
    [[ -r $fixture ]] || print_document  # its message and exit status
    print_hot_document
  else
    print_document
  fi
}

# --- options -----------------------------------------------------------------------------------

main() {
  local query=0 xml=0 list=0 display='' display_given=0 fields='' fields_given=0 format=''
  local format_given=0 answer
  if [[ ${1:-} == topo ]]; then
    [[ $# -eq 2 && ( $2 == -m || $2 == --matrix ) ]] || usage_error
    answer=topology
  else
    while (($#)); do
      case $1 in
        -q | --query) query=1 ;;
        -x | --xml-format) xml=1 ;;
        -qx | -xq) query=1 xml=1 ;;
        -L | --list-gpus) list=1 ;;
        -d | --display)
          (($# >= 2)) || usage_error
          display=$2 display_given=1
          shift
          ;;
        --display=*) display=${1#*=} display_given=1 ;;
        --query-gpu)
          (($# >= 2)) || usage_error
          fields=$2 fields_given=1
          shift
          ;;
        --query-gpu=*) fields=${1#*=} fields_given=1 ;;
        --format)
          (($# >= 2)) || usage_error
          format=$2 format_given=1
          shift
          ;;
        --format=*) format=${1#*=} format_given=1 ;;
        # The real tool's other options and subcommands, which nothing here calls.
        -i | --id | --id=* | -l | --loop | --loop=* | -lms | --loop-ms | --loop-ms=* | -f | \
          --filename | --filename=* | -u | --unit | -a | -h | --help | --version | -B | \
          --list-excluded-gpus | --query-compute-apps* | --query-accounted-apps* | \
          --query-supported-clocks* | --query-retired-pages* | --query-remapped-rows* | \
          --help-query-* | -pm | --persistence-mode* | -pl | --power-limit* | -e | \
          --ecc-config* | -r | --gpu-reset | -c | --compute-mode* | -lgc | -rgc | -lmc | -rmc | \
          pmon | dmon | nvlink | clocks | mig | vgpu | drain | conf-compute)
          not_reproduced "$1"
          ;;
        *) usage_error ;;
      esac
      shift
    done
    if ((fields_given || format_given)); then
      ((fields_given && format_given && !query && !xml && !list && !display_given)) \
        || usage_error
      check_query_gpu "$fields" "$format"
      answer=answer_query_gpu
    elif ((list && (query || xml || display_given))) || ((xml && !query)) \
      || ((display_given && !query)); then
      usage_error
    elif ((xml && display_given)); then
      not_reproduced "-x with -d"
    elif ((display_given)); then
      check_display "$display"
      answer=answer_display
    elif ((query && !xml)); then
      not_reproduced "the whole text report (-q without -x or -d)"
    elif ((query)); then
      answer=xml_document
    elif ((list)); then
      answer=list_gpus
    else
      answer=summary
    fi
  fi

  log_call "${ARGS[@]}"
  fail_like_nvidia_smi
  misbehave "$answer"
  "$answer"
}

ARGS=("$@")
CSV_NOHEADER=0
CSV_NOUNITS=0
DISPLAY_WANTED=' '
QUERY_NAMES=()
main "$@"
