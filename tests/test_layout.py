"""The package's import graph: no module imports one that imports it back, and the shared vocabulary and the
configs import no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import robustgsl

PACKAGE = Path(robustgsl.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """robustgsl modules imported anywhere in the file (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robustgsl"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            # "from package import submodule" imports the submodule; names other than submodules, the package.
            found |= submodules if len(submodules) == len(node.names) else submodules | {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("robustgsl")}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) - {module_name(path)} for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by depth-first search, as the modules along it (the package's own __init__, which
    only re-exports, and a package importing its own submodules are not cycles)."""
    found, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target == "robustgsl" or target.startswith(module + "."):
                continue
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    assert "robustgsl.vocabulary" in graph and "robustgsl.evaluate.scoring" in graph  # the walk sees the package
    assert cycles(graph) == []


def test_the_cycle_search_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_vocabulary_and_the_configs_import_no_torch():
    code = ("import sys, robustgsl.vocabulary, robustgsl.config, robustgsl.options; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
