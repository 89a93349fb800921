"""Samplers: from noise x_T back to an image, one model call per step.

Each sampler is a scheduler with the shape of diffusers' schedulers:

    scheduler = DDIMScheduler(schedule, eta=0.0)
    scheduler.set_timesteps(50)                # which t's to visit, largest first
    for t in scheduler.timesteps:
        eps = model(x, t)                      # the model's guess of the noise in x_t
        x, x0 = scheduler.step(eps, t, x)      # x_t -> x_{t_prev}, and the predicted clean image

`sample` and `sample_trajectory` run exactly that loop; `ddpm_sample` and
`ddim_sample` are one-line shortcuts for it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .schedules import Schedule, at


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


class DDPMScheduler:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): all T steps, each one a
    draw from the posterior q(x_{t-1} | x_t, x_0) with x_0 replaced by the model's guess."""

    def __init__(self, schedule: Schedule, clip_x0: bool = True):
        self.schedule, self.clip_x0 = schedule, clip_x0
        self.set_timesteps()

    def set_timesteps(self, steps: int | None = None) -> "DDPMScheduler":
        if steps not in (None, self.schedule.T):
            raise ValueError(f"DDPM visits every step (steps={self.schedule.T}); use DDIMScheduler for fewer")
        self.timesteps = list(range(self.schedule.T - 1, -1, -1))
        return self

    def step(self, eps, t: int, x_t, generator=None):
        s = self.schedule
        x0 = s.predict_x0(x_t, t, eps)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)  # pixels live in [-1, 1]: a guess outside it is surely wrong
        mean = at(s.posterior_coef_x0, t, x_t) * x0 + at(s.posterior_coef_xt, t, x_t) * x_t
        if t == 0:
            return mean, x0  # the posterior variance at t = 0 is 0
        return mean + at(s.posterior_variance, t, x_t).sqrt() * _noise_like(x_t, generator), x0


def ddim_timesteps(T: int, steps: int, spacing: str = "uniform") -> list[int]:
    """`steps` timesteps from T-1 down to 0, strictly decreasing (one step: just T-1).

    uniform:   evenly spaced.
    quadratic: spaced as i^2, so more of them near t = 0 where details form
               (the DDIM paper's choice for CIFAR-10).
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and T={T}, got {steps}")
    if spacing not in ("uniform", "quadratic"):
        raise ValueError(f"unknown spacing {spacing!r}; choose 'uniform' or 'quadratic'")
    if steps == 1:
        return [T - 1]
    frac = np.linspace(0, 1, steps)
    t = np.round((T - 1) * (frac if spacing == "uniform" else frac**2)).astype(int)
    # Where i^2 grows slower than one step per index (near 0), take i instead:
    # this keeps the steps distinct and still ends exactly at T - 1.
    t = np.maximum(t, np.arange(steps))
    return t[::-1].tolist()


class DDIMScheduler:
    """DDIM (Song et al. 2021, eq. 12): the same trained model, a non-Markovian
    process with the same marginals q(x_t | x_0), so it can skip steps.

        x_prev = sqrt(ab_prev) x0  +  sqrt(1 - ab_prev - sigma^2) eps  +  sigma z
        sigma  = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)

    eta = 0 is deterministic (an ODE solver); eta = 1 over all T steps is DDPM.
    """

    def __init__(self, schedule: Schedule, eta: float = 0.0, clip_x0: bool = True):
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        self.schedule, self.eta, self.clip_x0 = schedule, eta, clip_x0
        self.set_timesteps(schedule.T)

    def set_timesteps(self, steps: int, spacing: str = "uniform") -> "DDIMScheduler":
        self.timesteps = ddim_timesteps(self.schedule.T, steps, spacing)
        self._prev = dict(zip(self.timesteps, self.timesteps[1:] + [-1]))  # -1: the clean image
        return self

    def _alpha_bars(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.schedule.alpha_bar
        t_prev = self._prev[t]
        return ab[t], (ab[t_prev] if t_prev >= 0 else ab.new_tensor(1.0))

    def sigma(self, t: int) -> torch.Tensor:
        """Standard deviation of the noise added on the step from t."""
        ab, ab_prev = self._alpha_bars(t)
        return self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()

    def step(self, eps, t: int, x_t, generator=None):
        ab, ab_prev = (v.to(x_t.dtype) for v in self._alpha_bars(t))
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()  # the noise that agrees with the clipped x0
        sigma = self.sigma(t).to(x_t.dtype)
        x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).sqrt() * eps
        if self.eta > 0 and self._prev[t] >= 0:
            x_prev = x_prev + sigma * _noise_like(x_t, generator)
        return x_prev, x0


def _t_batch(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((len(x),), t, device=x.device, dtype=torch.long)


@dataclass
class Trajectory:
    """Snapshots of one sampling run: at each recorded t, the noisy x_t and the
    model's prediction of the clean image. `images` is the final result."""

    timesteps: list[int]
    x_t: torch.Tensor  # (frames, batch, C, H, W)
    x0: torch.Tensor  # (frames, batch, C, H, W)
    images: torch.Tensor  # (batch, C, H, W)


