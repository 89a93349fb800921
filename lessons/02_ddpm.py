# %% [markdown]
# # 02 · DDPM: learning to remove noise
#
# Lesson 01 gave us a way to make x_t from x_0 in one jump. A **DDPM** (Ho et al. 2020) trains a network
# eps_theta(x_t, t) to predict the noise in x_t, and then generates images by starting from pure noise and
# removing a little predicted noise, 1000 times. This lesson builds each part, trains a model live and
# samples from it.

# %%
import inspect
import time

import matplotlib.pyplot as plt
import torch

from diffedu.data import batches, load_cifar10
from diffedu.env import get_device, seed_everything
from diffedu.nets import Attention, GaussianDenoiser, ResBlock, UNet, UNetConfig, count_parameters, timestep_embedding
from diffedu.pipelines import PixelDiffusion, load_pipeline
from diffedu.profiles import get_profile
from diffedu.samplers import DDPMScheduler, Scheduler, ddpm_sample
from diffedu.schedules import Schedule
from diffedu.training import eps_loss
from diffedu.viz import LiveLoss, plot_loss, show_images
from diffedu.widgets import trajectory_widget

profile, device = get_profile(), get_device()
recipe = profile.recipe("ddpm")  # the size of the net this lesson trains, and of its training run
print(profile.note, f"Device: {device}.")
seed_everything(0)
schedule = Schedule.linear()

# %% [markdown]
# ## The network: a UNet that knows what time it is
#
# The network gets a noisy image x_t and the step t, and must output an image-shaped guess of the noise.
# Its parts:
#
# **1. A time embedding.** t is a single integer; the network needs it as a vector it can mix into every
# layer. Sinusoids at geometrically spaced frequencies (as for positions in a Transformer) give every t a
# distinct vector, and nearby t's similar vectors.

# %%
emb = timestep_embedding(torch.arange(1000), 64)
plt.figure(figsize=(8, 2.6))
plt.imshow(emb.T, aspect="auto", cmap="RdBu")
plt.xlabel("t"), plt.ylabel("feature"), plt.title("sinusoidal embedding of t (64 features)")
plt.colorbar()
plt.show()

# %% [markdown]
# **2. Residual blocks.** Two 3x3 convolutions with GroupNorm and SiLU; between them, a linear map of the
# time embedding is *added* to every pixel, so each block knows how noisy its input is. The block's input is
# added back at the end (a residual connection), which keeps deep nets trainable.
#
# **3. Self-attention** at low resolution: every position looks at every other, so distant parts of the
# image can agree (a horse's head and its legs).

# %%
block, attention = ResBlock(32, 64, t_dim=128), Attention(64)
h = torch.randn(2, 32, 16, 16)
t_emb = torch.randn(2, 128)
print("ResBlock: ", tuple(h.shape), "->", tuple(block(h, t_emb).shape))
print("Attention:", tuple(block(h, t_emb).shape), "->", tuple(attention(block(h, t_emb)).shape))

# %% [markdown]
# **4. The U shape.** Blocks at 32x32, then downsample to 16x16 and 8x8 with more channels, a middle with
# attention, and back up. Every level's output is passed across (skip connections) to the matching level on
# the way up, so fine detail need not squeeze through the bottleneck. The last layer starts at zero, so an
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
# ## The loss: predict the noise
#
# Take a clean image x_0, a random step t and noise eps; make x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
# in one jump (lesson 01); ask the model for eps. The loss is the mean squared error (Ho et al. eq. 14):

# %%
print(inspect.getsource(eps_loss))

# %% [markdown]
# Guessing eps = 0 scores exactly 1 (the variance of the noise), and so does our untrained net, whose last
# layer is zero. Training must push it below 1.

# %%
train = load_cifar10()
images = train.images[: recipe.n_data]
x0 = next(batches(images, 64 if len(images) >= 64 else len(images), device=device))
print(f"loss of the untrained net: {eps_loss(model.to(device), x0, schedule).item():.3f}")

# %% [markdown]
# ## First, check the sampler with a model we know is exact
#
# Sampling (below) is a loop that trusts the model. To test the loop alone, use data we know: if every pixel
# is drawn from N(m, s²), the best possible noise prediction has a closed form (see `GaussianDenoiser`). A
# correct sampler driven by it must return samples with mean m and standard deviation s.

# %%
exact = GaussianDenoiser(schedule, mean=0.3, std=0.5)
check = ddpm_sample(exact, schedule, torch.randn(2000, 1, 4, 4, dtype=torch.float64), clip_x0=False)
print(f"DDPM with the exact denoiser: mean {check.mean():.3f} (want 0.3), std {check.std():.3f} (want 0.5)")
assert abs(check.mean() - 0.3) < 0.02 and abs(check.std() - 0.5) < 0.02

# %% [markdown]
# ## Training
#
# `Trainer` runs the loop: AdamW, gradient clipping, and an **exponential moving average** (EMA) of the
# weights, which samples better than the raw weights that jitter from batch to batch. A **recipe** names
# everything one training run needs: the kind of model, its size, the steps, the batch size and the learning
# rate. This profile's recipe for the pixel UNet is the one `python -m diffedu train ddpm` uses; the shipped
# model below has a recipe too. `recipe.trainer()` builds a fresh UNet and its Trainer with the epsilon loss.
# The loss curve redraws as it trains.

