"""Training configuration: yacs defaults, loading from YAML + command-line overrides, validation.

The defaults are the deblurring recipe of the paper; each task's `training.yml` restates every
published value for its task (see ../shared/spec/PROTOCOLS.md and docs/training.md), so a yml is
a complete record of the recipe. `load_config(path, opts)` merges a yml and `KEY VALUE` pairs
over these defaults, coerces types forgivingly (`1e-4` in YAML is a string to PyYAML; `1` for a
float key is fine) and validates the result, raising ConfigError with a message naming the key.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode as CN

from dgunet.errors import ConfigError

TASKS = ("deblurring", "deraining", "denoising", "cs", "sr")
GRADIENTS = ("learned", "known", "known+learned")
ARCHS = ("DGUNet", "DGUNet_plus")
SCHEDULES = ("cosine", "multistep", "constant")
AMP_MODES = ("none", "bf16", "fp16")
ADAM_KINDS = ("loop", "foreach", "fused")
SPEEDS = ("published", "fast")


def defaults() -> CN:
    """A fresh, mutable copy of the default configuration."""
    c = CN()
    # Folder that relative paths (data, output, init weights) resolve against; train.py sets
    # it to its own task folder, empty means the current directory.
    c.TASK_DIR = ""

    c.MODEL = CN()
    c.MODEL.TASK = "deblurring"
    c.MODEL.ARCH = "DGUNet"
    # 0 keeps the published width of TASK/ARCH (dgunet.models.VARIANTS); tests shrink them.
    c.MODEL.N_FEAT = 0
    c.MODEL.SCALE_UNETFEATS = 0
    c.MODEL.SCALE_ORSNETFEATS = 0
    c.MODEL.CS_RATIO = 25.0  # percent; compressive sensing only
    # Gradient step of the image models: learned (published) | known | known+learned (the
    # degradation operator of each sample is given to the model; see dgunet/models/gradient.py).
    c.MODEL.GRADIENT = "learned"
    # Known modes only: the model is told the noise level (op.noise_model.sigma) and sets its step
    # sizes and proximal features from it (dgunet.models.image.NoiseConditioning); adds noise_net.* keys.
    c.MODEL.NOISE_AWARE = False
    # Compressive sensing sampling matrix: learned (published) | fixed (seeded Gaussian,
    # dgunet.physics.CompressedSensing with seed MODEL.PHI_SEED).
    c.MODEL.PHI = "learned"
    c.MODEL.PHI_SEED = 0

    c.OPTIM = CN()
    c.OPTIM.BATCH_SIZE = 16  # the global batch: one optimizer step sees this many samples
    c.OPTIM.NUM_EPOCHS = 3000
    c.OPTIM.LR_INITIAL = 1e-4
    c.OPTIM.LR_MIN = 1e-6
    c.OPTIM.SCHEDULE = "cosine"  # cosine: warm-up then cosine; multistep; constant
    c.OPTIM.WARMUP_EPOCHS = 3
    c.OPTIM.WARMUP_MULTIPLIER = 1.0
    c.OPTIM.T_MAX_EXTRA = 0  # cosine T_max = NUM_EPOCHS - WARMUP_EPOCHS + T_MAX_EXTRA
    c.OPTIM.BETAS = [0.9, 0.999]
    c.OPTIM.EPS = 1e-8
    c.OPTIM.WEIGHT_DECAY = 0.0
    c.OPTIM.MILESTONES = [60, 120, 180, 240]  # multistep only
    c.OPTIM.GAMMA = 0.5  # multistep only

    c.TRAIN = CN()
    c.TRAIN.PATCH_SIZE = 256
    c.TRAIN.ACCUM_STEPS = 1  # micro-batch = BATCH_SIZE / (ACCUM_STEPS * world size)
    c.TRAIN.SEED = 1234
    c.TRAIN.WORKERS = 4  # DataLoader processes per training process
    c.TRAIN.AMP = "none"  # none | bf16 | fp16 (fp16 uses a gradient scaler)
    c.TRAIN.CHANNELS_LAST = False
    c.TRAIN.COMPILE = False
    c.TRAIN.ADAM = "loop"  # loop (published) | foreach | fused: Adam's kernel, same update
    c.TRAIN.FAST_MERGE = False  # solve-based merge projection (same function, faster)
    c.TRAIN.SPEED = "published"  # published: the keys above; fast: the fastest result-keeping preset
    c.TRAIN.CUDNN_BENCHMARK = True  # as published; False: no autotuning and cudnn.deterministic
    # (engine.distributed.set_cudnn), for bit-repeatable GPU runs on the same card
    c.TRAIN.RESUME = False
    c.TRAIN.INIT_FROM = ""  # weights to start from (CS phase 2: phase 1's net_best.pkl)
    c.TRAIN.PHASE = 1  # compressive sensing: 1 = 32x32 blocks, 2 = "deblock" on larger crops
    c.TRAIN.SAVE_EVERY = 1  # model_epoch_{e}.pth every this many epochs (0: never)
    c.TRAIN.KEEP_LAST_K = 10  # keep this many model_epoch_*.pth (0: all, as published)
    c.TRAIN.STOP_AT_EPOCH = 0  # stop after this epoch (chunked jobs; --resume goes on); 0: off
    c.TRAIN.PRINT_EVERY = 0  # also print a line every N steps (0: tqdm bar only)
    c.TRAIN.SNAPSHOT_MINUTES = 15.0  # resumable mid-epoch snapshot.pth this often (0: off)
    c.TRAIN.SNAPSHOT_EVERY_STEPS = 0  # ... and every N optimizer steps of an epoch (0: off; tests)
    c.TRAIN.STOP_GRACE_SECONDS = 60.0  # SIGTERM/SIGINT: finish the step, snapshot, exit within this

    c.DATA = CN()
    c.DATA.TRAIN_DIR = "Datasets/train"  # relative to TASK_DIR
    c.DATA.VAL_DIR = "Datasets/test/GoPro"  # empty: no validation
    c.DATA.SATURATION_AUG = True  # deblurring only in the paper
    c.DATA.LENGTH_MULTIPLIER = 1  # the training set repeated this many times per epoch
    c.DATA.DECODE_CACHE = ""  # folder: decode each training image once into .npy (same samples, faster)
    c.DATA.MIXUP_FROM_EPOCH = 0  # MixUp from this epoch on (denoising: 6); 0: off
    c.DATA.MIXUP_ALPHA = 0.6
    c.DATA.CROPS_PER_IMAGE = 200  # compressive sensing
    c.DATA.CACHE_DTYPE = "float32"  # compressive sensing: float32 | uint8

    # Synthetic degradations of clean images with a known operator (docs/known_tasks.md).
    # KIND "" trains on the published paired folders; blur | sr | noise degrade DATA.TRAIN_DIR's
    # clean images on the fly, seeded by (TRAIN.SEED, epoch, index), and give the model the operator.
    c.DEGRADE = CN()
    c.DEGRADE.KIND = ""  # "" | blur (deblurring) | sr (sr) | noise (denoising)
    c.DEGRADE.KERNELS = ["motion", "gaussian_iso", "gaussian_aniso"]  # drawn uniformly per sample
    c.DEGRADE.KERNEL_SIZE = 25  # odd, <= 25; every kernel is padded to this size
    c.DEGRADE.KERNEL_SIGMA_RANGE = [0.5, 3.0]  # Gaussian kernels: std in pixels
    c.DEGRADE.PADDING = "circular"  # blur boundary: circular | reflect
    c.DEGRADE.SIGMA_RANGE = [0.0, 0.03]  # noise std on [0, 1] images, uniform per sample
    c.DEGRADE.VAL_SIGMA = 0.01  # fixed noise std of the validation images
    c.DEGRADE.SCALE = 2  # sr: 2 | 3 | 4
    c.DEGRADE.SR_KERNEL = "bicubic"  # sr: bicubic (MATLAB imresize) | blur (KERNELS, then decimation)

    c.VAL = CN()
    c.VAL.EVERY = 10  # validate after every epoch e with e % EVERY == 0 (0: off)
    c.VAL.EPOCHS = []  # ... and in these epochs
    c.VAL.EVERY_EPOCH_FROM = 0  # ... and in every epoch >= this (0: off)
    c.VAL.PER_EPOCH = 1  # validations inside a validating epoch, evenly spaced, last at its end
    c.VAL.CROP = 256  # center crop of each validation image (0: whole image)
    c.VAL.BATCH_SIZE = 16
    c.VAL.CS_TILE = 128  # compressive sensing: tiles of the published Set11 test

    c.LOSS = CN()
    c.LOSS.EDGE_WEIGHT = 0.05
    c.LOSS.CHARBONNIER_EPS = 1e-3
    c.LOSS.CLAMP = False  # clamp outputs to [0, 1] before the loss (denoising, cs: always)
    # Weight of each of the 7 stage outputs in the loss, final first; [] = all 1 (published).
    c.LOSS.STAGE_WEIGHTS = []

    c.OUTPUT = CN()
    c.OUTPUT.DIR = "checkpoints"
    c.OUTPUT.NAME = ""  # run folder inside DIR; empty: ARCH (CS: ARCH_ratio{r}_phase{p})
    c.OUTPUT.TENSORBOARD = True  # when torch.utils.tensorboard imports
    return c


# ---------------------------------------------------------------- merging

def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """`value` converted to the type of `default`, or ConfigError."""
    def fail() -> ConfigError:
        kind = type(default).__name__
        return ConfigError(f"{key} = {value!r} from {source} is not a valid {kind} "
                           f"(default: {default!r})")

    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise fail()
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise fail()
    if isinstance(default, float):
        if isinstance(value, bool):
            raise fail()
        try:
            return float(value)  # also "1e-4", which PyYAML leaves a string
        except (TypeError, ValueError):
            raise fail() from None
    if isinstance(default, list | tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, list | tuple):
            raise fail()
        if default:  # elements take the type of the default's elements
            return [_coerce(v, default[0], key, source) for v in value]
        return list(value)
    if isinstance(default, str):
        if isinstance(value, dict | list):
            raise fail()
        return "" if value is None else str(value)
    raise fail()


def _leaf_keys(node: CN, prefix: str = "") -> list[str]:
    """Every full key under `node`: ["MODEL.TASK", "MODEL.ARCH", ...]."""
    keys = []
    for name, value in node.items():
        keys += _leaf_keys(value, f"{prefix}{name}.") if isinstance(value, CN) else [prefix + name]
    return keys


def _unknown_key_hint(root: CN, node: CN, name: str, prefix: str) -> str:
    close = [prefix + c for c in difflib.get_close_matches(name, list(node.keys()), n=3)]
    if not close:  # the right name in the wrong section, e.g. TRAIN.TRAIN_DIR for DATA.TRAIN_DIR
        close = [k for k in _leaf_keys(root) if k.rsplit(".", 1)[-1] == name]
    return f"; did you mean {', '.join(close)}?" if close else ""


def _merge(cfg: CN, updates: Mapping[str, Any], source: str, prefix: str = "", root: CN | None = None) -> None:
    root = cfg if root is None else root
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in cfg:
            hint = _unknown_key_hint(root, cfg, name, prefix)
            raise ConfigError(f"unknown config key {key} in {source}{hint}")
        if isinstance(cfg[name], CN):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key} in {source} must be a section with keys, got {value!r}")
            _merge(cfg[name], value, source, key + ".", root)
        else:
            cfg[name] = _coerce(value, cfg[name], key, source)


def _opts_to_mapping(opts: Sequence[str]) -> dict[str, Any]:
    """["OPTIM.LR_INITIAL", "2e-4", ...] -> {"OPTIM": {"LR_INITIAL": "2e-4"}, ...}."""
    if len(opts) % 2:
        raise ConfigError(f"--opts takes KEY VALUE pairs; got an odd number of items: {' '.join(opts)}")
    nested: dict[str, Any] = {}
    for key, text in zip(opts[::2], opts[1::2], strict=True):
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text) if text != "" else ""
    return nested


def load_config(path: str | os.PathLike | None = None, opts: Sequence[str] = (),
                overrides: Mapping[str, Any] | None = None) -> CN:
    """Defaults <- yml at `path` <- `overrides` (nested mapping) <- `opts` (KEY VALUE list).

    Returns a frozen, validated CfgNode.
    """
    cfg = defaults()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        _merge(cfg, data, str(path))
    if overrides:
        _merge(cfg, overrides, "the command line")
    if opts:
        _merge(cfg, _opts_to_mapping(opts), "--opts")
    validate(cfg)
    cfg.freeze()
    return cfg


def config_from_yaml_string(text: str) -> CN:
    """The config stored in a checkpoint (defaults fill keys added since it was written)."""
    cfg = defaults()
    _merge(cfg, yaml.safe_load(text) or {}, "the checkpoint's config")
    cfg.freeze()
    return cfg


# ---------------------------------------------------------------- validation

def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(cfg: CN) -> None:
    """Raise ConfigError for values that cannot work; the message names the key."""
    m, o, t, d, v, loss = cfg.MODEL, cfg.OPTIM, cfg.TRAIN, cfg.DATA, cfg.VAL, cfg.LOSS
    _check(m.TASK in TASKS, f"MODEL.TASK = {m.TASK!r}; choose one of {', '.join(TASKS)}")
    arch = m.ARCH.replace("+", "_plus")
    _check(arch.lower() in (a.lower() for a in ARCHS),
           f"MODEL.ARCH = {m.ARCH!r}; choose DGUNet or DGUNet_plus")
    _check(m.GRADIENT in GRADIENTS, f"MODEL.GRADIENT = {m.GRADIENT!r}; choose one of {', '.join(GRADIENTS)}")
    _check(m.GRADIENT == "learned" or m.TASK != "cs", "MODEL.GRADIENT applies to the image tasks; compressive "
           "sensing always knows its sampling: choose it with MODEL.PHI learned | fixed")
    _check(m.PHI in ("learned", "fixed"), f"MODEL.PHI = {m.PHI!r}; choose learned or fixed")
    _check(not m.NOISE_AWARE or m.GRADIENT != "learned", "MODEL.NOISE_AWARE needs a known operator: set "
           "MODEL.GRADIENT known or known+learned (with DEGRADE.KIND blur | sr | noise)")
    for key in ("N_FEAT", "SCALE_UNETFEATS", "SCALE_ORSNETFEATS"):
        _check(m[key] >= 0, f"MODEL.{key} = {m[key]} must be >= 0 (0: the published width)")
    if m.TASK == "cs":
        _check(0 < m.CS_RATIO <= 100, f"MODEL.CS_RATIO = {m.CS_RATIO} must be a percentage in (0, 100]")
        _check(t.PHASE in (1, 2), f"TRAIN.PHASE = {t.PHASE}; compressive sensing has phases 1 and 2")
        _check(t.PATCH_SIZE % 32 == 0, f"TRAIN.PATCH_SIZE = {t.PATCH_SIZE} must be a multiple of the "
               f"32x32 sampling block for compressive sensing")
        _check(v.CS_TILE % 32 == 0 and v.CS_TILE > 0, f"VAL.CS_TILE = {v.CS_TILE} must be a positive "
               f"multiple of 32")
        _check(d.CROPS_PER_IMAGE >= 1, f"DATA.CROPS_PER_IMAGE = {d.CROPS_PER_IMAGE} must be >= 1")
        _check(d.CACHE_DTYPE in ("float32", "uint8"),
               f"DATA.CACHE_DTYPE = {d.CACHE_DTYPE!r}; use float32 or uint8")
    else:
        _check(t.PATCH_SIZE % 8 == 0, f"TRAIN.PATCH_SIZE = {t.PATCH_SIZE} must be a multiple of 8 "
               f"(the U-Net downsamples three times)")
        _check(v.CROP % 8 == 0, f"VAL.CROP = {v.CROP} must be a multiple of 8 (or 0 for whole images)")
    _check(t.PATCH_SIZE > 0, f"TRAIN.PATCH_SIZE = {t.PATCH_SIZE} must be positive")

    _check(o.BATCH_SIZE >= 1, f"OPTIM.BATCH_SIZE = {o.BATCH_SIZE} must be >= 1")
    _check(o.NUM_EPOCHS >= 1, f"OPTIM.NUM_EPOCHS = {o.NUM_EPOCHS} must be >= 1")
    _check(o.LR_INITIAL > 0, f"OPTIM.LR_INITIAL = {o.LR_INITIAL} must be > 0")
    _check(0 <= o.LR_MIN <= o.LR_INITIAL, f"OPTIM.LR_MIN = {o.LR_MIN} must be in [0, LR_INITIAL]")
    _check(o.SCHEDULE in SCHEDULES, f"OPTIM.SCHEDULE = {o.SCHEDULE!r}; choose one of {', '.join(SCHEDULES)}")
    if o.SCHEDULE == "cosine":
        _check(o.WARMUP_EPOCHS >= 1, f"OPTIM.WARMUP_EPOCHS = {o.WARMUP_EPOCHS} must be >= 1 "
               f"(the published scheduler warms up; use SCHEDULE constant for none)")
        _check(o.WARMUP_MULTIPLIER >= 1, f"OPTIM.WARMUP_MULTIPLIER = {o.WARMUP_MULTIPLIER} must be >= 1")
        t_max = o.NUM_EPOCHS - o.WARMUP_EPOCHS + o.T_MAX_EXTRA
        _check(t_max >= 1, f"cosine T_max = NUM_EPOCHS - WARMUP_EPOCHS + T_MAX_EXTRA = {o.NUM_EPOCHS} - "
               f"{o.WARMUP_EPOCHS} + {o.T_MAX_EXTRA} = {t_max} must be >= 1")
    if o.SCHEDULE == "multistep":
        _check(list(o.MILESTONES) == sorted(set(o.MILESTONES)) and all(x > 0 for x in o.MILESTONES),
               f"OPTIM.MILESTONES = {list(o.MILESTONES)} must be increasing positive epochs")
        _check(0 < o.GAMMA <= 1, f"OPTIM.GAMMA = {o.GAMMA} must be in (0, 1]")
    _check(len(o.BETAS) == 2 and all(0 <= b < 1 for b in o.BETAS),
           f"OPTIM.BETAS = {list(o.BETAS)} must be two numbers in [0, 1)")
    _check(o.EPS > 0 and o.WEIGHT_DECAY >= 0, "OPTIM.EPS must be > 0 and OPTIM.WEIGHT_DECAY >= 0")

    _check(t.ACCUM_STEPS >= 1, f"TRAIN.ACCUM_STEPS = {t.ACCUM_STEPS} must be >= 1")
    _check(o.BATCH_SIZE % t.ACCUM_STEPS == 0,
           f"OPTIM.BATCH_SIZE = {o.BATCH_SIZE} is not divisible by TRAIN.ACCUM_STEPS = {t.ACCUM_STEPS}: "
           f"{o.BATCH_SIZE} / {t.ACCUM_STEPS} = {o.BATCH_SIZE / t.ACCUM_STEPS:g} samples per micro-batch; "
           f"choose ACCUM_STEPS among the divisors of {o.BATCH_SIZE}")
    _check(t.WORKERS >= 0, f"TRAIN.WORKERS = {t.WORKERS} must be >= 0")
    _check(t.AMP in AMP_MODES, f"TRAIN.AMP = {t.AMP!r}; choose one of {', '.join(AMP_MODES)}")
    _check(t.ADAM in ADAM_KINDS, f"TRAIN.ADAM = {t.ADAM!r}; choose one of {', '.join(ADAM_KINDS)}")
    _check(t.SPEED in SPEEDS, f"TRAIN.SPEED = {t.SPEED!r}; choose one of {', '.join(SPEEDS)}")
    hand_picked = [k for k, default in (("AMP", "none"), ("CHANNELS_LAST", False), ("COMPILE", False),
                                        ("ADAM", "loop"), ("FAST_MERGE", False)) if t[k] != default]
    _check(t.SPEED != "fast" or not hand_picked,
           f"TRAIN.SPEED = fast chooses the speed options itself, but TRAIN.{', TRAIN.'.join(hand_picked)} "
           f"{'is' if len(hand_picked) == 1 else 'are'} also set; drop them, or set TRAIN.SPEED published")
    _check(t.SAVE_EVERY >= 0 and t.KEEP_LAST_K >= 0, "TRAIN.SAVE_EVERY and TRAIN.KEEP_LAST_K must be >= 0")
    _check(t.STOP_AT_EPOCH >= 0, f"TRAIN.STOP_AT_EPOCH = {t.STOP_AT_EPOCH} must be >= 0")
    _check(t.PRINT_EVERY >= 0, f"TRAIN.PRINT_EVERY = {t.PRINT_EVERY} must be >= 0")
    _check(t.SNAPSHOT_MINUTES >= 0 and t.SNAPSHOT_EVERY_STEPS >= 0,
           f"TRAIN.SNAPSHOT_MINUTES = {t.SNAPSHOT_MINUTES} and TRAIN.SNAPSHOT_EVERY_STEPS = "
           f"{t.SNAPSHOT_EVERY_STEPS} must be >= 0 (0 turns that trigger off)")
    _check(t.STOP_GRACE_SECONDS > 0, f"TRAIN.STOP_GRACE_SECONDS = {t.STOP_GRACE_SECONDS} must be > 0; "
           f"set it below the scheduler's grace period (SLURM --signal=TERM@120: e.g. 100)")

    _check(d.LENGTH_MULTIPLIER >= 1, f"DATA.LENGTH_MULTIPLIER = {d.LENGTH_MULTIPLIER} must be >= 1")
    _check(d.MIXUP_FROM_EPOCH >= 0 and d.MIXUP_ALPHA > 0, "DATA.MIXUP_FROM_EPOCH must be >= 0 and "
           "DATA.MIXUP_ALPHA > 0")
    _check(bool(d.TRAIN_DIR), "DATA.TRAIN_DIR is empty; name the training set folder")

    _check(v.EVERY >= 0 and v.EVERY_EPOCH_FROM >= 0, "VAL.EVERY and VAL.EVERY_EPOCH_FROM must be >= 0")
    _check(all(e >= 1 for e in v.EPOCHS), f"VAL.EPOCHS = {list(v.EPOCHS)} must be epochs >= 1")
    _check(v.PER_EPOCH >= 1, f"VAL.PER_EPOCH = {v.PER_EPOCH} must be >= 1")
    _check(v.CROP >= 0 and v.BATCH_SIZE >= 1, "VAL.CROP must be >= 0 and VAL.BATCH_SIZE >= 1")

    _check(loss.EDGE_WEIGHT >= 0 and loss.CHARBONNIER_EPS > 0,
           "LOSS.EDGE_WEIGHT must be >= 0 and LOSS.CHARBONNIER_EPS > 0")
    weights = list(loss.STAGE_WEIGHTS)
    _check(not weights or (len(weights) == 7 and min(weights) >= 0 and weights[0] > 0),
           f"LOSS.STAGE_WEIGHTS = {weights}; give 7 weights >= 0, final stage first and positive (or [] for "
           f"the published equal weights)")
    _check(loss.CLAMP or m.TASK not in ("denoising", "cs"),
           f"LOSS.CLAMP = False, but the published {m.TASK} objective always clamps outputs to [0, 1]")
    validate_degrade(cfg)


DEGRADE_TASKS = {"blur": "deblurring", "sr": "sr", "noise": "denoising"}
PADDINGS = ("circular", "reflect")
SR_KERNELS = ("bicubic", "blur")


def known_multiple(cfg: CN) -> int:
    """Side multiple of training patches and validation crops: 8 for the U-Net, times the SR scale
    when it does not divide 8 (the low-resolution side must be whole)."""
    scale = cfg.DEGRADE.SCALE if cfg.DEGRADE.KIND == "sr" else 1
    return math.lcm(8, scale)


def validate_degrade(cfg: CN) -> None:
    """The DEGRADE section: synthetic known-operator training (dgunet.data.synthetic)."""
    g, m = cfg.DEGRADE, cfg.MODEL
    gradient = m.GRADIENT
    if m.TASK == "sr":
        _check(g.KIND == "sr", f"MODEL.TASK = sr trains on synthetic degradations: set DEGRADE.KIND sr "
               f"(got {g.KIND!r})")
    if not g.KIND:
        _check(gradient == "learned", f"MODEL.GRADIENT = {gradient} needs a known operator: set "
               f"DEGRADE.KIND blur | sr | noise (the published paired data has none)")
        return
    _check(g.KIND in DEGRADE_TASKS, f"DEGRADE.KIND = {g.KIND!r}; choose blur, sr, noise (or empty)")
    _check(m.TASK == DEGRADE_TASKS[g.KIND], f"DEGRADE.KIND = {g.KIND} belongs to MODEL.TASK "
           f"{DEGRADE_TASKS[g.KIND]}, got MODEL.TASK = {m.TASK}")
    from dgunet.data.kernels import KERNEL_KINDS, MAX_KERNEL_SIZE  # no import cycle at module load

    bad = [k for k in g.KERNELS if k not in KERNEL_KINDS]
    _check(bool(g.KERNELS) and not bad, f"DEGRADE.KERNELS = {list(g.KERNELS)}; use one or more of "
           f"{', '.join(KERNEL_KINDS)}")
    _check(g.KERNEL_SIZE % 2 == 1 and 1 <= g.KERNEL_SIZE <= MAX_KERNEL_SIZE,
           f"DEGRADE.KERNEL_SIZE = {g.KERNEL_SIZE} must be odd and at most {MAX_KERNEL_SIZE}")
    lo_hi = list(g.KERNEL_SIGMA_RANGE)
    _check(len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1], f"DEGRADE.KERNEL_SIGMA_RANGE = {lo_hi} must be "
           f"[low, high] with 0 < low <= high (pixels)")
    _check(g.PADDING in PADDINGS, f"DEGRADE.PADDING = {g.PADDING!r}; choose one of {', '.join(PADDINGS)}")
    sig = list(g.SIGMA_RANGE)
    _check(len(sig) == 2 and 0 <= sig[0] <= sig[1] <= 1, f"DEGRADE.SIGMA_RANGE = {sig} must be [low, high] "
           f"with 0 <= low <= high <= 1 (noise std on [0, 1] images; 25/255 = 0.098)")
    _check(0 <= g.VAL_SIGMA <= 1, f"DEGRADE.VAL_SIGMA = {g.VAL_SIGMA} must be in [0, 1]")
    _check(g.SCALE in (2, 3, 4), f"DEGRADE.SCALE = {g.SCALE}; super-resolution supports 2, 3, 4")
    _check(g.SR_KERNEL in SR_KERNELS, f"DEGRADE.SR_KERNEL = {g.SR_KERNEL!r}; choose one of "
           f"{', '.join(SR_KERNELS)}")
    mult = known_multiple(cfg)
    _check(cfg.TRAIN.PATCH_SIZE % mult == 0, f"TRAIN.PATCH_SIZE = {cfg.TRAIN.PATCH_SIZE} must be a multiple "
           f"of {mult} (8 for the U-Net, and of DEGRADE.SCALE)")
    _check(cfg.VAL.CROP % mult == 0, f"VAL.CROP = {cfg.VAL.CROP} must be a multiple of {mult} (known "
           f"operators are never padded; 0: whole images cut to a multiple of {mult})")
    _check(cfg.DATA.MIXUP_FROM_EPOCH == 0, f"DATA.MIXUP_FROM_EPOCH = {cfg.DATA.MIXUP_FROM_EPOCH}: MixUp mixes "
           f"samples of different operators; set it to 0 with DEGRADE.KIND")


def canonical_arch(arch: str) -> str:
    """'DGUNet+', 'dgunet_plus' -> 'DGUNet_plus'."""
    key = arch.replace("+", "_plus").lower()
    return next(a for a in ARCHS if a.lower() == key)


def cosine_t_max(cfg: CN) -> int:
    return cfg.OPTIM.NUM_EPOCHS - cfg.OPTIM.WARMUP_EPOCHS + cfg.OPTIM.T_MAX_EXTRA


def resolve_path(cfg: CN, value: str) -> Path:
    """A config path: absolute as is, relative to TASK_DIR (or the current directory)."""
    path = Path(os.path.expanduser(value))
    if path.is_absolute() or not cfg.TASK_DIR:
        return path
    return Path(cfg.TASK_DIR) / path


def run_name(cfg: CN) -> str:
    if cfg.OUTPUT.NAME:
        return cfg.OUTPUT.NAME
    arch = canonical_arch(cfg.MODEL.ARCH)
    if cfg.MODEL.TASK == "cs":
        return f"{arch}_ratio{cfg.MODEL.CS_RATIO:g}_phase{cfg.TRAIN.PHASE}"
    return arch


def output_dir(cfg: CN) -> Path:
    """Where checkpoints, metrics.jsonl, curves.png and the resolved config go."""
    return resolve_path(cfg, cfg.OUTPUT.DIR) / run_name(cfg)


def with_updates(cfg: CN, **updates: Any) -> CN:
    """A frozen copy of `cfg` with dotted keys replaced: with_updates(cfg, **{"TRAIN.RESUME": True})."""
    new = cfg.clone()
    new.defrost()
    for dotted, value in updates.items():
        node = new
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = _coerce(value, node[leaf], dotted, "with_updates")
    validate(new)
    new.freeze()
    return new
