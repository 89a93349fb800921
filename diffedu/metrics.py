"""Measures of image quality."""
from __future__ import annotations

import torch


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image, for pixels in [-1, 1] (peak-to-peak 2):
    10 log10(2^2 / MSE). +6 dB is half the RMS error; 20-25 dB is blurry, 30+ dB hard to tell apart."""
    mse = (images.float() - reference.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4 / mse.clamp_min(1e-12))
