# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The forward process: destroying images with noise
#
# **What you will do here**
#
# - Plot two noise schedules, and the signal each leaves at every step.
# - Prove that any noisy image can be made in one jump from the clean one, and write that jump.
# - Check your jump against the slow chain of small steps.
# - Slide through the steps and watch images dissolve.
#
# **Time:** about 1 minute of computing in the `cpu` profile.
#
# A diffusion model learns to *undo* a fixed process. That process turns an image into noise in $T = 1000$
# small steps. At each step $t$ it shrinks the image a little and adds a little Gaussian noise, of variance
# $\beta_t$:
#
# $$x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t, \qquad \varepsilon_t \sim \mathcal N(0, I)$$
#
# The sequence of betas is the **noise schedule**.
#
# **Counting steps.** Code counts from zero, so here $t$ runs over $0, 1, \dots, T-1$, and $x_t$ is the image
# after step $t$. Ho et al. count from one, so their step $t$ is our $t-1$. We keep their name $x_0$ for the
# clean image (`x0` in code). In every formula of these lessons $x_0$ is the clean image, never "$x_t$ at
# $t = 0$". Where a formula needs the image before step $0$, it is the clean image, with $\bar\alpha_{-1} = 1$.
#
# **Exercises.** In a cell marked *exercise*, you write the body of a function. The cell after it checks it in
# a second, and tells you what is right or which mistake it found. If you skip one, the rest of the lesson uses
# diffedu's version of that function, and says so.

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

from diffedu import check
from diffedu.data import load_cifar10, to_float
from diffedu.env import seed_everything
from diffedu.profiles import get_profile
from diffedu.schedules import Schedule
from diffedu.viz import show_images
from diffedu.widgets import noising_widget

profile = get_profile()
print(profile.note)
seed_everything(0)

# %% [markdown]
# ## Two schedules
#
# **Linear** (DDPM, Ho et al. 2020): $\beta_t$ rises evenly from $10^{-4}$ to $0.02$. **Cosine** (Nichol &
# Dhariwal 2021): chosen so that the *remaining signal* follows a $\cos^2$ curve. From the betas, `Schedule`
# precomputes every table the later lessons need.

# %%
linear, cosine = Schedule.linear(), Schedule.cosine()
print(linear, cosine)
for s in (linear, cosine):
    print(f"{s.name:>6}: beta_0 = {s.betas[0]:.2e}, beta_999 = {s.betas[-1]:.3f}")

# %% [markdown]
# ### Exercise 1.1: how much signal is left
#
# Write $\alpha_t = 1 - \beta_t$. After steps $0..t$ the image has been multiplied by $\sqrt{\alpha_s}$ at every
# step, so the fraction of its variance left is
#
# $$\bar\alpha_t = \prod_{s=0}^{t} \alpha_s = \prod_{s=0}^{t} (1 - \beta_s)$$
#
# Write `alpha_bar(betas)`: all T values at once, for a 1-d tensor of betas. (`torch.cumprod` helps.)


