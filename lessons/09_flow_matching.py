# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · Flow matching: a straight path from noise to data
#
# **What you will do here**
#
# - Meet flow matching's straight path, and the velocity a network learns along it.
# - Write its loss, and its sampler: Euler's method on the flow.
# - Show that it is lesson 08's ODE in another clock, and see what its time grid changes.
# - Compare a flow-matching model with the DDPM model of the same network and training compute.
#
# **Time:** about 1 minute of computing in the `cpu` profile.
#
# Lesson 08's samplers all start from a model trained to predict the noise. **Flow matching** (Lipman et al.
# 2023; as "rectified flow", Liu et al. 2023) learns the ODE's velocity directly. SD3 and FLUX are trained with
# it.

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
import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

from diffedu import check, pretrained, report
from diffedu.env import get_device
from diffedu.oracles import GaussianDenoiser, GaussianVelocity, MixtureVelocity
from diffedu.pipelines import load_pipeline
from diffedu.profiles import get_profile
from diffedu.samplers import make_scheduler, sample
from diffedu.schedules import Schedule
from diffedu.viz import quality_plot, show_images

profile, device = get_profile(), get_device()
print(profile.note, f"Device: {device}.")

# %% [markdown]
# ## The straight path
#
# Flow matching's path from data to noise is a straight line,
#
# $$x_t = (1-t)\,x_0 + t\,\varepsilon,\qquad t\in[0,1],$$
#
# whose velocity is $dx_t/dt = \varepsilon - x_0$. This is SD3's convention, with data at $t = 0$; Lipman's and
# Liu's papers put data at $t = 1$ instead. A network $v_\theta(x_t, t)$ learns the velocity with the mean squared
# error $\lVert v_\theta(x_t, t) - (\varepsilon - x_0)\rVert^2$. Its best answer is the average velocity of the
# lines through $x_t$, $\mathbb E[\varepsilon - x_0 \mid x_t]$. That is the velocity field of an ODE that carries
# noise at $t = 1$ to data at $t = 0$, and sampling solves it, from one down to zero.
#
# How to draw $t$ is a choice. Uniform is the simplest, and the one you write here. SD3 compared several ways and
# trained with a logit-normal $t$, which puts more weight on the middle times.
#
# ### Exercise 9.1: the flow-matching loss
#
# Write `fm_loss(model, x0)`: one $t$ per image, uniform in $[0, 1]$ (`torch.rand`), Gaussian noise, $x_t$ on the
# line, and the mean squared error between `model(x_t, t)` and $\varepsilon - x_0$.


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
# ### Exercise 9.2: sampling the flow
#
# Write `fm_sample(velocity, x1, steps)`: Euler's method on $dx/dt = v(x, t)$, from $t = 1$ (the noise `x1`) to
# $t = 0$, in `steps` equal steps. Each step is $x + (t_\text{next} - t)\,v(x, t)$. The check drives it with the
# exact velocity of Gaussian data (`GaussianVelocity`).


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
# ## The same ODE, another clock
#
# Divide the line by $1 - t$: $x_t/(1-t) = x_0 + \frac{t}{1-t}\,\varepsilon$. That is lesson 08's $\tilde x$, at
# $\sigma = t/(1-t)$. So the flow-matching path is the probability-flow ODE of lesson 08, in other variables. Work
# it through, and **Euler's step on the flow is DDIM's step** on the $\sigma$'s of its time grid, with
# $x = (1-t)\,\tilde x$ and $\hat\varepsilon = x_t + (1-t)\,\hat v$.
#
# What flow matching changes is twofold. The network learns the velocity rather than the noise, which weighs the
# times differently in the loss. And a sampler walks another time grid: uniform in $t$ is $\sigma = t/(1-t)$,
# crowded at the clean end. One Euler step of each, from the same points, with the exact velocity and noise of the
# same Gaussian data:

