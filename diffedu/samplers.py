"""Samplers: from noise x_T back to an image.

Each sampler is a scheduler registered by name (`SAMPLERS`), with the shape of diffusers' schedulers:

    scheduler = make_scheduler("ddim", schedule, steps=50)
    for t in scheduler.timesteps:                            # which t's to visit, largest first
        x, x0 = scheduler.sample_step(model, x, t)           # x_t -> x_{t_prev}, and the predicted clean image

A sampler owns its model calls: DDPM and DDIM call the model once per step (`step(eps, t, x)` is that step
given the call's answer, the one the lessons write), Heun twice, DPM-Solver++(2M) once and remembers the last
answer. Each declares its `order` and counts its calls per run (`model_calls`, NFE: what sampling costs).
`sample` and `sample_trajectory` run that loop; `ddpm_sample` and `ddim_sample` are one-line shortcuts for it,
and `ddim_invert` runs DDIM backwards.

The deterministic samplers all solve one ODE, the probability-flow ODE, which is simplest in the variables
sigma = sqrt((1 - alpha_bar) / alpha_bar) and x~ = x / sqrt(alpha_bar):  dx~/dsigma = eps(x, t).
DDIM (eta = 0) is exactly its Euler step; Heun and DPM-Solver++(2M) are second-order steps of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Self

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import DiffeduError
from .schedules import Schedule, at

if TYPE_CHECKING:
    from .nets import UNet

SPACINGS = ("uniform", "quadratic", "logsnr")
# A flow or consistency run's most steps, as DDPM's T: its t is continuous, so nothing else bounds them, and past this
# the solution no longer changes while the wait (and the list of t's, 8 GB for 10**9 steps) keeps growing.
MAX_STEPS = 1000


def check_steps(steps: int, most: int, limit: str) -> None:
    """An error unless steps is a whole number from 1 to `most` (`limit`: how the message names it)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= most:
        raise DiffeduError(f"steps must be a whole number between 1 and {limit}, got {steps!r}")


class StepOutput(NamedTuple):
    """What one step returns: x at the next (smaller) timestep, and the clean image predicted on the way."""

    prev: torch.Tensor
    x0: torch.Tensor


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def ddim_timesteps(T: int, steps: int, spacing: str = "uniform", alpha_bar: torch.Tensor | None = None) -> list[int]:
    """`steps` timesteps from T-1 down to 0, strictly decreasing (one step: just T-1).

    uniform:   evenly spaced.
    quadratic: spaced as i^2, so more of them near t = 0 where details form
               (the DDIM paper's choice for CIFAR-10).
    logsnr:    evenly spaced in lambda = log(sqrt(alpha_bar) / sqrt(1 - alpha_bar)), half the log signal-to-noise
               ratio (DPM-Solver's choice): the nearest timesteps to evenly spaced lambdas. Needs `alpha_bar`.
    """
    check_steps(steps, T, f"T={T}")
    if spacing not in SPACINGS:
        raise DiffeduError(f"unknown spacing {spacing!r}; choose one of {', '.join(map(repr, SPACINGS))}")
    if steps == 1:
        return [T - 1]
    frac = np.linspace(0, 1, steps)
    if spacing == "logsnr":
        if alpha_bar is None:
            raise DiffeduError("logsnr spacing needs the schedule's alpha_bar")
        lam = 0.5 * np.log((alpha_bar / (1 - alpha_bar)).double().cpu().numpy())  # falls from t = 0 to T - 1
        t = np.abs(lam[None, :] - (lam[0] + frac * (lam[T - 1] - lam[0]))[:, None]).argmin(1)
        # Near t = 0 one timestep spans a wide range of lambda, so neighbours can round to the same one: move each
        # repeat up past the one before it, and none past T - 1.
        t = np.maximum.accumulate(t - np.arange(steps)) + np.arange(steps)
        return np.minimum(t, np.arange(T - steps, T))[::-1].tolist()
    t = np.round((T - 1) * (frac if spacing == "uniform" else frac**2)).astype(int)
    # Where i^2 grows slower than one step per index (near 0), take i instead:
    # this keeps the steps distinct and still ends exactly at T - 1.
    t = np.maximum(t, np.arange(steps))
    return t[::-1].tolist()


