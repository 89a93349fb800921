"""Lesson 01, the forward process (lessons/01_forward_process.py): alpha_bar, next_noise_variance, q_sample."""

from __future__ import annotations

import torch

from ..schedules import Schedule, at, cosine_betas, linear_betas
from .compare import compared
from .core import F64, LINEAR, _randn


def _ref_alpha_bar(betas) -> torch.Tensor:
    return Schedule(betas).alpha_bar


_TABLES = (
    linear_betas(1000),
    cosine_betas(1000),
    torch.rand(12, generator=torch.Generator().manual_seed(0), dtype=F64) / 2,
)
alpha_bar = compared(
    "alpha_bar",
    "01_forward_process",
    _ref_alpha_bar,
    cases=lambda: [(b.clone(),) for b in _TABLES],
    expected=lambda: [Schedule(b).alpha_bar for b in _TABLES],
    mistakes={
        "that multiplies the betas; alpha_bar multiplies the alphas, alpha_t = 1 - beta_t": lambda b: torch.cumprod(
            b, 0
        ),
        "a sum where a product belongs: alpha_bar_t = prod_{s <= t} (1 - beta_s) (torch.cumprod)": lambda b: (
            torch.cumsum(1 - b, 0)
        ),
        "off by one: the product includes step t itself, so alpha_bar_0 = 1 - beta_0, not 1": lambda b: torch.cat(
            [b.new_ones(1), torch.cumprod(1 - b, 0)[:-1]]
        ),
        "that is 1 - prod(beta_s); alpha_bar is prod(1 - beta_s)": lambda b: 1 - torch.cumprod(b, 0),
    },
    verifies="equals diffedu's alpha_bar for the linear, cosine and a random schedule (linear: "
    "0.9999 at t = 0, 4.0e-05 at t = 999)",
)


def _ref_next_noise_variance(alpha_t, alpha_bar_prev) -> torch.Tensor:
    return 1 - alpha_t * alpha_bar_prev  # = 1 - alpha_bar_t: the claim being proved


_ALPHA, _AB_PREV = (
    1 - _randn(50, seed=3).abs() / 50,
    torch.rand(50, generator=torch.Generator().manual_seed(4), dtype=F64),
)
next_noise_variance = compared(
    "next_noise_variance",
    "01_forward_process",
    _ref_next_noise_variance,
    cases=lambda: [(_ALPHA.clone(), _AB_PREV.clone())],
    expected=lambda: [1 - _ALPHA * _AB_PREV],
    mistakes={
        "standard deviations added: "
        "independent noises add their variances, not their standard deviations": lambda a, p: (
            (a * (1 - p)).sqrt() + (1 - a).sqrt()
        ),
        "scaling x_{t-1} by sqrt(alpha_t) scales its noise's variance "
        "by alpha_t (the square of the factor), not sqrt(alpha_t)": lambda a, p: a.sqrt() * (1 - p) + (1 - a),
        "the old noise shrinks too: it is inside x_{t-1}, which is multiplied by sqrt(alpha_t)": lambda a, p: (
            (1 - p) + (1 - a)
        ),
    },
    verifies="alpha_t (1 - alpha_bar_{t-1}) + beta_t = 1 - alpha_bar_t: "
    "the noise stays one Gaussian, and the induction holds",
)


def _ref_q_sample(x0, t, noise, alpha_bar) -> torch.Tensor:
    ab = at(alpha_bar, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def _q_sample_cases() -> list[tuple]:
    t = torch.tensor([0, 1, 250, 500, 998, 999, 10, 600])
    return [(_randn(8, 3, 4, 4, seed=1).clamp(-1, 1), t.clone(), _randn(8, 3, 4, 4, seed=2), LINEAR.alpha_bar.clone())]


q_sample = compared(
    "q_sample",
    "01_forward_process",
    _ref_q_sample,
    cases=_q_sample_cases,
    expected=lambda: [LINEAR.q_sample(x0, t, noise) for x0, t, noise, _ in _q_sample_cases()],
    mistakes={
        "the signal is scaled by sqrt(alpha_bar_t) "
        "and the noise by sqrt(1 - alpha_bar_t): the square roots are missing": lambda x0, t, n, ab: (
            ab[t].view(-1, 1, 1, 1) * x0 + (1 - ab[t].view(-1, 1, 1, 1)) * n
        ),
        "the noise's factor is sqrt(1 - alpha_bar_t), "
        "a standard deviation: its square root is missing": lambda x0, t, n, ab: (
            ab[t].view(-1, 1, 1, 1).sqrt() * x0 + (1 - ab[t].view(-1, 1, 1, 1)) * n
        ),
        "off by one: alpha_bar[t] is the table's value at t (t counts from 0)": lambda x0, t, n, ab: _ref_q_sample(
            x0, (t - 1).clamp(min=0), n, ab
        ),
        "each image has its own t: index alpha_bar with the whole tensor t, not t[0]": lambda x0, t, n, ab: (
            _ref_q_sample(x0, t[:1].expand(len(t)), n, ab)
        ),
        "x_0 and the noise are swapped: sqrt(alpha_bar_t) scales the image": lambda x0, t, n, ab: _ref_q_sample(
            n, t, x0, ab
        ),
    },
    verifies="x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, with one t per image, at t = 0, 1, ..., 999",
)
