"""Lesson 10, consistency models (lessons/10_consistency.py): consistency_fn, ct_loss, consistency_sample."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..consistency import _per_image
from ..oracles import GaussianConsistency, GaussianVelocity
from ..samplers import _noise_like as _noise  # a step's fresh noise, drawn as diffedu's own samplers draw it
from .compare import _close, _same_run, compared
from .core import F64, Mistake, _gaussian, _randn, exercise
from .lesson08 import _ODE_DATA


def _ref_consistency_fn(model, x_t, t) -> torch.Tensor:
    return x_t - _per_image(t, x_t) * model(x_t, t)


def _consistency_fn_cases() -> list[tuple]:
    t = torch.cat(
        [
            torch.zeros(4, dtype=F64),
            torch.rand(56, generator=torch.Generator().manual_seed(160), dtype=F64),
            torch.ones(4, dtype=F64),
        ]
    )  # the boundary t = 0, times between, and pure noise
    return [
        (GaussianConsistency(*_ODE_DATA), _randn(64, 1, 2, 2, seed=161), t),
        (GaussianVelocity(*_ODE_DATA), _randn(64, 1, 2, 2, seed=162), t),
    ]


consistency_fn = compared(
    "consistency_fn",
    "10_consistency",
    _ref_consistency_fn,
    cases=_consistency_fn_cases,
    expected=lambda: [_ref_consistency_fn(*case) for case in _consistency_fn_cases()],
    mistakes={
        "f = x_t - t v: the velocity v = eps - x_0 points from the data to the noise, so going back to the data "
        "subtracts it (the sign is flipped)": lambda model, x, t: x + _per_image(t, x) * model(x, t),
        "f = x_t - t v, with t, not 1 - t: "
        "at t = 0 (the data end) f must be x_t itself, whatever the network says": lambda model, x, t: (
            x - (1 - _per_image(t, x)) * model(x, t)
        ),
        "f is x_t minus t times the network's answer, "
        "not the answer itself (c_skip = 1, c_out = -t)": lambda model, x, t: model(x, t),
    },
    verifies="f(x_t, t) = x_t - t v(x_t, t) at t = 0, between and at 1, on two networks: at t = 0 it is x_t whatever "
    "the network says, and on the exact consistency model of N(0.2, 0.3^2) data it is the flow's solution map",
)


class _Recorder(nn.Module):
    """A consistency function with one weight, a: f(x, t) = a (x - t (x - 0.3)). It records each call's x and t;
    the gradient of a loss through `a` tells its target and its stop-gradient apart."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.8, dtype=F64))
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []  # each call's (x, t)

    def forward(self, x, t) -> torch.Tensor:
        self.calls.append((x.detach().clone(), torch.as_tensor(t).detach().clone()))
        return self.a * (x - _per_image(torch.as_tensor(t), x) * (x - 0.3))


def _ref_ct_loss(f, x0, t, r) -> torch.Tensor:
    noise = torch.randn_like(x0)
    x_t = (1 - _per_image(t, x0)) * x0 + _per_image(t, x0) * noise
    x_r = (1 - _per_image(r, x0)) * x0 + _per_image(r, x0) * noise
    with torch.no_grad():
        target = f(x_r, r)
    return (((f(x_t, t) - target) ** 2).flatten(1).mean(1) / (t / (1 - t) - r / (1 - r))).mean()


