"""The exercises' registry and how every check calls a learner's function: `exercise` registers a check and
prints what it found, `_guard` gives the function its own copies of its inputs and names the slips any exercise
can have; nbgrader's mode; and the inputs and instruments the lessons' checks share."""

from __future__ import annotations

import copy
import functools
import inspect
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..schedules import Schedule

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
            message = (
                f"✗ {name}: {problem}\n(Until it passes, the rest of this lesson uses diffedu's reference {name}.)"
            )
            if os.environ.get(GRADING_ENV):
                raise ExerciseError(message) from None
            print(message, file=sys.stderr)  # not an exception: Run All goes on to the end of the lesson

        run.reference = reference  # type: ignore[attr-defined]  # check.<name>.reference: a function's attribute
        return run

    return wrap


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
        if isinstance(result, (str, bytes, dict, set)):  # no answer of any exercise: say so, not what it leads to
            raise Mistake(f"it returned a {type(result).__name__} ({result!r:.40}) where {kind} was expected")
        given = [*zip(names, args, my_args), *((key, kwargs[key], my_kwargs[key]) for key in kwargs)]
        changed = next((name for name, value, mine in given if _changed(value, mine)), None)
        if changed is not None:  # a caller that uses its tensor afterwards (a batch, a schedule) would find it altered
            raise Mistake(
                f"it changed its argument {changed} in place (x += ..., x[...] = ... and the methods ending "
                "in _, such as .mul_(), write into the caller's tensor): compute a new one, x = x + ..."
            )
        if _complex(result):
            dtype = f" ({result.dtype})" if isinstance(result, torch.Tensor) else ""
            raise Mistake(
                f"it returned complex numbers{dtype} where real ones are expected: the square root of a "
                "negative number? If the imaginary parts are only rounding (torch.linalg.eigvals, "
                "scipy.linalg.sqrtm), take .real"
            )
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
        if "dimension 3" in str(error) or "dimension 1" in str(error):  # a (B,) value against (B, C, H, W) images
            return " (a table value per image has shape (B,): reshape it to (B, 1, 1, 1) to scale whole images)"
        return " (two tensors whose shapes do not fit: print the shapes of what you combine)"
    return ""


# ---- what the lessons' checks share ----------------------------------------------------


def _randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


LINEAR = Schedule.linear()


class Spy(nn.Module):
    """A stand-in for the UNet: it records what it is given and answers with fixed numbers."""

    def __init__(self, answer: torch.Tensor) -> None:
        super().__init__()
        self.answer = answer
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []  # each call's (x, t)

    def forward(self, x, t) -> torch.Tensor:
        self.calls.append((x.detach().clone(), torch.as_tensor(t).detach().clone()))
        return self.answer


def _gaussian(x: torch.Tensor) -> bool:
    return abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
