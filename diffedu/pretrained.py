"""Trained checkpoints that ship with the package, loaded by name, and the
recipes that made them.

A laptop cannot train a good CIFAR-10 model inside a lesson, so the lessons'
cpu profile samples from these. Each one is reproducible by one command:

    python -m diffedu train ddpm --recipe ddpm-cifar10

and has a model card (`card(name)`) saying what it was trained on, how, and
how long.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import checkpoint
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
}


def available() -> list[str]:
    return sorted(p.stem for p in CHECKPOINTS.glob("*.safetensors"))


def path(name: str) -> Path:
    if name not in available():
        raise ValueError(f"no shipped checkpoint named {name!r}; shipped: {', '.join(available()) or 'none'}. "
                         f"Recipes to train one: {', '.join(RECIPES)} (python -m diffedu train ddpm --recipe NAME)")
    return CHECKPOINTS / name


def load(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """A shipped model by name, in eval mode, weights as float32."""
    return checkpoint.load_model(path(name), device)


def card(name: str) -> str:
    """The model card: data, recipe, steps, hardware, time, and measured quality."""
    return path(name).with_suffix(".md").read_text()