# %%
print(recipe)

# %%
seed_everything(0)
trainer = recipe.trainer(device)
print(f"training {recipe.steps} steps, batch {recipe.batch_size}, on {len(images)} images")
trainer.fit(batches(images, recipe.batch_size, device=device), recipe.steps,
            log_every=max(1, recipe.steps // 30), callback=LiveLoss())
print(f"{trainer.seconds:.0f} s, {trainer.seconds / trainer.step * 1000:.0f} ms per step")

# %%
plot_loss(trainer.history, title=f"DDPM training loss, {profile.name} profile")
plt.show()
first, last = sum(trainer.history[:5]) / 5, sum(trainer.history[-20:]) / len(trainer.history[-20:])
print(f"loss: {first:.3f} at the start -> {last:.3f} at the end")
assert all(l == l for l in trainer.history)  # no NaN
if profile.name != "smoke":
    assert last < 0.5 * first, "the loss should at least halve"
trainer.save(profile.lesson_run("02_ddpm"))  # lesson 03 samples from it

# %% [markdown]
# ## Sampling: 1000 steps back from noise
#
# DDPM's sampler (Algorithm 2 of the paper) starts from x_T ~ N(0, I). At each t it asks the model for the
# noise, turns that into a guess of the clean image x_0, and draws x_{t-1} from the Gaussian
# q(x_{t-1} | x_t, x_0) with the guess plugged in: the *posterior* whose mean and variance lesson 01's
# `Schedule` already tabulates. Pixels live in [-1, 1], so the guess of x_0 is clipped to that range
# (`predict`, which every sampler shares), and the step draws from the posterior with it:

# %%
print(inspect.getsource(Scheduler.predict))
print(inspect.getsource(DDPMScheduler.step))

# %% [markdown]
# Sampling uses the EMA weights. A couple of minutes of CPU training cannot make a good image model, so in the
# cpu profile we sample from a model that ships with `diffedu`: the *same* architecture, trained by the same
# `Trainer` for 9,000 steps on a GPU (its model card below says exactly how). In the other profiles we sample
# from the model trained above.
#
# A **pipeline** holds a trained model with the noise schedule it learned: `load_pipeline` reads both from a
# checkpoint, and `PixelDiffusion` puts them together for the model we just trained.

# %%
from IPython.display import Markdown, display

from diffedu import pretrained

if profile.pretrained:
    pipe = load_pipeline("ddpm-cifar10", device)
    display(Markdown(pretrained.card("ddpm-cifar10")))
else:
    pipe = PixelDiffusion(trainer.ema.model, schedule)
    print(f"sampling from the model trained above ({trainer.step} steps)")
print(pipe.schedule)

# %% [markdown]
# `sample_trajectory` runs the loop and keeps snapshots of x_t and of the predicted x_0 along the way.

# %%
seed_everything(1)
x_T = pipe.noise(profile.n_samples)
start = time.perf_counter()
trajectory = pipe.sample_trajectory(sampler="ddpm", x_T=x_T, frames=20)
seconds = time.perf_counter() - start
print(f"{profile.n_samples} images in {seconds:.1f} s: 1000 model calls, {seconds:.1f} ms each")
samples = trajectory.images
assert samples.shape == (profile.n_samples, 3, 32, 32) and samples.abs().max() <= 1
show_images(samples, nrow=8, title="DDPM samples, 1000 steps")
plt.show()

# %% [markdown]
# And the model you trained a moment ago, for comparison (with lesson 03's faster sampler, 50 steps): after
# a minute or two of CPU training expect coloured blobs with the right overall statistics. The gap to the
# samples above is GPU training time (`DIFFEDU_PROFILE=gpu`, or `python -m diffedu train --profile gpu`).

# %%
show_images(PixelDiffusion(trainer.ema.model, schedule).sample(steps=50, x_T=x_T), nrow=8,
            title=f"your model after {trainer.step} steps ({profile.name} profile)")
plt.show()

# %% [markdown]
# ## Watching the noise go
#
# Each column below is one sample. The top half shows x_t as the sampler goes from t = 999 to t = 0; the
# bottom half the model's guess of x_0 at that moment. The guess settles early on the coarse layout and
# colours, and the last few hundred steps add detail.

# %%
picks = [0, 5, 10, 15, 19]
strip = torch.cat([trajectory.x_t[picks, 0], trajectory.x0[picks, 0]])
show_images(strip, nrow=len(picks), title=f"top: x_t, bottom: predicted x_0, at t = {[trajectory.timesteps[i] for i in picks]}")
plt.show()

# %% [markdown]
# The slider shows every snapshot, for 8 samples at once. The frames were rendered once when the sampler ran,
# so moving it recomputes nothing.

# %%
trajectory_widget(trajectory, n=8)

# %% [markdown]
# ## Summary
#
# - The model predicts noise; the loss is a plain MSE at random steps t.
# - Sampling undoes the noise one posterior draw at a time: 1000 model calls per image batch.
# - Those 1000 calls are what makes DDPM slow. Lesson 03 samples from the *same* trained model in 10-100 steps.
