"""graphode's subpackages import each other without cycles.

A static walk (``ast``, nothing is imported) over every ``.py`` file of the
``graphode`` package and of ``kernels/`` (installed as ``graphode.kernels``).
Each top-level child of ``graphode`` is one node of the layering graph: a
subpackage (``ops``, ``solvers``, ``models``, ...), a top-level module
(``graph``, ``config``, ``cli``, ...) or the package ``__init__`` itself
(node ``graphode``). Imports are sorted into three kinds:

* module level: run when the module is imported (class bodies and ``try``
  blocks included): these edges must form no cycle;
* function level: inside a function body, run on first call (a lazy edge);
* type only: under ``if TYPE_CHECKING:``, never run.

``importlib.import_module("graphode....")`` with a literal name counts as an
import. ``from graphode import X`` is followed to where ``graphode/__init__.py``
takes ``X`` from, so a re-export does not hide its real source.

A lazy edge can still close a cycle that module-level imports alone do not
show (``a`` imports ``b`` at module level, a function of ``b`` imports ``a``).
Each such edge is listed in ``LAZY_CYCLE_EDGES`` with the reason it stays; the
test fails when one appears that is not listed, or a listed one is gone.

``python tests/test_import_layering.py`` prints both edge lists.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = "graphode"
# Where each package's files lie (setup.py: package_dir).
PACKAGE_DIRS = {ROOT: REPO / "graphode", f"{ROOT}.kernels": REPO / "kernels"}
# Compiled modules (no .py file; built by setup.py).
COMPILED = (f"{ROOT}._C",)

# Function-level edges that close a cycle with the rest of the runtime graph:
# (importer node, imported node) -> why the edge is lazy and stays.
LAZY_CYCLE_EDGES: Dict[Tuple[str, str], str] = {}

# Edges that must not exist at any level (module, function or type only): importer -> what it
# never imports, and why.
_APPLICATION = {"models", "train", "callbacks", "sweep", "cli", "distributed", "datasets", "config"}
FORBIDDEN: Dict[str, Tuple[Set[str], str]] = {
    "models": ({"callbacks", "train", "sweep", "cli", "distributed"}, "models compose ops and solvers; training machinery lies above them"),
    "callbacks": ({"models", "train", "sweep", "cli", "distributed"}, "callbacks are a leaf package that trainers use"),
    "train": ({"sweep", "distributed", "cli"}, "--ray and --nproc are chosen by graphode.cli (run_many takes an executor)"),
    **{core: (_APPLICATION, "the numerical core knows nothing of models, training or data") for core in ("graph", "ops", "kernels", "solvers", "linalg")},
}


@dataclass(frozen=True)
class Import:
    src: str  # importing module, e.g. graphode.models.grand
    dst: str  # imported module (or package), e.g. graphode.solvers
    line: int
    kind: str  # "module", "function" or "type"
    name: Optional[str] = None  # the name taken from dst (from dst import name), if any

    @property
    def edge(self) -> Tuple[str, str]:
        return node_of(self.src, self.root), node_of(self.dst, self.root)

    @property
    def root(self) -> str:
        return self.src.split(".")[0]


def node_of(module: str, root: str = ROOT) -> str:
    """The layering node of ``module``: the top-level child of ``root`` it lies in."""
    parts = module.split(".")
    return root if len(parts) == 1 else parts[1]


def module_files(package_dirs: Dict[str, Path]) -> Dict[str, Path]:
    """Dotted module name -> file, for every .py below each package directory."""
    out = {}
    for pkg, base in package_dirs.items():
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            # A directory without __init__.py is not a package (e.g. data folders).
            if any(not (base.joinpath(*rel[:i]) / "__init__.py").exists() for i in range(1, len(rel))):
                continue
            out[".".join((pkg, *rel))] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Walker(ast.NodeVisitor):
    """Collects (module name, line, kind, names) for every import statement of one file."""

    def __init__(self, module: str, is_package: bool):
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: List[Tuple[str, Tuple[str, ...], int, str]] = []
        self._depth = 0  # function nesting
        self._type_only = 0

    @property
    def _kind(self) -> str:
        if self._type_only:
            return "type"
        return "function" if self._depth else "module"

    def _visit_function(self, node):
        for d in node.decorator_list:  # decorators and defaults run at definition time
            self.visit(d)
        self._depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_function

    def visit_Lambda(self, node):
        self._depth += 1
        self.visit(node.body)
        self._depth -= 1

    def visit_If(self, node):
        if _is_type_checking(node.test):
            self._type_only += 1
            for stmt in node.body:
                self.visit(stmt)
            self._type_only -= 1
            for stmt in node.orelse:
                self.visit(stmt)
        else:
            self.generic_visit(node)

    def visit_Import(self, node):
        for alias in node.names:
            self.found.append((alias.name, (), node.lineno, self._kind))

    def visit_ImportFrom(self, node):
        if node.level:
            base = self.package.split(".")
            if node.level > 1:
                base = base[: -(node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module
        self.found.append((target, tuple(a.name for a in node.names), node.lineno, self._kind))

    def visit_Call(self, node):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
                self.found.append((arg.value, (), node.lineno, self._kind))
        self.generic_visit(node)


def collect_imports(package_dirs: Dict[str, Path], compiled: Iterable[str] = ()) -> List[Import]:
    """Every import of a module of the packages in ``package_dirs`` (or of one of the
    ``compiled`` modules) by one of their modules."""
    files = module_files(package_dirs)
    roots = {p.split(".")[0] for p in package_dirs}
    raw = {}
    for module, path in files.items():
        walker = _Walker(module, path.name == "__init__.py")
        walker.visit(ast.parse(path.read_text(), filename=str(path)))
        raw[module] = walker.found

    # Names each root package's __init__ binds from its own submodules at module level,
    # so that `from graphode import Graph` counts as an import of graphode.graph.
    known = set(files) | set(compiled)
    reexports: Dict[str, Dict[str, str]] = {}
    for root in roots:
        table = reexports.setdefault(root, {})
        for target, names, _, kind in raw.get(root, []):
            if kind == "module" and target.split(".")[0] == root and target != root:
                for name in names:
                    table[name] = f"{target}.{name}" if f"{target}.{name}" in known else target

    out = []
    for module, found in raw.items():
        for target, names, line, kind in found:
            if target.split(".")[0] not in roots:
                continue
            for name in names or (None,):
                sub = f"{target}.{name}" if name else None
                if sub in known:
                    out.append(Import(module, sub, line, kind))
                elif name and target in reexports and name in reexports[target]:
                    out.append(Import(module, reexports[target][name], line, kind))
                else:
                    out.append(Import(module, target, line, kind, name))
    return out


def node_edges(imports: Iterable[Import], kinds: Iterable[str]) -> Dict[Tuple[str, str], List[Import]]:
    """(importer node, imported node) -> the imports behind it, for edges between two nodes."""
    kinds = set(kinds)
    out: Dict[Tuple[str, str], List[Import]] = {}
    for imp in imports:
        a, b = imp.edge
        if imp.kind in kinds and a != b:
            out.setdefault((a, b), []).append(imp)
    return out


def strongly_connected(edges: Iterable[Tuple[str, str]]) -> List[Set[str]]:
    """The strongly connected components with more than one node (Tarjan): the cycles."""
    graph: Dict[str, Set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    comps: List[Set[str]] = []

    def visit(v: str) -> None:  # recursion depth <= number of nodes (a few dozen)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def describe(edges: Dict[Tuple[str, str], List[Import]], comp: Optional[Set[str]] = None) -> str:
    lines = []
    for (a, b), imps in sorted(edges.items()):
        if comp is None or (a in comp and b in comp):
            where = ", ".join(dict.fromkeys(f"{i.src}:{i.line} -> {i.dst}" for i in imps))
            lines.append(f"  {a} -> {b}: {where}")
    return "\n".join(lines)


def lazy_cycle_edges(imports: List[Import]) -> Dict[Tuple[str, str], List[Import]]:
    """Function-level edges that lie on a cycle of the runtime graph (module + function level)."""
    module = node_edges(imports, ["module"])
    lazy = node_edges(imports, ["function"])
    comps = strongly_connected(list(module) + list(lazy))
    return {e: imps for e, imps in lazy.items() if e not in module and any(set(e) <= c for c in comps)}


# ----------------------------------------------------------------------------- the tree


@pytest.fixture(scope="module")
def imports() -> List[Import]:
    return collect_imports(PACKAGE_DIRS, COMPILED)


def test_walk_sees_the_package(imports):
    # The walk finds the known layers and their known edges (a walk that read nothing
    # would pass the cycle check trivially).
    edges = node_edges(imports, ["module"])
    assert ("models", "ops") in edges
    assert ("ops", "graph") in edges
    assert ("distributed", "solvers") in edges
    assert ("graphode", "ops") in edges  # graphode/__init__.py imports ops eagerly
    assert node_edges(imports, ["function"]), "no function-level import found"


def test_no_module_level_cycle_among_subpackages(imports):
    edges = node_edges(imports, ["module"])
    comps = strongly_connected(edges)
    assert not comps, "import cycles among graphode's subpackages (module level):\n" + "\n".join(
        describe(edges, c) for c in comps
    )


def test_layers_import_only_downwards(imports):
    edges = node_edges(imports, ["module", "function", "type"])
    bad = {(a, b): imps for (a, b), imps in edges.items() if a in FORBIDDEN and b in FORBIDDEN[a][0]}
    assert not bad, "imports against the layering:\n" + "\n".join(
        f"{describe({e: imps})}  ({FORBIDDEN[e[0]][1]})" for e, imps in sorted(bad.items())
    )


def private_names_across(imports: Iterable[Import]) -> List[Import]:
    """Imports of another node's private name (``from graphode.train._cli import _helper``)."""
    return [i for i in imports if i.name and i.name.startswith("_") and not i.name.startswith("__")
            and i.edge[0] != i.edge[1]]


