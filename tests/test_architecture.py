"""The architecture in docs/architecture.md holds in the code: no import cycle, every module in a part, only
declared arrows, every never kept, and no terminal output below the face. The checker is tested on planted packages."""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOC = ROOT / "docs" / "architecture.md"
SCANNED = ("hpo_lib", "pipelines", "bench")  # the folders whose modules must each belong to a part
# the parts that never write to the terminal
QUIET_PARTS = ("Shared", "Data", "Model", "Train", "Katib", "Engine", "Results", "Pipeline", "API")
BOUNDARY = "hpo_lib/errors.py"  # run_main: the one error boundary both faces (hpo, the trial) print through
# the fork server: its children rebuild the streams a fresh interpreter has and write to the engine's pipe
WORKER = "hpo_lib/engine/warm.py"


# ----------------------------------------------------------------------------------------------- the declaration
@dataclass
class Architecture:
    parts: dict[str, tuple[str, ...]]  # part -> path patterns ("pkg/" is a folder, anything else one file)
    arrows: dict[str, set[str]]  # part -> the parts it may import
    nevers: dict[str, dict[str, str]]  # part -> {forbidden part: why}


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows of the Markdown table under ``## heading`` (header and rule dropped), cells stripped of backticks."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip().replace("`", "") for cell in row.strip().strip("|").split("|")] for row in rows[2:]]


def _names(cell: str) -> list[str]:
    return [name.strip() for name in cell.split(",") if name.strip()]


def read_architecture(text: str) -> Architecture:
    parts = {row[0]: tuple(_names(row[1])) for row in _table(text, "Parts")}
    arrows = {row[0]: set(_names(row[1])) for row in _table(text, "Arrows")}
    nevers = {row[0]: {name: row[2] for name in _names(row[1])} for row in _table(text, "Nevers")}
    return Architecture(parts, arrows, nevers)


