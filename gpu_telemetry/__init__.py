"""gpu-telemetry: NVIDIA GPU telemetry into PostgreSQL, with a spool for outages."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
