# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · DDPM: learning to remove noise
#
# **What you will do here**
#
# - Take apart the UNet, the network that predicts the noise.
# - Derive the training loss from the likelihood, write it, and train a small model with it.
# - Write the posterior that the sampler draws from, its step and its loop.
# - Check your sampler with a model known to be exact, then sample a trained model.
# - Watch an image form as the noise goes.
#
# **Time:** about 2 minutes of computing in the `cpu` profile.
#
# Lesson 01 made $x_t$ from $x_0$ in one jump. A **DDPM** (Ho et al. 2020) trains a network
# $\varepsilon_\theta(x_t, t)$ to predict the noise in $x_t$. It then generates images by starting from pure
# noise and removing a little predicted noise, once per step of the forward process.

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
from functools import partial

import matplotlib.pyplot as plt
import torch

from diffedu import check
from diffedu.data import batches, load_cifar10
from diffedu.env import get_device, seed_everything, shown
from diffedu.nets import Attention, ResBlock, UNet, UNetConfig, count_parameters, timestep_embedding
from diffedu.oracles import GaussianDenoiser
from diffedu.pipelines import Diffusion, load_pipeline
from diffedu.profiles import get_profile
from diffedu.samplers import Snapshots
from diffedu.schedules import Schedule
from diffedu.viz import LiveLoss, show_images
from diffedu.widgets import trajectory_widget

profile, device = get_profile(), get_device()
recipe = profile.recipe("ddpm")  # the size of the net this lesson trains, and of its training run
print(profile.note, f"Device: {device}.")
seed_everything(0)
schedule = Schedule.linear()

# %% [markdown]
# ## The network: a UNet that knows what time it is
#
# The network gets a noisy image $x_t$ and the step $t$, and must output an image-shaped guess of the noise.
# Its parts come one at a time.
#
# **A time embedding.** The step $t$ is a single integer, and the network needs it as a vector it can mix into
# every layer. Sinusoids at geometrically spaced frequencies, as for positions in a Transformer, give every step
# a distinct vector, and nearby steps similar vectors.

# %%
emb = timestep_embedding(torch.arange(1000), 64)
plt.figure(figsize=(8, 2.6))
plt.imshow(emb.T, aspect="auto", cmap="RdBu")
plt.xlabel("t"), plt.ylabel("feature"), plt.title("sinusoidal embedding of t (64 features)")
plt.colorbar()
plt.show()

# %% [markdown]
# **Residual blocks.** Each has two small convolutions with GroupNorm and SiLU. Between them, a linear map of
# the time embedding is *added* to every pixel, so each block knows how noisy its input is. The block's input
# is added back at the end (a residual connection), which keeps deep nets trainable.
#
# **Self-attention** at low resolution: every position looks at every other, so distant parts of the image can
# agree (a horse's head and its legs).

# %%
block, attention = ResBlock(32, 64, t_dim=128), Attention(64)
h = torch.randn(2, 32, 16, 16)
t_emb = torch.randn(2, 128)
print("ResBlock: ", tuple(h.shape), "->", tuple(block(h, t_emb).shape))
print("Attention:", tuple(block(h, t_emb).shape), "->", tuple(attention(block(h, t_emb)).shape))

# %% [markdown]
# **The U shape.** Blocks at full resolution, then downsampling to coarser grids with more channels, a middle
# with attention, and back up. Every level's output is passed across (skip connections) to the matching level
# on the way up, so fine detail need not squeeze through the bottleneck. The last layer starts at zero, so an
# untrained net predicts "no noise".

# %%
config = UNetConfig(**recipe.model)
model = UNet(config)
print(config)
print(f"{count_parameters(model) / 1e6:.2f}M parameters (DDPM's CIFAR-10 model: 35.7M)")
x = torch.randn(4, 3, 32, 32)
out = model(x, torch.tensor([0, 10, 500, 999]))
assert out.shape == x.shape

