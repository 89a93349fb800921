"""Lesson 03, DDIM (lessons/03_ddim.py): ddim_sigma, ddim_step, ddim_timesteps, sample_ddim, ddim_invert_step."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..samplers import DDIMScheduler, ddim_sample
from ..samplers import _noise_like as _noise  # a step's fresh noise, drawn as diffedu's own samplers draw it
from ..samplers import ddim_timesteps as _ddim_timesteps
from .compare import SKIPPED, _close, _compare, _diffusers, _diffusers_version, _same_run, compared
from .core import F64, LINEAR, Mistake, _randn, exercise
from .lesson02 import EXACT, SHORT


def _ref_ddim_sigma(alpha_bar_t, alpha_bar_prev, eta) -> torch.Tensor:
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()


def _ddim_pairs(steps: int = 10) -> list[tuple]:
    """(t, alpha_bar_t, alpha_bar_prev) for each step of a DDIM run, the last one landing on the clean image."""
    scheduler = DDIMScheduler(LINEAR).set_timesteps(steps)
    return [
        (t, LINEAR.alpha_bar[t], scheduler.alpha_bar(scheduler.prev_timestep(t), LINEAR.alpha_bar))
        for t in scheduler.timesteps
    ]


_ETAS = (0.0, 0.5, 1.0)


def _ddim_sigma_cases() -> list[tuple]:
    pairs = _ddim_pairs()
    ab, ab_prev = torch.stack([p[1] for p in pairs]), torch.stack([p[2] for p in pairs])
    return [(ab.clone(), ab_prev.clone(), eta) for eta in _ETAS]


ddim_sigma = compared(
    "ddim_sigma",
    "03_ddim",
    _ref_ddim_sigma,
    cases=_ddim_sigma_cases,
    expected=lambda: [
        torch.stack([DDIMScheduler(LINEAR, eta).set_timesteps(10).sigma(t) for t, _, _ in _ddim_pairs()])
        for eta in _ETAS
    ],
    mistakes={
        "eta multiplies sigma: "
        "eta = 0 must give sigma = 0 (deterministic DDIM), eta = 1 DDPM's amount": lambda a, p, eta: _ref_ddim_sigma(
            a, p, 1.0
        ),
        "sigma is a standard deviation: take the square root of the product": lambda a, p, eta: (
            eta * ((1 - p) / (1 - a) * (1 - a / p))
        ),
        "the first ratio is (1 - alpha_bar_prev) / (1 - alpha_bar_t), not its inverse": lambda a, p, eta: (
            eta * ((1 - a) / (1 - p) * (1 - a / p)).sqrt()
        ),
    },
    verifies="Song et al. eq. 16 at each step of a 10-step run for eta = 0, 0.5, 1 "
    "(0 on the last step, into the clean image)",
)


def _ref_ddim_step(eps, x_t, alpha_bar_t, alpha_bar_prev, eta, noise) -> torch.Tensor:
    x0 = ((x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()).clamp(-1, 1)
    eps = (x_t - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()  # the noise that agrees with the clipped x_0
    sigma = _ref_ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    return alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev - sigma**2).sqrt() * eps + sigma * noise


def _ddim_step_cases(pairs) -> list[tuple]:
    return [
        (
            _randn(4, 3, 4, 4, seed=30 + i),
            _randn(4, 3, 4, 4, seed=40 + i) * 1.3,
            a.clone(),
            p.clone(),
            eta,
            _randn(4, 3, 4, 4, seed=50 + i),
        )
        for i, (_, a, p) in enumerate(pairs)
        for eta in (0.0, 0.6, 1.0)
    ]


@exercise(_ref_ddim_step, "03_ddim")
def ddim_step(fn) -> str:
    pairs = _ddim_pairs()
    cases = lambda: _ddim_step_cases(pairs)  # noqa: E731
    expected = [
        DDIMScheduler(LINEAR, eta).set_timesteps(10).step(eps, t, x, noise=noise).prev
        for (t, _, _), (eps, x, _, _, eta, noise) in zip([p for p in pairs for _ in range(3)], cases())
    ]

    def unclipped(eps, x, a, p, eta, n) -> torch.Tensor:
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        s = _ref_ddim_sigma(a, p, eta)
        return p.sqrt() * x0 + (1 - p - s**2).sqrt() * eps + s * n

    def eps_not_recomputed(eps, x, a, p, eta, n) -> torch.Tensor:
        x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        s = _ref_ddim_sigma(a, p, eta)
        return p.sqrt() * x0 + (1 - p - s**2).sqrt() * eps + s * n

    def direction_keeps_all(eps, x, a, p, eta, n) -> torch.Tensor:
        s = _ref_ddim_sigma(a, p, eta)
        return (
            _ref_ddim_step(eps, x, a, p, eta, n)
            - (1 - p - s**2).sqrt() * _clipped_eps(eps, x, a)
            + (1 - p).sqrt() * _clipped_eps(eps, x, a)
        )

    _compare(
        fn,
        cases,
        expected,
        {
            "eta multiplies sigma: "
            "with eta = 0 no noise is added and the step is deterministic": lambda eps, x, a, p, eta, n: _ref_ddim_step(
                eps, x, a, p, 1.0, n
            ),
            "the direction term is sqrt(1 - alpha_bar_prev - sigma^2) eps: "
            "the noise's share of the variance comes out of it": direction_keeps_all,
            "clip the predicted x_0 to [-1, 1] (pixels live there), then recompute eps from the clipped x_0": unclipped,
            "after clipping x_0, recompute eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t), "
            "so that the step stays consistent (diffusers' use_clipped_model_output)": eps_not_recomputed,
            "x_prev = sqrt(alpha_bar_prev) x_0 + ...: the square root is missing": lambda eps, x, a, p, eta, n: (
                _ref_ddim_step(eps, x, a, p, eta, n) + (p - p.sqrt()) * _clipped_x0(eps, x, a)
            ),
        },
    )
    compared = _against_diffusers_ddim(fn)
    return (
        "Song et al. eq. 12: x_0 from eps (clipped), the direction to x_t and sigma's fresh noise, at every step of a "
        f"10-step run for eta = 0, 0.6, 1, equal to diffedu's DDIMScheduler{compared}"
    )


def _clipped_x0(eps, x, a) -> torch.Tensor:
    return ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)


def _clipped_eps(eps, x, a) -> torch.Tensor:
    return (x - a.sqrt() * _clipped_x0(eps, x, a)) / (1 - a).sqrt()


def _against_diffusers_ddim(fn) -> str:
    cls = _diffusers("DDIMScheduler")
    if cls is None:
        return SKIPPED.format("DDIMScheduler")
    theirs = cls(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, set_alpha_to_one=True)
    theirs.alphas_cumprod, theirs.final_alpha_cumprod = LINEAR.alpha_bar.clone(), torch.tensor(1.0, dtype=F64)
    theirs.set_timesteps(10)  # diffusers steps by T // 10: 900, 800, ..., 0, each to the one 100 below
    pairs = [
        (int(t), LINEAR.alpha_bar[int(t)], LINEAR.alpha_bar[int(t) - 100] if t >= 100 else torch.tensor(1.0, dtype=F64))
        for t in theirs.timesteps
    ]
    for (t, _, _), (eps, x, a, p, eta, noise) in zip([p for p in pairs for _ in range(3)], _ddim_step_cases(pairs)):
        want = theirs.step(eps, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise).prev_sample
        if not _close(fn(eps, x, a, p, eta, noise), want, rtol=1e-8, atol=1e-10):
            raise Mistake(f"it differs from diffusers' DDIMScheduler.step at t = {t}, eta = {eta}")
    return (
        f", and to diffusers {_diffusers_version()}'s DDIMScheduler.step (its own timesteps 900, 800, ..., 0) "
        "on the same inputs"
    )


def _ref_ddim_timesteps(T, steps, spacing="uniform") -> list[int]:
    return _ddim_timesteps(T, steps, spacing)


_TIMESTEP_CASES = [(1000, n, s) for n in (1, 2, 10, 50, 100, 1000) for s in ("uniform", "quadratic")] + [
    (20, 7, "quadratic")
]


def _leading(T, n, s) -> list[int]:
    return list(range(0, T, T // n))[::-1] if s == "uniform" else _ddim_timesteps(T, n, s)


def _no_fix(T, n, s) -> list[int]:
    if n == 1:
        return [T - 1]
    frac = np.linspace(0, 1, n)
    return np.round((T - 1) * (frac if s == "uniform" else frac**2)).astype(int)[::-1].tolist()


ddim_timesteps = compared(
    "ddim_timesteps",
    "03_ddim",
    _ref_ddim_timesteps,
    cases=lambda: _TIMESTEP_CASES,
    expected=lambda: [_ddim_timesteps(*case) for case in _TIMESTEP_CASES],
    answer=lambda timesteps: [int(t) for t in timesteps],
    mistakes={
        "largest first: sampling runs from t = T - 1 (pure noise) down to 0": lambda *c: _ddim_timesteps(*c)[::-1],
        "start at T - 1 = 999, where x_T is pure noise: range(0, T, T // steps) (diffusers' 'leading' spacing) "
        "never reaches it": _leading,
        "quadratic spacing repeats timesteps near 0 (round((T-1) (i/(n-1))^2) is 0 several times): "
        "take max(t_i, i)": _no_fix,
        "np.linspace(T, 0, ...) starts at T, outside 0..T-1: end the range at T - 1": lambda T, n, s: (
            np.round(np.linspace(T, 0, n)).astype(int).tolist() if s == "uniform" else _ddim_timesteps(T, n, s)
        ),
    },
    verifies="strictly decreasing from T - 1 to 0 for 1 to 1000 steps, "
    "uniform and quadratic, as diffedu's sampler visits them",
)


@torch.inference_mode()
def _ddim_loop(
    model,
    x_T,
    alpha_bar,
    steps,
    eta=0.0,
    spacing="uniform",
    generator=None,
    *,
    prev="next",
    to_clean=True,
    order="down",
) -> torch.Tensor:
    """The DDIM loop, right, or with one of the mistakes the check names."""
    ts = _ddim_timesteps(len(alpha_bar), steps, spacing)
    ts = ts if order == "down" else ts[::-1]
    x, clean = x_T, alpha_bar.new_tensor(1.0) if to_clean else alpha_bar[0]
    for t, t_next in zip(ts, ts[1:] + [-1]):
        t_prev = t_next if prev == "next" else t - 1
        x = _ref_ddim_step(
            model(x, t), x, alpha_bar[t], alpha_bar[t_prev] if t_prev >= 0 else clean, eta, _noise(x, generator)
        )
    return x


@exercise(_ddim_loop, "03_ddim")
def sample_ddim(fn) -> str:
    x_T = _randn(64, 1, 2, 2, seed=132)
    settings = [(10, 0.0, "uniform"), (7, 1.0, "quadratic")]  # (steps, eta, spacing)

    def run(f: Callable) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [
                f(EXACT, x_T.clone(), SHORT.alpha_bar.clone(), steps, eta, spacing, torch.Generator().manual_seed(133))
                for steps, eta, spacing in settings
            ]

    expected = [
        ddim_sample(
            EXACT, SHORT, x_T.clone(), steps, eta, spacing, generator=torch.Generator().manual_seed(133), progress=False
        )
        for steps, eta, spacing in settings
    ]
    visited = []  # the timesteps the loop asks the model about, in its order (a wrong order gives NaN, like others)

    def recording(x, t):
        visited.append(int(torch.as_tensor(t).flatten()[0]))
        return EXACT(x, t)

    with torch.inference_mode():
        fn(recording, x_T.clone(), SHORT.alpha_bar.clone(), 10, 0.0, "uniform", torch.Generator().manual_seed(133))
    if visited != sorted(visited, reverse=True):
        raise Mistake(
            "visit the timesteps as ddim_timesteps gives them, largest first: sampling starts from pure noise"
        )
    _same_run(
        fn,
        run,
        expected,
        {
            "alpha_bar_prev is alpha_bar at the next timestep of the list, "
            "not at t - 1: DDIM jumps over the steps between": lambda *a: _ddim_loop(*a, prev="t-1"),
            "the last step goes from the last timestep to the clean image, "
            "where alpha_bar = 1 (after t = 0 there is no alpha_bar[t_prev] to look up): "
            "pair each timestep with the next, and the last with 'clean'": lambda *a: _ddim_loop(*a, to_clean=False),
            "visit the timesteps as ddim_timesteps gives them, "
            "largest first: sampling starts from pure noise": lambda *a: _ddim_loop(*a, order="up"),
        },
        "diffedu's DDIM sampler",
        not_finite=": after the smallest timestep comes the clean image, where "
        "alpha_bar_prev is 1. alpha_bar[-1] is the table's last entry, pure noise",
    )
    return (
        "your timesteps and your step, each timestep paired with the next and the last with the clean image: the "
        "same samples as diffedu's DDIMScheduler loop with the same seed, 10 uniform steps at eta = 0 and 7 "
        "quadratic ones at eta = 1"
    )


def _ref_ddim_invert_step(eps, x, alpha_bar_t, alpha_bar_prev) -> torch.Tensor:
    x0 = (x - (1 - alpha_bar_prev).sqrt() * eps) / alpha_bar_prev.sqrt()
    return alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * eps


def _invert_cases() -> list[tuple]:
    return [
        (_randn(4, 3, 4, 4, seed=60 + i), _randn(4, 3, 4, 4, seed=70 + i) * 1.2, a.clone(), p.clone())
        for i, (_, a, p) in enumerate(_ddim_pairs())
    ]


ddim_invert_step = compared(
    "ddim_invert_step",
    "03_ddim",
    _ref_ddim_invert_step,
    cases=_invert_cases,
    expected=lambda: [
        DDIMScheduler(LINEAR, clip_x0=False).set_timesteps(10).invert_step(eps, t, x).prev
        for (t, _, _), (eps, x, _, _) in zip(_ddim_pairs(), _invert_cases())
    ],
    mistakes={
        "that is the sampling step, from t down to t_prev: inversion goes up from t_prev to t, so the two alpha-bars "
        "swap roles": lambda eps, x, a, p: _ref_ddim_invert_step(eps, x, p, a),
        "x_0 = (x - sqrt(1 - alpha_bar_prev) eps) / sqrt(alpha_bar_prev): "
        "subtract the noise, do not add it": lambda eps, x, a, p: (
            a.sqrt() * (x + (1 - p).sqrt() * eps) / p.sqrt() + (1 - a).sqrt() * eps
        ),
        "do not clip x_0 when inverting: "
        "clipping throws information away, and sampling can no longer find the way back": lambda eps, x, a, p: (
            a.sqrt() * ((x - (1 - p).sqrt() * eps) / p.sqrt()).clamp(-1, 1) + (1 - a).sqrt() * eps
        ),
        "the new noise term is sqrt(1 - alpha_bar_t) eps, at the step you move to": lambda eps, x, a, p: (
            a.sqrt() * (x - (1 - p).sqrt() * eps) / p.sqrt() + (1 - p).sqrt() * eps
        ),
    },
    verifies="deterministic DDIM run backwards, from t_prev up to t, "
    "equal to diffedu's DDIMScheduler.invert_step at every step of a 10-step run",
)
