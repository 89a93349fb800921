"""One switch, DIFFEDU_PROFILE, sizes everything a lesson does.

    smoke  tiny nets and a handful of steps: every lesson in about a minute on 2 CPU
           cores (CI and nbval use it); its numbers mean nothing
    cpu    a laptop or Binder: small nets and short demo trainings
    gpu    Colab or a workstation: the full recipes
The default is gpu when CUDA is available, else cpu.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch

PROFILE_ENV = "DIFFEDU_PROFILE"


@dataclass(frozen=True)
class Profile:
    name: str
    unet: dict  # UNetConfig fields for the pixel UNet trained in the lessons
    batch_size: int
    train_steps: int  # length of the live training demo
    n_samples: int  # images drawn per sampling demo
    n_data: int | None = None  # use only the first n training images (None: all)
    ddim_steps: tuple[int, ...] = (100, 50, 20, 10)
    lr: float = 2e-4
    pretrained: bool = False  # lessons sample from the shipped checkpoints instead of their own short trainings
    vae: dict = field(default_factory=dict)  # VAEConfig fields
    vae_steps: int = 0
    latent_unet: dict = field(default_factory=dict)  # UNetConfig fields of the UNet on 8x8x4 latents
    latent_steps: int = 0
    note: str = field(default="", compare=False)


PROFILES = {
    "smoke": Profile(
        "smoke",
        unet=dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0),
        batch_size=8, train_steps=8, n_samples=4, n_data=256, ddim_steps=(10, 5), lr=1e-3,
        vae=dict(channels=8), vae_steps=8,
        latent_unet=dict(in_channels=4, image_size=8, channels=8, channel_mult=(1, 2), num_res_blocks=1,
                         attn_resolutions=(), dropout=0.0), latent_steps=8,
        note="smoke profile: tiny nets and a few steps, only to check that the code runs. Its numbers and pictures mean nothing.",
    ),
    "cpu": Profile(
        "cpu",
        unet=dict(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0),
        batch_size=16, train_steps=150, n_samples=16, lr=1e-3, pretrained=True,
        vae=dict(channels=32), vae_steps=400,
        latent_unet=dict(in_channels=4, image_size=8, channels=64, channel_mult=(1, 2), num_res_blocks=1,
                         attn_resolutions=(4,), dropout=0.0), latent_steps=400,
        note="cpu profile: small nets, a short training demo, and shipped trained models for the samples.",
    ),
    "gpu": Profile(
        "gpu",
        unet=dict(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1),
        batch_size=128, train_steps=4000, n_samples=64,
        vae=dict(channels=64, num_res_blocks=2), vae_steps=4000,
        latent_unet=dict(in_channels=4, image_size=8, channels=128, channel_mult=(1, 2), num_res_blocks=2,
                         attn_resolutions=(4,), dropout=0.1), latent_steps=4000,
        note="gpu profile: bigger nets and longer trainings.",
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The named profile, else $DIFFEDU_PROFILE, else gpu with CUDA and cpu without."""
    name = name or os.environ.get(PROFILE_ENV) or ("gpu" if torch.cuda.is_available() else "cpu")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (from {PROFILE_ENV} or the argument); valid profiles: {', '.join(PROFILES)}")
    return PROFILES[name]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int = 0) -> None:
    """Same seed, same figures: Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
