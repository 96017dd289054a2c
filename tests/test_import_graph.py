"""The import graph of lib/, read statically with ast: no import cycles, and the layering of ARCHITECTURE.md.

How the graph is built (nothing is imported, so a broken module cannot hide an edge):

* A node is a module of lib/, named as Python names it; a package's ``__init__.py`` is the node of the
  package itself (``lib/engine/__init__.py`` is ``lib.engine``).
* Every import statement of a file is an edge, wherever it stands: module level, inside a function or a
  method (lazy imports), under ``if`` / ``try`` / ``TYPE_CHECKING``. Relative imports are resolved against the
  importer's package. Imports of anything outside lib/ are ignored.
* ``import lib.a.b`` and ``from lib.a.b import name`` are edges to ``lib.a.b``. ``from lib.a import x`` is an
  edge to ``lib.a`` (the statement reads ``x`` from that package's namespace) and, when ``x`` is a submodule,
  also to ``lib.a.x``.
* Python runs the ``__init__.py`` of every enclosing package before a module (``import lib.a.b`` runs
  ``lib/a/__init__.py`` first). For cycles those implicit edges are NOT counted: with them, every package
  whose ``__init__`` imports its submodules would be "in a cycle" with each submodule that imports a
  sibling, which says nothing about the code. For the layering rules they ARE counted, transitively: a rule
  is about what importing a module loads, so importing ``lib.x.y`` also loads what ``lib/x/__init__.py``
  imports.

Run ``python tests/test_import_graph.py`` to print the graph's cycles and every rule's violations.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "lib"

Graph = dict[str, set[str]]

# ---------------------------------------------------------------------------------------------- the graph


def lib_modules(root: Path = LIB) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (a package's ``__init__.py`` -> the package)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, module: str, path: Path) -> str:
    if node.level == 0:
        return node.module or ""
    parts = _package_of(module, path).split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (read by type checkers, never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
        ):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imports_of(module: str, path: Path, modules: Iterable[str]) -> tuple[set[str], set[str]]:
    """(modules of lib/ that ``module`` imports, imported lib names that are no module of lib/); imports
    under ``if TYPE_CHECKING:`` never run and do not count."""
    known = set(modules)
    edges: set[str] = set()
    unresolved: set[str] = set()

    def add(target: str) -> None:
        if target == "lib" or target.startswith("lib."):
            (edges if target in known else unresolved).add(target)

    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    type_only = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path)
            add(source)
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    add(f"{source}.{alias.name}")
    edges.discard(module)
    return edges, unresolved


def import_graph(root: Path = LIB) -> Graph:
    modules = lib_modules(root)
    return {name: imports_of(name, path, modules)[0] for name, path in modules.items()}


def with_enclosing_packages(graph: Graph) -> Graph:
    """Each edge to ``lib.a.b`` also to ``lib.a`` and ``lib`` (the packages Python initialises first)."""
    out: Graph = {}
    for module, targets in graph.items():
        out[module] = set(targets)
        for target in targets:
            parts = target.split(".")
            out[module].update(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in graph)
        out[module].discard(module)
    return out


# ------------------------------------------------------------------------------------------------ cycles


def strongly_connected(graph: Graph) -> list[set[str]]:
    """Tarjan's strongly connected components of more than one node (or with a self-edge)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def a_cycle(graph: Graph, component: set[str]) -> list[str]:
    """One concrete cycle through the component's first node: [a, b, ..., a]."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(f"{sorted(component)} is not a cycle")


def describe_cycles(graph: Graph) -> list[str]:
    return [" -> ".join(a_cycle(graph, c)) for c in strongly_connected(graph)]


# --------------------------------------------------------------------------------------------- layering


def in_package(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def loaded_by(graph: Graph, module: str) -> dict[str, list[str]]:
    """Every module that importing ``module`` loads (enclosing packages included) -> one import chain."""
    loads = with_enclosing_packages(graph)
    chains = {module: [module]}
    queue = [module]
    while queue:
        v = queue.pop(0)
        for w in sorted(loads[v]):
            if w not in chains:
                chains[w] = [*chains[v], w]
                queue.append(w)
    del chains[module]
    return chains


def violations(graph: Graph, importers: Callable[[str], bool], forbidden: Callable[[str], bool]) -> list[str]:
    """Chains "a -> b -> c": each importer and each forbidden module it loads (a shortest chain)."""
    return [
        " -> ".join(chain)
        for module in sorted(m for m in graph if importers(m))
        for target, chain in loaded_by(graph, module).items()
        if forbidden(target)
    ]


DEMO = ("lib.demo", "lib.demo_backbone")  # the demo (moving into the package lib.demo)
ABOVE_THE_ROOMS = ("lib.api", "lib.predict", *DEMO)
# Modules of lib/tasks that every task may use; every other module of lib/tasks is one task family.
SHARED_TASK_MODULES = {
    "lib.tasks",
    "lib.tasks.build",
    "lib.tasks.checkpoint_folder",
    "lib.tasks.common",
    "lib.tasks.decode",
    "lib.tasks.model_card",
    "lib.tasks.registry",
    "lib.tasks.run",
}


def is_task_family(module: str) -> bool:
    return in_package(module, "lib.tasks") and module not in SHARED_TASK_MODULES


LAYERING = {
    # name: (the importers it is about, what they must not load)
    "lib/utils imports nothing of lib (the bottom)": (
        lambda m: in_package(m, "lib.utils"),
        lambda t: t != "lib" and not in_package(t, "lib.utils"),
    ),
    "lib/data and lib/metrics know nothing of models, tasks or training": (
        lambda m: in_package(m, "lib.data", "lib.metrics"),
        lambda t: in_package(t, "lib.model", "lib.tasks", "lib.engine", *ABOVE_THE_ROOMS),
    ),
    "lib/engine knows nothing of any task (or model)": (
        lambda m: in_package(m, "lib.engine"),
        lambda t: in_package(t, "lib.tasks", "lib.model", *ABOVE_THE_ROOMS),
    ),
    "lib/model knows nothing of datasets or training": (
        lambda m: in_package(m, "lib.model"),
        lambda t: in_package(t, "lib.data.datasets", "lib.tasks", "lib.engine", *ABOVE_THE_ROOMS),
    ),
    "nothing outside the demo imports the demo": (
        lambda m: not in_package(m, *DEMO),
        lambda t: in_package(t, *DEMO),
    ),
}


def sibling_task_imports(graph: Graph) -> list[str]:
    """Edges "a -> b" from one task family to another."""
    return [
        f"{m} -> {t}"
        for m in sorted(filter(is_task_family, graph))
        for t in sorted(graph[m])
        if is_task_family(t) and not in_package(t, m) and not in_package(m, t)
    ]


# ------------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph()


def test_the_graph_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "lib"
    (pkg / "a").mkdir(parents=True)
    for name, text in {
        "__init__.py": "",
        "a/__init__.py": "from lib.a.b import thing\n",
        "a/b.py": "import os\nfrom . import c\n\ndef f():\n    from ..d import g\n",
        "a/c.py": "import lib.d\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import lib.a.b\n",
        "d.py": "from lib.a import c as renamed, thing\n",
    }.items():
        (pkg / name).write_text(text)
    found = import_graph(pkg)
    assert found == {
        "lib": set(),
        "lib.a": {"lib.a.b"},
        "lib.a.b": {"lib.a", "lib.a.c", "lib.d"},  # from . import c reads lib.a; the lazy import counts
        "lib.a.c": {"lib.d"},
        "lib.d": {"lib.a", "lib.a.c"},
    }
    assert describe_cycles(found) == ["lib.a -> lib.a.b -> lib.a"]
    assert sorted(loaded_by(found, "lib.a.c")) == ["lib", "lib.a", "lib.a.b", "lib.d"]  # + enclosing packages


def test_every_lib_import_names_a_module_of_lib():
    modules = lib_modules()
    unresolved = {m: sorted(imports_of(m, p, modules)[1]) for m, p in modules.items()}
    assert not {m: u for m, u in unresolved.items() if u}


def test_no_import_cycle(graph):
    cycles = describe_cycles(graph)
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


@pytest.mark.parametrize("rule", list(LAYERING))
def test_layering(graph, rule):
    importers, forbidden = LAYERING[rule]
    found = violations(graph, importers, forbidden)
    assert not found, f"{rule}:\n  " + "\n  ".join(found)


def test_sibling_tasks_do_not_import_each_other(graph):
    found = sibling_task_imports(graph)
    assert not found, "task families importing each other:\n  " + "\n  ".join(found)


if __name__ == "__main__":
    g = import_graph()
    print("cycles:", *describe_cycles(g) or ["none"], sep="\n  ")
    for rule, (importers, forbidden) in LAYERING.items():
        print(f"{rule}:", *violations(g, importers, forbidden) or ["holds"], sep="\n  ")
    print("sibling tasks:", *sibling_task_imports(g) or ["none"], sep="\n  ")