# %%
linear = Schedule.linear()
exact = GaussianDenoiser(linear, mean=0.2, std=0.3)  # the exact noise predictor of N(0.2, 0.3²) data
velocity = GaussianVelocity(mean=0.2, std=0.3)  # the exact velocity of the same data
x_T = torch.randn(2000, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
t, t_next = 0.8, 0.5
x_t = (1 - t) * 0.2 + (0.6 * x_T[:8])  # any points will do
flow_step = x_t + (t_next - t) * velocity(x_t, t)
sigma, sigma_next = t / (1 - t), t_next / (1 - t_next)
eps = x_t + (1 - t) * velocity(x_t, t)  # the noise the velocity implies: v = eps - x0 and x_t = (1 - t) x0 + t eps
ddim_step = (1 - t_next) * (x_t / (1 - t) + (sigma_next - sigma) * eps)  # Euler in x~ and sigma, back to x
print(f"Euler on the flow vs DDIM's step on sigma = t / (1 - t): largest gap {(flow_step - ddim_step).abs().max():.1e}")
assert torch.allclose(flow_step, ddim_step, atol=1e-12)

# %% [markdown]
# So the two samplers differ in where they ask the model. Here are both grids at ten steps, as noise levels
# $\sigma$. The flow's first point is pure noise ($\sigma = \infty$) and both end at $\sigma = 0$, which a log scale
# cannot show; the points between are drawn.

# %%
flow_t = torch.linspace(1, 0, 11, dtype=torch.float64)[1:-1]
alpha_bar = linear.alpha_bar[make_scheduler("ddim", linear, 10).timesteps]
fig, ax = plt.subplots(figsize=(6.5, 1.8))
ax.plot(flow_t / (1 - flow_t), [1] * len(flow_t), "o", color="C8")
ax.plot(((1 - alpha_bar) / alpha_bar).sqrt(), [0] * len(alpha_bar), "s", color="C0")
ax.set(xscale="log", xlabel="noise level sigma (log scale)", ylim=(-0.5, 1.5), title="ten steps: where each asks")
ax.set_yticks([0, 1], ["DDPM model, DDIM", "flow model, Euler"])
plt.show()

# %% [markdown]
# The DDPM model's ten timesteps spend three calls at noise levels above twenty, where the image is still all
# noise. The flow's uniform grid spends none there, and more where the picture forms.
#
# ## Straight lines, bent paths
#
# Each training pair's path is a straight line. The ODE the network learns is not: its velocity is the *average*
# over every line through a point, and where lines from different data cross, the average turns. In two
# dimensions, with data in three small clusters (`MixtureVelocity` is its exact velocity):

# %%
centres = torch.tensor([[-1.0, 0.5], [1.0, 0.5], [0.0, -1.0]], dtype=torch.float64)
mixture = MixtureVelocity(centres, std=0.1)
generator = torch.Generator().manual_seed(0)
noise_2d = torch.randn(12, 2, dtype=torch.float64, generator=generator)
data_2d = centres[torch.randint(0, 3, (12,), generator=generator)] + 0.1 * torch.randn(
    12, 2, dtype=torch.float64, generator=generator
)
ts = torch.linspace(1, 0, 201, dtype=torch.float64)
path = [noise_2d]
for t, t_next in zip(ts[:-1], ts[1:]):  # 200 Euler steps: close to the exact ODE
    path.append(path[-1] + (t_next - t) * mixture(path[-1], t.item()))
path = torch.stack(path)
one_step = noise_2d - mixture(noise_2d, 1.0)  # a single Euler step, from t = 1 to 0
fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), sharex=True, sharey=True)
for start, end in zip(noise_2d, data_2d):
    axes[0].plot([start[0], end[0]], [start[1], end[1]], color="C0", lw=0.8)
axes[1].plot(path[..., 0], path[..., 1], color="C8", lw=0.8)
axes[1].plot(*one_step.T, "x", color="C3", ms=8, label="one Euler step from each")
for ax, title in zip(axes, ("training pairs: straight, crossing", "the learned ODE: bent, never crossing")):
    ax.plot(*noise_2d.T, ".", color="k", ms=4)
    ax.plot(*centres.T, "o", mfc="none", color="k", ms=14)
    ax.set(title=title, aspect="equal")
axes[1].legend(fontsize=8, loc="lower right")
plt.show()
mean = centres.mean(0)
print(
    f"one Euler step lands every point at ({one_step[:, 0].mean():.2f}, {one_step[:, 1].mean():.2f}), at most "
    f"{(one_step - mean).abs().max():.0e} from the data's mean ({mean[0]:.2f}, {mean[1]:.2f})"
)

# %% [markdown]
# At $t = 1$ every cluster is equally likely, so the velocity points from each noise to the mean of the data, and a
# single Euler step lands on it: one call gives the mean image, whatever the noise. The straight lines are the
# training targets; the bent paths are what a sampler must follow, which is why few steps still cost accuracy.
#
# Back to the grids: at few steps the difference between the two samplers is the grid's. From the same noise,
# here is the error of your Euler on the flow's uniform grid, against its exact solution. Beside it, DDIM on the
# DDPM model's timesteps. Both are driven by the exact model of the same data, so only the sampler differs.

# %%
print(f"{'steps':>5} | {'flow matching, Euler':>20} | {'DDPM model, DDIM':>16}   (mean error; the data's std: 0.3)")
for steps in (5, 10, 20, 50):
    flow = fm_sample(velocity, x_T, steps)  # the flow's noise at t = 1 is N(0, I), as the DDPM model's x_T
    flow_error = (flow - velocity.flow(x_T, 1.0, 0.0)).abs().mean().item()
    ddim_error = (
        (
            sample(exact, make_scheduler("ddim", linear, steps, clip_x0=False), x_T, progress=False)
            - exact.flow(x_T, linear.T - 1, -1)
        )
        .abs()
        .mean()
        .item()
    )
    print(f"{steps:>5} | {flow_error:>20.4f} | {ddim_error:>16.4f}")
    assert flow_error < ddim_error  # the same Euler method, on a grid that suits this data better

