#!/usr/bin/env python3
"""The thermal report of one run: per GPU the idle temperature before the bench, peak, steady

The command lives in gpu_telemetry/cli/report_run.py; `--help` says how to use it.
"""

from gpu_telemetry.cli.report_run import main

if __name__ == "__main__":
    raise SystemExit(main())
