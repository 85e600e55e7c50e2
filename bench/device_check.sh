#!/usr/bin/env bash
# Check both GPU sources on a machine with an NVIDIA driver, with no database and no network:
# the driver and GPUs; `nvidia-smi -q -x` (median of 20) against one NVML reading (median of
# 1000); both sources' readings of the same moment side by side; the loop at 10 Hz with each
# source for 30 s (samples, missed ticks, CPU per sample; it spools); a short thermal run
# through the runbook's phases with bin/run_gpuburn.sh (idle 30 s, load 120 s, cooldown 90 s),
# the load being gpu_burn when GPU_BURN_DIR has one, else bench/matmul_load.py on PyTorch.
# About 5 minutes.
#
# Usage: bench/device_check.sh OUTDIR
#
# Writes to OUTDIR: report.txt (everything printed), nvidia-smi-q-x.xml (the real document,
# serial numbers masked), thermal-spool.tar.gz (the thermal run's samples, for
# `SPOOL_DIR=... bin/flush_spool.py` into a database elsewhere).
#
# Needs only this repository, python3, the driver, and what python3 lacks of the project's
# dependencies as wheels in WHEELS_DIR (default: .whl in the repository, as
# bench/device_wheels.sh downloads them on a machine with network: psycopg, psycopg-binary,
# python-dotenv, typing-extensions, nvidia-ml-py). Without uv or a .venv, the scripts run with
# GPU_TELEMETRY_PYTHON (set here to python3).
# Environment: WHEELS_DIR, GPU_BURN_DIR, DEVICE_CHECK_SCALE (a factor for every duration,
# e.g. 0.1 for a quick try with the stand-ins), NVIDIA_SMI (default nvidia-smi).
# Exit status: 0 done, 1 a step failed (the report says which), 2 usage.
set -euo pipefail

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  [[ $# -eq 1 && ($1 == -h || $1 == --help) ]] && exit 0
  exit 2
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
scale=${DEVICE_CHECK_SCALE:-1}
seconds() { python3 -c "import sys; print(max(1, round(float(sys.argv[1]) * float(sys.argv[2]))))" "$1" "$scale"; }

exec > >(tee "$out/report.txt") 2>&1
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
failed=0

step "python and its packages"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c 'import psycopg, dotenv, pynvml' 2>/dev/null; then
  wheels=${WHEELS_DIR:-$repo/.whl}
  if ! compgen -G "$wheels/*.whl" >/dev/null; then
    echo "missing packages and no wheels in $wheels (see bench/README.md)"
    exit 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$work/site" "$wheels"/*.whl
  export PYTHONPATH="$PYTHONPATH:$work/site"
fi
python3 -c 'import sys, psycopg, dotenv, pynvml; print(sys.version.split()[0], "psycopg", psycopg.__version__, "nvidia-ml-py", getattr(pynvml, "__version__", "?"))'
export GPU_TELEMETRY_PYTHON=python3 PYTHONUNBUFFERED=1
export NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
export STATUS_FILE=$work/status.json LOG_DIR=$work/logs RAW_EVERY_SEC=60
export PGHOST=127.0.0.1 PGPORT=1 PGCONNECT_TIMEOUT=1
mkdir -p "$work/logs"
: >"$work/empty.env"

step "driver and GPUs"
"$NVIDIA_SMI" --query-gpu=index,name,pci.bus_id,driver_version,temperature.gpu,power.draw,pstate \
  --format=csv || failed=1

step "timings and both sources side by side"
python3 "$repo/bench/device_check.py" compare "$out" || failed=1

step "the loop at 10 Hz, each source for $(seconds 30) s"
for source in nvidia-smi nvml; do
  python3 "$repo/bench/device_check.py" loop "$source" "$(seconds 30)" "$work" || failed=1
done

step "a thermal run through the runbook's phases"
burn_dir=${GPU_BURN_DIR:-$HOME/projects/gpu-burn}
if [[ ! -x $burn_dir/gpu_burn ]]; then
  burn_dir=$work/gpu-burn
  mkdir -p "$burn_dir"
  printf '#!/bin/sh\nexec python3 %q "$@"\n' "$repo/bench/matmul_load.py" >"$burn_dir/gpu_burn"
  chmod +x "$burn_dir/gpu_burn"
  echo "load: bench/matmul_load.py (no gpu_burn in ${GPU_BURN_DIR:-~/projects/gpu-burn})"
else
  echo "load: $burn_dir/gpu_burn"
fi
export SPOOL_DIR=$work/thermal-spool GPU_SOURCE=nvml SAMPLE_INTERVAL_SEC=1
"$repo/bin/set_status.sh" --env "$work/empty.env" idle "device check" >/dev/null || failed=1
python3 "$repo/bin/collect_once.py" --loop --quiet --env "$work/empty.env" >"$work/thermal-loop.log" 2>&1 &
loop_pid=$!
sleep 2
GPU_BURN_DIR=$burn_dir "$repo/bin/run_gpuburn.sh" --env "$work/empty.env" \
  --pre-idle-sec "$(seconds 30)" --sec "$(seconds 120)" --cooldown-sec "$(seconds 90)" \
  --memo-suffix " device check" || failed=1
sleep 2
kill -TERM "$loop_pid"
wait "$loop_pid" || failed=1
tail -n 5 "$work/thermal-loop.log"
echo "thermal run: $(find "$SPOOL_DIR" -maxdepth 1 -name '*.json' | wc -l) samples spooled"
tar -czf "$out/thermal-spool.tar.gz" -C "$work" thermal-spool

step "done"
ls -l "$out"
exit "$failed"
