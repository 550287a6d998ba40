"""Validation of a merged configuration, one function per section; ConfigError names the key.

The names of tasks, gradient modes and archs come from their owners: the task table (dgunet.tasks),
dgunet.models.gradient and dgunet.models.registry.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN

from dgunet import tasks
from dgunet.errors import ConfigError, DGUNetError
from dgunet.models.cs import CS_STARTS
from dgunet.models.gradient import GRADIENTS
from dgunet.models.image import HEADS
from dgunet.models.registry import normalize_arch
from dgunet.models.start import STARTS

SCHEDULES = ("cosine", "multistep", "constant")
AMP_MODES = ("none", "bf16", "fp16")
ADAM_KINDS = ("loop", "foreach", "fused")
SPEEDS = ("published", "fast")
PADDINGS = ("circular", "reflect")
SR_KERNELS = ("bicubic", "blur")
# The speed keys TRAIN.SPEED fast chooses itself, with their published values.
HAND_PICKED_SPEED = (("AMP", "none"), ("CHANNELS_LAST", False), ("COMPILE", False), ("ADAM", "loop"),
                     ("FAST_MERGE", False))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _one_of(value: str, choices: tuple[str, ...], key: str) -> None:
    _check(value in choices, f"{key} = {value!r}; choose one of {', '.join(choices)}")


def validate(cfg: CN) -> None:
    """Raise ConfigError for values that cannot work; the message names the key."""
    _validate_model(cfg.MODEL)
    task = tasks.get_task(cfg.MODEL.TASK)
    (_validate_cs_sizes if task.is_cs else _validate_image_sizes)(cfg)
    _check(cfg.TRAIN.PATCH_SIZE > 0, f"TRAIN.PATCH_SIZE = {cfg.TRAIN.PATCH_SIZE} must be positive")
    _validate_optim(cfg.OPTIM)
    _validate_train(cfg.TRAIN, cfg.OPTIM.BATCH_SIZE)
    _validate_data(cfg.DATA)
    _validate_val(cfg.VAL)
    _validate_loss(cfg.LOSS, task)
    _check(not cfg.LOSS.CORRECTION_WEIGHT or cfg.MODEL.HEAD == "stages", f"LOSS.CORRECTION_WEIGHT = "
           f"{cfg.LOSS.CORRECTION_WEIGHT} trains the stages head's correction: set MODEL.HEAD stages, or 0")
    validate_degrade(cfg)
    if cfg.MODEL.DATA_CONSISTENCY:
        d = cfg.DEGRADE
        noiseless_bicubic = d.KIND == "sr" and d.SR_KERNEL == "bicubic" and max(d.SIGMA_RANGE) == 0
        _check(noiseless_bicubic, f"MODEL.DATA_CONSISTENCY fits y exactly: it needs noiseless bicubic SR "
               f"(DEGRADE.KIND sr, SR_KERNEL bicubic, SIGMA_RANGE [0, 0]), not KIND {d.KIND}, SR_KERNEL "
               f"{d.SR_KERNEL}, SIGMA_RANGE {list(d.SIGMA_RANGE)}; or set it false")


def _validate_model(m: CN) -> None:
    _one_of(m.TASK, tasks.TASK_NAMES, "MODEL.TASK")  # read at call time: a registered task counts
    try:
        normalize_arch(m.ARCH)
    except (ValueError, DGUNetError):
        raise ConfigError(f"MODEL.ARCH = {m.ARCH!r}; choose DGUNet or DGUNet_plus") from None
    _one_of(m.GRADIENT, GRADIENTS, "MODEL.GRADIENT")
    _check(m.GRADIENT == "learned" or not tasks.get_task(m.TASK).is_cs, "MODEL.GRADIENT applies to the image "
           "tasks; compressive sensing always knows its sampling: choose it with MODEL.PHI learned | fixed")
    _check(m.PHI in ("learned", "fixed"), f"MODEL.PHI = {m.PHI!r}; choose learned or fixed")
    _check(not m.NOISE_AWARE or m.GRADIENT != "learned", "MODEL.NOISE_AWARE needs a known operator: set "
           "MODEL.GRADIENT known or known+learned (with DEGRADE.KIND blur | sr | noise)")
    _check(not m.DATA_CONSISTENCY or m.GRADIENT != "learned", "MODEL.DATA_CONSISTENCY projects onto the known "
           "operator's A x = y: set MODEL.GRADIENT known or known+learned, or MODEL.DATA_CONSISTENCY false")
    if tasks.get_task(m.TASK).is_cs:
        _check(not m.DATA_CONSISTENCY, "MODEL.DATA_CONSISTENCY applies to the image models; set it false for "
               "compressive sensing")
        _check(m.HEAD == "x0", f"MODEL.HEAD {m.HEAD} applies to the image models; compressive sensing keeps "
               f"its published head: set MODEL.HEAD x0")
        _one_of(m.START, CS_STARTS, "MODEL.START")
        _check(m.START == "adagger" or m.PHI == "fixed", f"MODEL.START {m.START} reconstructs with the "
               f"fixed sampling matrix: set MODEL.PHI fixed, or MODEL.START adagger")
    else:
        _one_of(m.HEAD, HEADS, "MODEL.HEAD")
        _one_of(m.START, STARTS, "MODEL.START")
        _check(m.START == "adagger" or m.GRADIENT != "learned", f"MODEL.START {m.START} solves with the "
               f"known operator: set MODEL.GRADIENT known or known+learned, or MODEL.START adagger")
    for key in ("N_FEAT", "SCALE_UNETFEATS", "SCALE_ORSNETFEATS"):
        _check(m[key] >= 0, f"MODEL.{key} = {m[key]} must be >= 0 (0: the published width)")


def _validate_cs_sizes(cfg: CN) -> None:
    """Compressive sensing: a ratio, two phases, and sides that are whole 32x32 sampling blocks."""
    m, t, d, v = cfg.MODEL, cfg.TRAIN, cfg.DATA, cfg.VAL
    block = tasks.CS_BLOCK
    _check(0 < m.CS_RATIO <= 100, f"MODEL.CS_RATIO = {m.CS_RATIO} must be a percentage in (0, 100]")
    _check(t.PHASE in (1, 2), f"TRAIN.PHASE = {t.PHASE}; compressive sensing has phases 1 and 2")
    _check(t.PATCH_SIZE % block == 0, f"TRAIN.PATCH_SIZE = {t.PATCH_SIZE} must be a multiple of the "
           f"{block}x{block} sampling block for compressive sensing")
    _check(v.CS_TILE % block == 0 and v.CS_TILE > 0, f"VAL.CS_TILE = {v.CS_TILE} must be a positive "
           f"multiple of {block}")
    _check(d.CROPS_PER_IMAGE >= 1, f"DATA.CROPS_PER_IMAGE = {d.CROPS_PER_IMAGE} must be >= 1")
    _check(d.CACHE_DTYPE in ("float32", "uint8"), f"DATA.CACHE_DTYPE = {d.CACHE_DTYPE!r}; use float32 or uint8")


def _validate_image_sizes(cfg: CN) -> None:
    unet = tasks.UNET_MULTIPLE
    _check(cfg.TRAIN.PATCH_SIZE % unet == 0, f"TRAIN.PATCH_SIZE = {cfg.TRAIN.PATCH_SIZE} must be a multiple "
           f"of {unet} (the U-Net downsamples three times)")
    _check(cfg.VAL.CROP % unet == 0, f"VAL.CROP = {cfg.VAL.CROP} must be a multiple of {unet} (or 0 for "
           f"whole images)")


def _validate_optim(o: CN) -> None:
    _check(o.BATCH_SIZE >= 1, f"OPTIM.BATCH_SIZE = {o.BATCH_SIZE} must be >= 1")
    _check(o.NUM_EPOCHS >= 1, f"OPTIM.NUM_EPOCHS = {o.NUM_EPOCHS} must be >= 1")
    _check(o.LR_INITIAL > 0, f"OPTIM.LR_INITIAL = {o.LR_INITIAL} must be > 0")
    _check(0 <= o.LR_MIN <= o.LR_INITIAL, f"OPTIM.LR_MIN = {o.LR_MIN} must be in [0, LR_INITIAL]")
    _one_of(o.SCHEDULE, SCHEDULES, "OPTIM.SCHEDULE")
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


def _validate_train(t: CN, batch_size: int) -> None:
    _check(t.ACCUM_STEPS >= 1, f"TRAIN.ACCUM_STEPS = {t.ACCUM_STEPS} must be >= 1")
    _check(batch_size % t.ACCUM_STEPS == 0,
           f"OPTIM.BATCH_SIZE = {batch_size} is not divisible by TRAIN.ACCUM_STEPS = {t.ACCUM_STEPS}: "
           f"{batch_size} / {t.ACCUM_STEPS} = {batch_size / t.ACCUM_STEPS:g} samples per micro-batch; "
           f"choose ACCUM_STEPS among the divisors of {batch_size}")
    _check(t.WORKERS >= 0, f"TRAIN.WORKERS = {t.WORKERS} must be >= 0")
    _validate_speed(t)
    _check(t.SAVE_EVERY >= 0 and t.KEEP_LAST_K >= 0, "TRAIN.SAVE_EVERY and TRAIN.KEEP_LAST_K must be >= 0")
    _check(t.STOP_AT_EPOCH >= 0, f"TRAIN.STOP_AT_EPOCH = {t.STOP_AT_EPOCH} must be >= 0")
    _check(t.PRINT_EVERY >= 0, f"TRAIN.PRINT_EVERY = {t.PRINT_EVERY} must be >= 0")
    _check(t.SNAPSHOT_MINUTES >= 0 and t.SNAPSHOT_EVERY_STEPS >= 0,
           f"TRAIN.SNAPSHOT_MINUTES = {t.SNAPSHOT_MINUTES} and TRAIN.SNAPSHOT_EVERY_STEPS = "
           f"{t.SNAPSHOT_EVERY_STEPS} must be >= 0 (0 turns that trigger off)")
    _check(t.STOP_GRACE_SECONDS > 0, f"TRAIN.STOP_GRACE_SECONDS = {t.STOP_GRACE_SECONDS} must be > 0; "
           f"set it below the scheduler's grace period (SLURM --signal=TERM@120: e.g. 100)")


def _validate_speed(t: CN) -> None:
    """The speed keys: each known, and SPEED fast never combined with hand-picked ones."""
    _one_of(t.AMP, AMP_MODES, "TRAIN.AMP")
    _one_of(t.ADAM, ADAM_KINDS, "TRAIN.ADAM")
    _one_of(t.SPEED, SPEEDS, "TRAIN.SPEED")
    hand_picked = [key for key, published in HAND_PICKED_SPEED if t[key] != published]
    _check(t.SPEED != "fast" or not hand_picked,
           f"TRAIN.SPEED = fast chooses the speed options itself, but TRAIN.{', TRAIN.'.join(hand_picked)} "
           f"{'is' if len(hand_picked) == 1 else 'are'} also set; drop them, or set TRAIN.SPEED published")


def _validate_data(d: CN) -> None:
    _check(d.LENGTH_MULTIPLIER >= 1, f"DATA.LENGTH_MULTIPLIER = {d.LENGTH_MULTIPLIER} must be >= 1")
    _check(d.MIXUP_FROM_EPOCH >= 0 and d.MIXUP_ALPHA > 0, "DATA.MIXUP_FROM_EPOCH must be >= 0 and "
           "DATA.MIXUP_ALPHA > 0")
    _check(bool(d.TRAIN_DIR), "DATA.TRAIN_DIR is empty; name the training set folder")


def _validate_val(v: CN) -> None:
    _check(v.EVERY >= 0 and v.EVERY_EPOCH_FROM >= 0, "VAL.EVERY and VAL.EVERY_EPOCH_FROM must be >= 0")
    _check(all(e >= 1 for e in v.EPOCHS), f"VAL.EPOCHS = {list(v.EPOCHS)} must be epochs >= 1")
    _check(v.PER_EPOCH >= 1, f"VAL.PER_EPOCH = {v.PER_EPOCH} must be >= 1")
    _check(v.CROP >= 0 and v.BATCH_SIZE >= 1, "VAL.CROP must be >= 0 and VAL.BATCH_SIZE >= 1")


def _validate_loss(loss: CN, task: tasks.Task) -> None:
    _check(loss.EDGE_WEIGHT >= 0 and loss.CHARBONNIER_EPS > 0,
           "LOSS.EDGE_WEIGHT must be >= 0 and LOSS.CHARBONNIER_EPS > 0")
    weights = list(loss.STAGE_WEIGHTS)
    _check(not weights or (len(weights) == 7 and min(weights) >= 0 and weights[0] > 0),
           f"LOSS.STAGE_WEIGHTS = {weights}; give 7 weights >= 0, final stage first and positive (or [] for "
           f"the published equal weights)")
    _check(loss.CORRECTION_WEIGHT >= 0, f"LOSS.CORRECTION_WEIGHT = {loss.CORRECTION_WEIGHT} must be >= 0")
    _check(loss.CLAMP or not task.clamps_output,
           f"LOSS.CLAMP = False, but the published {task.name} objective always clamps outputs to [0, 1]")


def known_multiple(cfg: CN) -> int:
    """Side multiple of training patches and validation crops of known-operator training (lcm(8, scale))."""
    return tasks.patch_multiple(cfg.DEGRADE.SCALE if cfg.DEGRADE.KIND == "sr" else 1)


def validate_degrade(cfg: CN) -> None:
    """The DEGRADE section: synthetic known-operator training (dgunet.data.synthetic)."""
    g, m = cfg.DEGRADE, cfg.MODEL
    task = tasks.get_task(m.TASK)
    if task.data == tasks.SYNTHETIC:
        _check(g.KIND == task.degrade_kind, f"MODEL.TASK = {task.name} trains on synthetic degradations: set "
               f"DEGRADE.KIND {task.degrade_kind} (got {g.KIND!r})")
    if not g.KIND:
        _check(m.GRADIENT == "learned", f"MODEL.GRADIENT = {m.GRADIENT} needs a known operator: set "
               f"DEGRADE.KIND blur | sr | noise (the published paired data has none)")
        return
    kinds = tasks.DEGRADE_TASKS
    _check(g.KIND in kinds, f"DEGRADE.KIND = {g.KIND!r}; choose {', '.join(kinds)} (or empty)")
    _check(m.TASK == kinds[g.KIND], f"DEGRADE.KIND = {g.KIND} belongs to MODEL.TASK {kinds[g.KIND]}, "
           f"got MODEL.TASK = {m.TASK}")
    _validate_kernels(g)
    _validate_noise_and_scale(g)
    _validate_known_sizes(cfg)


def _validate_kernels(g: CN) -> None:
    from dgunet.data.kernels import KERNEL_KINDS, MAX_KERNEL_SIZE  # the data layer, only when needed

    bad = [k for k in g.KERNELS if k not in KERNEL_KINDS]
    _check(bool(g.KERNELS) and not bad, f"DEGRADE.KERNELS = {list(g.KERNELS)}; use one or more of "
           f"{', '.join(KERNEL_KINDS)}")
    _check(g.KERNEL_SIZE % 2 == 1 and 1 <= g.KERNEL_SIZE <= MAX_KERNEL_SIZE,
           f"DEGRADE.KERNEL_SIZE = {g.KERNEL_SIZE} must be odd and at most {MAX_KERNEL_SIZE}")
    lo_hi = list(g.KERNEL_SIGMA_RANGE)
    _check(len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1], f"DEGRADE.KERNEL_SIGMA_RANGE = {lo_hi} must be "
           f"[low, high] with 0 < low <= high (pixels)")
    _one_of(g.PADDING, PADDINGS, "DEGRADE.PADDING")


def _validate_noise_and_scale(g: CN) -> None:
    sig = list(g.SIGMA_RANGE)
    _check(len(sig) == 2 and 0 <= sig[0] <= sig[1] <= 1, f"DEGRADE.SIGMA_RANGE = {sig} must be [low, high] "
           f"with 0 <= low <= high <= 1 (noise std on [0, 1] images; 25/255 = 0.098)")
    _check(0 <= g.VAL_SIGMA <= 1, f"DEGRADE.VAL_SIGMA = {g.VAL_SIGMA} must be in [0, 1]")
    _check(g.SCALE in (2, 3, 4), f"DEGRADE.SCALE = {g.SCALE}; super-resolution supports 2, 3, 4")
    _one_of(g.SR_KERNEL, SR_KERNELS, "DEGRADE.SR_KERNEL")


def _validate_known_sizes(cfg: CN) -> None:
    """Known operators are never padded: patches and crops are whole multiples of lcm(8, scale)."""
    mult = known_multiple(cfg)
    _check(cfg.TRAIN.PATCH_SIZE % mult == 0, f"TRAIN.PATCH_SIZE = {cfg.TRAIN.PATCH_SIZE} must be a multiple "
           f"of {mult} (8 for the U-Net, and of DEGRADE.SCALE)")
    _check(cfg.VAL.CROP % mult == 0, f"VAL.CROP = {cfg.VAL.CROP} must be a multiple of {mult} (known "
           f"operators are never padded; 0: whole images cut to a multiple of {mult})")
    _check(cfg.DATA.MIXUP_FROM_EPOCH == 0, f"DATA.MIXUP_FROM_EPOCH = {cfg.DATA.MIXUP_FROM_EPOCH}: MixUp mixes "
           f"samples of different operators; set it to 0 with DEGRADE.KIND")
