"""The task table: what each restoration task is, in one place.

A task is a row: its name (MODEL.TASK, --task), its folder (train.py / test.py / training.yml), the
published widths of each architecture, its training objective, how its training data is laid out,
its test sets and its known-operator test protocol. Every consumer (config validation, the model
registry, the losses, the data check, the train and test commands, reproduce, info, restore) reads
this table instead of keeping its own list, so adding a task is a row here plus a thin folder.

This module sits at the bottom of the layers: it imports nothing from dgunet except the errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from dgunet.errors import ConfigError

# Training objectives (dgunet.losses.stage_loss), summed over the stage outputs.
CHARBONNIER_EDGE = "charbonnier+edge"  # Charbonnier + LOSS.EDGE_WEIGHT x edge (Laplacian) loss
CHARBONNIER = "charbonnier"  # Charbonnier alone
MSE = "mse"
LOSSES = (CHARBONNIER_EDGE, CHARBONNIER, MSE)

# Layouts of the published training data.
PAIRED = "paired"  # input/ and target/ folders whose files pair by name
CS_BLOCKS = "cs-blocks"  # clean images, cut into crops and sampled in 32x32 blocks
SYNTHETIC = "synthetic"  # clean images degraded on the fly by a known operator (DEGRADE.KIND)
DATA_LAYOUTS = (PAIRED, CS_BLOCKS, SYNTHETIC)

# Model families: the image models (dgunet.models.image) and compressive sensing (dgunet.models.cs).
IMAGE = "image"
CS = "cs"

UNET_MULTIPLE = 8  # the U-Net downsamples three times
CS_BLOCK = 32  # the side of compressive sensing's sampling block


class Widths(NamedTuple):
    """Constructor widths of one published model file."""

    n_feat: int
    scale_unetfeats: int
    scale_orsnetfeats: int


def _frozen(widths: Mapping[str, Widths]) -> Mapping[str, Widths]:
    return MappingProxyType(dict(widths))


@dataclass(frozen=True)
class Task:
    """One row of the task table."""

    name: str  # MODEL.TASK and --task
    folder: str  # the task folder of the repository
    title: str  # headings of test and reproduce reports; lower-cased in sentences
    widths: Mapping[str, Widths] = field(hash=False)  # arch (models.registry.ARCHS) -> widths
    loss: str  # one of LOSSES
    clamps_output: bool  # the objective clamps outputs to [0, 1] (LOSS.CLAMP must be on)
    data: str  # one of DATA_LAYOUTS: the published training data
    test_sets: tuple[str, ...]  # the paper's order (testrun.datasets.TASK_DATASETS)
    known_protocol: str | None = None  # the known-operator test protocol (testrun.known), if any
    degrade_kind: str | None = None  # the DEGRADE.KIND of its synthetic training (data.synthetic)
    family: str = IMAGE  # IMAGE | CS: which model classes, options and validation apply
    published: bool = True  # False: our addition, with no checkpoint of the paper
    reports_average: bool = False  # the paper's table adds the mean over the test sets
    aliases: tuple[str, ...] = ()  # other spellings accepted for the name

    @property
    def is_cs(self) -> bool:
        """Compressive sensing: a sampling ratio, 32x32 blocks, two training phases, no MixUp."""
        return self.family == CS

    @property
    def size_multiple(self) -> int:
        """Training patches (and, for CS, validation tiles) are multiples of this side."""
        return CS_BLOCK if self.is_cs else UNET_MULTIPLE


_DEBLUR_WIDTHS = {"DGUNet": Widths(80, 48, 32), "DGUNet_plus": Widths(96, 48, 32)}

TASK_TABLE: tuple[Task, ...] = (
    Task("deblurring", "Deblurring", "Deblurring", _frozen(_DEBLUR_WIDTHS), CHARBONNIER_EDGE, False, PAIRED,
         ("GoPro", "HIDE", "RealBlur_J", "RealBlur_R"), known_protocol="nonblind", degrade_kind="blur"),
    Task("deraining", "Deraining", "Deraining",
         _frozen({"DGUNet": Widths(40, 20, 16), "DGUNet_plus": Widths(40, 20, 16)}), CHARBONNIER_EDGE, False,
         PAIRED, ("Rain100L", "Rain100H", "Test100", "Test1200", "Test2800"), reports_average=True),
    Task("denoising", "Denoising", "Denoising",
         _frozen({"DGUNet": Widths(80, 48, 32), "DGUNet_plus": Widths(80, 40, 32)}), CHARBONNIER, True,
         PAIRED, ("SIDD", "DND"), known_protocol="gaussian", degrade_kind="noise"),
    Task("cs", "Compressive_Sensing", "Compressive sensing",
         _frozen({"DGUNet": Widths(32, 16, 16), "DGUNet_plus": Widths(32, 16, 16)}), MSE, True, CS_BLOCKS,
         ("Set11", "BSD68"), family=CS, aliases=("compressive_sensing",)),
    # Not in the paper: super-resolution with a known operator takes the deblurring widths.
    Task("sr", "Super_Resolution", "Super-resolution", _frozen(_DEBLUR_WIDTHS), CHARBONNIER_EDGE, False,
         SYNTHETIC, ("Set5", "Set14", "BSD100", "Urban100", "Photos"), known_protocol="sr", degrade_kind="sr",
         published=False, aliases=("super_resolution", "super-resolution")),
)

# Views of the table, rebuilt by `register_task`; read the tuples as `tasks.TASK_NAMES` (not imported
# by name) where a task registered later must be seen.
TASK_NAMES: tuple[str, ...] = ()
IMAGE_TASKS: tuple[str, ...] = ()  # restored by the image models: all but compressive sensing
TASK_ALIASES: dict[str, str] = {}
TASK_FOLDERS: dict[str, str] = {}  # task -> its folder
KNOWN_PROTOCOLS: dict[str, str] = {}  # task -> its known-operator protocol, where it has one
DEGRADE_TASKS: dict[str, str] = {}  # DEGRADE.KIND -> the task it trains


def _set_table(table: tuple[Task, ...]) -> None:
    global TASK_TABLE, TASK_NAMES, IMAGE_TASKS
    TASK_TABLE = table
    TASK_NAMES = tuple(t.name for t in table)
    IMAGE_TASKS = tuple(t.name for t in table if not t.is_cs)
    # The dicts change in place, so that names imported from here see a registered task too.
    for view, items in ((TASK_ALIASES, {a: t.name for t in table for a in t.aliases}),
                        (TASK_FOLDERS, {t.name: t.folder for t in table}),
                        (KNOWN_PROTOCOLS, {t.name: t.known_protocol for t in table if t.known_protocol}),
                        (DEGRADE_TASKS, {t.degrade_kind: t.name for t in table if t.degrade_kind})):
        view.clear()
        view.update(items)


_set_table(TASK_TABLE)


def register_task(task: Task) -> None:
    """Add a row (a task of your own, next to a thin folder with train.py / training.yml).

    Config validation, the losses and the model registry see it at once; command-line choices
    built after the call do too.
    """
    if task.name in TASK_NAMES or task.name in TASK_ALIASES:
        raise ConfigError(f"task {task.name!r} is already in the task table; choose another name")
    if task.loss not in LOSSES or task.data not in DATA_LAYOUTS or task.family not in (IMAGE, CS):
        raise ConfigError(f"task {task.name!r}: loss, data and family must be one of {LOSSES}, "
                          f"{DATA_LAYOUTS} and {(IMAGE, CS)}")
    _set_table((*TASK_TABLE, task))


@contextmanager
def registered(task: Task) -> Iterator[Task]:
    """`register_task(task)` for the duration of a with block (tests, experiments)."""
    before = TASK_TABLE
    register_task(task)
    try:
        yield task
    finally:
        _set_table(before)


def get_task(name: str) -> Task:
    """The row of `name` (or of one of its aliases, any case); ConfigError naming the choices."""
    key = name.lower()
    key = TASK_ALIASES.get(key, key)
    for task in TASK_TABLE:
        if task.name == key:
            return task
    raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")


def patch_multiple(scale: int = 1) -> int:
    """The side multiple of known-operator patches and crops: lcm(8, scale).

    8 for the U-Net; times the SR scale where it does not divide 8, so that the low-resolution
    side is whole (x3: 24). scale 1 for the operators that keep the image size.
    """
    return math.lcm(UNET_MULTIPLE, scale)
