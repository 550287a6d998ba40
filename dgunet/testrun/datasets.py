"""The test sets of each task, where they live under a data root, and how they are scored.

A data set folder is looked up as ``<root>/<name>``, then ``<root>/test/<name>`` (the layout
`python -m dgunet data check` expects) and ``<root>/<name>/test`` (the published deblurring
layout); the first one that holds the set's marker file or folder wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dgunet.data.io import list_images
from dgunet.errors import ConfigError, DataError

SIDD_NOISY = "ValidationNoisyBlocksSrgb"
SIDD_GT = "ValidationGtBlocksSrgb"


@dataclass(frozen=True)
class DatasetSpec:
    """One test set.

    kind: "paired" (input/ + optional target/ image folders), "sidd" (.mat blocks),
    "dnd" (info.mat + images_srgb/), "cs" (a folder of clean images).
    protocol: the evaluation protocol of `dgunet.metrics`, None when no ground truth is public.
    """

    name: str
    kind: str
    protocol: str | None

    @property
    def layout(self) -> str:
        """What the folder must contain, for error messages and docs."""
        return LAYOUTS[self.kind]

    def holds_data(self, folder: Path) -> bool:
        """Whether `folder` looks like this set (its marker exists)."""
        if self.kind == "paired":
            return (folder / "input").is_dir()
        if self.kind == "sidd":
            return (folder / f"{SIDD_NOISY}.mat").is_file()
        if self.kind == "dnd":
            return (folder / "info.mat").is_file()
        if self.kind == "photos":
            return True  # scikit-image's bundled photos: found under any data root
        if self.kind == "clean":
            target = folder / "target"
            return folder.is_dir() and bool(list_images(folder) or (target.is_dir() and list_images(target)))
        return folder.is_dir() and bool(list_images(folder))


LAYOUTS = {
    "paired": "input/ with the degraded images and, to score them, target/ with the clean ones "
              "(same file names, any of .png/.jpg/.tif)",
    "sidd": f"{SIDD_NOISY}.mat and, to score, {SIDD_GT}.mat (40x32x256x256x3 uint8 blocks)",
    "dnd": "info.mat (MATLAB v7.3 with info.boundingboxes) and images_srgb/0001.mat ... "
           "(variable InoisySRGB)",
    "cs": "the clean test images themselves (.tif/.png), directly in the folder",
    "clean": "the clean test images (.png/.jpg/.tif), directly in the folder or in its target/",
    "photos": "nothing: scikit-image's bundled photos",
}

# Known-operator protocols (dgunet.testrun.known): clean images, degraded by the benchmark cases.
_CLEAN_SETS = {
    "nonblind": ("CBSD68", "Kodak24", "McMaster"),
    "gaussian": ("CBSD68", "Kodak24", "McMaster"),
    "sr": ("Set5", "Set14", "BSD100", "Urban100"),
}
KNOWN_DATASETS: dict[str, tuple[DatasetSpec, ...]] = {
    name: (*(DatasetSpec(s, "clean", None) for s in sets), DatasetSpec("Photos", "photos", None))
    for name, sets in _CLEAN_SETS.items()
}

TASK_DATASETS: dict[str, tuple[DatasetSpec, ...]] = {
    "deblurring": (
        DatasetSpec("GoPro", "paired", "gopro"),
        DatasetSpec("HIDE", "paired", "gopro"),
        DatasetSpec("RealBlur_J", "paired", "realblur"),
        DatasetSpec("RealBlur_R", "paired", "realblur"),
    ),
    "deraining": tuple(
        DatasetSpec(name, "paired", "deraining")
        for name in ("Rain100L", "Rain100H", "Test100", "Test1200", "Test2800")
    ),
    "denoising": (
        DatasetSpec("SIDD", "sidd", "sidd"),
        DatasetSpec("DND", "dnd", None),
    ),
    "cs": (
        DatasetSpec("Set11", "cs", "cs"),
        DatasetSpec("BSD68", "cs", "cs"),
    ),
    "sr": KNOWN_DATASETS["sr"],
}


def select_datasets(task: str, names: list[str] | None, known: str | None = None) -> list[DatasetSpec]:
    """The task's sets named in `names` (case-insensitive), all of them when None; `known` picks the
    clean-image sets of a known-operator protocol instead of the published ones."""
    specs = KNOWN_DATASETS[known] if known else TASK_DATASETS[task]
    if not names:
        return list(specs)
    by_name = {spec.name.lower(): spec for spec in specs}
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        raise ConfigError(f"unknown {task} data set(s) {', '.join(unknown)}; "
                          f"choose from {', '.join(s.name for s in specs)}")
    return [by_name[n.lower()] for n in dict.fromkeys(names)]


def candidate_folders(root: Path, name: str) -> list[Path]:
    """Where a set called `name` may live under `root`, in the order they are tried."""
    return [root / name, root / "test" / name, root / name / "test"]


def find_dataset(root: str | Path, spec: DatasetSpec) -> Path | None:
    """The folder holding `spec` under `root`, or None."""
    return next((f for f in candidate_folders(Path(root), spec.name) if spec.holds_data(f)), None)


def require_dataset(root: str | Path, spec: DatasetSpec) -> Path:
    """Like `find_dataset`, but a missing set raises DataError naming where we looked."""
    folder = find_dataset(root, spec)
    if folder is None:
        tried = ", ".join(str(f) for f in candidate_folders(Path(root), spec.name))
        raise DataError(f"data set {spec.name} not found: none of {tried} holds {spec.layout}. "
                        f"See docs/testing.md for how to lay it out.")
    return folder
