"""The docs and the code in step.

(a) every repo command the docs show (`./bin/X`, `bin/X`, `uv run ./bin/X.py`, in ```bash / ```sh
    blocks and inline code) exists, and every `--option` given to it is in its `--help`;
(b) every .env key of .env.example and of the runbook's configuration table is read by the
    code, and every key the configuration loader reads is in both;
(c) the troubleshooting page covers every collector_events kind and nvidia-smi failure class
    the code emits, every exit code of gpu_telemetry/errors.py and of each command's `--help`,
    every FAIL/WARN line of bin/host_healthcheck.sh and every quarantine reason;
(d) docs/operations.md keeps the original runbook's order of sections;
(e) the runbook's "Without a GPU" path and its spool demonstration run as written against a
    real database, with the stand-ins.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_telemetry import config as config_module
from gpu_telemetry.collector import alerts as alerts_module

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
OPERATIONS = DOCS / "operations.md"
TROUBLESHOOTING = DOCS / "troubleshooting.md"
P40_GUIDE = DOCS / "p40-nvidia-smi.ubuntu22.md"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
PACKAGE = REPO_ROOT / "gpu_telemetry"


def doc_files() -> list[Path]:
    files = [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md")),
             REPO_ROOT / "systemd" / "README.md", REPO_ROOT / "grafana" / "README.md",
             REPO_ROOT / "bench" / "README.md"]
    return [path for path in files if path.exists()]


# --- reading the docs ----------------------------------------------------------------------------

FENCE_RE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
INLINE_RE = re.compile(r"`([^`\n]+)`")
COMMAND_RE = re.compile(r"^(?:\./)?bin/([A-Za-z0-9_-]+\.(?:py|sh))$")
SEPARATOR_RE = re.compile(r"^[;&|()<>]+$")


def shell_blocks(text: str) -> list[str]:
    return [body for lang, body in FENCE_RE.findall(text) if lang in ("bash", "sh", "shell")]


def inline_code(text: str) -> list[str]:
    """Inline code spans outside fenced blocks, brackets of optional parts removed."""
    prose = FENCE_RE.sub("", text)
    return [span.replace("[", " ").replace("]", " ") for span in INLINE_RE.findall(prose)]


def words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote: not a command line
        return []


def invocations(snippet: str) -> list[tuple[str, list[str]]]:
    """(command file name, its --options) for every repo command in a shell snippet."""
    found = []
    for line in snippet.replace("\\\n", " ").splitlines():
        tokens = words(line)
        for index, token in enumerate(tokens):
            match = COMMAND_RE.match(token)
            if not match:
                continue
            options = []
            for word in tokens[index + 1:]:
                if word == "--" or SEPARATOR_RE.match(word):
                    break
                if word.startswith("--"):
                    options.append(word.split("=", 1)[0])
            found.append((match.group(1), options))
    return found


def documented_invocations() -> list[tuple[str, str, list[str]]]:
    """(doc file, command, options) over every doc."""
    found = []
    for path in doc_files():
        text = path.read_text()
        snippets = shell_blocks(text) + inline_code(text)
        for snippet in snippets:
            for command, options in invocations(snippet):
                found.append((str(path.relative_to(REPO_ROOT)), command, options))
    return found


@functools.cache
def help_text(command: str) -> str:
    path = REPO_ROOT / "bin" / command
    argv = ([sys.executable, str(path), "--help"] if command.endswith(".py")
            else ["bash", str(path), "--help"])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, f"{command} --help exited {result.returncode}: {result.stderr}"
    return result.stdout + result.stderr


def section(text: str, heading_re: str) -> str:
    """From the heading matching heading_re to the next heading of the same or a higher level."""
    match = re.search(rf"^(#+) {heading_re}.*$", text, re.M)
    assert match, f"no heading matching {heading_re!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
    return text[match.end():end.start() if end else len(text)]


def table_rows(text: str, header_start: str) -> list[list[str]]:
    """The cells of each body row of the first table whose header starts with header_start."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(header_start):
            rows = []
            for row in lines[index + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]])
            return rows
    raise AssertionError(f"no table starting {header_start!r}")


def code_names(cell: str) -> list[str]:
    return re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)


# --- (a) commands and options --------------------------------------------------------------------

def test_the_docs_exist_and_link_each_other():
    for path in (OPERATIONS, TROUBLESHOOTING, P40_GUIDE):
        assert path.exists(), path
    text = OPERATIONS.read_text()
    assert "p40-nvidia-smi.ubuntu22.md" in text and "troubleshooting.md" in text


LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(path: Path) -> set[str]:
    """The anchors a Markdown renderer gives the headings: lower case, punctuation dropped,
    spaces as hyphens; a repeated heading gets -1, -2, ..."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE_RE.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def test_every_link_in_the_docs_resolves():
    problems, checked = [], 0
    for doc in doc_files():
        prose = re.sub(r"`[^`\n]*`", "", FENCE_RE.sub("", doc.read_text()))
        for target in LINK_RE.findall(prose):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            checked += 1
            name, _, anchor = target.partition("#")
            destination = (doc.parent / name).resolve() if name else doc
            where = f"{doc.relative_to(REPO_ROOT)}: ({target})"
            if not destination.exists():
                problems.append(f"{where}: no such file")
            elif anchor and destination.suffix == ".md" and \
                    anchor not in heading_anchors(destination):
                problems.append(f"{where}: no such heading")
    assert checked >= 30, checked
    assert not problems, "\n".join(problems)


def test_the_english_guide_name_leads_to_the_guide():
    """Links elsewhere name docs/p40-nvidia-smi.ubuntu22.en.md: each of its headings is one of
    the guide's, linking to it, so an anchor written for either file finds the section."""
    pointer = DOCS / "p40-nvidia-smi.ubuntu22.en.md"
    guide_anchors = heading_anchors(P40_GUIDE)

    def headings(path: Path) -> list[str]:
        return re.findall(r"^#{2,3} (.+)$", FENCE_RE.sub("", path.read_text()), re.M)

    assert headings(pointer) == headings(P40_GUIDE)
    links = re.findall(r"\]\(p40-nvidia-smi\.ubuntu22\.md#([^)]+)\)", pointer.read_text())
    assert len(links) == len(headings(P40_GUIDE)) and set(links) <= guide_anchors


def test_the_invocation_parser_finds_commands_and_options():
    snippet = ('uv run ./bin/plot_temp.py --hours 24 --include-memo "a | b" --out=x.png | tee y\n'
               "( set -a; . f; set +a; bin/init_db.sh --env f --writer-role w ) # --not-this\n"
               "./bin/run_gpuburn.sh --sec 300 -- -d --not-gpu-burn-tc\n"
               "x=$(./bin/set_status.sh --help)")
    assert invocations(snippet) == [
        ("plot_temp.py", ["--hours", "--include-memo", "--out"]),
        ("init_db.sh", ["--env", "--writer-role"]),
        ("run_gpuburn.sh", ["--sec"]),
        ("set_status.sh", ["--help"]),
    ]


def test_every_documented_command_exists_with_the_options_shown():
    found = documented_invocations()
    commands = {command for _, command, _ in found}
    # The runbook shows every entry point.
    expected = {path.name for path in (REPO_ROOT / "bin").iterdir() if path.is_file()}
    assert expected <= commands, f"not shown in any doc: {sorted(expected - commands)}"
    problems = []
    for doc, command, options in found:
        path = REPO_ROOT / "bin" / command
        if not path.is_file() or not os.access(path, os.X_OK):
            problems.append(f"{doc}: bin/{command} does not exist or is not executable")
            continue
        if command == "uv.sh":
            continue  # its options are uv's own
        text = help_text(command)
        for option in options:
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text):
                problems.append(f"{doc}: bin/{command} {option}: not in its --help")
    assert not problems, "\n".join(problems)


# --- (b) configuration keys ----------------------------------------------------------------------

def code_text() -> str:
    files = [*sorted((REPO_ROOT / "gpu_telemetry").rglob("*.py")),
             *sorted((REPO_ROOT / "bin").glob("*.py")), *sorted((REPO_ROOT / "bin").glob("*.sh")),
             *sorted((REPO_ROOT / "bin" / "lib").glob("*.sh"))]
    return "\n".join(path.read_text() for path in files)


def is_read_by_code(key: str, code: str) -> bool:
    """Read by the configuration loader, by libpq (PG_KEYS), or named by the code."""
    if key in config_module.PG_KEYS:
        return True
    if f'get("{key}")' in inspect.getsource(config_module.load_config):
        return True
    return bool(re.search(rf'"{key}"|\$\{{?{key}\b', code))


def env_example_keys() -> list[str]:
    return re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M)


def runbook_config_keys() -> list[str]:
    rows = table_rows(OPERATIONS.read_text(), "| key |")
    return [name for row in rows for name in code_names(row[0])]


def test_every_env_example_key_is_read_by_the_code():
    code = code_text()
    keys = env_example_keys()
    assert "PGHOST" in keys and "SAMPLE_INTERVAL_SEC" in keys
    unread = [key for key in keys if not is_read_by_code(key, code)]
    assert not unread, f".env.example keys the code never reads: {unread}"


def test_every_key_the_code_reads_is_in_env_example_and_the_runbook():
    wanted = [*config_module.DEFAULTS, *config_module.PG_KEYS]
    loader = inspect.getsource(config_module.load_config)
    for key in config_module.DEFAULTS:
        assert f'get("{key}")' in loader, f"DEFAULTS has {key} but load_config never reads it"
    example, runbook = set(env_example_keys()), set(runbook_config_keys())
    assert not [key for key in wanted if key not in example], "missing in .env.example"
    assert not [key for key in wanted if key not in runbook], "missing in the runbook's table"


def test_every_key_in_the_runbooks_tables_is_read():
    code = code_text()
    unread = [key for key in runbook_config_keys() if not is_read_by_code(key, code)]
    assert not unread, f"the runbook documents keys the code never reads: {unread}"
    # The table of other variables: each is read by the code, the stand-ins, or libpq.
    everything = code + "\n".join(path.read_text()
                                  for path in (REPO_ROOT / "tests" / "stand_ins").rglob("*")
                                  if path.is_file() and path.suffix != ".pyc")
    rows = table_rows(OPERATIONS.read_text(), "| variable |")
    names = [name for row in rows for name in code_names(row[0])]
    assert "WRITER_PGPASSWORD" in names
    unknown = [name for name in names
               if not name.startswith("PG") and not re.search(rf"\b{name}\b", everything)]
    assert not unknown, f"documented variables nothing reads: {unknown}"