# ----------------------------------------------------------------------------------------------- the imports
def module_files(root: Path, folders: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the folders (``pkg/__init__.py`` is ``pkg``)."""
    found = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module or ``module.attribute``) lives in."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path, folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the known modules it imports anywhere in its file (functions and ``__main__`` blocks included).

    ``from pkg import name`` counts as ``pkg.name`` when that is a module, else as ``pkg``. A script folder without
    ``__init__.py`` (``bench/``) imports its siblings by their bare name, as its scripts run with it on the path.
    """
    modules = module_files(root, folders)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        siblings = {m.rpartition(".")[2]: m for m in modules if m.rpartition(".")[0] == package and package}

        def known(candidate: str, siblings: dict[str, str] = siblings) -> str | None:
            head, _, rest = candidate.partition(".")
            if head in siblings and not (root / head).is_dir():  # a bare sibling import of a script folder
                candidate = siblings[head] + ("." + rest if rest else "")
            return _resolve(candidate, modules)

        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(filter(None, (known(alias.name) for alias in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    module = known(f"{base}.{alias.name}")
                    targets.update(filter(None, [module if module == f"{base}.{alias.name}" else known(base)]))
        graph[name] = targets - {name}
    return graph


def part_of(path: Path, root: Path, parts: dict[str, tuple[str, ...]]) -> str | None:
    relative = path.relative_to(root).as_posix()
    for part, patterns in parts.items():
        for pattern in patterns:
            if relative == pattern or (pattern.endswith("/") and relative.startswith(pattern)):
                return part
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each once, as the list of modules around it (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(root: Path, folders: tuple[str, ...], arch: Architecture) -> list[str]:
    """Every breach of ``arch`` in the code under ``root``, one readable line each (empty when it holds)."""
    files = module_files(root, folders)
    graph = import_graph(root, folders)
    problems = [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    owner = {name: part_of(path, root, arch.parts) for name, path in files.items()}
    problems += [f"{files[name].relative_to(root)} belongs to no part" for name, part in owner.items() if part is None]
    for part, forbidden in arch.nevers.items():
        for target in forbidden:
            if target in arch.arrows.get(part, set()):
                problems.append(f"the declaration both allows and forbids {part} -> {target}")
    for name, targets in sorted(graph.items()):
        source = owner[name]
        for target in sorted(targets):
            dest = owner[target]
            if source is None or dest is None or source == dest:
                continue
            if dest in arch.nevers.get(source, {}):
                problems.append(f"{name} imports {target}: {source} never imports {dest} "
                                f"({arch.nevers[source][dest]})")
            elif dest not in arch.arrows.get(source, set()):
                problems.append(f"{name} imports {target}: {source} -> {dest} is not a declared arrow")
    return problems


def terminal_writes(path: Path) -> list[str]:
    """``print(...)``, ``sys.stdout``/``sys.stderr`` and ``tqdm`` in a file, as ``file:line what``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        what = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            what = "print()"
        elif isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr") and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            what = f"sys.{node.attr}"
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                "tqdm" in (alias.name or "") for alias in node.names) or \
                isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tqdm"):
            what = "tqdm"
        if what:
            found.append(f"{path.name}:{node.lineno} {what}")
    return found


# ----------------------------------------------------------------------------------------------- the project
ARCH = read_architecture(DOC.read_text())


def test_the_declaration_names_every_part_once():
    # every part has a row in each table it needs, and every arrow or never names a declared part
    assert set(ARCH.arrows) == set(ARCH.parts)
    named = {p for targets in ARCH.arrows.values() for p in targets} | set(ARCH.nevers) | {
        p for targets in ARCH.nevers.values() for p in targets}
    assert named <= set(ARCH.parts), named - set(ARCH.parts)


def test_the_code_keeps_the_declared_architecture():
    # no cycle, no unplaced module, no undeclared arrow, no broken never
    assert violations(ROOT, SCANNED, ARCH) == []


def test_the_graph_sees_lazy_and_main_block_imports():
    # the CLI's commands import the engine only inside functions, and the trial's __main__ block calls its own main
    graph = import_graph(ROOT, SCANNED)
    assert "hpo_lib.engine" in graph["hpo_lib.cli_commands"]
    assert "hpo_lib.results.tracking" in graph["hpo_lib.engine.mlflow_runs"]  # a lazy import inside a function
    assert not any(t.startswith("hpo_lib.cli") for t in graph["hpo_lib.trial"])


def test_nothing_below_the_face_writes_to_the_terminal():
    # only the face draws (and the trial, whose stdout is the Katib contract)
    files = module_files(ROOT, ("hpo_lib", "pipelines"))
    quiet = [p for p in files.values() if part_of(p, ROOT, ARCH.parts) in QUIET_PARTS
             and p.relative_to(ROOT).as_posix() not in (BOUNDARY, WORKER)]
    assert len(quiet) > 20
    assert [w for path in quiet for w in terminal_writes(path)] == []


def test_the_doc_and_architecture_json_agree_on_the_nevers_it_inherited():
    # the nevers the project started from (shared/reference/architecture.json) are all still declared
    inherited = {("Data", "Train"), ("Data", "Engine"), ("Model", "Data"), ("Train", "Engine"), ("Train", "Katib"),
                 ("Engine", "Train"), ("Engine", "Face"), ("Katib", "Engine"), ("Data", "Face"), ("Train", "Face"),
                 ("Results", "Face")}
    declared = {(part, target) for part, targets in ARCH.nevers.items() for target in targets}
    assert inherited <= declared, inherited - declared


# ----------------------------------------------------------------------------------------------- the checker
PLANTED_DOC = """\
## Parts

| part | modules | what it is |
|---|---|---|
| Low | `pkg/low.py` | the bottom |
| High | `pkg/high/` | above it |

## Arrows

| part | may import |
|---|---|
| Low | |
| High | Low |

## Nevers

| part | never imports | why |
|---|---|---|
| Low | High | the bottom knows nothing above it |
"""


def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    return root


CLEAN = {"pkg/__init__.py": "", "pkg/low.py": "X = 1\n", "pkg/high/__init__.py": "",
         "pkg/high/a.py": "from pkg import low\n", "pkg/high/b.py": "from pkg.high import a\n"}


def _check(tmp_path: Path, files: dict[str, str], doc: str = PLANTED_DOC) -> list[str]:
    arch = read_architecture(doc.replace("`pkg/low.py`", "`pkg/__init__.py`, `pkg/low.py`"))
    return violations(_plant(tmp_path, files), ("pkg",), arch)


def test_checker_passes_a_clean_package(tmp_path):
    # the planted package as declared: nothing to report
    assert _check(tmp_path, CLEAN) == []


def test_checker_finds_a_planted_cycle(tmp_path):
    # a imports b inside a function, b imports a at the top: a cycle, though never at import time
    files = {**CLEAN, "pkg/high/a.py": "from pkg import low\n\ndef f():\n    from pkg.high import b\n"}
    assert _check(tmp_path, files) == ["import cycle: pkg.high.a -> pkg.high.b"]


def test_checker_finds_a_planted_forbidden_arrow(tmp_path):
    # the bottom imports a module above it under __main__: a broken never, named with its reason
    files = {**CLEAN, "pkg/low.py": "X = 1\nif __name__ == '__main__':\n    import pkg.high.a\n"}
    problems = _check(tmp_path, files)
    assert any(re.fullmatch(r"pkg.low imports pkg.high.a: Low never imports High \(the bottom knows .*\)", p)
               for p in problems), problems


def test_checker_finds_an_undeclared_arrow_and_an_unplaced_module(tmp_path):
    # a module outside every part, and an arrow the table does not allow (High -> Loose is not declared)
    doc = PLANTED_DOC.replace("| High | `pkg/high/` | above it |", "| High | `pkg/high/` | above it |\n"
                              "| Loose | `pkg/loose.py` | declared, not allowed |").replace(
        "| High | Low |", "| High | Low |\n| Loose | |")
    files = {**CLEAN, "pkg/stray.py": "", "pkg/loose.py": "", "pkg/high/b.py": "from pkg import loose\n"}
    problems = _check(tmp_path, files, doc)
    assert "pkg/stray.py belongs to no part" in problems
    assert "pkg.high.b imports pkg.loose: High -> Loose is not a declared arrow" in problems


def test_terminal_writes_are_found(tmp_path):
    # a print, a write to sys.stderr and a tqdm import are each reported with their line
    path = _plant(tmp_path, {"m.py": "import sys\nfrom tqdm import tqdm\nprint(1)\nsys.stderr.write('x')\n"}) / "m.py"
    assert terminal_writes(path) == ["m.py:2 tqdm", "m.py:3 print()", "m.py:4 sys.stderr"]


@pytest.mark.parametrize("line, expected", [
    ("from pkg.high import a", {"pkg.high.a"}),
    ("from pkg.high import a, b", {"pkg.high.a", "pkg.high.b"}),
    ("import pkg.high.a as x", {"pkg.high.a"}),
    ("from pkg.low import X", {"pkg.low"}),
    ("from pkg import high", {"pkg.high"}),
])
def test_import_forms_resolve_to_modules(tmp_path, line, expected):
    # each way of writing an import lands on the module it loads
    graph = import_graph(_plant(tmp_path, {**CLEAN, "pkg/c.py": line + "\n"}), ("pkg",))
    assert graph["pkg.c"] == expected


# ----------------------------------------------------------------------------------------------- package docstrings
def _packages(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / "hpo_lib").rglob("__init__.py") if p.parent != root / "hpo_lib")


def unnamed_modules(package: Path) -> list[str]:
    """The modules and subpackages of ``package`` that its ``__init__`` docstring does not name as ``:mod:`.name```
    (or by its full dotted name)."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    dotted = ".".join(package.parts[len(package.parts) - 1 - package.parts[::-1].index("hpo_lib"):])
    members = [p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")]
    members += [p.parent.name for p in package.glob("*/__init__.py")]
    return sorted(m for m in members if f":mod:`.{m}`" not in doc and f":mod:`{dotted}.{m}`" not in doc)


@pytest.mark.parametrize("package", _packages(ROOT), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_package_docstring_names_its_modules(package):
    # a newcomer reads a subpackage's __init__ first: it names every module inside, so none is left out of the map
    assert unnamed_modules(package) == []


def test_a_module_missing_from_the_docstring_is_found(tmp_path):
    _plant(tmp_path, {"hpo_lib/part/__init__.py": '"""Part.\n\n* :mod:`.named`: here."""\n',
                      "hpo_lib/part/named.py": "", "hpo_lib/part/forgotten.py": ""})
    assert unnamed_modules(tmp_path / "hpo_lib" / "part") == ["forgotten"]
