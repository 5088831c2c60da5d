"""The house rules of the source tree, checked by reading it (no imports run):
no import cycle between hpo modules, the direction of imports between the concept
folders, and a docstring on every package that says what it owns."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each installed package's source lives (pyproject's package-dir).
PACKAGE_DIRS = {"hpo": ROOT / "hpo", "hpo.controller": ROOT / "controller",
                "hpo.agent": ROOT / "agent", "hpo.strategies": ROOT / "strategies"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts
                     if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, in functions too, except those under ``if TYPE_CHECKING``
    (they never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in skipped]


def import_graph() -> dict[str, set[str]]:
    """Module -> the hpo modules it imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative import
                    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_hpo_modules():
    assert _cycles(import_graph()) == []


def test_the_scan_finds_a_cycle_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Which concept may import which: the lower layers never reach up.
FORBIDDEN = {
    "hpo.sdk": ("hpo.controller", "hpo.agent", "hpo.strategies", "hpo.optimization",
                "hpo.report", "hpo.ui", "hpo.cli", "hpo.automation", "hpo.queue.reaper"),
    "hpo.store": ("hpo.sdk", "hpo.queue", "hpo.controller", "hpo.agent", "hpo.strategies",
                  "hpo.optimization", "hpo.report", "hpo.ui", "hpo.cli", "hpo.automation"),
    "hpo.space": ("hpo.store", "hpo.sdk", "hpo.queue", "hpo.controller", "hpo.agent",
                  "hpo.strategies", "hpo.optimization", "hpo.report", "hpo.ui", "hpo.cli"),
    "hpo.strategies": ("hpo.store", "hpo.queue", "hpo.controller", "hpo.agent", "hpo.report",
                       "hpo.ui", "hpo.cli", "hpo.automation", "hpo.sdk"),
    "hpo.optimization": ("hpo.controller", "hpo.agent", "hpo.strategies", "hpo.report",
                         "hpo.ui", "hpo.cli", "hpo.automation"),
    "hpo.wakeups": ("hpo.store", "hpo.queue", "hpo.sdk", "hpo.controller", "hpo.agent",
                    "hpo.strategies", "hpo.optimization", "hpo.report", "hpo.ui", "hpo.cli",
                    "hpo.automation"),
    "hpo.queue": ("hpo.sdk", "hpo.controller", "hpo.agent", "hpo.strategies",
                  "hpo.optimization", "hpo.report", "hpo.ui", "hpo.cli", "hpo.automation"),
    "hpo.report": ("hpo.controller", "hpo.agent", "hpo.ui", "hpo.automation"),
    "hpo.ui": ("hpo.controller", "hpo.agent", "hpo.automation"),
    "hpo.cli": ("hpo.controller", "hpo.agent", "hpo.strategies", "hpo.automation"),
    "hpo.agent": ("hpo.controller", "hpo.strategies", "hpo.optimization", "hpo.report",
                  "hpo.ui", "hpo.automation"),
}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_what_is_below_it(layer):
    graph = import_graph()
    wrong = sorted(f"{source} -> {target}" for source, targets in graph.items()
                   if _within(source, layer) for target in targets
                   if any(_within(target, f) for f in FORBIDDEN[layer]))
    assert wrong == []


def test_only_tests_and_benchmarks_use_the_test_kits():
    wrong = sorted(f"{source} -> {target}" for source, targets in import_graph().items()
                   if not _within(source, "hpo.testing") for target in targets
                   if _within(target, "hpo.testing"))
    assert wrong == []


def test_every_package_says_what_it_owns():
    missing = [name for name, path in _modules().items()
               if path.name == "__init__.py" and not ast.get_docstring(ast.parse(path.read_text()))]
    assert missing == []


def test_public_names_stay_where_clearml_code_finds_them():
    import importlib
    import tomllib

    from hpo import HpoError, Logger, Task  # noqa: F401
    from hpo.automation import (  # noqa: F401
        DiscreteParameterRange,
        GridSearch,
        HyperParameterOptimizer,
        LogUniformParameterRange,
        OptimizerBOHB,
        OptimizerOptuna,
        ParameterSet,
        RandomSearch,
        SearchStrategy,
        UniformIntegerParameterRange,
        UniformParameterRange,
    )
    from hpo.automation.hpbandster import OptimizerBOHB as BOHBAtClearMLsPath
    from hpo.automation.optuna import OptimizerOptuna as OptunaAtClearMLsPath
    from hpo.automation.parameters import UniformParameterRange as RangeAtClearMLsPath

    assert BOHBAtClearMLsPath is OptimizerBOHB and OptunaAtClearMLsPath is OptimizerOptuna
    assert RangeAtClearMLsPath is UniformParameterRange
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"hpo", "hpo-agent", "hpo-controller"}
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function))
