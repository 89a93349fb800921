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

The machinery is in `core` (the registry, `exercise`, `_guard`, nbgrader's mode, shared inputs) and `compare`
(comparing answers, `compared`, diffusers); each lesson's checks are in its own module, `lesson01` ... `lesson11`.
"""

from .compare import compared
from .core import EXERCISES, GRADING_ENV, LINEAR, Exercise, ExerciseError, Mistake, exercise

# Imported in the lessons' order, which is the registry's: each module registers its lesson's exercises.
from .lesson01 import alpha_bar, next_noise_variance, q_sample
from .lesson02 import ddpm_step, eps_loss, posterior, sample_ddpm
from .lesson03 import ddim_invert_step, ddim_sigma, ddim_step, ddim_timesteps, sample_ddim
from .lesson04 import hinge_d_loss, kl_divergence, reparameterize, scale_factor
from .lesson05 import sample_latents
from .lesson06 import frechet_distance, mmd2_unbiased
from .lesson07 import drop_labels, guided_eps
from .lesson08 import dpm_solver_step, heun_step
from .lesson09 import _ref_fm_sample, fm_loss, fm_sample  # _ref_fm_sample: the flow's Euler sampler, for tests
from .lesson10 import consistency_fn, consistency_sample, ct_loss
from .lesson11 import contrastive_loss, cross_attention

__all__ = [  # the registry and its tools, then what each lesson calls, check.<name>(fn)
    "EXERCISES",
    "GRADING_ENV",
    "LINEAR",
    "Exercise",
    "ExerciseError",
    "Mistake",
    "compared",
    "exercise",
    "alpha_bar",
    "next_noise_variance",
    "q_sample",
    "eps_loss",
    "posterior",
    "ddpm_step",
    "sample_ddpm",
    "ddim_sigma",
    "ddim_step",
    "ddim_timesteps",
    "sample_ddim",
    "ddim_invert_step",
    "reparameterize",
    "kl_divergence",
    "scale_factor",
    "hinge_d_loss",
    "sample_latents",
    "frechet_distance",
    "mmd2_unbiased",
    "drop_labels",
    "guided_eps",
    "heun_step",
    "dpm_solver_step",
    "fm_loss",
    "fm_sample",
    "_ref_fm_sample",
    "consistency_fn",
    "ct_loss",
    "consistency_sample",
    "contrastive_loss",
    "cross_attention",
]
