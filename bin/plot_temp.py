#!/usr/bin/env python3
"""Plot GPU temperature (and other metrics) from PostgreSQL into a PNG.

The command lives in gpu_telemetry/cli/plot_temp.py; `--help` says how to use it.
"""

from gpu_telemetry.cli.plot_temp import main

if __name__ == "__main__":
    raise SystemExit(main())