# --- (c) troubleshooting covers what the code reports -------------------------------------------

def package_text() -> str:
    return "\n".join(path.read_text()
                     for path in sorted((REPO_ROOT / "gpu_telemetry").rglob("*.py")))


def emitted_event_kinds() -> set[str]:
    code = package_text()
    kinds = set(re.findall(r'\bevent\(\s*"([a-z_]+)"', code))
    kinds |= set(re.findall(r'"kind":\s*"([a-z_]+)"', code))
    kinds |= set(re.findall(r'\bkind:\s*str\s*=\s*"([a-z_]+)"', code))  # a default argument
    kinds |= set(alerts_module.EVENT_KINDS.values())  # the alerts', made from their names
    for match in re.finditer(r"collector_events", code):
        window = code[match.end():match.end() + 400]
        values = window.split("VALUES", 1)
        if len(values) == 2:
            kinds |= set(re.findall(r"'([a-z]+_[a-z_]+)'", values[1][:120]))
    comment = re.search(r"collector_events\.kind IS\s*((?:'[^;]*')+);",
                        (REPO_ROOT / "sql" / "001_init.sql").read_text())
    if comment:
        kinds |= set(re.findall(r"[a-z]+_[a-z_]+", comment.group(1)))
    return kinds


def failure_classes() -> set[str]:
    source = (REPO_ROOT / "gpu_telemetry" / "collector" / "source.py").read_text()
    classes = set(re.findall(r'SourceError\(\s*"([a-z_]+)"', package_text()))
    by_text = re.search(r"^_KINDS_BY_TEXT = \((.*?)^\)", source, re.M | re.S)
    assert by_text, "gpu_telemetry/collector/source.py has no _KINDS_BY_TEXT"
    classes |= set(re.findall(r'\("[^"\n]+",\s*"([a-z_]+)"\)', by_text.group(1)))
    for first, second in re.findall(r'kind = "([a-z_]+)" if [^\n]*\n?\s*else "([a-z_]+)"',
                                    source):
        classes |= {first, second}
    return classes


def test_every_collector_event_kind_is_explained():
    kinds = emitted_event_kinds()
    assert {"source_failed", "source_recovered", "gpu_unreadable", "gpu_missing", "gpu_back",
            "outage_start", "outage_end", "spool_flushed", "spool_dropped"} <= kinds
    rows = table_rows(section(TROUBLESHOOTING.read_text(), "Collector events"), "| kind |")
    documented = {row[0].strip("`") for row in rows}
    assert not kinds - documented, f"kinds not in the troubleshooting table: {kinds - documented}"


def test_every_source_failure_class_is_explained():
    classes = failure_classes()
    assert {"gpu_lost", "device_handle", "no_devices", "driver_mismatch", "driver_unreachable",
            "nvml_init", "timeout", "still_running", "empty_output", "malformed_xml", "no_gpus",
            "not_found", "not_executable", "exit_status"} <= classes
    rows = table_rows(section(TROUBLESHOOTING.read_text(), "source_failed failure classes"),
                      "| class |")
    documented = {row[0].strip("`") for row in rows}
    assert not classes - documented, f"classes not explained: {classes - documented}"


def test_every_exit_code_is_explained():
    from gpu_telemetry import errors

    codes = {value for name, value in vars(errors).items()
             if name.startswith("EXIT_") and isinstance(value, int)}
    assert {0, 2, 65, 69, 75, 77, 78} <= codes
    text = section(TROUBLESHOOTING.read_text(), "Exit statuses")
    documented = {int(row[0]) for row in table_rows(text, "| code |")}
    assert not codes - documented, f"exit codes not explained: {sorted(codes - documented)}"


def help_exit_codes(help_output: str) -> set[int]:
    codes = {int(code) for code in re.findall(r"\(exit (\d+)\)", help_output)}
    for paragraph in re.split(r"\n\s*\n", help_output):
        if "Exit status" in paragraph:
            tail = paragraph.split("Exit status", 1)[1]
            codes |= {int(code) for code in re.findall(r"(?<![\w.=-])(\d{1,3})(?![\w.%])", tail)}
    return codes


def header_comment(script: Path) -> str:
    """A shell script's header comment, as its usage() prints it: line 2 to `set -euo`."""
    lines = []
    for line in script.read_text().splitlines()[1:]:
        if line.startswith("set -euo"):
            break
        lines.append(re.sub(r"^# ?", "", line))
    return "\n".join(lines)


def documented_help(command: str) -> str:
    """What a command says about itself: its --help; for bin/uv.sh, whose --help is uv's, its
    header comment."""
    if command == "uv.sh":
        return header_comment(REPO_ROOT / "bin" / command)
    return help_text(command)


def cell_exit_codes(cell: str) -> set[int]:
    """The statuses a table cell lists; inline code (an error message, an option) is quoted
    text, not a status."""
    prose = re.sub(r"`[^`]*`", " ", cell)
    return {int(code) for code in re.findall(r"(?<![\w.-])(\d{1,3})(?![\w.%]| ?%)", prose)}


