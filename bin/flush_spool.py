#!/usr/bin/env python3
"""Deliver every spooled sample to PostgreSQL, then delete its file.

The command lives in gpu_telemetry/cli/flush_spool.py; `--help` says how to use it.
"""

from gpu_telemetry.cli.flush_spool import main

if __name__ == "__main__":
    raise SystemExit(main())
