# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · The ODE view: the score and second-order samplers
#
# **What you will do here**
#
# - See that a noise predictor is a score estimator, on data whose score is known.
# - Meet the ODE that every deterministic sampler solves, and check that DDIM is its Euler step.
# - Write two samplers of second order: Heun's method and DPM-Solver++(2M).
# - Measure their order against the exact solution, then their quality on the shipped model.
#
# **Time:** about 1 minute of computing in the `cpu` profile.
#
# Lesson 03 called deterministic DDIM "like solving an ODE". This lesson says which ODE, and what follows. Every
# deterministic sampler is a numerical method for one differential equation, so the numerical analyst's tools
# apply. A method of higher **order** reaches the same accuracy in fewer model calls.
#
# The cost of a sampler is its number of model calls, the **NFE** (number of function evaluations), not its
# steps: Heun's method calls the model twice a step.

# %%
# Set-up: on Colab, install the course (once per session); anywhere else this does nothing.
import importlib.util
import os
import subprocess
import sys

if "google.colab" in sys.modules and importlib.util.find_spec("diffedu") is None:
    course = os.environ.get("DIFFEDU_INSTALL", "diffedu @ git+https://github.com/diffedu/diffedu")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", course], check=True)  # keeps Colab's PyTorch
    importlib.invalidate_caches()  # so that `import diffedu` finds what was just installed

# %%

import time

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

from diffedu import check, pretrained, report
from diffedu.data import load_cifar10, to_float
from diffedu.env import get_device
from diffedu.metrics import fine_detail
from diffedu.oracles import GaussianDenoiser
from diffedu.pipelines import load_pipeline
from diffedu.profiles import get_profile
from diffedu.samplers import SAMPLERS, make_scheduler, sample, sample_trajectory
from diffedu.schedules import Schedule
from diffedu.viz import quality_plot
from diffedu.widgets import sampler_widget

profile, device = get_profile(), get_device()
print(profile.note, f"Device: {device}.")

# %% [markdown]
# ## The score
#
# The **score** of a distribution is the gradient of its log-density, $\nabla_x \log p(x)$: the direction in
# which the data gets more likely. For the noised data of lesson 01,
# $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$, **Tweedie's formula** says that the score is
# the best guess of the noise, scaled:
#
# $$\nabla_x \log p_t(x) = -\frac{\mathbb E[\varepsilon \mid x_t = x]}{\sqrt{1-\bar\alpha_t}}.$$
#
# Why: $p_t$ is the data blurred by a Gaussian, and the gradient of a log-Gaussian is minus the distance to its
# mean over its variance. Averaged over the clean images that could have made $x$, that mean is
# $\sqrt{\bar\alpha_t}\,\mathbb E[x_0 \mid x_t]$. The loss of lesson 02 trains $\varepsilon_\theta$ to that conditional
# mean, so **a noise predictor is a score estimator**.
#
# On the Gaussian data of lessons 02 and 03, $\mathcal N(m, s^2)$, everything is known:
# $x_t \sim \mathcal N(\sqrt{\bar\alpha_t}\,m,\; v_t)$ with $v_t = s^2\bar\alpha_t + 1 - \bar\alpha_t$, whose score
# is $-(x - \sqrt{\bar\alpha_t}\,m)/v_t$. The exact noise predictor, through Tweedie's formula, gives exactly
# that:

# %%
linear = Schedule.linear()
exact = GaussianDenoiser(linear, mean=0.2, std=0.3)  # the exact noise predictor of N(0.2, 0.3²) data
x = torch.linspace(-3, 3, 601, dtype=torch.float64).view(-1, 1, 1, 1)
fig, ax = plt.subplots(figsize=(6.5, 3))
for t in (0, 100, 300, 999):
    ab = linear.alpha_bar[t]
    score = -exact(x, torch.tensor(t)) / (1 - ab).sqrt()  # Tweedie
    closed_form = -(x - ab.sqrt() * 0.2) / (0.3**2 * ab + 1 - ab)
    print(f"t = {t:>3}: Tweedie's score vs the closed form, largest gap {(score - closed_form).abs().max():.1e}")
    assert torch.allclose(score, closed_form, atol=1e-10)
    ax.plot(x.flatten(), score.flatten(), label=f"t = {t}")
