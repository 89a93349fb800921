"""Samplers: from noise x_T back to an image, one model call per step.

Each sampler is a scheduler with the shape of diffusers' schedulers:

    scheduler = DDIMScheduler(schedule, eta=0.0)
    scheduler.set_timesteps(50)                # which t's to visit, largest first
    for t in scheduler.timesteps:
        eps = model(x, t)                      # the model's guess of the noise in x_t
        x, x0 = scheduler.step(eps, t, x)      # x_t -> x_{t_prev}, and the predicted clean image

`sample` and `sample_trajectory` run exactly that loop; `ddpm_sample` and
`ddim_sample` are one-line shortcuts for it, and `ddim_invert` runs it backwards.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import DiffeduError
from .schedules import Schedule, at

SAMPLERS = ("ddpm", "ddim")
SPACINGS = ("uniform", "quadratic")


class StepOutput(NamedTuple):
    """What one step returns: x at the next (smaller) timestep, and the clean image predicted on the way."""

    prev: torch.Tensor
    x0: torch.Tensor


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def ddim_timesteps(T: int, steps: int, spacing: str = "uniform") -> list[int]:
    """`steps` timesteps from T-1 down to 0, strictly decreasing (one step: just T-1).

    uniform:   evenly spaced.
    quadratic: spaced as i^2, so more of them near t = 0 where details form
               (the DDIM paper's choice for CIFAR-10).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise DiffeduError(f"steps must be a whole number between 1 and T={T}, got {steps!r}")
    if spacing not in SPACINGS:
        raise DiffeduError(f"unknown spacing {spacing!r}; choose 'uniform' or 'quadratic'")
    if steps == 1:
        return [T - 1]
    frac = np.linspace(0, 1, steps)
    t = np.round((T - 1) * (frac if spacing == "uniform" else frac**2)).astype(int)
    # Where i^2 grows slower than one step per index (near 0), take i instead:
    # this keeps the steps distinct and still ends exactly at T - 1.
    t = np.maximum(t, np.arange(steps))
    return t[::-1].tolist()


class Scheduler:
    """What every sampler shares: the timesteps it visits (largest first), the step after each one
    (-1: the clean image), and the model's prediction of x_0, clipped to the pixel range [-1, 1]
    when `clip_x0` (latents are not bounded, so latent pipelines turn it off)."""

    def __init__(self, schedule: Schedule, clip_x0: bool = True) -> None:
        self.schedule, self.clip_x0 = schedule, clip_x0
        self.set_timesteps()

    def set_timesteps(self, steps: int | None = None, spacing: str = "uniform") -> "Scheduler":
        """Visit `steps` timesteps (None: all T), spaced uniformly or quadratically."""
        self.timesteps = ddim_timesteps(self.schedule.T, self.schedule.T if steps is None else steps, spacing)
        self._prev = dict(zip(self.timesteps, self.timesteps[1:] + [-1]))
        return self

    def prev_timestep(self, t: int) -> int:
        """The timestep the step from t lands on (-1 for the clean image)."""
        t = int(t)
        if t not in self._prev:
            shown = self.timesteps if len(self.timesteps) <= 6 else [*self.timesteps[:3], "...", *self.timesteps[-2:]]
            raise DiffeduError(f"t = {t} is not one of this scheduler's {len(self.timesteps)} timesteps "
                               f"({', '.join(map(str, shown))}): step through scheduler.timesteps")
        return self._prev[t]

    def alpha_bar(self, t: int, like: torch.Tensor) -> torch.Tensor:
        """alpha_bar_t as a scalar of `like`'s dtype, with alpha_bar_{-1} = 1 (no noise: the clean image)."""
        return at(self.schedule.alpha_bar, t, like).flatten()[0] if t >= 0 else like.new_ones(())

    def predict(self, eps: torch.Tensor, t: int, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's clean image (clipped, if so set) and the noise that agrees with it."""
        x0 = self.schedule.predict_x0(x_t, t, eps)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)  # pixels live in [-1, 1]: a guess outside it is surely wrong
            eps = self.schedule.predict_eps(x_t, t, x0)
        return x0, eps


class DDPMScheduler(Scheduler):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): all T steps, each one a
    draw from the posterior q(x_{t-1} | x_t, x_0) with x_0 replaced by the model's guess."""

    def set_timesteps(self, steps: int | None = None, spacing: str = "uniform") -> "DDPMScheduler":
        if steps not in (None, self.schedule.T):
            raise DiffeduError(f"DDPM visits every step (steps={self.schedule.T}); use DDIMScheduler for fewer")
        return super().set_timesteps(None, spacing)

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, generator=None, noise=None) -> StepOutput:
        """x_t -> x_{t-1}; `noise` (default: drawn from `generator`) is the fresh N(0, I) draw."""
        self.prev_timestep(t)  # a t outside the schedule is an error, not a wrap-around
        s = self.schedule
        x0, _ = self.predict(eps, t, x_t)
        mean = at(s.posterior_coef_x0, t, x_t) * x0 + at(s.posterior_coef_xt, t, x_t) * x_t
        if t == 0:
            return StepOutput(mean, x0)  # the posterior variance at t = 0 is 0
        noise = _noise_like(x_t, generator) if noise is None else noise
        return StepOutput(mean + at(s.posterior_variance, t, x_t).sqrt() * noise, x0)


