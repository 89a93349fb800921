# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · DDIM: the same model, far fewer steps
#
# **What you will do here**
#
# - Follow the idea that lets one trained model sample in far fewer steps.
# - Write DDIM's noise level, its step, the timesteps it visits, and its loop.
# - Check the sampler on data whose answer is known, and explain the small error it makes.
# - Sample the same noise through DDPM and DDIM, and measure time against quality.
# - Run the sampler backwards, from an image to its noise.
#
# **Time:** about 2 minutes of computing in the `cpu` profile.
#
# DDPM needs a thousand model calls per sample. **DDIM** (Song, Meng & Ermon 2021) samples from the *same trained
# model* in far fewer, and can do it deterministically.
#
# ## The idea in four steps
#
# 1. DDPM's loss only ever looks at the marginals
#    $q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\,x_0, (1 - \bar\alpha_t) I)$. It never uses the step-by-step
#    chain itself.
# 2. So any other process with the same marginals is trained by the same loss. DDIM picks a family of
#    *non-Markovian* ones, indexed by a noise level $\sigma_t$:
#    $$q_\sigma(x_{t-1}\mid x_t, x_0) = \mathcal N\Big(\sqrt{\bar\alpha_{t-1}}\,x_0 + \sqrt{1-\bar\alpha_{t-1}-\sigma_t^2}\;\tfrac{x_t-\sqrt{\bar\alpha_t}\,x_0}{\sqrt{1-\bar\alpha_t}},\ \sigma_t^2 I\Big)$$
#    The fraction is just the noise in $x_t$. One can check that this keeps every marginal.
# 3. Sampling plugs in the model's guesses of $x_0$ and $\varepsilon$. With $\sigma_t = 0$ nothing random is
#    left: each noise $x_T$ maps to one image, like solving an ODE. With $\sigma_t$ equal to DDPM's posterior
#    standard deviation, it *is* DDPM.
# 4. Nothing ties the formula to consecutive steps. Only the marginals at the visited steps matter, so we can
#    visit a short subsequence of them and jump between them.

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
import numpy as np
import torch
from IPython.display import Markdown, display

from diffedu import check, pretrained, report, runs
from diffedu.data import load_cifar10, to_float
from diffedu.env import get_device, seed_everything, shown
from diffedu.nets import count_parameters
from diffedu.oracles import GaussianDenoiser
from diffedu.pipelines import load_pipeline
from diffedu.profiles import get_profile
from diffedu.samplers import slerp
from diffedu.schedules import Schedule
from diffedu.viz import quality_plot, show_images
from diffedu.widgets import trajectory_widget

profile, device = get_profile(), get_device()
print(profile.note, f"Device: {device}.")

# %% [markdown]
# ## The step
#
# Plug the model's noise $\hat\varepsilon$ and its guess $\hat x_0$ into the formula of step 2, and sample
# (Song et al. eq. 12):
#
# $$x_{t_\text{prev}} = \sqrt{\bar\alpha_{t_\text{prev}}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t_\text{prev}}-\sigma_t^2}\;\hat\varepsilon + \sigma_t\,z,
# \qquad \sigma_t = \eta\,\sqrt{\frac{1-\bar\alpha_{t_\text{prev}}}{1-\bar\alpha_t}}\,\sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_{t_\text{prev}}}}\quad\text{(eq. 16)}$$
#
# where $t_\text{prev}$ is the next timestep visited, and $\bar\alpha = 1$ after the last one: the clean image.
# $\eta = 0$ is deterministic. $\eta = 1$ adds DDPM's amount of noise, and over every step it *is* DDPM.
#
# ### Exercise 3.1: sigma


