"""DGUNet and DGUNet+ for block compressive sensing (known, learned sampling matrix Phi).

`phi="fixed"` replaces the learned matrix by the seeded one of `dgunet.physics.CompressedSensing`
(Gaussian with orthonormal rows, Phi Phi^T = I: the classic CS setting of ISTA-Net), frozen.

The model takes the clean image, samples every 32x32 block with Phi (m x 1024) and
reconstructs it. With the sampling known, the gradient step is exact:
  learned Phi   v = x - r * x Phi^T Phi + r * Phi^T b          (published, on rows of 1024 block pixels)
  fixed Phi     v = x - (r / L) * (x Phi^T Phi - Phi^T b)      L = ||Phi^T Phi||
The fixed step is relative to the operator as in the image models (dgunet.models.gradient): with
orthonormal rows L = 1, so both read the same; dividing keeps a fixed matrix of another scale stable.
A learned Phi keeps the published step bit for bit (its scale is learned together with r).
The measurement count and the block layout (image_to_blocks, blocks_to_image) are
dgunet.physics.cs's, imported here: one rule for the model and the operator.
A 32x32 input is a single block (the published first training phase); larger inputs are
cut into blocks (the published "deblock" phase). One model serves both.

`start="tv"` (fixed Phi only) starts the stages from the classical FISTA-TV reconstruction of the
measurements (dgunet.baselines.tv_compressed_sensing, lam tuned on training photos) instead of the
published Phi^T b, as `start=` does for the image models (dgunet.models.start): the stages refine the
best classical estimate. It needs a tuned ratio (10, 25 or 50%) and adds no parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dgunet.errors import ConfigError
from dgunet.models.blocks import Decoder, Encoder, GatedSAM, ResBlock, conv, shallow_feat
from dgunet.models.image import NUM_STAGES, step_size
from dgunet.physics.cs import blocks_to_image, image_to_blocks, num_rows, sampling_matrix

BLOCK = 32
CS_RATIOS = (1, 4, 10, 25, 30, 40, 50)


def num_measurements(cs_ratio: float) -> int:
    """m = ceil(ratio/100 * 1024): 1% -> 11, 10% -> 103, 25% -> 256, 50% -> 512.

    The rule is physics.cs.num_rows's; this only converts the published percent. It equals the
    published ceil(cs_ratio * 1024 / 100) on every ratio of a 0.001% grid (tests/test_physics.py),
    so the Phi shapes of published checkpoints do not change.
    """
    return num_rows(cs_ratio / 100, BLOCK)


class Measurements:
    """Phi^T Phi and Phi^T b of one batch, computed once and reused by all 7 stages.

    step_scale: None for the published step with a learned Phi, else 1/L (fixed Phi).
    """

    def __init__(self, phi: Tensor, img: Tensor, step_scale: float | None = None):
        self.shape = img.shape
        rows = image_to_blocks(img)
        self.phit_b = (rows @ phi.t()) @ phi  # (N,1024)
        self.phit_phi = phi.t() @ phi  # (1024,1024)
        self.step_scale = step_scale

    def gradient_step(self, x: Tensor, r: Tensor) -> Tensor:
        """x (B,1,H,W) -> v (B,1,H,W)."""
        rows = image_to_blocks(x)
        if self.step_scale is not None:
            r = r * self.step_scale
        v = rows - r * (rows @ self.phit_phi) + r * self.phit_b
        return blocks_to_image(v, self.shape)


class CSStage(nn.Module):
    """One middle stage (published `MPRBlock`). It also owns `phi`/`phit` ResBlocks that the
    published model never calls; they are kept so that checkpoints load strictly."""

    def __init__(self, n_feat: int, scale_unetfeats: int, in_c: int, kernel_size: int,
                 reduction: int, bias: bool, resblock_act: nn.Module):
        super().__init__()
        self.r = step_size()
        self.shallow_feat = shallow_feat(in_c, n_feat, kernel_size, reduction, bias, nn.PReLU())
        self.stage_encoder = Encoder(n_feat, scale_unetfeats, csff="additive")
        self.stage_decoder = Decoder(n_feat, scale_unetfeats)
        self.sam = GatedSAM(n_feat, in_c, 1, bias)
        self.phi = ResBlock(resblock_act)
        self.phit = ResBlock(resblock_act)
        self.concat = conv(2 * n_feat, n_feat, kernel_size, bias)

    def forward(self, x: Tensor, meas: Measurements, feats: Tensor, enc: list[Tensor],
                dec: list[Tensor]):
        v = meas.gradient_step(x, self.r)
        f = self.concat(torch.cat([self.shallow_feat(v), feats], dim=1))
        skips, bottom = self.stage_encoder(f, enc, dec)
        dec = self.stage_decoder(bottom, skips)
        feats, img = self.sam(dec[-1], v)
        return img, feats, skips, dec


CS_STARTS = ("adagger", "tv")


def check_cs_start(start: str, phi: str, cs_ratio: float) -> None:
    """ConfigError unless `start` applies: "tv" needs the fixed Phi and a ratio TV is tuned for."""
    from dgunet.baselines import tv_cs_weight

    if start not in CS_STARTS:
        raise ConfigError(f"start={start!r} for compressive sensing; choose one of {', '.join(CS_STARTS)}")
    if start == "tv" and phi != "fixed":
        raise ConfigError("start='tv' reconstructs with the fixed sampling matrix: use phi='fixed' (MODEL.PHI "
                          "fixed), or start='adagger' with a learned Phi")
    if start == "tv":
        tv_cs_weight(cs_ratio)  # refuses a ratio the TV weight is not tuned for


class _CSUnfolding(nn.Module):
    size_multiple = BLOCK
    shared = True

    def __init__(self, in_c: int = 1, out_c: int = 1, cs_ratio: float = 25, n_feat: int = 32,
                 scale_unetfeats: int = 16, scale_orsnetfeats: int = 16, kernel_size: int = 3,
                 reduction: int = 4, bias: bool = False, phi: str = "learned", phi_seed: int = 0,
                 start: str = "adagger"):
        super().__init__()
        if in_c != 1 or out_c != 1:
            raise ConfigError("the CS model reconstructs one channel: in_c = out_c = 1")
        if phi not in ("learned", "fixed"):
            raise ConfigError(f"phi={phi!r}; choose 'learned' (published) or 'fixed'")
        check_cs_start(start, phi, cs_ratio)
        self.start, self.phi_seed = start, phi_seed
        self._tv_operator: dict = {}  # device -> physics.CompressedSensing (a dict: no state-dict keys)
        n, s, o = n_feat, scale_unetfeats, scale_orsnetfeats
        self.in_c, self.out_c, self.cs_ratio, self.phi_mode = in_c, out_c, cs_ratio, phi
        self.step_scale: float | None = None  # 1/L of a fixed Phi; None: the published learned step
        self.n_feat, self.scale_unetfeats, self.scale_orsnetfeats = n, s, o
        self.Phi = nn.Parameter(nn.init.xavier_normal_(torch.empty(num_measurements(cs_ratio), BLOCK**2)))
        if phi == "fixed":
            self._fix_sampling(phi_seed)
            # Loading weights (TRAIN.INIT_FROM, a published checkpoint) must not swap in a learned
            # matrix under the key `Phi`: the seeded one is put back after every load.
            self.register_load_state_dict_post_hook(lambda module, _keys: module._fix_sampling(phi_seed))
        self.r0 = step_size()
        self.r_final = step_size()
        act = nn.PReLU()
        resblock_act = nn.PReLU()
        self.shallow_feat1 = shallow_feat(in_c, n, kernel_size, reduction, bias, act)

        def stage() -> CSStage:
            return CSStage(n, s, in_c, kernel_size, reduction, bias, resblock_act)

        if self.shared:
            self.stage_model = stage()
        else:
            self.body = nn.ModuleList(stage() for _ in range(NUM_STAGES - 2))
        self.shallow_feat_final = shallow_feat(in_c, n, kernel_size, reduction, bias, act)
        # Stage 1's encoder owns CSFF convs too, although it never has a previous stage.
        self.stage1_encoder = Encoder(n, s, csff="additive")
        self.stage1_decoder = Decoder(n, s)
        self.sam12 = GatedSAM(n, in_c, 1, bias)
        self.concat_final = conv(2 * n, n + o, kernel_size, bias)
        self.tail = conv(n + o, out_c, kernel_size, bias)

    def _fix_sampling(self, seed: int) -> None:
        """Phi := the seeded Gaussian matrix of physics.CompressedSensing, never trained.

        It stays the parameter `Phi` (frozen) so that state-dict keys match the published ones.
        """
        matrix = sampling_matrix(self.cs_ratio / 100, block=BLOCK, seed=seed)
        if matrix.shape != self.Phi.shape:
            raise ConfigError(f"CompressedSensing({self.cs_ratio / 100:g}) has {matrix.shape[0]} rows; the "
                              f"model samples {self.Phi.shape[0]} per block")
        with torch.no_grad():
            self.Phi.copy_(matrix)
        self.Phi.requires_grad_(False)
        self.step_scale = 1.0 / float(torch.linalg.matrix_norm(matrix.double(), ord=2)) ** 2

    def _middle_stages(self) -> list[CSStage]:
        return [self.stage_model] * (NUM_STAGES - 2) if self.shared else list(self.body)

    def start_estimate(self, img: Tensor, meas: Measurements) -> Tensor:
        """x0 (B,1,H,W): Phi^T b (published), or FISTA-TV from the same measurements (`start="tv"`)."""
        if self.start == "adagger":
            return blocks_to_image(meas.phit_b, img.shape)
        from dgunet.baselines import tv_compressed_sensing
        from dgunet.physics import CompressedSensing

        op = self._tv_operator.get(img.device)
        if op is None:  # the same seeded matrix as Phi (phi="fixed")
            op = CompressedSensing(self.cs_ratio / 100, BLOCK, self.phi_seed).to(img.device)
            self._tv_operator[img.device] = op
        with torch.no_grad():  # a fixed function of the measurements: nothing to learn through
            return tv_compressed_sensing(op.A(img.detach()), op)

    def forward(self, img: Tensor) -> list[Tensor]:
        """img (B,1,H,W) in [0,1], H and W multiples of 32 -> 7 reconstructions, final first."""
        meas = Measurements(self.Phi, img, self.step_scale)
        v = meas.gradient_step(self.start_estimate(img, meas), self.r0)
        skips, bottom = self.stage1_encoder(self.shallow_feat1(v))
        dec = self.stage1_decoder(bottom, skips)
        feats, x = self.sam12(dec[-1], v)
        estimates = [x]
        for stage in self._middle_stages():
            x, feats, skips, dec = stage(x, meas, feats, skips, dec)
            estimates.append(x)
        v = meas.gradient_step(x, self.r_final)
        f = self.concat_final(torch.cat([self.shallow_feat_final(v), feats], dim=1))
        final = self.tail(f) + v  # published: + v, not + the input
        return [final, *reversed(estimates)]

    def step_sizes(self) -> list[float]:
        middle = [stage.r.item() for stage in self._middle_stages()]
        return [self.r0.item(), *middle, self.r_final.item()]


class CSDGUNet(_CSUnfolding):
    """CS DGUNet: stages 2..6 share one `stage_model`."""

    shared = True


class CSDGUNetPlus(_CSUnfolding):
    """CS DGUNet+: stages 2..6 are `body.0` .. `body.4`, each with its own weights."""

    shared = False
