"""One picture per operator of dgunet.physics: x, y = A(x) + noise, A^T y and A_dagger y.

    python scripts/physics_figures.py                  # writes figs/physics_<operator>.png
    python scripts/physics_figures.py --out /tmp/figs

The clean image is a 256x256 crop of scikit-image's bundled "astronaut" photo. Panels are shown
in [0, 1] (noise just past 0 or 1 clipped), except A^T y and any panel far outside [0, 1]: those
are stretched to their own min..max (the adjoint of a downsampling is 1/f^2 as bright), and the
label says so. Compressed-sensing measurements are shown as one 16x16 tile of the 256
measurements per 32x32 block.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch
from PIL import Image  # matplotlib's own dependency

from dgunet import physics
from dgunet.atomic import atomic_open

REPO = Path(__file__).resolve().parents[1]


def clean_image() -> torch.Tensor:
    """(1,3,256,256) in [0,1]: the astronaut's face."""
    from skimage import data

    img = torch.from_numpy(data.astronaut()[0:256, 128:384].copy()).permute(2, 0, 1).float() / 255
    return img[None]


def motion_kernel(size: int = 25) -> torch.Tensor:
    """(size,size) diagonal line with a Gaussian profile across it, summing to 1."""
    t = torch.arange(size, dtype=torch.float32) - size // 2
    across = (t[:, None] - t[None, :]) / 2 ** 0.5  # distance from the diagonal
    along = (t[:, None] + t[None, :]) / 2 ** 0.5
    k = torch.exp(-0.5 * (across / 0.8) ** 2) * (along.abs() <= size // 3)
    return k / k.sum()


def cases(x: torch.Tensor) -> dict[str, tuple[str, object, torch.Tensor]]:
    """name -> (title, operator, the image it measures)."""
    gen = torch.Generator().manual_seed(0)
    noise = physics.GaussianNoise(0.02, generator=gen)
    mask = (torch.rand(1, 1, 256, 256, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    gray = x.mean(dim=1, keepdim=True)
    return {
        "identity": ("Identity + Gaussian noise (sigma 25/255)",
                     physics.Identity(physics.GaussianNoise(25 / 255, generator=gen)), x),
        "blur": ("Blur, 25x25 motion kernel, circular (FFT), sigma 0.02", physics.Blur(motion_kernel(),
                                                                                      noise_model=noise), x),
        "blur_valid": ("Blur, 25x25 motion kernel, valid", physics.Blur(motion_kernel(), padding="valid"), x),
        "downsample": ("Downsample x4, MATLAB bicubic", physics.Downsample(4), x),
        "downsample_gaussian": ("Downsample x4, Gaussian sigma 1.5, reflect", physics.Downsample(
            4, "gaussian", padding="reflect"), x),
        "inpainting": ("Inpainting, 50% of the pixels kept", physics.Inpainting(mask), x),
        "cs": ("Compressed sensing, 25%, 32x32 blocks (gray)", physics.CompressedSensing(0.25), gray),
    }


def as_picture(t: torch.Tensor, stretch: bool = False) -> tuple[torch.Tensor, bool]:
    """(1,C,H,W) -> (H,W,C) for imshow, stretched to min..max when asked or far outside [0,1]."""
    if t.shape[1] not in (1, 3):  # CS measurements (1,m,h,w): one sqrt(m) x sqrt(m) tile per block
        m, (h, w) = t.shape[1], t.shape[-2:]
        s = int(m ** 0.5)
        t = t[:, :s * s].reshape(1, s, s, h, w).permute(0, 3, 1, 4, 2).reshape(1, 1, h * s, w * s)
    stretched = stretch or bool(t.min() < -0.25 or t.max() > 1.25)  # noise past 0 or 1: clipped
    if stretched:
        t = (t - t.min()) / (t.max() - t.min())
    img = t[0].clamp(0, 1).permute(1, 2, 0)
    return (img.expand(-1, -1, 3) if img.shape[-1] == 1 else img), stretched


def draw(name: str, title: str, op, x: torch.Tensor, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        y = op(x)
        panels = [("x (clean)", x), (f"y = A(x) + n  {tuple(y.shape[1:])}", y),
                  ("A^T y", op.A_adjoint(y)),
                  ("A_dagger y (initial estimate)", physics.initial_estimate(op, y))]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.9))
    for ax, (label, t) in zip(axes, panels, strict=True):
        img, stretched = as_picture(t, stretch=label == "A^T y")
        ax.imshow(img.numpy(), interpolation="nearest")
        ax.set_xlabel(label + ("\n(stretched to min..max)" if stretched else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = out_dir / f"physics_{name}.png"
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
    finally:
        plt.close(fig)
    # 256 colours keep the pictures readable at a third of the bytes (they live in the repository)
    picture = Image.open(buffer).convert("RGB").quantize(256)
    with atomic_open(path) as f:
        picture.save(f, format="png", optimize=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "figs", help="folder for the PNGs (default figs/)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = clean_image()
    for name, (title, op, image) in cases(x).items():
        print(draw(name, title, op, image, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
