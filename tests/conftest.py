"""Shared fixtures: paths to the data the tests ship and small helpers."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

# Asked once at import, before any test hides the GPUs from child processes: the CUDA driver
# reads CUDA_VISIBLE_DEVICES when it starts, so this process's `cuda` tests keep their GPUs.
CUDA_PRESENT = torch.cuda.is_available()
VISIBLE_BEFORE = os.environ.get("CUDA_VISIBLE_DEVICES")

REPO = Path(__file__).resolve().parents[1]
# A hang guard for the tests that run a whole script, not a speed limit: on a quiet 2-core machine
# they take minutes, on a shared one five times as long (the quick evidence run hit 900 s next to
# three trainings).
SCRIPT_TIMEOUT_S = 3600
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def share_cores_between_workers() -> None:
    """Under pytest-xdist (`make test` runs `-n auto`) each worker gets its share of the cores:
    torch's default, a thread per core in every worker, oversubscribes them and each spin-waits on
    the others. A run without xdist keeps torch's default."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // workers))


share_cores_between_workers()


def pytest_collection_modifyitems(items):
    """The `cuda` tests go to one xdist worker (`--dist loadgroup`): run side by side they would
    share one GPU, and their NCCL groups and TF32 settings were written for one process."""
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(pytest.mark.xdist_group("cuda"))


def load_task_module(task_dir: str, name: str):
    """Import e.g. Deraining/DGUNet_plus.py as a module, the way a user running from that folder would."""
    path = REPO / task_dir / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_task_{task_dir}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session", autouse=True)
def cpu_by_default():
    """The tests run on the CPU also where a GPU is visible; only tests marked `cuda` see it.

    The engine trains on CUDA whenever it sees it (dgunet.engine.distributed.pick_device), but
    the CPU tests compare bits, tolerances and gloo collectives made for the CPU. So for the
    session (module fixtures included) torch.cuda.is_available() answers False and child
    processes (train.py, torchrun workers) start with CUDA_VISIBLE_DEVICES empty;
    `cuda_for_marked_tests` undoes both inside each `cuda` test.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        patch.setenv("CUDA_VISIBLE_DEVICES", "")
        yield


@pytest.fixture(autouse=True)
def cuda_for_marked_tests(request, monkeypatch):
    if request.node.get_closest_marker("cuda") is not None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: CUDA_PRESENT)
        if VISIBLE_BEFORE is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", VISIBLE_BEFORE)


@pytest.fixture
def one_thread():
    """One torch thread in this process: the 2 cores are shared with the scripts under test, and
    two threads that each wait for the other's time slice are far slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
