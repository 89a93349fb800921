"""Checks for the lessons' exercises: write the function, then call its check in the next cell.

    check.q_sample(q_sample)

A check runs your function on inputs whose right answers are known (closed forms, diffedu's own
reference, and for the sampler steps Hugging Face diffusers' schedulers too), in a second or two on a
CPU. It prints what it verified, or the mistake it found: the common ones it names ("the variance
where the standard deviation belongs"), any other it locates. Your function gets its own copies of the inputs,
and a slip any exercise can have is named at once: no `return`, an input changed in place, complex numbers.

While your function is missing or wrong, the check says so (in red, without a traceback) and puts
diffedu's reference in its place under the same name, so the rest of the lesson still runs, Run All
included: come back to the exercise when you like. Only while nbgrader grades the notebook does a failed
check raise, so that the exercise counts as failed.

Every exercise is one entry of `EXERCISES` (its name, lesson, points, reference and check): a check that only
compares answers is declared as data (`compared`: the cases, the expected answers, the known mistakes, what it
verifies); the others are code (`@exercise`). The lessons' nbgrader cells, docs/teaching.md's table and the tests are
held to the registry.
"""
from __future__ import annotations

import copy
import functools
import inspect
import os
import sys
import threading
import typing
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import metrics
from .adversarial import hinge_d_loss as _hinge_d_loss
from .latent import measure_scale_factor
from .nets import UNet, UNetConfig
from .oracles import GaussianConsistency, GaussianDenoiser, GaussianVelocity
from .pipelines import LatentDiffusion
from .samplers import DDIMScheduler, DDPMScheduler, ddim_sample, ddim_timesteps as _ddim_timesteps, ddpm_sample, make_scheduler, sample
from .samplers import _noise_like as _noise  # a step's fresh noise, drawn as diffedu's own samplers draw it
from .schedules import Schedule, at, cosine_betas, linear_betas
from .training import drop_labels as _drop_labels
from .vae import VAE, VAEConfig, kl_divergence as _kl_divergence, reparameterize as _reparameterize

F64 = torch.float64
GRADING_ENV = "NBGRADER_EXECUTION"  # nbgrader sets it while it autogrades or validates a notebook


class ExerciseError(AssertionError):
    """An exercise not done yet, or not right, while nbgrader grades (an AssertionError: a failed test)."""

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines instead of the traceback
        return str(self).splitlines()


class Mistake(Exception):
    """What a check found wrong, in words."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: the function a learner writes in `lesson` (a lesson's file name, e.g. "01_forward_process"),
    worth `points` under nbgrader, diffedu's `reference` answer, and its `check(fn) -> what it verified`, which
    raises Mistake. The lessons' nbgrader cells, docs/teaching.md's table and the tests are held to this registry."""

    name: str
    lesson: str
    reference: Callable
    check: Callable[[Callable], str]
    points: int = 1


EXERCISES: dict[str, Exercise] = {}  # by name, in the lessons' order


def exercise(reference: Callable, lesson: str, points: int = 1) -> Callable:
    """Register `check(fn) -> what it verified` as the exercise of the same name, and return what a lesson calls:
    `check.<name>(fn)`, which prints what was verified or, while the learner's function fails, the mistake, with
    `reference` (the same signature as the learner's function) standing in."""
    def wrap(check) -> Callable:
        name = check.__name__

        def guarded(fn: Callable) -> str:  # every check sees the learner's function only through _guard
            return check(_guard(fn, reference))

        EXERCISES[name] = Exercise(name, lesson, reference, guarded, points)

        @functools.wraps(check)
        def run(fn: Callable) -> None:
            try:
                verified = guarded(fn)
            except NotImplementedError:
                problem = "not implemented yet: write the function's body in place of `raise NotImplementedError`"
            except Mistake as mistake:
                problem = str(mistake)
            except Exception as error:  # the learner's code failed: say how, and where that usually comes from
                problem = f"calling it raised {type(error).__name__}: {error}{_hint(error)}"
            else:
                print(f"✓ {name}: {verified}")
                return
            # The lesson's later cells call `name`: the reference takes its place in the namespace of the cell that
            # called the check (the notebook's globals, one frame up), so that Run All still reaches the end.
            sys._getframe(1).f_globals[name] = reference
            message = f"✗ {name}: {problem}\n(Until it passes, the rest of this lesson uses diffedu's reference {name}.)"
            if os.environ.get(GRADING_ENV):
                raise ExerciseError(message) from None
            print(message, file=sys.stderr)  # not an exception: Run All goes on to the end of the lesson

        run.reference = reference
        return run
    return wrap


def compared(name: str, lesson: str, reference: Callable, *, cases: Callable[[], list[tuple]], expected: Callable[[], list],
             mistakes: dict[str, Callable], verifies: str, answer: Callable | None = None, rtol: float = 1e-5,
             atol: float = 1e-7, points: int = 1) -> Callable[[Callable], None]:
    """An exercise checked by comparison alone: fn(*case) must equal `expected()` on every one of `cases()` (fresh
    inputs each time); else the known mistake that explains its answers is named (`mistakes`: message -> the
    wrong function), else the first wrong case is located. `answer`: what to make of fn's result before comparing
    (e.g. float). `verifies`: what passing shows, in words."""
    names = list(inspect.signature(reference).parameters)

    def check(fn: Callable) -> str:
        _compare(fn if answer is None else lambda *case: answer(fn(*case)), cases, expected(), mistakes, rtol, atol,
                 names=names)
        return verifies

    check.__name__ = check.__qualname__ = name
    return exercise(reference, lesson, points)(check)


def _guard(fn: Callable, reference: Callable) -> Callable:
    """fn as every check calls it: on its own copies of its arguments, so that an in-place change (x += noise,
    alpha_bar.mul_(...)) cannot leak into the check's tables, its reference or later calls; and stopped at the first
    call that changes an argument, returns nothing, or returns complex numbers (a comparison would see only their real
    part), with the reason in words. `reference`: the exercise's, for the arguments' names and the answer's kind."""
    names, kind = list(inspect.signature(reference).parameters), _kind(reference)

    def call(*args, **kwargs):
        my_args, my_kwargs = [_copy(value) for value in args], {key: _copy(value) for key, value in kwargs.items()}
        result = fn(*my_args, **my_kwargs)
        if result is None:
            raise Mistake(f"it returned None where {kind} was expected: did you forget `return`?")
        given = [*zip(names, args, my_args), *((key, kwargs[key], my_kwargs[key]) for key in kwargs)]
        changed = next((name for name, value, mine in given if _changed(value, mine)), None)
        if changed is not None:  # a caller that uses its tensor afterwards (a batch, a schedule) would find it altered
            raise Mistake(f"it changed its argument {changed} in place (x += ..., x[...] = ... and the methods ending "
                          "in _, such as .mul_(), write into the caller's tensor): compute a new one, x = x + ...")
        if _complex(result):
            dtype = f" ({result.dtype})" if isinstance(result, torch.Tensor) else ""
            raise Mistake(f"it returned complex numbers{dtype} where real ones are expected: the square root of a "
                          "negative number? If the imaginary parts are only rounding (torch.linalg.eigvals, "
                          "scipy.linalg.sqrtm), take .real")
        return result
    return call


_KINDS = {torch.Tensor: "a tensor", float: "a number", list: "a list", tuple: "a tuple"}


def _kind(reference: Callable) -> str:
    """What `reference` returns, in words, read from its annotation: "a tensor", "a number", ..."""
    returns = inspect.signature(reference, eval_str=True).return_annotation
    return _KINDS.get(typing.get_origin(returns) or returns, "an answer")


def _copy(value):
    """The learner's function's own copy of an argument. Tensors are cloned (gradients still flow back to the
    check's), tuples and lists copied item by item, other plain objects (a scheduler, a schedule) deep-copied. Models,
    generators and functions are the check's instruments, shared on purpose: a model records its calls, a generator
    is there to be drawn from."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if type(value) in (tuple, list):
        return type(value)(_copy(item) for item in value)
    if isinstance(value, (nn.Module, torch.Generator)) or callable(value):
        return value
    return copy.deepcopy(value)


def _changed(original, mine) -> bool:
    """Whether the learner's copy `mine` of an argument no longer equals the check's `original` (tensors only)."""
    if type(original) in (tuple, list):
        return len(mine) != len(original) or any(_changed(o, m) for o, m in zip(original, mine))
    if not isinstance(original, torch.Tensor) or original.is_meta:  # a meta tensor has no values to compare
        return False
    return mine.shape != original.shape or not torch.allclose(mine, original, rtol=0, atol=0, equal_nan=True)


def _complex(answer) -> bool:
    """Whether an answer holds complex numbers, which float() and torch.as_tensor(..., dtype=F64) would quietly
    take for their real part."""
    if isinstance(answer, (tuple, list)):
        return any(_complex(item) for item in answer)
    if isinstance(answer, torch.Tensor):
        return answer.is_complex()
    return isinstance(answer, (complex, np.ndarray, np.generic)) and np.iscomplexobj(answer)


def _hint(error: Exception) -> str:
    if isinstance(error, IndexError):
        return " (a timestep outside 0..T-1? t counts from 0 here)"
    if isinstance(error, RuntimeError) and "size of tensor" in str(error):
        return " (a table value per image has shape (B,): reshape it to (B, 1, 1, 1) to scale whole images)"
    return ""


# ---- comparing answers ----------------------------------------------------------------

def _close(got, want, rtol: float = 1e-5, atol: float = 1e-7) -> bool:
    """Equal within the tolerances, NaN where NaN is. A NaN proves nothing by itself: an answer that is NaN all
    through is like no known mistake (_like), however NaN that mistake's answer is too."""
    if isinstance(want, (tuple, list)):
        return isinstance(got, (tuple, list)) and len(got) == len(want) and all(_close(g, w, rtol, atol) for g, w in zip(got, want))
    try:
        got, want = torch.as_tensor(got, dtype=F64), torch.as_tensor(want, dtype=F64)
    except (TypeError, ValueError, RuntimeError):
        return False
    return got.shape == want.shape and bool(torch.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True))


