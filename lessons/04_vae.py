# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · A VAE: squeezing images into latents
#
# **What you will do here**
#
# - Build a variational autoencoder: you write its sampling trick and its KL term, and train it.
# - Measure what its reconstructions lose, and look inside its latents.
# - Write the scale factor that readies latents for diffusion.
# - See why a pixel loss makes a blurry decoder, and write the discriminator loss that sharpens it.
#
# **Time:** about 3 minutes of computing in the `cpu` profile.
#
# Lessons 02 and 03 made each sample cheaper by taking fewer *steps*. Latent diffusion makes each step cheaper.
# It diffuses in a space twelve times smaller than the pixels (lesson 00), and lets a separately trained
# **autoencoder** turn latents back into images. This lesson builds that autoencoder, a VAE (Kingma & Welling
# 2014).
#
# The price is a **reconstruction floor**: whatever detail the autoencoder loses, no diffusion model on its
# latents can bring back.

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

from diffedu import check, checkpoint
from diffedu.data import batches, load_cifar10, to_float
from diffedu.env import get_device, seed_everything, shown
from diffedu.latent import encode_means
from diffedu.metrics import fine_detail, psnr
from diffedu.nets import count_parameters
from diffedu.pipelines import load_vae
from diffedu.profiles import get_profile
from diffedu.schedules import Schedule
from diffedu.vae import VAE, VAEConfig
from diffedu.viz import LiveLoss, show_images
from diffedu.widgets import latent_explorer

profile, device = get_profile(), get_device()
recipe = profile.recipe("vae")
print(profile.note, f"Device: {device}.")
seed_everything(0)

# %% [markdown]
# ## The architecture
#
# The **encoder** is the down half of a UNet without the skip connections: residual blocks, and two strided
# convolutions that halve the resolution twice. Its last layer outputs two numbers for each latent value: a
# **mean** and a **log-variance**. The **decoder** mirrors it back up to an image.

# %%
vae = VAE(VAEConfig(**recipe.model))
x = to_float(load_cifar10().images[:4])
mean, logvar = vae.encode(x)
print(f"{count_parameters(vae) / 1e6:.2f}M parameters")
print(
    "image",
    tuple(x.shape),
    "-> mean",
    tuple(mean.shape),
    "and log-variance",
    tuple(logvar.shape),
    "-> decoded",
    tuple(vae.decode(mean).shape),
)
assert mean.shape == (4, 4, 8, 8) and vae.decode(mean).shape == x.shape

# %% [markdown]
# ## Why a *variational* autoencoder
#
# A plain autoencoder may scatter images anywhere in latent space, with gaps that decode to garbage. A VAE is a
# generative model $p(x) = \int p(x \mid z)\,p(z)\,dz$ with prior $p(z) = \mathcal N(0, I)$. The decoder is
# $p(x \mid z)$, and the encoder an approximate posterior
# $q(z \mid x) = \mathcal N\big(\mu_\phi(x), \mathrm{diag}\,\sigma_\phi^2(x)\big)$. It is trained on the
# **ELBO**, a lower bound on $\log p(x)$:
#
# $$\log p(x) \ \ge\ \mathbb E_{z \sim q(z|x)}\big[\log p(x \mid z)\big] \;-\; D_{KL}\big(q(z \mid x)\,\|\,p(z)\big)$$
#
# The first term asks the decoder to redraw $x$ from a *sample* $z$ of the encoder's cloud: a reconstruction
# loss. The second pulls each cloud towards $\mathcal N(0, I)$, so that the space between the clouds means
# something.
#
# ### Exercise 4.1: the reparameterisation trick
#
# Sampling $z \sim \mathcal N(\mu, \sigma^2)$ directly has no gradient with respect to $\mu$ and $\sigma$. Draw
# the noise first and *compute* $z$ from it: $z = \mu + \sigma\varepsilon$, with $\varepsilon$ standard normal.
# The encoder outputs the log-variance $\log\sigma^2$: any real number is a valid one, which is easier to learn
# than a positive $\sigma$.


