"""The thermal report in words: Markdown (one run, or runs side by side) and JSON, from the
report as data (analysis.report.model). Pure: text in, text out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, tzinfo
from urllib.parse import quote

from gpu_telemetry.analysis.report.model import METRICS, GpuRun, RunReport, panels_drawn


def md_code(text: str) -> str:
    """Text shown verbatim: a code span (quotes, SQL, asterisks, pipes stay text)."""
    text = " ".join(str(text).split())
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def md_text(text: str) -> str:
    """Plain text in a table cell or heading: Markdown's special characters escaped."""
    # Parentheses, # and ! only matter after [ or at a line start: [ is escaped, lines start
    # with our own text.
    return re.sub(r"([\\`*_\[\]<>|~])", r"\\\1", " ".join(str(text).split()))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _fmt(value, unit: str, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def metrics_table(columns: Sequence[tuple[str, dict]]) -> list[str]:
    """One row per metric, one column per (header, GPU JSON)."""
    lines = ["| | " + " | ".join(md_text(header) for header, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for title, key, unit, digits in METRICS:
        cells = (fmt_duration(g[key]) if unit is None else _fmt(g[key], unit, digits)
                 for _, g in columns)
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    reasons = sorted({r for _, g in columns for r in (g["throttle_share"] or {})})
    for reason in reasons:
        cells = []
        for _, g in columns:
            share = (g["throttle_share"] or {}).get(reason)
            cells.append("–" if share is None else f"{100 * share:.0f} %")
        lines.append(f"| Throttle: {reason} | " + " | ".join(cells) + " |")
    lines.append("| Samples (idle / bench / cooling) | " + " | ".join(
        "{idle} / {bench} / {cool}".format(**g["phase_samples"]) for _, g in columns) + " |")
    return lines


def _drawn(gpus: Sequence[GpuRun]) -> str:
    """The picture's panels in words, for its alt text: "Temperature and power"."""
    names = [label.split(" (")[0] for _, label, _, _ in panels_drawn(gpus)]
    words = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return words[0].upper() + words[1:]


def _when(ts: datetime, tz: tzinfo) -> str:
    return ts.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def phases_table(gpu: GpuRun, tz: tzinfo) -> list[str]:
    lines = ["| Phase | From | To | Samples | Tag | Memo |", "|---|---|---|---:|---|---|"]
    for title, rows in (("idle before", gpu.idle), ("bench", gpu.bench), ("cooling", gpu.cool)):
        if not rows:
            lines.append(f"| {title} | – | – | 0 | | |")
            continue
        tags = ", ".join(sorted({row["status_tag"] or "null" for row in rows}))
        memos = list(dict.fromkeys(row["status_memo"] for row in rows if row["status_memo"]))
        memo = "; ".join(md_code(m) for m in memos[:3]) + (" …" if len(memos) > 3 else "")
        lines.append(f"| {title} | {_when(rows[0]['ts'], tz)} | {_when(rows[-1]['ts'], tz)} | "
                     f"{len(rows)} | {md_text(tags)} | {memo} |")
    return lines


METHOD = """\
## How the figures are made

- **Idle**: mean of the second half of the idle rows before the bench. **Peak**: highest
  reading of the run.
- **Steady state, τ heating**: a first-order response T(t) = T∞ + (T0 − T∞)·e^(−t/τ) fitted to
  the bench rows by least squares (τ searched on a log scale); the steady state is the fitted
  T∞. Without a usable fit, the mean of the last 20 % of the bench.
- **Time to 90 % of the rise**: from the first bench row until the fitted curve (else the
  smoothed readings) reaches idle + 0.9 × (steady − idle).
- **τ cooling**: the same fit over the rows after the bench.
- **Throttle**: share of bench samples with the reason active (unreported readings left out).
- **SM clock drop**: 1 − median SM clock over the last 20 % of the bench ÷ highest SM clock of
  the run. **°C per W**: (steady − idle) ÷ (mean bench power − mean idle power).
"""


def render_markdown(report: RunReport, tz: tzinfo, png_name: str | None) -> str:
    data = report.to_json(tz)
    lines = [f"# Thermal report: {md_text(report.title)}", ""]
    if report.hosts:
        lines.append(f"- Host: {md_text(', '.join(report.hosts))}")
    if report.selection.run_id is None:
        lines.append(f"- Range: {_when(report.selection.start, tz)} to "
                     f"{_when(report.selection.end, tz)}")
    if report.memo:
        lines.append(f"- Bench memo: {md_code(report.memo)}")
    first = report.gpus[0]
    if first.bench:
        lines.append(f"- Bench: {_when(first.bench[0]['ts'], tz)} to "
                     f"{_when(first.bench[-1]['ts'], tz)}")
    lines.append("")
    if png_name:
        lines += [f"![{_drawn(report.gpus)} of {md_text(report.title)}]"
                  f"({quote(png_name)})", ""]
    lines += metrics_table([(gpu.label, g) for gpu, g in zip(report.gpus, data["gpus"],
                                                               strict=True)])
    lines += ["", "## Phases", ""]
    for gpu in report.gpus:
        if len(report.gpus) > 1:
            lines += [f"**{md_text(gpu.label)}** ({md_code(gpu.gpu_uuid)})", ""]
        lines += phases_table(gpu, tz) + [""]
    notes = [*report.notes] + [f"{gpu.label}: {note}" for gpu, g in
                               zip(report.gpus, data["gpus"], strict=True) for note in g["notes"]]
    if notes:
        lines += ["## Notes", ""] + [f"- {md_text(note)}" for note in notes] + [""]
    lines.append(METHOD)
    return "\n".join(lines)


def render_compare_markdown(reports: Sequence[RunReport], tz: tzinfo,
                            png_name: str | None) -> str:
    titles = [report.title for report in reports]
    lines = [f"# Thermal comparison: {' vs '.join(md_text(t) for t in titles)}", ""]
    for report in reports:
        memo = f": {md_code(report.memo)}" if report.memo else ""
        first = report.gpus[0]
        when = (f", bench {_when(first.bench[0]['ts'], tz)}" if first.bench else "")
        lines.append(f"- {md_text(report.title)}{memo}{when}")
    lines.append("")
    if png_name:
        lines += [f"![{_drawn([g for r in reports for g in r.gpus])} of "
                  f"{' and '.join(md_text(t) for t in titles)}]"
                  f"({quote(png_name)})", ""]
    lines += metrics_table(compare_columns(reports, tz)) + [""]
    notes = [f"{report.title}, {gpu.label}: {note}" for report in reports
             for gpu, g in zip(report.gpus, report.to_json(tz)["gpus"], strict=True)
             for note in g["notes"]]
    if notes:
        lines += ["## Notes", ""] + [f"- {md_text(note)}" for note in notes] + [""]
    lines.append(METHOD)
    return "\n".join(lines)


def compare_columns(reports: Sequence[RunReport], tz: tzinfo) -> list[tuple[str, dict]]:
    """Columns side by side: each GPU of the first run next to the same GPU in the others."""
    per_run = [list(zip(report.gpus, report.to_json(tz)["gpus"], strict=True))
               for report in reports]
    order: list[tuple[str, str]] = []
    for gpus in per_run:
        for gpu, _ in gpus:
            if (gpu.host, gpu.gpu_uuid) not in order:
                order.append((gpu.host, gpu.gpu_uuid))
    columns = []
    for key in order:
        for report, gpus in zip(reports, per_run, strict=True):
            for gpu, data in gpus:
                if (gpu.host, gpu.gpu_uuid) == key:
                    columns.append((f"{report.title} · {gpu.label}", data))
    return columns


def one_line_summary(report: RunReport) -> list[str]:
    lines = []
    for gpu in report.gpus:
        s = gpu.summary
        lines.append(f"{report.title} {gpu.label}: idle {_fmt(s.idle_temp_c, ' °C')}, "
                     f"peak {_fmt(s.peak_temp_c, ' °C', 0)}, "
                     f"steady {_fmt(s.steady_temp_c, ' °C')}, "
                     f"τ heat {_fmt(s.tau_heat_s, ' s', 0)}, "
                     f"τ cool {_fmt(s.tau_cool_s, ' s', 0)}")
    return lines


def report_json(reports: Sequence[RunReport], tz: tzinfo) -> dict:
    """One run: its figures; several: {"runs": [...]}."""
    if len(reports) > 1:
        return {"runs": [report.to_json(tz) for report in reports]}
    return reports[0].to_json(tz)