def _like(got, wrong, rtol: float = 1e-5, atol: float = 1e-7) -> bool:
    """Whether a wrong answer explains `got`: equal to it, with numbers (not only NaN) to show it."""
    def numbers(value) -> bool:
        if isinstance(value, (tuple, list)):
            return all(numbers(v) for v in value)
        try:
            return bool(torch.isfinite(torch.as_tensor(value, dtype=F64)).any())
        except (TypeError, ValueError, RuntimeError):
            return True
    return _close(got, wrong, rtol, atol) and numbers(got)


def _not_finite(got, want) -> bool:
    """Whether `got` holds a NaN or an infinity where `want` has a number."""
    if isinstance(want, (tuple, list)):
        return isinstance(got, (tuple, list)) and any(_not_finite(g, w) for g, w in zip(got, want))
    try:
        got, want = torch.as_tensor(got, dtype=F64), torch.as_tensor(want, dtype=F64)
    except (TypeError, ValueError, RuntimeError):
        return False
    return got.shape == want.shape and bool((~torch.isfinite(got) & torch.isfinite(want)).any())


NOT_FINITE = "it returned NaN or infinity{where} (a division by zero, or the log or square root of a negative number?)"


def _call(names: list[str] | None, case: tuple) -> str:
    """A test case's inputs, as a learner reads them: 'with t = 999, eta = 1, x_t = a tensor of shape (4, 3, 8, 8)'."""
    def shown(value) -> str:
        if isinstance(value, torch.Tensor):
            return f"{value.item():.4g}" if value.numel() == 1 else f"a tensor of shape {tuple(value.shape)}"
        return repr(value) if isinstance(value, (int, float, str, type(None))) else f"a {type(value).__name__}"

    names = names or [f"argument {i + 1}" for i in range(len(case))]
    return "with " + ", ".join(f"{name} = {shown(value)}" for name, value in zip(names, case))


def _describe(got, want) -> str:
    """Where a wrong answer is wrong, when no known mistake explains it."""
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"it should return {len(want)} values, it returned {type(got).__name__}"
        i = next(i for i, (g, w) in enumerate(zip(got, want)) if not _close(g, w))
        return f"value {i + 1} of {len(want)} is wrong: {_describe(got[i], want[i])}"
    if isinstance(got, torch.Tensor) and not got.is_floating_point() and torch.as_tensor(want).is_floating_point():
        # said first, as it explains the rest: the values written into an integer tensor are truncated
        kind = "true/false values" if got.dtype == torch.bool else "whole numbers"
        return f"it returned {kind} ({got.dtype}) where real numbers are expected: {_describe(got.double(), want)}"
    try:
        got = torch.as_tensor(got, dtype=F64)
    except (TypeError, ValueError, RuntimeError):
        return f"it returned a {type(got).__name__}, not numbers"
    want = torch.as_tensor(want, dtype=F64)
    if got.shape != want.shape:
        return f"it returned shape {tuple(got.shape)} where {tuple(want.shape)} is expected"
    if not torch.isfinite(got).all():
        return "it returned NaN or infinity (a division by zero, or the log or square root of a negative number?)"
    error = (got - want).abs()
    worst = np.unravel_index(int(error.argmax()), tuple(error.shape)) if error.dim() else ()
    return (f"it is off by up to {error.max().item():.3g} (at index {tuple(int(i) for i in worst)}: got "
            f"{got[worst].item():.6g}, expected {want[worst].item():.6g})")


def _compare(fn: Callable, cases: Callable[[], list[tuple]], expected: list, mistakes: dict[str, Callable] | None = None,
             rtol: float = 1e-5, atol: float = 1e-7, names: list[str] | None = None) -> None:
    """fn(*case) must equal the expected answer for every case; else name the known mistake it makes,
    or say where it is wrong, and on which inputs (`names`: the function's parameters). `cases()` gives fresh
    inputs each time, so that in-place changes cannot leak."""
    got = [fn(*case) for case in cases()]
    right = [_close(g, w, rtol, atol) for g, w in zip(got, expected)]
    if all(right):
        return
    if not all(_close(g, again, rtol, atol) for g, again in zip(got, [fn(*case) for case in cases()])):
        raise Mistake("the same inputs gave two different answers: it draws random numbers of its own; "
                      "use the noise it is given (its `noise` argument), so that the step is the one asked for")
    answers = {message: [_like(g, wrong(*case), rtol, atol) for g, case in zip(got, cases())]
               for message, wrong in (mistakes or {}).items()}
    for message, like in answers.items():  # a mistake that gives every answer, NaN where it has NaN
        if all(like):
            raise Mistake(message)
    broken = next((i for i, (g, w) in enumerate(zip(got, expected)) if _not_finite(g, w)), None)
    if broken is not None:
        raise Mistake(NOT_FINITE.format(where=" " + _call(names, cases()[broken])))
    for message, like in answers.items():  # a mistake that explains every wrong answer, the rest being right
        if all(r or m for r, m in zip(right, like)):
            raise Mistake(message)
    i = right.index(False)
    raise Mistake(f"wrong on test case {i + 1} of {len(expected)}, {_call(names, cases()[i])}: "
                  f"{_describe(got[i], expected[i])}")


def _same_run(fn: Callable, run: Callable, expected, mistakes: dict[str, Callable], unlike: str,
              not_finite: str = "") -> None:
    """For a sampling loop: run(f) calls f on fixed inputs with a freshly seeded generator. fn's result must
    equal `expected`; else the same seed must give the same result (fn draws its noise from the generator),
    else a known mistake (run(wrong) equals fn's, with numbers to show it) is named, else a NaN is told so (with
    `not_finite`, where a loop usually gets one), else the difference is located."""
    got = run(fn)
    odd = [r for r in (got if isinstance(got, list) else [got]) if not isinstance(r, torch.Tensor)]  # run's calls' results
    if odd:  # else a list or a number would read as "different results for the same seed"
        raise Mistake(f"it returned a {type(odd[0]).__name__} where a tensor was expected (as from {unlike})")
    if _close(got, expected):
        return
    if not _close(got, run(fn)):
        raise Mistake("the same seed gave different results: draw every random number from the generator it is "
                      "given, e.g. torch.randn(x.shape, generator=generator, dtype=x.dtype)")
    for message, wrong in mistakes.items():
        if _like(got, run(wrong)):
            raise Mistake(message)
    if _not_finite(got, expected):
        raise Mistake(NOT_FINITE.format(where="") + not_finite)
    raise Mistake(f"the result differs from {unlike} with the same seed: {_describe(got, expected)}")


def _randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


LINEAR = Schedule.linear()


_DIFFUSERS_LOCK = threading.Lock()  # diffusers' lazy module must not be imported from two threads at once


def _diffusers(name: str) -> type | None:
    """diffusers' scheduler class, or None when it is not installed (the comparison is then skipped)."""
    with _DIFFUSERS_LOCK:
        try:
            import diffusers
        except ImportError:
            return None
        return getattr(diffusers, name)


def _import_diffusers_early() -> None:
    for name in ("DDPMScheduler", "DDIMScheduler"):
        _diffusers(name)


# diffusers takes seconds to import: start now, in the background, so the step checks stay quick.
threading.Thread(target=_import_diffusers_early, daemon=True).start()


SKIPPED = " (diffusers is not installed: the comparison with its {} was skipped; pip install diffusers)"


# ---- lesson 01 --------------------------------------------------------------------------

def _ref_alpha_bar(betas) -> torch.Tensor:
    return Schedule(betas).alpha_bar


_TABLES = (linear_betas(1000), cosine_betas(1000), torch.rand(12, generator=torch.Generator().manual_seed(0), dtype=F64) / 2)
alpha_bar = compared(
    "alpha_bar", "01_forward_process", _ref_alpha_bar,
    cases=lambda: [(b.clone(),) for b in _TABLES],
    expected=lambda: [Schedule(b).alpha_bar for b in _TABLES],
    mistakes={
        "that multiplies the betas; alpha_bar multiplies the alphas, alpha_t = 1 - beta_t": lambda b: torch.cumprod(b, 0),
        "a sum where a product belongs: alpha_bar_t = prod_{s <= t} (1 - beta_s) (torch.cumprod)": lambda b: torch.cumsum(1 - b, 0),
        "off by one: the product includes step t itself, so alpha_bar_0 = 1 - beta_0, not 1":
            lambda b: torch.cat([b.new_ones(1), torch.cumprod(1 - b, 0)[:-1]]),
        "that is 1 - prod(beta_s); alpha_bar is prod(1 - beta_s)": lambda b: 1 - torch.cumprod(b, 0),
    },
    verifies="equals diffedu's alpha_bar for the linear, cosine and a random schedule (linear: 0.9999 at t = 0, 4.0e-05 at t = 999)")


def _ref_next_noise_variance(alpha_t, alpha_bar_prev) -> torch.Tensor:
    return 1 - alpha_t * alpha_bar_prev  # = 1 - alpha_bar_t: the claim being proved


_ALPHA, _AB_PREV = 1 - _randn(50, seed=3).abs() / 50, torch.rand(50, generator=torch.Generator().manual_seed(4), dtype=F64)
next_noise_variance = compared(
    "next_noise_variance", "01_forward_process", _ref_next_noise_variance,
    cases=lambda: [(_ALPHA.clone(), _AB_PREV.clone())],
    expected=lambda: [1 - _ALPHA * _AB_PREV],
    mistakes={
        "standard deviations added: independent noises add their variances, not their standard deviations":
            lambda a, p: (a * (1 - p)).sqrt() + (1 - a).sqrt(),
        "scaling x_{t-1} by sqrt(alpha_t) scales its noise's variance by alpha_t (the square of the factor), not sqrt(alpha_t)":
            lambda a, p: a.sqrt() * (1 - p) + (1 - a),
        "the old noise shrinks too: it is inside x_{t-1}, which is multiplied by sqrt(alpha_t)":
            lambda a, p: (1 - p) + (1 - a),
    },
    verifies="alpha_t (1 - alpha_bar_{t-1}) + beta_t = 1 - alpha_bar_t: the noise stays one Gaussian, and the induction holds")


