#!/usr/bin/env python3
"""eeopt's internal import graph, read from the source with ``ast``: every import counts, the ones
inside functions included.

    python scripts/import_graph.py            # the summary; exit 1 if a rule is broken
    python scripts/import_graph.py --edges    # every edge, function-local ones marked L

Rules it checks (the ones ``lint-imports`` cannot see, or sees only in part):
- no import cycle between eeopt's modules, function-local imports counted;
- a function-local import of an eeopt module only where that module (or, for a package that
  loads its names lazily, a module it loads) imports an optional heavy dependency (torch,
  tensorrt, triton, matplotlib, ray, grpc; onnx, which running a program must not need) at
  its top level: never to hide a cycle;
- no underscored name imported from another package (``from eeopt.x import _y``, or from a
  private module ``eeopt.x._y``, outside ``eeopt.x``).

``passes/`` and ``kernels/`` are read as ``eeopt.passes`` and ``eeopt.kernels``, where
pyproject's ``package-dir`` installs them.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> the package it is installed as
PACKAGES = {"eeopt": "eeopt", "passes": "eeopt.passes", "kernels": "eeopt.kernels"}
#: onnx counts too: running a program must not need it (eeopt.runtime reaches eeopt.export,
#: which builds ONNX graphs, only from Program.export_onnx)
HEAVY = ("torch", "tensorrt", "triton", "matplotlib", "ray", "grpc", "onnx")


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    names: tuple[str, ...]
    """The names imported (``from m import a, b``); empty for ``import m``."""
    local: bool
    """Inside a function."""
    line: int


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every eeopt module -> its file."""
    out: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _resolve(importer: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def edges(mods: dict[str, Path]) -> list[Edge]:
    """Every import of one eeopt module by another (``from m import sub`` counts as an import
    of ``m.sub`` when ``sub`` is a module)."""
    out: list[Edge] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        in_function = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function.update(id(n) for n in ast.walk(fn))
        for node in ast.walk(tree):
            local = id(node) in in_function
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("eeopt"):
                        out.append(Edge(name, _owner(a.name, mods), (), local, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, node, path.name == "__init__.py")
                if not target.startswith("eeopt"):
                    continue
                plain = [a.name for a in node.names if f"{target}.{a.name}" not in mods]
                if plain or not node.names:
                    out.append(Edge(name, _owner(target, mods), tuple(plain), local,
                                    node.lineno))
                for a in node.names:
                    if f"{target}.{a.name}" in mods:
                        out.append(Edge(name, f"{target}.{a.name}", (), local, node.lineno))
    return [e for e in out if e.imported != e.importer]


def _owner(name: str, mods: dict[str, Path]) -> str:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def cycles(es: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in es:
        graph.setdefault(e.importer, set()).add(e.imported)
        graph.setdefault(e.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def heavy_modules(mods: dict[str, Path], es: list[Edge]) -> set[str]:
    """Modules that import a heavy dependency at their top level, directly or through other
    eeopt modules they import at theirs; and lazy packages that load one by name."""
    heavy = {m for m, p in mods.items()
             if any(i.split(".")[0] in HEAVY for i in _top_level_imports(p))}
    top = [e for e in es if not e.local]
    changed = True
    while changed:
        changed = False
        for e in top:
            if e.imported in heavy and e.importer not in heavy:
                heavy.add(e.importer)
                changed = True
        for m, p in mods.items():  # a package whose __getattr__ imports one of them by name
            if m not in heavy and p.name == "__init__.py":
                strings = {n.value for n in ast.walk(ast.parse(p.read_text()))
                           if isinstance(n, ast.Constant) and isinstance(n.value, str)}
                if strings & heavy:
                    heavy.add(m)
                    changed = True
    return heavy


def _package(module: str, mods: dict[str, Path]) -> str:
    """The package a module belongs to (itself, for a package)."""
    return module if mods[module].name == "__init__.py" else module.rpartition(".")[0]


def violations(mods: dict[str, Path], es: list[Edge]) -> list[str]:
    out = [f"import cycle: {' <-> '.join(c)}" for c in cycles(es)]
    heavy = heavy_modules(mods, es)
    for e in es:
        if e.local and e.imported not in heavy:
            out.append(f"{e.importer}:{e.line}: imports {e.imported} inside a function, but it "
                       f"needs no optional heavy dependency ({', '.join(HEAVY)}): import it at "
                       "the top")
        # underscored names never cross a package boundary
        home = _package(e.imported, mods)
        inside = e.importer == home or e.importer.startswith(home + ".")
        private = [p for p in e.imported.split(".") if p.startswith("_") and p != "__init__"]
        if not inside and (private or any(n.startswith("_") for n in e.names)):
            what = ", ".join(n for n in e.names if n.startswith("_")) or e.imported
            out.append(f"{e.importer}:{e.line}: imports {what} from {e.imported}, private to "
                       f"{home}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--edges", action="store_true", help="list every edge (L: in a function)")
    args = p.parse_args(argv)
    mods = modules()
    es = edges(mods)
    if args.edges:
        for e in sorted(es, key=lambda e: (e.importer, e.imported)):
            print(f"{'L' if e.local else ' '} {e.importer} -> {e.imported}")
    local = [e for e in es if e.local]
    print(f"{len(mods)} modules, {len(es)} import edges ({len(local)} inside functions), "
          f"{len(cycles(es))} cycles")
    bad = violations(mods, es)
    for v in bad:
        print(v)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