SAMPLERS: dict[str, type[Scheduler]] = {}  # by name: what `make_scheduler`, the pipelines and the command line offer


def register(name: str, title: str) -> Callable[[type[Scheduler]], type[Scheduler]]:
    """Make a scheduler class a sampler that can be asked for by `name` (`title`: its name in tables)."""

    def wrap(cls: type[Scheduler]) -> type[Scheduler]:
        cls.name, cls.title = name, title
        SAMPLERS[name] = cls
        return cls

    return wrap


class Scheduler:
    """What every sampler shares: the timesteps it visits (largest first), the step after each one
    (-1: the clean image), and the model's prediction of x_0, clipped to the pixel range [-1, 1]
    when `clip_x0` (latents are not bounded, so latent pipelines turn it off).

    A sampler's `sample_step(model, x, t)` calls the model as its method needs and steps from t; `order` is the
    order of its error in the step size as an ODE solver; `model_calls()` is how many calls one run makes."""

    name, title = "", ""
    order: int | None = 1
    # DDPM's and DDIM's step from t given the model's answer, which this `sample_step` takes (Heun and
    # DPM-Solver++ take their steps in a `sample_step` of their own, and have no such step)
    step: Callable[..., StepOutput]

    def __init__(self, schedule: Schedule, clip_x0: bool = True) -> None:
        self.schedule, self.clip_x0 = schedule, clip_x0
        self.set_timesteps()

    def set_timesteps(self, steps: int | None = None, spacing: str = "uniform") -> Self:
        """Visit `steps` timesteps (None: all T), spaced uniformly, quadratically or evenly in log-SNR."""
        self.timesteps = ddim_timesteps(
            self.schedule.T, self.schedule.T if steps is None else steps, spacing, self.schedule.alpha_bar
        )
        self._prev = dict(zip(self.timesteps, self.timesteps[1:] + [-1]))
        self.reset()
        return self

    def reset(self) -> None:
        """Forget what earlier steps left behind, before a new run (a multistep sampler remembers its last call)."""

    def model_calls(self) -> int:
        """Model calls (NFE) of one run through the timesteps: one per step here."""
        return len(self.timesteps)

    def sample_step(self, model: nn.Module, x: torch.Tensor, t: int, generator=None) -> StepOutput:
        """One step from t: ask the model for the noise in x_t, then `step`."""
        return self.step(model(x, _t_batch(t, x)), t, x, generator)

    def prev_timestep(self, t: int) -> int:
        """The timestep the step from t lands on (-1 for the clean image)."""
        t = int(t)
        if t not in self._prev:
            shown = self.timesteps if len(self.timesteps) <= 6 else [*self.timesteps[:3], "...", *self.timesteps[-2:]]
            raise DiffeduError(
                f"t = {t} is not one of this scheduler's {len(self.timesteps)} timesteps "
                f"({', '.join(map(str, shown))}): step through scheduler.timesteps"
            )
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


@register("ddpm", "DDPM")
class DDPMScheduler(Scheduler):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): all T steps, each one a
    draw from the posterior q(x_{t-1} | x_t, x_0) with x_0 replaced by the model's guess. A stochastic
    sampler, not an ODE solver: it has no order in that sense."""

    order = None

    def set_timesteps(self, steps: int | None = None, spacing: str = "uniform") -> Self:
        # steps and spacing choose which timesteps to visit; DDPM has no choice, so asking for one is a mistake
        every = f"DDPM visits every one of the T={self.schedule.T} steps"
        ddim = "DDIM (sampler 'ddim', DDIMScheduler)"
        if steps not in (None, self.schedule.T):
            raise DiffeduError(f"{every}: leave steps out, or sample with {ddim} for fewer")
        if spacing != "uniform":
            raise DiffeduError(
                f"{every}, so spacing has nothing to space: leave spacing out, or sample with {ddim} "
                "in fewer, spaced steps"
            )
        return super().set_timesteps()

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, generator=None, noise=None) -> StepOutput:
        """x_t -> x_{t-1}; `noise` (default: drawn from `generator`) is the fresh N(0, I) draw."""
        self.prev_timestep(t)  # a t outside the schedule is an error, not a wrap-around
        s = self.schedule
        x0, _ = self.predict(eps, t, x_t)
        mean = at(s.posterior_coef_x0, t, x_t) * x0 + at(s.posterior_coef_xt, t, x_t) * x_t
        if t == 0:
            return StepOutput(mean, x0)  # the posterior variance at t = 0 is 0
        noise = _noise_like(x_t, generator) if noise is None else noise
        return StepOutput(mean + self.variance(t, x_t).sqrt() * noise, x0)

    def variance(self, t: int, like: torch.Tensor) -> torch.Tensor:
        """The variance of the noise the step from t adds: the true posterior's, beta-tilde_t (diffusers'
        variance_type="fixed_small"), the smaller of Ho et al.'s two choices."""
        return at(self.schedule.posterior_variance, t, like)