def readme_exit_codes() -> dict[str, set[int]]:
    """bin/<name> -> the statuses of its rows in the README's Commands table (the --loop row
    of collect_once.py counts with the other)."""
    rows = table_rows(section((REPO_ROOT / "README.md").read_text(), "Commands"), "| command |")
    codes: dict[str, set[int]] = {}
    for row in rows:
        match = re.match(r"`bin/([\w.-]+)", row[0])
        if match:
            codes.setdefault(match.group(1), set()).update(cell_exit_codes(row[-1]))
    return codes


def troubleshooting_exit_codes() -> dict[str, set[int]]:
    text = section(TROUBLESHOOTING.read_text(), "Exit statuses")
    return {row[0].strip("`"): cell_exit_codes(row[1]) for row in table_rows(text, "| command |")}


# What the code can exit with is read from the code, which over-estimates: a module a command
# imports may raise what the command never lets through. Each status the reading finds that a
# command cannot return is named here with the reason, so that a new one needs a decision:
# document it, or say here why it cannot happen.
NOT_REACHED = {
    "flush_spool.py": {
        69: "nvidia-smi is never run: what the parser refuses in a file of the original "
            "scripts makes the file quarantined",
        74: "the flush writes neither a spool file nor the status file",
    },
}
# cli.run returns 1 when the reader of a command's output went away (`| head`): not counted,
# the troubleshooting page says it once for every Python command.
QUIET_ON_BROKEN_PIPE = 1


def python_sources() -> dict[str, str]:
    """Module name below the package ("cli.common", "errors") -> its text."""
    return {".".join(path.relative_to(PACKAGE).with_suffix("").parts): path.read_text()
            for path in sorted(PACKAGE.rglob("*.py")) if path.name != "__init__.py"}


def exit_constants() -> dict[str, int]:
    """EXIT_* names of errors.py and of the other modules (EXIT_HUNG, EXIT_NO_ROWS, ...)."""
    found = {}
    for text in python_sources().values():
        found.update({name: int(value) for name, value in
                      re.findall(r"^(EXIT_[A-Z_]+) = (\d+)\b", text, re.M)})
    return found


def class_exit_codes(texts: list[str]) -> dict[str, int]:
    """Exception classes -> their exit_code: their own, else their base's."""
    constants = exit_constants()
    bases, own = {}, {}
    for text in texts:
        for match in re.finditer(r"^class (\w+)\((\w+)\):\n((?:[ \t]+.*\n|\n)*)", text, re.M):
            name, base, body = match.groups()
            bases[name] = base
            value = re.search(r"^    exit_code = (EXIT_\w+|\d+)", body, re.M)
            if value:
                own[name] = (int(value.group(1)) if value.group(1).isdigit()
                             else constants[value.group(1)])
    codes = {}
    for name in bases:
        current, seen = name, set()
        while current not in own and current in bases and current not in seen:
            seen.add(current)
            current = bases[current]
        if current in own:
            codes[name] = own[current]
    return codes


def imported_modules(text: str) -> set[str]:
    names = set(re.findall(r"^\s*from gpu_telemetry\.([\w.]+) import", text, re.M))
    names |= set(re.findall(r"^\s*import gpu_telemetry\.([\w.]+)", text, re.M))
    names |= set(re.findall(r"-m gpu_telemetry\.([\w.]+)", text))
    return names


def reachable_modules(text: str) -> dict[str, str]:
    sources = python_sources()
    found: dict[str, str] = {}
    waiting = sorted(imported_modules(text))
    while waiting:
        name = waiting.pop()
        if name in found or name not in sources:
            continue
        found[name] = sources[name]
        waiting += sorted(imported_modules(sources[name]))
    return found


def function_body(text: str, name: str) -> str:
    match = re.search(rf"^def {name}\(.*?(?=^\S|\Z)", text, re.M | re.S)
    return match.group(0) if match else ""


def class_bases(texts: list[str]) -> dict[str, str]:
    return {name: base for text in texts
            for name, base in re.findall(r"^class (\w+)\((\w+)\):", text, re.M)}


def caught_exit_codes(text: str, classes: dict[str, int], bases: dict[str, str]) -> set[int]:
    """A module that passes a caught error's own code on (`return exc.exit_code`, or raising it
    again as `raise type(exc)(...)`) can exit with the code of the class it catches and of
    every subclass of it."""
    if not re.search(r"\breturn exc\.exit_code\b|\braise type\(exc\)\(", text):
        return set()
    caught = set(re.findall(r"^\s*except (\w+) as exc:", text, re.M))

    def is_caught(name: str) -> bool:
        seen = set()
        while name not in caught and name in bases and name not in seen:
            seen.add(name)
            name = bases[name]
        return name in caught

    return {code for name, code in classes.items() if is_caught(name)}


