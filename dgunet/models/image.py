"""DGUNet and DGUNet+ for deblurring, deraining and denoising.

Each of the 7 stages is one step of proximal gradient descent:
  gradient step (FGDM):  v = x - r * phi^T(phi(x) - y)        phi, phi^T learned ResBlocks
  proximal step (IPMM):  x = SAM(U-Net(merge(feat(v), previous SAM features)))
The last stage replaces the U-Net by a conv head and adds the degraded input back (or, `head="stages"`,
a learned per-pixel mix of the start and the stage estimates).

The gradient step has three modes (`gradient=`), see `dgunet.models.gradient`:
"learned" (published), "known" (x - (r/L) A^T(Ax - y), L = ||A^T A||, with the operator passed to
forward) and "known+learned" (the known gradient through a learned preconditioner). Every mode has
the same parameters and state-dict keys, so a published checkpoint initialises any of them.
`noise_aware=True` (known modes only) adds `noise_net` (NoiseConditioning): the noise level sets a
gain on every stage's step size and a shift of every stage's proximal features (formulation and why:
dgunet.models.gradient, and `NoiseConditioning` below). Without it the keys are the published ones.
`start=` (known modes only) chooses x0: A_dagger(y) as published, or a classical solver's estimate
(dgunet.models.start); it adds no parameters.
`head=` chooses what the last stage's conv head corrects: "x0" (published: the head adds onto the
start) or "stages" (a per-pixel convex mix of x0 and the 6 stage estimates, plus the correction
through a per-pixel gate, both read from the head's features by a small conv, `readout`; see HEADS
and `head_output`). "stages" adds the `readout.*` keys.
`data_consistency=True` (known modes, noiseless operators with `project`: bicubic SR) ends the
eval-mode forward by projecting the output onto {x : A x = y} (`data_consistent`); no parameters.

DGUNet shares one stage (`basic`) across stages 2..6; DGUNet+ gives every stage its own
weights. Attribute names are the published checkpoint keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dgunet.errors import ConfigError, PhysicsError
from dgunet.models.blocks import SAM, Decoder, Encoder, MergeBlock, ResBlock, conv, shallow_feat
from dgunet.models.gradient import GRADIENTS, Observation, gradient_step, observe
from dgunet.models.start import STARTS
from dgunet.physics.base import project

NUM_STAGES = 7
# What the output head adds its correction to. "x0" is published. A head on the start must learn the
# whole restoration that stages 1-6 already did, so at small budgets it lags behind them (measured:
# stage 3 0.25 dB above the output at 408 steps, denoising sigma 50). "stages": the head corrects a
# per-pixel convex mix of x0, x1..x6, so the output can take over whichever estimate is best where,
# and gates the correction, so it can back off where the correction hurts. (Correcting stage 6 alone
# was tried and lost 2 dB at sigma 15: x6 is poor until stages 1-6 train.)
HEADS = ("x0", "stages")
READOUT_PRIOR = 4.0  # initial logit of x0 against 0 for each stage: weight 0.9 on x0, as published
# Adam moves every parameter by about lr per step, so read-out logits at the network's lr would need
# thousands of steps to leave the prior (measured: at 408 steps the output stayed 0.23 dB below stage 6
# at sigma 50 with gain 1). The logits are READOUT_GAIN x the conv: 10x the rate for these few weights.
READOUT_GAIN = 10.0
# The gate closes within a few hundred steps where the young correction hurts, and a closed gate
# passes the correction almost no gradient, so it never matures: measured on the shipped stages
# models, gate 0.01-0.015 at 3,264 steps and the output the mix, within 0.01-0.02 dB of the best
# stage on held-out photos. So in training the head also records REFINED = mix (no gradient) +
# the ungated correction, which LOSS.CORRECTION_WEIGHT trains at full strength whatever the gate
# (only when `record_refined`; the trainer removes it once read, so no graph stays on the module).
# (Passing the correction the output's gradient straight through the gate instead was tried: the
# stages collapsed to 5 dB within 816 steps; it is a biased gradient that the shared stages exploit.)
REFINED = "refined"
# Data consistency (noiseless operators, eval mode): the output is projected onto {x : A x = y}. The
# true image lies in that affine set, so the projection is never farther from it than the head's
# estimate (Pythagoras), whatever the estimate: a gain that needs no training. Measured on SR x4
# (bicubic, 4 held-out photos): +0.02 to +0.10 dB on the output at every budget of a run, and 7 of its
# 8 late ties with stages 4-6 became leads. Why not in training too: a run trained through it ended
# 0.3 dB lower at 2,448 steps (the head learns only the null-space part, the stages lose the output's
# gradient on the rest). Noisy y would be fitted exactly, noise included, so noisy operators are refused.


@dataclass
class Carry:
    """What one stage hands to the next: SAM features and the U-Net's encoder/decoder maps."""

    feats: Tensor
    enc: list[Tensor]
    dec: list[Tensor]


