"""Operating the host: the status file and gpu-burn runs (see docs/architecture.md)."""
