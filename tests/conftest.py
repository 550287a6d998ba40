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