class DDIMScheduler(Scheduler):
    """DDIM (Song et al. 2021, eq. 12): the same trained model, a non-Markovian
    process with the same marginals q(x_t | x_0), so it can skip steps.

        x_prev = sqrt(ab_prev) x0  +  sqrt(1 - ab_prev - sigma^2) eps  +  sigma z
        sigma  = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)

    eta = 0 is deterministic (an ODE solver); eta = 1 over all T steps is DDPM.
    """

    def __init__(self, schedule: Schedule, eta: float = 0.0, clip_x0: bool = True) -> None:
        if not 0 <= eta <= 1:
            raise DiffeduError(f"eta must be in [0, 1], got {eta}")
        self.eta = eta
        super().__init__(schedule, clip_x0)

    def sigma(self, t: int) -> torch.Tensor:
        """Standard deviation of the noise added on the step from t."""
        like = self.schedule.alpha_bar
        ab, ab_prev = self.alpha_bar(t, like), self.alpha_bar(self.prev_timestep(t), like)
        return self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, generator=None, noise=None) -> StepOutput:
        """x_t -> x_{t_prev}; with eta > 0, `noise` (default: drawn from `generator`) is the fresh N(0, I) draw."""
        t_prev = self.prev_timestep(t)
        x0, eps = self.predict(eps, t, x_t)
        ab_prev, sigma = self.alpha_bar(t_prev, x_t), self.sigma(t).to(x_t.dtype)
        x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).sqrt() * eps
        if self.eta > 0 and t_prev >= 0:
            x_prev = x_prev + sigma * (_noise_like(x_t, generator) if noise is None else noise)
        return StepOutput(x_prev, x0)

    def invert_step(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> StepOutput:
        """The deterministic step run backwards: from x at the step after t (prev_timestep(t), the clean
        image for t = 0) up to x_t. `eps` is the model's noise prediction at x. Always eta = 0, unclipped."""
        t_prev = self.prev_timestep(t)
        x0 = x if t_prev < 0 else self.schedule.predict_x0(x, t_prev, eps)
        ab = self.alpha_bar(t, x)
        return StepOutput(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, x0)


class Guided(nn.Module):
    """Classifier-free guidance (Ho & Salimans 2022) as a noise predictor for the sampling loop:

        eps = eps_uncond + w (eps_cond - eps_uncond)

    from a class-conditional model, with both predictions from one batched call. w = 0 is the
    unconditional model, w = 1 the conditional one (each a single call), w > 1 pushes samples further
    towards what distinguishes the class."""

    def __init__(self, model: nn.Module, labels: torch.Tensor, guidance: float) -> None:
        super().__init__()
        if not 0 <= guidance < float("inf"):
            raise DiffeduError(f"the guidance scale w must be 0 or more (0: unconditional, 1: conditional), got {guidance}")
        self.model, self.labels, self.guidance = model, labels, guidance

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.guidance == 0:
            return self.model(x, t, None)
        if self.guidance == 1:
            return self.model(x, t, self.labels)
        t = torch.as_tensor(t, device=x.device).expand(len(x))
        unlabelled = torch.full_like(self.labels, self.model.config.num_classes)
        eps_cond, eps_uncond = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([self.labels, unlabelled])).chunk(2)
        return eps_uncond + self.guidance * (eps_cond - eps_uncond)


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