# %% nbgrader={"grade": false, "grade_id": "ddim_sigma", "locked": false, "schema_version": 3, "solution": true, "task": false}
def ddim_sigma(alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """The standard deviation of the noise DDIM adds on the step from t to t_prev (eq. 16)."""
    ### BEGIN SOLUTION
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_ddim_sigma", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.ddim_sigma(ddim_sigma)

# %% [markdown]
# With $\eta = 1$ and every step visited, your sigma should be DDPM's posterior standard deviation (lesson 02):

# %%
linear = Schedule.linear()
ab, ab_prev = linear.alpha_bar, torch.cat([torch.ones(1, dtype=torch.float64), linear.alpha_bar[:-1]])
sigma_gap = (ddim_sigma(ab, ab_prev, 1.0) - linear.posterior_variance.sqrt()).abs().max().item()
print(f"eta = 1, 1000 steps: largest gap between DDIM's sigma and DDPM's posterior std: {sigma_gap:.1e}")
assert sigma_gap < 1e-10

# %% [markdown]
# ### Exercise 3.2: the DDIM step
#
# Write `ddim_step(eps, x_t, alpha_bar_t, alpha_bar_prev, eta, noise)` with your `ddim_sigma`. As in DDPM, clip
# the predicted $\hat x_0$ to $[-1, 1]$. Then recompute the noise from the clipped guess,
# $\hat\varepsilon = (x_t - \sqrt{\bar\alpha_t}\,\hat x_0)/\sqrt{1-\bar\alpha_t}$, so that the two terms agree. The
# check also compares your step with diffusers' `DDIMScheduler.step` (`use_clipped_model_output=True`) at its own
# timesteps.


# %% nbgrader={"grade": false, "grade_id": "ddim_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def ddim_step(
    eps: torch.Tensor,
    x_t: torch.Tensor,
    alpha_bar_t: torch.Tensor,
    alpha_bar_prev: torch.Tensor,
    eta: float,
    noise: torch.Tensor,
) -> torch.Tensor:
    """x_t -> x_{t_prev} (Song et al. eq. 12), with x_0 clipped to [-1, 1]."""
    ### BEGIN SOLUTION
    x0 = ((x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()).clamp(-1, 1)
    eps = (x_t - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    return alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev - sigma**2).sqrt() * eps + sigma * noise
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_ddim_step", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.ddim_step(ddim_step)

# %% [markdown]
# ### Exercise 3.3: which timesteps to visit
#
# Return `steps` timesteps from $T-1$ (pure noise) down to $0$, strictly decreasing. **Uniform** spacing
# spreads them evenly: $\mathrm{round}\big((T-1)\,i/(n-1)\big)$ for $i = 0..n-1$. **Quadratic** spacing, the
# DDIM paper's choice for CIFAR-10, uses $\mathrm{round}\big((T-1)\,(i/(n-1))^2\big)$. That puts more of them
# near $t = 0$, where fine detail is decided. (DDIM's released code ends its quadratic grid at $0.8\,T$; ours runs
# to $T-1$, like the uniform grid.) In this order: compute the grid in ascending order, $i = 0..n-1$; near zero
# it repeats values, so take $\max(t_i, i)$ to keep them distinct; then reverse it, largest first. With one step,
# visit just $T-1$. (diffusers' default, "leading" spacing, is `range(0, T, T // n)`: for $n \le T/2$ it never
# starts at $T-1$.)


# %% nbgrader={"grade": false, "grade_id": "ddim_timesteps", "locked": false, "schema_version": 3, "solution": true, "task": false}
def ddim_timesteps(T: int, steps: int, spacing: str = "uniform") -> list[int]:
    """The timesteps DDIM visits, from T - 1 down to 0."""
    ### BEGIN SOLUTION
    if steps == 1:
        return [T - 1]
    frac = np.linspace(0, 1, steps)
    t = np.round((T - 1) * (frac if spacing == "uniform" else frac**2)).astype(int)
    return np.maximum(t, np.arange(steps))[::-1].tolist()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_ddim_timesteps", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.ddim_timesteps(ddim_timesteps)

# %% tags=["nbval-check-output"]
for spacing in ("uniform", "quadratic"):
    print(f"{spacing:>9}, 10 steps:", ddim_timesteps(1000, 10, spacing))

# %% [markdown]
# ## Your sampler
#
# ### Exercise 3.4: the loop
#
# Visit your timesteps, largest first, and take your step from each one to the next. `alpha_bar_prev` is
# $\bar\alpha$ at the *next timestep of the list*: DDIM jumps over the ones between. The last step, from the
# smallest timestep, lands on the clean image, where $\bar\alpha = 1$. Draw each step's noise from `generator`
# as in lesson 02's loop. With $\eta = 0$ it is multiplied by zero, but drawing it keeps the code one loop.


# %% nbgrader={"grade": false, "grade_id": "sample_ddim", "locked": false, "schema_version": 3, "solution": true, "task": false}
@torch.inference_mode()
def sample_ddim(
    model,
    x_T: torch.Tensor,
    alpha_bar: torch.Tensor,
    steps: int,
    eta: float = 0.0,
    spacing: str = "uniform",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x_T -> a sample in `steps` DDIM steps: your ddim_step between your timesteps, the last into the clean image."""
    alpha_bar = alpha_bar.to(x_T)
    ### BEGIN SOLUTION
    ts = ddim_timesteps(len(alpha_bar), steps, spacing)
    x = x_T
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        eps = model(x, torch.full((len(x),), t, device=x.device))
        ab_prev = alpha_bar[t_prev] if t_prev >= 0 else alpha_bar.new_tensor(1.0)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = ddim_step(eps, x, alpha_bar[t], ab_prev, eta, noise)
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_sample_ddim", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.sample_ddim(sample_ddim)

# %% [markdown]
# ## Check it with the exact denoiser first
#
# As in lesson 02, data drawn from $\mathcal N(m, s^2)$ has an exact noise predictor, so any error below is the
# sampler's own. With $\eta = 0$ the spread comes out too *small*, and here is exactly why.
#
# With the exact predictor, a DDIM step from $\bar\alpha = a$ to $a'$ is an affine map,
# $x' - \sqrt{a'}\,m = k\,(x - \sqrt{a}\,m)$, with
#
# $$k = \frac{\sqrt{a'a}\,s^2 + \sqrt{(1-a')(1-a)}}{v}, \qquad v = a s^2 + 1 - a,$$
#
# where $v$ is the variance $x_t$ has at that step. The spread stays right only if $k^2 = v'/v$. But $k$ is
# the inner product of the vectors $(\sqrt{a'}\,s, \sqrt{1-a'})$ and $(\sqrt{a}\,s, \sqrt{1-a})$, divided by the
# second's squared length $v$. By Cauchy-Schwarz, $k^2 \le v'/v$, with equality only when $a' = a$.
#
# So every finite jump loses a little spread, and a big jump more. The losses vanish as the steps shrink.
# Quadratic spacing, with its small steps near $t = 0$, loses less. Multiplying the $k$'s gives the spread the
# sampler must end with; the table below prints it beside what your sampler measured.


# %%
def predicted_std(steps: int, spacing: str, s: float = 0.3) -> float:
    """The spread deterministic DDIM ends with on N(m, s^2) data, from x_T of spread 1: the product of the k's."""
    a = [linear.alpha_bar[t].item() for t in ddim_timesteps(linear.T, steps, spacing)] + [1.0]
    return float(
        np.prod(
            [
                ((a2 * a1) ** 0.5 * s**2 + ((1 - a2) * (1 - a1)) ** 0.5) / (a1 * s**2 + 1 - a1)
                for a1, a2 in zip(a, a[1:])
            ]
        )
    )


exact = GaussianDenoiser(linear, mean=0.2, std=0.3)
x_T = torch.randn(2000, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
print("the data: mean 0.2, std 0.3. The std of your samples, and the std predicted by the product of the k's:")
print(f"{'steps':>5} | {'uniform':>17} | {'quadratic':>17}")
for steps in (10, 20, 50, 100):
    u, q = (sample_ddim(exact, x_T, linear.alpha_bar, steps, spacing=s) for s in ("uniform", "quadratic"))
    print(
        f"{steps:>5} | {u.std():.3f} (pred. {predicted_std(steps, 'uniform'):.3f}) "
        f"| {q.std():.3f} (pred. {predicted_std(steps, 'quadratic'):.3f})"
    )
    assert abs(u.mean() - 0.2) < 0.01 and abs(q.mean() - 0.2) < 0.01
    for samples, spacing in ((u, "uniform"), (q, "quadratic")):  # 32,000 values: their std is good to about 0.4%
        assert abs(samples.std() / predicted_std(steps, spacing) - 1) < 0.02

# %% [markdown]
# ## A trained model
#
# In the `cpu` profile we use the model that ships with `diffedu` (lesson 02 shows its card). Otherwise we use
# lesson 02's model if you ran it in this profile, or train the same model here the same way. The pipeline reads
# the noise schedule the model learned from its checkpoint.


# %%
def train_as_in_lesson_02(path):
    runs.train(profile.recipe("ddpm"), path, device=device)  # lesson 02's recipe, seeded, saved to `path`


which = profile.lesson_checkpoint("ddpm-cifar10", "02_ddpm", train_as_in_lesson_02)
pipe = load_pipeline(which, device)
model, alpha_bar = pipe.unet, pipe.schedule.alpha_bar.float()  # the trained noise predictor, the schedule it learned
print(f"{shown(which)}: a UNet with {count_parameters(model) / 1e6:.2f}M parameters, {pipe.schedule}")

# %% [markdown]
# ## The same noise through DDPM and DDIM
#
# Every sampler below starts from the *same* $x_T$. DDPM adds fresh noise at each of its steps, so its images
# differ a lot from DDIM's: the same noise does not even give the same object. The DDIM rows, all deterministic,
# drift only a little from each other as the step count falls. Every run is timed on this machine.

# %%
seed_everything(1)
n = profile.n_samples
x_T = pipe.noise(n)
timed = {}  # name -> (steps, seconds, images)
start = time.perf_counter()
images = pipe.sample(sampler="ddpm", x_T=x_T, generator=torch.Generator().manual_seed(2))  # diffedu's DDPM
timed["DDPM"] = (1000, time.perf_counter() - start, images)
for steps in profile.ddim_steps:
    start = time.perf_counter()
    images = sample_ddim(model, x_T, alpha_bar, steps)
    timed[f"DDIM {steps}"] = (steps, time.perf_counter() - start, images)

fig, axes = plt.subplots(len(timed), 1, figsize=(0.6 * min(n, 8) + 1, 0.7 * len(timed) + 0.3))
for ax, (name, (steps, seconds, images)) in zip(axes, timed.items()):
    show_images(images[:8], nrow=8, ax=ax)
    ax.set_title(f"{name}: {steps} steps, {seconds:.1f} s", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Steps against time
#
# Each step is one model call, so time falls in proportion to the steps. How much do we lose? Deterministic DDIM
# is an ODE solver: as its steps grow, it converges to one answer per $x_T$. Here we measure quality as the
# distance to that answer (DDIM with many steps), averaged over pixels.

# %%
reference_steps = max(profile.ddim_steps) * 4
reference = sample_ddim(model, x_T, alpha_bar, reference_steps)
ddpm_seconds = timed["DDPM"][1]
print(f"{n} images on {device}. Reference for the distance: DDIM with {reference_steps} steps.\n")
print("| sampler | steps | seconds | ms per step | speed-up vs DDPM | distance to reference |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
rows = []
for name, (steps, seconds, images) in timed.items():
    distance = (images - reference).abs().mean().item()
    rows.append((name, steps, seconds, distance))
    print(
        f"| {name} | {steps} | {seconds:.2f} | {1000 * seconds / steps:.1f} | {ddpm_seconds / seconds:.1f}x "
        f"| {distance:.3f} |"
    )

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.2))
ddim_rows = [r for r in rows if r[0] != "DDPM"]
ax1.plot([r[1] for r in ddim_rows], [r[2] for r in ddim_rows], "o-", label="DDIM (eta = 0)")
ax1.plot([1000], [ddpm_seconds], "s", color="C3", label="DDPM")
ax1.set(xscale="log", yscale="log", xlabel="steps", ylabel="seconds", title=f"time to sample {n} images")
ax1.legend()
ax2.plot([r[1] for r in ddim_rows], [r[3] for r in ddim_rows], "o-")
ax2.set(xscale="log", xlabel="steps", ylabel="mean |x - reference|", title="distance to the converged DDIM sample")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What FID says: the shipped quality table
#
# The distance above says how far a few steps land from many. It cannot say whether either looks like CIFAR-10.
# That takes a measure of how close a *set* of samples is to the real images. The course uses two, which
# lesson 06 builds:
#
# - **FID** feeds both sets through an image network (Inception), fits a Gaussian to each set's features, and
#   measures the distance between the two Gaussians.
# - **KID** compares the same features with a kernel, and unlike FID it is not biased by the number of images.
#
# For both, lower is better. Each score comes with a **standard error**: how much it would move if another set
# of as many samples were drawn. Two rows drawn from the same noise err together, so their **paired difference**
# is known far better than either score. By the course's rule, a difference within two standard errors is
# *level*.
#
# These scores need hundreds of images, more than a CPU makes inside a lesson. So the course ships them, measured
# once by `python -m diffedu quality`, against all the training images. The dashed line is 500 real test images
# scored the same way: what a model scores that samples like the data without copying its training images.

# %%
quality = pretrained.quality_table()
# lesson 08 adds other samplers, and the flow-matching model
shown = dict(spaces=("pixel",), samplers=("ddpm", "ddpm_large", "ddim"), spacings=("uniform", "quadratic"))
quality_plot(quality, "calls", **shown)
plt.show()
display(Markdown(report.quality_table(quality, **shown)))

# %% [markdown]
# The plot shows the shape: quality holds as the steps fall, then breaks. The pairs below put numbers on it,
# each from the same noise, with a verdict by the two-standard-error rule. The last column scores the same images
# against a second reference: test images that no model trained on, other than the dashed line's. A model that
# copied its training images would gain nothing there.

# %%
display(
    Markdown(
        report.verdicts(
            quality,
            {
                "DDIM in 20 steps, against 100,": [("DDIM 20", "DDIM 100")],
                "Below 20 steps, each halving of DDIM's steps": [("DDIM 10", "DDIM 20"), ("DDIM 5", "DDIM 10")],
                "DDIM in 20 steps, against DDPM's 1000 with either variance,": [
                    ("DDIM 20", "DDPM 1000"),
                    ("DDIM 20", "DDPM-large 1000"),
                ],
                r"DDPM with the variance $\beta_t$, against $\tilde\beta_t$,": [("DDPM-large 1000", "DDPM 1000")],
                "Quadratic spacing, against uniform,": [
                    ("DDIM 20 quadratic", "DDIM 20"),
                    ("DDIM 10 quadratic", "DDIM 10"),
                ],
            },
        )
    )
)

# %% [markdown]
# The sentences under the table are written by code from its verdicts, so they stay true if the table is measured
# again. Two things they do not say:
#
# - **FID and KID can disagree** beyond their errors: FID compares the features' means and covariances, KID their
#   higher moments too.
# - **The cost is settled** whatever the scores: DDIM in 20 steps makes 50 times fewer model calls than DDPM.
#
# `DDPM 1000` samples with the posterior's variance $\tilde\beta_t$ at each step, and `DDPM-large 1000` with Ho et
# al.'s $\beta_t$ (lesson 02 compares the two on Gaussian data). DDIM's Table 1 finds $\beta_t$ the stronger on
# CIFAR-10; the sentence on the two variances says whether this course's model agrees.

# %% [markdown]
# ## eta: how much noise to add back
#
# $\eta = 0$ is deterministic, and $\eta = 1$ adds DDPM's amount of fresh noise at every step. With few steps,
# fresh noise has little time to be cleaned up, so samples get noisier. In the DDIM paper's Table 1 (CIFAR-10),
# $\eta = 0$ has the best FID at every step count. Only DDPM with the larger variance $\sigma_t^2 = \beta_t$,
# at all its steps, beats it (in `diffedu`: `pipe.sample(sampler="ddpm_large")`).

# %%
steps = profile.ddim_steps[1]
etas = [0.0, 0.5, 1.0]
fig, axes = plt.subplots(len(etas), 1, figsize=(0.6 * min(n, 8) + 1, 0.7 * len(etas) + 0.3))
for ax, eta in zip(axes, etas):
    images = sample_ddim(model, x_T, alpha_bar, steps, eta=eta, generator=torch.Generator().manual_seed(3))
    show_images(images[:8], nrow=8, ax=ax)
    ax.set_title(f"eta = {eta}, {steps} steps", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Inversion: from an image back to its noise
#
# Because $\eta = 0$ is deterministic, we can run it backwards: from a real image up to an $x_T$ that DDIM maps
# back to (nearly) that image. Going up from $t_\text{prev}$ to $t$, the step is the same formula with the roles
# of $\bar\alpha_t$ and $\bar\alpha_\text{prev}$ swapped. Estimate $\hat x_0$ from $x$ at $t_\text{prev}$, then
# re-noise it to level $t$ with the same $\hat\varepsilon$.
#
# It is only approximate. The exact inverse would need the noise at the point we are going *to*, which we do not
# have yet, so the noise at the point we are at stands in for it. The smaller the jump, the smaller the error:
# with more steps the round trip gets closer.
#
# ### Exercise 3.5: one step up


# %% nbgrader={"grade": false, "grade_id": "ddim_invert_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def ddim_invert_step(
    eps: torch.Tensor, x: torch.Tensor, alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor
) -> torch.Tensor:
    """Deterministic DDIM backwards: x at t_prev -> x at t, with eps the model's prediction at x. No clipping."""
    ### BEGIN SOLUTION
    x0 = (x - (1 - alpha_bar_prev).sqrt() * eps) / alpha_bar_prev.sqrt()
    return alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * eps
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_ddim_invert_step", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.ddim_invert_step(ddim_invert_step)


# %%
@torch.inference_mode()
def invert_ddim(model, x0: torch.Tensor, alpha_bar: torch.Tensor, steps: int) -> torch.Tensor:
    """Image -> noise, through the timesteps sampling visits, in reverse order."""
    alpha_bar = alpha_bar.to(x0)
    ts = ddim_timesteps(len(alpha_bar), steps)[::-1]  # 0 ... T-1
    x = x0
    for t_prev, t in zip([-1] + ts[:-1], ts):
        eps = model(x, torch.full((len(x),), max(t_prev, 0), device=x.device))  # the clean image asks at t = 0
        ab_prev = alpha_bar[t_prev] if t_prev >= 0 else alpha_bar.new_tensor(1.0)
        x = ddim_invert_step(eps, x, alpha_bar[t], ab_prev)
    return x


inversion_steps = profile.ddim_steps[0]
real = to_float(load_cifar10(train=False).images[:2]).to(device)
z = invert_ddim(model, real, alpha_bar, inversion_steps)
back = sample_ddim(model, z, alpha_bar, inversion_steps)
error = (back - real).abs().mean().item()
print(
    f"{inversion_steps} steps: inverted noise has std {z.std():.2f} (pure noise: 1); "
    f"the round trip misses the image by {error:.3f} on average (pixel range 2)"
)
show_images(torch.cat([real, z.clamp(-2, 2) / 2, back]), nrow=2, title="image, its noise, and back")
plt.show()

# %% [markdown]
# ## Interpolating between two noises
#
# Walk from one image's noise to the other's, and sample each point. Use **slerp**, spherical interpolation.
# Gaussian noise in $d$ dimensions lives near a sphere of radius $\sqrt d$. A straight line between two such
# points cuts through the inside, where the model has never seen noise of such a small norm.

# %%
alphas = torch.linspace(0, 1, 8)
path = torch.cat([slerp(z[:1], z[1:], a) for a in alphas])
line = torch.cat([(1 - a) * z[:1] + a * z[1:] for a in alphas])
print("norm along the slerp path:", [round(v) for v in path.flatten(1).norm(dim=1).tolist()])
print("norm along the straight line:", [round(v) for v in line.flatten(1).norm(dim=1).tolist()])
show_images(sample_ddim(model, path, alpha_bar, inversion_steps), nrow=8, title="DDIM along the slerp path")
plt.show()

# %% [markdown]
# ## The trajectory, in far fewer steps
#
# The same slider as in lesson 02, on a short DDIM run of diffedu's sampler, which records snapshots. Every step
# is a big jump, and the predicted $x_0$ settles quickly.

# %%
trajectory = pipe.sample_trajectory(steps=min(50, profile.ddim_steps[0] * 5), x_T=x_T, frames=20)
trajectory_widget(trajectory, n=8)

# %% [markdown]
# ## Recap
#
# - DDIM reuses the DDPM model as it is; only the sampler changes.
# - It can skip steps for any $\eta$. With $\eta = 0$ sampling is deterministic and nearly invertible.
# - On the shipped model, a few dozen DDIM steps keep the quality of a hundred; below that, samples lose detail.
# - FID and KID score a set of samples; paired differences say whether two rows truly differ.
#
# ## Questions to think about
#
# 1. Why does deterministic DDIM end with too small a spread, even with an exact model?
#
#    <details><summary>Answer</summary>
#
#    Each jump is a straight step along the model's current direction, and by Cauchy-Schwarz a finite jump
#    shrinks the spread a little. Smaller steps lose less.
#
#    </details>
#
# 2. Why can two rows' difference have a smaller standard error than either row's score?
#
#    <details><summary>Answer</summary>
#
#    Drawn from the same noise, the two rows' images are alike, so their scores err in the same direction. The
#    error of the difference comes only from where they differ.
#
#    </details>
#
# Next, lessons 04 and 05 cut the cost of *each* step, by diffusing in a small latent space.