ax.set(xlabel="x", ylabel="score", ylim=(-15, 15), title="the score of N(0.2, 0.3²) noised to step t")
ax.axhline(0, color="k", lw=0.5)
ax.legend()
plt.show()

# %% [markdown]
# The score points towards where the data is likely. Near $t = 0$ it is steep, with slope $-1/s^2$, because the
# data is narrow. At the last step it is gentle, with slope $-1$: the standard normal.
#
# ## The probability-flow ODE
#
# Song et al. (2021, "Score-based generative modeling through SDEs") showed that the noising process has a
# deterministic twin. It is an ODE whose solutions have, at every $t$, the same distribution $p_t$, driven by the
# score alone. It is simplest in two variables that undo the shrinking of the signal. The DDIM paper (section
# 4.3, eqs. 13-14) writes its sampler in them, and EDM (Karras et al. 2022) builds on them:
#
# $$\sigma = \sqrt{\frac{1-\bar\alpha}{\bar\alpha}}, \qquad \tilde x = \frac{x}{\sqrt{\bar\alpha}} = x_0 + \sigma\,\varepsilon,
# \qquad\text{and then}\qquad \frac{d\tilde x}{d\sigma} = -\sigma\,\nabla_{\tilde x}\log p(\tilde x;\sigma) = \mathbb E[\varepsilon \mid x_t].$$
#
# The second equality is Tweedie's formula again, for $\tilde x$, whose noise has standard deviation $\sigma$.
# Read it as: **as the noise level $\sigma$ falls, move $\tilde x$ against the predicted noise**, at unit speed
# per unit of $\sigma$. For the linear schedule, $\sigma$ falls from over a hundred at the first step to about
# one hundredth at the last, and to zero for the clean image.
#
# **DDIM is Euler's method for this ODE**, as its paper notes. One Euler step from $\sigma$ to $\sigma_\text{prev}$
# is $\tilde x_\text{prev} = \tilde x + (\sigma_\text{prev} - \sigma)\,\hat\varepsilon$. Multiply by
# $\sqrt{\bar\alpha_\text{prev}}$ and it is lesson 03's deterministic step,
# $\sqrt{\bar\alpha_\text{prev}}\,\hat x_0 + \sqrt{1-\bar\alpha_\text{prev}}\,\hat\varepsilon$: write
# $\tilde x = \hat x_0 + \sigma\hat\varepsilon$, and the $\sigma$ terms cancel. Numerically, with diffedu's DDIM and an
# Euler loop written here:


# %%
def sigma_of(t: int) -> torch.Tensor:
    """The ODE's time at timestep t; 0 for the clean image (t = -1)."""
    ab = linear.alpha_bar[t] if t >= 0 else torch.tensor(1.0, dtype=torch.float64)
    return ((1 - ab) / ab).sqrt()