class Snapshots(nn.Module):
    """A model that keeps its own trajectory: wrapped around the noise predictor of a sampling loop written
    anywhere (a lesson's), it records x_t and the predicted clean image (clipped to [-1, 1]) at `frames` evenly
    spaced timesteps of T, on the CPU, and answers as the model does."""

    def __init__(self, model: nn.Module, alpha_bar: torch.Tensor, frames: int = 20) -> None:
        super().__init__()
        self.model, self.alpha_bar, self.kept = model, alpha_bar, []
        self.keep = set(np.linspace(len(alpha_bar) - 1, 0, frames).round().astype(int).tolist())

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        eps = self.model(x, t)
        step = int(torch.as_tensor(t).flatten()[0])
        if step in self.keep:
            ab = self.alpha_bar[step].to(x)
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
            self.kept.append((step, x.float().cpu(), x0.float().cpu()))
        return eps

    def trajectory(self, images: torch.Tensor) -> Trajectory:
        """The snapshots of the run, largest t first, with its final `images`."""
        ts, xs, x0s = zip(*self.kept)
        return Trajectory(list(ts), torch.stack(xs), torch.stack(x0s), images.float().cpu())


@torch.inference_mode()
def sample_trajectory(
    model: nn.Module, scheduler: Scheduler, x_T: torch.Tensor, frames: int = 20, generator=None, progress: bool = True
) -> Trajectory:
    """Run the sampler from x_T, keeping `frames` evenly spaced snapshots (on the CPU)."""
    if frames < 0:
        raise DiffeduError(f"frames must be 0 (keep none) or more, got {frames}")
    model.eval()
    last = len(scheduler.timesteps) - 1
    keep = set(np.linspace(0, last, frames).round().astype(int).tolist()) if frames > 0 else set()
    x, kept = x_T, []
    for i, t in enumerate(tqdm(scheduler.timesteps, desc=type(scheduler).__name__, disable=not progress, leave=False)):
        x_prev, x0 = scheduler.step(model(x, _t_batch(t, x)), t, x, generator)
        if i in keep:
            kept.append((t, x.float().cpu().contiguous(), x0.float().cpu().contiguous()))
        x = x_prev
    x = x.contiguous()  # NCHW, whatever memory order the model computes in
    if not kept:
        return Trajectory([], torch.empty(0), torch.empty(0), x)
    ts, xs, x0s = zip(*kept)
    return Trajectory(list(ts), torch.stack(xs), torch.stack(x0s), x)


def sample(model: nn.Module, scheduler: Scheduler, x_T: torch.Tensor, generator=None, progress: bool = True) -> torch.Tensor:
    """The final images only."""
    return sample_trajectory(model, scheduler, x_T, frames=0, generator=generator, progress=progress).images


def ddpm_sample(model, schedule: Schedule, x_T, clip_x0: bool = True, **kwargs) -> torch.Tensor:
    return sample(model, DDPMScheduler(schedule, clip_x0), x_T, **kwargs)


def ddim_sample(model, schedule: Schedule, x_T, steps: int = 50, eta: float = 0.0, spacing: str = "uniform",
                clip_x0: bool = True, **kwargs) -> torch.Tensor:
    return sample(model, DDIMScheduler(schedule, eta, clip_x0).set_timesteps(steps, spacing), x_T, **kwargs)


def make_scheduler(name: str, schedule: Schedule, steps: int | None = None, eta: float = 0.0,
                   spacing: str = "uniform", clip_x0: bool = True) -> Scheduler:
    """A scheduler by name: 'ddpm' (always all T steps) or 'ddim' (steps=None: 50)."""
    if name == "ddpm":
        if eta:
            raise DiffeduError("eta is DDIM's knob (0: deterministic, 1: as noisy as DDPM); DDPM's noise is fixed. "
                               "Leave eta out, or sample with DDIM")
        return DDPMScheduler(schedule, clip_x0).set_timesteps(steps, spacing)
    if name == "ddim":
        return DDIMScheduler(schedule, eta, clip_x0).set_timesteps(50 if steps is None else steps, spacing)
    raise DiffeduError(f"unknown sampler {name!r}; choose 'ddpm' or 'ddim'")


@torch.inference_mode()
def ddim_invert(model: nn.Module, schedule: Schedule, x0: torch.Tensor, steps: int = 100,
                spacing: str = "uniform", progress: bool = True) -> torch.Tensor:
    """Run deterministic DDIM backwards, image -> noise x_T, through the timesteps that sampling
    with the same steps visits, in reverse. Sampling the result gives the image back (exactly, as steps grow)."""
    model.eval()
    scheduler = DDIMScheduler(schedule).set_timesteps(steps, spacing)
    x = x0
    for t in tqdm(scheduler.timesteps[::-1], desc="DDIM inversion", disable=not progress, leave=False):
        here = max(scheduler.prev_timestep(t), 0)  # the clean image asks the model at t = 0
        x = scheduler.invert_step(model(x, _t_batch(here, x)), t, x).prev
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