# %% nbgrader={"grade": false, "grade_id": "reparameterize", "locked": false, "schema_version": 3, "solution": true, "task": false}
def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A sample of N(mean, exp(logvar)) made from the N(0, I) draw `noise`, differentiable in mean and logvar."""
    ### BEGIN SOLUTION
    return mean + (0.5 * logvar).exp() * noise
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_reparameterize", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.reparameterize(reparameterize)

# %% [markdown]
# ### Exercise 4.2: the KL term
#
# For one latent value, in closed form:
#
# $$D_{KL}\big(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(0, 1)\big) = \tfrac12\big(\mu^2 + \sigma^2 - 1 - \log\sigma^2\big)$$
#
# Write `kl_divergence(mean, logvar)`: that, averaged over every latent value of the batch. The mean keeps its
# weight in the loss the same whatever the batch size or the latent's size.


# %% nbgrader={"grade": false, "grade_id": "kl_divergence", "locked": false, "schema_version": 3, "solution": true, "task": false}
def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent value, averaged."""
    ### BEGIN SOLUTION
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_kl_divergence", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.kl_divergence(kl_divergence)

# %%
mu, sigma = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.5])
print(
    "KL of N(0,1) and N(2, 0.25) from N(0,1):",
    kl_divergence(mu[:1], sigma[:1].log() * 2).item(),
    round(kl_divergence(mu[1:], sigma[1:].log() * 2).item(), 4),
)
z = reparameterize(torch.full((100_000,), 2.0), torch.full((100_000,), 0.25).log(), torch.randn(100_000))
print(f"your reparameterised samples: mean {z.mean():.3f} (want 2), std {z.std():.3f} (want 0.5)")
assert abs(z.mean() - 2) < 0.01 and abs(z.std() - 0.5) < 0.01

# %% [markdown]
# ## The loss we train with
#
# Ours is the ELBO with two changes. The reconstruction term is the L1 error per pixel: the negative
# log-likelihood of a Laplace decoder, up to constants. And the KL term is down-weighted, as in a **beta-VAE**
# with beta far below one. The clouds are only loosely pulled towards $\mathcal N(0, I)$, so reconstructions stay
# sharp. The price is latents without unit variance, which a scale factor fixes below.
#
# How small is the weight? Our loss *averages* the L1 over an image's pixel values and the KL over its latent
# values, and weights the KL by $10^{-4}$. The ELBO *sums* both over an image, and on that scale our weight is
# about $10^{-3}$. Stable Diffusion's autoencoder sums too, with a KL weight of $10^{-6}$: a "slight KL penalty",
# as its paper calls it.
#
# The loss below is built from **your** two functions.


# %%
def vae_loss(vae, x, kl_weight: float = 1e-4):
    mean, logvar = vae.encode(x)
    reconstruction = vae.decode(reparameterize(mean, logvar, torch.randn_like(mean)))
    return (reconstruction - x).abs().mean() + kl_weight * kl_divergence(mean, logvar)


# %% [markdown]
# ## Training
#
# The same `Trainer` as for the UNet, with your VAE loss.

