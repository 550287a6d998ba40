"""Shared fixtures: paths to the data the tests ship and small helpers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


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


@pytest.fixture
def one_thread():
    """One torch thread in this process: the 2 cores are shared with the scripts under test, and
    two threads that each wait for the other's time slice are far slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
