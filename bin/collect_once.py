#!/usr/bin/env python3
"""Take one sample of every GPU and store it in PostgreSQL (spooled while the database is down).

The command lives in gpu_telemetry/cli/collect_once.py; `--help` says how to use it.
"""

from gpu_telemetry.cli.collect_once import main

if __name__ == "__main__":
    raise SystemExit(main())