def test_no_private_name_imported_across_subpackages(imports):
    # What one subpackage takes from another is public there (no leading underscore).
    bad = private_names_across(imports)
    assert not bad, "private names imported from another subpackage:\n" + "\n".join(
        f"  {i.src}:{i.line} from {i.dst} import {i.name}" for i in bad
    )


def test_lazy_edges_that_close_a_cycle_are_documented(imports):
    found = lazy_cycle_edges(imports)
    new = {e: found[e] for e in set(found) - set(LAZY_CYCLE_EDGES)}
    gone = set(LAZY_CYCLE_EDGES) - set(found)
    assert not new, (
        "function-level imports that close a cycle among graphode's subpackages; break the cycle "
        "or document the edge in LAZY_CYCLE_EDGES:\n" + describe(new)
    )
    assert not gone, f"LAZY_CYCLE_EDGES lists edges that no longer close a cycle: {sorted(gone)}"


# ----------------------------------------------------------------------------- the checker itself


def _write_package(tmp_path: Path, files: Dict[str, str]) -> Dict[str, Path]:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"pkg": tmp_path / "pkg"}


def test_checker_finds_a_module_level_cycle(tmp_path):
    dirs = _write_package(
        tmp_path,
        {
            "__init__.py": "from .graph import Graph\n",
            "graph.py": "import torch\nfrom pkg.ops import spmm\n",
            "ops/__init__.py": "from ._impl import spmm\n",
            # relative import two levels up, followed through the package's re-export
            "ops/_impl.py": "from .. import Graph\n\ndef spmm():\n    pass\n",
            "models/__init__.py": "import pkg.ops\n",
        },
    )
    imps = collect_imports(dirs)
    edges = node_edges(imps, ["module"])
    assert ("ops", "graph") in edges and ("graph", "ops") in edges
    assert [c for c in strongly_connected(edges)] == [{"graph", "ops"}]
    assert "graph -> ops: pkg.graph:2 -> pkg.ops" in describe(edges)
    assert not private_names_across(imps)


