# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · The ODE view: the score, second-order samplers, flow matching
#
# Lesson 03 called deterministic DDIM "like solving an ODE". This lesson says which ODE, and what follows from
# it: every deterministic sampler is a numerical method for one differential equation, so the numerical
# analyst's tools apply. A method of higher **order** reaches the same accuracy in fewer model calls; you build
# two of them (Heun's, as in EDM, and DPM-Solver++(2M), a default of today's image pipelines) and measure their
# order. Then **flow matching**, with which SD3 and FLUX are trained: another way to learn the same kind of ODE.
#
# The cost of a sampler is its number of model calls, the **NFE** (number of function evaluations), not its
# steps: Heun's method calls the model twice a step.

# %%
# Set-up: on Colab, install the course (once per session); anywhere else this does nothing.
import importlib.util, os, subprocess, sys

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
from diffedu.env import get_device
from diffedu.metrics import fine_detail
from diffedu.oracles import GaussianDenoiser, GaussianVelocity
from diffedu.pipelines import load_pipeline
from diffedu.profiles import get_profile
from diffedu.samplers import SAMPLERS, make_scheduler, sample, sample_trajectory
from diffedu.schedules import Schedule
from diffedu.viz import quality_plot, show_images
from diffedu.widgets import sampler_widget

profile, device = get_profile(), get_device()
print(profile.note, f"Device: {device}.")

# %% [markdown]
# ## The score
#
# The **score** of a distribution is the gradient of its log-density, $\nabla_x \log p(x)$: the direction in
# which the data gets more likely. For the noised data of lesson 01, $x_t = \sqrt{\bar\alpha_t}\,x_0 +
# \sqrt{1-\bar\alpha_t}\,\varepsilon$, **Tweedie's formula** says that the score is the best guess of the noise,
# scaled:
#
# $$\nabla_x \log p_t(x) = -\frac{\mathbb E[\varepsilon \mid x_t = x]}{\sqrt{1-\bar\alpha_t}}.$$
#
# (Why: $p_t$ is the data blurred by a Gaussian, and the gradient of a log-Gaussian is $-(x - \text{its
# mean})/\text{variance}$; averaged over the clean images that could have made $x$, that mean is
# $\sqrt{\bar\alpha_t}\,\mathbb E[x_0 \mid x_t]$.) The epsilon loss of lesson 02 trains $\varepsilon_\theta$ to
# that conditional mean, so **a noise predictor is a score estimator**. On the Gaussian data of lessons 02 and
# 03, N(0.2, 0.3²), everything is known: $x_t \sim \mathcal N(\sqrt{\bar\alpha_t}\,0.2,\; v_t)$ with
# $v_t = 0.3^2\bar\alpha_t + 1 - \bar\alpha_t$, whose score is $-(x - \sqrt{\bar\alpha_t}\,0.2)/v_t$. The exact
# noise predictor, through Tweedie's formula, gives exactly that:

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
# The score points towards where the data is likely, steeply near t = 0 (slope -1/0.3² = -11: the data is
# narrow), gently at t = 999 (slope -1: the standard normal).
#
# ## The probability-flow ODE
#
# Song et al. (2021, "Score-based generative modeling through SDEs") showed that the noising process has a
# deterministic twin: an ODE whose solutions have, at every t, the same distribution $p_t$, driven by the
# score alone. It is simplest in two variables that undo the shrinking of the signal (Karras et al. 2022, EDM):
#
# $$\sigma = \sqrt{\frac{1-\bar\alpha}{\bar\alpha}}, \qquad \tilde x = \frac{x}{\sqrt{\bar\alpha}} = x_0 + \sigma\,\varepsilon,
# \qquad\text{and then}\qquad \frac{d\tilde x}{d\sigma} = -\sigma\,\nabla_{\tilde x}\log p(\tilde x;\sigma) = \mathbb E[\varepsilon \mid x_t].$$
#
# (The second equality is Tweedie's formula again, for $\tilde x$, whose noise has standard deviation $\sigma$.)
# Read it as: **as the noise level σ falls, move x̃ against the predicted noise**, at unit speed per unit of σ.
# σ runs from about 157 at t = 999 (for the linear schedule) to 0.01 at t = 0, and 0 for the clean image.
#
# **DDIM is Euler's method for this ODE.** One Euler step from σ to σ_prev is x̃_prev = x̃ + (σ_prev - σ) ε̂.
# Multiply by $\sqrt{\bar\alpha_\text{prev}}$ and it is lesson 03's deterministic step,
# $\sqrt{\bar\alpha_\text{prev}}\,\hat x_0 + \sqrt{1-\bar\alpha_\text{prev}}\,\hat\varepsilon$ (write x̃ = x̂_0 + σ ε̂
# and the σ terms cancel). Numerically, with diffedu's DDIM and an Euler loop written here:

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
print(f"both land {(by_ddim - solution).abs().mean():.3f} from the exact solution on average (std of the data: 0.3); "
      f"the samples' std is {by_ddim.std():.3f}, the exact solution's {solution.std():.3f}")