@exercise(_ref_ct_loss, "10_consistency")
def ct_loss(fn: Callable) -> str:
    n = 4096
    x0 = torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(163), dtype=F64) * 2 - 1
    t = torch.rand(n, generator=torch.Generator().manual_seed(164), dtype=F64) * 0.9 + 0.1
    r = t * torch.rand(n, generator=torch.Generator().manual_seed(165), dtype=F64) * 0.9
    f = _Recorder()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        loss = fn(f, x0.clone(), t.clone(), r.clone())
    at = {
        which: [x for x, when in f.calls if when.shape == (n,) and torch.equal(when, time)]
        for which, time in (("t", t), ("r", r))
    }
    if len(f.calls) == 2 and any(when.shape != (n,) and when.numel() == n for _, when in f.calls):
        raise Mistake(
            "give f one time per image as it comes, shape (B,): f reshapes it to scale whole images itself "
            "(a t of shape (B, 1, 1, 1) is for your own x_t = (1 - t) x_0 + t eps)"
        )
    if len(f.calls) != 2 or len(at["t"]) != 1 or len(at["r"]) != 1:
        raise Mistake(
            f"it called f {len(f.calls)} times: call it twice, once at (x_t, t) and once at (x_r, r), each with "
            "the whole batch and its own time per image"
        )
    (x_t,), (x_r,) = at["t"], at["r"]
    noise_t = (x_t - (1 - _per_image(t, x0)) * x0) / _per_image(t, x0)
    noise_r = (x_r - (1 - _per_image(r, x0)) * x0) / _per_image(r, x0).clamp_min(1e-12)
    if torch.allclose(noise_t, noise_t[:1].expand_as(noise_t)):
        raise Mistake("one noise for the whole batch: each image needs its own, torch.randn_like(x0)")
    if torch.allclose(noise_t, noise_t.flatten(1)[:, :1, None, None].expand_as(noise_t)):
        raise Mistake(
            "the noise is one number per image, the same at every pixel: draw one per pixel, torch.randn_like(x0)"
        )
    if not _gaussian(noise_t) or not _gaussian(noise_r):
        raise Mistake("x_t = (1 - t) x_0 + t eps and x_r = (1 - r) x_0 + r eps, with Gaussian eps (torch.randn_like)")
    if not torch.allclose(noise_t, noise_r):
        raise Mistake(
            "the two points must lie on one line: draw one noise eps and use it for both x_t and x_r. With "
            "two noises the target belongs to another image's path"
        )
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.requires_grad:
        raise Mistake("return the loss as one number that gradients flow through (a 0-d tensor, not .item())")
    (grad,) = torch.autograd.grad(loss, f.a)

    def loss_of(online, target, weight) -> tuple[torch.Tensor, torch.Tensor]:
        a = f.a.detach().clone().requires_grad_(True)
        g = _Recorder()
        g.a = nn.Parameter(a)
        gap = ((online(g) - target(g)) ** 2).flatten(1).mean(1)
        value = (gap * weight).mean()
        return value.detach(), torch.autograd.grad(value, g.a)[0]

    on_t, on_r = (lambda g: g(x_t, t)), (lambda g: g(x_r, r))
    frozen = lambda call: lambda g: call(g).detach()  # noqa: E731
    weight = 1 / (t / (1 - t) - r / (1 - r))  # 1 / (sigma_t - sigma_r)
    right = loss_of(on_t, frozen(on_r), weight)
    if _close(loss.detach(), right[0]) and _close(grad, right[1]):
        return (
            "one noise for both points, the target f(x_r, r) under stop-gradient, and the gap weighted by "
            "1 / (sigma_t - sigma_r): the loss's value and its gradient"
        )
    for message, (value, gradient) in {
        "the target f(x_r, r) must be under stop-gradient (torch.no_grad() or .detach()): "
        "else the model also learns to move its easier answer towards its harder one": loss_of(on_t, on_r, weight),
        "the stop-gradient is on the wrong side: the target is the answer nearer the data, f(x_r, r) with r < t; "
        "the online answer f(x_t, t) is the one that learns": loss_of(frozen(on_t), on_r, weight),
        "the weight is 1 / (sigma_t - sigma_r), "
        "which grows as the two points come closer, not sigma_t - sigma_r": loss_of(on_t, frozen(on_r), 1 / weight),
        "the weight is in EDM's noise level, 1 / (sigma_t - sigma_r) "
        "with sigma = t / (1 - t), not 1 / (t - r)": loss_of(on_t, frozen(on_r), 1 / (t - r)),
        "weight each image's gap by 1 / (sigma_t - sigma_r): without it the loss shrinks as the curriculum brings r "
        "nearer t": loss_of(on_t, frozen(on_r), torch.ones_like(t)),
    }.items():
        if _close(loss.detach(), value) and _close(grad, gradient):
            raise Mistake(message)
    if _close(loss.detach(), right[0]):
        raise Mistake("the value is right but its gradient is not: put only the target under stop-gradient")
    raise Mistake(
        "the loss should be mean(||f(x_t, t) - stopgrad f(x_r, r)||^2 / (sigma_t - sigma_r)), "
        f"each image's squared gap averaged over its pixels: {right[0].item():.6g}; it returned {loss.item():.6g}"
    )


def _ref_consistency_sample(f, x1, times, generator) -> torch.Tensor:
    x0 = f(x1, torch.full((len(x1),), times[0], dtype=x1.dtype))
    for t in times[1:]:
        x_t = (1 - t) * x0 + t * torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x0 = f(x_t, torch.full((len(x1),), t, dtype=x1.dtype))
    return x0


def _consistency_with(noise="fresh", renoise=True, swap=False) -> Callable:
    """Multistep consistency sampling with one of the mistakes the check names."""

    def run(f, x1, times, generator) -> torch.Tensor:
        x0 = f(x1, torch.full((len(x1),), times[0], dtype=x1.dtype))
        for t in times[1:]:
            if noise == "float32":  # drawn in float32, then cast to the images' dtype
                z = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.dtype)
            else:
                z = x1 if noise == "first" else _noise(x0, generator)
            a, b = (t, 1 - t) if swap else (1 - t, t)
            x_t = a * x0 + b * z if renoise else x0
            x0 = f(x_t, torch.full((len(x1),), t, dtype=x1.dtype))
        return x0

    return run


@exercise(_ref_consistency_sample, "10_consistency")
def consistency_sample(fn: Callable) -> str:
    exact, x1 = GaussianConsistency(*_ODE_DATA), _randn(4096, 1, 2, 2, seed=166)
    f = lambda x, t: _ref_consistency_fn(exact, x, t)  # noqa: E731
    runs = ([1.0], [1.0, 0.5], [1.0, 0.75, 0.5, 0.25])

    def run(g: Callable) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [g(f, x1.clone(), list(times), torch.Generator().manual_seed(167)) for times in runs]

    expected = run(_ref_consistency_sample)
    _same_run(
        fn,
        run,
        expected,
        {
            "re-noise with fresh noise at each step (torch.randn with the generator): "
            "the first noise x1 is already spent on the first jump": _consistency_with(noise="first"),
            "each step puts the image back on a line at t, "
            "x_t = (1 - t) x_0 + t z, before asking f again": _consistency_with(renoise=False),
            "x_t = (1 - t) x_0 + t z: at t near 1 mostly noise (the weights are swapped)": _consistency_with(swap=True),
            "draw the fresh noise in the images' own dtype (here float64), torch.randn(x0.shape, generator=generator, "
            "dtype=x0.dtype): the same seed drawn in float32 and cast gives other numbers": _consistency_with(
                noise="float32"
            ),
        },
        "diffedu's multistep consistency sampler",
    )
    return (
        "one jump from the noise, then re-noise to each smaller t with fresh noise and jump again: the same images "
        "as diffedu's sampler at 1, 2 and 4 calls, and on the exact consistency model of N(0.2, 0.3^2) data "
        "samples of exactly that distribution"
    )
