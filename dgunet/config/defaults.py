"""The default configuration, built section by section: the deblurring recipe of the paper.

Each task's `training.yml` restates every published value of its task (docs/training.md), so a yml
is a complete record of its recipe; these defaults fill the keys a yml leaves out.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN


def _model() -> CN:
    m = CN()
    m.TASK = "deblurring"  # a row of the task table (dgunet.tasks)
    m.ARCH = "DGUNet"
    # 0 keeps the published width of TASK/ARCH (dgunet.models.VARIANTS); tests shrink them.
    m.N_FEAT = 0
    m.SCALE_UNETFEATS = 0
    m.SCALE_ORSNETFEATS = 0
    m.CS_RATIO = 25.0  # percent; compressive sensing only
    # Gradient step of the image models: learned (published) | known | known+learned (the
    # degradation operator of each sample is given to the model; see dgunet/models/gradient.py).
    m.GRADIENT = "learned"
    # Known modes only: the model is told the noise level (op.noise_model.sigma) and sets its step
    # sizes and proximal features from it (dgunet.models.image.NoiseConditioning); adds noise_net.* keys.
    m.NOISE_AWARE = False
    # Known modes only: the start x0 of the unfolding (dgunet.models.start): adagger (the operator's
    # A_dagger, published) | hyperlaplacian (the tuned HQS solver, blur or noise) | nlm (noise).
    m.START = "adagger"
    # Image models: what the output head corrects (dgunet.models.image.HEADS): x0 (the start, published)
    # | stages (a learned per-pixel mix of the start and the 6 stage estimates; adds readout.* keys).
    m.HEAD = "x0"
    # Image models, known modes, noiseless operators: project the output onto A x = y at the end of the
    # forward (dgunet.models.image.DATA_CONSISTENCY; bicubic SR). Adds no parameters.
    m.DATA_CONSISTENCY = False
    # Compressive sensing sampling matrix: learned (published) | fixed (seeded Gaussian,
    # dgunet.physics.CompressedSensing with seed MODEL.PHI_SEED).
    m.PHI = "learned"
    m.PHI_SEED = 0
    return m


def _optim() -> CN:
    o = CN()
    o.BATCH_SIZE = 16  # the global batch: one optimizer step sees this many samples
    o.NUM_EPOCHS = 3000
    o.LR_INITIAL = 1e-4
    o.LR_MIN = 1e-6
    o.SCHEDULE = "cosine"  # cosine: warm-up then cosine; multistep; constant
    o.WARMUP_EPOCHS = 3
    o.WARMUP_MULTIPLIER = 1.0
    o.T_MAX_EXTRA = 0  # cosine T_max = NUM_EPOCHS - WARMUP_EPOCHS + T_MAX_EXTRA
    o.BETAS = [0.9, 0.999]
    o.EPS = 1e-8
    o.WEIGHT_DECAY = 0.0
    o.MILESTONES = [60, 120, 180, 240]  # multistep only
    o.GAMMA = 0.5  # multistep only
    return o


def _train() -> CN:
    t = CN()
    t.PATCH_SIZE = 256
    t.ACCUM_STEPS = 1  # micro-batch = BATCH_SIZE / (ACCUM_STEPS * world size)
    t.SEED = 1234
    t.WORKERS = 4  # DataLoader processes per training process
    t.AMP = "none"  # none | bf16 | fp16 (fp16 uses a gradient scaler)
    t.CHANNELS_LAST = False
    t.COMPILE = False
    t.ADAM = "loop"  # loop (published) | foreach | fused: Adam's kernel, same update
    t.FAST_MERGE = False  # solve-based merge projection (same function, faster)
    t.SPEED = "published"  # published: the keys above; fast: the fastest result-keeping preset
    t.CUDNN_BENCHMARK = True  # as published; False: no autotuning and cudnn.deterministic
    # (engine.distributed.set_cudnn), for bit-repeatable GPU runs on the same card
    t.RESUME = False
    t.INIT_FROM = ""  # weights to start from (CS phase 2: phase 1's net_best.pkl)
    t.PHASE = 1  # compressive sensing: 1 = 32x32 blocks, 2 = "deblock" on larger crops
    t.SAVE_EVERY = 1  # model_epoch_{e}.pth every this many epochs (0: never)
    t.KEEP_LAST_K = 10  # keep this many model_epoch_*.pth (0: all, as published)
    t.STOP_AT_EPOCH = 0  # stop after this epoch (chunked jobs; --resume goes on); 0: off
    t.PRINT_EVERY = 0  # also print a line every N steps (0: tqdm bar only)
    t.SNAPSHOT_MINUTES = 15.0  # resumable mid-epoch snapshot.pth this often (0: off)
    t.SNAPSHOT_EVERY_STEPS = 0  # ... and every N optimizer steps of an epoch (0: off; tests)
    t.STOP_GRACE_SECONDS = 60.0  # SIGTERM/SIGINT: finish the step, snapshot, exit within this
    return t


def _data() -> CN:
    d = CN()
    d.TRAIN_DIR = "Datasets/train"  # relative to TASK_DIR
    d.VAL_DIR = "Datasets/test/GoPro"  # empty: no validation
    d.SATURATION_AUG = True  # deblurring only in the paper
    d.LENGTH_MULTIPLIER = 1  # the training set repeated this many times per epoch
    d.DECODE_CACHE = ""  # folder: decode each training image once into .npy (same samples, faster)
    d.MIXUP_FROM_EPOCH = 0  # MixUp from this epoch on (denoising: 6); 0: off
    d.MIXUP_ALPHA = 0.6
    d.CROPS_PER_IMAGE = 200  # compressive sensing
    d.CACHE_DTYPE = "float32"  # compressive sensing: float32 | uint8
    return d


def _degrade() -> CN:
    """Synthetic degradations of clean images with a known operator (docs/known_tasks.md).

    KIND "" trains on the published paired folders; blur | sr | noise degrade DATA.TRAIN_DIR's
    clean images on the fly, seeded by (TRAIN.SEED, epoch, index), and give the model the operator.
    """
    g = CN()
    g.KIND = ""  # "" | blur (deblurring) | sr (sr) | noise (denoising): the task table's degrade_kind
    g.KERNELS = ["motion", "gaussian_iso", "gaussian_aniso"]  # drawn uniformly per sample
    g.KERNEL_SIZE = 25  # odd, <= 25; every kernel is padded to this size
    g.KERNEL_SIGMA_RANGE = [0.5, 3.0]  # Gaussian kernels: std in pixels
    g.PADDING = "circular"  # blur boundary: circular | reflect
    g.SIGMA_RANGE = [0.0, 0.03]  # noise std on [0, 1] images, uniform per sample
    g.VAL_SIGMA = 0.01  # fixed noise std of the validation images
    g.SCALE = 2  # sr: 2 | 3 | 4
    g.SR_KERNEL = "bicubic"  # sr: bicubic (MATLAB imresize) | blur (KERNELS, then decimation)
    return g


def _val() -> CN:
    v = CN()
    v.EVERY = 10  # validate after every epoch e with e % EVERY == 0 (0: off)
    v.EPOCHS = []  # ... and in these epochs
    v.EVERY_EPOCH_FROM = 0  # ... and in every epoch >= this (0: off)
    v.PER_EPOCH = 1  # validations inside a validating epoch, evenly spaced, last at its end
    v.CROP = 256  # center crop of each validation image (0: whole image)
    v.BATCH_SIZE = 16
    v.CS_TILE = 128  # compressive sensing: tiles of the published Set11 test
    return v


def _loss() -> CN:
    loss = CN()
    loss.EDGE_WEIGHT = 0.05
    loss.CHARBONNIER_EPS = 1e-3
    loss.CLAMP = False  # clamp outputs to [0, 1] before the loss (denoising, cs: always)
    # Weight of each of the 7 stage outputs in the loss, final first; [] = all 1 (published).
    loss.STAGE_WEIGHTS = []
    # MODEL.HEAD stages only: weight of the loss on mix + the head's correction without the gate (a
    # training-only output, no gradient into the mix; dgunet.models.image.REFINED); 0 = off.
    loss.CORRECTION_WEIGHT = 0.0
    return loss


def _output() -> CN:
    out = CN()
    out.DIR = "checkpoints"
    out.NAME = ""  # run folder inside DIR; empty: ARCH (CS: ARCH_ratio{r}_phase{p})
    out.TENSORBOARD = True  # when torch.utils.tensorboard imports
    return out


SECTIONS = {"MODEL": _model, "OPTIM": _optim, "TRAIN": _train, "DATA": _data, "DEGRADE": _degrade,
            "VAL": _val, "LOSS": _loss, "OUTPUT": _output}


def defaults() -> CN:
    """A fresh, mutable copy of the default configuration."""
    c = CN()
    # Folder that relative paths (data, output, init weights) resolve against; train.py sets
    # it to its own task folder, empty means the current directory.
    c.TASK_DIR = ""
    for name, section in SECTIONS.items():
        c[name] = section()
    return c
