"""Everything a data-set runner needs besides the data: the model and the run's options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from dgunet.testrun.restoring import RestoreOptions


@dataclass
class Context:
    task: str
    model: nn.Module | None  # None for a classical baseline (known-operator protocols)
    arch: str = "DGUNet"
    restore: RestoreOptions = field(default_factory=RestoreOptions)
    cs_ratio: float | None = None
    workers: int = 0  # processes for scoring (0: in this process)
    sidd_mat_dtype: str = "float32"  # Idenoised.mat element type (float32 as published)
    log: Callable[[str], None] = print
    known: object | None = None  # dgunet.testrun.known.KnownRun for the known-operator protocols
    # set name -> precheck.BadFile list: files --skip-bad leaves out (the runners honour it)
    bad_files: dict[str, list] = field(default_factory=dict)
