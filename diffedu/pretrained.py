"""Trained checkpoints that ship with the package, loaded by name, and the
recipes that made them.

A laptop cannot train a good CIFAR-10 model inside a lesson, so the lessons'
cpu profile samples from these. Each one is reproducible by one command:

    python -m diffedu train ddpm --recipe ddpm-cifar10
    python -m diffedu train vae --recipe vae-cifar10 --out runs/vae-cifar10
    python -m diffedu train latent --recipe ldm-cifar10 --vae runs/vae-cifar10

and has a model card (`card(name)`) saying what it was trained on, how, and
how long.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import checkpoint
from .latent import LatentDiffusion
from .profiles import Profile

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"

# A recipe is a training profile with a name: the same Trainer and loss as the lessons use.
RECIPES = {
    "ddpm-cifar10": Profile(
        "ddpm-cifar10",
        # The cpu profile's net: small enough that 1000 sampling steps stay bearable on a laptop.
        unet=dict(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.1),
        batch_size=256, train_steps=9000, n_samples=64, lr=4e-4,
        note="pixel DDPM for CIFAR-10 32x32, linear schedule, T = 1000",
    ),
    "vae-cifar10": Profile(
        "vae-cifar10", unet={}, batch_size=256, train_steps=0, n_samples=64, lr=4e-4,
        vae=dict(channels=64, channel_mult=(1, 2, 2), num_res_blocks=1), vae_steps=3000,
        note="VAE 32x32x3 <-> 8x8x4 for CIFAR-10, L1 + 1e-4 KL",
    ),
    "ldm-cifar10": Profile(
        "ldm-cifar10", unet={}, batch_size=256, train_steps=0, n_samples=64, lr=4e-4,
        latent_unet=dict(in_channels=4, image_size=8, channels=64, channel_mult=(1, 2), num_res_blocks=2,
                         attn_resolutions=(4,), dropout=0.1), latent_steps=6000,
        note="latent DDPM on vae-cifar10's scaled latents, linear schedule, T = 1000",
    ),
}


def available() -> list[str]:
    return sorted(p.stem for p in CHECKPOINTS.glob("*.safetensors"))


def path(name: str) -> Path:
    if name not in available():
        raise ValueError(f"no shipped checkpoint named {name!r}; shipped: {', '.join(available()) or 'none'}. "
                         f"Recipes to train one: {', '.join(RECIPES)} (python -m diffedu train ddpm --recipe NAME)")
    return CHECKPOINTS / name


def resolve(name_or_path: str | Path) -> str | Path:
    """A shipped checkpoint's path for its name; anything else is taken as a path."""
    return path(name_or_path) if name_or_path in available() else name_or_path


def load(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """A shipped model by name, in eval mode, weights as float32."""
    return checkpoint.load_model(path(name), device)


def pipeline(name: str = "ldm-cifar10", device: str | torch.device = "cpu") -> LatentDiffusion:
    """A shipped latent model with the shipped VAE it was trained on, ready to sample images."""
    meta = checkpoint.read_meta(path(name))
    if "vae" not in meta:
        raise ValueError(f"{name} is not a latent model (its config names no VAE)")
    return LatentDiffusion(load(meta["vae"], device), load(name, device), checkpoint.schedule_of(path(name)))


def card(name: str) -> str:
    """The model card: data, recipe, steps, hardware, time, and measured quality."""
    return path(name).with_suffix(".md").read_text()
