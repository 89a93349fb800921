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
# **What you will do here**
#
# - Give the UNet a class label, and train it with labels dropped at random: you write the dropout.
# - Write classifier-free guidance, and watch what its scale does to samples.
# - Read the measured trade-off: realism and class accuracy against the guidance scale.
# - Edit real images with the same model (SDEdit), and map each part of the course to Stable Diffusion's.
#
# **Time:** about 1 minute of computing in the `cpu` profile.
#
# Stable Diffusion is, in four parts: a VAE, a UNet on its latents, a fast sampler, and **text conditioning**.
# Lessons 02 to 05 built the first three. This lesson builds the fourth at CIFAR-10's scale, where a class label
# ("horse") stands in for a prompt. It adds the trick that makes conditioning work in practice:
# **classifier-free guidance** (Ho & Salimans 2022).

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
# Lesson 02's UNet already tells every residual block *when* it is: the embedding of $t$ is added inside each
# block. Conditioning adds *what*: a learned vector per class, added to the time embedding, so every block gets
# "step $t$, and it should be a horse". One more learned vector stands for **no label**. The same `UNet` class
# does it when given a number of classes; without one, it is exactly the unconditional UNet of lessons 02 to 05.

# %%
recipe = profile.recipe("latent").with_classes(10)
unet = UNet(UNetConfig(**recipe.model))
print(
    f"class embedding: {tuple(unet.class_emb.weight.shape)} = 10 classes + 'no label', each a vector as wide as "
    f"the time embedding; {count_parameters(unet) / 1e6:.2f}M parameters in all"
)
labels = torch.tensor([7, 8, 10])  # horse, ship, and "no label"
x_t = torch.randn(3, 4, 8, 8)
print(
    "the same x_t and t with three labels:",
    tuple(unet(x_t, torch.tensor([500] * 3), labels).shape),
    "- and one label for all, or none:",
    tuple(unet(x_t, 500).shape),
)

# %% [markdown]
# ## Training with label dropout
#
# The loss is lesson 02's, with the label passed to the model. One change makes guidance possible: each label is
# replaced by "no label" with a small probability $p$. So one network learns two predictions:
# $\varepsilon_\theta(x_t, t, y)$ for a class, and $\varepsilon_\theta(x_t, t, \varnothing)$, the unconditional one.
#
# ### Exercise 7.1: label dropout
#
# Replace each label by `no_label`, the index after the classes, with probability `p`. Give each label its own
# draw, and leave the others as they are. Draw from `generator`, as the sampling loops do:
# `torch.rand(n, generator=generator)`. The result must sit on the labels' device.