assert torch.allclose(x_tilde, by_ddim, atol=1e-10)

# %% [markdown]
# Lesson 03's shrinking spread is Euler's error: a first-order method, whose error falls as 1/NFE. A
# **second-order** method's falls as 1/NFE², so halving its error costs 1.4 times the calls, not 2.
#
# ## Heun's method
#
# Heun's method (Karras et al. 2022, Algorithm 1, the "EDM sampler" without its added noise) takes the Euler
# step as a trial, asks the model for the slope where the trial lands, and takes the step again with the mean
# of the two slopes:
#
# $$d = \hat\varepsilon(\tilde x, \sigma),\qquad \tilde x' = \tilde x + (\sigma_\text{prev}-\sigma)\,d,\qquad
# d' = \hat\varepsilon(\tilde x', \sigma_\text{prev}),\qquad \tilde x_\text{prev} = \tilde x + (\sigma_\text{prev}-\sigma)\,\frac{d + d'}{2}.$$
#
# Two model calls a step, except the last: into σ_prev = 0, the clean image, where the model was never trained
# (and the slope is 0/0), Heun takes the Euler step alone.
#
# ### Exercise 8.1: Heun's step
#
# Write `heun_step(slope, x, sigma, sigma_prev)`: `x` is x̃, and `slope(x, sigma)` asks the model for
# ε̂ at (x̃, σ). The check runs your step through 12 timesteps with the exact slope of N(0.2, 0.3²) data, and
# compares it with diffedu's `HeunScheduler` and diffusers' `HeunDiscreteScheduler` on the same timesteps.

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
# previous step. DPM-Solver++ (Lu et al. 2022) also solves the ODE's linear part exactly, in the time
# $\lambda = \log\big(\sqrt{\bar\alpha}/\sqrt{1-\bar\alpha}\big)$ (half the log signal-to-noise ratio), and
# extrapolates only the model's clean image $\hat x_0$. With $a = \sqrt{\bar\alpha}$, $s = \sqrt{1-\bar\alpha}$ and
# $h = \lambda_\text{prev} - \lambda_t$:
#
# $$x_\text{prev} = \frac{s_\text{prev}}{s_t}\,x_t - a_\text{prev}\,\big(e^{-h}-1\big)\,D,\qquad
# D = \Big(1+\frac{1}{2r}\Big)\hat x_0 - \frac{1}{2r}\,\hat x_0^\text{last},\qquad r = \frac{\lambda_t - \lambda_\text{last}}{h}.$$
#
# With $D = \hat x_0$ it is DDIM's step again (the first-order DPM-Solver++): on the first step, which has no
# last call, it is exactly that. On the last step, into the clean image (λ = ∞), the step is $\hat x_0$ itself,
# as diffusers' `lower_order_final` does.
#
# ### Exercise 8.2: the DPM-Solver++(2M) step
#
# Write `dpm_solver_step(x, x0, x0_last, alpha_bar_t, alpha_bar_prev, alpha_bar_last)`: `x0` is this step's
# prediction of the clean image, `x0_last` and `alpha_bar_last` the last step's (both None on the first step);
# `alpha_bar_prev` is 1 on the last step. The check runs it through 12 timesteps against diffedu's
# `DPMSolverScheduler` and diffusers' `DPMSolverMultistepScheduler`.

