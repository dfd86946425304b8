#!/usr/bin/env python3
"""Measure the shape of ``arbiter_cli`` with an AST walk: modules, imports, cycles, long functions.

Every ``import`` of an arbiter module counts, wherever it stands: at module level, inside a
function, or under ``if TYPE_CHECKING:``. Usage::

    python3 scripts/arch.py [--json] [--package arbiter_cli]

It prints the number of modules, function-level imports of arbiter's own modules, functions
longer than 40 lines, and the import cycles (strongly connected components of more than one
module). import-linter enforces the layers in CI; this script gives the figures behind them.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class Walker(ast.NodeVisitor):
    def __init__(self, name: str, is_package: bool, known: set[str], package: str) -> None:
        self.name, self.is_package, self.known, self.package = name, is_package, known, package
        self.depth = 0
        self.edges: list[tuple[str, str, str]] = []  # (target, where, line)
        self.long_functions: list[tuple[str, int]] = []

    def _target(self, dotted: str) -> str | None:
        while dotted:
            if dotted in self.known:
                return dotted
            dotted = dotted.rpartition(".")[0]
        return None

    def _add(self, dotted: str, node: ast.AST) -> None:
        if not (dotted == self.package or dotted.startswith(self.package + ".")):
            return
        target = self._target(dotted)
        if target is not None and target != self.name:
            self.edges.append((target, "function" if self.depth else "module",
                               str(getattr(node, "lineno", 0))))

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        base = resolve(self.name, self.is_package, node)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            self._add(full if self._target(full) == full else base, node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > 40:
            self.long_functions.append((node.name, length))
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = _function  # noqa: N815
    visit_AsyncFunctionDef = _function  # noqa: N815


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def measure(root: Path) -> dict[str, object]:
    package = root.name
    files = sorted(root.rglob("*.py"))
    names = {module_name(root, p): p for p in files}
    known = set(names)
    graph: dict[str, set[str]] = defaultdict(set)
    function_imports: list[str] = []
    long_functions: list[str] = []
    for name, path in names.items():
        walker = Walker(name, path.name == "__init__.py", known, package)
        walker.visit(ast.parse(path.read_text(), str(path)))
        for target, where, line in walker.edges:
            graph[name].add(target)
            if where == "function":
                function_imports.append(f"{name}:{line} -> {target}")
        long_functions += [f"{name}.{fn} ({n} lines)" for fn, n in walker.long_functions]
    for name in names:
        graph.setdefault(name, set())
    return {
        "modules": len(names),
        "function_level_imports": len(function_imports),
        "functions_over_40_lines": len(long_functions),
        "cycles": cycles(graph),
        "long_functions": long_functions,
        "function_imports": function_imports,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="arbiter_cli")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="list the imports and functions")
    args = parser.parse_args()
    result = measure(Path(args.package).resolve())
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"modules: {result['modules']}")
    print(f"function-level imports of own modules: {result['function_level_imports']}")
    print(f"functions over 40 lines: {result['functions_over_40_lines']}")
    found = result["cycles"]
    assert isinstance(found, list)
    print(f"import cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    if args.verbose:
        for key in ("function_imports", "long_functions"):
            for line in result[key]:  # type: ignore[attr-defined]
                print(f"{key}: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
