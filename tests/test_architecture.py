"""The rules of docs/architecture.md, read off the code: who may import whom, where argv is
parsed, what the collector service loads, how long a module may grow."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = REPO_ROOT / "gpu_telemetry"
BASE = {"config", "errors", "files", "schema", "records", "tags"}
WINGS = ("collector", "db", "analysis", "ops", "cli")
MAX_LINES = 400
# A module past MAX_LINES says why in its docstring, on a line starting with this.
LONG_REASON = "Longer than usual:"


def modules() -> dict[str, Path]:
    """Dotted name below the package ("collector.loop", "errors") -> path."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def layer(name: str) -> str:
    top = name.split(".")[0]
    return "base" if top in BASE else top


def imports(path: Path) -> set[str]:
    """Every module `path` imports, as written (absolute names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def ours(names: set[str]) -> set[str]:
    return {name.removeprefix("gpu_telemetry.") for name in names
            if name.startswith("gpu_telemetry.")} & set(modules())


def third_party(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


# Which layers a layer may import (besides itself): docs/architecture.md, Who may import whom.
ALLOWED = {
    "base": {"base"},
    "db": {"base", "db"},
    "collector": {"base", "db", "collector", "ops.status"},
    "analysis": {"base", "db", "analysis"},
    "ops": {"base", "db", "ops", "collector"},
    "cli": {"base", *WINGS},
}


def allowed(importer: str, imported: str) -> bool:
    rules = ALLOWED[layer(importer)]
    return layer(imported) in rules or any(
        imported == rule or imported.startswith(rule + ".") for rule in rules if "." in rule)


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_follow_the_layers(name):
    path = modules()[name]
    names = imports(path)
    wrong = sorted(other for other in ours(names) if not allowed(name, other))
    assert not wrong, f"{name} may not import {wrong}"
    libraries = third_party(names)
    if layer(name) != "db":
        assert "psycopg" not in libraries, f"{name} imports psycopg: only db/ may"
    if layer(name) != "analysis":
        assert not libraries & {"matplotlib", "numpy"}, f"{name}: only analysis/ draws"
    if layer(name) != "cli":
        assert "argparse" not in libraries, f"{name} parses argv: that is cli/'s job"
        assert "sys.exit" not in path.read_text(), f"{name} calls sys.exit: cli/ decides"


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_grows_past_its_size_without_a_reason(name):
    path = modules()[name]
    lines = path.read_text().count("\n")
    if lines > MAX_LINES:
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert LONG_REASON in docstring, (
            f"{name} has {lines} lines (> {MAX_LINES}): split it by job, or say why in its "
            f"docstring on a line starting {LONG_REASON!r}")


def test_the_entry_points_are_thin_and_edit_no_import_path():
    for path in sorted((REPO_ROOT / "bin").glob("*.py")):
        text = path.read_text()
        assert "sys.path" not in text, path.name
        assert text.count("\n") <= 15, f"{path.name} should only call gpu_telemetry.cli"
        assert re.search(r"^from gpu_telemetry\.cli\.\w+ import main$", text, re.M), path.name
    for path in PACKAGE.rglob("*.py"):
        assert "sys.path" not in path.read_text(), path


def test_the_repository_refers_to_nothing_outside_itself():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    outside = re.compile(r"DESIGN\.md|\.\./shared|/work/shared")
    hits = [name for name in tracked
            if (REPO_ROOT / name).is_file()
            and not name.startswith("tests/fixtures/") and name != "tests/test_architecture.py"
            and outside.search((REPO_ROOT / name).read_text(errors="replace"))]
    assert not hits, f"these refer to files outside the repository: {hits}"


def test_the_collector_service_loads_neither_matplotlib_nor_numpy(tmp_path):
    """The loop runs for months on a small host: what it imports is what it costs."""
    probe = ("import sys\n"
             "import gpu_telemetry.cli.collect_once, gpu_telemetry.collector.loop\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'numpy'}))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout
    # The check can fail: the plotting module does load them.
    probe = probe.replace("gpu_telemetry.cli.collect_once, gpu_telemetry.collector.loop",
                          "gpu_telemetry.analysis.plotting")
    result = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=True)
    assert "matplotlib" in result.stdout
