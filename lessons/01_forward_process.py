# %% [markdown]
# # 01 · The forward process: destroying images with noise
#
# A diffusion model learns to *undo* a fixed process that turns an image into noise in T = 1000 small steps.
# At each step t we shrink the image a little and add a little Gaussian noise, of variance beta_t:
#
# $$x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t, \qquad \varepsilon_t \sim \mathcal N(0, I)$$
#
# The sequence beta_1 ... beta_T is the **noise schedule**. This lesson plots two schedules, derives the
# shortcut that jumps from x_0 to any x_t in one go, checks it against the step-by-step chain, and lets you
# slide t to watch images dissolve.

# %%
import matplotlib.pyplot as plt
import torch

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
# **Linear** (DDPM, Ho et al. 2020): beta rises from 1e-4 to 0.02. **Cosine** (Nichol & Dhariwal 2021):
# chosen so that the *remaining signal* alpha_bar_t = prod (1 - beta_s) follows a cos² curve.
# From the betas, `Schedule` precomputes every table the later lessons need.

# %%
linear, cosine = Schedule.linear(), Schedule.cosine()
print(linear, cosine)
for s in (linear, cosine):
    print(f"{s.name:>6}: beta_1 = {s.betas[0]:.2e}, beta_T = {s.betas[-1]:.3f}, alpha_bar_T = {s.alpha_bar[-1]:.2e}")

# %% [markdown]
# alpha_t = 1 - beta_t, and **alpha_bar_t** is their product: the fraction of the original signal's variance
# left at step t. The **signal-to-noise ratio** SNR_t = alpha_bar_t / (1 - alpha_bar_t) says how visible the
# image still is. The linear schedule destroys the image early and then spends hundreds of steps on what is
# already almost pure noise; the cosine schedule spreads the destruction more evenly.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
for s in (linear, cosine):
    axes[0].plot(s.betas, label=s.name)
    axes[1].plot(s.alpha_bar, label=s.name)
    axes[2].plot(s.snr.log10(), label=s.name)
axes[0].set(title="beta_t (noise added per step)", xlabel="t", yscale="log")
axes[1].set(title="alpha_bar_t (signal left)", xlabel="t")
axes[2].set(title="log10 SNR_t", xlabel="t")
for ax in axes:
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Jumping straight to step t
#
# Unrolling the chain, the noises of all steps add up to one Gaussian (sums of independent Gaussians are
# Gaussian, and their variances add). The result is a closed form:
#
# $$q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\,I\big)
# \quad\Longleftrightarrow\quad x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$$
#
# This is what makes training cheap: to make a training example at step t we never run t steps, we jump.
# `Schedule.q_sample` is exactly that line. Let us check it against the chain, on real images: run 300 single
# steps for many noise draws, and compare the mean and spread of every pixel with the closed form.

# %%
train = load_cifar10()
x0 = to_float(train.images[:1])  # one image: 3,072 pixels, each checked on its own
draws, t_end = 1000 if profile.name != "smoke" else 200, 300

chain = x0.repeat(draws, 1, 1, 1)  # the image, `draws` times, each copy noised independently
for t in range(t_end):
    chain = linear.alphas[t].sqrt().float() * chain + linear.betas[t].sqrt().float() * torch.randn_like(chain)

ab = linear.alpha_bar[t_end - 1].float()
mean_error = (chain.mean(0) - ab.sqrt() * x0[0]).abs().max().item()
std_error = (chain.std(0) - (1 - ab).sqrt()).abs().max().item()
print(f"after {t_end} steps: alpha_bar = {ab:.4f}")
print(f"largest gap over 3,072 pixels, chain vs closed form: mean {mean_error:.3f}, std {std_error:.3f} "
      f"(one pixel's estimate is good to about {1 / draws ** 0.5:.3f})")
assert mean_error < 5 / draws**0.5 and std_error < 5 / draws**0.5

# %% [markdown]
# ## What the model will see
#
# The same 8 images at increasing t, under both schedules. Under the linear schedule they are gone by about
# t = 500; under the cosine schedule some shape survives much longer.

# %%
images = to_float(train.images[:8])
noise = torch.randn_like(images)
ts = [0, 50, 100, 200, 350, 500, 750, 999]
for s in (linear, cosine):
    rows = torch.cat([s.q_sample(images[i:i + 1].expand(len(ts), -1, -1, -1), torch.tensor(ts), noise[i:i + 1]) for i in range(4)])
    show_images(rows, nrow=len(ts), title=f"{s.name} schedule, t = {ts}")
    plt.show()

# %% [markdown]
# ## Slide t yourself
#
# The slider moves t from 0 to 999 with one fixed noise draw, so you see the signal fade rather than the
# noise flicker. (In a static view of this notebook, the widget shows nothing: run it in JupyterLab or Colab.)

# %%
noising_widget(images, linear)

# %% [markdown]
# ## What the model must learn
#
# Noising is easy and exact. Lesson 02 trains a network to go the other way: given x_t and t, predict the
# noise eps that was added. With that prediction we can estimate x_0 (`Schedule.predict_x0` inverts the
# closed form above) and take a step back towards the image.

# %%
t = torch.tensor([600])
x_t = linear.q_sample(images, t, noise)
x0_back = linear.predict_x0(x_t, t, noise)  # with the *true* noise, the inversion is exact
print("largest error recovering x_0 from x_t and the true noise:", (x0_back - images).abs().max().item())
assert torch.allclose(x0_back, images, atol=1e-4)
