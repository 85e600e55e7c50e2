"""Every picture the toolkit draws (the only matplotlib user besides the tests).

    timeline   plot_temp.py: a reduced Series as stacked panels on one time axis
    report     report_run.py: one run against minutes since its bench, or runs side by side
"""

from gpu_telemetry.analysis.plotting.report import Panel, render_compare_png, render_png
from gpu_telemetry.analysis.plotting.timeline import Drawn, panels_to_draw, render

__all__ = ["Drawn", "Panel", "panels_to_draw", "render", "render_compare_png", "render_png"]
