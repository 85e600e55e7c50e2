"""The collector: read the GPUs (source, parser), make a sample, store or spool it, deliver
the spool later, and the long-running loop. It never imports the analysis wing, so the
service loads neither matplotlib nor numpy (see docs/architecture.md)."""