def _ref_q_sample(x0, t, noise, alpha_bar) -> torch.Tensor:
    ab = at(alpha_bar, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def _q_sample_cases() -> list[tuple]:
    t = torch.tensor([0, 1, 250, 500, 998, 999, 10, 600])
    return [(_randn(8, 3, 4, 4, seed=1).clamp(-1, 1), t.clone(), _randn(8, 3, 4, 4, seed=2), LINEAR.alpha_bar.clone())]


q_sample = compared(
    "q_sample", "01_forward_process", _ref_q_sample,
    cases=_q_sample_cases,
    expected=lambda: [LINEAR.q_sample(x0, t, noise) for x0, t, noise, _ in _q_sample_cases()],
    mistakes={
        "the signal is scaled by sqrt(alpha_bar_t) and the noise by sqrt(1 - alpha_bar_t): the square roots are missing":
            lambda x0, t, n, ab: ab[t].view(-1, 1, 1, 1) * x0 + (1 - ab[t].view(-1, 1, 1, 1)) * n,
        "the noise's factor is sqrt(1 - alpha_bar_t), a standard deviation: its square root is missing":
            lambda x0, t, n, ab: ab[t].view(-1, 1, 1, 1).sqrt() * x0 + (1 - ab[t].view(-1, 1, 1, 1)) * n,
        "off by one: alpha_bar[t] is the table's value at t (t counts from 0)":
            lambda x0, t, n, ab: _ref_q_sample(x0, (t - 1).clamp(min=0), n, ab),
        "each image has its own t: index alpha_bar with the whole tensor t, not t[0]":
            lambda x0, t, n, ab: _ref_q_sample(x0, t[:1].expand(len(t)), n, ab),
        "x_0 and the noise are swapped: sqrt(alpha_bar_t) scales the image":
            lambda x0, t, n, ab: _ref_q_sample(n, t, x0, ab),
    },
    verifies="x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, with one t per image, at t = 0, 1, ..., 999")


# ---- lesson 02 --------------------------------------------------------------------------

class Spy(nn.Module):
    """A stand-in for the UNet: it records what it is given and answers with fixed numbers."""

    def __init__(self, answer: torch.Tensor) -> None:
        super().__init__()
        self.answer, self.calls = answer, []

    def forward(self, x, t) -> torch.Tensor:
        self.calls.append((x.detach().clone(), torch.as_tensor(t).detach().clone()))
        return self.answer


def _ref_eps_loss(model, x0, alpha_bar) -> torch.Tensor:
    t = torch.randint(0, len(alpha_bar), (len(x0),), device=x0.device)
    noise = torch.randn_like(x0)
    return torch.nn.functional.mse_loss(model(_ref_q_sample(x0, t, noise, alpha_bar.to(x0.device)), t), noise)


def _gaussian(x: torch.Tensor) -> bool:
    return abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


@exercise(_ref_eps_loss, "02_ddpm")
def eps_loss(fn) -> str:
    n, ab = 16384, LINEAR.alpha_bar  # many images: every t in 0..999 is drawn, and the noise's statistics are sharp
    x0 = (torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(5), dtype=F64) * 2 - 1)
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
        raise Mistake(f"t must be one whole-number step per image, shape ({n},); it was {t.dtype} of shape {tuple(t.shape)}")
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
            "summed over every value: take the mean (F.mse_loss's default), so the loss does not grow with the batch":
                ((answer - noise) ** 2).sum(),
            "a mean absolute error: the loss is the mean *squared* error": (answer - noise).abs().mean(),
        }.items():
            if _close(loss, wrong):
                raise Mistake(message)
        raise Mistake(f"the loss should be mean((model(x_t, t) - eps)^2) = {((answer - noise) ** 2).mean().item():.6g}; "
                      f"it returned {float(loss):.6g}")
    return ("one uniform t in 0..999 per image, Gaussian noise, x_t made from them, and the loss is the mean squared "
            "error between the model's answer and that noise (Ho et al. eq. 14)")


def _ref_posterior(betas, alpha_bar) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = Schedule(betas)
    return s.posterior_coef_x0, s.posterior_coef_xt, s.posterior_variance


def _prev(ab) -> torch.Tensor:
    return torch.cat([ab.new_ones(1), ab[:-1]])


posterior = compared(
    "posterior", "02_ddpm", _ref_posterior,
    cases=lambda: [(s.betas.clone(), s.alpha_bar.clone()) for s in (LINEAR, Schedule.cosine())],
    expected=lambda: [(s.posterior_coef_x0, s.posterior_coef_xt, s.posterior_variance) for s in (LINEAR, Schedule.cosine())],
    mistakes={
        "the variance is beta-tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t): beta_t itself is Ho et al.'s "
        "other choice of sigma_t^2, an upper bound, not the posterior's":
            lambda b, ab: (*_ref_posterior(b, ab)[:2], b),
        "alpha_bar_{t-1} where the formulas say t - 1: shift alpha_bar by one step, with alpha_bar_{-1} = 1":
            lambda b, ab: (b * ab.sqrt() / (1 - ab), (1 - ab) * (1 - b).sqrt() / (1 - ab), b * (1 - ab) / (1 - ab)),
        "the x_t coefficient has sqrt(alpha_t), not alpha_t":
            lambda b, ab: (b * _prev(ab).sqrt() / (1 - ab), (1 - _prev(ab)) * (1 - b) / (1 - ab), _ref_posterior(b, ab)[2]),
        "the two mean coefficients are swapped: beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t) multiplies x_0":
            lambda b, ab: (_ref_posterior(b, ab)[1], _ref_posterior(b, ab)[0], _ref_posterior(b, ab)[2]),
    },
    verifies="the mean coefficients and variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 7) for the linear and cosine "
             "schedules; the variance is 0 at t = 0, where x_0 is known")


