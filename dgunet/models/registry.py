"""The published variants: which class and which widths each task's model file uses."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dgunet import tasks
from dgunet.errors import ConfigError
from dgunet.models.cs import CSDGUNet, CSDGUNetPlus
from dgunet.models.image import DGUNet, DGUNetPlus
from dgunet.tasks import TASK_ALIASES, TASK_NAMES, get_task

TASKS = TASK_NAMES  # the task table's names (dgunet.tasks), under the name this module has exported
ARCHS = ("DGUNet", "DGUNet_plus")


@dataclass(frozen=True)
class Variant:
    task: str
    arch: str
    n_feat: int
    scale_unetfeats: int
    scale_orsnetfeats: int
    published: bool = True  # False: our addition, with no checkpoint of the paper

    @property
    def cls(self) -> type[nn.Module]:
        if get_task(self.task).is_cs:
            return CSDGUNetPlus if self.arch == "DGUNet_plus" else CSDGUNet
        return DGUNetPlus if self.arch == "DGUNet_plus" else DGUNet

    @property
    def widths(self) -> dict[str, int]:
        return {"n_feat": self.n_feat, "scale_unetfeats": self.scale_unetfeats,
                "scale_orsnetfeats": self.scale_orsnetfeats}

    @property
    def label(self) -> str:
        arch = "DGUNet+" if self.arch == "DGUNet_plus" else "DGUNet"
        return f"{arch} for {get_task(self.task).title.lower()} (n_feat={self.n_feat})"


def _variant(task: tasks.Task, arch: str) -> Variant:
    return Variant(task.name, arch, *task.widths[arch], published=task.published)


# Constructor defaults of each task's published model file, from the task table.
VARIANTS: dict[tuple[str, str], Variant] = {
    (t.name, arch): _variant(t, arch) for t in tasks.TASK_TABLE for arch in ARCHS
}


def normalize_arch(arch: str) -> str:
    """Accept 'DGUNet', 'DGUNet_plus', 'DGUNet+', 'dgunet_plus' ..."""
    key = arch.replace("+", "_plus").lower()
    for name in ARCHS:
        if name.lower() == key:
            return name
    raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def get_variant(task: str, arch: str) -> Variant:
    """The published widths of `task` (or an alias, any case) and `arch` (any spelling)."""
    key = TASK_ALIASES.get(task.lower(), task.lower())
    if key not in tasks.TASK_NAMES:  # read at call time: a registered task counts
        raise ConfigError(f"unknown task {key!r}; choose one of {', '.join(tasks.TASK_NAMES)}")
    return _variant(get_task(key), normalize_arch(arch))


def build_model(task: str, arch: str = "DGUNet", **overrides) -> nn.Module:
    """The published model of `task`, with any constructor argument overridden.

    >>> build_model("deraining", "DGUNet_plus")              # published widths
    >>> build_model("cs", "DGUNet", cs_ratio=10, n_feat=16)  # reduced width
    >>> build_model("sr", "DGUNet", gradient="known")        # model(y, physics=Downsample(4))
    >>> build_model("denoising", "DGUNet", gradient="known", noise_aware=True)  # reads op.noise_model.sigma
    """
    variant = get_variant(task, arch)
    return variant.cls(**{**variant.widths, **overrides})


def task_model(task: str, arch: str) -> type[nn.Module]:
    """A subclass named `DGUNet` whose defaults are the task's published widths.

    Task folders expose it so that `from DGUNet_plus import DGUNet; DGUNet()` keeps working.
    """
    variant = get_variant(task, arch)
    base = variant.cls

    def __init__(self, *args, **kwargs):
        # Positional arguments keep the published order (in_c, out_c, n_feat, ...).
        names = ["in_c", "out_c", *(["cs_ratio"] if get_task(task).is_cs else []), "n_feat",
                 "scale_unetfeats", "scale_orsnetfeats", "kernel_size", "reduction", "bias"]
        if len(args) > len(names):
            raise TypeError(f"DGUNet takes at most {len(names)} positional arguments")
        merged = {**variant.widths, **dict(zip(names, args, strict=False)), **kwargs}
        base.__init__(self, **merged)

    doc = f"{variant.label}: {base.__doc__ or ''}"
    return type("DGUNet", (base,), {"__init__": __init__, "__doc__": doc, "variant": variant})