ddim = make_scheduler("ddim", linear, 10, clip_x0=False)
x_T = torch.randn(2000, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
x_tilde = x_T / linear.alpha_bar[ddim.timesteps[0]].sqrt()
for t, t_prev in zip(ddim.timesteps, [*ddim.timesteps[1:], -1]):
    eps = exact(x_tilde * linear.alpha_bar[t].sqrt(), torch.tensor(t))  # the model sees x = sqrt(alpha_bar) x~
    x_tilde = x_tilde + (sigma_of(t_prev) - sigma_of(t)) * eps  # Euler
by_ddim = sample(exact, ddim, x_T, progress=False)
solution = exact.flow(x_T, ddim.timesteps[0], -1)  # the ODE's exact solution, known for Gaussian data
print(f"Euler by hand vs diffedu's DDIM, 10 steps: largest gap {(x_tilde - by_ddim).abs().max():.1e}")
print(
    f"both land {(by_ddim - solution).abs().mean():.3f} from the exact solution on average (std of the data: 0.3); "
    f"the samples' std is {by_ddim.std():.3f}, the exact solution's {solution.std():.3f}"
)
assert torch.allclose(x_tilde, by_ddim, atol=1e-10)

# %% [markdown]
# In a picture: five pixels' exact paths from noise to data, and DDIM's ten Euler steps from the same starts. Each
# corner of a dashed polygon is one model call; between corners DDIM follows the slope it saw at the last one.

# %%
starts = x_T[:5, 0, 0, 0]
ts = [*range(ddim.timesteps[0], -1, -5), -1]
paths = torch.stack([exact.flow(starts, ddim.timesteps[0], t) for t in ts])
x, corners = starts, [starts]
for t in ddim.timesteps:
    x = ddim.sample_step(exact, x, t).prev
    corners.append(x)
fig, ax = plt.subplots(figsize=(6.5, 3))
ax.plot(ts, paths, color="C0", lw=1)
ax.plot([*ddim.timesteps, -1], torch.stack(corners), "o--", color="C3", ms=3, lw=1)
ax.plot([], [], color="C0", label="the ODE's exact paths")
ax.plot([], [], "o--", color="C3", label="DDIM, 10 Euler steps")
ax.invert_xaxis()
ax.set(xlabel="timestep t (noise on the left)", ylabel="pixel value x_t", title="one ODE, solved exactly and by DDIM")
ax.legend()
plt.show()

# %% [markdown]
# Lesson 03's shrinking spread is Euler's error. Euler's is a first-order method, whose error falls as
# $1/\mathrm{NFE}$. A **second-order** method's error falls as $1/\mathrm{NFE}^2$, so halving it costs
# $\sqrt 2$ times the calls, not twice.
#
# ## Heun's method
#
# Heun's method is EDM's deterministic sampler (Karras et al. 2022, Algorithm 1; their Algorithm 2 adds noise, a
# stochastic sampler). It takes the Euler step as a trial, asks the model for the slope where the trial lands,
# and takes the step again with the mean of the two slopes:
#
# $$d = \hat\varepsilon(\tilde x, \sigma),\qquad \tilde x' = \tilde x + (\sigma_\text{prev}-\sigma)\,d,\qquad
# d' = \hat\varepsilon(\tilde x', \sigma_\text{prev}),\qquad \tilde x_\text{prev} = \tilde x + (\sigma_\text{prev}-\sigma)\,\frac{d + d'}{2}.$$
#
# That is two model calls a step, except the last. Into $\sigma_\text{prev} = 0$, the clean image, the model was
# never trained, and the slope is zero over zero. There Heun takes the Euler step alone.
#
# ### Exercise 8.1: Heun's step
#
# Write `heun_step(slope, x, sigma, sigma_prev)`: `x` is $\tilde x$, and `slope(x, sigma)` asks the model for
# $\hat\varepsilon$ at $(\tilde x, \sigma)$. The check runs your step through a dozen timesteps with the exact slope
# of Gaussian data. It compares the result with diffedu's `HeunScheduler` and diffusers' `HeunDiscreteScheduler`
# on the same timesteps.


# %% nbgrader={"grade": false, "grade_id": "heun_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def heun_step(slope, x: torch.Tensor, sigma: torch.Tensor, sigma_prev: torch.Tensor) -> torch.Tensor:
    """x~ at sigma -> x~ at sigma_prev: Heun's step, Euler's alone into sigma_prev = 0."""
    ### BEGIN SOLUTION
    d = slope(x, sigma)
    euler = x + (sigma_prev - sigma) * d
    if sigma_prev == 0:
        return euler
    return x + (sigma_prev - sigma) * (d + slope(euler, sigma_prev)) / 2
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_heun_step", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.heun_step(heun_step)

# %% [markdown]
# ## DPM-Solver++(2M)
#
# Heun pays for its second order with a second call. A **multistep** method gets it from the call it made on the
# previous step. DPM-Solver++ (Lu et al. 2022) also solves the ODE's linear part exactly, and approximates only
# the model's clean image $\hat x_0$. Its time is $\lambda = \log\big(\sqrt{\bar\alpha}/\sqrt{1-\bar\alpha}\big)$, half
# the log signal-to-noise ratio, so that $\sigma = e^{-\lambda}$. Write $a = \sqrt{\bar\alpha}$ and
# $s = \sqrt{1-\bar\alpha}$.
#
# **Variation of constants.** With $\hat\varepsilon = (\tilde x - \hat x_0)/\sigma$, the ODE above reads
# $d\tilde x/d\sigma = \tilde x/\sigma - \hat x_0/\sigma$. Its linear part is solved by the factor $1/\sigma$:
# $d(\tilde x/\sigma)/d\sigma = -\hat x_0/\sigma^2$, where $\tilde x/\sigma = x/s$. Change the variable to $\lambda$,
# integrate from $\lambda_t$ to $\lambda_\text{prev}$, and multiply by $s_\text{prev}$:
#
# $$x_\text{prev} = \frac{s_\text{prev}}{s_t}\,x_t + s_\text{prev}\int_{\lambda_t}^{\lambda_\text{prev}} e^{\lambda}\,\hat x_0(\lambda)\,d\lambda.$$
#
# Only the integral needs approximating. Hold $\hat x_0$ constant over the step, with $h = \lambda_\text{prev} - \lambda_t$,
# and the integral gives $x_\text{prev} = \frac{s_\text{prev}}{s_t}\,x_t - a_\text{prev}\,(e^{-h}-1)\,\hat x_0$: DDIM's
# step again.
#
# **Linear extrapolation.** Instead, let $\hat x_0$ change linearly in $\lambda$, through this step's prediction and
# the last step's, $\hat x_0^\text{last}$. Integrate, and keep the terms of second order in $h$. The step becomes
#
# $$x_\text{prev} = \frac{s_\text{prev}}{s_t}\,x_t - a_\text{prev}\,\big(e^{-h}-1\big)\,D,\qquad
# D = \Big(1+\frac{1}{2r}\Big)\hat x_0 - \frac{1}{2r}\,\hat x_0^\text{last},\qquad r = \frac{\lambda_t - \lambda_\text{last}}{h}.$$
#
# On the first step, which has no last call, $D = \hat x_0$. On the last step, into the clean image, $\lambda$ is
# infinite, so $r = 0$ and $D$ is undefined. That step is first-order, and with $e^{-h} = 0$ it is $\hat x_0$
# itself. In diffusers, `final_sigmas_type="zero"` is this last step (always first-order); `lower_order_final`
# is another setting, which makes the last step first-order wherever it lands, when there are fewer than 15.
#
# ### Exercise 8.2: the DPM-Solver++(2M) step
#
# Write `dpm_solver_step(x, x0, x0_last, alpha_bar_t, alpha_bar_prev, alpha_bar_last)`. `x0` is this step's
# prediction of the clean image; `x0_last` and `alpha_bar_last` are the last step's, both None on the first
# step. `alpha_bar_prev` is one on the last step. The check runs your step through a dozen timesteps against
# diffedu's `DPMSolverScheduler` and diffusers' `DPMSolverMultistepScheduler`.


# %% nbgrader={"grade": false, "grade_id": "dpm_solver_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def dpm_solver_step(
    x: torch.Tensor,
    x0: torch.Tensor,
    x0_last: torch.Tensor | None,
    alpha_bar_t: torch.Tensor,
    alpha_bar_prev: torch.Tensor,
    alpha_bar_last: torch.Tensor | None,
) -> torch.Tensor:
    """x_t -> x_{t_prev} by DPM-Solver++(2M) (Lu et al. 2022); DDIM's step when there is no last call."""
    ### BEGIN SOLUTION
    if alpha_bar_prev == 1:
        return x0

    def lam(ab):
        return 0.5 * (ab / (1 - ab)).log()

    h, data = lam(alpha_bar_prev) - lam(alpha_bar_t), x0
    if x0_last is not None:
        r = (lam(alpha_bar_t) - lam(alpha_bar_last)) / h
        data = (1 + 1 / (2 * r)) * x0 - x0_last / (2 * r)
    return ((1 - alpha_bar_prev) / (1 - alpha_bar_t)).sqrt() * x - alpha_bar_prev.sqrt() * torch.expm1(-h) * data
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_dpm_solver_step", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.dpm_solver_step(dpm_solver_step)

