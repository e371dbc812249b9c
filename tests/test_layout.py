"""The package's layout rules (docs/architecture.md), read from the source with ``ast``: nothing imports a
floor above its own, the run names no data set, no module imports itself around a loop, and no module
outgrows a screenful of screens."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "vitwarm"
LONGEST = 300  # lines; the config schema is the one exception (one field, docstring and rule per key)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path) -> set[str]:
    """The vitwarm modules (and names inside them, as dotted paths) that ``path`` imports, at any depth."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb level - 1 packages up from this module's package
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "vitwarm" or m.startswith("vitwarm.")}


def graph() -> dict[str, set[str]]:
    """Module -> the vitwarm modules it imports (names inside a module count as the module)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in files} - {name} for name, path in files.items()}


# The floors of the house (docs/architecture.md, bottom first): a module imports its own floor or below.
# The package's __init__ only registers the timm models (models/, one floor up: its one exception).
FLOORS = [
    ("vitwarm.errors", "vitwarm.seeds", "vitwarm.atomic", "vitwarm.provenance"),
    ("vitwarm.models", "vitwarm.data", "vitwarm.procedural"),
    ("vitwarm.config", "vitwarm.config_doc", "vitwarm.catalog"),
    ("vitwarm.run",),
    ("vitwarm.sweeps",),
    ("vitwarm.analysis",),  # reads what runs and sweeps leave; nothing below imports it
    ("vitwarm.cli", "vitwarm.train", "vitwarm.__main__"),
]


def floor(module: str) -> int:
    return next(i for i, rooms in enumerate(FLOORS) for room in rooms
                if module == room or module.startswith(room + "."))


def upward_imports(deps: dict[str, set[str]]) -> list[str]:
    """'a imports b' for every import of a module on a higher floor than the importer's."""
    return [f"{name} imports {m}" for name, imported in sorted(deps.items()) if name != "vitwarm"
            for m in sorted(imported) if m != "vitwarm" and floor(m) > floor(name)]


def test_nothing_imports_upward():
    assert upward_imports(graph()) == []


def test_the_floor_check_finds_the_arrow_that_was_there():
    # Before `vitwarm grammars`, procedural/__main__.py imported vitwarm.cli.grammars: one floor-1 module
    # importing floor 5.
    before = {"vitwarm.procedural.__main__": {"vitwarm.cli.grammars"}, "vitwarm.cli.grammars": {"vitwarm.procedural"}}
    assert upward_imports(before) == ["vitwarm.procedural.__main__ imports vitwarm.cli.grammars"]


def test_the_sweeps_hold_no_statistics():
    sweeps = {p.name: p.read_text() for p in (PACKAGE / "sweeps").glob("*.py")}
    assert [name for name, text in sweeps.items() if "scipy" in text or "ttest" in text] == []
    assert not {"results.py", "paired.py", "equivalence.py", "share.py", "report.py", "plots.py"} & set(sweeps)


def test_no_import_circle():
    deps = graph()
    circles = []
    for start in deps:  # a depth-first walk from every module; a path that returns to its start is a circle
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in deps[node]:
                if nxt == start:
                    circles.append(" -> ".join(path + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert circles == []


def test_no_module_over_300_lines_but_the_config_schema():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > LONGEST and p != PACKAGE / "config.py"}
    assert long == {}


# Data sets are chosen by name in vitwarm/data/prepare.py (its registry) and written by their converter modules.
CONVERTERS = ("vitwarm.data.fmnist", "vitwarm.data.folder", "vitwarm.data.convert_torchvision",
              "vitwarm.data.synthetic")
DATA_SETS = ("fashion", "mnist", "imagenet", "cifar")


def named_data_sets(source: str, package: list[str]) -> list[str]:
    """Where code (not its docstrings) names a data set: an import of a converter, a string holding a name
    of the registry or of a data set, an identifier holding a data set's name; ``package``: the module's."""
    from vitwarm.data import PREPARATIONS

    tree = ast.parse(source)
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found += [f"{node.lineno}: imports {m}" for m in (base, *(f"{base}.{a.name}" for a in node.names))
                      if m.startswith(CONVERTERS)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += [f"{node.lineno}: says {n!r}" for n in (*PREPARATIONS, *DATA_SETS) if n in node.value.lower()]
        else:
            name = getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "name", None)
            found += [f"{node.lineno}: names {n!r}" for n in DATA_SETS if isinstance(name, str) and n in name.lower()]
    return found


def test_the_run_names_no_data_set():
    # The run reaches data sets through the registry's functions only, never by a name of its own.
    offenders = [f"{path.relative_to(ROOT)}:{where}" for path in sorted((PACKAGE / "run").rglob("*.py"))
                 for where in named_data_sets(path.read_text(), module_name(path).split(".")[:-1])]
    assert offenders == []


def test_the_data_set_check_finds_what_the_run_said_before_the_registry():
    before = ('from ..data.fmnist import load_fmnist\n'
              'if cfg.data.prepare == "fmnist":\n    FMNIST_CLASSES = load_fmnist()\n')
    found = named_data_sets(before, ["vitwarm", "run"])
    assert {"1: imports vitwarm.data.fmnist", "2: says 'fmnist'", "3: names 'mnist'"} <= set(found)
    assert named_data_sets('"""Reads fmnist shards."""\nfrom ..data import prepare_data\n', ["vitwarm", "run"]) == []