def python_exit_codes(entry_text: str) -> set[int]:
    """What a Python entry point (a bin/*.py, or a shell script running a module with -m) can
    exit with, read from its text and every gpu_telemetry module it imports."""
    modules = reachable_modules(entry_text)
    texts = [entry_text, *python_sources().values()]
    classes, bases = class_exit_codes(texts), class_bases(texts)
    # A caught base passes on the codes of its subclasses that this command can meet: those
    # defined in what it imports.
    reachable_classes = class_exit_codes([entry_text, *modules.values()])
    constants = exit_constants()
    codes = {0}
    for text in [entry_text, *(text for name, text in modules.items() if name != "cli.common")]:
        codes |= {constants[name] for name in re.findall(r"\breturn (EXIT_[A-Z_]+)\b", text)}
        codes |= {constants[name] for name in re.findall(r"\bexit_code=(EXIT_[A-Z_]+)\b", text)}
        codes |= {classes[name] for name in re.findall(r"\braise (\w+)\(", text)
                  if name in classes}
        codes |= caught_exit_codes(text, reachable_classes, bases)
    if "cli.common" in modules:
        # The parser's usage errors, and what run() makes of anything the command lets
        # through; a psycopg error only where something imports psycopg.
        cli = python_sources()["cli.common"]
        run_body = function_body(cli, "run")
        codes |= {constants[name] for name in re.findall(r"\.exit\((EXIT_[A-Z_]+)", cli)}
        codes |= {constants[name] for name in re.findall(r"\breturn (EXIT_[A-Z_]+)", run_body)}
        codes |= {int(code) for code in re.findall(r"\breturn (\d+)\b", run_body)
                  if int(code) != QUIET_ON_BROKEN_PIPE}
        if any(re.search(r"^\s*(?:import|from) psycopg\b", text, re.M)
               for text in [entry_text, *modules.values()]):
            codes |= {constants[name] for name in re.findall(
                r"\breturn (EXIT_[A-Z_]+)", function_body(cli, "_database_error"))}
    return codes


def shell_functions(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)\(\) \{\n(.*?)^\}", text, re.M | re.S))


def shell_exit_codes(script: Path) -> set[int]:
    """The statuses a shell command can end with: `exit N` and `die N` in its text and in the
    bin/lib/common.sh functions it calls, `return N` of main and of the functions whose status
    main passes on, and what the programs it execs return (a Python module, bin/uv.sh: itself or
    through `project_python --exec`)."""
    text = script.read_text()
    own = shell_functions(text)
    common = (shell_functions((REPO_ROOT / "bin" / "lib" / "common.sh").read_text())
              if "lib/common.sh" in text else {})
    used: dict[str, str] = {}
    waiting = [text]
    while waiting:
        body = waiting.pop()
        for name, function in common.items():
            if name not in used and re.search(rf"\b{name}\b", body):
                used[name] = function
                waiting.append(function)
    codes = set()
    for body in [text, *used.values()]:
        codes |= {int(code) for code in re.findall(r"\b(?:exit|die) (\d+)\b", body)}
    passing, waiting = set(), ["main"]
    while waiting:
        name = waiting.pop()
        if name in passing or name not in own:
            continue
        passing.add(name)
        body = own[name]
        codes |= {int(code) for code in re.findall(r"\breturn (\d+)\b", body)}
        waiting += re.findall(r"^\s*(\w+)\b[^\n]*\|\| return \$\?", body, re.M)
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        if lines:
            waiting.append(lines[-1].split()[0])
    if "-m gpu_telemetry." in text:
        codes |= python_exit_codes(text)
    if re.search(r'^\s*(exec "\$REPO_ROOT/bin/uv\.sh"|project_python --exec\b)', text, re.M):
        codes |= shell_exit_codes(REPO_ROOT / "bin" / "uv.sh")
    return codes


def code_exit_codes(path: Path) -> set[int]:
    if path.suffix == ".py":
        return python_exit_codes(path.read_text())
    return shell_exit_codes(path)


def test_the_exit_status_readers_find_what_the_code_does():
    assert cell_exit_codes("0 done, 2 usage (`--batch must be at least 1, got 0`), "
                           "129/130/143 HUP/INT/TERM; `SPOOL_MAX_MB=1024`, 10 %") == {
        0, 2, 129, 130, 143}
    assert {0, 2, 65, 70, 75, 77, 78, 130} <= code_exit_codes(
        REPO_ROOT / "bin" / "flush_spool.py")
    # The named database errors reach collect_once.py through `return exc.exit_code`.
    assert {0, 2, 65, 69, 70, 74, 75, 77, 78, 130} <= code_exit_codes(
        REPO_ROOT / "bin" / "collect_once.py")
    assert {0, 2, 74, 78, 127, 130} <= code_exit_codes(REPO_ROOT / "bin" / "set_status.sh")
    assert {1, 2, 74, 78, 124, 127} <= code_exit_codes(REPO_ROOT / "bin" / "run_gpuburn.sh")
    assert code_exit_codes(REPO_ROOT / "bin" / "host_healthcheck.sh") == {0, 1, 2, 78}
    # It sources bin/lib/common.sh but reads no configuration: no 78.
    assert code_exit_codes(REPO_ROOT / "bin" / "install_units.sh") == {0, 1, 2}
    assert code_exit_codes(REPO_ROOT / "bin" / "uv.sh") == {127}


