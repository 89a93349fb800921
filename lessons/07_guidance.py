# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Conditioning and classifier-free guidance: the last piece of Stable Diffusion
#
# Stable Diffusion is, in four parts: a VAE, a UNet on its latents, a fast sampler, and **text
# conditioning**. Lessons 02-05 built the first three. This lesson builds the fourth at CIFAR-10's scale,
# where a class label ("horse") stands in for a prompt, and the trick that makes conditioning work in
# practice: **classifier-free guidance** (Ho & Salimans 2022). Then it measures what guidance trades away,
# and uses the same model to edit real images (SDEdit). You write the label dropout and the guidance formula.

# %%
# Set-up: on Colab, install the course (once per session); anywhere else this does nothing.
import importlib.util, os, subprocess, sys

if "google.colab" in sys.modules and importlib.util.find_spec("diffedu") is None:
    course = os.environ.get("DIFFEDU_INSTALL", "diffedu @ git+https://github.com/diffedu/diffedu")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", course], check=True)  # keeps Colab's PyTorch
    importlib.invalidate_caches()  # so that `import diffedu` finds what was just installed

# %%
import time
from functools import partial

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

from diffedu import check, evaluation, pretrained, report
from diffedu.data import CLASSES, batches, load_cifar10, to_float
from diffedu.env import get_device, seed_everything
from diffedu.latent import cached_latents
from diffedu.nets import UNet, UNetConfig, count_parameters
from diffedu.pipelines import LatentDiffusion, load_pipeline, load_vae
from diffedu.profiles import get_profile
from diffedu.training import eps_loss
from diffedu.viz import LiveLoss, show_images
from diffedu.widgets import guidance_widget, image_slider

profile, device = get_profile(), get_device()
print(profile.note, f"Device: {device}.")
train, test = load_cifar10(), load_cifar10(train=False)

# %% [markdown]
# ## A UNet that knows what to draw
#
# Lesson 02's UNet already tells every residual block *when* it is (the embedding of t is added inside each
# block). Conditioning adds *what*: a learned vector per class, added to the time embedding, so every block
# gets "step t, and it should be a horse". One more learned vector stands for **no label**. The same `UNet`
# class does it with `num_classes=10`; with the default 0 it is exactly the unconditional UNet of lessons 02-05.

# %%
recipe = profile.recipe("latent").with_classes(10)
unet = UNet(UNetConfig(**recipe.model))
print(f"class embedding: {tuple(unet.class_emb.weight.shape)} = 10 classes + 'no label', each a vector as wide as "
      f"the time embedding; {count_parameters(unet) / 1e6:.2f}M parameters in all")
labels = torch.tensor([7, 8, 10])  # horse, ship, and "no label"
x_t = torch.randn(3, 4, 8, 8)
print("the same x_t and t with three labels:", tuple(unet(x_t, torch.tensor([500] * 3), labels).shape),
      "- and one label for all, or none:", tuple(unet(x_t, 500).shape))

# %% [markdown]
# ## Training with label dropout
#
# The loss is lesson 02's, with the label passed to the model. One change makes guidance possible: each label
# is replaced by "no label" with probability 0.1. So one network learns two predictions: eps(x_t, t, y) for a
# class, and eps(x_t, t, none), the unconditional one.
#
# ### Exercise 7.1: label dropout
#
# Replace each label by `no_label` (the index after the classes: 10 here, the 11th embedding) with probability
# p, each label on its own draw, and leave the others as they are. Draw from `generator`, as the sampling loops
# do: `torch.rand(n, generator=generator)`.