# %%
train, test = load_cifar10(), load_cifar10(train=False)
images = train.images[: recipe.n_data]
trainer = recipe.trainer(device, loss_fn=vae_loss)
print(f"training the VAE for {recipe.steps} steps, batch {recipe.batch_size} (recipe {recipe.name})")
trainer.fit(
    batches(images, recipe.batch_size, device=device),
    recipe.steps,
    log_every=max(1, recipe.steps // 30),
    callback=LiveLoss("VAE loss"),
)
print(f"{trainer.seconds:.0f} s")
if profile.name != "smoke":
    assert sum(trainer.history[-20:]) / 20 < 0.7 * sum(trainer.history[:5]) / 5

# %% [markdown]
# A minute of CPU training gives a rough VAE. In the `cpu` profile the rest of the lesson uses the VAE that ships
# with `diffedu`: the same class, trained by the same `Trainer` on a GPU. Its card says how. In the other
# profiles it uses the VAE you just trained.

# %%
from IPython.display import Markdown, display

from diffedu import pretrained

if profile.pretrained:
    vae = load_vae("vae-cifar10", device)
    display(Markdown(pretrained.card("vae-cifar10", history=False)))
else:
    vae = trainer.ema.model

# %% [markdown]
# ## Reconstructions, and the floor they set
#
# Test images the VAE never saw, beside their reconstructions. **PSNR** measures the error in decibels: higher is
# better, and each six decibels halve the error. **Fine detail** measures blur: the energy of an image's
# Laplacian (a pixel minus its neighbours' mean), as a fraction of the real images'. At one, a picture has as
# much edge and texture as a photo.

# %%
n_test = min(len(test), 1024 if profile.name != "smoke" else 64)
originals = to_float(test.images[:n_test]).to(device)
reconstructions = torch.cat([vae.reconstruct(chunk) for chunk in originals.split(256)])
scores = psnr(reconstructions, originals)
print(
    f"reconstruction PSNR on {n_test} test images: mean {scores.mean():.2f} dB "
    f"(worst {scores.min():.1f}, best {scores.max():.1f})"
)
detail = fine_detail(reconstructions) / fine_detail(originals)
print(f"fine detail of the reconstructions: {detail:.2f} of the real images'")
show_images(
    torch.cat([originals[:8], reconstructions[:8]]).cpu(), nrow=8, title="test images (top) and their reconstructions"
)
plt.show()
assert reconstructions.shape == originals.shape

# %% [markdown]
# The reconstructions are close in PSNR, and visibly softer: a good part of the fine detail is gone. Keep that in
# mind: the last part of this lesson finds out why, and fixes it.
#
# ## What is in a latent?
#
# Each latent channel of an image is a small picture. The channels keep a coarse copy of the image's layout, and
# the decoder fills in the detail.

# %%
z = vae.encode(originals[:4])[0].detach().cpu()
fig, axes = plt.subplots(4, 5, figsize=(6.5, 5.2))
for row, (image, latent) in enumerate(zip(originals[:4].cpu(), z)):
    axes[row, 0].imshow(((image.permute(1, 2, 0) + 1) / 2).clamp(0, 1))
    for c in range(4):
        axes[row, c + 1].imshow(latent[c], cmap="RdBu")
        axes[0, c + 1].set_title(f"channel {c}", fontsize=9)
for ax in axes.flat:
    ax.set_axis_off()
axes[0, 0].set_title("image", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# How big are the encoder's clouds? Compare each latent's standard deviation $\sigma_\phi(x)$ with the spread of
# the latents over the data set.

# %%
mean, logvar = vae.encode(originals)
cloud, spread = (0.5 * logvar).exp().mean().item(), mean.std().item()
print(f"the encoder's standard deviation, on average: {cloud:.4f}; the latents' spread over the images: {spread:.3f}")
print(f"each cloud is {spread / cloud:.0f}x narrower than the spread of the latents")

# %% [markdown]
# The clouds are tiny beside the spread of the latents: with so slight a KL weight, this autoencoder is nearly
# deterministic. That is what latent diffusion intends. The diffusion model, not the VAE's prior, will learn
# where latents lie.
#
# ## The latent scale factor
#
# The noise schedule ends in standard normal noise, and the signal-to-noise ratio at step $t$ is
# $\bar\alpha_t/(1-\bar\alpha_t)$ times the data's variance. So the schedule only means something for data of a
# known scale. Latents come out with whatever spread the VAE chose. So we measure their standard deviation over
# the data set and divide by it: the **scale factor**, which brings them to unit variance. Stable Diffusion's
# constant $0.18215$ does the same for its latents. The factor is stored in the VAE's config, so it travels with
# the checkpoint. From here on, in `diffedu`, "latents" always means *scaled* latents.
#
# Unit variance is *not* the pixels' scale. DDPM's schedule was designed for images in $[-1, 1]$, whose spread
# lesson 00 printed. The last cell of this section measures how that moves the step at which signal and noise
# are equal. So "the same schedule" is not the same difficulty for the pixel and the latent model.
#
# ### Exercise 4.3: the scale factor
#
# Write `scale_factor(means)`: one number for the whole latent space, such that `means * scale_factor` has
# standard deviation one. `means` holds the encoder's means for the whole data set, of shape `(N, 4, 8, 8)`.


# %% nbgrader={"grade": false, "grade_id": "scale_factor", "locked": false, "schema_version": 3, "solution": true, "task": false}
def scale_factor(means: torch.Tensor) -> float:
    """The number that brings the latents to unit variance."""
    ### BEGIN SOLUTION
    return 1.0 / means.std().item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_scale_factor", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.scale_factor(scale_factor)

# %%
means = encode_means(vae, images)  # the encoder's means, in the VAE's own (raw) units
scale = float(scale_factor(means))
vae.config.scale_factor = scale  # in the config, so that it is saved with the checkpoint (latent.calibrate does both)
print(
    f"latent std before scaling: {means.std():.3f}; scale factor 1/std = {scale:.4f}; "
    f"after scaling: {(means * scale).std():.3f}"
)
assert abs((means * scale).std() - 1) < 1e-3
plt.figure(figsize=(6, 2.6))
plt.hist(means.flatten().numpy(), bins=100, alpha=0.6, density=True, label="raw latents")
plt.hist((means * scale).flatten().numpy(), bins=100, alpha=0.6, density=True, label="scaled latents")
plt.legend(), plt.title("latent values over the data set"), plt.show()
saved = checkpoint.save_model(profile.lesson_run("04_vae"), vae, recipe=recipe.name, step=trainer.step)
print(f"saved {shown(saved)} for lesson 05")

# %%
snr = Schedule.linear().snr  # alpha_bar_t / (1 - alpha_bar_t), for data of unit variance
pixel_variance = to_float(images).var().item()
for name, variance in (("pixels", pixel_variance), ("scaled latents", (means * scale).var().item())):
    crossing = int((snr * variance < 1).nonzero()[0])  # the first t where the noise outweighs the signal
    print(f"{name:>14}: variance {variance:.3f}; signal and noise are equal at t = {crossing}")
print(f"at every t, the scaled latents' SNR is {(means * scale).var().item() / pixel_variance:.1f}x the pixels'")

# %% [markdown]
# ## Why a pixel loss blurs
#
# A small latent cannot pin down every detail of an image. Many images, differing in exactly where a stripe or a
# grain of texture falls, share almost the same latent. The decoder must answer with *one* image, and a pixel
# loss tells it which. Squared error is smallest at the per-pixel **mean** of those images, and L1 error at their
# per-pixel **median**.
#
# Two one-dimensional examples show what that does. First, an edge whose position is uncertain: three positions,
# equally likely. Second, a texture whose *phase* is uncertain: stripes shifted by a random amount.

# %%
position = torch.arange(24)
edges = torch.stack([(position >= at).float() for at in (9, 12, 15)])  # three equally likely edges
phases = torch.linspace(0, 2 * torch.pi, 102)[:-1]  # a hundred and one equally likely shifts of the stripes
stripes = torch.stack([torch.sin(2 * torch.pi * position / 6 + phase) for phase in phases])


def best_output(images, loss):
    """For each pixel, the value with the least expected loss over the equally likely images."""
    candidates = (torch.arange(-100, 101) / 100).view(-1, 1, 1)  # -1.00, -0.99, ..., 1.00
    return candidates[loss(candidates - images).mean(1).argmin(0), 0, 0]


fig, axes = plt.subplots(1, 2, figsize=(9.5, 2.6))
for ax, possible, title in (
    (axes[0], edges, "an edge at an uncertain position"),
    (axes[1], stripes, "stripes at an uncertain phase"),
):
    for example in possible[:: max(1, len(possible) // 3)][:3]:
        ax.step(position, example, where="mid", color="grey", alpha=0.4)
    ax.step(position, best_output(possible, torch.square), where="mid", color="C0", label="best for squared error")
    ax.step(position, best_output(possible, torch.abs), where="mid", color="C3", ls="--", label="best for L1")
    ax.set(title=title, ylim=(-1.15, 1.15))
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()
l1_edge, l1_stripes = best_output(edges, torch.abs), best_output(stripes, torch.abs)
print("L1's answer for the edge, pixels 6-17:", [round(v, 2) for v in l1_edge[6:18].tolist()])
print(f"L1's answer for the stripes: largest value {l1_stripes.abs().max():.2f} (the stripes reach 1)")
assert set(l1_edge.tolist()) <= {0.0, 1.0} and l1_stripes.abs().max() < 0.1

# %% [markdown]
# Squared error blurs both: the edge becomes a ramp, and the stripes fade to grey. L1 behaves differently. The
# per-pixel median of the edges is itself a sharp edge, at the middle position. But the median of stripes at a
# random phase is flat grey: L1 erases **texture whose phase is uncertain**. That is the softness in the
# reconstructions above.
#
# Only a loss that looks at the result as an image can say "real images have texture here". That loss is a
# **discriminator**: a small network trained at the same time to tell real images from decoded ones. Ours scores
# overlapping patches, one logit each (a PatchGAN, as in VQGAN and Stable Diffusion's autoencoder). The decoder
# is rewarded when its patches pass for real, which a patch with its texture erased does not.
#
# We use **hinge losses** (Lim & Ye 2017), as the code of VQGAN (taming-transformers) and of latent diffusion
# does. VQGAN's paper writes the original log-loss GAN objective instead (its eq. 4).
#
# $$L_D = \tfrac12\,\mathbb E\big[\max(0,\,1 - D(x))\big] + \tfrac12\,\mathbb E\big[\max(0,\,1 + D(\hat x))\big], \qquad
#   L_{adv} = -\,\mathbb E\big[D(\hat x)\big]$$
#
# Here $x$ is a real image and $\hat x$ a decoded one. A real patch that already scores above one, or a decoded
# one below minus one, costs the discriminator nothing. It spends its effort on the patches it still gets wrong.
#
# ### Exercise 4.4: the discriminator's hinge loss
#
# Write `hinge_d_loss(real_logits, fake_logits)`: $L_D$ above, averaged over every patch of the batch.


# %% nbgrader={"grade": false, "grade_id": "hinge_d_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss on the patch logits of real and of decoded images."""
    ### BEGIN SOLUTION
    return 0.5 * (torch.relu(1 - real_logits).mean() + torch.relu(1 + fake_logits).mean())
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_hinge_d_loss", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.hinge_d_loss(hinge_d_loss)

# %% [markdown]
# ## The decoder stage
#
# How strongly should the decoder listen to the discriminator? The two losses have unrelated scales. VQGAN sets
# the adversarial weight from their gradients at the decoder's last layer (its eq. 7), so that the adversarial
# term pulls about as hard as the reconstruction term:
#
# $$\lambda = \frac{\lVert\nabla L_\text{rec}\rVert}{\lVert\nabla L_{adv}\rVert + \delta}$$
#
# In VQGAN the reconstruction loss is L1 plus a perceptual loss (LPIPS, a pretrained network). We have no
# pretrained network, so ours is L1 alone. Like latent diffusion's code (its `disc_weight`), we scale
# $\lambda$ by one half (`diffedu.adversarial.adaptive_weight`).
#
# We retrain **only the decoder** this way, with the encoder frozen. The latents do not change, nor their scale
# factor, so every latent diffusion model trained on this VAE stays valid. And the decoder learns from latents
# with a little Gaussian noise added, about the size of a latent diffusion model's errors. A decoder that has
# only seen perfect latents may turn those errors into mush; this one learns to draw a clean image anyway.
#
# A short run, with your hinge loss for the discriminator (`DecoderTrainer` in `diffedu.adversarial`). The
# adversarial term waits for the first tenth of the steps: meanwhile the decoder trains on L1 alone, and the
# discriminator learns to tell real images from its reconstructions.

# %%
import copy

from diffedu.adversarial import DecoderTrainer

decoder_recipe = profile.recipe("decoder")
stage = DecoderTrainer(
    copy.deepcopy(vae), lr=decoder_recipe.lr, warmup=decoder_recipe.steps // 10, disc_loss=hinge_d_loss, device=device
)
stage.fit(
    batches(images, decoder_recipe.batch_size, device=device),
    decoder_recipe.steps,
    log_every=max(1, decoder_recipe.steps // 20),
    callback=LiveLoss("decoder stage: L1 of noisy latents"),
)
untouched = all(
    torch.equal(a, b) for a, b in zip(stage.model.encoder.state_dict().values(), vae.encoder.state_dict().values())
)
print(f"{stage.step} steps in {stage.seconds:.0f} s; the encoder is untouched: {untouched}")

# %% [markdown]
# A few dozen steps only show the machinery. The shipped `vae-cifar10-gan` is `vae-cifar10`'s decoder after a long
# run of this stage; its card below says how long. Compare the two decoders on the same test images: their PSNR
# and fine detail from clean latents, then from latents with noise added, as a diffusion model makes them.

# %%
from diffedu.latent import decode_latents, encode_latents

if profile.pretrained:
    decoders = {
        "L1 decoder (vae-cifar10)": load_vae("vae-cifar10", device),
        "adversarial decoder (vae-cifar10-gan)": load_vae("vae-cifar10-gan", device),
    }
    display(Markdown(pretrained.card("vae-cifar10-gan", history=False)))
else:
    decoders = {"L1 decoder (yours)": vae, "after your decoder stage": stage.ema.model}
real_detail = fine_detail(originals)
latent_noise = 0.3  # in scaled units: about a latent diffusion model's error
latents = encode_latents(vae, originals)  # one encoder, so the same latents for both decoders
noisy = latents + latent_noise * torch.randn(latents.shape, generator=torch.Generator().manual_seed(0)).to(device)
rows = [originals[:8]]
for name, decoder in decoders.items():
    clean, blurred = decode_latents(decoder, latents), decode_latents(decoder, noisy)
    rows += [clean[:8], blurred[:8]]
    print(
        f"{name:40s} PSNR {psnr(clean, originals).mean():5.2f} dB, "
        f"fine detail {fine_detail(clean) / real_detail:.2f}; from noisy latents: "
        f"PSNR {psnr(blurred, originals).mean():5.2f} dB, detail {fine_detail(blurred) / real_detail:.2f}"
    )
show_images(
    torch.cat(rows).cpu(), nrow=8, title=f"real; per decoder: from clean latents, from latents + noise {latent_noise}"
)
plt.show()

# %% [markdown]
# With the shipped decoders, the adversarial one draws more fine detail, from clean latents and from noisy ones,
# for a little PSNR. It draws *plausible* detail where the L1 decoder drew the average, and plausible is not the
# same pixels.

# %% [markdown]
# ## Explore the latent space
#
# Pick two test images. Slide between their latents, and decode as you go; then take one channel and scale
# it or add noise to it, to see what it controls. Only the small decoder runs on each move.

# %%
latent_explorer(vae, originals[0].cpu(), originals[3].cpu())

# %% [markdown]
# ## Recap
#
# - The VAE turns an image into a latent with twelve times fewer values, and back.
# - Its reconstruction error is a floor under any latent diffusion model built on it.
# - Scaled by the measured factor, the latents have unit variance, ready for the noise schedule.
# - A pixel loss erases texture whose phase the latent leaves uncertain. A patch discriminator rewards plausible
#   texture. Retraining only the decoder with it keeps the latent space, and every model trained on it.
#
# ## Questions to think about
#
# 1. Why retrain only the decoder, and not the whole autoencoder, with the adversarial loss?
#
#    <details><summary>Answer</summary>
#
#    The latent diffusion models learn the encoder's latents. Keeping the encoder keeps those latents and their
#    scale factor, so every model trained on them stays valid.
#
#    </details>
#
# 2. The adversarial decoder scores a lower PSNR, yet looks sharper. How can both be true?
#
#    <details><summary>Answer</summary>
#
#    PSNR rewards the per-pixel average of what the latent leaves open. A sharp guess that puts texture in a
#    slightly wrong place is penalised twice, where the blurry average is penalised once.
#
#    </details>
#
# Next, lesson 05 trains lesson 02's UNet on these latents.