def _ref_ddpm_step(eps, t, x_t, noise, alpha_bar, posterior) -> torch.Tensor:
    coef_x0, coef_xt, variance = posterior
    ab = alpha_bar[t]
    x0 = ((x_t - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
    return coef_x0[t] * x0 + coef_xt[t] * x_t + variance[t].sqrt() * noise


def _ddpm_cases() -> list[tuple]:
    post = (LINEAR.posterior_coef_x0, LINEAR.posterior_coef_xt, LINEAR.posterior_variance)
    return [(_randn(4, 3, 4, 4, seed=10 + t) * 0.8, t, _randn(4, 3, 4, 4, seed=20 + t) * 1.3, _randn(4, 3, 4, 4, seed=t),
             LINEAR.alpha_bar.clone(), tuple(p.clone() for p in post)) for t in (999, 700, 300, 40, 1, 0)]


@exercise(_ref_ddpm_step, "02_ddpm")
def ddpm_step(fn) -> str:
    scheduler = DDPMScheduler(LINEAR)
    expected = [scheduler.step(eps, t, x, noise=noise).prev for eps, t, x, noise, _, _ in _ddpm_cases()]

    def shifted(eps, t, x, n, ab, post) -> torch.Tensor:
        return _ref_ddpm_step(eps, max(t - 1, 0), x, n, ab, post)

    def unclipped(eps, t, x, n, ab, post) -> torch.Tensor:
        x0 = (x - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
        return post[0][t] * x0 + post[1][t] * x + post[2][t].sqrt() * n

    _compare(fn, _ddpm_cases, expected, {
        "clip the predicted x_0 to [-1, 1] before the posterior mean: at large t the guess strays far outside the "
        "pixel range (as Ho et al.'s code and diffusers run Algorithm 2; the paper's printout does not clip)": unclipped,
        "the noise is scaled by the standard deviation sqrt(variance_t), not by the variance":
            lambda eps, t, x, n, ab, post: _ref_ddpm_step(eps, t, x, n, ab, post) - post[2][t].sqrt() * n + post[2][t] * n,
        "x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t): the square root on (1 - alpha_bar_t) is missing":
            lambda eps, t, x, n, ab, post: _ref_ddpm_step((1 - ab[t]).sqrt() * eps, t, x, n, ab, post),
        "off by one: the tables are indexed at t itself": shifted,
    })
    compared = _against_diffusers_ddpm(fn)
    return ("Algorithm 2 of Ho et al.: x_0 from eps, clipped to [-1, 1], then the posterior mean plus its standard "
            f"deviation times the noise, at t = 999 ... 0, equal to diffedu's DDPMScheduler{compared}")


SHORT = Schedule(linear_betas(100, 1e-3, 0.2), name="linear, T = 100")  # the loop checks' schedule: x_T is noise
EXACT = GaussianDenoiser(SHORT, mean=0.2, std=0.3)  # the exact noise predictor of N(0.2, 0.3²) data


@torch.inference_mode()
def _ddpm_loop(model, x_T, alpha_bar, posterior, generator=None, order="down", last=0, fresh=True) -> torch.Tensor:
    """Algorithm 2 as a loop, right, or with one of the mistakes the check names."""
    ts = list(range(len(alpha_bar) - 1, last - 1, -1))
    x, once = x_T, None if fresh else _noise(x_T, generator)
    for t in ts if order == "down" else ts[::-1]:
        noise = _noise(x, generator) if fresh else once
        x = _ref_ddpm_step(model(x, t), t, x, noise, alpha_bar, posterior)
    return x


@exercise(_ddpm_loop, "02_ddpm")
def sample_ddpm(fn) -> str:
    x_T, tables = _randn(64, 1, 2, 2, seed=130), (SHORT.posterior_coef_x0, SHORT.posterior_coef_xt, SHORT.posterior_variance)

    def run(f: Callable) -> torch.Tensor:
        with torch.inference_mode():
            return f(EXACT, x_T.clone(), SHORT.alpha_bar.clone(), tuple(p.clone() for p in tables), torch.Generator().manual_seed(131))

    expected = ddpm_sample(EXACT, SHORT, x_T.clone(), generator=torch.Generator().manual_seed(131), progress=False)
    _same_run(fn, run, expected, {
        "the loop runs backwards in time, from t = T - 1 (pure noise) down to 0: range(T - 1, -1, -1)":
            lambda *a: _ddpm_loop(*a, order="up"),
        "the loop stops one step early: its last step is t = 0 (t counts from 0 here), range(T - 1, -1, -1)":
            lambda *a: _ddpm_loop(*a, last=1),
        "fresh noise at every step: one draw reused at every step makes all the steps' noises the same":
            lambda *a: _ddpm_loop(*a, fresh=False),
    }, "diffedu's DDPM sampler")
    return ("from x_T, your ddpm_step at t = T - 1, ..., 0 with fresh noise from the generator: the same samples as "
            "diffedu's DDPMScheduler loop with the same seed (a 100-step schedule, the exact denoiser of Gaussian data)")


def _against_diffusers_ddpm(fn) -> str:
    cls = _diffusers("DDPMScheduler")
    if cls is None:
        return SKIPPED.format("DDPMScheduler")
    theirs = cls(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, variance_type="fixed_small")
    theirs.betas, theirs.alphas, theirs.alphas_cumprod = LINEAR.betas.clone(), LINEAR.alphas.clone(), LINEAR.alpha_bar.clone()
    for eps, t, x, _, ab, post in _ddpm_cases():
        seed = 100 + t  # diffusers draws its own noise: give both the same draw
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
        want = theirs.step(eps, t, x, generator=torch.Generator().manual_seed(seed)).prev_sample
        if not _close(fn(eps, t, x, noise, ab, post), want, rtol=1e-8, atol=1e-10):
            raise Mistake(f"it differs from diffusers' DDPMScheduler.step at t = {t}")
    return f", and to diffusers {_diffusers_version()}'s DDPMScheduler.step on the same inputs and noise"


def _diffusers_version() -> str:
    import diffusers
    return diffusers.__version__


# ---- lesson 03 --------------------------------------------------------------------------

def _ref_ddim_sigma(alpha_bar_t, alpha_bar_prev, eta) -> torch.Tensor:
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()


def _ddim_pairs(steps: int = 10) -> list[tuple]:
    """(t, alpha_bar_t, alpha_bar_prev) for each step of a DDIM run, the last one landing on the clean image."""
    scheduler = DDIMScheduler(LINEAR).set_timesteps(steps)
    return [(t, LINEAR.alpha_bar[t], scheduler.alpha_bar(scheduler.prev_timestep(t), LINEAR.alpha_bar)) for t in scheduler.timesteps]


_ETAS = (0.0, 0.5, 1.0)


def _ddim_sigma_cases() -> list[tuple]:
    pairs = _ddim_pairs()
    ab, ab_prev = torch.stack([p[1] for p in pairs]), torch.stack([p[2] for p in pairs])
    return [(ab.clone(), ab_prev.clone(), eta) for eta in _ETAS]


ddim_sigma = compared(
    "ddim_sigma", "03_ddim", _ref_ddim_sigma,
    cases=_ddim_sigma_cases,
    expected=lambda: [torch.stack([DDIMScheduler(LINEAR, eta).set_timesteps(10).sigma(t) for t, _, _ in _ddim_pairs()])
                      for eta in _ETAS],
    mistakes={
        "eta multiplies sigma: eta = 0 must give sigma = 0 (deterministic DDIM), eta = 1 DDPM's amount":
            lambda a, p, eta: _ref_ddim_sigma(a, p, 1.0),
        "sigma is a standard deviation: take the square root of the product":
            lambda a, p, eta: eta * ((1 - p) / (1 - a) * (1 - a / p)),
        "the first ratio is (1 - alpha_bar_prev) / (1 - alpha_bar_t), not its inverse":
            lambda a, p, eta: eta * ((1 - a) / (1 - p) * (1 - a / p)).sqrt(),
    },
    verifies="Song et al. eq. 16 at each step of a 10-step run for eta = 0, 0.5, 1 (0 on the last step, into the clean image)")


def _ref_ddim_step(eps, x_t, alpha_bar_t, alpha_bar_prev, eta, noise) -> torch.Tensor:
    x0 = ((x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()).clamp(-1, 1)
    eps = (x_t - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()  # the noise that agrees with the clipped x_0
    sigma = _ref_ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    return alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev - sigma**2).sqrt() * eps + sigma * noise


def _ddim_step_cases(pairs) -> list[tuple]:
    return [(_randn(4, 3, 4, 4, seed=30 + i), _randn(4, 3, 4, 4, seed=40 + i) * 1.3, a.clone(), p.clone(), eta,
             _randn(4, 3, 4, 4, seed=50 + i)) for i, (_, a, p) in enumerate(pairs) for eta in (0.0, 0.6, 1.0)]


@exercise(_ref_ddim_step, "03_ddim")
def ddim_step(fn) -> str:
    pairs = _ddim_pairs()
    cases = lambda: _ddim_step_cases(pairs)  # noqa: E731
    expected = [DDIMScheduler(LINEAR, eta).set_timesteps(10).step(eps, t, x, noise=noise).prev
                for (t, _, _), (eps, x, _, _, eta, noise) in zip([p for p in pairs for _ in range(3)], cases())]

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
        return _ref_ddim_step(eps, x, a, p, eta, n) - (1 - p - s**2).sqrt() * _clipped_eps(eps, x, a) + (1 - p).sqrt() * _clipped_eps(eps, x, a)

    _compare(fn, cases, expected, {
        "eta multiplies sigma: with eta = 0 no noise is added and the step is deterministic":
            lambda eps, x, a, p, eta, n: _ref_ddim_step(eps, x, a, p, 1.0, n),
        "the direction term is sqrt(1 - alpha_bar_prev - sigma^2) eps: the noise's share of the variance comes out of it":
            direction_keeps_all,
        "clip the predicted x_0 to [-1, 1] (pixels live there), then recompute eps from the clipped x_0": unclipped,
        "after clipping x_0, recompute eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t), so that the step "
        "stays consistent (diffusers' use_clipped_model_output)": eps_not_recomputed,
        "x_prev = sqrt(alpha_bar_prev) x_0 + ...: the square root is missing":
            lambda eps, x, a, p, eta, n: _ref_ddim_step(eps, x, a, p, eta, n) + (p - p.sqrt()) * _clipped_x0(eps, x, a),
    })
    compared = _against_diffusers_ddim(fn)
    return ("Song et al. eq. 12: x_0 from eps (clipped), the direction to x_t and sigma's fresh noise, at every step of a "
            f"10-step run for eta = 0, 0.6, 1, equal to diffedu's DDIMScheduler{compared}")


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
    pairs = [(int(t), LINEAR.alpha_bar[int(t)], LINEAR.alpha_bar[int(t) - 100] if t >= 100 else torch.tensor(1.0, dtype=F64))
             for t in theirs.timesteps]
    for (t, _, _), (eps, x, a, p, eta, noise) in zip([p for p in pairs for _ in range(3)], _ddim_step_cases(pairs)):
        want = theirs.step(eps, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise).prev_sample
        if not _close(fn(eps, x, a, p, eta, noise), want, rtol=1e-8, atol=1e-10):
            raise Mistake(f"it differs from diffusers' DDIMScheduler.step at t = {t}, eta = {eta}")
    return f", and to diffusers {_diffusers_version()}'s DDIMScheduler.step (its own timesteps 900, 800, ..., 0) on the same inputs"


def _ref_ddim_timesteps(T, steps, spacing="uniform") -> list[int]:
    return _ddim_timesteps(T, steps, spacing)


_TIMESTEP_CASES = [(1000, n, s) for n in (1, 2, 10, 50, 100, 1000) for s in ("uniform", "quadratic")] + [(20, 7, "quadratic")]


def _leading(T, n, s) -> list[int]:
    return list(range(0, T, T // n))[::-1] if s == "uniform" else _ddim_timesteps(T, n, s)


def _no_fix(T, n, s) -> list[int]:
    if n == 1:
        return [T - 1]
    frac = np.linspace(0, 1, n)
    return np.round((T - 1) * (frac if s == "uniform" else frac**2)).astype(int)[::-1].tolist()


ddim_timesteps = compared(
    "ddim_timesteps", "03_ddim", _ref_ddim_timesteps,
    cases=lambda: _TIMESTEP_CASES,
    expected=lambda: [_ddim_timesteps(*case) for case in _TIMESTEP_CASES],
    answer=lambda timesteps: [int(t) for t in timesteps],
    mistakes={
        "largest first: sampling runs from t = T - 1 (pure noise) down to 0": lambda *c: _ddim_timesteps(*c)[::-1],
        "start at T - 1 = 999, where x_T is pure noise: range(0, T, T // steps) (diffusers' 'leading' spacing) "
        "never reaches it": _leading,
        "quadratic spacing repeats timesteps near 0 (round((T-1) (i/(n-1))^2) is 0 several times): take max(t_i, i)": _no_fix,
        "np.linspace(T, 0, ...) starts at T, outside 0..T-1: end the range at T - 1":
            lambda T, n, s: np.round(np.linspace(T, 0, n)).astype(int).tolist() if s == "uniform" else _ddim_timesteps(T, n, s),
    },
    verifies="strictly decreasing from T - 1 to 0 for 1 to 1000 steps, uniform and quadratic, as diffedu's sampler visits them")


@torch.inference_mode()
def _ddim_loop(model, x_T, alpha_bar, steps, eta=0.0, spacing="uniform", generator=None, prev="next",
               to_clean=True, order="down") -> torch.Tensor:
    """The DDIM loop, right, or with one of the mistakes the check names."""
    ts = _ddim_timesteps(len(alpha_bar), steps, spacing)
    ts = ts if order == "down" else ts[::-1]
    x, clean = x_T, alpha_bar.new_tensor(1.0) if to_clean else alpha_bar[0]
    for t, t_next in zip(ts, ts[1:] + [-1]):
        t_prev = t_next if prev == "next" else t - 1
        x = _ref_ddim_step(model(x, t), x, alpha_bar[t], alpha_bar[t_prev] if t_prev >= 0 else clean, eta, _noise(x, generator))
    return x


@exercise(_ddim_loop, "03_ddim")
def sample_ddim(fn) -> str:
    x_T = _randn(64, 1, 2, 2, seed=132)
    settings = [(10, 0.0, "uniform"), (7, 1.0, "quadratic")]  # (steps, eta, spacing)

    def run(f: Callable) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [f(EXACT, x_T.clone(), SHORT.alpha_bar.clone(), steps, eta, spacing, torch.Generator().manual_seed(133))
                    for steps, eta, spacing in settings]

    expected = [ddim_sample(EXACT, SHORT, x_T.clone(), steps, eta, spacing, generator=torch.Generator().manual_seed(133),
                            progress=False) for steps, eta, spacing in settings]
    visited = []  # the timesteps the loop asks the model about, in its order (a wrong order gives NaN, like others)

    def recording(x, t):
        visited.append(int(torch.as_tensor(t).flatten()[0]))
        return EXACT(x, t)

    with torch.inference_mode():
        fn(recording, x_T.clone(), SHORT.alpha_bar.clone(), 10, 0.0, "uniform", torch.Generator().manual_seed(133))
    if visited != sorted(visited, reverse=True):
        raise Mistake("visit the timesteps as ddim_timesteps gives them, largest first: sampling starts from pure noise")
    _same_run(fn, run, expected, {
        "alpha_bar_prev is alpha_bar at the next timestep of the list, not at t - 1: DDIM jumps over the steps between":
            lambda *a: _ddim_loop(*a, prev="t-1"),
        "the last step goes from the last timestep to the clean image, where alpha_bar = 1 (after t = 0 there is no "
        "alpha_bar[t_prev] to look up): pair each timestep with the next, and the last with 'clean'":
            lambda *a: _ddim_loop(*a, to_clean=False),
        "visit the timesteps as ddim_timesteps gives them, largest first: sampling starts from pure noise":
            lambda *a: _ddim_loop(*a, order="up"),
    }, "diffedu's DDIM sampler", not_finite=": after the smallest timestep comes the clean image, where "
                                           "alpha_bar_prev is 1. alpha_bar[-1] is the table's last entry, pure noise")
    return ("your timesteps and your step, each timestep paired with the next and the last with the clean image: the "
            "same samples as diffedu's DDIMScheduler loop with the same seed, 10 uniform steps at eta = 0 and 7 "
            "quadratic ones at eta = 1")


def _ref_ddim_invert_step(eps, x, alpha_bar_t, alpha_bar_prev) -> torch.Tensor:
    x0 = (x - (1 - alpha_bar_prev).sqrt() * eps) / alpha_bar_prev.sqrt()
    return alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * eps


def _invert_cases() -> list[tuple]:
    return [(_randn(4, 3, 4, 4, seed=60 + i), _randn(4, 3, 4, 4, seed=70 + i) * 1.2, a.clone(), p.clone())
            for i, (_, a, p) in enumerate(_ddim_pairs())]


ddim_invert_step = compared(
    "ddim_invert_step", "03_ddim", _ref_ddim_invert_step,
    cases=_invert_cases,
    expected=lambda: [DDIMScheduler(LINEAR, clip_x0=False).set_timesteps(10).invert_step(eps, t, x).prev
                      for (t, _, _), (eps, x, _, _) in zip(_ddim_pairs(), _invert_cases())],
    mistakes={
        "that is the sampling step, from t down to t_prev: inversion goes up from t_prev to t, so the two alpha-bars "
        "swap roles": lambda eps, x, a, p: _ref_ddim_invert_step(eps, x, p, a),
        "x_0 = (x - sqrt(1 - alpha_bar_prev) eps) / sqrt(alpha_bar_prev): subtract the noise, do not add it":
            lambda eps, x, a, p: a.sqrt() * (x + (1 - p).sqrt() * eps) / p.sqrt() + (1 - a).sqrt() * eps,
        "do not clip x_0 when inverting: clipping throws information away, and sampling can no longer find the way back":
            lambda eps, x, a, p: a.sqrt() * ((x - (1 - p).sqrt() * eps) / p.sqrt()).clamp(-1, 1) + (1 - a).sqrt() * eps,
        "the new noise term is sqrt(1 - alpha_bar_t) eps, at the step you move to":
            lambda eps, x, a, p: a.sqrt() * (x - (1 - p).sqrt() * eps) / p.sqrt() + (1 - p).sqrt() * eps,
    },
    verifies="deterministic DDIM run backwards, from t_prev up to t, equal to diffedu's DDIMScheduler.invert_step at every "
             "step of a 10-step run")


# ---- lesson 04 --------------------------------------------------------------------------

def _ref_reparameterize(mean, logvar, noise) -> torch.Tensor:
    return _reparameterize(mean, logvar, noise)


@exercise(_ref_reparameterize, "04_vae")
def reparameterize(fn) -> str:
    mean, logvar, noise = _randn(64, 4, seed=80), _randn(64, 4, seed=81) - 1, _randn(64, 4, seed=82)
    cases = lambda: [(mean.clone(), logvar.clone(), noise.clone())]  # noqa: E731
    _compare(fn, cases, [_reparameterize(mean, logvar, noise)], {
        "exp(logvar) is the variance; the noise is scaled by the standard deviation exp(logvar / 2)":
            lambda m, lv, n: m + lv.exp() * n,
        "logvar is the log of the variance, not the standard deviation: std = exp(0.5 * logvar)": lambda m, lv, n: m + lv * n,
        "the noise is scaled by the standard deviation, not added to it": lambda m, lv, n: m + (0.5 * lv).exp() + n,
    })
    m, lv = mean.clone().requires_grad_(), logvar.clone().requires_grad_()
    try:
        fn(m, lv, noise).sum().backward()
    except RuntimeError:  # "does not require grad": the graph was cut
        pass
    if m.grad is None or lv.grad is None or not _close(lv.grad, 0.5 * (0.5 * logvar).exp() * noise):
        raise Mistake("gradients must flow into mean and logvar: compute z from them with torch operations, without .detach()")
    return "z = mean + exp(logvar / 2) eps, and its gradients reach the mean and the log-variance"


def _ref_kl_divergence(mean, logvar) -> torch.Tensor:
    return _kl_divergence(mean, logvar)


def _kl_cases() -> list[tuple]:
    return [(_randn(8, 4, 8, 8, seed=90), _randn(8, 4, 8, 8, seed=91)), (torch.zeros(2, 4, dtype=F64), torch.zeros(2, 4, dtype=F64))]


kl_divergence = compared(
    "kl_divergence", "04_vae", _ref_kl_divergence,
    cases=_kl_cases,
    expected=lambda: [_kl_divergence(*case) for case in _kl_cases()],
    mistakes={
        "summed: average over every latent value (and the batch), so the weight of the KL does not depend on the batch size":
            lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).sum(),
        "summed over each image's latent values, then averaged over the batch (most VAE code's convention): here the "
        "KL is the mean over every value, as the L1 term is a mean over pixels, and its weight is set for that":
            lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).flatten(1).sum(1).mean(),
        "the factor 1/2 is missing": lambda m, lv: (m**2 + lv.exp() - 1 - lv).mean(),
        "the log term enters with a minus: KL = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2)": lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 + lv).mean(),
        "sigma^2 = exp(logvar), not exp(2 logvar): logvar is already the log of the variance":
            lambda m, lv: 0.5 * (m**2 + (2 * lv).exp() - 1 - lv).mean(),
    },
    verifies="KL(N(mu, sigma^2) || N(0, 1)) = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2), averaged over values; 0 for N(0, 1) itself")


def _ref_scale_factor(means) -> float:
    return measure_scale_factor(means)


_MEANS = _randn(200, 4, 8, 8, seed=95) * torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=F64).view(1, 4, 1, 1) + 0.3
scale_factor = compared(
    "scale_factor", "04_vae", _ref_scale_factor,
    cases=lambda: [(_MEANS.clone(),)],
    expected=lambda: [measure_scale_factor(_MEANS)],
    answer=lambda out: float(out) if torch.as_tensor(out).numel() == 1 else out,
    mistakes={
        "that is the standard deviation; the scale factor is its inverse, 1 / std, which brings the latents to unit variance":
            lambda m: m.std().item(),
        "1 / variance over-corrects: divide by the standard deviation, 1 / std": lambda m: 1 / m.var().item(),
        "one number for the whole latent space (as Stable Diffusion's 0.18215), not one per channel":
            lambda m: 1 / m.transpose(0, 1).flatten(1).std(dim=1),
        "the spread is the standard deviation, not the mean absolute value": lambda m: 1 / m.abs().mean().item(),
    },
    rtol=1e-4,
    verifies=f"1 / std of the latents ({measure_scale_factor(_MEANS):.4f} here): multiplied by it, they have unit variance")


def _hinge_cases() -> list[tuple]:
    mixed = torch.tensor([3.0, 3.0, 3.0, 0.0], dtype=F64).view(1, 1, 2, 2)  # most patches beyond the margin, one not
    return [(2 * _randn(4, 1, 8, 8, seed=96), 2 * _randn(4, 1, 8, 8, seed=97) - 0.5),
            (torch.full((2, 1, 8, 8), 1.5, dtype=F64), torch.full((2, 1, 8, 8), -1.5, dtype=F64)),
            (mixed, -mixed)]


_relu = torch.relu
hinge_d_loss = compared(
    "hinge_d_loss", "04_vae", _hinge_d_loss,
    cases=_hinge_cases,
    expected=lambda: [_hinge_d_loss(*case) for case in _hinge_cases()],
    mistakes={
        "the signs are swapped: real patches should score high, relu(1 - real), and decoded ones low, relu(1 + fake)":
            lambda r, f: 0.5 * (_relu(1 + r).mean() + _relu(1 - f).mean()),
        "the relu goes on each patch, inside the mean: relu(1 - real).mean(). Outside it, patches far beyond their "
        "margin cancel the cost of those still wrong": lambda r, f: 0.5 * (_relu((1 - r).mean()) + _relu((1 + f).mean())),
        "without the relu it is not a hinge: a patch already beyond its margin should cost nothing":
            lambda r, f: 0.5 * ((1 - r).mean() + (1 + f).mean()),
        "the margin is 1: relu(1 - real) and relu(1 + fake), not relu(-real) and relu(fake)":
            lambda r, f: 0.5 * (_relu(-r).mean() + _relu(f).mean()),
        "the factor 1/2 is missing: the loss is the average of the real and the decoded term":
            lambda r, f: _relu(1 - r).mean() + _relu(1 + f).mean(),
        "summed over patches: average them, so that the loss does not grow with the image or the batch":
            lambda r, f: 0.5 * (_relu(1 - r).sum() + _relu(1 + f).sum()),
    },
    verifies="1/2 mean(relu(1 - real)) + 1/2 mean(relu(1 + fake)); 0 once every patch is beyond its margin")


# ---- lesson 05 --------------------------------------------------------------------------

@torch.inference_mode()
def _ref_sample_latents(unet, vae, scheduler, n, generator) -> torch.Tensor:
    cfg = unet.config
    x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=generator).to(next(unet.parameters()).device)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t), t, x).prev
    return vae.decode(x / vae.config.scale_factor).clamp(-1, 1)


