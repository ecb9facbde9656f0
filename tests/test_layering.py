"""Imports run one way: every module of paperlib has a layer, none imports a module of a higher
layer, and the package has no import cycle.

The import graph is read from the source with ``ast``: every ``import`` / ``from ... import`` of
a paperlib module counts wherever it stands -- at module level, inside a function (a lazy import
hides a cycle from Python, not from this test), under ``if TYPE_CHECKING:``, in a ``try``. The
``TYPE_CHECKING`` imports count too, on purpose: they create no runtime cycle, but a module that
names a higher layer's types depends on that layer all the same, and one rule with no exception is
easier to keep than two. (Only a module importing itself, e.g. under ``if __name__ ==
"__main__":``, is no edge.) Imports by a computed name (``importlib``) are not seen.

Within one layer a module may import another as long as no cycle forms.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "paperlib"
#: The package's source, read without importing it (so a package that fails to import, e.g. in
#: a cycle, is still checked).
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

#: Every module of the package and its layer (lower never imports higher; the design's table,
#: /work/shared/DESIGN.md, adapted to the modules that exist). A new module gets a line here.
LAYERS: dict[int, tuple[str, ...]] = {
    # no paperlib module but these, no torch: places, the row schema, the paper's numbers,
    # statistics, the progress bar, torch.distributed helpers, results keys, atomic writes, the
    # claim verdicts and goals, number formatting (the torch-free ground the reports stand on)
    0: ("paths", "schema", "paper_reference", "stats", "power", "progress", "distributed",
        "fingerprint", "atomic", "verdicts", "goals", "formatting", "errors", "literature",
        "provenance", "checks", "manifest", "saved_notebook"),
    # the machine, the hooks, masks, the fast metric forwards, images
    1: ("perf", "hooks", "masking", "forward", "data", "userdata", "blackbox", "imputation"),
    # maps: the method registry and its methods; the black boxes' zoo (models imports wrap,
    # wrap only blackbox)
    2: ("cam", "attention", "controls", "opticam", "wrap", "models", "road"),
    # scores of the maps
    3: ("metrics",),
    # the SQLite store, the run ledger, the evaluation loop
    4: ("store", "runs", "evaluation"),
    # what is computed from the rows: tables, the sanity check, figures, Table 2; the reports'
    # facts and their templates (torch-free: it imports only L0 modules)
    5: ("tables", "sanity", "plots", "model_selection", "report", "agreement", "calibration"),
    # studies over whole evaluations, and the one writer of an evaluation's files (it runs two)
    6: ("precision", "protocol", "attention_training", "outputs"),
    # entry points: command lines, notebooks' helpers, the README, downloads. matrix is a study
    # (L6 by its job) but imports evaluate.write_tables (the evaluation's output writer) and its
    # main() refreshes the README (readme.main), so it sits with the entry points
    7: ("evaluate", "matrix", "readme", "cli", "explain_files", "reproduce", "download", "notebook",
        "book", "__main__",
        "__init__"),
}


@dataclass(frozen=True)
class Import:
    """One import of a paperlib module by another: ``module`` imports ``target`` at ``line``."""

    module: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"paperlib/{_path_of(self.module)}:{self.line} imports {self.target}"


def _path_of(module: str) -> str:
    return "__init__.py" if module == "__init__" else module.replace(".", "/") + ".py"


def package_modules(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every Python module of the package at ``root``, found on disk (never listed by hand):
    dotted name relative to the package -> file; ``__init__`` is the package itself, a
    subpackage is named by its folder."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` (dotted, relative to the package; ``""`` the package) is or lies in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or ("__init__" if "__init__" in modules else None)


def imports_of(module: str, modules: dict[str, Path]) -> list[Import]:
    """Every import of a paperlib module in ``module``'s source, wherever it stands."""
    path = modules[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    # the package a relative import starts from
    if module == "__init__":
        package: list[str] = []
    else:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[Import] = []

    def add(name: str, line: int) -> None:
        target = _resolve(name, modules)
        if target is not None and target != module and Import(module, target, line) not in found:
            found.append(Import(module, target, line))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(alias.name[len(PACKAGE) + 1:], node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
                source = (node.module or "")[len(PACKAGE) + 1:]
            else:
                continue
            # `from . import x` / `from .pkg import sub` import the submodule itself
            for alias in node.names:
                sub = f"{source}.{alias.name}" if source else alias.name
                if sub in modules:
                    add(sub, node.lineno)
                else:
                    add(source, node.lineno)
    return found


def _layer_of() -> dict[str, int]:
    layer_of: dict[str, int] = {}
    for layer, names in LAYERS.items():
        for name in names:
            assert name not in layer_of, f"{name} is in layer {layer_of[name]} and in {layer}"
            layer_of[name] = layer
    return layer_of


def import_graph() -> dict[str, list[Import]]:
    modules = package_modules()
    return {m: imports_of(m, modules) for m in modules}


def cycles(graph: dict[str, list[Import]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one
    module (Tarjan), each sorted, the list sorted."""
    edges = {m: sorted({i.target for i in imps}) for m, imps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


# ---------------------------------------------------------------------------------------------


def test_every_module_has_a_layer_and_every_layer_entry_is_a_module():
    layer_of = _layer_of()
    modules = package_modules()
    unknown = sorted(set(modules) - set(layer_of))
    assert not unknown, (
        f"paperlib module(s) {unknown} have no layer: add each to LAYERS in "
        f"tests/test_layering.py, in the lowest layer above everything it imports")
    stale = sorted(set(layer_of) - set(modules))
    assert not stale, f"LAYERS names {stale}, which are no modules of paperlib: remove them"


def test_no_module_imports_a_module_of_a_higher_layer():
    layer_of = _layer_of()
    upward = [f"{imp} (layer {layer_of[imp.target]}; {imp.module} is in layer "
              f"{layer_of[imp.module]})"
              for imps in import_graph().values() for imp in imps
              if layer_of.get(imp.target, -1) > layer_of.get(imp.module, 99)]
    assert not upward, "imports that run upwards:\n  " + "\n  ".join(upward)


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    lines = []
    for component in found:
        members = set(component)
        lines.append("cycle: " + " <-> ".join(component))
        lines += [f"    {imp}" for m in component for imp in graph[m] if imp.target in members]
    assert not found, f"{len(found)} import cycle(s):\n" + "\n".join(lines)


# the reader itself, on a package made up for the purpose


def _fake_package(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package_modules(tmp_path)


def test_imports_inside_functions_and_type_checking_blocks_count(tmp_path):
    modules = _fake_package(tmp_path, {
        "__init__.py": "from .a import f\n",
        "a.py": ("from typing import TYPE_CHECKING\n"
                 "if TYPE_CHECKING:\n    from .b import B\n"
                 "def f():\n    from . import c\n    import paperlib.d\n"
                 "    from paperlib.sub import e\n    from .a import f as again\n"),
        "b.py": "import os\n", "c.py": "", "d.py": "",
        "sub/__init__.py": "from ..b import x\n", "sub/e.py": "from .. import c\n"})
    got = {(i.target, i.line) for i in imports_of("a", modules)}
    assert got == {("b", 3), ("c", 5), ("d", 6), ("sub.e", 7)}   # no edge to itself
    assert [(i.target, i.line) for i in imports_of("sub", modules)] == [("b", 1)]
    assert [i.target for i in imports_of("sub.e", modules)] == ["c"]
    assert [i.target for i in imports_of("__init__", modules)] == ["a"]


def test_cycles_are_found_also_through_three_modules():
    def imp(m: str, t: str) -> Import:
        return Import(m, t, 1)

    graph = {"a": [imp("a", "b")], "b": [imp("b", "c")], "c": [imp("c", "a")],
             "d": [imp("d", "a")], "e": [imp("e", "f")], "f": [imp("f", "e")]}
    assert cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert cycles({"a": [imp("a", "b")], "b": []}) == []