def step_size() -> nn.Parameter:
    """A learned gradient step size r, initialised to 0.5 as published."""
    return nn.Parameter(torch.tensor([0.5]))


def proximal_step(v: Tensor, carry: Carry | None, shallow: nn.Module, merge: nn.Module | None,
                  encoder: Encoder, decoder: Decoder, sam: nn.Module, shift: Tensor | None = None
                  ) -> tuple[Tensor, Carry]:
    """IPMM: features of v (B,C,H,W), fused with the previous stage, through the U-Net and SAM.

    shift: (B,n,1,1) added to the shallow features (a noise-aware model's sigma-dependent bias: it
    tells the proximal network how noisy v is, without touching the published convolutions), or None.
    """
    feats = shifted(shallow(v), shift)
    if carry is None:
        skips, bottom = encoder(feats)
    else:
        feats = merge(feats, carry.feats)
        skips, bottom = encoder(feats, carry.enc, carry.dec)
    dec = decoder(bottom, skips)
    sam_feats, img = sam(dec[-1], v)
    return img, Carry(sam_feats, skips, dec)


def shifted(feats: Tensor, shift: Tensor | None) -> Tensor:
    return feats if shift is None else feats + shift


def scaled(r: Tensor, gain: Tensor | None) -> Tensor:
    """r times a noise-aware gain (B,1,1,1), or r itself."""
    return r if gain is None else r * gain


class NoiseConditioning(nn.Module):
    """USRNet-style hyper-network: noise level sigma (B,) -> per-stage step gains and feature shifts.

    forward(sigma) -> (gains (B,7) in (0,2), shifts (B,7,n,1,1)). sigma is in image units (sigma / sqrt(L),
    see dgunet.models.gradient), fed as sigma / SIGMA_UNIT. Why both outputs: the gain sets how far each
    gradient step trusts y (noisier y, shorter steps); the shift tells each proximal network how much
    noise is left to remove, which a step size alone cannot. Why this form: a few thousand parameters,
    the published convolutions untouched, and zero-initialised heads make it neutral at the start
    (gain 2*sigmoid(0) = 1, shift 0), so a trained known model is a valid initialisation.
    """

    SIGMA_UNIT = 0.1  # about 25/255: the inputs stay of order 1 over the usual 0..50/255

    def __init__(self, n_feat: int, stages: int = NUM_STAGES, hidden: int = 32):
        super().__init__()
        self.stages, self.n_feat = stages, n_feat
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.gain = nn.Linear(hidden, stages)
        self.shift = nn.Linear(hidden, stages * n_feat)
        for head in (self.gain, self.shift):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body((sigma.float() / self.SIGMA_UNIT)[:, None])
        gains = 2 * torch.sigmoid(self.gain(h))
        shifts = self.shift(h).reshape(-1, self.stages, self.n_feat, 1, 1)
        return gains, shifts