# %% nbgrader={"grade": false, "grade_id": "alpha_bar", "locked": false, "schema_version": 3, "solution": true, "task": false}
def alpha_bar(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), for every t."""
    ### BEGIN SOLUTION
    return torch.cumprod(1 - betas, dim=0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_alpha_bar", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.alpha_bar(alpha_bar)

# %% [markdown]
# The **signal-to-noise ratio** $\mathrm{SNR}_t = \bar\alpha_t / (1 - \bar\alpha_t)$ says how visible the image
# still is. The linear schedule destroys the image early, then spends hundreds of steps on what is almost pure
# noise. The cosine schedule spreads the destruction more evenly.

# %%
fig, axes = plt.subplots(1, 3, figsize=(9.5, 2.9))
for s in (linear, cosine):
    ab = alpha_bar(s.betas)
    axes[0].plot(s.betas, label=s.name)
    axes[1].plot(ab, label=s.name)
    axes[2].plot((ab / (1 - ab)).log10(), label=s.name)
axes[0].set(title="beta_t (noise added per step)", xlabel="t", yscale="log")
axes[1].set(title="alpha_bar_t (signal left)", xlabel="t")
axes[2].set(title="log10 SNR_t", xlabel="t")
for ax in axes:
    ax.legend()
plt.tight_layout()
plt.show()
print(f"alpha_bar at t = 999: linear {alpha_bar(linear.betas)[-1]:.2e}, cosine {alpha_bar(cosine.betas)[-1]:.2e}")

# %% [markdown]
# ## Jumping straight to step t
#
# Claim: for every t,
#
# $$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon, \qquad \varepsilon \sim \mathcal N(0, I),
# \qquad\text{that is}\qquad q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\,I\big)$$
#
# **Proof, by induction.** At $t = 0$ it is the first step itself, taken from the clean image, since
# $\bar\alpha_0 = \alpha_0$. Suppose it holds at $t-1$, with noise $\varepsilon'$. One more step gives
#
# $$x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t
#       = \sqrt{\alpha_t \bar\alpha_{t-1}}\,x_0 + \Big[\sqrt{\alpha_t (1-\bar\alpha_{t-1})}\,\varepsilon' + \sqrt{\beta_t}\,\varepsilon_t\Big]$$
#
# The signal's factor is $\sqrt{\bar\alpha_t}$, as claimed. The bracket is a sum of two independent Gaussians,
# so it is one Gaussian. For the claim to hold, its variance must be $1 - \bar\alpha_t$.
#
# ### Exercise 1.2: the line that makes the induction work
#
# Write `next_noise_variance(alpha_t, alpha_bar_prev)`: the variance of the bracket, from $\alpha_t$ and
# $\bar\alpha_{t-1}$. Variances of independent noises add, and a factor $c$ on a noise multiplies its variance
# by $c^2$. The check tests that it equals $1 - \alpha_t \bar\alpha_{t-1} = 1 - \bar\alpha_t$.


# %% nbgrader={"grade": false, "grade_id": "next_noise_variance", "locked": false, "schema_version": 3, "solution": true, "task": false}
def next_noise_variance(alpha_t: torch.Tensor, alpha_bar_prev: torch.Tensor) -> torch.Tensor:
    """Var[ sqrt(alpha_t (1 - alpha_bar_prev)) eps' + sqrt(1 - alpha_t) eps ] for independent N(0, 1) eps', eps."""
    ### BEGIN SOLUTION
    return alpha_t * (1 - alpha_bar_prev) + (1 - alpha_t)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_next_noise_variance", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.next_noise_variance(next_noise_variance)

# %% [markdown]
# This is what makes training cheap: to make a training example at step t we never run t steps, we jump.
#
# ### Exercise 1.3: x_t in one jump
#
# Write `q_sample(x0, t, noise, alpha_bar)`. Its inputs: a batch of clean images `x0` of shape `(B, C, H, W)`,
# one timestep per image in `t` (a tensor of `B` whole numbers), the noise (shaped like `x0`) and the
# $\bar\alpha$ table. Each image gets its own `alpha_bar[t]`: reshape those `B` numbers to `(B, 1, 1, 1)`, so
# that each scales a whole image.


# %% nbgrader={"grade": false, "grade_id": "q_sample", "locked": false, "schema_version": 3, "solution": true, "task": false}
def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, with t per image."""
    ### BEGIN SOLUTION
    ab = alpha_bar[t].view(-1, *([1] * (x0.dim() - 1)))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_q_sample", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.q_sample(q_sample)

# %% [markdown]
# ## Your shortcut against the chain
#
# Take a real image and run hundreds of single steps, for many noise draws. Then compare the mean and spread of
# every pixel with what your `q_sample` says. With zero noise it gives the mean; on a zero image with unit
# noise, it gives the standard deviation.

# %%
train = load_cifar10()
x0 = to_float(train.images[:1]).double()  # one image: 3,072 pixels, each checked on its own
draws, t_end = 1000 if profile.name != "smoke" else 200, 300

chain = x0.repeat(draws, 1, 1, 1)  # the image, `draws` times, each copy noised independently
for t in range(t_end):
    chain = linear.alphas[t].sqrt() * chain + linear.betas[t].sqrt() * torch.randn_like(chain)

t = torch.tensor([t_end - 1])
mean = q_sample(x0, t, torch.zeros_like(x0), linear.alpha_bar)[0]
std = q_sample(torch.zeros_like(x0), t, torch.ones_like(x0), linear.alpha_bar)[0]
mean_error, std_error = (chain.mean(0) - mean).abs().max().item(), (chain.std(0) - std).abs().max().item()
print(f"after {t_end} steps: alpha_bar = {linear.alpha_bar[t_end - 1]:.4f}")
print(
    f"largest gap over 3,072 pixels, chain vs closed form: mean {mean_error:.3f}, std {std_error:.3f} "
    f"(one pixel's estimate is good to about {1 / draws**0.5:.3f})"
)
assert mean_error < 5 / draws**0.5 and std_error < 5 / draws**0.5

# %% [markdown]
# ## What the model will see
#
# The same images at growing $t$, under both schedules, made with your `q_sample`. Under the linear schedule
# they are gone halfway through. Under the cosine schedule some shape survives much longer.

# %%
images = to_float(train.images[:8])
noise = torch.randn_like(images)
ts = torch.tensor([0, 50, 100, 200, 350, 500, 750, 999])
for s in (linear, cosine):
    rows = torch.cat(
        [
            q_sample(
                images[i : i + 1].expand(len(ts), -1, -1, -1),
                ts,
                noise[i : i + 1].expand(len(ts), -1, -1, -1),
                s.alpha_bar.float(),
            )
            for i in range(4)
        ]
    )
    show_images(rows, nrow=len(ts), title=f"{s.name} schedule, t = {ts.tolist()}")
    plt.show()

# %% [markdown]
# ## Slide t yourself
#
# The slider moves $t$ through every step with one fixed noise draw, so you see the signal fade rather than the
# noise flicker. In a static view of this notebook the widget shows nothing: run it in JupyterLab or Colab.

# %%
noising_widget(images, linear)

# %% [markdown]
# ## What the model must learn
#
# Noising is easy and exact. Lesson 02 trains a network to go the other way: given $x_t$ and $t$, predict the
# noise $\varepsilon$ that was added. With that prediction we can estimate the clean image by solving the jump
# for it, and take a step back towards it (`Schedule.predict_x0`):
#
# $$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon}{\sqrt{\bar\alpha_t}}$$

# %%
t = torch.tensor([600])
x_t = linear.q_sample(images, t, noise)
x0_back = linear.predict_x0(x_t, t, noise)  # with the *true* noise, the inversion is exact
print("largest error recovering x_0 from x_t and the true noise:", (x0_back - images).abs().max().item())
assert torch.allclose(x0_back, images, atol=1e-4)

# %% [markdown]
# ## Recap
#
# - The forward process adds a little Gaussian noise at each of its steps, by a fixed schedule of betas.
# - Because Gaussians add up to Gaussians, $x_t$ can be made from $x_0$ in one jump, with $\bar\alpha_t$.
# - Training examples at any step therefore cost one line, not $t$ steps.
#
# ## Questions to think about
#
# 1. Why does the cosine schedule suit small images better than the linear one?
#
#    <details><summary>Answer</summary>
#
#    The linear schedule leaves almost no signal for the last part of its steps, so a model trained on it spends
#    much of its effort on pure noise. The cosine schedule keeps a visible image for longer.
#
#    </details>
#
# 2. What would go wrong if the two noises in the induction were not independent?
#
#    <details><summary>Answer</summary>
#
#    Their variances would no longer simply add: a covariance term would appear, and $1 - \bar\alpha_t$ would
#    not be the variance of $x_t$ given $x_0$.
#
#    </details>
#
# Next, lesson 02 trains a network to predict the noise, and samples images with it.
