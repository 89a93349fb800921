# %% [markdown]
# # 03 · DDIM: the same model, 10-100x fewer steps
#
# DDPM needs 1000 model calls per sample. **DDIM** (Song, Meng & Ermon 2021) samples from the *same trained
# model* in far fewer, and can do it deterministically. This lesson derives the idea in short, builds the
# sampler, and measures on your machine what fewer steps buy and cost.
#
# ## The idea in four lines
#
# 1. DDPM's loss only ever looks at the marginals q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).
#    It never uses the step-by-step chain itself.
# 2. So any other process with the same marginals is trained by the same loss. DDIM picks a family of
#    *non-Markovian* ones, indexed by a noise level sigma_t:
#    $$q_\sigma(x_{t-1}\mid x_t, x_0) = \mathcal N\Big(\sqrt{\bar\alpha_{t-1}}\,x_0 + \sqrt{1-\bar\alpha_{t-1}-\sigma_t^2}\;\tfrac{x_t-\sqrt{\bar\alpha_t}\,x_0}{\sqrt{1-\bar\alpha_t}},\ \sigma_t^2 I\Big)$$
#    (the fraction is just the noise eps in x_t). One can check that it keeps every marginal q(x_t | x_0).
# 3. Sampling plugs in the model's guesses of x_0 and eps. With sigma_t = 0 nothing random is left: each
#    noise x_T maps to one image, like solving an ODE. With sigma_t equal to DDPM's posterior standard
#    deviation (eta = 1), it *is* DDPM.
# 4. Nothing ties the formula to consecutive steps: only the marginals at the visited t's matter, so we can
#    visit a subsequence, say 50 of the 1000 t's, and jump between them.

# %%
import inspect
import time

import matplotlib.pyplot as plt
import torch

from diffedu.data import batches, load_cifar10, to_float
from diffedu.env import get_device, seed_everything
from diffedu.nets import GaussianDenoiser, count_parameters
from diffedu.pipelines import load_pipeline
from diffedu.profiles import get_profile
from diffedu.samplers import (DDIMScheduler, DDPMScheduler, ddim_invert, ddim_sample, ddim_timesteps, sample,
                              sample_trajectory, slerp)
from diffedu.schedules import Schedule
from diffedu.viz import show_images
from diffedu.widgets import trajectory_widget

profile, device = get_profile(), get_device()
print(profile.note, f"Device: {device}.")
schedule = Schedule.linear()

# %% [markdown]
# ## The sampler
#
# `DDIMScheduler.step` is eq. 12 of the paper. `eta` scales sigma between 0 (deterministic) and 1 (DDPM's
# amount of noise).

# %%
print(inspect.getsource(DDIMScheduler.step))
print(inspect.getsource(DDIMScheduler.sigma))

# %% [markdown]
# It has the interface of diffusers' schedulers, the library you will likely meet next: choose the number of
# steps, then call `step` once per timestep. Which timesteps? **Uniform** spacing spreads them evenly;
# **quadratic** spacing (the DDIM paper's choice for CIFAR-10) puts more of them near t = 0, where fine detail
# is decided. Both start at T - 1 = 999 and end at 0.

# %%
# NBVAL_CHECK_OUTPUT
for spacing in ("uniform", "quadratic"):
    print(f"{spacing:>9}, 10 steps:", ddim_timesteps(1000, 10, spacing))

# %% [markdown]
# ## Check it with the exact denoiser first
#
# As in lesson 02, data drawn from N(0.3, 0.5²) has an exact noise predictor, so any error below is the
# sampler's own. Two facts show up:
# - with eta = 1 over all 1000 steps, the per-step sigma equals DDPM's posterior standard deviation;
# - with eta = 0 and few steps, the spread comes out a little too *small*. Each big jump averages over what it
#   skips; the shortfall vanishes as steps grow (and, for this data, quadratic spacing shrinks it faster).

