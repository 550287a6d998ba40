"""The layers of docs/architecture.md hold: every import of dgunet/ (lazy ones inside functions
included) goes to the same layer or a lower one, and no modules import each other in a circle.
Read from the source with `ast`; nothing is imported or run."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "dgunet"
LAYERS = {  # unit (a top-level module or subpackage of dgunet) -> layer, as in docs/architecture.md
    **dict.fromkeys(("__init__", "errors", "atomic", "imagefiles", "jsonio", "tasks"), 0),
    **dict.fromkeys(("physics", "metrics"), 1),
    **dict.fromkeys(("models", "data", "baselines", "benchmarks"), 2),
    **dict.fromkeys(("config", "checkpoint", "shipped", "losses", "inference", "evaluate"), 3),
    **dict.fromkeys(("engine", "testrun"), 4),
    **dict.fromkeys(("cli", "__main__", "bench", "demo", "info", "pretrained", "reproduce",
                     "restore_command", "head_tuning"), 5),
}
FOUNDATION_IMPORTS = {"errors"}  # layer 0 imports nothing of dgunet but the errors


def module_files() -> dict[str, Path]:
    """dotted module name -> file, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The dgunet modules `name` imports. `from pkg import sub` counts as an import of pkg.sub
    alone when sub is a module (pkg's __init__ is then already running, not a dependency)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb level - 1 packages from this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            subs = {f"{source}.{alias.name}" for alias in node.names} & modules.keys()
            found |= subs
            if len(subs) < len(node.names) and source in modules:
                found.add(source)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iteratively)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def test_every_unit_of_the_package_has_a_layer():
    units = {unit(m) for m in module_files()}
    assert units == set(LAYERS), ("give each new module a layer in docs/architecture.md and LAYERS: "
                                  f"{sorted(units ^ set(LAYERS))}")


def test_imports_go_down_the_layers():
    wrong = []
    for module, targets in import_graph().items():
        for target in targets:
            source_unit, target_unit = unit(module), unit(target)
            if source_unit == target_unit:
                continue
            if LAYERS[target_unit] > LAYERS[source_unit]:
                wrong.append(f"{module} -> {target} (layer {LAYERS[source_unit]} -> {LAYERS[target_unit]})")
            if LAYERS[source_unit] == 0 and target_unit not in FOUNDATION_IMPORTS:
                wrong.append(f"{module} -> {target} (the foundations import only the errors)")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_checks_can_fail():
    """The parser sees lazy and relative imports, and the cycle finder finds a cycle."""
    modules = module_files()
    # dgunet.pretrained imports testrun.loading inside load_pretrained: a lazy import is seen
    assert "dgunet.testrun.loading" in import_graph()["dgunet.pretrained"]
    assert "dgunet.physics.base" in imports_of("dgunet.physics.blur", modules["dgunet.physics.blur"], modules)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = defaultdict(set, import_graph())
    graph["dgunet.physics.base"].add("dgunet.models.registry")  # physics reaching up: caught
    assert any("dgunet.physics.base" in c for c in cycles(graph))


def test_modules_and_functions_stay_short():
    """Issue 17's budget: no module of dgunet/ over 400 lines, no function over 80."""
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400:
            long_modules.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    where = f"{path.relative_to(REPO)}:{node.lineno}"
                    long_functions.append(f"{where} {node.name} ({length} lines)")
    assert not long_modules and not long_functions, "split these:\n" + "\n".join(long_modules + long_functions)
