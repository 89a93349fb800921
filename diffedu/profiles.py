"""One switch, DIFFEDU_PROFILE, sizes everything a lesson does.

    smoke  tiny nets and a handful of steps: every lesson in about a minute on 2 CPU
           cores (CI and nbval use it); its numbers mean nothing
    cpu    a laptop or Binder: small nets, short demo trainings, and the shipped models
    gpu    Colab or a workstation: bigger nets and longer trainings
The default is gpu when CUDA is available, else cpu.

A profile says how much a lesson shows (images drawn, DDIM step counts, whether to sample from the
shipped models) and names the recipe of each model the lessons train (diffedu.recipes).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import checkpoint
from .env import get_device, home
from .errors import DiffeduError
from .recipes import Recipe, get_recipe

PROFILE_ENV = "DIFFEDU_PROFILE"


@dataclass(frozen=True)
class Profile:
    name: str
    n_samples: int  # images drawn per sampling demo
    ddim_steps: tuple[int, ...]  # the DDIM step counts lesson 03 compares
    pretrained: bool  # lessons sample from the shipped models instead of their own short trainings
    note: str  # printed at the top of each lesson

    def recipe(self, kind: str) -> Recipe:
        """The lesson-sized recipe for a model kind ("ddpm", "vae" or "latent"): `<profile>-<kind>`."""
        return get_recipe(f"{self.name}-{kind}")

    @property
    def n_data(self) -> int | None:
        """How many training images the lessons use (None: all)."""
        return self.recipe("ddpm").n_data

    def lesson_run(self, lesson: str) -> Path:
        """Where a lesson saves the model it trained in this profile, for later lessons: runs/<lesson>_<profile>/model
        in the diffedu home (data/ of the checkout), not beside the notebooks, wherever they were opened from."""
        return home() / "runs" / f"{lesson}_{self.name}" / "model"

    def lesson_checkpoint(self, shipped: str, lesson: str, train: Callable[[Path], object]) -> str | Path:
        """The checkpoint a later lesson works with: the shipped one where this profile samples from shipped
        models; else the one `lesson` saved in this profile; else `train(path)` makes it here, as that lesson would."""
        if self.pretrained:
            return shipped
        path = self.lesson_run(lesson)
        if not checkpoint.exists(path):
            train(path)
        return path


PROFILES = {
    "smoke": Profile(
        "smoke",
        n_samples=4,
        ddim_steps=(10, 5),
        pretrained=False,
        note="smoke profile: tiny nets and a few steps, only to check that the code runs. "
        "Its numbers and pictures mean nothing.",
    ),
    "cpu": Profile(
        "cpu",
        n_samples=16,
        ddim_steps=(100, 50, 20, 10),
        pretrained=True,
        note="cpu profile: small nets, a short training demo, and shipped trained models for the samples.",
    ),
    "gpu": Profile(
        "gpu",
        n_samples=64,
        ddim_steps=(100, 50, 20, 10),
        pretrained=False,
        note="gpu profile: bigger nets and longer trainings.",
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The named profile, else $DIFFEDU_PROFILE, else gpu on a CUDA device and cpu elsewhere (Apple's MPS too:
    the gpu profile's trainings are sized for a CUDA card), the device being env.get_device()'s."""
    name = name or os.environ.get(PROFILE_ENV) or ("gpu" if get_device().type == "cuda" else "cpu")
    if name not in PROFILES:
        raise DiffeduError(
            f"unknown profile {name!r} (from {PROFILE_ENV} or the argument); valid profiles: {', '.join(PROFILES)}"
        )
    return PROFILES[name]