# %%
exact = GaussianDenoiser(schedule, mean=0.3, std=0.5)
full = DDIMScheduler(schedule, eta=1.0).set_timesteps(1000)
sigma_gap = max(abs(full.sigma(t) - schedule.posterior_variance[t].sqrt()).item() for t in range(1000))
print(f"eta = 1, 1000 steps: largest gap between DDIM's sigma and DDPM's posterior std: {sigma_gap:.1e}")
assert sigma_gap < 1e-10

x_T = torch.randn(2000, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
print(f"{'steps':>5} | {'uniform std':>11} | {'quadratic std':>13}   (want mean 0.3, std 0.5)")
for steps in (10, 20, 50, 100):
    u, q = (ddim_sample(exact, schedule, x_T, steps, spacing=s, clip_x0=False, progress=False) for s in ("uniform", "quadratic"))
    print(f"{steps:>5} | {u.std():>11.3f} | {q.std():>13.3f}   means {u.mean():.3f}, {q.mean():.3f}")
    assert abs(u.mean() - 0.3) < 0.02 and abs(q.mean() - 0.3) < 0.02
assert abs(q.std() - 0.5) < 0.015  # 100 quadratic steps: a 1.3% bias, plus sampling noise

# %% [markdown]
# ## A trained model
#
# In the cpu profile we use the model that ships with `diffedu` (lesson 02 shows its card). Otherwise we use
# lesson 02's model if you ran it in this profile (it saved `runs/02_ddpm_<profile>/model`), or train the same
# model here the same way. The pipeline reads the noise schedule the model learned from its checkpoint.

# %%
def train_as_in_lesson_02(path):
    seed_everything(0)
    recipe = profile.recipe("ddpm")
    trainer = recipe.trainer(device)
    trainer.fit(batches(load_cifar10().images[: recipe.n_data], recipe.batch_size, device=device), recipe.steps).save(path)


which = profile.lesson_checkpoint("ddpm-cifar10", "02_ddpm", train_as_in_lesson_02)
pipe = load_pipeline(which, device)
model, schedule = pipe.unet, pipe.schedule  # the trained noise predictor, and the schedule it learned
print(f"{which}: a UNet with {count_parameters(model) / 1e6:.2f}M parameters, {schedule}")

# %% [markdown]
# ## The same noise through DDPM and DDIM
#
# Every sampler below starts from the *same* x_T. DDPM adds fresh noise at each of its 1000 steps, so its
# images differ from DDIM's in detail; the DDIM rows, all deterministic, drift only a little from each other as
# the step count falls. We time every run on this machine.

# %%
seed_everything(1)
n = profile.n_samples
x_T = torch.randn(n, 3, 32, 32, device=device)
runs = {}  # name -> (steps, seconds, images)


def timed(name, scheduler):
    start = time.perf_counter()
    images = sample(model, scheduler, x_T, generator=torch.Generator().manual_seed(2))
    runs[name] = (len(scheduler.timesteps), time.perf_counter() - start, images)


timed("DDPM", DDPMScheduler(schedule))
for steps in profile.ddim_steps:
    timed(f"DDIM {steps}", DDIMScheduler(schedule, eta=0.0).set_timesteps(steps))

fig, axes = plt.subplots(len(runs), 1, figsize=(0.6 * min(n, 8) + 1, 0.7 * len(runs) + 0.3))
for ax, (name, (steps, seconds, images)) in zip(axes, runs.items()):
    show_images(images[:8], nrow=8, ax=ax)
    ax.set_title(f"{name}: {steps} steps, {seconds:.1f} s", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Steps against time
#
# Each step is one model call, so time falls in proportion to the steps. How much do we lose? Deterministic
# DDIM is an ODE solver: as its steps grow it converges to one answer per x_T. We measure quality here as the
# distance to that answer (DDIM with many steps), averaged over pixels. (Lesson 06 measures FID.)

# %%
reference_steps = max(profile.ddim_steps) * 4
reference = ddim_sample(model, schedule, x_T, steps=reference_steps)
ddpm_seconds = runs["DDPM"][1]
print(f"{n} images on {device}. Reference for the distance: DDIM with {reference_steps} steps.\n")
print("| sampler | steps | seconds | ms per step | speed-up vs DDPM | distance to reference |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
rows = []
for name, (steps, seconds, images) in runs.items():
    distance = (images - reference).abs().mean().item()
    rows.append((name, steps, seconds, distance))
    print(f"| {name} | {steps} | {seconds:.2f} | {1000 * seconds / steps:.1f} | {ddpm_seconds / seconds:.1f}x | {distance:.3f} |")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
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
# ## eta: how much noise to add back
#
# eta = 0 is deterministic; eta = 1 adds DDPM's amount of fresh noise at every step. With few steps, fresh
# noise has little time to be cleaned up, so samples get noisier; DDIM's paper found eta = 0 best below
# about 100 steps.

# %%
steps = profile.ddim_steps[1]
etas = [0.0, 0.5, 1.0]
fig, axes = plt.subplots(len(etas), 1, figsize=(0.6 * min(n, 8) + 1, 0.7 * len(etas) + 0.3))
for ax, eta in zip(axes, etas):
    images = ddim_sample(model, schedule, x_T, steps, eta=eta, generator=torch.Generator().manual_seed(3))
    show_images(images[:8], nrow=8, ax=ax)
    ax.set_title(f"eta = {eta}, {steps} steps", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Inversion: from an image back to its noise
#
# Because eta = 0 is deterministic, we can run it backwards: from a real image x_0 up to an x_T that DDIM
# maps back to (nearly) that image. It is the same update with t and t_prev swapped.

# %%
inversion_steps = profile.ddim_steps[0]
real = to_float(load_cifar10(train=False).images[:2]).to(device)
z = ddim_invert(model, schedule, real, steps=inversion_steps)
back = ddim_sample(model, schedule, z, inversion_steps, clip_x0=False)
error = (back - real).abs().mean().item()
print(f"{inversion_steps} steps: inverted noise has std {z.std():.2f} (pure noise: 1); "
      f"the round trip misses the image by {error:.3f} on average (pixel range 2)")
show_images(torch.cat([real, z.clamp(-2, 2) / 2, back]), nrow=2, title="image, its noise, and back")
plt.show()

# %% [markdown]
# ## Interpolating between two noises
#
# Walk from one image's noise to the other's and sample each point. Use **slerp**: Gaussian noise in 3,072
# dimensions lives near a sphere of radius sqrt(3072) ≈ 55, and a straight line between two such points cuts
# through the inside, where the model has never seen noise of such a small norm.

# %%
alphas = torch.linspace(0, 1, 8)
path = torch.cat([slerp(z[:1], z[1:], a) for a in alphas])
line = torch.cat([(1 - a) * z[:1] + a * z[1:] for a in alphas])
print("norm along the slerp path:", [round(v) for v in path.flatten(1).norm(dim=1).tolist()])
print("norm along the straight line:", [round(v) for v in line.flatten(1).norm(dim=1).tolist()])
show_images(ddim_sample(model, schedule, path, inversion_steps, clip_x0=False), nrow=8, title="DDIM along the slerp path")
plt.show()

# %% [markdown]
# ## The trajectory, in far fewer steps
#
# The same slider as in lesson 02, on a 50-step DDIM run: every step is a big jump, and the predicted x_0
# settles quickly.

# %%
trajectory = sample_trajectory(model, DDIMScheduler(schedule).set_timesteps(min(50, profile.ddim_steps[0] * 5)), x_T, frames=20)
trajectory_widget(trajectory, n=8)

# %% [markdown]
# ## Summary
#
# - DDIM reuses the DDPM model as it is; only the sampler changes.
# - eta = 0 makes sampling deterministic and invertible, and lets it skip steps: 10-100x fewer model calls.
# - The cost: with very few steps, samples lose detail and drift from the converged answer.
# - Next, lessons 04-05 cut the cost of *each* step, by diffusing in a small latent space.
