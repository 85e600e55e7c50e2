"""One module per command: argv, messages and exit codes. Nothing below this package parses
argv or exits the process (see docs/architecture.md)."""