def _tiny_latent_models() -> tuple[UNet, VAE]:
    """A small UNet on 4x8x8 latents and a VAE with scale factor 0.5, random but fixed (no training needed)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet(UNetConfig(in_channels=4, image_size=8, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=()))
        nn.init.normal_(unet.head[-1].weight, std=0.05)  # a zero head would predict eps = 0 and hide mistakes
        vae = VAE(VAEConfig(channels=8, scale_factor=0.5))
    return unet.eval(), vae.eval()


@exercise(_ref_sample_latents, "05_latent_diffusion")
def sample_latents(fn) -> str:
    unet, vae = _tiny_latent_models()

    def scheduler() -> DDIMScheduler:
        return DDIMScheduler(LINEAR, clip_x0=False).set_timesteps(5)

    def run(f: Callable) -> torch.Tensor:
        with torch.inference_mode():
            return f(unet, vae, scheduler(), 3, torch.Generator().manual_seed(7))

    expected = LatentDiffusion(vae, unet, LINEAR).sample(3, steps=5, generator=torch.Generator().manual_seed(7), progress=False)

    def loop(forward=True, unscale=True, clamp=True, multiply=False) -> Callable:
        def sample(unet, vae, scheduler, n, generator) -> torch.Tensor:
            cfg = unet.config
            x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=generator)
            for t in scheduler.timesteps if forward else scheduler.timesteps[::-1]:
                x = scheduler.step(unet(x, t), t, x).prev
            factor = vae.config.scale_factor
            images = vae.decode(x * factor if multiply else x / factor if unscale else x)
            return images.clamp(-1, 1) if clamp else images
        return sample

    _same_run(fn, run, expected, {
        "divide the latents by vae.config.scale_factor before decoding: the decoder was trained on unscaled latents":
            loop(unscale=False),
        "multiplied by the scale factor where it divides: the UNet's latents are the VAE's times scale_factor, so "
        "decoding takes x / vae.config.scale_factor": loop(multiply=True),
        "step from the largest timestep down: for t in scheduler.timesteps": loop(forward=False),
        "clamp the decoded images to [-1, 1], the range images live in": loop(clamp=False),
    }, "LatentDiffusion.sample's images")
    return ("noise in latent space drawn with the generator, every DDIM step from T - 1 down, then unscaled and "
            "decoded to 3x32x32 images in [-1, 1]")


# ---- lesson 06 --------------------------------------------------------------------------

def _ref_frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    return metrics.frechet_distance(mu1, sigma1, mu2, sigma2)


def _covariance(d: int, seed: int) -> torch.Tensor:
    a = _randn(d, 2 * d, seed=seed)
    return a @ a.T / (2 * d)


def _sqrtm(s: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(s)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


_D = 8
_DIAG1, _DIAG2 = torch.diag(_randn(_D, seed=106).abs() + 0.1), torch.diag(_randn(_D, seed=107).abs() + 0.1)


def _frechet_cases() -> list[tuple]:
    return [(_randn(_D, seed=100), _covariance(_D, 101), _randn(_D, seed=102), _covariance(_D, 103)),
            (_randn(_D, seed=104), _covariance(_D, 105), _randn(_D, seed=104), _covariance(_D, 105)),  # identical: 0
            (torch.zeros(_D, dtype=F64), _DIAG1.clone(), torch.ones(_D, dtype=F64), _DIAG2.clone())]  # diagonal: a closed form


def _mean_term(m1, s1, m2, s2) -> float:
    return float(((m1 - m2) ** 2).sum())


frechet_distance = compared(
    "frechet_distance", "06_comparison", _ref_frechet_distance,
    cases=_frechet_cases,
    expected=lambda: [metrics.frechet_distance(*_frechet_cases()[0]), 0.0,
                      float(_D + ((_DIAG1.diagonal().sqrt() - _DIAG2.diagonal().sqrt()) ** 2).sum())],
    answer=float,
    mistakes={
        "the covariance term is missing: FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); the means alone miss "
        "differences in spread": _mean_term,
        "the cross term is 2 Tr((S1 S2)^(1/2)): the 2 is missing":
            lambda m1, s1, m2, s2: _mean_term(m1, s1, m2, s2) + float(torch.trace(s1 + s2 - _sqrtm(_sqrtm(s1) @ s2 @ _sqrtm(s1)))),
        "(S1 S2)^(1/2) is a matrix square root (scipy.linalg.sqrtm, or eigenvalues), not the square root of each entry":
            lambda m1, s1, m2, s2: _mean_term(m1, s1, m2, s2) + float(torch.trace(s1 + s2) - 2 * (s1 @ s2).diagonal().sqrt().sum()),
        "|mu1 - mu2|^2 is the squared distance between the means: square the norm":
            lambda m1, s1, m2, s2: metrics.frechet_distance(m1, s1, m2, s2) - _mean_term(m1, s1, m2, s2) + float((m1 - m2).norm()),
    },
    rtol=1e-6, atol=1e-8,
    verifies="the Frechet distance of two Gaussians: diffedu's value on random covariances, 0 for identical ones, and "
             "|mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2 for diagonal ones")


def _ref_mmd2_unbiased(x, y) -> float:
    return metrics.mmd2_unbiased(x, y)


def _mmd_cases() -> list[tuple]:
    return [(_randn(20, 16, seed=110), _randn(30, 16, seed=111) + 0.3), (_randn(25, 16, seed=112), _randn(25, 16, seed=113))]


def _kernel(a, b, scale=True, degree=3, plus=1.0) -> torch.Tensor:
    return (a @ b.T / (a.shape[1] if scale else 1) + plus) ** degree


def _mmd(x, y, unbiased=True, cross=2.0, **kernel) -> float:
    """MMD^2, right or with one of the mistakes the check names."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _kernel(x, x, **kernel), _kernel(y, y, **kernel), _kernel(x, y, **kernel)
    if unbiased:
        within = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    else:
        within = kxx.mean() + kyy.mean()
    return float(within - cross * kxy.mean())