# %% nbgrader={"grade": false, "grade_id": "dpm_solver_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def dpm_solver_step(x: torch.Tensor, x0: torch.Tensor, x0_last: torch.Tensor | None, alpha_bar_t: torch.Tensor,
                    alpha_bar_prev: torch.Tensor, alpha_bar_last: torch.Tensor | None) -> torch.Tensor:
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
# measured, not guessed. Below, diffedu's samplers (the ones your steps were checked equal to) run from the
# same noise, and the error is taken at the last timestep, t = 0, before the final jump to the clean image,
# which all three take as the same first-order step. On log-log axes an error of C / NFE^p is a line of slope -p.

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
    print(f"{SAMPLERS[sampler].title:>17}: fitted order {slope:.2f} (from 50 steps up); error at "
          + ", ".join(f"{n} calls {e:.1e}" for n, e in zip(calls, errors)))
    assert abs(slope - SAMPLERS[sampler].order) < 0.2
ax.set(xscale="log", yscale="log", xlabel="model calls (NFE)", ylabel="mean error at t = 0",
       title="each sampler against the ODE's exact solution, N(0.2, 0.3²) data")
ax.legend()
plt.show()

# %% [markdown]
# From 50 steps up the slopes are the orders: 1.0 for DDIM, 2.0 for Heun and DPM-Solver++(2M). Below that the
# picture is less tidy, and worth reading. With the linear schedule's timesteps spaced evenly in t, the steps are
# very uneven in λ (the last one, into t = 0, spans much of its range), and DPM-Solver++'s extrapolation from its
# last call misjudges there: its error hardly moves from 5 to 25 steps (7.5e-02, 5.6e-02, 6.1e-02), and at 25 steps
# it lands further than DDIM (4.0e-02). Heun at 5 steps (9 calls) is further than DDIM at 5. An order is a promise
# about small steps only; which sampler wins at the few steps people use is a question for the real model and a
# real measure.
#
# ## On the shipped model
#
# The shipped quality table has FID and KID of `ddpm-cifar10` with each sampler, 500 images each, against the
# model calls (`python -m diffedu quality`; lesson 06 derives the scores and their standard errors).

# %%
quality = pretrained.quality_table()
shown = dict(spaces=("pixel",), samplers=("ddim", "dpmpp2m", "heun"), spacings=("uniform", "logsnr"))
quality_plot(quality, "calls", **shown)
plt.show()
display(Markdown(report.quality_table(quality, **shown)))

