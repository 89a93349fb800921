"""Comparing a learner's answers with the right ones: `compared` declares an exercise checked by comparison alone;
a wrong answer is explained by the known mistake that gives it, or located. And diffusers' schedulers, which the
sampler-step checks compare with too."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable

import numpy as np
import torch

from .core import F64, Mistake, exercise


def compared(
    name: str,
    lesson: str,
    reference: Callable,
    *,
    cases: Callable[[], list[tuple]],
    expected: Callable[[], list],
    mistakes: dict[str, Callable],
    verifies: str,
    answer: Callable | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    points: int = 1,
) -> Callable[[Callable], None]:
    """An exercise checked by comparison alone: fn(*case) must equal `expected()` on every one of `cases()` (fresh
    inputs each time); else the known mistake that explains its answers is named (`mistakes`: message -> the
    wrong function), else the first wrong case is located. `answer`: what to make of fn's result before comparing
    (e.g. float). `verifies`: what passing shows, in words."""
    names = list(inspect.signature(reference).parameters)

    def check(fn: Callable) -> str:
        _compare(
            fn if answer is None else lambda *case: answer(fn(*case)),
            cases,
            expected(),
            mistakes,
            rtol,
            atol,
            names=names,
        )
        return verifies

    check.__name__ = check.__qualname__ = name
    return exercise(reference, lesson, points)(check)


def _close(got, want, rtol: float = 1e-5, atol: float = 1e-7) -> bool:
    """Equal within the tolerances, NaN where NaN is. A NaN proves nothing by itself: an answer that is NaN all
    through is like no known mistake (_like), however NaN that mistake's answer is too."""
    if isinstance(want, (tuple, list)):
        return (
            isinstance(got, (tuple, list))
            and len(got) == len(want)
            and all(_close(g, w, rtol, atol) for g, w in zip(got, want))
        )
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
    return (
        f"it is off by up to {error.max().item():.3g} (at index {tuple(int(i) for i in worst)}: got "
        f"{got[worst].item():.6g}, expected {want[worst].item():.6g})"
    )


def _compare(
    fn: Callable,
    cases: Callable[[], list[tuple]],
    expected: list,
    mistakes: dict[str, Callable] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    names: list[str] | None = None,
) -> None:
    """fn(*case) must equal the expected answer for every case; else name the known mistake it makes,
    or say where it is wrong, and on which inputs (`names`: the function's parameters). `cases()` gives fresh
    inputs each time, so that in-place changes cannot leak."""
    got = [fn(*case) for case in cases()]
    right = [_close(g, w, rtol, atol) for g, w in zip(got, expected)]
    if all(right):
        return
    if not all(_close(g, again, rtol, atol) for g, again in zip(got, [fn(*case) for case in cases()])):
        raise Mistake(
            "the same inputs gave two different answers: it draws random numbers of its own; "
            "use the noise it is given (its `noise` argument), so that the step is the one asked for"
        )
    answers = {
        message: [_like(g, wrong(*case), rtol, atol) for g, case in zip(got, cases())]
        for message, wrong in (mistakes or {}).items()
    }
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
    raise Mistake(
        f"wrong on test case {i + 1} of {len(expected)}, {_call(names, cases()[i])}: {_describe(got[i], expected[i])}"
    )


def _same_run(
    fn: Callable, run: Callable, expected, mistakes: dict[str, Callable], unlike: str, not_finite: str = ""
) -> None:
    """For a sampling loop: run(f) calls f on fixed inputs with a freshly seeded generator. fn's result must
    equal `expected`; else the same seed must give the same result (fn draws its noise from the generator),
    else a known mistake (run(wrong) equals fn's, with numbers to show it) is named, else a NaN is told so (with
    `not_finite`, where a loop usually gets one), else the difference is located."""
    got = run(fn)
    odd = [
        r for r in (got if isinstance(got, list) else [got]) if not isinstance(r, torch.Tensor)
    ]  # run's calls' results
    if odd:  # else a list or a number would read as "different results for the same seed"
        raise Mistake(f"it returned a {type(odd[0]).__name__} where a tensor was expected (as from {unlike})")
    if _close(got, expected):
        return
    if not _close(got, run(fn)):
        raise Mistake(
            "the same seed gave different results: draw every random number from the generator it is "
            "given, e.g. torch.randn(x.shape, generator=generator, dtype=x.dtype)"
        )
    for message, wrong in mistakes.items():
        if _like(got, run(wrong)):
            raise Mistake(message)
    if _not_finite(got, expected):
        raise Mistake(NOT_FINITE.format(where="") + not_finite)
    raise Mistake(f"the result differs from {unlike} with the same seed: {_describe(got, expected)}")


# ---- diffusers' schedulers, for the checks that compare with them too ------------------

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


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