# %% nbgrader={"grade": false, "grade_id": "drop_labels", "locked": false, "schema_version": 3, "solution": true, "task": false}
def drop_labels(labels: torch.Tensor, no_label: int, p: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Each label replaced by `no_label` with probability p, independently."""
    ### BEGIN SOLUTION
    dropped = torch.rand(len(labels), generator=generator).to(labels.device) < p
    return torch.where(dropped, torch.full_like(labels, no_label), labels)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_drop_labels", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.drop_labels(drop_labels)

# %% [markdown]
# The training loss (`diffedu.training.eps_loss`, lesson 02's, given (image, label) batches) takes your dropout.
#
# We train on lesson 05's cached latents, each with its image's label (the mirrored copies keep theirs). A short
# live run shows the loss; the samples below come from the shipped `ldm-cifar10-cond` in the cpu profile (the
# same recipe, trained for 4 minutes on a GPU; its card says how), and from this run elsewhere.

# %%
vae = load_vae("vae-cifar10-gan", device)  # the shipped VAE in every profile: this lesson is about the UNet
images, labels = train.images[: recipe.n_data], train.labels[: recipe.n_data]
latents, latent_labels = cached_latents(vae, images), labels.repeat(2)  # the images, then their mirror images
demo_steps = recipe.steps if not profile.pretrained else 200
seed_everything(0)
loss = partial(eps_loss, schedule=recipe.noise_schedule(), drop=recipe.label_dropout, drop_labels=drop_labels)
trainer = recipe.trainer(device, loss_fn=loss)
print(f"{len(latents)} labelled latents; training {demo_steps} steps, batch {recipe.batch_size}")
trainer.fit(batches(latents, recipe.batch_size, labels=latent_labels, flip=False, device=device), demo_steps,
            log_every=max(1, demo_steps // 30), callback=LiveLoss("class-conditional latent diffusion loss"))
print(f"{trainer.seconds:.0f} s")

# %%
if profile.pretrained:
    pipe = load_pipeline("ldm-cifar10-cond", device)
    display(Markdown(pretrained.card("ldm-cifar10-cond")))
else:
    pipe = LatentDiffusion(vae, trainer.ema.model, recipe.noise_schedule())
print(f"sampling from a {count_parameters(pipe.unet) / 1e6:.2f}M-parameter class-conditional latent UNet; "
      f"classes: {', '.join(pipe.classes)}")

# %% [markdown]
# ## Classifier-free guidance
#
# Sampling with the conditional prediction alone (w = 1 below) gives images that are only loosely of their
# class. Guidance extrapolates from the unconditional prediction *through* the conditional one:
#
# $$\hat\varepsilon = \varepsilon_\theta(x_t, t, \varnothing) + w\,\big(\varepsilon_\theta(x_t, t, y) - \varepsilon_\theta(x_t, t, \varnothing)\big)$$
#
# w = 0 ignores the label, w = 1 is the plain conditional model, w > 1 pushes each step further in the
# direction that makes the image more of its class. This is the form diffusers and Stable Diffusion's code use
# (their `guidance_scale` is this w). Ho & Salimans write the same formula as (1 + w) eps(x_t, t, y) - w
# eps(x_t, t, none): their w is ours minus 1, so their w = 0 is our conditional model, and our w = 3 their 2. Why it works: the difference of the two predictions is
# proportional to the gradient of log p(y | x_t), an implicit classifier, so guidance sharpens the class at
# the cost of diversity. Both predictions come from one batched model call per step; DDIM and everything else
# stay as they were.
#
# ### Exercise 7.2: the guided prediction

# %% nbgrader={"grade": false, "grade_id": "guided_eps", "locked": false, "schema_version": 3, "solution": true, "task": false}
def guided_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance: the unconditional prediction, moved w times the way to the conditional one."""
    ### BEGIN SOLUTION
    return eps_uncond + w * (eps_cond - eps_uncond)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_guided_eps", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.guided_eps(guided_eps)

# %% [markdown]
# diffedu's pipeline does the same inside its sampler (`diffedu.samplers.Guided`). Ten classes, four images
# each, at every w from the same noise:

# %%
steps, per_class = 50, 4
scales = evaluation.GUIDANCE_SCALES
classes = torch.arange(10).repeat_interleave(per_class)
noise = pipe.noise(len(classes), torch.Generator().manual_seed(1))  # the same noise at every w
start = time.perf_counter()
by_scale = {w: pipe.sample(steps=steps, x_T=noise, classes=classes, guidance=w, progress=False).cpu() for w in scales}
print(f"{len(scales)} scales x {len(classes)} images, DDIM {steps}: {time.perf_counter() - start:.1f} s")

# %%
fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.6))
for ax, w in zip(axes, (0.0, 1.0, 3.0)):
    show_images(by_scale[w].view(10, per_class, 3, 32, 32).transpose(0, 1).reshape(-1, 3, 32, 32), nrow=10, ax=ax,
                title=f"w = {w:g}" + {0.0: " (label ignored)", 1.0: " (conditional)"}.get(w, " (guided)"))
plt.tight_layout()
plt.show()
print("columns:", ", ".join(CLASSES))

# %% [markdown]
# Pick a class and move w: the noise is the same at every w, so what changes is the guidance alone.

# %%
guidance_widget({(k, w): by_scale[w][classes == k] for k in range(10) for w in scales}, pipe.classes)

# %% [markdown]
# ## The trade-off, measured
#
# Two questions at each w: do the samples look like CIFAR-10 images, as varied as the real ones (FID and KID,
# lesson 06), and does a "horse" look like a horse? For the second, a **linear probe**: a logistic regression on
# the same Inception features, fit on real training images; its accuracy on real test images is the yardstick.
# In the cpu profile we plot the curve measured for the shipped model (`python -m diffedu guidance`, 500 samples
# per w at w = 0, 1, 3 and 5, 13 minutes on 2 cores); elsewhere we measure it here.

# %%
if profile.pretrained:
    curve = pretrained.guidance_curve("ldm-cifar10-cond")
else:
    curve = evaluation.guidance_curve(pipe, train, test, samples=10 if profile.name == "smoke" else 500,
                                      reference=16 if profile.name == "smoke" else None, device=device)
display(Markdown(report.guidance_table(curve)))

