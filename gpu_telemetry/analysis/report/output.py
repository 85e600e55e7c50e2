"""The report's files: the Markdown and, beside it, its PNG; a place that cannot be written is
one OutputError naming the path and why."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import tzinfo
from pathlib import Path

from gpu_telemetry import REPO_ROOT
from gpu_telemetry.analysis.report.model import RunReport
from gpu_telemetry.analysis.report.text import render_compare_markdown, render_markdown
from gpu_telemetry.errors import OutputError

REPORT_DIR = REPO_ROOT / "docs" / "reports"


def default_markdown_path(reports: Sequence[RunReport]) -> Path:
    if len(reports) == 1:
        return REPORT_DIR / f"{reports[0].name}.md"
    return REPORT_DIR / f"compare-{'-vs-'.join(r.name for r in reports)}.md"


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """An OSError while writing path is an OutputError naming it and what the system said;
    a file where a folder should be gets said in words (errno 17 and 20 read as riddles)."""
    try:
        yield
    except OSError as exc:
        existing = next((p for p in path.parents if p.exists()), None)
        why = (f"{existing} is a file, not a folder ({exc})"
               if existing is not None and not existing.is_dir() else str(exc))
        raise OutputError(f"cannot write {path}: {why}") from exc


def write_outputs(reports: Sequence[RunReport], markdown_path: Path, tz: tzinfo
                  ) -> tuple[Path, Path]:
    """Write the Markdown and its PNG (same name, .png); returns both paths."""
    # matplotlib only when a picture is drawn: --json alone never loads it.
    from gpu_telemetry.analysis.plotting import render_compare_png, render_png

    png_path = markdown_path.with_suffix(".png")
    if markdown_path.is_dir():
        raise OutputError(f"cannot write {markdown_path}: it is a folder (give a file in it, "
                          f"e.g. {markdown_path / 'report.md'})")
    with writing(markdown_path):
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
    if len(reports) == 1:
        render_png(reports[0], png_path)
        text = render_markdown(reports[0], tz, png_path.name)
    else:
        render_compare_png(reports, png_path)
        text = render_compare_markdown(reports, tz, png_path.name)
    with writing(markdown_path):
        markdown_path.write_text(text, encoding="utf-8")
    return markdown_path, png_path
