"""Image-quality metrics and the evaluation protocols of the paper's tables (numpy, float64)."""

from dgunet.metrics.color import rgb_to_y_opencv, rgb_to_y_studio
from dgunet.metrics.protocols import PROTOCOLS, Protocol, get_protocol
from dgunet.metrics.psnr import psnr, psnr_masked, psnr_torch
from dgunet.metrics.realblur import align_to_gt, realblur_scores
from dgunet.metrics.ssim import ssim_masked, ssim_matlab3d, ssim_skimage_gray, ssim_wang

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "align_to_gt",
    "get_protocol",
    "psnr",
    "psnr_masked",
    "psnr_torch",
    "realblur_scores",
    "rgb_to_y_opencv",
    "rgb_to_y_studio",
    "ssim_masked",
    "ssim_matlab3d",
    "ssim_skimage_gray",
    "ssim_wang",
]