# %%
rows, real = list(curve["scales"].values()), curve["real test images"]
w = [r["guidance"] for r in rows]
fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.2))
axes[0].plot(w, [r["fid"] for r in rows], "o-")
axes[0].axhline(real["fid"], color="k", ls="--", lw=1, label="real test images")
axes[0].set(xlabel="guidance w", ylabel="FID (lower: closer to real)", title=f"FID, {rows[0]['n']} samples each")
axes[1].plot(w, [100 * r["accuracy"] for r in rows], "o-", color="C2")
axes[1].axhline(100 * real["accuracy"], color="k", ls="--", lw=1, label="real test images")
axes[1].axhline(10, color="grey", ls=":", lw=1, label="chance")
axes[1].set(xlabel="guidance w", ylabel="class accuracy (%)", title="does a horse look like a horse?")
axes[2].plot([100 * r["accuracy"] for r in rows], [r["fid"] for r in rows], "o-", color="C1")
for r in rows:
    axes[2].annotate(f"w={r['guidance']:g}", (100 * r["accuracy"], r["fid"]), textcoords="offset points",
                     xytext=(4, 4), fontsize=8)
axes[2].set(xlabel="class accuracy (%)", ylabel="FID", title="the trade-off")
for ax in axes[:2]:
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Editing real images: SDEdit
#
# The same model edits images (Meng et al. 2022, "SDEdit"; Stable Diffusion's img2img). Encode a real image,
# noise its latent to some step t with lesson 01's q_sample, and run the sampler from there, conditioned on
# *another* class. Small t keeps the picture and changes details; large t keeps only the layout and colours; at
# t = 999 nothing of the original is left. A few lines:

# %%
@torch.inference_mode()
def sdedit(pipe, images, t_start: int, target: str, guidance: float = 3.0, steps: int = 50, seed: int = 0):
    scheduler = pipe.scheduler("ddim", steps)
    timesteps = [t for t in scheduler.timesteps if t <= t_start]  # the part of the run below t_start
    z0 = pipe.encode(images.to(pipe.device))  # the clean latents
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed)).to(pipe.device)
    z = pipe.schedule.q_sample(z0, torch.tensor(timesteps[0]), noise)  # lesson 01's jump to the first step
    labels = torch.cat([pipe.labels(target, len(z)), pipe.unet.labels(None, len(z), pipe.device)])  # class, then none
    for t in timesteps:
        eps_cond, eps_uncond = pipe.unet(torch.cat([z, z]), t, labels).chunk(2)  # one batched call, both predictions
        z = scheduler.step(guided_eps(eps_uncond, eps_cond, guidance), t, z).prev
    return pipe.decode(z)


originals = to_float(test.images[:6])
target = "horse"
edits = {t: torch.cat([originals, sdedit(pipe, originals, t, target).cpu()])
         for t in (100, 250, 400, 550, 700, 850, 999)}
image_slider(edits, "t", lambda t: f"top: test images; bottom: noised to t = {t}, then sampled as '{target}' (w = 3)",
             nrow=6)

# %%
show_images(torch.cat([originals] + [edits[t][6:] for t in (250, 550, 850)]), nrow=6,
            title=f"test images, then edited towards '{target}' from t = 250, 550, 850")
plt.show()

# %% [markdown]
# ## From here to Stable Diffusion
#
# | part | this course (CIFAR-10, 32x32) | Stable Diffusion (v1, 512x512) |
# | --- | --- | --- |
# | autoencoder | VAE, f = 4: 32x32x3 -> 8x8x4, L1 + 1e-4 KL, then the decoder retrained with L1 + a patch-GAN loss (no perceptual term: no pretrained network here); scale factor measured (0.84) | VAE, f = 8: 512x512x3 -> 64x64x4, L1 + LPIPS perceptual + patch-GAN losses, KL ~1e-6; scale factor 0.18215 |
# | denoiser | UNet, 4M parameters, attention at 4x4 | UNet, 860M parameters, attention at 64x64, 32x32 and 16x16 latent positions, and in the 8x8 middle block |
# | conditioning | a class embedding added to the time embedding | cross-attention: every attention layer also attends to 77 CLIP text-encoder embeddings of the prompt |
# | "no label" | a learned 11th class, labels dropped 10% of the time | the empty prompt's embedding, captions dropped 10% of the time |
# | guidance | classifier-free, w = 3 here | classifier-free, default w = 7.5 |
# | sampler | DDPM 1000, DDIM 50 | PNDM/PLMS 50 by default; DDIM, Euler, DPM-Solver++ in 20-50 steps |
# | data | 5,170 CIFAR-10 images (this sample) | LAION: hundreds of millions of captioned images |
#
# What changes at 512 px is scale, not kind: the latent is 64x64x4 = 16,384 values instead of 786,432 pixels
# (48x fewer, lesson 00), which is what makes training and sampling affordable at all; attention over 4,096
# latent positions instead of 262,144 pixels saves 4,096x more; and text needs a text encoder and
# cross-attention where a class needs one embedding vector. Everything else is what you built.

# %% [markdown]
# ## Summary
#
# - Conditioning is one learned vector per class added where the time embedding goes; dropping the label 10% of
#   the time teaches the same network the unconditional prediction too.
# - Classifier-free guidance mixes the two predictions, eps_uncond + w (eps_cond - eps_uncond): the curve above
#   shows what it buys (class accuracy) and what it costs (diversity, FID) as w grows.
# - SDEdit reuses the model to edit images: noise to step t, then denoise towards another class.
