"""Consistency models: images in one or two model calls, tuned from the flow-matching model (lesson 10).

A flow model's ODE carries each noise x_1 to one image x_0. The *consistency function* f(x_t, t) jumps from any
point of that path straight to its end, so one call from pure noise (t = 1) makes an image. It is pinned at the
data end, f(x, 0) = x (the boundary condition), and built so that no network can break it:

    f(x_t, t) = c_skip(t) x_t + c_out(t) F(x_t, t),   c_skip(0) = 1, c_out(0) = 0.

EDM's coefficients (Song et al. 2023) are one such pair; a flow model's own denoiser, f = x_t - t v(x_t, t),
is another (c_skip = 1, c_out = -t), so fm-cifar10 is already a consistency function's first guess.

**Easy Consistency Tuning** (ECT: Geng et al. 2024, "Consistency Models Made Easy") trains it by asking two
points of one noisy line, x_t and x_r with r < t and the same noise, for the same answer:

    loss = || f(x_t, t) - stopgrad f(x_r, r) ||^2 / (sigma_t - sigma_r),   sigma = t / (1 - t)

The target f(x_r, r) is nearer the data end, so easier; stop-gradient makes the model move its harder answer
towards its easier one, never the other way (Song & Dhariwal 2023: the online network, no EMA copy, is the
target). r starts at 0 (the target is the clean image: diffusion training) and moves up towards t as training
goes (`ect_r`'s stages): the curriculum. Consistency *distillation* instead reaches x_r from x_t by one Euler
step of a frozen teacher's ODE (`teacher=`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import distributed
from .training import Trainer

P_MEAN, P_STD = -1.1, 2.0  # EDM's and ECT's log-normal noise levels: log sigma ~ N(P_MEAN, P_STD^2)
# The curriculum's end: sigma_t - sigma_r = sigma n(sigma) / 2^12 at least 2.4e-4 of sigma, still far apart in the
# network's float32 inputs. A longer run (a GPU's, in the same minutes) stays there.
LAST_STAGE = 12


def consistency_fn(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """f(x_t, t) = x_t - t v(x_t, t): the image at the end of x_t's path, from a velocity model (one t per image).
    At t = 0 it is x_t, whatever the network says: the boundary condition."""
    return x_t - _per_image(t, x_t) * model(x_t, t)


def ect_r(sigma: torch.Tensor, stage: int, k: float = 8.0, b: float = 1.0, q: float = 2.0) -> torch.Tensor:
    """ECT's mapping from t to the target's r < t at curriculum `stage` (0, 1, 2, ...), in EDM's noise level
    sigma = t / (1 - t): sigma_r = sigma (1 - n(sigma) / q^stage), n(sigma) = 1 + k sigmoid(-b sigma), never below
    0. At stage 0, r = 0 (diffusion training); the gap then shrinks by q each stage. Returns r in flow time."""
    sigma_r = (sigma * (1 - (1 + k * torch.sigmoid(-b * sigma)) / q**stage)).clamp_min(0)
    return sigma_r / (1 + sigma_r)


def ect_times(x0: torch.Tensor, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One t per image, log-normal in sigma = t / (1 - t) (so logit-normal in flow time), and its r by `ect_r`. In
    float64: near t = 1, t and r can be one float32 apart, and the loss divides by sigma_t - sigma_r."""
    log_sigma = P_MEAN + P_STD * distributed.randn_like(x0[:, 0, 0, 0], dtype=torch.float64)
    return torch.sigmoid(log_sigma), ect_r(log_sigma.exp(), stage)


def ct_loss(
    f: Callable, x0: torch.Tensor, t: torch.Tensor, r: torch.Tensor, teacher: nn.Module | None = None
) -> torch.Tensor:
    """|| f(x_t, t) - stopgrad f(x_r, r) ||^2 / (sigma_t - sigma_r), per image, averaged (lesson 10's Exercise 10.2):
    x_t and x_r on one line, with one noise, the weight in EDM's noise level sigma = t / (1 - t) as ECT's. With a
    `teacher` (a velocity model: distillation), x_r is one Euler step of its ODE from x_t instead."""
    noise = distributed.randn_like(x0)
    x_t = _on_line(x0, noise, t)
    with torch.no_grad():
        x_r = _on_line(x0, noise, r) if teacher is None else x_t + _per_image(r - t, x0) * teacher(x_t, t)
        target = f(x_r, r)
    gap = (f(x_t, t) - target).square().flatten(1).mean(1)
    return (gap / (t / (1 - t) - r / (1 - r))).mean()


def same_masks(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The model's consistency function f(x, t), every call of it with the same dropout masks (one random state,
    drawn now, for all of them; the global one is left as it was): the online answer and its target differ only
    by where they are asked."""
    seed = int(torch.randint(2**62, ()))
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"][:1]

    def f(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices):
            torch.manual_seed(seed)
            return consistency_fn(model, x, t)

    return f


def consistency_loss(
    model: nn.Module, x0: torch.Tensor, stage: int, teacher: nn.Module | None = None, pair: Callable = ct_loss
) -> torch.Tensor:
    """ECT's loss on a batch of clean images at curriculum `stage`: t and r by `ect_times`, then `pair(f, x0, t, r)`
    (`ct_loss`, or a learner's) on the model's consistency function with one set of dropout masks."""
    t, r = ect_times(x0, stage)
    f = same_masks(model)
    return pair(f, x0, t, r) if teacher is None else ct_loss(f, x0, t, r, teacher)


def _per_image(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t, one value per image (B,), as (B, 1, ..., 1) in like's dtype: it scales whole images (the checks' too)."""
    return t.view(-1, *[1] * (like.dim() - 1)).to(like.dtype)


def _on_line(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise: the flow's straight line at time t (one per image)."""
    return (1 - _per_image(t, x0)) * x0 + _per_image(t, x0) * noise


class ConsistencyTrainer(Trainer):
    """The Trainer with ECT's loss, its curriculum stage from the step count (one stage every `stage_steps`, up to
    LAST_STAGE), in float32 (ECT's users report NaNs in half precision). `teacher`: distil from this frozen velocity
    model; `pair`: the loss of one pair of points (`ct_loss`'s signature: a learner's, in lesson 10)."""

    autocast = False

    def __init__(
        self,
        model: nn.Module,
        *,
        stage_steps: int,
        teacher: nn.Module | None = None,
        pair: Callable = ct_loss,
        **kwargs,
    ) -> None:
        self.stage_steps, self.teacher, self.pair = stage_steps, teacher, pair
        # uncompiled: the loss reseeds the random state for each call of f, which a CUDA graph cannot capture
        super().__init__(model, self._loss_now, **{**kwargs, "compile": None})
        if teacher is not None:
            self.teacher = teacher.to(self.device).eval().requires_grad_(False)

    @property
    def stage(self) -> int:
        return min(self.step // self.stage_steps, LAST_STAGE)

    def _loss_now(self, model: nn.Module, batch) -> torch.Tensor:
        return consistency_loss(model, batch, self.stage, self.teacher, self.pair)
