"""The import graph keeps its shape: no circles inside ``profilers/`` or ``service/``, and the arrow
between the floors points one way (``service`` → ``profilers``, never back).

The graph is read from the source with :mod:`ast`, not by importing anything, so every ``import``
counts: one at the top, one inside a function, one under ``if TYPE_CHECKING:``. A circle hidden in a
function is still two modules that cannot be understood (or type-checked) one before the other.

A package's ``__init__`` re-exporting its submodules is an ordinary edge ``pkg → pkg.sub``; it only
closes a circle when a submodule imports its own package back, which at run time depends on the
order the ``__init__`` happens to import things in — so that counts. Importing ``pkg.sub.mod`` from
outside ``pkg.sub`` also runs ``pkg/sub/__init__.py``, so that is an edge too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("profilers", "service")


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name → its file, for every ``.py`` under the given top-level packages."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported_modules(module: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The known modules an ``import`` in ``path`` names, each resolved to its nearest known module.

    ``from a import b`` names the module ``a.b`` when there is one, else the module ``a`` (``b`` is
    then a name defined in ``a``).
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    resolved: set[str] = set()
    own_packages = _ancestors(module)
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        # Importing a.b.c runs a/__init__ and a/b/__init__ first, unless they are already being run (this
        # module's own packages): an __init__ that re-exports can close a circle nobody wrote down.
        resolved.update(p for p in _ancestors(name) if p in known and p not in own_packages)
        if name and name != module:
            resolved.add(name)
    return resolved


def _ancestors(module: str) -> list[str]:
    """``a.b.c`` → ``["a", "a.b"]``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(files: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module → the modules (of ``files``) it imports."""
    return {module: _imported_modules(module, path, files) for module, path in files.items()}


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def test_no_import_circle_in_profilers_or_service() -> None:
    found = circles(import_graph(module_files(ROOT, PACKAGES)))
    assert found == [], "import circles (break each by moving the shared part down a layer):\n" + "\n".join(
        " ↔ ".join(component) for component in found
    )


def test_profilers_never_import_service() -> None:
    graph = import_graph(module_files(ROOT, PACKAGES))
    upward = sorted(
        f"{module} → {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == "profilers"
        for target in targets
        if target.split(".")[0] == "service"
    )
    assert upward == [], "profilers/ is a library the service drives; it must not import service/"


def _write(root: Path, files: Mapping[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"pkg/__init__.py": "", "pkg/a.py": "from pkg.b import x\n", "pkg/b.py": "from pkg import a\n"},
            [["pkg.a", "pkg.b"]],
            id="absolute",
        ),
        pytest.param(
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "from .b import x\n",
                "pkg/b.py": "def f():\n    from . import c\n",
                "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
            },
            [["pkg.a", "pkg.b", "pkg.c"]],
            id="relative-lazy-and-type-checking",
        ),
        pytest.param(
            {
                "pkg/__init__.py": "from pkg.a import x\n",
                "pkg/a.py": "x = 1\n",
                "pkg/b.py": "from pkg import x\n",
            },
            [],
            id="package-re-export-is-not-a-circle",
        ),
        pytest.param(
            {"pkg/__init__.py": "from pkg.a import x\n", "pkg/a.py": "from pkg import y\n"},
            [["pkg", "pkg.a"]],
            id="submodule-importing-its-package",
        ),
        pytest.param(
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "from pkg.sub.c import x\n",
                "pkg/sub/__init__.py": "from pkg.sub.d import y\n",
                "pkg/sub/c.py": "x = 1\n",
                "pkg/sub/d.py": "from pkg.a import z\n",
            },
            [["pkg.a", "pkg.sub", "pkg.sub.d"]],
            id="through-a-re-exporting-init",
        ),
    ],
)
def test_the_check_finds_circles(tmp_path: Path, files: Mapping[str, str], expected: list[list[str]]) -> None:
    _write(tmp_path, files)
    assert circles(import_graph(module_files(tmp_path, ["pkg"]))) == expected