# %% [markdown]
# ## The order, measured
#
# On Gaussian data the ODE's exact solution is known (`GaussianDenoiser.flow`), so each sampler's error can be
# measured, not guessed. Below, diffedu's samplers, the ones your steps were checked equal to, run from the same
# noise. The error is taken at the last timestep, before the final jump to the clean image, which all three take
# as the same first-order step. On log-log axes an error of $C/\mathrm{NFE}^p$ is a line of slope $-p$.


# %%
def ode_error(sampler: str, steps: int) -> tuple[int, float]:
    """(model calls, mean error at t = 0) of a sampler's run from x_T, against the exact solution."""
    scheduler = make_scheduler(sampler, linear, steps, clip_x0=False)
    run = sample_trajectory(exact, scheduler, x_T, frames=len(scheduler.timesteps), progress=False)
    return run.model_calls, (run.x_t[-1].double() - exact.flow(x_T, linear.T - 1, 0)).abs().mean().item()


fig, ax = plt.subplots(figsize=(6.5, 3.6))
for sampler, style in (("ddim", "o-"), ("heun", "P-"), ("dpmpp2m", "v-")):
    calls, errors = zip(*(ode_error(sampler, steps) for steps in (5, 10, 25, 50, 100, 200, 400)))
    fit = torch.tensor(calls[3:], dtype=torch.float64).log(), torch.tensor(errors[3:], dtype=torch.float64).log()
    slope = -torch.linalg.lstsq(torch.stack([fit[0], torch.ones_like(fit[0])], 1), fit[1][:, None]).solution[0].item()
    ax.plot(calls, errors, style, label=f"{SAMPLERS[sampler].title}: order {slope:.2f}")
    print(
        f"{SAMPLERS[sampler].title:>17}: fitted order {slope:.2f} (from 50 steps up); error at "
        + ", ".join(f"{n} calls {e:.1e}" for n, e in zip(calls, errors))
    )
    assert abs(slope - SAMPLERS[sampler].order) < 0.2
