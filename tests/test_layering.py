"""Nothing outside lib/demo imports the demo: the library, the main_*.py entry points and the _tools (but the
demo's own thin command line, _tools/make_demo_data.py) work without it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = "lib.demo"
DEMO_TOOLS = {"make_demo_data.py"}  # the demo's own command-line tool


def checked_files() -> list[Path]:
    library = [p for p in (REPO / "lib").rglob("*.py") if (REPO / "lib" / "demo") not in p.parents]
    tools = [p for p in (REPO / "_tools").glob("*.py") if p.name not in DEMO_TOOLS]
    return sorted([*library, *REPO.glob("main_*.py"), *tools])


def _package(path: Path) -> list[str]:
    """The package a module file belongs to (``lib/data/tsv.py`` and ``lib/data/__init__.py``: lib, data)."""
    return list(path.relative_to(REPO).parts[:-1])


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, at any nesting level; ``from X import Y`` gives X.Y too,
    relative imports are resolved, and ``importlib.import_module("X")`` / ``__import__("X")`` count."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package(path)
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def demo_imports(path: Path) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for line, module in imported_modules(path)
        if module == DEMO or module.startswith(DEMO + ".")
    ]


def test_nothing_outside_lib_demo_imports_the_demo():
    files = checked_files()
    assert REPO / "lib" / "engine" / "trainer.py" in files and REPO / "main_caption.py" in files
    assert not any("demo" in p.relative_to(REPO).parts for p in files)
    offenders = [hit for path in files for hit in demo_imports(path)]
    assert not offenders, "the demo is imported outside lib/demo:\n" + "\n".join(offenders)


def test_every_form_of_a_demo_import_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    forms = [
        "import lib.demo",
        "import lib.demo.budget as b",
        "from lib.demo import budget",
        "from lib.demo.synthetic import ATTRIBUTES",
        "from lib import demo",
        "from lib import api, demo",
        "from .. import demo",
        "from ..demo.run import main",
        "def f():\n    if True:\n        from lib.demo.report import ROWS",
        "import importlib\nimportlib.import_module('lib.demo.run')",
    ]
    path = tmp_path / "lib" / "engine" / "mod.py"
    path.parent.mkdir(parents=True)
    for form in forms:
        path.write_text(form + "\n")
        assert demo_imports(path), form
    for fine in ("import lib.demos", "from lib import data", "from . import demo_x", "x = 'lib.demo'"):
        path.write_text(fine + "\n")
        assert not demo_imports(path), fine
