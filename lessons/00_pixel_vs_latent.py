# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Pixel space vs latent space
#
# **What you will do here**
#
# - Count how many numbers a diffusion model must denoise, in pixels and in a compressed latent space.
# - See why that saving grows with the size of the image.
# - Load CIFAR-10, the data set of the whole course, and look at it.
# - Meet the course's plan and its notation.
#
# **Time:** about 1 minute of computing in the `cpu` profile.
#
# This course builds diffusion models from scratch. It also tests two claims about them, with numbers measured
# on your own machine:
#
# 1. **Latent diffusion is cheaper.** Diffusing in a small latent space costs far less than diffusing pixels,
#    and the aim is comparable quality.
# 2. **DDIM is faster.** A DDIM sampler needs 10 to 50 times fewer steps than DDPM (its paper's range), from the
#    same trained model.
#
# The course ships small trained models and a table of their measured quality. Here is what that table says
# about the two claims today. Lessons 03 and 06 explain every part of it, so do not worry yet about what FID and
# KID are.

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

import diffedu
from diffedu import pretrained, report
from diffedu.data import load_cifar10
from diffedu.profiles import get_profile
from diffedu.viz import show_images

profile = get_profile()
print(f"diffedu {diffedu.__version__}, torch {torch.__version__}, profile: {profile.name}")
print(profile.note)
quality = pretrained.quality_table()
display(Markdown(report.headline(quality)))
display(Markdown(report.compare(quality, ("latent DDIM 50", "DDIM 50"), ("DDIM 20", "DDPM 1000"))))

# %% [markdown]
# Each verdict above rests on the paired differences under it: read a claim only as far as they go. Now to the
# arithmetic behind the first claim.
#
# ## How many numbers does a diffusion model push around?
#
# A diffusion model runs a large network once per sampling step, over the whole image. Its cost grows with the
# number of values it denoises. An autoencoder with downsampling factor $f$ turns an $H \times W \times 3$ image
# into an $(H/f) \times (W/f) \times c$ latent. Stable Diffusion uses $f = 8$ and $c = 4$. CIFAR-10's images are
# tiny, so this course uses $f = 4$ and $c = 4$.


# %% tags=["nbval-check-output"]
def values(height, width, channels):
    return height * width * channels


