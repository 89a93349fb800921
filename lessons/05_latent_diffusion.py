# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Latent diffusion
#
# **What you will do here**
#
# - Encode the data set into latents, once.
# - Train lesson 02's UNet on latents instead of pixels.
# - Write the latent sampling loop: DDIM in latent space, then one decoder call.
# - Find where the latent model loses detail, and what a step costs in each space.
# - Check whether the latent UNet learns from its data or memorises it.
#
# **Time:** about 1 minute of computing in the `cpu` profile.
#
# Everything from lessons 01 to 03 carries over unchanged: the same schedule, the same `UNet` class, the same
# loss, the same samplers. Only the data changes. Instead of images, the model learns lesson 04's **latents**,
# and the VAE's decoder turns sampled latents into images. This is the architecture of Stable Diffusion (Rombach
# et al. 2022), at CIFAR-10's scale.

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
import torch

from diffedu import check, pretrained, report, runs
from diffedu.data import batches, load_cifar10, to_float
from diffedu.env import get_device, seed_everything, shown
from diffedu.evaluation import denoising_gap
from diffedu.latent import cached_latents
from diffedu.measure import median_seconds
from diffedu.metrics import fine_detail
from diffedu.nets import count_parameters
from diffedu.pipelines import Diffusion, LatentDiffusion, load_pipeline, load_vae
from diffedu.profiles import get_profile
from diffedu.samplers import DDIMScheduler
from diffedu.viz import LiveLoss, show_images
from diffedu.widgets import trajectory_widget

profile, device = get_profile(), get_device()
recipe = profile.recipe("latent")
print(profile.note, f"Device: {device}.")
images = load_cifar10().images[: recipe.n_data]

# %% [markdown]
# ## The VAE
#
# In the `cpu` profile we use the VAE that ships with `diffedu`: `vae-cifar10-gan`, lesson 04's adversarial
# decoder on `vae-cifar10`'s encoder. Otherwise we use lesson 04's VAE if you ran it in this profile, or train the
# same one here.


# %%
def train_as_in_lesson_04(path):
    runs.train(profile.recipe("vae"), path, device=device)  # seeded; a finished VAE gets its scale factor measured


which = profile.lesson_checkpoint("vae-cifar10-gan", "04_vae", train_as_in_lesson_04)
vae = load_vae(which, device)
print(
    f"VAE {shown(which)}: {count_parameters(vae) / 1e6:.2f}M parameters, "
    f"latent scale factor {vae.config.scale_factor:.4f}"
)

# %% [markdown]
# ## Encode the data set once
#
# Training the latent model never needs the encoder again. We encode every image, and its mirror image for flip
# augmentation, once. The latents are kept on disk too, keyed by the VAE's weights and the data.

# %%
start = time.perf_counter()
latents = cached_latents(vae, images)  # scaled by the VAE's factor; kept in data/latents
print(
    f"{len(latents)} latents of shape {tuple(latents.shape[1:])} in {time.perf_counter() - start:.1f} s; "
    f"mean {latents.mean():.3f}, std {latents.std():.3f}"
)
assert latents.shape[1:] == (4, 8, 8) and len(latents) == 2 * len(images)

# %% [markdown]
# ## The UNet, on latents
#
# The same `UNet` class, built for the latents' channels and size. Each step is far cheaper than in pixel space,
# so we can afford more channels and still be faster.