# %% nbgrader={"grade": false, "grade_id": "drop_labels", "locked": false, "schema_version": 3, "solution": true, "task": false}
def drop_labels(
    labels: torch.Tensor, no_label: int, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Each label replaced by `no_label` with probability p, independently."""
    ### BEGIN SOLUTION
    dropped = torch.rand(len(labels), generator=generator).to(labels.device) < p
    return torch.where(dropped, torch.full_like(labels, no_label), labels)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_drop_labels", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.drop_labels(drop_labels)

# %% [markdown]
# The training loss (`diffedu.training.eps_loss`, lesson 02's, given batches of images and labels) takes your
# dropout. We train on lesson 05's cached latents, each with its image's label. A short live run shows the loss.
# The samples below come from the shipped `ldm-cifar10-cond` in the `cpu` profile (a model of the same kind,
# trained by its own, longer recipe on a GPU; its card says how), and from this run elsewhere.

# %%
vae = load_vae("vae-cifar10-gan", device)  # the shipped VAE in every profile: this lesson is about the UNet
images, labels = train.images[: recipe.n_data], train.labels[: recipe.n_data]
latents, latent_labels = cached_latents(vae, images), labels.repeat(2)  # the images, then their mirror images
demo_steps = recipe.steps if not profile.pretrained else 200
seed_everything(0)
loss = partial(eps_loss, schedule=recipe.noise_schedule(), drop=recipe.label_dropout, drop_labels=drop_labels)
trainer = recipe.trainer(device, loss_fn=loss)
print(f"{len(latents)} labelled latents; training {demo_steps} steps, batch {recipe.batch_size}")
trainer.fit(
    batches(latents, recipe.batch_size, labels=latent_labels, flip=False, device=device),
    demo_steps,
    log_every=max(1, demo_steps // 30),
    callback=LiveLoss("class-conditional latent diffusion loss"),
)
print(f"{trainer.seconds:.0f} s")

# %%
if profile.pretrained:
    pipe = load_pipeline("ldm-cifar10-cond", device)
    display(Markdown(pretrained.card("ldm-cifar10-cond", history=False)))
else:
    pipe = LatentDiffusion(vae, trainer.ema.model, recipe.noise_schedule())
print(
    f"sampling from a {count_parameters(pipe.unet) / 1e6:.2f}M-parameter class-conditional latent UNet; "
    f"classes: {', '.join(pipe.classes)}"
)

# %% [markdown]
# ## Classifier-free guidance
#
# Sampling with the conditional prediction alone gives images that are only loosely of their class. Guidance
# extrapolates from the unconditional prediction *through* the conditional one:
#
# $$\hat\varepsilon = \varepsilon_\theta(x_t, t, \varnothing) + w\,\big(\varepsilon_\theta(x_t, t, y) - \varepsilon_\theta(x_t, t, \varnothing)\big)$$
#
# $w = 0$ ignores the label, $w = 1$ is the plain conditional model, and $w > 1$ pushes each step further in the
# direction that makes the image more of its class. This is the form diffusers and Stable Diffusion's code use:
# their `guidance_scale` is this $w$. Ho & Salimans write the same formula as
# $(1 + w')\,\varepsilon_\theta(x_t, t, y) - w'\,\varepsilon_\theta(x_t, t, \varnothing)$, so their $w'$ is our
# $w - 1$.
#
# Why it works: the difference of the two predictions is $-\sqrt{1 - \bar\alpha_t}$ times the gradient of
# $\log p(y \mid x_t)$, an implicit classifier. The predicted noise points away from the class, so removing it
# moves towards the class, and guidance follows that gradient further. Ho & Salimans found that it trades sample
# diversity for fidelity. Both predictions come from one batched model call per step, on twice the batch: twice
# the work of an unguided step. The sampler stays as it was.
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
# diffedu's pipeline does the same inside its sampler (`diffedu.samplers.Guided`). Every class, a few images
# each, at every $w$, from the same noise:

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
    show_images(
        by_scale[w].view(10, per_class, 3, 32, 32).transpose(0, 1).reshape(-1, 3, 32, 32),
        nrow=10,
        ax=ax,
        title=f"w = {w:g}" + {0.0: " (label ignored)", 1.0: " (conditional)"}.get(w, " (guided)"),
    )
plt.tight_layout()
plt.show()
print("columns:", ", ".join(CLASSES))

# %% [markdown]
# Pick a class and move $w$. The noise is the same at every $w$, so what changes is the guidance alone.

# %%
guidance_widget({(k, w): by_scale[w][classes == k] for k in range(10) for w in scales}, pipe.classes)

# %% [markdown]
# ## The trade-off, measured
#
# Two questions at each $w$. Do the samples look like CIFAR-10 images, by FID and KID (lesson 06)? And does a
# "horse" look like a horse? For the second, a **linear probe**: a logistic regression on the same Inception
# features, fit on real training images. Its accuracy on real test images is the yardstick. In the `cpu`
# profile we plot the curve measured for the shipped model (`python -m diffedu guidance`); elsewhere we measure
# it here.

# %%
if profile.pretrained:
    curve = pretrained.guidance_curve("ldm-cifar10-cond")
else:
    curve = evaluation.guidance_curve(
        pipe,
        train,
        test,
        samples=10 if profile.name == "smoke" else 500,
        reference=16 if profile.name == "smoke" else None,
        device=device,
    )
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
    axes[2].annotate(
        f"w={r['guidance']:g}", (100 * r["accuracy"], r["fid"]), textcoords="offset points", xytext=(4, 4), fontsize=8
    )
axes[2].set(xlabel="class accuracy (%)", ylabel="FID", title="the trade-off")
for ax in axes[:2]:
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Each scale against the plain conditional model, $w = 1$, with the course's rule. The rows come from the same
# noise, but the curve keeps no per-image influences, so the standard error here is the unpaired one: it can only
# make a real difference look level.

# %%
base = curve["scales"]["1.0"]
for r in rows:
    said = [
        f"{report.verdict(r[key] - base[key], (r[f'{key}_se'] ** 2 + base[f'{key}_se'] ** 2) ** 0.5)} on {key.upper()}"
        for key, _, _ in report.METRICS
    ]
    print(
        f"w = {r['guidance']:g} against w = 1: {', '.join(said)}; "
        f"class accuracy {100 * r['accuracy']:.1f}% against {100 * base['accuracy']:.1f}%"
    )

# %% [markdown]
# ## Editing real images: SDEdit
#
# The same model edits images (Meng et al. 2022, "SDEdit"; Stable Diffusion's img2img). Encode a real image,
# noise its latent to some step $t$ with lesson 01's jump, and run the sampler from there, conditioned on
# *another* class. Small $t$ keeps the picture and changes details. Large $t$ keeps only the layout and colours,
# and at the last step nothing of the original is left. A few lines:


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
edits = {
    t: torch.cat([originals, sdedit(pipe, originals, t, target).cpu()]) for t in (100, 250, 400, 550, 700, 850, 999)
}
image_slider(
    edits, "t", lambda t: f"top: test images; bottom: noised to t = {t}, then sampled as '{target}' (w = 3)", nrow=6
)

# %%
show_images(
    torch.cat([originals] + [edits[t][6:] for t in (250, 550, 850)]),
    nrow=6,
    title=f"test images, then edited towards '{target}' from t = 250, 550, 850",
)
plt.show()

# %% [markdown]
# ## From here to Stable Diffusion
#
# Each part of the course has its counterpart in Stable Diffusion (v1). The course's side below is read from the
# models themselves; Stable Diffusion's from its paper and code.

# %%
vae_config = pipe.vae.config
ours = {
    "autoencoder": f"VAE, f = 4, L1 + KL, then the decoder retrained with a patch-GAN loss (no perceptual term: "
    f"no pretrained network here); scale factor {vae_config.scale_factor:.4f}, measured",
    "noise schedule": f"linear betas from {pipe.schedule.betas[0]:.4f} to {pipe.schedule.betas[-1]:.2f}, "
    f"T = {pipe.schedule.T}",
    "denoiser": f"UNet, {count_parameters(pipe.unet) / 1e6:.1f}M parameters",
    "conditioning": "a class embedding added to the time embedding",
    '"no label"': f"a learned extra class, labels dropped {recipe.label_dropout:.0%} of the time",
    "guidance": "classifier-free, w = 3 in the samples above",
    "sampler": "DDPM, DDIM",
    "data": f"{len(train):,} CIFAR-10 images",
}
display(
    Markdown(
        report.table(
            ["part", "this course", "Stable Diffusion v1"],
            [[part, ours[part], report.STABLE_DIFFUSION[part]] for part in ours],
        )
    )
)

# %% [markdown]
# What changes at high resolution is mostly scale. A latent makes training and sampling affordable at all, and
# attention over latent positions saves far more than values do. Text needs a text encoder and cross-attention
# where a class needs one embedding vector: lesson 11 builds both. The schedule differs too, as the table shows,
# and so does the autoencoder's loss. The rest is what you built.
#
# ## Recap
#
# - Conditioning is one learned vector per class, added where the time embedding goes. Dropping the label now
#   and then teaches the same network the unconditional prediction too.
# - Classifier-free guidance mixes the two predictions. On the shipped model, class accuracy rises with $w$; the
#   comparisons above say what FID and KID do.
# - SDEdit reuses the model to edit images: noise to step $t$, then denoise towards another class.
#
# ## Questions to think about
#
# 1. Why must labels be dropped during training for guidance to work?
#
#    <details><summary>Answer</summary>
#
#    Guidance needs the unconditional prediction too. Without dropout, the network never learns what to predict
#    with no label, and the extrapolation would start from nonsense.
#
#    </details>
#
# 2. FID and class accuracy can disagree as $w$ grows. What could make samples more recognisable but less like
#    the data set as a whole?
#
#    <details><summary>Answer</summary>
#
#    Guidance pushes each sample towards what is most typical of its class. That can exaggerate features and
#    narrow the variety of samples, which FID compares with the real images' spread.
#
#    </details>
#
# Next, lesson 08 looks at sampling from a new angle: the differential equation every deterministic sampler
# solves.