# %% [markdown]
# ## The loss: from the likelihood to "predict the noise"
#
# A DDPM is a latent-variable model. The reverse chain
# $p_\theta(x_{t-1} \mid x_t) = \mathcal N(\mu_\theta(x_t, t), \sigma_t^2 I)$, started from pure noise $x_T$,
# defines $p_\theta(x_0)$. Training maximises a lower bound on $\log p_\theta(x_0)$, the ELBO (Ho et al. eq. 5,
# in their notation, where $t$ runs from one to $T$):
#
# $$-\log p_\theta(x_0) \le \mathbb{E}_{q(x_{1:T}|x_0)}\Big[\underbrace{D_{KL}(q(x_T|x_0)\,\|\,p(x_T))}_{L_T}
#   + \sum_{t>1} \underbrace{D_{KL}(q(x_{t-1}|x_t,x_0)\,\|\,p_\theta(x_{t-1}|x_t))}_{L_{t-1}}
#   \underbrace{-\log p_\theta(x_0|x_1)}_{L_0}\Big]$$
#
# - $L_T$ has no parameters: the schedule makes $q(x_T \mid x_0)$ nearly $\mathcal N(0, I)$.
# - Each $L_{t-1}$ compares two Gaussians. The true posterior $q(x_{t-1} \mid x_t, x_0)$ is Gaussian, with a mean
#   $\tilde\mu_t$ that mixes $x_0$ and $x_t$ (you write it below). With the reverse step's variance fixed, not
#   learned (Ho et al. eq. 8), the KL of two Gaussians is the squared distance of their means, up to a constant:
#   $L_{t-1} = \mathbb E\big[\lVert\tilde\mu_t(x_t, x_0) - \mu_\theta(x_t, t)\rVert^2 / (2\sigma_t^2)\big] + C$.
# - Write $x_0$ in terms of $x_t$ and the noise (lesson 01's jump, solved for $x_0$), and let the network predict
#   the noise: $\mu_\theta = \big(x_t - \beta_t\,\varepsilon_\theta(x_t, t)/\sqrt{1-\bar\alpha_t}\big)/\sqrt{\alpha_t}$.
#   Then, by eq. 12 of the paper,
#   $L_{t-1} = \mathbb E\big[\tfrac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)} \lVert\varepsilon - \varepsilon_\theta(x_t, t)\rVert^2\big] + C$.
# - Ho et al. drop the weight in front. This **simple loss** (eq. 14), a plain regression on the noise at a
#   uniformly drawn step, samples better.
#
# $$L_\text{simple} = \mathbb E_{t,\,x_0,\,\varepsilon}\Big[\big\|\varepsilon - \varepsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,\ t\big)\big\|^2\Big]$$
#
# ### Exercise 2.1: the training loss
#
# Write `eps_loss(model, x0, alpha_bar)` for a batch `x0`. Draw one step per image, uniformly in $0..T-1$
# (`torch.randint`, on `x0`'s device), and Gaussian noise shaped like `x0`. Make $x_t$ (your `q_sample` from
# lesson 01, written again here), call `model(x_t, t)` once, and return the mean squared error against the
# noise.


# %% nbgrader={"grade": false, "grade_id": "eps_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def eps_loss(model, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Ho et al.'s simple loss for one batch: || eps - model(x_t, t) ||^2, averaged."""
    ### BEGIN SOLUTION
    t = torch.randint(0, len(alpha_bar), (len(x0),), device=x0.device)
    noise = torch.randn_like(x0)
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    return ((model(x_t, t) - noise) ** 2).mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_eps_loss", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.eps_loss(eps_loss)

# %% [markdown]
# Guessing $\varepsilon = 0$ scores the variance of the noise, $1$, in expectation. So does our untrained net,
# whose last layer is zero. Training must push the loss below that.

# %%
train = load_cifar10()
images = train.images[: recipe.n_data]
x0 = next(batches(images, 64 if len(images) >= 64 else len(images), device=device))
alpha_bar = schedule.alpha_bar.float().to(device)  # the model works in float32
print(f"loss of the untrained net: {eps_loss(model.to(device), x0, alpha_bar).item():.3f}")

# %% [markdown]
# ## Training
#
# `Trainer` runs the loop: AdamW, gradient clipping, and an **exponential moving average** (EMA) of the
# weights. The EMA samples better than the raw weights, which jitter from batch to batch. A **recipe** names
# everything one training run needs: the kind of model, its size, the steps, the batch size and the learning
# rate. `recipe.trainer()` builds a fresh UNet and its Trainer, and we hand it **your** loss. The loss curve
# redraws as it trains.
#
# (`runs.train(recipe, path)` trains any recipe with diffedu's own loss in one call, saving and resuming
# included. It is what `python -m diffedu train` runs, and what lesson 03 calls when it needs this model.)

# %%
print(recipe)

