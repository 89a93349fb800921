"""Latents: a VAE's 8x8x4 codes of the images, scaled for diffusion, and the data set encoded once.

One contract: in diffedu, "latents" are always *scaled*, the encoder's mean times the VAE's scale
factor, so that they have unit variance whatever the VAE (Stable Diffusion's 0.18215 plays this role).
That is not the pixels' scale: in [-1, 1] CIFAR-10's pixels have a standard deviation of about 0.5, so
under the same noise schedule scaled latents sit at about 4x the pixels' signal-to-noise ratio (lesson
04). Only the VAE's own `encode`/`decode` and `encode_means` speak in the VAE's raw units; the scale
factor is measured on those.

Training never runs the encoder per step: the whole data set is encoded once (`cached_latents`)
and kept on disk.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import env
from .data import to_float
from .vae import VAE


@torch.inference_mode()
def encode_means(
    vae: VAE, images: torch.Tensor, flips: bool = False, batch_size: int = 500, progress: bool = True
) -> torch.Tensor:
    """The encoder's means for uint8 images (N, 3, 32, 32), in the VAE's raw units (unscaled), on the
    CPU. With `flips`, the mirrored images follow (2N): augmentation without running the encoder again."""
    vae.eval()
    device = next(vae.parameters()).device
    sources = [images, images.flip(-1)] if flips else [images]
    out = []
    for source in sources:
        for start in tqdm(range(0, len(source), batch_size), desc="encoding", disable=not progress, leave=False):
            out.append(vae.encode(to_float(source[start : start + batch_size].to(device)))[0].float().cpu())
    return torch.cat(out)


def measure_scale_factor(means: torch.Tensor) -> float:
    """1 / std of the raw latents: scaled latents then have unit variance."""
    return 1.0 / means.float().std().item()


def calibrate(vae: VAE, images: torch.Tensor, **kwargs) -> float:
    """Measure the scale factor on uint8 images and store it in the VAE's config (so it is saved
    with the checkpoint)."""
    vae.config.scale_factor = measure_scale_factor(encode_means(vae, images, **kwargs))
    return vae.config.scale_factor


def vae_fingerprint(vae: VAE) -> str:
    """What identifies a VAE's latent space: its encoder's weights and its scale factor. A latent model's
    checkpoint records it, so that a VAE whose latents have changed since is refused. The decoder is not
    in it: a decoder retrained on the same encoder (diffedu.adversarial) decodes the same latent space."""
    return env.fingerprint(*vae.encoder.state_dict().values(), torch.tensor(vae.config.scale_factor))


def cached_latents(
    vae: VAE, images: torch.Tensor, folder: str | Path | None = None, flips: bool = True, **kwargs
) -> torch.Tensor:
    """The scaled latents of uint8 images (and, with `flips`, of their mirror images after them), on
    the CPU. The encoding is done once and kept in `folder` (default: latents/ in the diffedu home)
    under a fingerprint of this VAE's encoder and the images (VAEs that share an encoder share the cache)."""
    key = env.fingerprint(*vae.encoder.state_dict().values(), images, torch.tensor(flips))
    path = Path(folder or env.home() / "latents") / f"latents-{key}.safetensors"
    means = env.cached_tensor(path, lambda: encode_means(vae, images, flips=flips, **kwargs))
    return means * vae.config.scale_factor


@torch.inference_mode()
def encode_latents(vae: VAE, images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> scaled latents (the encoder's mean, times the scale factor)."""
    return vae.encode(images.to(next(vae.parameters()).device))[0] * vae.config.scale_factor


@torch.inference_mode()
def decode_latents(vae: VAE, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1]."""
    return vae.decode(latents.to(next(vae.parameters()).device) / vae.config.scale_factor).clamp(-1, 1)