@register("ddpm_large", "DDPM-large")
class DDPMLargeScheduler(DDPMScheduler):
    """Ancestral sampling with the larger of Ho et al.'s two variances, sigma_t^2 = beta_t (diffusers'
    variance_type="fixed_large"): the one their CIFAR-10 result used. Both are right at the two extremes of the data
    (beta-tilde for a single point, beta_t for data of unit variance); DDIM's Table 1 has beta_t ahead at 1000 steps."""

    def variance(self, t: int, like: torch.Tensor) -> torch.Tensor:
        return at(self.schedule.betas, t, like)


def ddim_update(
    x0: torch.Tensor, eps: torch.Tensor, ab_prev: torch.Tensor, sigma: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """DDIM's update (Song et al. 2021, eq. 12) without its fresh noise sigma z: the model's clean image x0 and
    noise eps, put together again at the next noise level ab_prev (alpha_bar at t_prev),

        x_prev = sqrt(ab_prev) x0  +  sqrt(1 - ab_prev - sigma^2) eps

    sigma = 0 (eta = 0) is the deterministic step: the probability-flow ODE's Euler step, which Heun takes first
    and `invert_step` takes upwards (to a larger t's alpha_bar)."""
    return ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).sqrt() * eps


@register("ddim", "DDIM")
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
        x_prev = ddim_update(x0, eps, ab_prev, sigma)
        if self.eta > 0 and t_prev >= 0:
            x_prev = x_prev + sigma * (_noise_like(x_t, generator) if noise is None else noise)
        return StepOutput(x_prev, x0)

    def invert_step(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> StepOutput:
        """The deterministic step run backwards: from x at the step after t (prev_timestep(t), the clean
        image for t = 0) up to x_t. `eps` is the model's noise prediction at x. Always eta = 0, unclipped."""
        t_prev = self.prev_timestep(t)
        x0 = x if t_prev < 0 else self.schedule.predict_x0(x, t_prev, eps)
        return StepOutput(ddim_update(x0, eps, self.alpha_bar(t, x)), x0)


def _sigma(alpha_bar: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE's time: sigma = sqrt((1 - alpha_bar) / alpha_bar), 0 for the clean image."""
    return ((1 - alpha_bar) / alpha_bar).sqrt()


@register("heun", "Heun")
class HeunScheduler(Scheduler):
    """Heun's second-order step on the probability-flow ODE, as EDM takes it (Karras et al. 2022, Algorithm 1,
    without churn): an Euler step (DDIM's) from sigma to sigma_prev, the slope eps asked again where it lands,
    and the step taken again with the mean of the two slopes:

        x~' = x~ + (sigma_prev - sigma) eps(x, t)                       (Euler: DDIM)
        x~_prev = x~ + (sigma_prev - sigma) (eps(x, t) + eps(x', t_prev)) / 2

    with x~ = x / sqrt(alpha_bar). Two model calls per step, but one on the last step, into the clean image
    (sigma = 0, where the model cannot be asked): an Euler step there, as EDM's."""

    order = 2

    def model_calls(self) -> int:
        return 2 * len(self.timesteps) - 1

    def sample_step(self, model: nn.Module, x: torch.Tensor, t: int, generator=None) -> StepOutput:
        t_prev = self.prev_timestep(t)
        x0, eps = self.predict(model(x, _t_batch(t, x)), t, x)
        ab, ab_prev = self.alpha_bar(t, x), self.alpha_bar(t_prev, x)
        euler = ddim_update(x0, eps, ab_prev)
        if t_prev < 0:
            return StepOutput(euler, x0)
        _, eps_prev = self.predict(model(euler, _t_batch(t_prev, x)), t_prev, euler)
        x_tilde = x / ab.sqrt() + (_sigma(ab_prev) - _sigma(ab)) * (eps + eps_prev) / 2
        return StepOutput(ab_prev.sqrt() * x_tilde, x0)


@register("dpmpp2m", "DPM-Solver++(2M)")
class DPMSolverScheduler(Scheduler):
    """DPM-Solver++(2M) (Lu et al. 2022): the probability-flow ODE solved exactly for its linear part, in
    lambda = log(sqrt(alpha_bar) / sqrt(1 - alpha_bar)), with the model's clean image x0 extrapolated from this
    step's call and the last one's (multistep: one call per step, second order):

        x_prev = (s_prev / s) x - a_prev (exp(-h) - 1) D,   h = lambda_prev - lambda,
        D = (1 + 1 / (2 r)) x0 - 1 / (2 r) x0_last,         r = (lambda - lambda_last) / h

    (a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar)). With D = x0 it is DDIM: the first step, with no last call,
    and the last, into the clean image (x0 itself), are that first-order step, as diffusers' lower_order_final."""

    order = 2

    def reset(self) -> None:
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # the last step's x0 and lambda

    def sample_step(self, model: nn.Module, x: torch.Tensor, t: int, generator=None) -> StepOutput:
        t_prev = self.prev_timestep(t)
        x0, _ = self.predict(model(x, _t_batch(t, x)), t, x)
        if t_prev < 0:
            self.reset()
            return StepOutput(x0, x0)
        ab, ab_prev = self.alpha_bar(t, x), self.alpha_bar(t_prev, x)
        lam, lam_prev = -_sigma(ab).log(), -_sigma(ab_prev).log()
        h, data = lam_prev - lam, x0
        if self._last is not None:
            x0_last, lam_last = self._last
            r = (lam - lam_last) / h
            data = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_last
        self._last = (x0, lam)
        x_prev = ((1 - ab_prev) / (1 - ab)).sqrt() * x - ab_prev.sqrt() * torch.expm1(-h) * data
        return StepOutput(x_prev, x0)


class Guided(nn.Module):
    """Classifier-free guidance (Ho & Salimans 2022) as a noise predictor for the sampling loop:

        eps = eps_uncond + w (eps_cond - eps_uncond)

    from a class-conditional model, with both predictions from one batched call. w = 0 is the
    unconditional model, w = 1 the conditional one (each a single call), w > 1 pushes samples further
    towards what distinguishes the class."""

    def __init__(self, model: UNet, labels: torch.Tensor | None, guidance: float) -> None:
        super().__init__()
        if not 0 <= guidance < float("inf"):
            raise DiffeduError(
                f"the guidance scale w must be 0 or more (0: unconditional, 1: conditional), got {guidance}"
            )
        self.model, self.labels, self.guidance = model, labels, guidance

    def conditions(self) -> tuple[dict, dict]:
        """The model's keyword arguments for the conditional and for the unconditional prediction."""
        assert self.labels is not None
        return {"y": self.labels}, {"y": torch.full_like(self.labels, self.model.config.num_classes)}

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond, uncond = self.conditions()
        if self.guidance == 0:
            return self.model(x, t, **uncond)
        if self.guidance == 1:
            return self.model(x, t, **cond)
        t = torch.as_tensor(t, device=x.device).expand(len(x))
        both = {key: torch.cat([cond[key], uncond[key]]) for key in cond}
        eps_cond, eps_uncond = self.model(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
        return eps_uncond + self.guidance * (eps_cond - eps_uncond)


class PromptGuided(Guided):
    """Classifier-free guidance for a text-conditioned UNet (lesson 11): the conditional prediction attends to the
    prompts' token states, the unconditional one to the empty prompt's, as Stable Diffusion's."""

    def __init__(self, model: UNet, prompt: tuple[torch.Tensor, torch.Tensor], empty, guidance: float) -> None:
        super().__init__(model, None, guidance)
        self.prompt, self.empty = prompt, empty  # each (token states, mask)

    def conditions(self) -> tuple[dict, dict]:
        return dict(zip(("context", "mask"), self.prompt)), dict(zip(("context", "mask"), self.empty))


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
    model_calls: int = 0  # the run's cost: how many times it asked the model (NFE)


class Snapshots(nn.Module):
    """A model that keeps its own trajectory: wrapped around the noise predictor of a sampling loop written
    anywhere (a lesson's), it records x_t and the predicted clean image (clipped to [-1, 1]) at `frames` evenly
    spaced timesteps of T, on the CPU, and answers as the model does."""

    def __init__(self, model: nn.Module, alpha_bar: torch.Tensor, frames: int = 20) -> None:
        super().__init__()
        self.model, self.alpha_bar = model, alpha_bar
        self.kept: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (t, x_t, predicted x_0) at each kept t
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
    """Run the sampler from x_T, keeping `frames` evenly spaced snapshots (on the CPU), at most one a step."""
    if frames < 0:
        raise DiffeduError(f"frames must be 0 (keep none) or more, got {frames}")
    model.eval()
    last = len(scheduler.timesteps) - 1
    keep = set(np.linspace(0, last, min(frames, last + 1)).round().astype(int).tolist()) if frames > 0 else set()
    x, kept, counted = x_T, [], Counted(model)
    scheduler.reset()
    for i, t in enumerate(tqdm(scheduler.timesteps, desc=type(scheduler).__name__, disable=not progress, leave=False)):
        x_prev, x0 = scheduler.sample_step(counted, x, t, generator)
        if i in keep:
            kept.append((t, x.float().cpu().contiguous(), x0.float().cpu().contiguous()))
        x = x_prev
    x = x.contiguous()  # NCHW, whatever memory order the model computes in
    if not kept:
        return Trajectory([], torch.empty(0), torch.empty(0), x, counted.calls)
    ts, xs, x0s = zip(*kept)
    return Trajectory(list(ts), torch.stack(xs), torch.stack(x0s), x, counted.calls)


class Counted(nn.Module):
    """A model that counts its calls: the cost of a sampling run, in model evaluations (NFE)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x, t)


def sample(
    model: nn.Module, scheduler: Scheduler, x_T: torch.Tensor, generator=None, progress: bool = True
) -> torch.Tensor:
    """The final images only."""
    return sample_trajectory(model, scheduler, x_T, frames=0, generator=generator, progress=progress).images


def ddpm_sample(model, schedule: Schedule, x_T, clip_x0: bool = True, **kwargs) -> torch.Tensor:
    return sample(model, DDPMScheduler(schedule, clip_x0), x_T, **kwargs)


def ddim_sample(
    model,
    schedule: Schedule,
    x_T,
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "uniform",
    clip_x0: bool = True,
    **kwargs,
) -> torch.Tensor:
    return sample(model, DDIMScheduler(schedule, eta, clip_x0).set_timesteps(steps, spacing), x_T, **kwargs)


DEFAULT_STEPS = 50  # a sampler's steps when none are asked for (DDPM's excepted: always all T)
ALL_STEPS = tuple(name for name, sampler in SAMPLERS.items() if issubclass(sampler, DDPMScheduler))  # no choice


def make_scheduler(
    name: str,
    schedule: Schedule,
    steps: int | None = None,
    eta: float = 0.0,
    spacing: str = "uniform",
    clip_x0: bool = True,
) -> Scheduler:
    """A sampler by its registered name (`SAMPLERS`): 'ddpm' or 'ddpm_large' (always all T steps), or 'ddim',
    'heun', 'dpmpp2m' in `steps` steps (None: DEFAULT_STEPS). `eta` is DDIM's alone."""
    if name not in tuple(SAMPLERS):  # (a tuple: an unhashable name is unknown too, not a TypeError)
        raise DiffeduError(f"unknown sampler {name!r}; choose one of {', '.join(map(repr, SAMPLERS))}")
    if eta and name != "ddim":
        raise DiffeduError(
            f"eta is DDIM's knob (0: deterministic, 1: as noisy as DDPM); {SAMPLERS[name].title} has none. "
            "Leave eta out, or sample with DDIM"
        )
    if name in ALL_STEPS:  # all T steps, whatever the default
        return SAMPLERS[name](schedule, clip_x0).set_timesteps(steps, spacing)
    scheduler = DDIMScheduler(schedule, eta, clip_x0) if name == "ddim" else SAMPLERS[name](schedule, clip_x0)
    return scheduler.set_timesteps(DEFAULT_STEPS if steps is None else steps, spacing)


FLOW_SAMPLERS = {"euler": "Euler", "heun": "Heun"}  # a flow-matching model's solvers, by name and title


def flow_model_calls(sampler: str, steps: int) -> int:
    """Model calls (NFE) of `flow_sample`: one a step for Euler, two for Heun but one for its last step."""
    if sampler not in tuple(FLOW_SAMPLERS):
        raise DiffeduError(f"unknown flow sampler {sampler!r}; choose one of {', '.join(map(repr, FLOW_SAMPLERS))}")
    check_steps(steps, MAX_STEPS, f"{MAX_STEPS:,}")
    return 2 * steps - 1 if sampler == "heun" else steps


@torch.inference_mode()
def flow_sample(
    velocity: nn.Module, x1: torch.Tensor, steps: int, sampler: str = "euler", progress: bool = False
) -> Trajectory:
    """Solve a flow-matching model's ODE dx/dt = v(x, t) from the noise x1 at t = 1 to an image at t = 0, in
    `steps` evenly spaced steps of t (rectified flow's grid): by Euler's method (lesson 09's `fm_sample`; on the
    flow it is DDIM's step), or by Heun's (the mean of the slopes at both ends of the Euler step: second order,
    two calls a step) with its last step, into t = 0, by Euler as EDM's (`HeunScheduler`): asked at t = 0 too,
    fm-cifar10 sharpens past the data (fine detail 1.10 of real images' at 5 steps, against 0.43 without)."""
    calls = flow_model_calls(sampler, steps)
    x, ts = x1, torch.linspace(1, 0, steps + 1, dtype=torch.float64).tolist()

    def at(t: float) -> torch.Tensor:  # one t per image
        return torch.full((len(x),), t, dtype=x.dtype, device=x.device)

    velocity.eval()
    for t, t_next in tqdm(list(zip(ts[:-1], ts[1:])), desc=f"flow {sampler}", disable=not progress, leave=False):
        slope = velocity(x, at(t))
        if sampler == "heun" and t_next > 0:
            slope = (slope + velocity(x + (t_next - t) * slope, at(t_next))) / 2
        x = x + (t_next - t) * slope
    return Trajectory([], torch.empty(0), torch.empty(0), x.contiguous(), calls)


CONSISTENCY = "consistency"  # a consistency model's sampler (lesson 10): steps are its model calls


def consistency_times(steps: int) -> list[float]:
    """Where multistep consistency sampling asks the model: t = 1, then `steps - 1` more evenly spaced times, as
    flow Euler's grid (2 steps: 1, 1/2; 4: 1, 3/4, 1/2, 1/4)."""
    check_steps(steps, MAX_STEPS, f"{MAX_STEPS:,}")
    return torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1].tolist()


@torch.inference_mode()
def consistency_sample(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    steps: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Trajectory:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1): the image f(x1, 1) from the noise x1; then,
    at each smaller t of `consistency_times(steps)`, put it back on a line at t with fresh noise,
    x_t = (1 - t) x0 + t z, and ask f again. One model call a step; more steps fix what one jump got wrong."""
    x0 = x1
    for i, t in enumerate(tqdm(consistency_times(steps), desc="consistency", disable=not progress, leave=False)):
        x_t = x1 if i == 0 else (1 - t) * x0 + t * _noise_like(x0, generator)
        x0 = f(x_t, torch.full((len(x1),), t, dtype=x1.dtype, device=x1.device))
    return Trajectory([], torch.empty(0), torch.empty(0), x0.contiguous(), steps)


@torch.inference_mode()
def ddim_invert(
    model: nn.Module,
    schedule: Schedule,
    x0: torch.Tensor,
    steps: int = 100,
    spacing: str = "uniform",
    progress: bool = True,
) -> torch.Tensor:
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