# %%
seed_everything(0)
trainer = recipe.trainer(device)
print(recipe)
print(f"{count_parameters(trainer.model) / 1e6:.2f}M parameters")
trainer.fit(
    batches(latents, recipe.batch_size, flip=False, device=device),
    recipe.steps,
    log_every=max(1, recipe.steps // 30),
    callback=LiveLoss("latent diffusion loss"),
)
print(f"{trainer.seconds:.0f} s, {1000 * trainer.seconds / trainer.step:.0f} ms per step")
if profile.name != "smoke":
    assert sum(trainer.history[-20:]) / 20 < 0.7 * sum(trainer.history[:5]) / 5

# %% [markdown]
# ## Sampling: DDIM in latent space, then decode
#
# Sampling is lesson 03's loop on different data. Start from noise in the latents' shape, and step down through
# the timesteps with the latent UNet. Only at the end, turn the result into an image: undo the scale factor
# (lesson 04) and run the decoder once. Latents are not bounded like pixels, so the predicted $\hat x_0$ is not
# clipped: the scheduler below is made with `clip_x0=False`.
#
# ### Exercise 5.1: the latent sampling loop
#
# Write `sample_latents(unet, vae, scheduler, n, generator)`.
#
# - Draw $x_T$ with `torch.randn(n, C, H, W, generator=generator)` in the shape the UNet takes
#   (`unet.config.in_channels`, `unet.config.image_size`). Move it to the UNet's device,
#   `next(unet.parameters()).device`.
# - For each `t` in `scheduler.timesteps`, ask the UNet for the noise, `unet(x, t)`, and step with
#   `scheduler.step(eps, t, x).prev`. That is diffedu's DDIM step, the one you wrote in lesson 03.
# - Divide by `vae.config.scale_factor`, decode with `vae.decode`, and clamp to $[-1, 1]$.


# %% nbgrader={"grade": false, "grade_id": "sample_latents", "locked": false, "schema_version": 3, "solution": true, "task": false}
@torch.inference_mode()
def sample_latents(unet, vae, scheduler, n: int, generator: torch.Generator) -> torch.Tensor:
    """n images in [-1, 1]: DDIM in latent space, then one decoder call."""
    ### BEGIN SOLUTION
    cfg = unet.config
    x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=generator)
    x = x.to(next(unet.parameters()).device)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t), t, x).prev
    return vae.decode(x / vae.config.scale_factor).clamp(-1, 1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_sample_latents", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.sample_latents(sample_latents)

# %% [markdown]
# `LatentDiffusion` holds the three pieces (VAE, latent UNet, schedule) as one object, with the same loop inside
# (`pipeline.sample`). In the `cpu` profile the UNet is the shipped `ldm-cifar10`; its card says how it was
# trained. Elsewhere it is the one you just trained. The grid below is drawn by your `sample_latents`.

# %%
from IPython.display import Markdown, display

if profile.pretrained:
    pipeline = load_pipeline("ldm-cifar10", device)  # with the VAE and the schedule its checkpoint names
    display(Markdown(pretrained.card("ldm-cifar10", history=False)))
else:
    pipeline = LatentDiffusion(vae, trainer.ema.model, recipe.noise_schedule())
scheduler = DDIMScheduler(pipeline.schedule, clip_x0=False).set_timesteps(50)
samples = sample_latents(
    pipeline.unet, pipeline.vae, scheduler, profile.n_samples, torch.Generator().manual_seed(1)
).cpu()
assert samples.shape == (profile.n_samples, 3, 32, 32) and samples.abs().max() <= 1
show_images(samples, nrow=8, title=f"latent diffusion, DDIM 50 steps ({profile.name} profile)")
plt.show()

# %% [markdown]
# diffedu's pipeline draws the same images from the same seed, and records the steps for the slider below:

# %%
trajectory = pipeline.sample_trajectory(
    profile.n_samples, steps=50, frames=20, generator=torch.Generator().manual_seed(1)
)
print(f"largest difference from your sampler's images: {(trajectory.images.cpu() - samples).abs().max():.2e}")

# %% [markdown]
# ## The trajectory, decoded
#
# The top rows show the latents themselves, three of their channels as colours. The bottom row decodes the
# model's current guess of $x_0$, so you can watch an image form in latent space.

# %%
trajectory_widget(trajectory, n=8, decode=pipeline.decode)

# %% [markdown]
# ## Where the latent model loses detail
#
# Set the latent samples beside lesson 02's pixel samples, and they look softer. Is that the decoder's doing, or
# the latent UNet's? Lesson 04's measure of **fine detail** tells them apart. The VAE's reconstructions of real
# test images are the best any latent model on this VAE can draw. So compare three things against real test
# images: those reconstructions, your latent samples, and (in the `cpu` profile) the shipped pixel model's
# samples.

# %%
test_images = to_float(load_cifar10(train=False).images[: profile.n_samples]).to(device)
real_detail = fine_detail(test_images)
with torch.inference_mode():
    reconstructions = pipeline.decode(pipeline.encode(test_images))
details = {"VAE reconstructions": fine_detail(reconstructions), "your latent samples": fine_detail(samples)}
if profile.pretrained:
    details["ddpm-cifar10's samples (DDIM 50)"] = fine_detail(
        load_pipeline("ddpm-cifar10", device).sample(
            profile.n_samples, 50, generator=torch.Generator().manual_seed(1), progress=False
        )
    )
for name, value in details.items():
    print(f"{name:>32}: {value / real_detail:.2f} of real test images' fine detail")

# %% [markdown]
# If the samples keep less detail than the reconstructions, the decoder could have drawn more: the latent UNet
# lost it. With the shipped models that is the case. The decoder sets a floor, and the latent UNet's own errors
# come on top of it.
#
# The shipped quality table measures the same with FID and KID, on hundreds of images (lesson 03 introduced
# them, and lesson 06 builds them). The first pair below asks how far the latent model is from the pixel model.
# The second asks how far it is from its own floor, the reconstructions.

# %%
quality = pretrained.quality_table()
display(
    Markdown(
        report.verdicts(
            quality,
            {
                "The latent model, against the pixel model,": [("latent DDIM 50", "DDIM 50")],
                "Against its floor, it": [("latent DDIM 50", "VAE reconstructions of them")],
            },
        )
    )
)

# %% [markdown]
# Where the latent samples score worse than their floor, the latent UNet, not the decoder, holds the latent model
# back. How that UNet was trained, and what more training did and did not buy, is in its card (`ldm-cifar10`).
#
# ## Does the latent UNet learn, or memorise?
#
# A model that has learned what images look like denoises an image it never saw as well as one it trained on. A
# model that has memorised its training set denoises its own images better. So give the latent UNet both: training
# latents, and the latents of test images, with the same noise for both at each timestep. The plot shows the
# held-out loss over the training loss, with two standard errors. At 1 there is no difference. In the `cpu`
# profile the shipped pixel model is measured too.

# %%
n = min(256, len(images))
held_out = load_cifar10(train=False).images[:n]  # images no model here trained on
models = {"latent UNet": (pipeline, *(cached_latents(pipeline.vae, x, flips=False) for x in (images[:n], held_out)))}
if profile.pretrained:
    models["ddpm-cifar10 (pixels)"] = (load_pipeline("ddpm-cifar10", device), to_float(images[:n]), to_float(held_out))
for name, (model, seen, unseen) in models.items():
    gap = denoising_gap(model, seen, unseen)
    t, ratio, se = ([row[key] for row in gap] for key in ("t", "ratio", "se"))
    plt.errorbar(t, ratio, yerr=[2 * e for e in se], marker="o", capsize=3, label=name)
    above = [row["t"] for row in gap if row["ratio"] - 1 > 2 * row["se"]]
    print(f"{name}: held-out loss above training loss by over two standard errors at t = {above or 'none'}")
plt.axhline(1, color="grey", lw=0.8)
plt.xscale("log")
plt.xlabel("timestep t (more noise to the right)")
plt.ylabel("held-out loss / training loss")
plt.title("does it denoise its own data better than new data?")
plt.legend()
plt.show()

# %% [markdown]
# Where a curve rises above 1 by more than its error bars, the model denoises its own data better than new data:
# it has started to memorise it. The printout names those timesteps. Low and middle noise is where to look, for
# there the loss is about the details of one particular image. At high noise little of any image is left to
# recognise, and the two losses agree.
#
# One reason is size. Set each model's parameters beside the numbers in the data it learned from (mirror images
# included):

# %%
data_sizes = {"latent UNet": latents.numel(), "ddpm-cifar10 (pixels)": 2 * images.numel()}
for name, (model, _, _) in models.items():
    parameters, numbers = count_parameters(model.unet) / 1e6, data_sizes[name] / 1e6
    print(f"{name:>22}: {parameters:.2f}M parameters, {numbers:.1f}M numbers in its data")

# %% [markdown]
# The shipped latent UNet has more parameters than its data has numbers; the pixel UNet has far fewer. Twelve times
# fewer values per image is what makes each latent step cheap, and it also leaves the latent model less to learn
# from. Its card says what has been tried against it: a UNet a quarter its size memorises far less, but it has not
# yet matched the shipped one's scores.

# %% [markdown]
# ## A first look at the cost of a step
#
# One UNet call on a batch of latents against one on pixels, and a whole DDIM run of each, the latent run with
# its decoding. The pixel model is the shipped one in the `cpu` profile, else the profile's pixel UNet: its
# weights do not matter for timing. Lesson 06 measures all of it properly.

# %%
pixel = (
    load_pipeline("ddpm-cifar10", device)
    if profile.pretrained
    else Diffusion(profile.recipe("ddpm").build().to(device), pipeline.schedule)
)
n = profile.n_samples
x_pixels, x_latents = pixel.noise(n), pipeline.noise(n)

with torch.inference_mode():
    t = torch.full((n,), 500, device=device)
    step_pixel = median_seconds(lambda: pixel.unet(x_pixels, t))
    step_latent = median_seconds(lambda: pipeline.unet(x_latents, t))
pixel_50 = median_seconds(lambda: pixel.sample(steps=50, x_T=x_pixels, progress=False), repeats=1)
latent_50 = median_seconds(lambda: pipeline.sample(steps=50, x_T=x_latents, progress=False), repeats=1)
print(f"{n} images on {device}:")
print(
    f"| | pixel UNet ({count_parameters(pixel.unet) / 1e6:.2f}M) "
    f"| latent UNet ({count_parameters(pipeline.unet) / 1e6:.2f}M) | ratio |"
)
print("| --- | ---: | ---: | ---: |")
print(f"| one step | {1000 * step_pixel:.1f} ms | {1000 * step_latent:.1f} ms | {step_pixel / step_latent:.1f}x |")
print(f"| DDIM 50 (latent: + decode) | {pixel_50:.2f} s | {latent_50:.2f} s | {pixel_50 / latent_50:.1f}x |")

# %% [markdown]
# ## Recap
#
# - Latent diffusion is the same diffusion model on different data: latents with twelve times fewer values.
# - The data set is encoded once; the encoder never runs during training.
# - Each step is cheaper, even with a wider UNet, and a single decoder call turns latents into images.
# - Cheaper is not yet as good: the latent UNet's errors, decoded, cost detail and quality.
# - A model can fit its training data rather than learn from it: its loss on data it never saw tells.
#
# ## Questions to think about
#
# 1. Why is the predicted $\hat x_0$ clipped in pixel space but not in latent space?
#
#    <details><summary>Answer</summary>
#
#    Pixels live in $[-1, 1]$, so a guess outside is surely wrong. Latents have no such bounds: clipping them
#    would cut off values the decoder needs.
#
#    </details>
#
# 2. What would the latent model's samples look like with a perfect latent UNet?
#
#    <details><summary>Answer</summary>
#
#    Like the VAE's reconstructions of real images: the decoder's floor. No latent UNet can beat its decoder.
#
#    </details>
#
# Next, lesson 06 puts both claims side by side, measured on your machine.
