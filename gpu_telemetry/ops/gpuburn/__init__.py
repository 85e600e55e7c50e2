"""gpu-burn driven through phases, each one written to status.json so every sample the collector
takes during the run carries the phase's tag, memo and the run's id (bin/run_gpuburn.sh; the
command line is gpu_telemetry/cli/run_gpuburn.py).

    pre-idle   idle, --pre-idle-memo, --pre-idle-sec seconds (skipped when 0)
    bench      --pre-tag, --pre-memo: `./gpu_burn [ARGS] SEC` inside the gpu-burn folder
    post       --post-tag, --post-memo: written the moment gpu_burn ends, kept through the
               diagnostics after and at least SAMPLE_INTERVAL_SEC (one sample records it)
    cooldown   idle, --cooldown-memo, --cooldown-sec seconds (skipped when 0)
    final      --final-tag, --final-memo: written at the end and on any exit (Ctrl-C, TERM,
               HUP, failure), then with "[<phase> exit=<code>]" in the memo

plan (pure: options -> phases, memos, run id), tmux (the detached hand-off), runner (the I/O:
phases, gpu_burn, diagnostics, the log). docs/architecture.md has the whole picture.
"""
