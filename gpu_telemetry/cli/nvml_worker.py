"""The NVML worker process (collector/nvml_worker.py), started by the collector with
GPU_SOURCE=nvml as `python -m gpu_telemetry.cli.nvml_worker`: "read" lines on stdin, one JSON
answer per line on stdout. Not a command for people; it exits 0 at the end of its input."""

import sys

from gpu_telemetry.collector.nvml_worker import serve


def main() -> int:
    serve(sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