class _ImageUnfolding(nn.Module):
    """Common constructor arguments and helpers of the two image variants."""

    size_multiple = 8  # three 2x downsamplings
    min_size = 16  # the 1/8 bottom must keep 2+ pixels: instance norm needs more than one

    def __init__(self, in_c: int, out_c: int, n_feat: int, scale_unetfeats: int,
                 scale_orsnetfeats: int, kernel_size: int, reduction: int, bias: bool,
                 gradient: str = "learned", noise_aware: bool = False, start: str = "adagger",
                 head: str = "x0", data_consistency: bool = False):
        super().__init__()
        if gradient not in GRADIENTS:
            raise ConfigError(f"gradient={gradient!r}; choose one of {', '.join(GRADIENTS)}")
        if noise_aware and gradient == "learned":
            raise ConfigError("noise_aware=True needs a known operator: use gradient='known' or "
                              "'known+learned'")
        if start not in STARTS:
            raise ConfigError(f"start={start!r}; choose one of {', '.join(STARTS)}")
        if start != "adagger" and gradient == "learned":
            raise ConfigError(f"start={start!r} solves with the known operator: use gradient='known' or "
                              f"'known+learned'")
        if head not in HEADS:
            raise ConfigError(f"head={head!r}; choose one of {', '.join(HEADS)}")
        if data_consistency and gradient == "learned":
            raise ConfigError("data_consistency=True projects onto the known operator's A x = y: use "
                              "gradient='known' or 'known+learned'")
        self.data_consistency = data_consistency
        self.gradient, self.noise_aware, self.start, self.head = gradient, noise_aware, start, head
        self.record_refined = False  # set by a trainer whose loss reads REFINED (LOSS.CORRECTION_WEIGHT)
        self.in_c, self.out_c = in_c, out_c
        self.n_feat, self.scale_unetfeats, self.scale_orsnetfeats = n_feat, scale_unetfeats, scale_orsnetfeats
        self._kernel_size, self._reduction, self._bias = kernel_size, reduction, bias

    def _shallow(self, act: nn.Module) -> nn.Sequential:
        return shallow_feat(self.in_c, self.n_feat, self._kernel_size, self._reduction, self._bias, act)

    def _sam(self) -> SAM:
        return SAM(self.n_feat, self.out_c, kernel_size=1, bias=self._bias)

    def step_sizes(self) -> list[float]:
        """The 7 learned gradient step sizes r_k, stage 1 first."""
        raise NotImplementedError

    def _add_readout(self, channels: int) -> None:
        """Head "stages": a conv from the head's features (B,channels,H,W) to 7 mixing logits and
        one gate on the head's correction."""
        if self.head == "stages":
            self.readout = nn.Conv2d(channels, NUM_STAGES + 1, self._kernel_size,
                                     padding=self._kernel_size // 2, bias=True)
            nn.init.zeros_(self.readout.weight)  # the same mix everywhere until trained
            with torch.no_grad():
                self.readout.bias.zero_()
                self.readout.bias[0] = READOUT_PRIOR / READOUT_GAIN

    def head_output(self, obs: Observation, estimates: list[Tensor], feats: Tensor) -> Tensor:
        """The output from the head's features (B,C',H,W): x0 + tail(feats) (published), or
        sum_k w_k x_k + g * tail(feats) with w (B,7,H,W) a per-pixel softmax over x0, x1..x6 and
        g = 2 sigmoid (B,1,H,W) a gate on the correction, both READOUT_GAIN x readout(feats).
        Why the gate: at 408 steps the correction lowered the mix by 0.1 dB at sigma 50."""
        correction = self.tail(feats)
        if self.head == "x0":
            return correction + obs.x0
        logits = READOUT_GAIN * self.readout(feats).float()
        weights, gate = torch.softmax(logits[:, :NUM_STAGES], dim=1), 2 * torch.sigmoid(logits[:, NUM_STAGES:])
        # (B,7,C,H,W) in float32, whatever dtype autocast gave each estimate
        candidates = torch.stack([e.float() for e in (obs.x0, *estimates)], dim=1)
        mix = (weights.unsqueeze(2) * candidates).sum(dim=1)
        if self.training and self.record_refined:  # what LOSS.CORRECTION_WEIGHT scores; the trainer takes it
            setattr(self, REFINED, mix.detach() + correction.float())
        return (mix + gate * correction.float()).to(obs.x0.dtype)

    def final_output(self, obs: Observation, estimates: list[Tensor], feats: Tensor) -> Tensor:
        """Stage 7's output (B,C,H,W) from the head's features: `head_output`, then `data_consistent`."""
        return self.data_consistent(self.head_output(obs, estimates, feats), obs)

    def data_consistent(self, final: Tensor, obs: Observation) -> Tensor:
        """The output (B,C,H,W), projected onto {x : A x = y} when `data_consistency` is on and the
        model is in eval mode (see DATA_CONSISTENCY above); else itself."""
        if not self.data_consistency or self.training:
            return final
        sigma = getattr(getattr(obs.physics, "noise_model", None), "sigma", 0.0)
        if bool(torch.as_tensor(sigma).gt(0).any()):
            raise PhysicsError("this model projects its output onto A x = y (MODEL.DATA_CONSISTENCY), which "
                               "needs noiseless y, but the operator adds noise (sigma > 0): give sigma 0, or "
                               "set model.data_consistency = False")
        with torch.autocast(final.device.type, enabled=False):  # bf16 products would not land on A x = y
            return project(obs.physics, final.float(), obs.y.float()).to(final.dtype)

    def _add_noise_net(self) -> None:
        """Registered last, and only when enabled: the published keys and their order stay."""
        if self.noise_aware:
            self.noise_net = NoiseConditioning(self.n_feat)

    def observe(self, y: Tensor, physics=None, sigma=None) -> Observation:
        """y and the operator, checked, with the image-space start x0 (B,out_c,H,W), 1/L and sigma."""
        return observe(y, physics, self.gradient, self.min_size, self.size_multiple, sigma, self.noise_aware,
                       self.start)

    def conditions(self, obs: Observation) -> list[tuple[Tensor | None, Tensor | None]]:
        """Per stage (gain (B,1,1,1), shift (B,n,1,1)) of a noise-aware model; (None, None) otherwise."""
        if not self.noise_aware:
            return [(None, None)] * NUM_STAGES
        gains, shifts = self.noise_net(obs.sigma)
        return [(gains[:, k].reshape(-1, 1, 1, 1), shifts[:, k]) for k in range(NUM_STAGES)]


class SharedStage(nn.Module):
    """Stages 2..6 of DGUNet: one set of weights applied five times (published `basic`)."""

    def __init__(self, owner: _ImageUnfolding, resblock_act: nn.Module):
        super().__init__()
        n = owner.n_feat
        self.r1 = step_size()
        self.phi_1 = ResBlock(resblock_act)
        self.phit_1 = ResBlock(resblock_act)
        self.shallow_feat2 = owner._shallow(nn.PReLU())  # this block's own PReLU
        self.stage2_encoder = Encoder(n, owner.scale_unetfeats, csff="gated")
        self.stage2_decoder = Decoder(n, owner.scale_unetfeats)
        self.sam23 = owner._sam()
        self.concat12 = conv(2 * n, n, owner._kernel_size, owner._bias)  # published but never used
        self.merge12 = MergeBlock(n, 3, bias=True)

    def forward(self, x: Tensor, obs: Observation, carry: Carry, gain: Tensor | None = None,
                shift: Tensor | None = None) -> tuple[Tensor, Carry]:
        v = gradient_step(x, obs, scaled(self.r1, gain), self.phi_1, self.phit_1)
        return proximal_step(v, carry, self.shallow_feat2, self.merge12, self.stage2_encoder,
                             self.stage2_decoder, self.sam23, shift)


class DGUNet(_ImageUnfolding):
    """DGUNet: stage 1, the shared stage five times, stage 7.

    forward(y, physics=None, sigma=None) -> list of 7 (B,out_c,H,W), final first. Without an operator
    y is the degraded image (B,in_c,H,W), H and W multiples of 8; with one, y is its measurement;
    sigma (noise-aware models): the noise level of y, float or (B,), else op.noise_model.sigma.
    """

    def __init__(self, in_c: int = 3, out_c: int = 3, n_feat: int = 80, scale_unetfeats: int = 48,
                 scale_orsnetfeats: int = 32, kernel_size: int = 3, reduction: int = 4,
                 bias: bool = False, gradient: str = "learned", noise_aware: bool = False,
                 start: str = "adagger", head: str = "x0", data_consistency: bool = False):
        super().__init__(in_c, out_c, n_feat, scale_unetfeats, scale_orsnetfeats, kernel_size,
                         reduction, bias, gradient, noise_aware, start, head, data_consistency)
        n, s, o = n_feat, scale_unetfeats, scale_orsnetfeats
        resblock_act = nn.PReLU()  # one PReLU for every phi/phi^T (published quirk)
        act = nn.PReLU()  # one PReLU for this module's own CABs
        self.r0 = step_size()
        self.r6 = step_size()
        self.basic = SharedStage(self, resblock_act)
        self.shallow_feat1 = self._shallow(act)
        self.shallow_feat7 = self._shallow(act)
        self.stage1_encoder = Encoder(n, s, csff=None)
        self.stage1_decoder = Decoder(n, s)
        self.sam12 = self._sam()
        self.phi_0 = ResBlock(resblock_act)
        self.phit_0 = ResBlock(resblock_act)
        self.phi_6 = ResBlock(resblock_act)
        self.phit_6 = ResBlock(resblock_act)
        self.concat67 = conv(2 * n, n + o, kernel_size, bias)
        self.tail = conv(n + o, out_c, kernel_size, bias)
        self._add_readout(n + o)
        self._add_noise_net()

    def forward(self, y: Tensor, physics=None, sigma=None) -> list[Tensor]:
        return self.unfold(self.observe(y, physics, sigma))

    def unfold(self, obs: Observation) -> list[Tensor]:
        """The 7 stages from an observation (`observe`): forward's outputs, final first."""
        conditions = self.conditions(obs)
        gain, shift = conditions[0]
        v = gradient_step(obs.x0, obs, scaled(self.r0, gain), self.phi_0, self.phit_0)
        x, carry = proximal_step(v, None, self.shallow_feat1, None, self.stage1_encoder,
                                 self.stage1_decoder, self.sam12, shift)
        estimates = [x]
        for k in range(1, NUM_STAGES - 1):
            x, carry = self.basic(x, obs, carry, *conditions[k])
            estimates.append(x)
        gain, shift = conditions[-1]
        v = gradient_step(x, obs, scaled(self.r6, gain), self.phi_6, self.phit_6)
        feats = self.concat67(torch.cat([shifted(self.shallow_feat7(v), shift), carry.feats], dim=1))
        return [self.final_output(obs, estimates, feats), *reversed(estimates)]

    def step_sizes(self) -> list[float]:
        return [self.r0.item()] + [self.basic.r1.item()] * 5 + [self.r6.item()]


class DGUNetPlus(_ImageUnfolding):
    """DGUNet+: the same unfolding with separate weights in every stage.

    forward(y, physics=None, sigma=None) -> list of 7 (B,out_c,H,W), final first: as DGUNet's.
    """

    def __init__(self, in_c: int = 3, out_c: int = 3, n_feat: int = 80, scale_unetfeats: int = 48,
                 scale_orsnetfeats: int = 32, kernel_size: int = 3, reduction: int = 4,
                 bias: bool = False, gradient: str = "learned", noise_aware: bool = False,
                 start: str = "adagger", head: str = "x0", data_consistency: bool = False):
        super().__init__(in_c, out_c, n_feat, scale_unetfeats, scale_orsnetfeats, kernel_size,
                         reduction, bias, gradient, noise_aware, start, head, data_consistency)
        n, s = n_feat, scale_unetfeats
        resblock_act = nn.PReLU()
        act = nn.PReLU()
        # Registration order below reproduces the published state-dict key order.
        for k in range(NUM_STAGES):
            setattr(self, f"r{k}", step_size())
        for k in range(1, NUM_STAGES + 1):
            setattr(self, f"shallow_feat{k}", self._shallow(act))
        for k in range(NUM_STAGES):
            setattr(self, f"phi_{k}", ResBlock(resblock_act))
            setattr(self, f"phit_{k}", ResBlock(resblock_act))
        for k in range(1, NUM_STAGES):
            setattr(self, f"stage{k}_encoder", Encoder(n, s, csff=None if k == 1 else "gated"))
            setattr(self, f"stage{k}_decoder", Decoder(n, s))
        for k in range(1, NUM_STAGES):
            setattr(self, f"sam{k}{k + 1}", self._sam())
            setattr(self, f"merge{k}{k + 1}", MergeBlock(n, 3, bias=True))
        self.tail = conv(n, out_c, kernel_size, bias)
        self._add_readout(n)
        self._add_noise_net()

    def forward(self, y: Tensor, physics=None, sigma=None) -> list[Tensor]:
        return self.unfold(self.observe(y, physics, sigma))

    def unfold(self, obs: Observation) -> list[Tensor]:
        """The 7 stages from an observation (`observe`): forward's outputs, final first."""
        conditions = self.conditions(obs)
        x, carry, estimates = obs.x0, None, []
        for k in range(1, NUM_STAGES):
            gain, shift = conditions[k - 1]
            v = gradient_step(x, obs, scaled(getattr(self, f"r{k - 1}"), gain), getattr(self, f"phi_{k - 1}"),
                              getattr(self, f"phit_{k - 1}"))
            merge = getattr(self, f"merge{k - 1}{k}") if k > 1 else None
            x, carry = proximal_step(v, carry, getattr(self, f"shallow_feat{k}"), merge,
                                     getattr(self, f"stage{k}_encoder"),
                                     getattr(self, f"stage{k}_decoder"), getattr(self, f"sam{k}{k + 1}"), shift)
            estimates.append(x)
        gain, shift = conditions[-1]
        v = gradient_step(x, obs, scaled(self.r6, gain), self.phi_6, self.phit_6)
        feats = self.merge67(shifted(self.shallow_feat7(v), shift), carry.feats)
        return [self.final_output(obs, estimates, feats), *reversed(estimates)]

    def step_sizes(self) -> list[float]:
        return [getattr(self, f"r{k}").item() for k in range(NUM_STAGES)]
