"""Lesson 09, flow matching (lessons/09_flow_matching.py): fm_loss, fm_sample."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..oracles import GaussianVelocity
from .compare import _close, compared
from .core import F64, Mistake, Spy, _gaussian, _randn, exercise
from .lesson08 import _ODE_DATA


def _ref_fm_loss(model, x0) -> torch.Tensor:
    t = torch.rand(len(x0), device=x0.device)
    noise = torch.randn_like(x0)
    tt = t.view(-1, *[1] * (x0.dim() - 1)).to(x0.dtype)
    return torch.nn.functional.mse_loss(model((1 - tt) * x0 + tt * noise, t), noise - x0)


@exercise(_ref_fm_loss, "09_flow_matching")
def fm_loss(fn: Callable) -> str:
    n = 16384
    x0 = torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(154), dtype=F64) * 2 - 1
    spy = Spy(_randn(n, 1, 2, 2, seed=155))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        loss = fn(spy, x0.clone())
    if len(spy.calls) != 1:
        raise Mistake(f"it called the model {len(spy.calls)} times: call it once, on the whole batch")
    x_t, t = spy.calls[0]
    if t.shape != (n,) or not t.is_floating_point():
        raise Mistake(
            f"t is a time in [0, 1], one float per image, shape ({n},); it was {t.dtype} of shape {tuple(t.shape)}"
        )
    if len(t.unique()) == 1 or t.min() < 0 or t.max() > 1:
        raise Mistake("draw one t per image, uniform in [0, 1]: torch.rand(len(x0))")
    # Uniform as a distribution, not only in its mean: the largest gap between t's empirical CDF and the uniform's
    # (Kolmogorov-Smirnov) is below 1.95 / sqrt(n) for a uniform t but in one run in a thousand.
    ranks, sorted_t = torch.arange(n + 1, dtype=F64) / n, t.double().sort().values
    gap = torch.maximum(ranks[1:] - sorted_t, sorted_t - ranks[:-1]).max().item()
    if gap > 1.95 / n**0.5:
        raise Mistake(
            f"t must be uniform on [0, 1], each time as likely as any other (torch.rand): its distribution is "
            f"not (its CDF is {gap:.3f} from the uniform's at worst)"
        )
    tt = t.view(-1, 1, 1, 1).to(x0.dtype)
    noise = (x_t - (1 - tt) * x0) / tt  # the noise that made x_t, if x_t was made right
    if not _gaussian(noise):
        if _gaussian((x_t - tt * x0) / (1 - tt)):
            raise Mistake("x_t = (1 - t) x_0 + t eps: at t = 0 the data, at t = 1 pure noise (the weights are swapped)")
        raise Mistake("x_t is not (1 - t) x_0 + t eps with Gaussian eps (torch.randn_like)")
    answer = spy.answer
    if not _close(loss, ((answer - (noise - x0)) ** 2).mean()):
        for message, wrong in {
            "the target is the velocity v = eps - x_0, the direction from data to noise, not x_0 - eps": (
                (answer - (x0 - noise)) ** 2
            ).mean(),
            "the target is the velocity v = eps - x_0, not the noise alone": ((answer - noise) ** 2).mean(),
            "summed: take the mean, so the loss does not grow with the batch": ((answer - (noise - x0)) ** 2).sum(),
        }.items():
            if _close(loss, wrong):
                raise Mistake(message)
        raise Mistake(
            f"the loss should be mean((model(x_t, t) - (eps - x_0))^2) = "
            f"{((answer - (noise - x0)) ** 2).mean().item():.6g}; it returned {float(loss):.6g}"
        )
    return "t uniform in [0, 1] per image, x_t = (1 - t) x_0 + t eps, and the mean squared error to v = eps - x_0"


def _ref_fm_sample(velocity, x1, steps) -> torch.Tensor:
    x, ts = x1, torch.linspace(1, 0, steps + 1, dtype=x1.dtype)
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * velocity(x, t)
    return x


def _fm_cases() -> list[tuple]:
    return [(GaussianVelocity(*_ODE_DATA), _randn(64, 1, 2, 2, seed=156), steps) for steps in (1, 4, 10)]


def _fm_with(sign=1.0, at_next=False, grid="right") -> Callable:
    """Euler on the flow with one of the mistakes the check names."""

    def run(velocity, x1, steps) -> torch.Tensor:
        x, ts = (
            x1,
            {
                "right": torch.linspace(1, 0, steps + 1, dtype=x1.dtype),
                "short": torch.arange(1, 0, -1 / steps, dtype=x1.dtype),  # 1, ..., 1/steps: never reaches 0
                "one fewer": torch.linspace(1, 0, max(steps, 2), dtype=x1.dtype),
            }[grid],
        )
        for t, t_next in zip(ts[:-1], ts[1:]):
            x = x + sign * (t_next - t) * velocity(x, t_next if at_next else t)
        return x

    return run


fm_sample = compared(
    "fm_sample",
    "09_flow_matching",
    _ref_fm_sample,
    cases=_fm_cases,
    expected=lambda: [_ref_fm_sample(*case) for case in _fm_cases()],
    mistakes={
        "time runs from 1 (noise) down to 0 (data), so each step "
        "is x + (t_next - t) v with t_next < t: the sign is flipped": _fm_with(sign=-1.0),
        "Euler asks the velocity where the step starts, v(x, t), not where it ends": _fm_with(at_next=True),
        "the last step must reach t = 0, the data: "
        "`steps` steps need steps + 1 times, torch.linspace(1, 0, steps + 1)": _fm_with(grid="short"),
        "that takes steps - 1 steps: `steps` steps need steps + 1 times, torch.linspace(1, 0, steps + 1)": _fm_with(
            grid="one fewer"
        ),
    },
    verifies="Euler's steps on dx/dt = v(x, t) from t = 1 to 0 in 1, 4 and 10 uniform steps, on the exact velocity of "
    "N(0.2, 0.3^2) data",
)