mmd2_unbiased = compared(
    "mmd2_unbiased", "06_comparison", _ref_mmd2_unbiased,
    cases=_mmd_cases,
    expected=lambda: [metrics.mmd2_unbiased(*case) for case in _mmd_cases()],
    answer=float,
    mistakes={
        "unbiased: leave k(x_i, x_i) out of the within-set means (sum over i != j, divided by m (m - 1))":
            lambda x, y: _mmd(x, y, unbiased=False),
        "the kernel is (x . y / d + 1)^3: divide the dot product by the feature dimension d": lambda x, y: _mmd(x, y, scale=False),
        "the kernel is cubic, (x . y / d + 1)^3": lambda x, y: _mmd(x, y, degree=2),
        "the kernel adds 1 before cubing: (x . y / d + 1)^3": lambda x, y: _mmd(x, y, plus=0.0),
        "the cross term counts twice: MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y)": lambda x, y: _mmd(x, y, cross=1.0),
    },
    rtol=1e-6, atol=1e-8,
    verifies="the unbiased MMD^2 with KID's cubic kernel, equal to diffedu's on sets of equal and unequal sizes")


# ---- lesson 07 --------------------------------------------------------------------------

@exercise(_drop_labels, "07_guidance")
def drop_labels(fn) -> str:
    labels = torch.randint(0, 10, (100_000,), generator=torch.Generator().manual_seed(140))
    p, n = 0.1, len(labels)

    def run(p: float = p, labels: torch.Tensor = labels, seed: int = 141) -> torch.Tensor:
        return torch.as_tensor(fn(labels.clone(), 10, p, torch.Generator().manual_seed(seed)))

    global_state = torch.get_rng_state()
    got = run()
    if got.shape != labels.shape or got.is_floating_point():
        raise Mistake(f"it should return the {n} labels as integers, shape ({n},); it returned {got.dtype} of shape {tuple(got.shape)}")
    if not torch.equal(got, run()):
        raise Mistake("the same seed gave different labels: draw with the generator, torch.rand(n, generator=generator)")
    if not torch.equal(global_state, torch.get_rng_state()):
        raise Mistake("it changed torch's global random state (torch.manual_seed, or a draw without the generator): "
                      "leave it alone, and draw only from the generator it is given")
    changed = got != labels
    if (got[changed] != 10).any():
        new = got[changed][got[changed] != 10].min().item()
        raise Mistake(f"a dropped label becomes {new}: 'no label' is the index no_label (here 10, the embedding after "
                      f"the 10 classes){'; 0 is the first class, airplane' if new == 0 else ''}")
    small = torch.stack([run(0.5, labels[i * 8:(i + 1) * 8]) for i in range(200)]) == 10  # 200 batches of 8
    if ((small.all(1)) | (~small.any(1))).all():
        raise Mistake("each label is dropped on its own, with its own draw: not the whole batch at once")
    rate = (got == 10).double().mean().item()
    tolerance = 5 * (p * (1 - p) / n) ** 0.5  # five binomial standard deviations
    if abs(rate - (1 - p)) < tolerance:
        raise Mistake(f"it drops {rate:.0%} of the labels, 1 - p: drop a label when its draw is below p, torch.rand(n) < p")
    if abs(rate - p) > tolerance:
        raise Mistake(f"it dropped {rate:.2%} of {n:,} labels at p = {p}: expected {p:.0%} ± {tolerance:.2%}")
    if torch.equal(got, run(seed=142)):
        raise Mistake("two different seeds gave the same labels: draw from the generator it is given, not from one of "
                      "its own")
    # Each label on its own draw: the count dropped from a batch varies as a binomial's, n p (1 - p). Over 400 seeds
    # the sample variance lands within 0.5-1.6x of it by a wide margin (its relative error is about 7%).
    batch, q = 50, 0.2
    counts = torch.tensor([(run(q, labels[:batch], seed=1000 + k) == 10).sum().item() for k in range(400)], dtype=F64)
    spread = counts.var().item() / (batch * q * (1 - q))
    if not 0.5 < spread < 1.6:
        raise Mistake(f"the number dropped from a batch should vary as a binomial's does, each label on its own draw: "
                      f"its variance over 400 seeds is {spread:.2f}x the binomial's (dropping exactly p n labels, or "
                      f"labels drawn together, is not label dropout)")
    if not (torch.equal(run(0.0), labels) and (run(1.0) == 10).all()):
        raise Mistake("p = 0 must keep every label and p = 1 drop every one")
    on_device = labels[:8].to("meta")  # PyTorch's 'meta' device stands in for a GPU: nothing is computed there
    try:
        moved = fn(on_device, 10, p, torch.Generator().manual_seed(141))
    except RuntimeError as error:
        raise Mistake(f"with labels on a GPU it fails ({error}): the generator draws on the CPU, so move the mask to "
                      f"the labels' device, torch.rand(n, generator=generator).to(labels.device)") from None
    if torch.as_tensor(moved).device != on_device.device:
        raise Mistake("with labels on a GPU it returns them on the CPU: keep them on labels.device")
    return (f"each label on its own replaced by 'no label' (index 10): {rate:.2%} of {n:,} at p = 0.1 (expected 10% ± "
            f"{tolerance:.2%}), the count varying as a binomial's from seed to seed, the others unchanged, none at "
            f"p = 0, all at p = 1; the same seed the same labels, another seed others, the global random state "
            f"untouched, and labels on another device kept there")