ax.set(
    xscale="log",
    yscale="log",
    xlabel="model calls (NFE)",
    ylabel="mean error at t = 0",
    title="each sampler against the ODE's exact solution, N(0.2, 0.3²) data",
)
ax.legend()
plt.show()

# %% [markdown]
# With small steps the slopes are the orders: one for DDIM, two for Heun and DPM-Solver++(2M). With few steps the
# picture is less tidy, and worth reading. With the linear schedule's timesteps spaced evenly in $t$, the steps
# are very uneven in $\lambda$: the last one spans much of its range. DPM-Solver++'s extrapolation misjudges
# there, and at a few dozen steps it can land further than DDIM. An order is a promise about small steps only.
# Which sampler wins at the few steps people use is a question for the real model and a real measure.
#
# ## On the shipped model
#
# The shipped quality table has FID and KID of `ddpm-cifar10` with each sampler, against the model calls. One
# caveat first. On the shipped model every sampler clips its predicted $\hat x_0$ to the pixel range, as lessons
# 02 and 03 did. So "the ODE's solution" there is that of a *clipped* ODE, not quite the probability-flow ODE
# derived above.

# %%
quality = pretrained.quality_table()
shown = dict(spaces=("pixel",), samplers=("ddim", "dpmpp2m", "heun"), spacings=("uniform", "logsnr"))
quality_plot(quality, "calls", **shown)
plt.show()
display(Markdown(report.quality_table(quality, **shown)))

# %% [markdown]
# First, on the evenly spaced timesteps DDIM uses. Each second-order sampler against DDIM at about the same
# model calls, from the same noise:

# %%
display(
    Markdown(
        report.verdicts(
            quality,
            {
                "On these timesteps, DPM-Solver++(2M) against DDIM": [
                    ("DPM-Solver++(2M) 10", "DDIM 10"),
                    ("DPM-Solver++(2M) 10", "DDIM 20"),
                    ("DPM-Solver++(2M) 20", "DDIM 20"),
                ],
                "Heun against DDIM": [("Heun 10", "DDIM 20"), ("Heun 25", "DDIM 50")],
            },
        )
    )
)

# %% [markdown]
# Where a second-order sampler loses to DDIM here, its order is not to blame: `benchmarks/sampler_detail.py`
# measures both landing about as close to the ODE's solution as their order promises. Their images can differ in
# another way: the last section says whether each sampler's are sharper or softer than real ones. Where they are
# sharper, both samplers lean on the model where these timesteps treat it worst. Heun's last correction asks the model
# at the smallest noise level, and adds that answer times half the last step's length. DPM-Solver++ extrapolates
# $\hat x_0$ across the last step, by far the longest in $\lambda$: a weight above one on the newest prediction
# and a negative one on the last, which acts as an unsharp mask.
#
# Then on timesteps spaced **evenly in $\lambda$** (`spacing="logsnr"`, DPM-Solver's own choice: even steps in
# the time its extrapolation assumes):

