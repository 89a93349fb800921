"""Lesson 08, the ODE view (lessons/08_ode_view.py): heun_step, dpm_solver_step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..oracles import GaussianDenoiser
from ..samplers import _sigma, make_scheduler, sample
from .compare import SKIPPED, _close, _describe, _diffusers, _diffusers_version
from .core import F64, LINEAR, Mistake, _randn, exercise

_ODE_DATA = (0.2, 0.3)  # the ODE checks' data: N(0.2, 0.3^2), whose exact denoiser and velocity are known
_ODE_STEPS = make_scheduler("ddim", LINEAR, 12).timesteps  # the 12 timesteps the ODE checks visit, then the clean image


def _sigma_of(t: int) -> torch.Tensor:
    """The ODE's time at timestep t, sqrt((1 - alpha_bar_t) / alpha_bar_t) as the samplers' `_sigma` computes it,
    0 for the clean image (t = -1)."""
    return _sigma(LINEAR.alpha_bar[t]) if t >= 0 else torch.zeros((), dtype=F64)


class _Slope:
    """The exact slope dx~/dsigma = E[eps | x_t] of N(0.2, 0.3^2) data, asked at the sigmas of the check's
    timesteps (a discrete-time model knows no others), recording each call."""

    def __init__(self) -> None:
        self.exact = GaussianDenoiser(LINEAR, *_ODE_DATA)
        self.calls: list[float] = []  # each call's sigma
        self.t_of = {round(float(_sigma_of(t)), 9): t for t in _ODE_STEPS}

    def __call__(self, x_tilde: torch.Tensor, sigma) -> torch.Tensor:
        sigma = float(sigma)
        self.calls.append(sigma)
        if sigma == 0:
            raise Mistake(
                "it asked the model at sigma = 0, the clean image, where it was never trained (and the ODE's "
                "slope is 0/0): the step into sigma_prev = 0 is Euler's alone"
            )
        t = self.t_of.get(round(sigma, 9))
        if t is None:
            raise Mistake(
                f"it asked the model at sigma = {sigma:.4g}, which is neither sigma nor sigma_prev: the second "
                "slope is taken where the Euler step lands, at sigma_prev"
            )
        return self.exact(x_tilde * LINEAR.alpha_bar[t].sqrt(), torch.tensor(t))


def _ref_heun_step(slope, x, sigma, sigma_prev) -> torch.Tensor:
    d = slope(x, sigma)
    euler = x + (sigma_prev - sigma) * d
    if sigma_prev == 0:
        return euler
    return x + (sigma_prev - sigma) * (d + slope(euler, sigma_prev)) / 2


def _heun_run(step, x_T: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """x~ from timestep 999 to the clean image by `step`, through the check's timesteps; and the sigmas it asked at."""
    slope, x = _Slope(), x_T / LINEAR.alpha_bar[_ODE_STEPS[0]].sqrt()
    for t, t_prev in zip(_ODE_STEPS, [*_ODE_STEPS[1:], -1]):
        x = step(slope, x, _sigma_of(t), _sigma_of(t_prev))
    return x, slope.calls


def _heun_with(second_at_x=False, second_only=False, sign=1.0, weights=(0.5, 0.5)) -> Callable:
    """Heun's step with one of the mistakes the check names."""

    def step(slope, x, sigma, sigma_prev) -> torch.Tensor:
        d = slope(x, sigma)
        dt = sign * (sigma_prev - sigma)
        euler = x + dt * d
        if sigma_prev == 0:
            return euler
        d2 = slope(x if second_at_x else euler, sigma_prev)
        return x + dt * (d2 if second_only else weights[0] * d + weights[1] * d2)

    return step


