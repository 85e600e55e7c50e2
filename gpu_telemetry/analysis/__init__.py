"""Reading the history back: series, thermal analysis, run reports and every picture. The only
users of numpy and matplotlib (see docs/architecture.md)."""
