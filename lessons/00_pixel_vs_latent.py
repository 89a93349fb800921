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
# This course builds diffusion models from scratch and measures, on **your** machine, two claims:
#
# 1. **Latent diffusion is cheaper.** Diffusing in a compressed latent space (CIFAR-10's 32x32x3 = 3,072
#    numbers squeezed to 8x8x4 = 256) costs far less than diffusing the pixels. The aim is comparable quality;
#    the shipped models do not reach it yet (lesson 06 measures the gap: KID x 1000 of 67 for the latent model
#    against 33 for the pixel model, at 500 samples; 102 before lesson 04's adversarial decoder).
# 2. **DDIM is faster.** A DDIM sampler needs 10-100x fewer steps than DDPM's 1000, from the same trained model.
#
# | lesson | what you build |
# | --- | --- |
# | 00 | this page: the arithmetic of compression, and the data |
# | 01 | the forward process: alpha-bar, the one-jump q_sample, and the line that proves it |
# | 02 | DDPM: the training loss, the posterior, the ancestral step; a model trained with your loss |
# | 03 | DDIM: sigma, the step, the timesteps, and inversion; the same model sampled in 10-100 steps |
# | 04 | a VAE 32x32x3 -> 8x8x4: the reparameterisation, the KL term, the latent scale factor |
# | 05 | latent diffusion: the latent sampling loop |
# | 06 | the comparison, measured: time, memory, and FID/KID, whose formulas you write |
# | 07 | conditioning: a class-conditional latent model, classifier-free guidance (you write it), SDEdit |
#
# In each lesson you write the functions it is about; a check after each exercise tells you what is right or
# which mistake it found. Everything else lives in the small package `diffedu`, which the lessons import.
# One switch, `DIFFEDU_PROFILE` (`smoke`, `cpu` or `gpu`), sizes what each lesson does.

# %%
# Set-up: on Colab, install the course (once per session); anywhere else this does nothing.
import importlib.util, os, subprocess, sys

if "google.colab" in sys.modules and importlib.util.find_spec("diffedu") is None:
    course = os.environ.get("DIFFEDU_INSTALL", "diffedu @ git+https://github.com/diffedu/diffedu")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", course], check=True)  # keeps Colab's PyTorch
    importlib.invalidate_caches()  # so that `import diffedu` finds what was just installed

# %%
import matplotlib.pyplot as plt
import torch

import diffedu
from diffedu.data import load_cifar10
from diffedu.profiles import get_profile
from diffedu.viz import show_images

profile = get_profile()
print(f"diffedu {diffedu.__version__}, torch {torch.__version__}, profile: {profile.name}")
print(profile.note)

# %% [markdown]
# ## How many numbers does a diffusion model push around?
#
# A diffusion model runs a big network once per sampling step, over the whole image. Its cost grows with
# the number of values in what it denoises. An autoencoder with downsampling factor *f* turns an
# H x W x 3 image into an (H/f) x (W/f) x c latent. Stable Diffusion uses f = 8 and c = 4; on CIFAR-10's
# tiny 32x32 images we use f = 4, c = 4.

# %% tags=["nbval-check-output"]
def values(height, width, channels):
    return height * width * channels


pixels, latents = values(32, 32, 3), values(32 // 4, 32 // 4, 4)
print(f"CIFAR-10:         32x32x3 = {pixels:>7,}  ->  8x8x4   = {latents:>6,}  ({pixels / latents:.0f}x fewer)")
pixels, latents = values(512, 512, 3), values(512 // 8, 512 // 8, 4)
print(f"Stable Diffusion: 512x512x3 = {pixels:,}  ->  64x64x4 = {latents:,}  ({pixels / latents:.0f}x fewer)")
assert values(32, 32, 3) // values(8, 8, 4) == 12

# %% [markdown]
# The saving grows with the image. A factor f shrinks each side f times, so the count falls f² times, and
# 3 channels becoming 4 takes a little back: the ratio is 3f²/4 at every size. Self-attention costs grow
# with the *square* of the number of positions, so for attention layers the saving is squared again.

# %% tags=["nbval-check-output"]
sizes = [32, 64, 128, 256, 512, 1024]
print(f"{'image':>11} | {'pixel values':>12} | {'f=4 latent':>10} | {'ratio':>5} | {'f=8 latent':>10} | {'ratio':>5} | "
      "attention positions, f=8")
for s in sizes:
    p, l4, l8 = values(s, s, 3), values(s // 4, s // 4, 4), values(s // 8, s // 8, 4)
    print(f"{s:>4}x{s:<4}x3 | {p:>12,} | {l4:>10,} | {p / l4:>4.0f}x | {l8:>10,} | {p / l8:>4.0f}x | "
          f"{s * s:,} -> {(s // 8) ** 2:,}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(sizes, [values(s, s, 3) for s in sizes], "o-", label="pixels (H x W x 3)")
ax.plot(sizes, [values(s // 4, s // 4, 4) for s in sizes], "o-", label="latent, f = 4 (H/4 x W/4 x 4)")
ax.plot(sizes, [values(s // 8, s // 8, 4) for s in sizes], "o-", label="latent, f = 8 (H/8 x W/8 x 4)")
ax.set(xscale="log", yscale="log", xlabel="image side (pixels)", ylabel="values the diffusion model denoises",
       title="What the diffusion model must process, per image")
ax.set_xticks(sizes, [str(s) for s in sizes])
ax.legend()
plt.show()

# %% [markdown]
# ## The data: CIFAR-10
#
# 60,000 photos of 32x32 pixels in 10 classes (50,000 to train on, 10,000 to test). `load_cifar10` downloads
# it into `data/` the first time (170 MB), or reads a copy you already have if `DIFFEDU_DATA` points at it.
# It returns the whole set as **one uint8 tensor**: 50,000 x 3 x 32 x 32 bytes is only 150 MB, so we keep it
# in memory and make batches from it directly, with no per-image loading pipeline.

# %%
train = load_cifar10()
print(train)
print("images:", tuple(train.images.shape), train.images.dtype, "  labels:", tuple(train.labels.shape))
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
# Diffusion models work on floats in [-1, 1]: `to_float` maps 0 to -1 and 255 to 1.

# %%
from diffedu.data import to_float

x = to_float(train.images[:256])
print(f"range [{x.min():.0f}, {x.max():.0f}], mean {x.mean():.3f}, std {x.std():.3f}")
assert x.min() >= -1 and x.max() <= 1

# %% [markdown]
# ## The plan
#
# Next, lesson 01 destroys these images with noise in a controlled way: the *forward process*. Lesson 02
# trains a network to undo it one step at a time, and lesson 03 makes that undoing 10-100x faster.