# %% [markdown]
# Both are Euler's method, of first order: the error halves as the steps double. From the same noise, the flow's
# uniform grid lands closer to its exact solution than DDIM on the DDPM timesteps. That is the grid's doing, on
# data whose model is exact. A trained model adds its own errors, as lesson 08 showed for the second-order
# samplers.
#
# ## fm-cifar10: flow matching on the course's UNet
#
# `fm-cifar10` is `ddpm-cifar10`'s UNet trained by flow matching, with `ddpm-cifar10`'s recipe: the same steps,
# batch, learning rate and EMA, so the same training compute. Its loss is `diffedu.training.flow_loss`, the one
# you wrote in Exercise 9.1, and its card says where and how long it trained. Its time input is $t$ in
# $[0, 1]$, so your `fm_sample` samples it as it sampled the Gaussian's velocity. The same number of calls each,
# from the same noise:

# %%
fm, ddpm = load_pipeline("fm-cifar10", device), load_pipeline("ddpm-cifar10", device)
noise = fm.noise(8, torch.Generator().manual_seed(0))
calls = 10
with torch.inference_mode():
    yours = fm_sample(fm.unet, noise, calls).clamp(-1, 1)
    ddim = ddpm.sample(8, calls, sampler="ddim", x_T=noise, progress=False)
show_images(
    torch.cat([yours.cpu(), ddim.cpu()]),
    nrow=8,
    title=f"top: fm-cifar10, your fm_sample, {calls} calls; bottom: ddpm-cifar10, DDIM {calls}, the same noise",
)
plt.show()

# %% [markdown]
# The quality table measures both for each sampler and number of calls: the flow model with Euler (your sampler)
# and Heun on its uniform grid, beside the DDPM model with DDIM and DPM-Solver++(2M).

# %%
quality = pretrained.quality_table()
shown = dict(spaces=("pixel", "flow"), samplers=("ddim", "dpmpp2m", "euler", "heun"), spacings=("uniform",))
quality_plot(quality, "calls", **shown)
plt.show()
display(Markdown(report.quality_table(quality, **shown)))

# %% [markdown]
# At equal model calls, from the same noise (the flow model's Heun takes its last step by Euler, as EDM's does):

# %%
display(
    Markdown(
        report.verdicts(
            quality,
            {
                "At five calls, the flow model against the DDPM model": [
                    ("flow Heun 3", "DPM-Solver++(2M) 5"),
                    ("flow Euler 5", "DDIM 5"),
                ],
                "At 10 to 50 calls, the flow model": [
                    ("flow Euler 10", "DDIM 10"),
                    ("flow Euler 20", "DDIM 20"),
                    ("flow Heun 10", "DDIM 20"),
                    ("flow Euler 50", "DDIM 50"),
                ],
            },
        )
    )
)

# %% [markdown]
# The Gaussian example predicted that the flow model's grid suits few steps: the first sentence says how far this
# model bears that out, and on which score.
#
# The same network, images and training compute, so any difference is the training objective, and the path and
# grid it brings. Look at the grid above: the flow model's samples may look flatter, with less contrast. That this
# is what KID sees more than FID is a hypothesis; the course has not measured contrast. SD3 trained with a
# logit-normal $t$ rather than a uniform one. How that would change these rows is an experiment the course has not
# run.
#
# ## Recap
#
# - Flow matching learns the velocity of a straight path from data to noise, and samples by solving its ODE.
# - It is the probability-flow ODE in another clock; Euler on the flow is DDIM's step on another grid.
# - What it changes is the training target and the time grid. On the same UNet and training compute, whether it
#   scores better is a question of the calls and of the score: measure before you choose.
#
# Next, lesson 10 tunes this flow model to jump to the end of its path in one or two calls.
#
# ## Questions to think about
#
# 1. Why is the best velocity an average, and not the straight line's own $\varepsilon - x_0$?
#
#    <details><summary>Answer</summary>
#
#    Many lines, from different images and noises, pass through the same $x_t$. The network sees only $x_t$, so
#    the squared error is smallest at the average of their velocities.
#
#    </details>
#
# 2. If flow matching's ODE is the same as the DDPM model's, why do the two models sample differently?
#
#    <details><summary>Answer</summary>
#
#    The ODE has the same form, but each model learned it with its own loss weighting and errors, and each
#    sampler walks its own time grid.
#
#    </details>
