"""Lesson 04, a VAE (lessons/04_vae.py): reparameterize, kl_divergence, scale_factor, hinge_d_loss."""

from __future__ import annotations

import contextlib

import torch

from ..adversarial import hinge_d_loss as _hinge_d_loss
from ..latent import measure_scale_factor
from ..vae import kl_divergence as _kl_divergence
from ..vae import reparameterize as _reparameterize
from .compare import _close, _compare, compared
from .core import F64, Mistake, _randn, exercise


def _ref_reparameterize(mean, logvar, noise) -> torch.Tensor:
    return _reparameterize(mean, logvar, noise)


@exercise(_ref_reparameterize, "04_vae")
def reparameterize(fn) -> str:
    mean, logvar, noise = _randn(64, 4, seed=80), _randn(64, 4, seed=81) - 1, _randn(64, 4, seed=82)
    cases = lambda: [(mean.clone(), logvar.clone(), noise.clone())]  # noqa: E731
    _compare(
        fn,
        cases,
        [_reparameterize(mean, logvar, noise)],
        {
            "exp(logvar) is the variance; "
            "the noise is scaled by the standard deviation exp(logvar / 2)": lambda m, lv, n: m + lv.exp() * n,
            "logvar is the log of the variance, not the standard deviation: std = exp(0.5 * logvar)": lambda m, lv, n: (
                m + lv * n
            ),
            "the noise is scaled by the standard deviation, not added to it": lambda m, lv, n: m + (0.5 * lv).exp() + n,
        },
    )
    m, lv = mean.clone().requires_grad_(), logvar.clone().requires_grad_()
    with contextlib.suppress(RuntimeError):  # "does not require grad": the graph was cut
        fn(m, lv, noise).sum().backward()
    if m.grad is None or lv.grad is None or not _close(lv.grad, 0.5 * (0.5 * logvar).exp() * noise):
        raise Mistake(
            "gradients must flow into mean and logvar: compute z from them with torch operations, without .detach()"
        )
    return "z = mean + exp(logvar / 2) eps, and its gradients reach the mean and the log-variance"


def _ref_kl_divergence(mean, logvar) -> torch.Tensor:
    return _kl_divergence(mean, logvar)


def _kl_cases() -> list[tuple]:
    return [
        (_randn(8, 4, 8, 8, seed=90), _randn(8, 4, 8, 8, seed=91)),
        (torch.zeros(2, 4, dtype=F64), torch.zeros(2, 4, dtype=F64)),
    ]


kl_divergence = compared(
    "kl_divergence",
    "04_vae",
    _ref_kl_divergence,
    cases=_kl_cases,
    expected=lambda: [_kl_divergence(*case) for case in _kl_cases()],
    mistakes={
        "summed: average over every latent value (and the batch), "
        "so the weight of the KL does not depend on the batch size": lambda m, lv: (
            0.5 * (m**2 + lv.exp() - 1 - lv).sum()
        ),
        "summed over each image's latent values, then averaged over the batch "
        "(most VAE code's convention): here the KL is the mean over every value, "
        "as the L1 term is a mean over pixels, and its weight is set for that": lambda m, lv: (
            0.5 * (m**2 + lv.exp() - 1 - lv).flatten(1).sum(1).mean()
        ),
        "the factor 1/2 is missing": lambda m, lv: (m**2 + lv.exp() - 1 - lv).mean(),
        "the log term enters with a minus: KL = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2)": lambda m, lv: (
            0.5 * (m**2 + lv.exp() - 1 + lv).mean()
        ),
        "sigma^2 = exp(logvar), not exp(2 logvar): logvar is already the log of the variance": lambda m, lv: (
            0.5 * (m**2 + (2 * lv).exp() - 1 - lv).mean()
        ),
    },
    verifies="KL(N(mu, sigma^2) || N(0, 1)) = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2), "
    "averaged over values; 0 for N(0, 1) itself",
)


def _ref_scale_factor(means) -> float:
    return measure_scale_factor(means)


_MEANS = _randn(200, 4, 8, 8, seed=95) * torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=F64).view(1, 4, 1, 1) + 0.3
scale_factor = compared(
    "scale_factor",
    "04_vae",
    _ref_scale_factor,
    cases=lambda: [(_MEANS.clone(),)],
    expected=lambda: [measure_scale_factor(_MEANS)],
    answer=lambda out: float(out) if torch.as_tensor(out).numel() == 1 else out,
    mistakes={
        "that is the standard deviation; the scale factor is its inverse, "
        "1 / std, which brings the latents to unit variance": lambda m: m.std().item(),
        "1 / variance over-corrects: divide by the standard deviation, 1 / std": lambda m: 1 / m.var().item(),
        "one number for the whole latent space (as Stable Diffusion's 0.18215), not one per channel": lambda m: (
            1 / m.transpose(0, 1).flatten(1).std(dim=1)
        ),
        "the spread is the standard deviation, not the mean absolute value": lambda m: 1 / m.abs().mean().item(),
    },
    rtol=1e-4,
    verifies=f"1 / std of the latents ({measure_scale_factor(_MEANS):.4f} here): "
    "multiplied by it, they have unit variance",
)


def _hinge_cases() -> list[tuple]:
    mixed = torch.tensor([3.0, 3.0, 3.0, 0.0], dtype=F64).view(1, 1, 2, 2)  # most patches beyond the margin, one not
    return [
        (2 * _randn(4, 1, 8, 8, seed=96), 2 * _randn(4, 1, 8, 8, seed=97) - 0.5),
        (torch.full((2, 1, 8, 8), 1.5, dtype=F64), torch.full((2, 1, 8, 8), -1.5, dtype=F64)),
        (mixed, -mixed),
    ]


_relu = torch.relu
hinge_d_loss = compared(
    "hinge_d_loss",
    "04_vae",
    _hinge_d_loss,
    cases=_hinge_cases,
    expected=lambda: [_hinge_d_loss(*case) for case in _hinge_cases()],
    mistakes={
        "the signs are swapped: "
        "real patches should score high, relu(1 - real), and decoded ones low, relu(1 + fake)": lambda r, f: (
            0.5 * (_relu(1 + r).mean() + _relu(1 - f).mean())
        ),
        "the relu goes on each patch, inside the mean: relu(1 - real).mean(). Outside it, patches far beyond their "
        "margin cancel the cost of those still wrong": lambda r, f: (
            0.5 * (_relu((1 - r).mean()) + _relu((1 + f).mean()))
        ),
        "without the relu it is not a hinge: a patch already beyond its margin should cost nothing": lambda r, f: (
            0.5 * ((1 - r).mean() + (1 + f).mean())
        ),
        "the margin is 1: relu(1 - real) and relu(1 + fake), not relu(-real) and relu(fake)": lambda r, f: (
            0.5 * (_relu(-r).mean() + _relu(f).mean())
        ),
        "the factor 1/2 is missing: the loss is the average of the real and the decoded term": lambda r, f: (
            _relu(1 - r).mean() + _relu(1 + f).mean()
        ),
        "summed over patches: average them, so that the loss does not grow with the image or the batch": lambda r, f: (
            0.5 * (_relu(1 - r).sum() + _relu(1 + f).sum())
        ),
    },
    verifies="1/2 mean(relu(1 - real)) + 1/2 mean(relu(1 + fake)); 0 once every patch is beyond its margin",
)
