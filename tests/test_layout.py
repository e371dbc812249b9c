"""The package's layout rules (docs/architecture.md), read from the source with ``ast``: the lower rooms never
import the run, no module imports itself around a loop, and no module outgrows a screenful of screens."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "vitwarm"
LOWER_ROOMS = ("models", "data", "procedural")
# Rooms above the lower ones: nothing in a lower room may import them.
UPPER = ("vitwarm.run", "vitwarm.sweeps", "vitwarm.analysis", "vitwarm.cli", "vitwarm.train")
# The analysis reads what runs and sweeps leave; they never import it (nor anything below them does).
BELOW_ANALYSIS = ("run", "sweeps", "models", "data", "procedural")
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


def test_lower_rooms_never_import_the_run():
    offenders = []
    for room in LOWER_ROOMS:
        for path in sorted((PACKAGE / room).rglob("*.py")):
            if path.name == "__main__.py":  # `python -m vitwarm.procedural`: a thin front end of vitwarm.cli
                continue
            bad = sorted(m for m in imports(path) if m.startswith(UPPER))
            offenders += [f"{path.relative_to(ROOT)} imports {m}" for m in bad]
    assert offenders == []


def test_nothing_below_the_analysis_imports_it():
    offenders = [f"{path.relative_to(ROOT)} imports {m}"
                 for room in BELOW_ANALYSIS for path in sorted((PACKAGE / room).rglob("*.py"))
                 for m in sorted(imports(path)) if m.startswith("vitwarm.analysis")]
    offenders += [f"vitwarm/{name} imports {m}" for name in ("config.py", "seeds.py", "errors.py", "atomic.py")
                  for m in sorted(imports(PACKAGE / name)) if m.startswith("vitwarm.analysis")]
    assert offenders == []


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