# %% [markdown]
# What the table says, with each difference between two rows drawn from the same noise and its standard error
# (`benchmarks/paired_differences.py`). First, on the evenly spaced timesteps DDIM uses:
#
# - **DPM-Solver++(2M) makes 10 calls do the work of DDIM's 20, in FID.** FID 106.7 at 10 calls, against DDIM
#   20's 106.2: +0.4 ± 1.1, no difference to measure; against DDIM 10, -8.9 ± 1.6; at 5 calls 139.0 against DDIM
#   5's 174.0. Its KID is worse than DDIM's from 10 calls up (+6.9 ± 1.5 against DDIM 20, +5.2 ± 0.9 at 50).
# - **Heun is the worst sampler in the table**: FID 180.9 with 19 calls (+74.7 ± 1.9 against DDIM 20), 134.7
#   with 49.
#
# `benchmarks/sampler_detail.py` says why, on 64 images each: how far each lands from the ODE's solution (DDIM in
# 500 steps standing in for it), and the fine detail of its images (lesson 04's measure; real test images 0.150).
# DDIM: 0.082, 0.044, 0.017 away at 10, 20, 50 steps, fine detail 0.065, 0.095, 0.130 (at few steps it blurs).
# DPM-Solver++(2M): 0.050, 0.025, 0.010 away, at 10 calls about as close as DDIM at 20 (0.044), as its order
# promises, but fine detail 0.21, 0.21, 0.18: sharper than the data. Heun 10: 0.091 away, fine detail 0.32.
# Both lean on the model where these timesteps treat it worst: Heun's last correction asks it at t = 0
# (σ = 0.01, noise of std 0.01 to be found) and adds that answer times half the last step's length; with
# Euler's step into t = 0 instead, Heun 10 lands 0.045 away with fine detail 0.11. DPM-Solver++ extrapolates x̂_0 across the last step,
# by far the longest in λ: a weight well above 1 on the newest x̂_0 and a negative one on the last, an unsharp
# mask.
#
# Then on timesteps spaced **evenly in λ** (`spacing="logsnr"`, DPM-Solver's own choice; its steps are even in
# the time its extrapolation assumes):
#
# - Heun with 19 calls scores FID 107.0, DDIM 20's (+0.7 ± 1.2), where it scored 180.9; DPM-Solver++(2M) with 10
#   calls 105.3, DDIM 50's (+0.1 ± 0.7). DPM-Solver++'s fine detail comes back to the data's (0.12 at 10 calls,
#   0.150 at 20), Heun's excess shrinks (0.21). DDIM itself does worse on that grid (+3.7 ± 0.8 at 20 steps).
# - DPM-Solver++(2M) with 20 calls lands 0.008 from the ODE's solution and scores within 0.6 of what the solution
#   scores: against DDIM 250 (0.002 away), FID -0.6 ± 0.2 and KID +0.6 ± 0.2.
# - And the solution's own KID is 34.5, **worse than DDIM 20's** (+2.7 ± 1.1; FID the same, -0.2 ± 0.9). DDIM's
#   lead in KID is not accuracy; its blur (the fine detail above) is the likely reason, which KID happens to reward
#   on this model.
#
# So an order is a statement about the ODE, and it holds here; FID and KID judge images. A second-order method
# pays with a time grid that suits it (EDM's and DPM-Solver's papers each choose theirs), and then its 20 calls
# get close to what the ODE itself gives. Whether the ODE's solution is the best image is the model's business.
#
# ## The same noise, every sampler
#
# Pick a sampler, move its steps (on evenly spaced timesteps): the same starting noise each time, so what changes
# is the sampler alone. Printed first: each run's fine detail, against real test images' 0.150.

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
for name in ("ddim", "dpmpp2m", "heun"):
    print(f"{SAMPLERS[name].title:>17} fine detail at 3, 5, 10, 20 steps: "
          + ", ".join(f"{fine_detail(images[name, steps]):.2f}" for steps in (3, 5, 10, 20)))
sampler_widget(images, calls)

# %% [markdown]
# ## Flow matching
#
# Everything so far starts from a model trained to predict the noise. **Flow matching** (Lipman et al. 2023; as
# "rectified flow", Liu et al. 2023), which SD3 and FLUX are trained with, learns the ODE's velocity directly. Its
# path from data to noise is a straight line,
#
# $$x_t = (1-t)\,x_0 + t\,\varepsilon,\qquad t\in[0,1],$$
#
# whose velocity is $dx_t/dt = \varepsilon - x_0$. A network $v_\theta(x_t, t)$ learns it with the mean squared
# error $\lVert v_\theta(x_t, t) - (\varepsilon - x_0)\rVert^2$, and its best answer is the average velocity of
# the lines through $x_t$, $\mathbb E[\varepsilon - x_0 \mid x_t]$: the velocity field of an ODE that carries
# noise at t = 1 to data at t = 0. Sampling solves it, from t = 1 down to 0. SD3 draws t not uniformly but
# logit-normally, to train more on the middle times where the task is hardest.
#
# ### Exercise 8.3: the flow-matching loss
#
# Write `fm_loss(model, x0)`: one t per image, uniform in [0, 1] (`torch.rand`), Gaussian noise, x_t on the line,
# and the mean squared error between `model(x_t, t)` and ε - x_0.