# %%
seed_everything(0)
trainer = recipe.trainer(device, loss_fn=partial(eps_loss, alpha_bar=alpha_bar))
print(f"training {recipe.steps} steps, batch {recipe.batch_size}, on {len(images)} images")
trainer.fit(
    batches(images, recipe.batch_size, device=device),
    recipe.steps,
    log_every=max(1, recipe.steps // 30),
    callback=LiveLoss(),
)
print(f"{trainer.seconds:.0f} s, {trainer.seconds / trainer.step * 1000:.0f} ms per step")

# %%
first, last = sum(trainer.history[:5]) / 5, sum(trainer.history[-20:]) / len(trainer.history[-20:])
print(f"loss: {first:.3f} at the start -> {last:.3f} at the end")
assert all(loss == loss for loss in trainer.history)  # no NaN
if profile.name != "smoke":
    assert last < 0.5 * first, "the loss should at least halve"
saved = trainer.save(profile.lesson_run("02_ddpm"))
print(f"saved {shown(saved)}: lesson 03 samples from it in this profile")

# %% [markdown]
# ## Sampling, step 1: the posterior
#
# To go back from $x_t$ to $x_{t-1}$ we need $q(x_{t-1} \mid x_t, x_0)$: the forward process run backwards, knowing
# where it started. Bayes' rule on three Gaussians gives a Gaussian (Ho et al. eqs. 6-7):
#
# $$q(x_{t-1} \mid x_t, x_0) = \mathcal N\big(\tilde\mu_t,\ \tilde\beta_t I\big), \qquad
# \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t,
# \qquad \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t$$
#
# with $\bar\alpha_{-1} = 1$ for the step into the clean image, where $\tilde\beta$ is zero: $x_0$ is known.
#
# **Which variance?** The reverse step $p_\theta(x_{t-1} \mid x_t)$ needs a variance $\sigma_t^2$. Ho et al.
# tried two, with similar results. $\sigma_t^2 = \beta_t$ is optimal when $x_0$ is itself standard normal, and
# $\sigma_t^2 = \tilde\beta_t$, the posterior's, when $x_0$ is one fixed point. These two extremes bound the
# reverse process's entropy, for data of unit variance per coordinate. We use $\tilde\beta_t$, as diffusers'
# default ("fixed_small") does.
#
# ### Exercise 2.2: the posterior's tables
#
# Write `posterior(betas, alpha_bar)`: the coefficient of $x_0$, the coefficient of $x_t$, and the variance,
# each as a table over every step. Shift $\bar\alpha$ by one step for $\bar\alpha_{t-1}$, starting with one.


# %% nbgrader={"grade": false, "grade_id": "posterior", "locked": false, "schema_version": 3, "solution": true, "task": false}
def posterior(betas: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(coef_x0, coef_xt, variance) of q(x_{t-1} | x_t, x_0), for every t."""
    ### BEGIN SOLUTION
    alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    coef_x0 = alpha_bar_prev.sqrt() * betas / (1 - alpha_bar)
    coef_xt = (1 - betas).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
    variance = (1 - alpha_bar_prev) / (1 - alpha_bar) * betas
    return coef_x0, coef_xt, variance
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_posterior", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.posterior(posterior)

# %% [markdown]
# ## Sampling, step 2: one step back
#
# DDPM's sampler (Algorithm 2) starts from pure noise $x_T$. At each step it asks the model for the noise, and
# turns that into a guess of the clean image, $\hat x_0$ (lesson 01's last formula). It then draws $x_{t-1}$
# from the posterior with the guess plugged in: its mean plus its standard deviation times fresh noise.
#
# Algorithm 2 as printed writes that mean straight from $\varepsilon$, which is the same thing without the
# detour. The authors' code and diffusers take the detour to **clip** the guess to $[-1, 1]$, where pixels live:
# at large $t$ the guess is wild. We do as the code does.
#
# ### Exercise 2.3: the ancestral step
#
# Write `ddpm_step(eps, t, x_t, noise, alpha_bar, posterior)` for one whole-number `t`, the same for the whole
# batch. `noise` is the fresh standard normal draw, and `posterior` your three tables. The check also compares
# your step with Hugging Face diffusers' `DDPMScheduler.step` on the same inputs: the library you will likely use
# next.


# %% nbgrader={"grade": false, "grade_id": "ddpm_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def ddpm_step(
    eps: torch.Tensor, t: int, x_t: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, posterior: tuple
) -> torch.Tensor:
    """x_t -> x_{t-1}: Algorithm 2 of Ho et al., with x_0 clipped to [-1, 1]."""
    ### BEGIN SOLUTION
    coef_x0, coef_xt, variance = posterior
    ab = alpha_bar[t]
    x0 = ((x_t - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
    return coef_x0[t] * x0 + coef_xt[t] * x_t + variance[t].sqrt() * noise
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_ddpm_step", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.ddpm_step(ddpm_step)

# %% [markdown]
# ## Your sampler, all 1000 steps
#
# ### Exercise 2.4: the loop
#
# Algorithm 2 is a loop around your step. Start from $x_T$. For $t = T-1$ down to $0$, ask the model for the
# noise in `x` at `t`, draw fresh noise, and step to $x_{t-1}$. What the last step returns is the sample. Draw
# each step's noise from `generator`, as `torch.randn(x.shape, generator=generator, dtype=x.dtype)`, then move it
# to `x`'s device. The same seed then gives the same samples, which is how the check compares your loop with
# diffedu's sampler.


# %% nbgrader={"grade": false, "grade_id": "sample_ddpm", "locked": false, "schema_version": 3, "solution": true, "task": false}
@torch.inference_mode()
def sample_ddpm(
    model, x_T: torch.Tensor, alpha_bar: torch.Tensor, posterior: tuple, generator: torch.Generator | None = None
) -> torch.Tensor:
    """x_T -> a sample: your ddpm_step at t = T - 1, ..., 0, with fresh noise from `generator` at each."""
    ### BEGIN SOLUTION
    x = x_T
    for t in range(len(alpha_bar) - 1, -1, -1):
        eps = model(x, torch.full((len(x),), t, device=x.device))
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = ddpm_step(eps, t, x, noise, alpha_bar, posterior)
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_sample_ddpm", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.sample_ddpm(sample_ddpm)

# %% [markdown]
# First, a test with a model we know is exact. If every pixel is drawn from $\mathcal N(m, s^2)$, the best
# possible noise prediction has a closed form (`GaussianDenoiser`). Even so, ancestral sampling is not exact. Each
# step adds noise of a fixed variance, which leaves out how unsure $x_0$ still is given $x_t$. So the samples come
# out a little narrower than $s$. Each step is linear here, so the exact spread follows step by step
# (`ancestral_moments`), and a correct sampler must match it. We pick data well inside $[-1, 1]$, so that the
# clip does not matter.

# %%
exact_schedule = Schedule.linear()
exact = GaussianDenoiser(exact_schedule, mean=0.2, std=0.3)
exact_tables = posterior(exact_schedule.betas, exact_schedule.alpha_bar)
x_T = torch.randn(4000, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
result = sample_ddpm(exact, x_T, exact_schedule.alpha_bar, exact_tables, torch.Generator().manual_seed(1))
mean, std = exact.ancestral_moments()
print(f"your sampler with the exact denoiser: mean {result.mean():.3f}, std {result.std():.4f}")
print(f"the exact recursion:                  mean {mean:.3f}, std {std:.4f} (the data's: 0.2 and 0.3)")
assert abs(result.mean() - mean) < 0.01 and abs(result.std() - std) < 0.005

# %% [markdown]
# Which fixed variance? The course's DDPM uses the posterior's, $\tilde\beta_t$, which would be exact if $x_0$ were
# one known point. Ho et al. also tried $\beta_t$, exact if the data were $\mathcal N(0, 1)$, and their CIFAR-10
# result used it. The same recursion gives each one's spread on our Gaussian data:

# %%
no_noise_at_0 = torch.cat([torch.zeros(1, dtype=torch.float64), exact_schedule.betas[1:]])  # the last step adds none
for name, variance in (
    ("beta-tilde_t (the posterior's)", None),
    ("beta_t (Ho et al.'s CIFAR-10 choice)", no_noise_at_0),
):
    print(f"variance {name:<36}: std {exact.ancestral_moments(variance)[1]:.4f} (the data's: 0.3)")

# %% [markdown]
# The two bracket the data's spread, one a little narrow, one a little wide. DDIM's Table 1 finds $\tilde\beta_t$
# the weaker of the two on CIFAR-10 at 1000 steps. `diffedu` has both: `sampler="ddpm"` uses $\tilde\beta_t$, and
# `sampler="ddpm_large"` uses $\beta_t$ (diffusers' name for it is `variance_type="fixed_large"`). Lesson 03's
# quality table measures both on the shipped model.

# %% [markdown]
# Now with a trained model, using its EMA weights. A couple of minutes of CPU training cannot make a good image
# model. So in the `cpu` profile we sample from a model that ships with `diffedu`: the *same* architecture,
# trained by the same `Trainer` on a GPU. Its model card, below, says how. In the other profiles we sample from
# the model trained above.
#
# A **pipeline** holds a trained model with the noise schedule it learned. `load_pipeline` reads both from a
# checkpoint, and `Diffusion` puts them together for the model we just trained.

# %%
from IPython.display import Markdown, display

from diffedu import pretrained

if profile.pretrained:
    pipe = load_pipeline("ddpm-cifar10", device)
    display(Markdown(pretrained.card("ddpm-cifar10", history=False)))
else:
    pipe = Diffusion(trainer.ema.model, schedule)
    print(f"sampling from the model trained above ({trainer.step} steps)")
print(pipe.schedule)

# %%
seed_everything(1)
x_T = pipe.noise(profile.n_samples)
tables = tuple(p.float().to(device) for p in posterior(pipe.schedule.betas, pipe.schedule.alpha_bar))
recorder = Snapshots(pipe.unet, pipe.schedule.alpha_bar, frames=20)  # the model, keeping 20 snapshots on the way
start = time.perf_counter()
samples = sample_ddpm(recorder, x_T, pipe.schedule.alpha_bar.float().to(device), tables)
seconds = time.perf_counter() - start
print(f"{profile.n_samples} images in {seconds:.1f} s: 1000 model calls, {seconds:.1f} ms each")
trajectory = recorder.trajectory(samples)
assert samples.shape == (profile.n_samples, 3, 32, 32) and samples.abs().max() <= 1
show_images(samples, nrow=8, title="DDPM samples, 1000 steps of your sampler")
plt.show()

# %% [markdown]
# And the model you trained a moment ago, for comparison, with lesson 03's faster sampler. After a minute or two
# of CPU training, expect coloured blobs with the right overall statistics. The gap to the samples above is GPU
# training time (`DIFFEDU_PROFILE=gpu`, or `python -m diffedu train --profile gpu`).

# %%
show_images(
    Diffusion(trainer.ema.model, schedule).sample(steps=50, x_T=x_T),
    nrow=8,
    title=f"your model after {trainer.step} steps ({profile.name} profile)",
)
plt.show()

# %% [markdown]
# ## Watching the noise go
#
# Each column below is one sample. The top half shows $x_t$ as your sampler went from pure noise to the image;
# the `Snapshots` wrapper kept them as your loop called the model. The bottom half shows the model's guess of
# $x_0$ at that moment. The guess settles early on the coarse layout and colours, and the last few hundred
# steps add detail.

# %%
picks = [0, 5, 10, 15, 19]
strip = torch.cat([trajectory.x_t[picks, 0], trajectory.x0[picks, 0]])
show_images(
    strip, nrow=len(picks), title=f"top: x_t, bottom: predicted x_0, at t = {[trajectory.timesteps[i] for i in picks]}"
)
plt.show()

# %% [markdown]
# The slider shows every snapshot, for eight samples at once. The frames were rendered once when the sampler
# ran, so moving it recomputes nothing.

# %%
trajectory_widget(trajectory, n=8)

# %% [markdown]
# ## Recap
#
# - The model predicts noise. Its loss is a plain squared error at random steps: the ELBO with its weights
#   dropped.
# - Sampling undoes the noise one posterior draw at a time, with one model call per step.
# - Those thousand calls are what makes DDPM slow.
#
# ## Questions to think about
#
# 1. Why does an untrained net with a zero last layer score a loss of one?
#
#    <details><summary>Answer</summary>
#
#    It predicts zero noise, so the loss is the mean square of standard normal noise, whose expectation is its
#    variance: one.
#
#    </details>
#
# 2. The sampler adds fresh noise at every step. Why not just subtract the predicted noise all at once?
#
#    <details><summary>Answer</summary>
#
#    At large $t$ the prediction of $x_0$ is a blurry average of all images that could have made $x_t$. One
#    jump would return that average. Small steps with fresh noise let later, better predictions fix the detail.
#    Lesson 03 shows a deterministic sampler that still takes several steps.
#
#    </details>
#
# Next, lesson 03 samples from the *same* trained model in far fewer steps.