@exercise(_ref_heun_step, "08_ode_view")
def heun_step(fn: Callable) -> str:
    x_T = _randn(64, 1, 2, 2, seed=150)
    got, calls = _heun_run(fn, x_T.clone())
    expected = sample(
        GaussianDenoiser(LINEAR, *_ODE_DATA),
        make_scheduler("heun", LINEAR, 12, clip_x0=False),
        x_T.clone(),
        progress=False,
    )  # x at the clean image is x~ there
    if len(calls) != 2 * len(_ODE_STEPS) - 1:
        raise Mistake(
            f"it asked the model {len(calls)} times over {len(_ODE_STEPS)} steps: Heun asks twice a step (at sigma, "
            f"then at sigma_prev where the Euler step lands), and once on the last, Euler's: {2 * len(_ODE_STEPS) - 1}"
        )
    if _close(got, expected, rtol=1e-9, atol=1e-12):
        model = GaussianDenoiser(LINEAR, *_ODE_DATA)
        exact = model.flow(x_T, _ODE_STEPS[0], -1)
        euler = sample(model, make_scheduler("ddim", LINEAR, 12, clip_x0=False), x_T.clone(), progress=False)
        return (
            "Heun's step (EDM's Algorithm 1), Euler's into the clean image, over 12 steps: "
            f"equal to diffedu's HeunScheduler {_against_diffusers('HeunDiscreteScheduler', x_T, got)}; "
            f"it lands {(got - exact).abs().max():.1e} from the ODE's exact solution, "
            f"DDIM's Euler steps {(euler - exact).abs().max():.1e}"
        )
    for message, wrong in {
        "the second slope is asked where the Euler step lands, x' = x + (sigma_prev - sigma) d, not at x": _heun_with(
            second_at_x=True
        ),
        "the step takes the mean of the two slopes, (d + d') / 2, not the second one alone": _heun_with(
            second_only=True
        ),
        "the step runs from sigma down to sigma_prev: multiply by sigma_prev - sigma (negative)": _heun_with(sign=-1.0),
        "the two slopes weigh the same: (d + d') / 2": _heun_with(weights=(1.0, 1.0)),
    }.items():
        if _close(got, _heun_run(wrong, x_T.clone())[0], rtol=1e-9, atol=1e-12):
            raise Mistake(message)
    raise Mistake(f"after 12 steps it lands elsewhere than diffedu's HeunScheduler: {_describe(got, expected)}")


def _against_diffusers(name: str, x_T: torch.Tensor, got: torch.Tensor) -> str:
    """Whether a 12-step run of diffusers' scheduler `name` from x_T lands where the learner's steps did (diffusers
    computes in float32: agreement to float32 is what can be asked)."""
    cls = _diffusers(name)
    if cls is None:
        return SKIPPED.format(name)
    model = GaussianDenoiser(LINEAR, *_ODE_DATA)
    extra = {"algorithm_type": "dpmsolver++", "solver_order": 2, "final_sigmas_type": "zero"} if "DPM" in name else {}
    theirs = cls(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, **extra
    )  # DDPM's betas
    theirs.set_timesteps(timesteps=_ODE_STEPS)
    heun = "Heun" in name
    x = (x_T / LINEAR.alpha_bar[_ODE_STEPS[0]].sqrt() if heun else x_T).float()  # Heun works in x~, DPM-Solver in x
    for t in theirs.timesteps:
        model_input = theirs.scale_model_input(x, t) if heun else x
        x = theirs.step(model(model_input.double(), torch.tensor(round(float(t)))).float(), t, x).prev_sample
    if not _close(got, x.double(), rtol=1e-4, atol=2e-5):
        raise Mistake(f"it differs from diffusers' {name} on the same timesteps: {_describe(got, x.double())}")
    return f"and to diffusers {_diffusers_version()}'s {name} on the same timesteps (to float32)"


def _ref_dpm_solver_step(x, x0, x0_last, alpha_bar_t, alpha_bar_prev, alpha_bar_last) -> torch.Tensor:
    if alpha_bar_prev == 1:
        return x0
    lam, lam_prev = 0.5 * (alpha_bar_t / (1 - alpha_bar_t)).log(), 0.5 * (alpha_bar_prev / (1 - alpha_bar_prev)).log()
    h, data = lam_prev - lam, x0
    if x0_last is not None:
        r = (lam - 0.5 * (alpha_bar_last / (1 - alpha_bar_last)).log()) / h
        data = (1 + 1 / (2 * r)) * x0 - x0_last / (2 * r)
    return ((1 - alpha_bar_prev) / (1 - alpha_bar_t)).sqrt() * x - alpha_bar_prev.sqrt() * torch.expm1(-h) * data


