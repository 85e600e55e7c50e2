"""The thermal report of one run (bin/report_run.py): per GPU the idle temperature before the
bench, peak, steady state, time to 90 % of the rise, heating and cooling time constants, the
share of the bench under each throttle reason, SM clock drop, mean power and degrees per watt.

    model    the rows split into idle before, bench and cooling; the figures (pure)
    query    the SQL that reads the rows, through gpu_telemetry.db
    text     Markdown and JSON
    output   the files: Markdown and its PNG (drawn by analysis.plotting)
"""
