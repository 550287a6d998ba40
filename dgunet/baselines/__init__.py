"""Classical baselines of the known-operator protocols, as "methods" `(y, op, params) -> x`.

Each is a `--method` of the known test protocols (dgunet.testrun.known) and a row of
scripts/known_degradation.py, so a table puts them next to DGUNet. `params` is what the protocol
made: {"kernel": (B,K,K), "sigma": (B,), "scale": int, "clean": (B,C,H,W) ground truth}; only the
oracle reads "clean" (it is labelled so).

  adagger         the operator's A_dagger(y) with its rule: for Blur the gradient-regularised
                  inverse, eps = dagger_eps + dagger_noise_gain * sigma^2 (physics.Blur); for
                  denoising y itself; for SR bicubic upsampling
  adagger-oracle  the same family, eps chosen per image on the ground truth (log grid, then
                  golden-section): the best any filter of the family can do. Not a method one
                  can run without the answer: an upper bound of the linear family
  hyperlaplacian  Krishnan & Fergus's hyper-Laplacian prior (alpha 2/3) by half-quadratic
                  splitting with the true kernel (identity for denoising), lam(sigma) tuned on
                  training photos (dgunet.baselines.tuned, scripts/tune_baselines.py)
  nlm             denoising: scikit-image's non-local means, h = NLM_H_FACTOR * sigma (tuned)
  wiener-flat     Wiener with a flat signal spectrum (dgunet.baselines.linear): weak on photos
  wiener          deprecated alias of wiener-flat
  bicubic         SR: MATLAB imresize(y, s), the Bicubic row

Compressive sensing has no known-operator protocol (its test sets are the published ones), so its
classical solver is a function, not a `--method`: `tv_compressed_sensing(y, op)`, FISTA with a
total-variation prior (dgunet.baselines.tv), lam tuned on training photos per ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from dgunet.baselines import tuned
from dgunet.baselines.hqs import hyper_laplacian_deconvolve
from dgunet.baselines.linear import (
    QUANTISATION_VAR,
    oracle_eps,
    regularised_inverse,
    transfer_function,
    wiener_deconvolve,
    wiener_flat,
)
from dgunet.errors import ConfigError

Method = Callable[[Tensor, object, dict], Tensor]
DEPRECATED = {"wiener": "wiener-flat"}  # old name -> new name


def bicubic_upsample(y: Tensor, scale: int) -> Tensor:
    """y (B,C,h,w) -> (B,C,h*scale,w*scale) by MATLAB-style bicubic interpolation."""
    from dgunet.physics import Downsample

    return Downsample(scale, kernel="bicubic").A_dagger(y)


def hyper_laplacian_weight(sigma: float | Tensor, kind: str) -> Tensor:
    """lam of the hyper-Laplacian HQS for noise std `sigma` (on [0, 1]); kind "blur" or "noise"."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    sigma_eff = torch.sqrt(sigma**2 + QUANTISATION_VAR)
    return torch.exp(tuned.LOG_LAM[kind] + tuned.LAM_SLOPE[kind] * torch.log(sigma_eff))


def _same_size(name: str, params: dict) -> None:
    if params.get("scale", 1) != 1:
        raise ConfigError(f"the {name} baseline restores same-size images; use --method bicubic (or adagger) "
                          f"for super-resolution")


def _kind(params: dict) -> str:
    return "noise" if params["kernel"].shape[-1] == 1 else "blur"


def _adagger(y: Tensor, op, _params: dict) -> Tensor:
    return op.A_dagger(y)


def _oracle(y: Tensor, _op, params: dict) -> Tensor:
    _same_size("adagger-oracle", params)
    kernel = params["kernel"][:, None]
    return regularised_inverse(y, kernel, oracle_eps(y, kernel, params["clean"]))


def _hyper_laplacian(y: Tensor, _op, params: dict) -> Tensor:
    _same_size("hyperlaplacian", params)
    lam = hyper_laplacian_weight(params["sigma"], _kind(params))
    return hyper_laplacian_deconvolve(y, params["kernel"][:, None], lam)


def _nlm(y: Tensor, _op, params: dict) -> Tensor:
    from skimage.restoration import denoise_nl_means

    if _kind(params) != "noise" or params.get("scale", 1) != 1:
        raise ConfigError("the nlm baseline denoises; use --method hyperlaplacian or adagger for deblurring, "
                          "bicubic for super-resolution")
    out = []
    for image, sigma in zip(y.double().cpu().numpy(), params["sigma"].tolist(), strict=True):
        sigma_eff = math.sqrt(sigma**2 + QUANTISATION_VAR)
        hwc = np.moveaxis(image, 0, -1)
        gray = hwc.shape[-1] == 1
        den = denoise_nl_means(hwc[..., 0] if gray else hwc, h=tuned.NLM_H_FACTOR * sigma_eff,
                               sigma=sigma_eff, patch_size=5, patch_distance=6, fast_mode=True,
                               channel_axis=None if gray else -1)
        out.append(np.moveaxis(den[..., None] if gray else den, -1, 0))
    return torch.from_numpy(np.stack(out)).to(y.dtype)


def _wiener_flat(y: Tensor, _op, params: dict) -> Tensor:
    _same_size("wiener-flat", params)
    return wiener_flat(y, params["kernel"][:, None], params["sigma"])


def _bicubic(y: Tensor, _op, params: dict) -> Tensor:
    if params.get("scale", 1) == 1:
        raise ConfigError("the bicubic baseline upsamples; use --method hyperlaplacian, adagger or wiener-flat "
                          "for deblurring and denoising")
    return bicubic_upsample(y, params["scale"])


BASELINES: dict[str, Method] = {
    "adagger": _adagger, "adagger-oracle": _oracle, "hyperlaplacian": _hyper_laplacian, "nlm": _nlm,
    "wiener-flat": _wiener_flat, "wiener": _wiener_flat, "bicubic": _bicubic,
}
NEEDS_GROUND_TRUTH = ("adagger-oracle",)


def tv_cs_weight(percent: float) -> float:
    """lam of FISTA-TV for a CS ratio in percent (tuned.TV_CS_LAM); ConfigError for an untuned ratio."""
    if percent not in tuned.TV_CS_LAM:
        ratios = ", ".join(map(str, sorted(tuned.TV_CS_LAM)))
        raise ConfigError(f"the TV weight is tuned for CS ratios {ratios}%, not {percent:g}%: run "
                          f"scripts/tune_baselines.py --only tv-cs with CS_PERCENTS extended, or call "
                          f"dgunet.baselines.tv.tv_reconstruct(y, op, lam)")
    return tuned.TV_CS_LAM[percent]


def tv_compressed_sensing(y: Tensor, op) -> Tensor:
    """x (B,C,H,W) from block-CS measurements y of `op` (dgunet.physics.CompressedSensing) by FISTA-TV,
    lam = tv_cs_weight at the operator's ratio (tuned for 10, 25 and 50%)."""
    from dgunet.baselines.tv import tv_reconstruct

    return tv_reconstruct(y, op, tv_cs_weight(round(op.ratio * 100))).to(y.dtype)


__all__ = ["BASELINES", "DEPRECATED", "NEEDS_GROUND_TRUTH", "bicubic_upsample", "hyper_laplacian_weight",
           "oracle_eps", "regularised_inverse", "transfer_function", "tv_compressed_sensing", "tv_cs_weight",
           "wiener_deconvolve", "wiener_flat"]