# %% nbgrader={"grade": false, "grade_id": "fm_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def fm_loss(model, x0: torch.Tensor) -> torch.Tensor:
    """Flow matching's loss: || v_theta((1 - t) x0 + t eps, t) - (eps - x0) ||^2, t ~ U(0, 1) per image."""
    ### BEGIN SOLUTION
    t = torch.rand(len(x0), device=x0.device)
    noise = torch.randn_like(x0)
    tt = t.view(-1, 1, 1, 1).to(x0.dtype)
    return torch.nn.functional.mse_loss(model((1 - tt) * x0 + tt * noise, t), noise - x0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_fm_loss", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.fm_loss(fm_loss)

# %% [markdown]
# ### Exercise 8.4: sampling the flow
#
# Write `fm_sample(velocity, x1, steps)`: Euler's method on dx/dt = v(x, t) from t = 1 (the noise `x1`) to t = 0
# in `steps` equal steps, each x + (t_next - t) v(x, t). The check drives it with the exact velocity of
# N(0.2, 0.3²) data (`GaussianVelocity`).

# %% nbgrader={"grade": false, "grade_id": "fm_sample", "locked": false, "schema_version": 3, "solution": true, "task": false}
def fm_sample(velocity, x1: torch.Tensor, steps: int) -> torch.Tensor:
    """Noise at t = 1 -> a sample at t = 0, by `steps` Euler steps on the flow."""
    ### BEGIN SOLUTION
    x, ts = x1, torch.linspace(1, 0, steps + 1, dtype=x1.dtype)
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * velocity(x, t)
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_fm_sample", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.fm_sample(fm_sample)

# %% [markdown]
# ### The same ODE, another clock
#
# Divide the line by 1 - t: $x_t/(1-t) = x_0 + \frac{t}{1-t}\,\varepsilon$. That is $\tilde x$ at
# $\sigma = t/(1-t)$: the flow-matching path is the probability-flow ODE of the first half of this lesson, in
# other variables. Work it through and **Euler's step on the flow is DDIM's step** on the σ's of its time grid
# (x = (1 - t) x̃, and ε̂ = x_t + (1 - t) v̂). What flow matching changes is (1) what the network learns, the
# velocity rather than the noise, which weighs the times differently in the loss, and (2) the time grid a sampler
# walks: uniform in t is σ = t/(1 - t), crowded at the clean end. One Euler step of each, from the same point,
# with the exact velocity and noise of the same data:

# %%
velocity = GaussianVelocity(mean=0.2, std=0.3)
t, t_next = 0.8, 0.5
x_t = (1 - t) * 0.2 + (0.6 * x_T[:8])  # any points will do
flow_step = x_t + (t_next - t) * velocity(x_t, t)
sigma, sigma_next = t / (1 - t), t_next / (1 - t_next)
eps = x_t + (1 - t) * velocity(x_t, t)  # the noise the velocity implies: v = eps - x0 and x_t = (1 - t) x0 + t eps
ddim_step = (1 - t_next) * (x_t / (1 - t) + (sigma_next - sigma) * eps)  # Euler in x~ and sigma, back to x
print(f"Euler on the flow vs DDIM's step on sigma = t / (1 - t): largest gap {(flow_step - ddim_step).abs().max():.1e}")
assert torch.allclose(flow_step, ddim_step, atol=1e-12)

# %% [markdown]
# Then the difference between the two at few steps is the grid's. From the same noise, the error of Euler on the
# flow's uniform grid, against its exact solution, beside DDIM on the DDPM model's timesteps (both driven by the
# exact model of the same data, so that only the sampler differs):

# %%
x1 = x_T  # the flow's noise at t = 1 is N(0, I), as the DDPM model's x_T
print(f"{'steps':>5} | {'flow matching, Euler':>20} | {'DDPM model, DDIM':>16}   (mean error, data std 0.3)")
for steps in (5, 10, 20, 50):
    flow = fm_sample(velocity, x1, steps)
    flow_error = (flow - velocity.flow(x1, 1.0, 0.0)).abs().mean().item()
    ddim_error = (sample(exact, make_scheduler("ddim", linear, steps, clip_x0=False), x_T, progress=False)
                  - exact.flow(x_T, linear.T - 1, -1)).abs().mean().item()
    print(f"{steps:>5} | {flow_error:>20.4f} | {ddim_error:>16.4f}")

# %% [markdown]
# Both are Euler's method, first order (the error halves as the steps double), and from the same noise the flow's
# uniform grid lands about twice as close to its exact solution as DDIM on the DDPM timesteps: 0.080 against 0.163
# at 5 steps, 0.009 against 0.021 at 50. That is the grid's doing, on data whose model is exact; a trained model
# adds its own errors, as the shipped model showed for the second-order samplers.
#
# ## fm-cifar10: flow matching on the course's UNet
#
# `fm-cifar10` is `ddpm-cifar10`'s UNet trained by flow matching (`diffedu.training.flow_loss`, the loss of
# Exercise 8.3) with `ddpm-cifar10`'s recipe: 9,000 steps of 256 images, the same learning rate and EMA, so the
# same training compute (its card says where and how long). Its time input is t in [0, 1] (the UNet embeds 1000 t,
# the range its embedding was made for), so your `fm_sample` samples it as it sampled the Gaussian's velocity.
# Ten calls each, from the same noise:

# %%
fm = load_pipeline("fm-cifar10", device)
noise = fm.noise(8, torch.Generator().manual_seed(0))
with torch.inference_mode():
    yours = fm_sample(fm.unet, noise, 10).clamp(-1, 1)
    ddim = pipe.sample(8, 10, sampler="ddim", x_T=noise, progress=False)
show_images(torch.cat([yours.cpu(), ddim.cpu()]), nrow=8,
            title="top: fm-cifar10, your fm_sample, 10 calls; bottom: ddpm-cifar10, DDIM 10, the same noise")
plt.show()

# %% [markdown]
# The quality table measures both at 500 images for each sampler and number of calls; the flow model with Euler
# (your sampler) and Heun on its uniform grid, beside the DDPM model with DDIM and DPM-Solver++(2M):

# %%
shown = dict(spaces=("pixel", "flow"), samplers=("ddim", "dpmpp2m", "euler", "heun"), spacings=("uniform",))
quality_plot(quality, "calls", **shown)
plt.show()
display(Markdown(report.quality_table(quality, **shown)))

# %% [markdown]
# At equal model calls, from the same noise (differences with their standard errors,
# `benchmarks/paired_differences.py`; the flow model's Heun takes its last step by Euler, as EDM's):
#
# - **At 5 calls flow matching wins.** Heun in 3 steps scores FID 122.4, the best of any 5-call row, against
#   DPM-Solver++(2M) 5 on the DDPM model -16.7 ± 2.3 in FID and level in KID (-3.5 ± 3.7); your Euler with 5 calls
#   beats DDIM 5 by 44.8 ± 3.0 in FID.
# - **From 10 calls up the DDPM model wins on KID, and they tie on FID.** Euler 10 against DDIM 10: FID +0.6 ± 1.9,
#   KID +36.7 ± 3.0; at about 50 calls KID 55 against DDIM's 33 (+22.2 ± 1.9 for Heun).
#
# The same network, images and steps, so the difference is the training objective (and the path and grid it
# brings). Few steps suit the flow, as the Gaussian example above predicted; but its samples have less contrast
# and detail than real images (200 images at Euler 20: a pixel std of 0.41 against real images' 0.50 and DDIM's
# 0.53; fine detail 0.54 of real images' against DDIM's 0.72), which KID sees far more than FID. SD3 found uniform t the
# weakest of its flow-matching variants and trains with logit-normal t: that is the next experiment (the model's
# card says what it costs).
#
# ## What to take away
#
# - A noise predictor is a score estimator (Tweedie), and the score drives one ODE whose solutions have the
#   data's distribution: every deterministic sampler is a numerical method for it, DDIM its Euler step.
# - A method's order, measured on data where the solution is known, says how its error falls with the model
#   calls: 1 for DDIM, 2 for Heun and DPM-Solver++(2M), once the steps are small.
# - Cost is model calls, not steps. On the shipped model, with timesteps even in log-SNR, DPM-Solver++(2M) gives in
#   20 calls nearly what the ODE's solution gives in 250; on DDIM's timesteps the second-order samplers sharpen
#   beyond the data. A sampler's order and its time grid go together.
# - Flow matching learns the velocity of a straight-line path; it is the same kind of ODE, in another clock, and
#   its sampler is Euler's step. What it changes is the training target and the time grid. On the same UNet and
#   training compute it wins at 5 model calls and loses on KID from 10 up: measure before you choose.
