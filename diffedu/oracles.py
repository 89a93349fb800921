"""Exact noise predictors: where the data's distribution is known, so is the best prediction of the noise,
in closed form. A sampler, a loss or a guidance rule driven by one must give what theory says (samples of the
data's distribution, the irreducible loss), with no training involved: tests, the exercises' checks and the
lessons use them as ground truth.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .nets import UNetConfig
from .schedules import Schedule, at


class GaussianDenoiser(nn.Module):
    """The exact noise predictor when the data is N(mean, std^2 I).

    Then x_t ~ N(sqrt(ab) mean, ab std^2 + 1 - ab) and the best guess of the noise
    is linear in x_t:  E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mean) / (ab std^2 + 1 - ab).
    The probability-flow ODE driven by it (`flow`; DDIM at eta = 0, as its steps grow many) carries N(0, 1) noise
    to N(mean, std^2) exactly. DDPM's ancestral sampler does not quite: its fixed variance leaves out the spread of
    x_0 given x_t at every step, so its samples come out a little narrower (`ancestral_moments` says by how much).
    That is how the samplers are tested, with no training involved.
    """

    def __init__(self, schedule: Schedule, mean: float, std: float) -> None:
        super().__init__()
        self.schedule, self.mean, self.std = schedule, mean, std

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = at(self.schedule.alpha_bar, torch.as_tensor(t).expand(len(x)), x)
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mean) / (ab * self.std**2 + 1 - ab)

    def ancestral_moments(self, variance: torch.Tensor | None = None) -> tuple[float, float]:
        """The mean and standard deviation of what DDPM's ancestral sampler returns from x_T ~ N(0, 1) with this
        exact noise prediction and a fixed variance per step (default: the posterior's, beta-tilde), without
        clipping: each step is linear, x_{t-1} = a_t x_t + b_t + sqrt(variance_t) z, so the moments follow exactly."""
        s = self.schedule
        variance = s.posterior_variance if variance is None else variance
        m, v = 0.0, 1.0
        for t in reversed(range(s.T)):
            ab = s.alpha_bar[t].item()
            k = math.sqrt(1 - ab) / (ab * self.std**2 + 1 - ab)  # eps = k (x_t - sqrt(ab) mean)
            x0_a, x0_b = (1 - math.sqrt(1 - ab) * k) / math.sqrt(ab), math.sqrt(1 - ab) * k * self.mean  # x0 = a x + b
            a = s.posterior_coef_x0[t].item() * x0_a + s.posterior_coef_xt[t].item()
            m, v = a * m + s.posterior_coef_x0[t].item() * x0_b, a * a * v + variance[t].item()
        return m, math.sqrt(v)

    def flow(self, x: torch.Tensor, t: int, t_to: int) -> torch.Tensor:
        """The exact solution of the probability-flow ODE from x at timestep t to timestep t_to (-1: the clean
        image). In sigma = sqrt((1 - ab) / ab) and x~ = x / sqrt(ab) the ODE is dx~/dsigma = E[eps | x_t]; for this
        data that is (x~ - mean) sigma / (std^2 + sigma^2), so x~ - mean grows as sqrt(std^2 + sigma^2)."""
        ab = self.schedule.alpha_bar.to(x.dtype)
        ab_to = ab[t_to] if t_to >= 0 else ab.new_ones(())
        sigma2, sigma2_to = (1 - ab[t]) / ab[t], (1 - ab_to) / ab_to
        x_tilde = (
            self.mean + (x / ab[t].sqrt() - self.mean) * ((self.std**2 + sigma2_to) / (self.std**2 + sigma2)).sqrt()
        )
        return ab_to.sqrt() * x_tilde


class TwoGaussians(nn.Module):
    """The exact noise predictor for data that is N(-mean, std^2) (class 0) or N(+mean, std^2) (class 1), half
    each, with class labels as a class-conditional UNet takes them (2: no label). Given the class it is the
    Gaussian one; without, the mixture's: the class posteriors p(k | x_t) are known in closed form, and
    E[eps | x_t] is their average of the two classes' predictions."""

    def __init__(self, schedule: Schedule, mean: float = 1.0, std: float = 0.3) -> None:
        super().__init__()
        self.schedule, self.mean, self.std = schedule, mean, std
        self.config = UNetConfig(in_channels=1, image_size=1, channel_mult=(1,), num_classes=2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        ab = at(self.schedule.alpha_bar, torch.as_tensor(t).expand(len(x)), x)
        var = ab * self.std**2 + 1 - ab
        means = torch.stack([-self.mean * ab.sqrt(), self.mean * ab.sqrt()])  # E[x_t | class]
        eps = (1 - ab).sqrt() * (x - means) / var  # E[eps | x_t, class], per class
        y = torch.full((len(x),), 2) if y is None else torch.as_tensor(y).expand(len(x))
        posterior = torch.softmax(-((x - means) ** 2).sum(dim=(2, 3, 4)) / (2 * var.flatten()), dim=0)  # p(k | x_t)
        mixture = (posterior.view(2, -1, 1, 1, 1) * eps).sum(0)
        picked = eps.gather(0, y.clamp(max=1).view(1, -1, 1, 1, 1).expand(1, *x.shape))[0]
        return torch.where((y == 2).view(-1, 1, 1, 1), mixture, picked)


class GaussianVelocity(nn.Module):
    """The exact velocity of flow matching (rectified flow) when the data is N(mean, std^2 I).

    x_t = (1 - t) x_0 + t eps, t in [0, 1], and the network learns v = eps - x_0. Given x_t, both are Gaussian:
    with V = (1 - t)^2 std^2 + t^2 (the variance of x_t) and mu = (1 - t) mean (its mean),
    E[x_0 | x_t] = mean + (1 - t) std^2 (x_t - mu) / V and E[eps | x_t] = t (x_t - mu) / V, so the best v is
    linear in x_t:  v = (t - (1 - t) std^2) (x_t - mu) / V - mean.
    """

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def _moments(self, t: torch.Tensor | float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """t shaped to broadcast over `like`'s images, and x_t's mean and variance there."""
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(-1, *[1] * (like.dim() - 1))
        return t, (1 - t) * self.mean, (1 - t) ** 2 * self.std**2 + t**2

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t, mu, variance = self._moments(t, x)
        return (t - (1 - t) * self.std**2) * (x - mu) / variance - self.mean

    def flow(self, x: torch.Tensor, t: torch.Tensor | float, t_to: torch.Tensor | float) -> torch.Tensor:
        """The exact solution of dx/dt = v(x, t) from time t to t_to: x_t's distribution stays N(mu, V), and
        the flow keeps each point's standardised position, x - mu growing as sqrt(V)."""
        _, mu, variance = self._moments(t, x)
        _, mu_to, variance_to = self._moments(t_to, x)
        return mu_to + (variance_to / variance).sqrt() * (x - mu)


class MixtureVelocity(nn.Module):
    """The exact flow-matching velocity when the data is an equal mixture of N(c_k, std^2 I) clusters, for points
    x of shape (N, D) and centres of shape (K, D): lesson 09's two-dimensional picture of the learned ODE.

    Given the cluster, x_t is Gaussian as in GaussianVelocity, with mean (1 - t) c_k and variance V; the clusters'
    answers are averaged with each one's posterior weight given x_t (a softmax of its log-density), so the
    velocity bends where clusters compete, though every conditional path is straight."""

    def __init__(self, centres: torch.Tensor, std: float) -> None:
        super().__init__()
        self.centres, self.std = centres, std

    def forward(self, x: torch.Tensor, t: float) -> torch.Tensor:
        variance = (1 - t) ** 2 * self.std**2 + t**2
        offset = x[:, None, :] - (1 - t) * self.centres.to(x)[None]  # (N, K, D): x_t from each cluster's mean
        weight = torch.softmax(-offset.pow(2).sum(-1) / (2 * variance), dim=1)[..., None]
        velocity = (t - (1 - t) * self.std**2) * offset / variance - self.centres.to(x)[None]  # each cluster's
        return (weight * velocity).sum(1)


class GaussianConsistency(GaussianVelocity):
    """The exact consistency model of N(mean, std^2 I) data, in the form a consistency-tuned flow model has
    (lesson 10): a network F whose f(x_t, t) = x_t - t F(x_t, t) is the flow's exact solution map to the data end,
    `flow(x_t, t, 0)`. So F = (x_t - flow(x_t, t, 0)) / t, and at t = 0 (where f is x itself) the velocity."""

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t_ = (
            torch.as_tensor(t, dtype=x.dtype, device=x.device)
            .reshape(-1, *[1] * (x.dim() - 1))
            .expand(len(x), *[1] * (x.dim() - 1))
        )
        jump = (x - self.flow(x, t_, 0.0)) / t_.clamp_min(1e-12)
        return torch.where(t_ > 0, jump, super().forward(x, t_))