def test_every_exit_status_is_in_the_help_the_readme_and_troubleshooting():
    """Each command's statuses agree between its --help ("Exit status" paragraph), its README
    row, its troubleshooting row and its code; every mismatch is listed at once."""
    readme, troubleshooting = readme_exit_codes(), troubleshooting_exit_codes()
    problems = []

    def compare(name: str, where: str, found: set[int], helped: set[int]) -> None:
        if found != helped:
            problems.append(f"{name}: {where} has {sorted(found)}, --help {sorted(helped)} "
                            f"(not in {where}: {sorted(helped - found)}; not in --help: "
                            f"{sorted(found - helped)})")

    for path in sorted((REPO_ROOT / "bin").iterdir()):
        if not path.is_file():
            continue
        name = path.name
        helped = help_exit_codes(documented_help(name))
        if not helped:
            problems.append(f"{name}: --help lists no exit status")
            continue
        for where, table in (("the README row", readme),
                             ("the troubleshooting row", troubleshooting)):
            if name in table:
                compare(name, where, table[name], helped)
            else:
                problems.append(f"{name}: {where} is missing")
        if path.suffix == ".sh" and name != "uv.sh":
            compare(name, "the header comment", help_exit_codes(header_comment(path)), helped)
        produced = code_exit_codes(path)
        not_reached = NOT_REACHED.get(name, {})
        for code, reason in not_reached.items():
            if code not in produced:
                problems.append(f"{name}: NOT_REACHED has {code}, which the code no longer "
                                "names: drop it")
            elif code in helped:
                problems.append(f"{name}: --help lists {code}, which cannot happen: {reason}")
        missing = produced - helped - set(not_reached)
        if missing:
            problems.append(f"{name}: the code can exit {sorted(missing)}, not in --help")
    assert not problems, "\n".join(problems)


def literal_parts(shell_string: str) -> list[str]:
    """The fixed text of a double-quoted shell string, between its expansions."""
    return re.split(r"\$\{[^}]*\}|\$\(.*\)|\$[A-Za-z_][A-Za-z0-9_]*", shell_string)


def appended_lines(script: str, array: str) -> list[str]:
    """The double-quoted strings appended with ARRAY+=("..."), `$( ... )` inside included."""
    found = []
    for match in re.finditer(rf"\b{array}\+=\(\"", script):
        index, depth, text = match.end(), 0, []
        while index < len(script):
            char = script[index]
            if script.startswith("$(", index):
                depth += 1
                text.append("$(")
                index += 2
                continue
            if depth and char == ")":
                depth -= 1
            elif not depth and char == "\\":
                text.append(script[index:index + 2])
                index += 2
                continue
            elif not depth and char == '"':
                break
            text.append(char)
            index += 1
        found.append("".join(text))
    return found


def python_findings(source: str, level: str) -> list[str]:
    """The f-strings of report.<level>(...) calls, adjacent literals joined; each {...} becomes
    a ${...} so that literal_parts splits at it as at a shell expansion."""
    found = []
    for match in re.finditer(rf"report\.{level}\(((?:\s*f?\"(?:[^\"\\]|\\.)*\")+)\)", source):
        literals = re.findall(r"f?\"((?:[^\"\\]|\\.)*)\"", match.group(1))
        found.append(re.sub(r"\{[^}]*\}", "${x}", "".join(literals)))
    return found


def test_every_health_check_line_is_explained():
    script = (REPO_ROOT / "bin" / "host_healthcheck.sh").read_text()
    # The Collector section's findings come from the Python side.
    health = (PACKAGE / "ops" / "health.py").read_text()
    text = section(TROUBLESHOOTING.read_text(), "Health-check lines")
    fails = appended_lines(script, "FAILS") + python_findings(health, "fail")
    warns = appended_lines(script, "WARNS") + python_findings(health, "warn")
    assert len(fails) >= 4 and len(warns) >= 8
    problems = []
    for prefix, lines in (("FAIL: ", fails), ("WARN: ", warns)):
        for line in lines:
            parts = literal_parts(line)
            if parts[0].strip() and prefix + parts[0] not in text:
                problems.append(f"{prefix}{parts[0]!r}")
            problems += [f"{prefix}... {part!r}" for part in parts
                         if len(part.strip()) >= 4 and part not in text]
    assert not problems, "health-check lines not in the troubleshooting page:\n" + \
        "\n".join(problems)


def test_every_quarantine_reason_is_explained():
    code = "\n".join((REPO_ROOT / "gpu_telemetry" / name).read_text()
                     for name in ("collector/sample.py", "collector/spool.py"))
    reasons = re.findall(r'InvalidSample\(f?"([^"]+)"', code)
    assert len(reasons) >= 10
    text = section(TROUBLESHOOTING.read_text(), "Quarantined spool files")
    missing = [reason for reason in reasons
               for part in re.split(r"\{[^}]*\}", reason)
               if len(part.strip(" ,:()'")) >= 6 and part.strip() not in text]
    assert not missing, f"quarantine reasons not explained: {missing}"
    assert "spool/bad/" in text and ".reason" in text


# --- (d) the runbook's order ---------------------------------------------------------------------

# The operator's original runbook has its sections in this order; docs/operations.md keeps it,
# so someone who knows the original finds each step where they expect it.

RUNBOOK_ORDER = ("Pre-check", "Setup", "schema", "One-shot", "Continuous collection",
                 "Status tags", "gpu-burn", "Checking results", "Spool and flush", "Recovery",
                 "Troubleshooting", "Reset")