def _ref_guided_eps(eps_uncond, eps_cond, w) -> torch.Tensor:
    return eps_uncond + w * (eps_cond - eps_uncond)


def _guidance_cases() -> list[tuple]:
    return [(_randn(4, 4, 8, 8, seed=120), _randn(4, 4, 8, 8, seed=121), w) for w in (0.0, 1.0, 3.0, 7.5)]


guided_eps = compared(
    "guided_eps", "07_guidance", _ref_guided_eps,
    cases=_guidance_cases,
    expected=lambda: [_ref_guided_eps(*case) for case in _guidance_cases()],
    mistakes={
        "the roles are swapped: start from the unconditional prediction and move towards the conditional one":
            lambda u, c, w: c + w * (u - c),
        "here w = 1 is the plain conditional model: eps_uncond + w (eps_cond - eps_uncond); (1 + w) eps_cond - w "
        "eps_uncond is the other convention, where w = 0 is conditional": lambda u, c, w: (1 + w) * c - w * u,
        "the difference is added to the unconditional prediction, not used alone": lambda u, c, w: w * (c - u),
        "w scales the difference between the two predictions, not the conditional one alone": lambda u, c, w: u + w * c,
    },
    verifies="eps_uncond + w (eps_cond - eps_uncond): w = 0 the unconditional prediction, w = 1 the conditional one, more beyond it")


# ---- lesson 08 --------------------------------------------------------------------------

_ODE_DATA = (0.2, 0.3)  # the ODE checks' data: N(0.2, 0.3^2), whose exact denoiser and velocity are known
_ODE_STEPS = make_scheduler("ddim", LINEAR, 12).timesteps  # the 12 timesteps the ODE checks visit, then the clean image


def _sigma_of(t: int) -> torch.Tensor:
    """The ODE's time at timestep t: sqrt((1 - alpha_bar_t) / alpha_bar_t), 0 for the clean image (t = -1)."""
    return ((1 - LINEAR.alpha_bar[t]) / LINEAR.alpha_bar[t]).sqrt() if t >= 0 else torch.zeros((), dtype=F64)


class _Slope:
    """The exact slope dx~/dsigma = E[eps | x_t] of N(0.2, 0.3^2) data, asked at the sigmas of the check's
    timesteps (a discrete-time model knows no others), recording each call."""

    def __init__(self) -> None:
        self.exact, self.calls = GaussianDenoiser(LINEAR, *_ODE_DATA), []
        self.t_of = {round(float(_sigma_of(t)), 9): t for t in _ODE_STEPS}

    def __call__(self, x_tilde: torch.Tensor, sigma) -> torch.Tensor:
        sigma = float(sigma)
        self.calls.append(sigma)
        if sigma == 0:
            raise Mistake("it asked the model at sigma = 0, the clean image, where it was never trained (and the ODE's "
                          "slope is 0/0): the step into sigma_prev = 0 is Euler's alone")
        t = self.t_of.get(round(sigma, 9))
        if t is None:
            raise Mistake(f"it asked the model at sigma = {sigma:.4g}, which is neither sigma nor sigma_prev: the second "
                          "slope is taken where the Euler step lands, at sigma_prev")
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
    expected = sample(GaussianDenoiser(LINEAR, *_ODE_DATA), make_scheduler("heun", LINEAR, 12, clip_x0=False), x_T.clone(),
                      progress=False)  # x at the clean image is x~ there
    if len(calls) != 2 * len(_ODE_STEPS) - 1:
        raise Mistake(f"it asked the model {len(calls)} times over {len(_ODE_STEPS)} steps: Heun asks twice a step (at sigma, "
                      f"then at sigma_prev where the Euler step lands), and once on the last, Euler's: {2 * len(_ODE_STEPS) - 1}")
    if _close(got, expected, rtol=1e-9, atol=1e-12):
        model = GaussianDenoiser(LINEAR, *_ODE_DATA)
        exact = model.flow(x_T, _ODE_STEPS[0], -1)
        euler = sample(model, make_scheduler("ddim", LINEAR, 12, clip_x0=False), x_T.clone(), progress=False)
        return ("Heun's step (EDM's Algorithm 1), Euler's into the clean image, over 12 steps: equal to diffedu's HeunScheduler "
                f"{_against_diffusers('HeunDiscreteScheduler', x_T, got)}; it lands {(got - exact).abs().max():.1e} from the "
                f"ODE's exact solution, DDIM's Euler steps {(euler - exact).abs().max():.1e}")
    for message, wrong in {
        "the second slope is asked where the Euler step lands, x' = x + (sigma_prev - sigma) d, not at x": _heun_with(second_at_x=True),
        "the step takes the mean of the two slopes, (d + d') / 2, not the second one alone": _heun_with(second_only=True),
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
    theirs = cls(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, **extra)  # DDPM's betas
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
        x = step(x, x0, None if last is None else last[0], ab[t], ab[t_prev] if t_prev >= 0 else ab.new_tensor(1.0),
                 None if last is None else ab[last[1]])
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
    "r = (lambda_t - lambda_last) / h: the last step's length over this one's, not its inverse": _dpm_with(r_inverted=True),
    "D = (1 + 1/(2r)) x0 - 1/(2r) x0_last: the 1/2 is missing": _dpm_with(half=False),
    "lambda = log(sqrt(alpha_bar) / sqrt(1 - alpha_bar)), half the log of the signal-to-noise ratio": _dpm_with(log_snr=True),
    "the factor is exp(-h) - 1 (torch.expm1(-h)), negative: x0's weight grows as the noise falls": _dpm_with(growth=True),
    "x is scaled by sqrt(1 - alpha_bar_prev) / sqrt(1 - alpha_bar_t), the ratio of the noise levels, which falls":
        _dpm_with(ratio_inverted=True),
}


