"""Lesson 02, DDPM (lessons/02_ddpm.py): eps_loss, posterior, ddpm_step, sample_ddpm."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..oracles import GaussianDenoiser
from ..samplers import DDPMScheduler, ddpm_sample
from ..samplers import _noise_like as _noise  # a step's fresh noise, drawn as diffedu's own samplers draw it
from ..schedules import Schedule, linear_betas
from .compare import SKIPPED, _close, _compare, _diffusers, _diffusers_version, _same_run, compared
from .core import F64, LINEAR, Mistake, Spy, _gaussian, _randn, exercise
from .lesson01 import _ref_q_sample


def _ref_eps_loss(model, x0, alpha_bar) -> torch.Tensor:
    t = torch.randint(0, len(alpha_bar), (len(x0),), device=x0.device)
    noise = torch.randn_like(x0)
    return torch.nn.functional.mse_loss(model(_ref_q_sample(x0, t, noise, alpha_bar.to(x0.device)), t), noise)


@exercise(_ref_eps_loss, "02_ddpm")
def eps_loss(fn) -> str:
    n, ab = 16384, LINEAR.alpha_bar  # many images: every t in 0..999 is drawn, and the noise's statistics are sharp
    x0 = torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(5), dtype=F64) * 2 - 1
    spy = Spy(_randn(n, 1, 2, 2, seed=6))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        loss = fn(spy, x0.clone(), ab.clone())
    if len(spy.calls) != 1:
        raise Mistake(f"it called the model {len(spy.calls)} times: call it once, on the whole noisy batch")
    x_t, t = spy.calls[0]
    if x_t.shape != x0.shape:
        raise Mistake(f"the model was given shape {tuple(x_t.shape)}; give it x_t, shaped like x0 {tuple(x0.shape)}")
    if t.shape != (n,) or t.is_floating_point():
        raise Mistake(
            f"t must be one whole-number step per image, shape ({n},); it was {t.dtype} of shape {tuple(t.shape)}"
        )
    if len(t.unique()) == 1:
        raise Mistake("one t for the whole batch: draw one per image, torch.randint(0, T, (len(x0),))")
    if t.min() > 0:
        raise Mistake("t starts at 0 here (Ho et al. count from 1): torch.randint(0, T, ...)")
    if t.max() < len(ab) - 1:
        raise Mistake("t never reaches T - 1: torch.randint's upper bound is exclusive, so torch.randint(0, T, ...)")
    a = ab[t].view(-1, 1, 1, 1)
    noise = (x_t - a.sqrt() * x0) / (1 - a).sqrt()  # the noise that made x_t, if x_t was made right
    if not _gaussian(noise):
        if _gaussian((x_t - a * x0) / (1 - a)):
            raise Mistake("x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps: the square roots are missing")
        if abs(noise.mean().item() - 0.5) < 0.05:
            raise Mistake("the noise must be Gaussian: torch.randn_like, not torch.rand_like (uniform in [0, 1))")
        raise Mistake("x_t is not sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with Gaussian eps")
    answer = spy.answer
    if not _close(loss, ((answer - noise) ** 2).mean()):
        for message, wrong in {
            "the target is the noise eps, not the clean image x_0": ((answer - x0) ** 2).mean(),
            "the target is the noise eps, not the noisy x_t": ((answer - x_t) ** 2).mean(),
            "summed over every value: take the mean (F.mse_loss's default), so the loss does not grow with the batch": (
                (answer - noise) ** 2
            ).sum(),
            "a mean absolute error: the loss is the mean *squared* error": (answer - noise).abs().mean(),
        }.items():
            if _close(loss, wrong):
                raise Mistake(message)
        raise Mistake(
            f"the loss should be mean((model(x_t, t) - eps)^2) = {((answer - noise) ** 2).mean().item():.6g}; "
            f"it returned {float(loss):.6g}"
        )
    return (
        "one uniform t in 0..999 per image, Gaussian noise, x_t made from them, and the loss is the mean squared "
        "error between the model's answer and that noise (Ho et al. eq. 14)"
    )


def _ref_posterior(betas, alpha_bar) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = Schedule(betas)
    return s.posterior_coef_x0, s.posterior_coef_xt, s.posterior_variance


def _prev(ab) -> torch.Tensor:
    return torch.cat([ab.new_ones(1), ab[:-1]])


posterior = compared(
    "posterior",
    "02_ddpm",
    _ref_posterior,
    cases=lambda: [(s.betas.clone(), s.alpha_bar.clone()) for s in (LINEAR, Schedule.cosine())],
    expected=lambda: [
        (s.posterior_coef_x0, s.posterior_coef_xt, s.posterior_variance) for s in (LINEAR, Schedule.cosine())
    ],
    mistakes={
        "the variance is beta-tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t): beta_t itself is Ho et al.'s "
        "other choice of sigma_t^2, an upper bound, not the posterior's": lambda b, ab: (*_ref_posterior(b, ab)[:2], b),
        "alpha_bar_{t-1} where the formulas say t - 1: "
        "shift alpha_bar by one step, with alpha_bar_{-1} = 1": lambda b, ab: (
            b * ab.sqrt() / (1 - ab),
            (1 - ab) * (1 - b).sqrt() / (1 - ab),
            b * (1 - ab) / (1 - ab),
        ),
        "the x_t coefficient has sqrt(alpha_t), not alpha_t": lambda b, ab: (
            b * _prev(ab).sqrt() / (1 - ab),
            (1 - _prev(ab)) * (1 - b) / (1 - ab),
            _ref_posterior(b, ab)[2],
        ),
        "the two mean coefficients are swapped: "
        "beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t) multiplies x_0": lambda b, ab: (
            _ref_posterior(b, ab)[1],
            _ref_posterior(b, ab)[0],
            _ref_posterior(b, ab)[2],
        ),
    },
    verifies="the mean coefficients and variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 7) for the linear and cosine "
    "schedules; the variance is 0 at t = 0, where x_0 is known",
)


def _ref_ddpm_step(eps, t, x_t, noise, alpha_bar, posterior) -> torch.Tensor:
    coef_x0, coef_xt, variance = posterior
    ab = alpha_bar[t]
    x0 = ((x_t - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
    return coef_x0[t] * x0 + coef_xt[t] * x_t + variance[t].sqrt() * noise


def _ddpm_cases() -> list[tuple]:
    post = (LINEAR.posterior_coef_x0, LINEAR.posterior_coef_xt, LINEAR.posterior_variance)
    return [
        (
            _randn(4, 3, 4, 4, seed=10 + t) * 0.8,
            t,
            _randn(4, 3, 4, 4, seed=20 + t) * 1.3,
            _randn(4, 3, 4, 4, seed=t),
            LINEAR.alpha_bar.clone(),
            tuple(p.clone() for p in post),
        )
        for t in (999, 700, 300, 40, 1, 0)
    ]


@exercise(_ref_ddpm_step, "02_ddpm")
def ddpm_step(fn) -> str:
    scheduler = DDPMScheduler(LINEAR)
    expected = [scheduler.step(eps, t, x, noise=noise).prev for eps, t, x, noise, _, _ in _ddpm_cases()]

    def shifted(eps, t, x, n, ab, post) -> torch.Tensor:
        return _ref_ddpm_step(eps, max(t - 1, 0), x, n, ab, post)

    def unclipped(eps, t, x, n, ab, post) -> torch.Tensor:
        x0 = (x - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
        return post[0][t] * x0 + post[1][t] * x + post[2][t].sqrt() * n

    _compare(
        fn,
        _ddpm_cases,
        expected,
        {
            "clip the predicted x_0 to [-1, 1] before the posterior mean: "
            "at large t the guess strays far outside the pixel range (as Ho et al.'s "
            "code and diffusers run Algorithm 2; the paper's printout does not clip)": unclipped,
            "the noise is scaled by the standard deviation "
            "sqrt(variance_t), not by the variance": lambda eps, t, x, n, ab, post: (
                _ref_ddpm_step(eps, t, x, n, ab, post) - post[2][t].sqrt() * n + post[2][t] * n
            ),
            "x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t): "
            "the square root on (1 - alpha_bar_t) is missing": lambda eps, t, x, n, ab, post: _ref_ddpm_step(
                (1 - ab[t]).sqrt() * eps, t, x, n, ab, post
            ),
            "off by one: the tables are indexed at t itself": shifted,
        },
    )
    compared = _against_diffusers_ddpm(fn)
    return (
        "Algorithm 2 of Ho et al.: x_0 from eps, clipped to [-1, 1], then the posterior mean plus its standard "
        f"deviation times the noise, at t = 999 ... 0, equal to diffedu's DDPMScheduler{compared}"
    )


SHORT = Schedule(linear_betas(100, 1e-3, 0.2), name="linear, T = 100")  # the loop checks' schedule: x_T is noise
EXACT = GaussianDenoiser(SHORT, mean=0.2, std=0.3)  # the exact noise predictor of N(0.2, 0.3²) data


@torch.inference_mode()
def _ddpm_loop(model, x_T, alpha_bar, posterior, generator=None, *, order="down", last=0, fresh=True) -> torch.Tensor:
    """Algorithm 2 as a loop, right, or with one of the mistakes the check names."""
    ts = list(range(len(alpha_bar) - 1, last - 1, -1))
    x, once = x_T, None if fresh else _noise(x_T, generator)
    for t in ts if order == "down" else ts[::-1]:
        noise = _noise(x, generator) if fresh else once
        x = _ref_ddpm_step(model(x, t), t, x, noise, alpha_bar, posterior)
    return x


@exercise(_ddpm_loop, "02_ddpm")
def sample_ddpm(fn) -> str:
    x_T, tables = (
        _randn(64, 1, 2, 2, seed=130),
        (SHORT.posterior_coef_x0, SHORT.posterior_coef_xt, SHORT.posterior_variance),
    )

    def run(f: Callable) -> torch.Tensor:
        with torch.inference_mode():
            return f(
                EXACT,
                x_T.clone(),
                SHORT.alpha_bar.clone(),
                tuple(p.clone() for p in tables),
                torch.Generator().manual_seed(131),
            )

    expected = ddpm_sample(EXACT, SHORT, x_T.clone(), generator=torch.Generator().manual_seed(131), progress=False)
    _same_run(
        fn,
        run,
        expected,
        {
            "the loop runs backwards in time, from t = T - 1 (pure noise) down to 0: range(T - 1, -1, -1)": lambda *a: (
                _ddpm_loop(*a, order="up")
            ),
            "the loop stops one step early: "
            "its last step is t = 0 (t counts from 0 here), range(T - 1, -1, -1)": lambda *a: _ddpm_loop(*a, last=1),
            "fresh noise at every step: "
            "one draw reused at every step makes all the steps' noises the same": lambda *a: _ddpm_loop(
                *a, fresh=False
            ),
        },
        "diffedu's DDPM sampler",
    )
    return (
        "from x_T, your ddpm_step at t = T - 1, ..., 0 with fresh noise from the generator: the same samples as "
        "diffedu's DDPMScheduler loop with the same seed (a 100-step schedule, the exact denoiser of Gaussian data)"
    )


def _against_diffusers_ddpm(fn) -> str:
    cls = _diffusers("DDPMScheduler")
    if cls is None:
        return SKIPPED.format("DDPMScheduler")
    theirs = cls(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, variance_type="fixed_small")
    theirs.betas, theirs.alphas, theirs.alphas_cumprod = (
        LINEAR.betas.clone(),
        LINEAR.alphas.clone(),
        LINEAR.alpha_bar.clone(),
    )
    for eps, t, x, _, ab, post in _ddpm_cases():
        seed = 100 + t  # diffusers draws its own noise: give both the same draw
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
        want = theirs.step(eps, t, x, generator=torch.Generator().manual_seed(seed)).prev_sample
        if not _close(fn(eps, t, x, noise, ab, post), want, rtol=1e-8, atol=1e-10):
            raise Mistake(f"it differs from diffusers' DDPMScheduler.step at t = {t}")
    return f", and to diffusers {_diffusers_version()}'s DDPMScheduler.step on the same inputs and noise"