def test_the_runbook_keeps_the_original_order():
    headings = re.findall(r"^#{2,3} (.+)$", OPERATIONS.read_text(), re.M)
    positions = []
    for name in RUNBOOK_ORDER:
        where = [index for index, heading in enumerate(headings) if name in heading]
        assert where, f"no section heading with {name!r} in docs/operations.md"
        positions.append(where[0])
    assert positions == sorted(positions), list(zip(RUNBOOK_ORDER, positions, strict=True))


def test_the_runbook_covers_roles_retention_and_the_fleet():
    text = OPERATIONS.read_text()
    for needle in ("--writer-role gpu_writer --reader-role grafana_reader", "WRITER_PGPASSWORD",
                   "READER_PGPASSWORD", "chmod 600 .env", "RETENTION_DAYS", "17,280", "86,400",
                   "docs/performance.md", "grafana/README.md", "report_run.py"):
        assert needle in text, needle


# --- (e) the runbook's paths without a GPU, as written ------------------------------------------

def runbook_blocks(heading_re: str) -> list[str]:
    return shell_blocks(section(OPERATIONS.read_text(), heading_re))


def documented_environment(tmp_path: Path, db_env: dict[str, str]) -> dict[str, str]:
    """What an operator's shell has after the runbook's setup: the database in the process
    environment (so no .env of the developer's changes the outcome), a reader.env under HOME,
    `uv` on PATH (here: `uv run X` is this interpreter, which is the project's environment)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    uv = bin_dir / "uv"
    uv.write_text(f'#!/bin/sh\n[ "$1" = run ] && shift\nexec "{sys.executable}" "$@"\n')
    uv.chmod(0o755)
    home = tmp_path / "home"
    config_dir = home / ".config" / "gpu-telemetry"
    config_dir.mkdir(parents=True)
    connection = "".join(f"{key}={value}\n" for key, value in db_env.items())
    for name in ("reader.env", "owner.env"):
        (config_dir / name).write_text(connection)
        (config_dir / name).chmod(0o600)
    env = {key: value for key, value in os.environ.items()
           if key not in config_module.DEFAULTS and not key.startswith(("PG", "NVSMI_STANDIN_"))}
    env.update({key: "" for key in config_module.DEFAULTS})
    env["KERNEL_LOG_COMMAND"] = "none"  # this machine's kernel log is not the walk's
    env.update({"PGPASSWORD": "", "PGSSLMODE": "prefer", "PGCONNECT_TIMEOUT": "5"})
    env.update(db_env)
    env.update({
        "HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "SPOOL_DIR": str(tmp_path / "spool"),
        "STATUS_FILE": str(tmp_path / "status.json"),
        "LOG_DIR": str(tmp_path / "logs"),
    })
    return env


def run_block(block: str, env: dict[str, str], tmp_path: Path,
              timeout: float = 180) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + block.replace("/tmp/", f"{tmp_path}/")
    return subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_without_a_gpu_as_written(tmp_path, db):
    blocks = runbook_blocks(r"\d+\. Without a GPU")
    quick = blocks[0]
    failures = next(block for block in blocks if "NVSMI_STANDIN_MODE=gpu_lost" in block)
    env = documented_environment(tmp_path, db.env)
    result = run_block(quick, env, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "stored 1 of 1 GPU rows" in output and "stopped after" in output, output
    for picture in ("stand-in-plot.png", "stand-in-report.png"):
        assert (tmp_path / "gpu-burn" / picture).stat().st_size > 0
    report = (tmp_path / "gpu-burn" / "stand-in-report.md").read_text()
    run_id = re.search(r"gpuburn-\d{8}-\d{6}", report).group(0)
    with db.connect() as conn:
        idle, bench = conn.execute(
            "SELECT min(temp_c) FILTER (WHERE status_tag = 'idle'),"
            "       max(temp_c) FILTER (WHERE status_tag = 'bench')"
            " FROM telemetry.gpu_telemetry WHERE run_id = %s", (run_id,)).fetchone()
    assert idle is not None and bench is not None and bench >= idle + 25, (idle, bench)

    lost, dual = [line for line in failures.splitlines() if "collect_once.py" in line]
    assert "NVSMI_STANDIN_MODE=gpu_lost" in lost and "dual-2080" in dual
    result = run_block(lost, env, tmp_path, timeout=60)
    assert result.returncode == 69 and "GPU is lost" in result.stderr, result.stderr
    result = run_block(dual, env, tmp_path, timeout=60)
    assert result.returncode == 0 and result.stdout.count('"gpu_uuid"') == 2, result.stderr
    with db.connect() as conn:
        kinds = [row[0] for row in conn.execute("SELECT kind FROM telemetry.collector_events")]
    assert "source_failed" in kinds


def test_the_spool_demonstration_as_written(tmp_path, db):
    blocks = runbook_blocks(r"\d+\. Spool and flush")
    demo = next(block for block in blocks if "PGPORT=1" in block)
    spool_line, _, flush_line = demo.strip().splitlines()
    env = documented_environment(tmp_path, db.env)
    env["NVIDIA_SMI"] = str(REPO_ROOT / "tests" / "stand_ins" / "nvidia-smi")
    result = run_block(spool_line, env, tmp_path, timeout=60)
    assert result.returncode == 75 and "sample spooled to" in result.stderr, result.stderr
    assert len(list((tmp_path / "spool").glob("*.json"))) == 1
    result = run_block(flush_line, env, tmp_path, timeout=60)
    assert result.returncode == 0 and "flushed 1 samples" in result.stdout, result.stderr
    assert not list((tmp_path / "spool").glob("*.json"))


# --- (f) what --help says about statuses and usage, as it happens -------------------------------

def test_a_role_that_may_not_insert_is_told_apart_from_an_outage(tmp_path, db):
    """collect_once.py keeps the sample and flush_spool.py the files, both exiting 77 (as
    --help says), which the flush timer does not take for a passing outage."""
    from psycopg import sql

    from tests.helpers import base_env, run_script, spool_files

    role = f"gt_select_only_{os.getpid()}"
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA telemetry TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA telemetry TO {}")
                     .format(sql.Identifier(role)))
    try:
        env = base_env(tmp_path, {**db.env, "PGUSER": role})
        collected = run_script("collect_once.py", env=env, tmp_path=tmp_path)
        assert collected.returncode == 77, collected.stderr
        assert "permission denied" in collected.stderr and "sample spooled to" in collected.stderr
        assert f'role "{role}"' in collected.stderr
        assert len(spool_files(tmp_path)) == 1
        flushed = run_script("flush_spool.py", env=env, tmp_path=tmp_path)
        assert flushed.returncode == 77, flushed.stderr
        assert flushed.stderr.startswith("flush_spool.py: database permission denied")
        assert f'role "{role}"' in flushed.stderr
        assert len(flushed.stderr.splitlines()) == 1
        assert len(spool_files(tmp_path)) == 1
    finally:
        with db.connect() as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


BAD_USAGE = [
    ("collect_once.py", ["--loop", "--interval", "0"],
     "--interval 0: the interval must be more than zero seconds"),
    ("collect_once.py", ["--loop", "--interval", "-2.5"],
     "--interval -2.5: the interval must be more than zero seconds"),
    ("collect_once.py", ["--loop", "--interval", "nan"], "--interval nan: not a finite number"),
    ("collect_once.py", ["--interval", "5"], "--interval without --loop"),
    ("collect_once.py", ["--quiet"], "--quiet without --loop"),
    ("collect_once.py", ["--raw"], "--raw without --dry-run"),
    ("collect_once.py", ["--loop", "--dry-run"], "--loop and --dry-run cannot be combined"),
    ("flush_spool.py", ["--batch", "0"], "--batch must be at least 1, got 0"),
    ("flush_spool.py", ["--wait", "-1"], "--wait must be zero or more seconds, got -1"),
    ("flush_spool.py", ["--wait", "inf"], "--wait inf: not a finite number of seconds"),
    ("set_status.sh", ["busy"], "unknown tag 'busy': use one of idle, prod, bench"),
    ("set_status.sh", ["idle", "a", "b"], "3 arguments (idle a b): TAG [MEMO] takes at most 2"),
    ("set_status.sh", ["idle", "--run-id", "x", "--clear-run-id"], "not allowed with argument"),
    ("set_status.sh", ["idle", "--run-id", "-bad"], "run id '-bad' must be"),
    ("install_units.sh", ["--print", "--enable"], "--print writes nothing"),
    ("install_units.sh", ["--enable", "--no-reload"], "--enable needs the reload"),
]


@pytest.mark.parametrize(("command", "args", "says"), BAD_USAGE,
                         ids=[f"{c} {' '.join(a)}" for c, a, _ in BAD_USAGE])
def test_a_bad_value_or_a_contradiction_is_one_line_and_exit_2(tmp_path, command, args, says):
    from tests.helpers import base_env

    env = base_env(tmp_path, None, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"))
    (tmp_path / "empty.env").touch()
    interpreter = [sys.executable] if command.endswith(".py") else ["bash"]
    options = [] if command == "install_units.sh" else ["--env", str(tmp_path / "empty.env")]
    result = subprocess.run([*interpreter, str(REPO_ROOT / "bin" / command), *options, *args],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and says in result.stderr, result.stderr
    assert result.stderr.startswith(f"{command}: ")
    assert not (tmp_path / "status.json").exists() and not (tmp_path / "config").exists()


def test_the_nvml_stand_in_as_written(tmp_path, db):
    """docs/nvml.md, "Trying it without a GPU": the NVML source answered by the stand-in, then
    a lost GPU."""
    text = (REPO_ROOT / "docs" / "nvml.md").read_text()
    (block,) = shell_blocks(section(text, "Trying it without a GPU"))
    commands = [line.split("#")[0].strip() for line in block.replace("\\\n", " ").splitlines()]
    sample, lost = [line for line in commands if line]
    env = documented_environment(tmp_path, db.env)
    result = run_block(sample, env, tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    (gpu,) = json.loads(result.stdout)["gpus"]
    assert gpu["gpu_name"] == "NVIDIA GeForce RTX 3080" and gpu["temp_c"] == 27
    result = run_block(lost, env, tmp_path, timeout=60)
    assert result.returncode == 69, result.stderr
    assert "NVML failed (gpu_lost, code 15)" in result.stderr