@torch.inference_mode()
def sample_trajectory(
    model: nn.Module, scheduler, x_T: torch.Tensor, frames: int = 20, generator=None, progress: bool = True
) -> Trajectory:
    """Run the sampler from x_T, keeping `frames` evenly spaced snapshots (on the CPU)."""
    model.eval()
    last = len(scheduler.timesteps) - 1
    keep = set(np.linspace(0, last, frames).round().astype(int).tolist()) if frames > 0 else set()
    x, kept = x_T, []
    for i, t in enumerate(tqdm(scheduler.timesteps, desc=type(scheduler).__name__, disable=not progress, leave=False)):
        x_prev, x0 = scheduler.step(model(x, _t_batch(t, x)), t, x, generator)
        if i in keep:
            kept.append((t, x.float().cpu(), x0.float().cpu()))
        x = x_prev
    if not kept:
        return Trajectory([], torch.empty(0), torch.empty(0), x)
    ts, xs, x0s = zip(*kept)
    return Trajectory(list(ts), torch.stack(xs), torch.stack(x0s), x)


def sample(model: nn.Module, scheduler, x_T: torch.Tensor, generator=None, progress: bool = True) -> torch.Tensor:
    """The final images only."""
    return sample_trajectory(model, scheduler, x_T, frames=0, generator=generator, progress=progress).images


def ddpm_sample(model, schedule: Schedule, x_T, clip_x0: bool = True, **kwargs) -> torch.Tensor:
    return sample(model, DDPMScheduler(schedule, clip_x0), x_T, **kwargs)


def ddim_sample(model, schedule: Schedule, x_T, steps: int = 50, eta: float = 0.0, spacing: str = "uniform",
                clip_x0: bool = True, **kwargs) -> torch.Tensor:
    return sample(model, DDIMScheduler(schedule, eta, clip_x0).set_timesteps(steps, spacing), x_T, **kwargs)


def make_scheduler(name: str, schedule: Schedule, steps: int | None = None, eta: float = 0.0,
                   spacing: str = "uniform", clip_x0: bool = True):
    """A scheduler by name: 'ddpm' (always all T steps) or 'ddim'."""
    if name == "ddpm":
        return DDPMScheduler(schedule, clip_x0).set_timesteps(steps)
    if name == "ddim":
        return DDIMScheduler(schedule, eta, clip_x0).set_timesteps(steps or 50, spacing)
    raise ValueError(f"unknown sampler {name!r}; choose 'ddpm' or 'ddim'")


@torch.inference_mode()
def ddim_invert(model: nn.Module, schedule: Schedule, x0: torch.Tensor, steps: int = 100,
                spacing: str = "uniform", progress: bool = True) -> torch.Tensor:
    """Run deterministic DDIM backwards, image -> noise x_T: the same update as
    sampling with eta = 0, but from t to the next larger t. Sampling the result
    with the same steps gives the image back (exactly, as steps grow)."""
    model.eval()
    ts = ddim_timesteps(schedule.T, steps, spacing)[::-1]  # 0 ... T-1
    ab = schedule.alpha_bar.to(x0.dtype)
    x, t_cur = x0, ts[0]
    for t_next in tqdm(ts, desc="DDIM inversion", disable=not progress, leave=False):
        eps = model(x, _t_batch(t_cur, x))
        clean = x if t_next == ts[0] else (x - (1 - ab[t_cur]).sqrt() * eps) / ab[t_cur].sqrt()
        x, t_cur = ab[t_next].sqrt() * clean + (1 - ab[t_next]).sqrt() * eps, t_next
    return x


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noises. Gaussian noise lives near a
    sphere of radius sqrt(d); a straight line between two noises cuts inside it
    (its midpoint has too small a norm), the great circle stays on it."""
    a, b = z0.flatten(1), z1.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    theta = cos.clamp(-1, 1).acos()[:, None]
    alpha = torch.as_tensor(alpha, dtype=a.dtype, device=a.device)
    out = (torch.sin((1 - alpha) * theta) * a + torch.sin(alpha * theta) * b) / torch.sin(theta).clamp_min(1e-8)
    out = torch.where(theta < 1e-4, (1 - alpha) * a + alpha * b, out)  # (nearly) parallel: a line is the arc
    return out.reshape(z0.shape)