# %%
display(
    Markdown(
        report.verdicts(
            quality,
            {
                "On this grid, each second-order sampler against DDIM with more calls": [
                    ("Heun 10 log-SNR", "DDIM 20"),
                    ("DPM-Solver++(2M) 10 log-SNR", "DDIM 50"),
                ],
                "DPM-Solver++(2M) in 20 steps, against DDIM in 250 (a stand-in for the ODE's own solution),": [
                    ("DPM-Solver++(2M) 20 log-SNR", "DDIM 250")
                ],
                "That solution, against DDIM in 20 steps,": [("DDIM 250", "DDIM 20")],
                "DDIM itself on this grid, against its even one,": [("DDIM 20 log-SNR", "DDIM 20")],
            },
        )
    )
)

# %% [markdown]
# Read the third sentence with care. Where the ODE's own solution scores no better than DDIM in a few dozen
# steps, DDIM's score there is not owed to accuracy. Its slight blur is one explanation, which a score can
# happen to reward on this model. The table alone cannot settle that: it is a hypothesis.
#
# So an order is a statement about the ODE, and it holds here. FID and KID judge images. A second-order method
# pays off with a time grid that suits it, as EDM's and DPM-Solver's papers each choose theirs. Whether the ODE's
# solution is the best image is the model's business.
#
# ## The same noise, every sampler
#
# Pick a sampler and move its steps, on evenly spaced timesteps. The starting noise is the same each time, so what
# changes is the sampler alone. Printed first: each run's fine detail (lesson 04), beside real test images'.

# %%
pipe = load_pipeline("ddpm-cifar10", device)
n = min(profile.n_samples, 8)
noise = pipe.noise(n, torch.Generator().manual_seed(0))
start, images, calls = time.perf_counter(), {}, {}
for name in ("ddim", "dpmpp2m", "heun"):
    for steps in (3, 5, 10, 20):
        run = pipe.sample_trajectory(steps=steps, sampler=name, x_T=noise, frames=0, progress=False)
        images[name, steps], calls[name, steps] = run.images.cpu(), run.model_calls
print(f"{len(images)} runs of {n} images, {sum(calls.values())} model calls: {time.perf_counter() - start:.0f} s")
real = fine_detail(to_float(load_cifar10(train=False).images[:500]))
print(f"{'real test images':>17} fine detail: {real:.2f}")
for name in ("ddim", "dpmpp2m", "heun"):
    detail = {steps: fine_detail(images[name, steps]) for steps in (3, 5, 10, 20)}
    print(
        f"{SAMPLERS[name].title:>17} fine detail at 3, 5, 10, 20 steps: "
        + ", ".join(f"{value:.2f}" for value in detail.values())
        + f": at 20 steps {'sharper' if detail[20] > real else 'softer'} than real images"
    )
sampler_widget(images, calls)

# %% [markdown]
# ## Recap
#
# - A noise predictor is a score estimator (Tweedie), and the score drives one ODE whose solutions have the
#   data's distribution. Every deterministic sampler is a numerical method for it, and DDIM is its Euler step.
# - A method's order, measured where the solution is known, says how its error falls with the model calls: one
#   for DDIM, two for Heun and DPM-Solver++(2M), once the steps are small.
# - Cost is model calls, not steps. On the shipped model a sampler's order and its time grid go together, and
#   FID and KID can judge the same sampler differently.
#
# ## Questions to think about
#
# 1. Why does Heun take a plain Euler step into the clean image?
#
#    <details><summary>Answer</summary>
#
#    Its correction asks the model for the slope at the end of the step. At $\sigma = 0$ the model was never
#    trained, and the slope is zero over zero.
#
#    </details>
#
# 2. DPM-Solver++ solves the linear part of the ODE exactly. What does that leave to approximate?
#
#    <details><summary>Answer</summary>
#
#    Only the integral of the model's clean image over the step. A constant guess gives DDIM; a line through the
#    last two predictions gives the second-order method.
#
#    </details>
#
# Next, lesson 09 learns an ODE directly: flow matching.
