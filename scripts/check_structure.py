#!/usr/bin/env python
"""Print the three structure figures of issue #14 and fail when one is over its limit.

1. The longest modules of ``src_training/`` and ``napari_lidnet/`` (limit: 700 lines each).
2. Import cycles between the project's own modules, counting every import statement that runs: module
   level and function-local ones alike (limit: none). Imports under ``if TYPE_CHECKING:`` never run and
   are not counted.
3. Function-local imports of the project's own modules (limit: 15), listed with file and line.

The graph is built from the source with :mod:`ast` (nothing is imported). ``from pkg import name`` is an
edge to ``pkg.name`` when that is a module of the project, else to ``pkg``. A package's ``__init__`` is
its own node; importing ``pkg.sub`` is not counted as an edge to ``pkg`` (Python initialises the parent
first, which cannot form a cycle on its own).

Usage: ``python scripts/check_structure.py [--max-lines 700] [--max-local 15]``; exit status 1 when a
limit is exceeded. CI runs it (``scripts/test.sh``).
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("src_training", "napari_lidnet")


def module_files() -> dict[str, Path]:
    """Map dotted module name -> file for every ``.py`` file of the project's packages."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Yield ``(node, function_local)`` for each import that runs (TYPE_CHECKING blocks skipped)."""

    def walk(node, local):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    yield from walk_one(sub, local)
                continue
            yield from walk_one(child, local)

    def walk_one(child, local):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, local
        inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from walk(child, inner)

    yield from walk(tree, False)


def _targets(node, module: str, is_pkg: bool, modules: set[str]) -> list[str]:
    """The project modules an import statement loads (empty for third-party imports)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    if prefix.split(".")[0] not in PACKAGES:
        return []
    out = []
    for alias in node.names:
        sub = f"{prefix}.{alias.name}"
        if sub in modules:
            out.append(sub)
        elif prefix in modules:
            out.append(prefix)
    return sorted(set(out))


def analyse():
    """Return ``(lines, edges, local_imports)``.

    ``lines``: {module: line count}; ``edges``: {module: {imported module: first line}};
    ``local_imports``: list of ``(module, line, target)`` for function-local imports of project modules.
    """
    files = module_files()
    names = set(files)
    lines, edges, local = {}, {}, []
    for mod, path in files.items():
        text = path.read_text(encoding="utf-8")
        lines[mod] = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        tree = ast.parse(text, filename=str(path))
        edges[mod] = {}
        for node, is_local in _imports(tree):
            for target in _targets(node, mod, path.name == "__init__.py", names):
                if target == mod:
                    continue
                edges[mod].setdefault(target, node.lineno)
                if is_local:
                    local.append((mod, node.lineno, target))
    return lines, edges, local


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                strong(w)
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-lines", type=int, default=700)
    ap.add_argument("--max-local", type=int, default=15)
    ap.add_argument("--top", type=int, default=8, help="how many of the longest modules to list")
    args = ap.parse_args(argv)
    lines, edges, local = analyse()
    ok = True

    longest = sorted(lines.items(), key=lambda kv: -kv[1])
    over = [(m, n) for m, n in longest if n > args.max_lines]
    print(f"1. longest modules (limit {args.max_lines} lines): {longest[0][0]} {longest[0][1]} lines; "
          f"{len(over)} over the limit")
    for m, n in longest[: max(args.top, len(over))]:
        print(f"   {n:5d}  {m}{'   <-- over' if n > args.max_lines else ''}")
    ok &= not over

    comps = cycles(edges)
    print(f"2. import cycles (function-local imports included): {len(comps)}")
    for comp in comps:
        inside = [f"{a} -> {b} (line {edges[a][b]})" for a in comp for b in edges[a] if b in comp]
        print("   cycle: " + ", ".join(comp))
        for e in inside:
            print("      " + e)
    ok &= not comps

    print(f"3. function-local imports of the project's own modules (limit {args.max_local}): {len(local)}")
    for mod, line, target in sorted(local):
        print(f"   {mod}:{line} -> {target}")
    ok &= len(local) <= args.max_local

    print("structure: OK" if ok else "structure: over a limit")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