pixels, latents = values(32, 32, 3), values(32 // 4, 32 // 4, 4)
print(f"CIFAR-10:         32x32x3 = {pixels:>7,}  ->  8x8x4   = {latents:>6,}  ({pixels / latents:.0f}x fewer)")
pixels, latents = values(512, 512, 3), values(512 // 8, 512 // 8, 4)
print(f"Stable Diffusion: 512x512x3 = {pixels:,}  ->  64x64x4 = {latents:,}  ({pixels / latents:.0f}x fewer)")
assert values(32, 32, 3) // values(8, 8, 4) == 12

# %% [markdown]
# ## The saving grows with the image
#
# A factor $f$ shrinks each side $f$ times, so the count of values falls $f^2$ times. Three channels becoming
# four takes a little back: the ratio is $3f^2/4$ at every size. Self-attention compares every position with
# every other, so its cost grows with the *square* of the positions. The positions fall $f^2$ times, so for
# attention layers the saving is $f^4$.

# %% tags=["nbval-check-output"]
sizes = [32, 64, 128, 256, 512, 1024]
print(
    f"{'image':>11} | {'pixel values':>12} | {'f=4 latent':>10} | {'ratio':>5} | {'f=8 latent':>10} | {'ratio':>5} | "
    "attention positions, f=8"
)
for s in sizes:
    p, l4, l8 = values(s, s, 3), values(s // 4, s // 4, 4), values(s // 8, s // 8, 4)
    print(
        f"{s:>4}x{s:<4}x3 | {p:>12,} | {l4:>10,} | {p / l4:>4.0f}x | {l8:>10,} | {p / l8:>4.0f}x | "
        f"{s * s:,} -> {(s // 8) ** 2:,}"
    )

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(sizes, [values(s, s, 3) for s in sizes], "o-", label="pixels (H x W x 3)")
ax.plot(sizes, [values(s // 4, s // 4, 4) for s in sizes], "o-", label="latent, f = 4 (H/4 x W/4 x 4)")
ax.plot(sizes, [values(s // 8, s // 8, 4) for s in sizes], "o-", label="latent, f = 8 (H/8 x W/8 x 4)")
ax.set(
    xscale="log",
    yscale="log",
    xlabel="image side (pixels)",
    ylabel="values the diffusion model denoises",
    title="What the diffusion model must process, per image",
)
ax.set_xticks(sizes, [str(s) for s in sizes])
ax.legend()
plt.show()

# %% [markdown]
# ## The data: CIFAR-10
#
# CIFAR-10 holds sixty thousand small photos in ten classes: fifty thousand to train on, ten thousand to test.
# `load_cifar10` downloads it into `data/` the first time, or reads a copy you already have if `DIFFEDU_DATA`
# points at it. It returns the whole set as **one uint8 tensor**. That is small enough to keep in memory, so
# batches come straight from it, with no per-image loading pipeline. The shipped models were trained on a sample
# of the training set, the one these course machines hold; the models' cards say how many images. Below, the
# count is of the copy on your machine.

# %%
train = load_cifar10()
print(train)
print("images:", tuple(train.images.shape), train.images.dtype, "  labels:", tuple(train.labels.shape))
print(f"in memory: {train.images.numel() / 2**20:.0f} MiB")
assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.uint8
assert sorted(set(train.labels.tolist())) == list(range(10))

# %%
# Eight examples of each class, one class per row.
per_class = torch.cat([train.images[train.labels == c][:8] for c in range(10)])
ax = show_images(per_class, nrow=8, title="CIFAR-10: one class per row", scale=0.55)
for c, name in enumerate(train.classes):
    ax.text(-2, 33 * c + 17, name, ha="right", va="center", fontsize=9)
plt.show()

# %% [markdown]
# Diffusion models work on floats in $[-1, 1]$: `to_float` maps a byte of 0 to $-1$ and 255 to $1$.

# %%
from diffedu.data import to_float

x = to_float(train.images[:256])
print(f"range [{x.min():.0f}, {x.max():.0f}], mean {x.mean():.3f}, std {x.std():.3f}")
assert x.min() >= -1 and x.max() <= 1

# %% [markdown]
# ## The plan
#
# Each lesson adds one idea to the last. From lesson 01 on, you write the functions a lesson is about. A check
# after each exercise tells you what is right, or which mistake it found.
#
# | lesson | what you build |
# | --- | --- |
# | lesson 00 | this page: the arithmetic of compression, and the data |
# | lesson 01 | the forward process: how images are noised, in one jump |
# | lesson 02 | DDPM: the training loss and the sampler that removes noise step by step |
# | lesson 03 | DDIM: the same model, sampled in far fewer steps |
# | lesson 04 | an autoencoder that squeezes images into latents, and a decoder that keeps them sharp |
# | lesson 05 | latent diffusion: the lesson 02 model, trained on latents |
# | lesson 06 | the comparison, measured: time, FID and KID, whose formulas you write |
# | lesson 07 | conditioning: a class-conditional model, classifier-free guidance, image editing |
# | lesson 08 | the ODE view: the score, and samplers of higher order |
# | lesson 09 | flow matching: a straight path from noise to data |
# | lesson 10 | consistency models: an image in one or two model calls |
# | lesson 11 | Stable Diffusion in miniature: captions, a text encoder trained as CLIP is, cross-attention, prompts |
#
# One switch, `DIFFEDU_PROFILE`, sizes what each lesson does: `smoke` only checks that the code runs, `cpu` suits
# a laptop, and `gpu` trains bigger models.
#
# ## Notation
#
# Every lesson uses the same symbols. Come back to this table when one is unclear.
#
# | symbol | in code | meaning | first used |
# | --- | --- | --- | --- |
# | $t$ | `t` | the step of the forward process, counted from $0$ to $T-1$, with $T = 1000$ | lesson 01 |
# | $x_0$, $x_t$, $\varepsilon$ | `x0`, `x_t`, `eps` | the clean image; the image after step $t$; Gaussian noise | lesson 01 |
# | $\beta_t$, $\alpha_t = 1 - \beta_t$ | `betas`, `alphas` | the variance of the noise added at step $t$, and what is kept | lesson 01 |
# | $\bar\alpha_t$ | `alpha_bar` | the signal left after steps $0..t$; $\bar\alpha_{-1} = 1$ is the clean image | lesson 01 |
# | $\tilde\beta_t$ | `posterior_variance` | the variance of the posterior $q(x_{t-1} \mid x_t, x_0)$ | lesson 02 |
# | $\sigma_t$ | `variance[t].sqrt()` | the standard deviation of DDPM's reverse step: $\sqrt{\tilde\beta_t}$ here, or $\sqrt{\beta_t}$ | lesson 02 |
# | $\sigma_t(\eta)$ | `ddim_sigma` | the standard deviation of the noise a DDIM step adds; $\eta = 0$ adds none | lesson 03 |
# | $\mu_\phi(x)$, $\log\sigma^2_\phi(x)$ | `mean`, `logvar` | the encoder's mean of a latent, and the log of its variance | lesson 04 |
# | $w$ | `guidance` | the classifier-free guidance scale; $w = 1$ is the plain conditional model | lesson 07 |
# | $\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}$ | `sigma` | the ODE's noise level, with $\tilde x = x/\sqrt{\bar\alpha} = x_0 + \sigma\varepsilon$ | lesson 08 |
# | $\lambda = \log\big(\sqrt{\bar\alpha}/\sqrt{1-\bar\alpha}\big)$ | `lam` | half the log signal-to-noise ratio: DPM-Solver's time | lesson 08 |
# | $t \in [0, 1]$ (flow) | `t` | flow matching's time: $x_t = (1-t)\,x_0 + t\,\varepsilon$, data at $0$ | lesson 09 |
# | $f(x_t, t)$ | `consistency_fn` | the consistency function: the end at $t = 0$ of the ODE path through $x_t$ | lesson 10 |
#
# ## Recap
#
# - A diffusion model's cost per step grows with the values it denoises.
# - An autoencoder with factor $f$ and four channels cuts them by $3f^2/4$, and attention gains far more.
# - CIFAR-10 is small enough to keep in memory as one tensor of bytes.
#
# ## Questions to think about
#
# 1. The latent model's UNet is wider than the pixel model's. Why can it still be faster per step?
#
#    <details><summary>Answer</summary>
#
#    Its cost grows with the number of positions it works on. Twelve times fewer values leave room for more
#    channels per position, and still less work in all.
#
#    </details>
#
# 2. Why might latent diffusion gain little on CIFAR-10's tiny images, but a lot at high resolution?
#
#    <details><summary>Answer</summary>
#
#    The encoder and decoder are a fixed cost per image, and at small sizes the pixel model is already cheap.
#    At high resolution the saving grows as $f^2$ in values and far more in attention.
#
#    </details>
#
# Next, lesson 01 destroys these images with noise in a controlled way: the *forward process*.
