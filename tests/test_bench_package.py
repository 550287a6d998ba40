"""The benchmark package's shape: one timer, no import cycle, physics at the bottom, no checkout paths."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dgunet.bench.timer import time_in_turns

PACKAGE = Path(__file__).resolve().parents[1] / "dgunet"


def imported_modules(path: Path) -> set[str]:
    """Every dgunet module `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.split(".")[0] == "dgunet"}


def bench_graph() -> dict[str, set[str]]:
    """dgunet.bench.<module> -> the dgunet.bench modules it imports."""
    modules = {f"dgunet.bench.{p.stem}": p for p in (PACKAGE / "bench").glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in imported_modules(path) if m.startswith("dgunet.bench")}
            for name, path in modules.items()}


def test_bench_modules_import_no_cycle_and_never_their_package():
    graph = bench_graph()
    assert {f"dgunet.bench.{m}" for m in ("timer", "inference", "train", "data", "physics")} <= set(graph)
    for name, deps in graph.items():
        assert "dgunet.bench" not in deps, f"{name} imports the package (its __init__ imports it back)"
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dep in graph.get(name, ()):
            visit(dep, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_physics_imports_nothing_above_itself():
    for path in (PACKAGE / "physics").glob("*.py"):
        above = {m for m in imported_modules(path) if not m.startswith(("dgunet.physics", "dgunet.errors"))}
        assert not above, f"{path.name} imports {sorted(above)}"


OWN_FILES = sorted([*(PACKAGE / "bench").glob("*.py"), PACKAGE / "demo.py", PACKAGE / "cli.py"])


@pytest.mark.parametrize("path", OWN_FILES, ids=lambda p: p.name)
def test_no_checkout_paths_and_short_functions(path):
    """Paths into the checkout are passed in (scripts/gpu_check.sh, the Makefile), never derived from
    where the package lies; argparse only through its public API; modules and functions stay short."""
    text = path.read_text(encoding="utf-8")
    assert "__file__" not in text and "parents[" not in text and "._subparsers" not in text
    assert len(text.splitlines()) <= 400
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef):
            assert node.end_lineno - node.lineno < 80, f"{path.name}: {node.name}"


def test_the_timer_warms_up_then_takes_turns_and_keeps_the_last_outputs():
    calls: list[str] = []

    def path(name: str):
        def run() -> str:
            calls.append(name)
            return f"{name}{len(calls)}"
        return run

    times, outputs = time_in_turns({"a": path("a"), "b": path("b")}, warmup=2, repeats=3)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3} and all(t >= 0 for t in times["a"])
    assert outputs == {"a": "a9", "b": "b10"}


def test_the_cli_adds_only_the_named_commands_arguments():
    from dgunet.cli import build_parser

    assert build_parser("bench").parse_args(["bench", "--size", "64"]).size == (64, 64)
    with pytest.raises(SystemExit):  # without the command named, bench's options are unknown
        build_parser().parse_args(["bench", "--size", "64"])


def test_the_gpu_check_runs_the_files_it_is_given(capsys):
    from dgunet.bench.gpucheck import main, plan

    steps = plan("cuda", False, Path("t/test_cuda.py"), Path("r.yml"))
    assert steps[0].args[-1] == "t/test_cuda.py"
    data = next(s for s in steps if s.name == "data loader")
    assert data.args[data.args.index("--config") + 1] == "r.yml" and "--task" not in data.args
    assert "--task" in next(s for s in plan("cpu", True) if s.name == "data loader").args  # package defaults
    assert main(["--device", "cpu", "--quick"]) == 2  # nothing runs without the test file
    err = capsys.readouterr().err
    assert "--cuda-tests (not given)" in err and "scripts/gpu_check.sh" in err and err.count("\n") == 1


def test_the_data_bench_times_the_recipe_it_is_given():
    from _engine_helpers import REPO

    from dgunet.bench.data import recipe_task, task_config
    from dgunet.errors import ConfigError

    recipe = REPO / "Denoising" / "training.yml"
    assert recipe_task(recipe, None) == "denoising" == recipe_task(recipe, "denoising")
    assert recipe_task(None, None) == "deblurring" and recipe_task(None, "cs") == "cs"
    with pytest.raises(ConfigError, match="--task deblurring, but .*trains denoising"):
        recipe_task(recipe, "deblurring")
    assert task_config("denoising", Path("x"), 2, 0, recipe=recipe).TRAIN.PATCH_SIZE == 128  # the recipe's
    with pytest.raises(ConfigError, match="package defaults are no denoising recipe; pass one with --config"):
        task_config("denoising", Path("x"), 2, 0)
