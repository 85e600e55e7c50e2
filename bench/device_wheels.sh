#!/usr/bin/env bash
# Download, on a machine with network, the wheels bench/device_check.sh needs on a GPU machine
# that has python3 but no network: the project's run-time dependencies for CPython 3.12 on
# x86-64 Linux (another version: PYTHON_VERSION=3.11).
#
# Usage: bench/device_wheels.sh [DIR]     (default DIR: .whl in the repository, which git ignores)
# Exit status: 0 downloaded, 1 pip failed, 2 usage.
set -euo pipefail

if [[ ${1-} == -h || ${1-} == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
(($# <= 1)) || { echo "usage: bench/device_wheels.sh [DIR]" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-$repo/.whl}
mkdir -p "$dir"
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "${PYTHON_VERSION:-3.12}" --implementation cp "${platforms[@]}" -d "$dir" \
  psycopg psycopg-binary python-dotenv typing-extensions nvidia-ml-py || exit 1
ls -l "$dir"
