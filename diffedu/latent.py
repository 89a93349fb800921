"""Latent diffusion: the same UNet and samplers, on a VAE's 8x8x4 latents.

Training never runs the encoder per step: the whole data set is encoded once
(`encode_dataset`) and cached. Latents are multiplied by a scale factor
measured on the data, so that they have unit variance like the images the
noise schedule was designed for (Stable Diffusion's 0.18215 plays this role).
"""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import data
from .data import to_float
from .samplers import Trajectory, make_scheduler, sample_trajectory
from .schedules import Schedule
from .vae import VAE


@torch.inference_mode()
def encode_dataset(vae: VAE, images: torch.Tensor, batch_size: int = 500, flips: bool = True,
                   device=None, progress: bool = True) -> torch.Tensor:
    """The encoder's means for uint8 images (N, 3, 32, 32), unscaled. With `flips`,
    the mirrored images follow (2N latents): augmentation without the encoder."""
    vae.eval()
    device = device or next(vae.parameters()).device
    sources = [images, images.flip(-1)] if flips else [images]
    out = []
    for source in sources:
        for start in tqdm(range(0, len(source), batch_size), desc="encoding", disable=not progress, leave=False):
            out.append(vae.encode(to_float(source[start:start + batch_size].to(device)))[0].float().cpu())
    return torch.cat(out)


def cached_latents(vae: VAE, images: torch.Tensor, folder: str | Path | None = None, **kwargs) -> torch.Tensor:
    """encode_dataset, computed once and kept in `folder` (default: data/latents) under
    a fingerprint of this VAE's weights and the images."""
    key = data.fingerprint(*vae.state_dict().values(), images)
    path = Path(folder or data.DEFAULT_ROOT / "latents") / f"latents-{key}.safetensors"
    return data.cached_tensor(path, lambda: encode_dataset(vae, images, **kwargs))


def measure_scale_factor(latents: torch.Tensor) -> float:
    """1 / std of the latents: scaled latents then have unit variance."""
    return 1.0 / latents.float().std().item()


def calibrate(vae: VAE, images: torch.Tensor, **kwargs) -> float:
    """Measure the scale factor on uint8 images and store it in the VAE's config
    (so it is saved with the checkpoint)."""
    vae.config.scale_factor = measure_scale_factor(encode_dataset(vae, images, flips=False, **kwargs))
    return vae.config.scale_factor


@torch.inference_mode()
def encode_latents(vae: VAE, images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> scaled latents (the encoder's mean, times the scale factor)."""
    return vae.encode(images.to(next(vae.parameters()).device))[0] * vae.config.scale_factor


@torch.inference_mode()
def decode_latents(vae: VAE, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1]."""
    return vae.decode(latents.to(next(vae.parameters()).device) / vae.config.scale_factor).clamp(-1, 1)


class LatentDiffusion:
    """VAE + latent UNet + noise schedule, as one object: sample(n) gives images."""

    def __init__(self, vae: VAE, unet: torch.nn.Module, schedule: Schedule):
        if unet.config.in_channels != vae.config.latent_channels or unet.config.image_size != vae.config.latent_size:
            raise ValueError(f"the UNet takes {unet.config.in_channels}x{unet.config.image_size}x{unet.config.image_size} "
                             f"inputs but the VAE's latents are {vae.config.latent_channels}x{vae.config.latent_size}x{vae.config.latent_size}")
        self.vae, self.unet, self.schedule = vae.eval(), unet.eval(), schedule

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return encode_latents(self.vae, images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.vae, latents)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg = self.vae.config
        return torch.randn(n, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=generator).to(self.device)

    def sample_trajectory(self, n: int = 16, steps: int | None = 50, sampler: str = "ddim", eta: float = 0.0,
                          spacing: str = "uniform", frames: int = 20, x_T: torch.Tensor | None = None,
                          generator=None, progress: bool = True) -> Trajectory:
        """Sample latents (no clipping: latents are not bounded like pixels); `images` are decoded."""
        scheduler = make_scheduler(sampler, self.schedule, steps, eta, spacing, clip_x0=False)
        x_T = self.noise(n, generator) if x_T is None else x_T
        trajectory = sample_trajectory(self.unet, scheduler, x_T, frames, generator, progress)
        trajectory.images = self.decode(trajectory.images)
        return trajectory

    def sample(self, n: int = 16, steps: int | None = 50, **kwargs) -> torch.Tensor:
        return self.sample_trajectory(n, steps, frames=0, **kwargs).images