def test_checker_finds_a_private_name_taken_across_subpackages(tmp_path):
    dirs = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "train/__init__.py": "",
            "train/_cli.py": "def _helper():\n    pass\n",
            "dist.py": "def f():\n    from .train._cli import _helper, public\n",
            "train/_trainer.py": "from ._cli import _helper\n",  # within its own subpackage: fine
        },
    )
    bad = private_names_across(collect_imports(dirs))
    assert [(i.src, i.dst, i.name, i.kind) for i in bad] == [("pkg.dist", "pkg.train._cli", "_helper", "function")]


def test_checker_separates_lazy_and_type_only_imports(tmp_path):
    dirs = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "import pkg.b\n",
            "b/__init__.py": (
                "from typing import TYPE_CHECKING\n"
                "import importlib\n"
                "if TYPE_CHECKING:\n"
                "    from pkg import a\n"
                "class K:\n"
                "    def f(self):\n"
                "        from pkg.a import x\n"
                "        return importlib.import_module('pkg.c')\n"
            ),
            "c.py": "",
        },
    )
    imps = collect_imports(dirs)
    kinds = {(i.edge, i.kind) for i in imps}
    assert kinds == {(("a", "b"), "module"), (("b", "a"), "type"), (("b", "a"), "function"), (("b", "c"), "function")}
    assert not strongly_connected(node_edges(imps, ["module"]))
    assert set(lazy_cycle_edges(imps)) == {("b", "a")}  # the lazy edge that closes a -> b -> a


def test_checker_reports_a_cycle_through_a_class_body_and_try_block(tmp_path):
    # Imports in class bodies and try blocks run at import time: module level.
    dirs = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "class A:\n    from pkg import b\n",
            "b.py": "try:\n    import pkg.c\nexcept ImportError:\n    pass\n",
            "c.py": "from . import a\n",
        },
    )
    assert strongly_connected(node_edges(collect_imports(dirs), ["module"])) == [{"a", "b", "c"}]


if __name__ == "__main__":
    imps = collect_imports(PACKAGE_DIRS, COMPILED)
    for kind in ("module", "function", "type"):
        print(f"{kind}-level edges between graphode's subpackages:")
        print(describe(node_edges(imps, [kind])) or "  (none)")
    print("function-level edges that close a cycle:")
    print(describe(lazy_cycle_edges(imps)) or "  (none)")
    sys.exit(0)