def _dpm_run(step, x_T: torch.Tensor) -> torch.Tensor:
    """x from timestep 999 to the clean image by `step`, driven by the exact denoiser, through the check's timesteps."""
    model, ab = GaussianDenoiser(LINEAR, *_ODE_DATA), LINEAR.alpha_bar
    x, last = x_T, None
    for t, t_prev in zip(_ODE_STEPS, [*_ODE_STEPS[1:], -1]):
        x0 = LINEAR.predict_x0(x, t, model(x, torch.tensor(t)))
        x = step(
            x,
            x0,
            None if last is None else last[0],
            ab[t],
            ab[t_prev] if t_prev >= 0 else ab.new_tensor(1.0),
            None if last is None else ab[last[1]],
        )
        last = (x0, t)
    return x


def _dpm_with(r_inverted=False, half=True, log_snr=False, growth=False, ratio_inverted=False) -> Callable:
    """DPM-Solver++(2M)'s step with one of the mistakes the check names."""

    def lam(a) -> torch.Tensor:
        return (1.0 if log_snr else 0.5) * (a / (1 - a)).log()

    def step(x, x0, x0_last, a, a_prev, a_last) -> torch.Tensor:
        if a_prev == 1:
            return x0
        h, data = lam(a_prev) - lam(a), x0
        if x0_last is not None:
            r = (lam(a) - lam(a_last)) / h
            r = 1 / r if r_inverted else r
            k = 1 / (2 * r) if half else 1 / r
            data = (1 + k) * x0 - k * x0_last
        ratio = ((1 - a) / (1 - a_prev)) if ratio_inverted else ((1 - a_prev) / (1 - a))
        return ratio.sqrt() * x - a_prev.sqrt() * (torch.expm1(h) if growth else torch.expm1(-h)) * data

    return step


_DPM_MISTAKES = {
    "r = (lambda_t - lambda_last) / h: the last step's length over this one's, not its inverse": _dpm_with(
        r_inverted=True
    ),
    "D = (1 + 1/(2r)) x0 - 1/(2r) x0_last: the 1/2 is missing": _dpm_with(half=False),
    "lambda = log(sqrt(alpha_bar) / sqrt(1 - alpha_bar)), half the log of the signal-to-noise ratio": _dpm_with(
        log_snr=True
    ),
    "the factor is exp(-h) - 1 (torch.expm1(-h)), negative: x0's weight grows as the noise falls": _dpm_with(
        growth=True
    ),
    "x is scaled by sqrt(1 - alpha_bar_prev) / sqrt(1 - alpha_bar_t), "
    "the ratio of the noise levels, which falls": _dpm_with(ratio_inverted=True),
}


@exercise(_ref_dpm_solver_step, "08_ode_view")
def dpm_solver_step(fn: Callable) -> str:
    a, a_prev = LINEAR.alpha_bar[600], LINEAR.alpha_bar[400]
    x, x0 = _randn(4, 1, 2, 2, seed=152), _randn(4, 1, 2, 2, seed=153) * 0.3
    first = fn(x.clone(), x0.clone(), None, a, a_prev, None)
    ddim = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * (x - a.sqrt() * x0) / (1 - a).sqrt()
    x_T = _randn(64, 1, 2, 2, seed=151)
    got = _dpm_run(fn, x_T.clone()) if _close(first, ddim) else None
    expected = sample(
        GaussianDenoiser(LINEAR, *_ODE_DATA),
        make_scheduler("dpmpp2m", LINEAR, 12, clip_x0=False),
        x_T.clone(),
        progress=False,
    )
    if got is not None and _close(got, expected, rtol=1e-9, atol=1e-12):
        return (
            "DDIM's step when there is no last call, then the second-order multistep update of Lu et al. 2022 over 12 "
            f"steps, x0 itself into the clean image: equal to diffedu's DPMSolverScheduler "
            f"{_against_diffusers('DPMSolverMultistepScheduler', x_T, got)}"
        )
    for message, wrong in _DPM_MISTAKES.items():
        same = (
            _close(first, wrong(x.clone(), x0.clone(), None, a, a_prev, None))
            if got is None
            else _close(got, _dpm_run(wrong, x_T.clone()), rtol=1e-9, atol=1e-12)
        )
        if same:
            raise Mistake(message)
    if got is None:
        raise Mistake(
            f"without a last call (the first step) it is DDIM's step, sqrt(alpha_bar_prev) x0 + sqrt(1 - "
            f"alpha_bar_prev) eps: {_describe(first, ddim)}"
        )
    raise Mistake(f"after 12 steps it lands elsewhere than diffedu's DPMSolverScheduler: {_describe(got, expected)}")