@exercise(_ref_dpm_solver_step, "08_ode_view")
def dpm_solver_step(fn: Callable) -> str:
    a, a_prev = LINEAR.alpha_bar[600], LINEAR.alpha_bar[400]
    x, x0 = _randn(4, 1, 2, 2, seed=152), _randn(4, 1, 2, 2, seed=153) * 0.3
    first = fn(x.clone(), x0.clone(), None, a, a_prev, None)
    ddim = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * (x - a.sqrt() * x0) / (1 - a).sqrt()
    x_T = _randn(64, 1, 2, 2, seed=151)
    got = _dpm_run(fn, x_T.clone()) if _close(first, ddim) else None
    expected = sample(GaussianDenoiser(LINEAR, *_ODE_DATA), make_scheduler("dpmpp2m", LINEAR, 12, clip_x0=False), x_T.clone(),
                      progress=False)
    if got is not None and _close(got, expected, rtol=1e-9, atol=1e-12):
        return ("DDIM's step when there is no last call, then the second-order multistep update of Lu et al. 2022 over 12 "
                f"steps, x0 itself into the clean image: equal to diffedu's DPMSolverScheduler "
                f"{_against_diffusers('DPMSolverMultistepScheduler', x_T, got)}")
    for message, wrong in _DPM_MISTAKES.items():
        same = (_close(first, wrong(x.clone(), x0.clone(), None, a, a_prev, None)) if got is None
                else _close(got, _dpm_run(wrong, x_T.clone()), rtol=1e-9, atol=1e-12))
        if same:
            raise Mistake(message)
    if got is None:
        raise Mistake(f"without a last call (the first step) it is DDIM's step, sqrt(alpha_bar_prev) x0 + sqrt(1 - "
                      f"alpha_bar_prev) eps: {_describe(first, ddim)}")
    raise Mistake(f"after 12 steps it lands elsewhere than diffedu's DPMSolverScheduler: {_describe(got, expected)}")


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
        raise Mistake(f"t is a time in [0, 1], one float per image, shape ({n},); it was {t.dtype} of shape {tuple(t.shape)}")
    if len(t.unique()) == 1 or t.min() < 0 or t.max() > 1:
        raise Mistake("draw one t per image, uniform in [0, 1]: torch.rand(len(x0))")
    # Uniform as a distribution, not only in its mean: the largest gap between t's empirical CDF and the uniform's
    # (Kolmogorov-Smirnov) is below 1.95 / sqrt(n) for a uniform t but in one run in a thousand.
    ranks, sorted_t = torch.arange(n + 1, dtype=F64) / n, t.double().sort().values
    gap = torch.maximum(ranks[1:] - sorted_t, sorted_t - ranks[:-1]).max().item()
    if gap > 1.95 / n**0.5:
        raise Mistake(f"t must be uniform on [0, 1], each time as likely as any other (torch.rand): its distribution is "
                      f"not (its CDF is {gap:.3f} from the uniform's at worst)")
    tt = t.view(-1, 1, 1, 1).to(x0.dtype)
    noise = (x_t - (1 - tt) * x0) / tt  # the noise that made x_t, if x_t was made right
    if not _gaussian(noise):
        if _gaussian((x_t - tt * x0) / (1 - tt)):
            raise Mistake("x_t = (1 - t) x_0 + t eps: at t = 0 the data, at t = 1 pure noise (the weights are swapped)")
        raise Mistake("x_t is not (1 - t) x_0 + t eps with Gaussian eps (torch.randn_like)")
    answer = spy.answer
    if not _close(loss, ((answer - (noise - x0)) ** 2).mean()):
        for message, wrong in {
            "the target is the velocity v = eps - x_0, the direction from data to noise, not x_0 - eps": ((answer - (x0 - noise)) ** 2).mean(),
            "the target is the velocity v = eps - x_0, not the noise alone": ((answer - noise) ** 2).mean(),
            "summed: take the mean, so the loss does not grow with the batch": ((answer - (noise - x0)) ** 2).sum(),
        }.items():
            if _close(loss, wrong):
                raise Mistake(message)
        raise Mistake(f"the loss should be mean((model(x_t, t) - (eps - x_0))^2) = "
                      f"{((answer - (noise - x0)) ** 2).mean().item():.6g}; it returned {float(loss):.6g}")
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
        x, ts = x1, {"right": torch.linspace(1, 0, steps + 1, dtype=x1.dtype),
                     "short": torch.arange(1, 0, -1 / steps, dtype=x1.dtype),  # 1, ..., 1/steps: never reaches 0
                     "one fewer": torch.linspace(1, 0, max(steps, 2), dtype=x1.dtype)}[grid]
        for t, t_next in zip(ts[:-1], ts[1:]):
            x = x + sign * (t_next - t) * velocity(x, t_next if at_next else t)
        return x
    return run


fm_sample = compared(
    "fm_sample", "09_flow_matching", _ref_fm_sample,
    cases=_fm_cases,
    expected=lambda: [_ref_fm_sample(*case) for case in _fm_cases()],
    mistakes={
        "time runs from 1 (noise) down to 0 (data), so each step is x + (t_next - t) v with t_next < t: the sign is flipped":
            _fm_with(sign=-1.0),
        "Euler asks the velocity where the step starts, v(x, t), not where it ends": _fm_with(at_next=True),
        "the last step must reach t = 0, the data: `steps` steps need steps + 1 times, torch.linspace(1, 0, steps + 1)":
            _fm_with(grid="short"),
        "that takes steps - 1 steps: `steps` steps need steps + 1 times, torch.linspace(1, 0, steps + 1)":
            _fm_with(grid="one fewer"),
    },
    verifies="Euler's steps on dx/dt = v(x, t) from t = 1 to 0 in 1, 4 and 10 uniform steps, on the exact velocity of "
             "N(0.2, 0.3^2) data")


# ---- lesson 10 --------------------------------------------------------------------------

def _per_image(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *[1] * (x.dim() - 1)).to(x.dtype)


def _ref_consistency_fn(model, x_t, t) -> torch.Tensor:
    return x_t - _per_image(t, x_t) * model(x_t, t)


def _consistency_fn_cases() -> list[tuple]:
    t = torch.cat([torch.zeros(4, dtype=F64), torch.rand(56, generator=torch.Generator().manual_seed(160), dtype=F64),
                   torch.ones(4, dtype=F64)])  # the boundary t = 0, times between, and pure noise
    return [(GaussianConsistency(*_ODE_DATA), _randn(64, 1, 2, 2, seed=161), t),
            (GaussianVelocity(*_ODE_DATA), _randn(64, 1, 2, 2, seed=162), t)]


consistency_fn = compared(
    "consistency_fn", "10_consistency", _ref_consistency_fn,
    cases=_consistency_fn_cases,
    expected=lambda: [_ref_consistency_fn(*case) for case in _consistency_fn_cases()],
    mistakes={
        "f = x_t - t v: the velocity v = eps - x_0 points from the data to the noise, so going back to the data "
        "subtracts it (the sign is flipped)": lambda model, x, t: x + _per_image(t, x) * model(x, t),
        "f = x_t - t v, with t, not 1 - t: at t = 0 (the data end) f must be x_t itself, whatever the network says":
            lambda model, x, t: x - (1 - _per_image(t, x)) * model(x, t),
        "f is x_t minus t times the network's answer, not the answer itself (c_skip = 1, c_out = -t)":
            lambda model, x, t: model(x, t),
    },
    verifies="f(x_t, t) = x_t - t v(x_t, t) at t = 0, between and at 1, on two networks: at t = 0 it is x_t whatever "
             "the network says, and on the exact consistency model of N(0.2, 0.3^2) data it is the flow's solution map")


class _Recorder(nn.Module):
    """A consistency function with one weight, a: f(x, t) = a (x - t (x - 0.3)). It records each call's x and t;
    the gradient of a loss through `a` tells its target and its stop-gradient apart."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.calls = nn.Parameter(torch.tensor(0.8, dtype=F64)), []

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
    at = {which: [x for x, when in f.calls if when.shape == (n,) and torch.equal(when, time)] for which, time in
          (("t", t), ("r", r))}
    if len(f.calls) != 2 or len(at["t"]) != 1 or len(at["r"]) != 1:
        raise Mistake(f"it called f {len(f.calls)} times: call it twice, once at (x_t, t) and once at (x_r, r), each with "
                      "the whole batch and its own time per image")
    (x_t,), (x_r,) = at["t"], at["r"]
    noise_t = (x_t - (1 - _per_image(t, x0)) * x0) / _per_image(t, x0)
    noise_r = (x_r - (1 - _per_image(r, x0)) * x0) / _per_image(r, x0).clamp_min(1e-12)
    if not _gaussian(noise_t) or not _gaussian(noise_r):
        raise Mistake("x_t = (1 - t) x_0 + t eps and x_r = (1 - r) x_0 + r eps, with Gaussian eps (torch.randn_like)")
    if not torch.allclose(noise_t, noise_r):
        raise Mistake("the two points must lie on one line: draw one noise eps and use it for both x_t and x_r. With "
                      "two noises the target belongs to another image's path")
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
    frozen = lambda call: (lambda g: call(g).detach())  # noqa: E731
    weight = 1 / (t / (1 - t) - r / (1 - r))  # 1 / (sigma_t - sigma_r)
    right = loss_of(on_t, frozen(on_r), weight)
    if _close(loss.detach(), right[0]) and _close(grad, right[1]):
        return ("one noise for both points, the target f(x_r, r) under stop-gradient, and the gap weighted by "
                "1 / (sigma_t - sigma_r): the loss's value and its gradient")
    for message, (value, gradient) in {
        "the target f(x_r, r) must be under stop-gradient (torch.no_grad() or .detach()): else the model also learns to "
        "move its easier answer towards its harder one": loss_of(on_t, on_r, weight),
        "the stop-gradient is on the wrong side: the target is the answer nearer the data, f(x_r, r) with r < t; "
        "the online answer f(x_t, t) is the one that learns": loss_of(frozen(on_t), on_r, weight),
        "the weight is 1 / (sigma_t - sigma_r), which grows as the two points come closer, not sigma_t - sigma_r":
            loss_of(on_t, frozen(on_r), 1 / weight),
        "the weight is in EDM's noise level, 1 / (sigma_t - sigma_r) with sigma = t / (1 - t), not 1 / (t - r)":
            loss_of(on_t, frozen(on_r), 1 / (t - r)),
        "weight each image's gap by 1 / (sigma_t - sigma_r): without it the loss shrinks as the curriculum brings r "
        "nearer t": loss_of(on_t, frozen(on_r), torch.ones_like(t)),
    }.items():
        if _close(loss.detach(), value) and _close(grad, gradient):
            raise Mistake(message)
    if _close(loss.detach(), right[0]):
        raise Mistake("the value is right but its gradient is not: put only the target under stop-gradient")
    raise Mistake(f"the loss should be mean(||f(x_t, t) - stopgrad f(x_r, r)||^2 / (sigma_t - sigma_r)), each image's squared gap "
                  f"averaged over its pixels: {right[0].item():.6g}; it returned {loss.item():.6g}")


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
    _same_run(fn, run, expected, {
        "re-noise with fresh noise at each step (torch.randn with the generator): the first noise x1 is already spent "
        "on the first jump": _consistency_with(noise="first"),
        "each step puts the image back on a line at t, x_t = (1 - t) x_0 + t z, before asking f again":
            _consistency_with(renoise=False),
        "x_t = (1 - t) x_0 + t z: at t near 1 mostly noise (the weights are swapped)": _consistency_with(swap=True),
    }, "diffedu's multistep consistency sampler")
    return ("one jump from the noise, then re-noise to each smaller t with fresh noise and jump again: the same images "
            "as diffedu's sampler at 1, 2 and 4 calls, and on the exact consistency model of N(0.2, 0.3^2) data "
            "samples of exactly that distribution")
