# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · A VAE: squeezing 32x32x3 images into 8x8x4 latents
#
# Lessons 02-03 made each sample cheaper by taking fewer *steps*. Latent diffusion makes each step cheaper:
# diffuse in a space 12x smaller than the pixels (lesson 00), and let a separately trained **autoencoder**
# turn latents back into images. This lesson builds and trains that autoencoder, a VAE (Kingma & Welling
# 2014), and looks inside its latent space.
#
# The price is a **reconstruction floor**: whatever detail the autoencoder loses, no diffusion model on
# its latents can bring back. We measure it. You write the three pieces the VAE adds to an autoencoder: the
# reparameterised sample, the KL term, and the latent scale factor.

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

from diffedu import check, checkpoint
from diffedu.data import batches, load_cifar10, to_float
from diffedu.env import get_device, seed_everything, shown
from diffedu.latent import encode_means
from diffedu.metrics import psnr
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
# The **encoder** is the down half of a UNet without the skip connections: residual blocks, and two
# stride-2 convolutions, 32x32 -> 16x16 -> 8x8. Its last layer outputs 8 channels: for each of the 4
# latent channels, a **mean** and a **log-variance**. The **decoder** mirrors it back up to 32x32x3.

# %%
vae = VAE(VAEConfig(**recipe.model))
x = to_float(load_cifar10().images[:4])
mean, logvar = vae.encode(x)
print(f"{count_parameters(vae) / 1e6:.2f}M parameters")
print("image", tuple(x.shape), "-> mean", tuple(mean.shape), "and log-variance", tuple(logvar.shape),
      "-> decoded", tuple(vae.decode(mean).shape))
assert mean.shape == (4, 4, 8, 8) and vae.decode(mean).shape == x.shape

# %% [markdown]
# ## Why a *variational* autoencoder
#
# A plain autoencoder may scatter images anywhere in latent space, with gaps that decode to garbage. A VAE
# (Kingma & Welling 2014) is a generative model p(x) = integral of p(x | z) p(z) dz with prior p(z) = N(0, I), the
# decoder as p(x | z), and the encoder as an approximate posterior q(z | x) = N(mu(x), diag(sigma²(x))). It is
# trained on the **ELBO**, a lower bound on log p(x):
#
# $$\log p(x) \ \ge\ \mathbb E_{z \sim q(z|x)}\big[\log p(x \mid z)\big] \;-\; D_{KL}\big(q(z \mid x)\,\|\,p(z)\big)$$
#
# The first term asks the decoder to redraw x from a *sample* z of the encoder's cloud (a reconstruction
# loss); the second keeps each cloud close to N(0, I), so the clouds overlap and the space between them
# decodes to something sensible.
#
# ### Exercise 4.1: the reparameterisation trick
#
# Sampling z ~ N(mu, sigma²) directly has no gradient with respect to mu and sigma. Draw the noise first and
# *compute* z from it: z = mu + sigma eps with eps ~ N(0, I). The encoder outputs the log-variance
# logvar = log sigma² (any real number is a valid one, which is easier to learn than a positive sigma).

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
# Write `kl_divergence(mean, logvar)`: that, averaged over every latent value of the batch (the mean, so that
# its weight in the loss does not change with the batch size or the latent's size).

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
print("KL of N(0,1) and N(2, 0.25) from N(0,1):", kl_divergence(mu[:1], sigma[:1].log() * 2).item(),
      round(kl_divergence(mu[1:], sigma[1:].log() * 2).item(), 4))
z = reparameterize(torch.full((100_000,), 2.0), torch.full((100_000,), 0.25).log(), torch.randn(100_000))
print(f"your reparameterised samples: mean {z.mean():.3f} (want 2), std {z.std():.3f} (want 0.5)")
assert abs(z.mean() - 2) < 0.01 and abs(z.std() - 0.5) < 0.01

# %% [markdown]
# ## The loss we train with
#
# Ours is the ELBO with two changes. The reconstruction term is the L1 error per pixel (the negative
# log-likelihood of a Laplace decoder, up to constants; it keeps edges sharper than squared error). And the KL
# term is down-weighted: a **small-beta VAE** (a beta-VAE with beta far below 1). The clouds are only loosely
# pulled towards N(0, I), so reconstructions stay sharp; the price is latents that do not have unit variance,
# which we fix afterwards with a scale factor (below).
#
# How small is small? Our loss averages the L1 over an image's 3,072 pixel values and the KL over its 256
# latent values, and weights the KL by 1e-4. The ELBO *sums* both over an image; on that scale our weight is
# 1e-4 x 3,072 / 256 = 1.2e-3. Stable Diffusion's autoencoder sums too, with a KL weight of 1e-6: about 1,000x
# less pull towards N(0, I) than ours. It adds two losses pixels cannot give: a perceptual one (LPIPS, distances
# between deep features) and an adversarial one (a patch discriminator), which keep textures sharp where a
# pixel loss averages them into blur.
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
trainer.fit(batches(images, recipe.batch_size, device=device), recipe.steps,
            log_every=max(1, recipe.steps // 30), callback=LiveLoss("VAE loss"))
print(f"{trainer.seconds:.0f} s")
if profile.name != "smoke":
    assert sum(trainer.history[-20:]) / 20 < 0.7 * sum(trainer.history[:5]) / 5

# %% [markdown]
# A minute of CPU training gives a rough VAE. In the cpu profile the rest of the lesson uses the VAE that
# ships with `diffedu`: the same class, trained by the same `Trainer` on a GPU (its card says how). In the
# other profiles it uses the VAE you just trained.

# %%
from IPython.display import Markdown, display

from diffedu import pretrained

if profile.pretrained:
    vae = load_vae("vae-cifar10", device)
    display(Markdown(pretrained.card("vae-cifar10")))
else:
    vae = trainer.ema.model

# %% [markdown]
# ## Reconstructions, and the floor they set
#
# Test images the VAE never saw, beside their reconstructions. **PSNR** measures the error in decibels
# (higher is better; +6 dB halves it).

# %%
n_test = min(len(test), 1024 if profile.name != "smoke" else 64)
originals = to_float(test.images[:n_test]).to(device)
reconstructions = torch.cat([vae.reconstruct(chunk) for chunk in originals.split(256)])
scores = psnr(reconstructions, originals)
print(f"reconstruction PSNR on {n_test} test images: mean {scores.mean():.2f} dB "
      f"(worst {scores.min():.1f}, best {scores.max():.1f})")
show_images(torch.cat([originals[:8], reconstructions[:8]]).cpu(), nrow=8,
            title="test images (top) and their reconstructions")
plt.show()
assert reconstructions.shape == originals.shape

# %% [markdown]
# ## What is in a latent?
#
# Each of the 4 latent channels of an image is an 8x8 picture. They keep a coarse copy of the image's layout;
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
# ## The latent scale factor
#
# The noise schedule ends in x_T ~ N(0, I), and the signal-to-noise ratio at step t is alpha_bar_t / (1 -
# alpha_bar_t) times the data's variance, so the schedule only means something for data of a known scale.
# Latents come out with whatever spread the VAE chose. So we measure their standard deviation over the data
# set and divide by it: the **scale factor**, which brings them to unit variance (Stable Diffusion's 0.18215
# does the same for its latents). It is stored in the VAE's config, so it travels with the checkpoint. From
# here on, in `diffedu`, "latents" always means *scaled* latents.
#
# Unit variance is *not* the pixels' scale. DDPM's schedule was designed for images in [-1, 1], where
# CIFAR-10's pixels have a standard deviation of about 0.5 (lesson 00 prints it): the same schedule puts
# scaled latents at about 4x the pixels' SNR at every t. The last cell of this section measures where that
# moves the point at which signal and noise are equal. So "the same schedule" is not the same difficulty for
# the pixel and the latent model; how much that changes the latent model's samples, we have not measured.
#
# ### Exercise 4.3: the scale factor
#
# Write `scale_factor(means)`: one number for the whole latent space, such that means * scale_factor has
# standard deviation 1. `means` holds the encoder's means for the whole data set, shape (N, 4, 8, 8).

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
print(f"latent std before scaling: {means.std():.3f}; scale factor 1/std = {scale:.4f}; "
      f"after scaling: {(means * scale).std():.3f}")
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
# ## Why the reconstructions are blurry, and the cure Stable Diffusion uses
#
# An 8x8x4 latent cannot pin down every detail of a 32x32 image: many images, differing in exactly where a
# stripe or an edge falls, share almost the same latent. The decoder must answer with *one* image, and a pixel
# loss tells it which: the squared error is smallest at the **mean** of those images, the L1 error at their
# per-pixel **median**. Both average away what the latent leaves uncertain. Here is the whole argument in one
# dimension: an edge that is at position 10 or at position 14, equally often.

# %%
edges = torch.stack([(torch.arange(24) >= at).float() for at in (10, 14)])  # two equally likely "images"
candidates = torch.linspace(0, 1, 101)  # for each pixel, find the value with the least expected error
l2_best = candidates[((candidates.view(-1, 1, 1) - edges) ** 2).mean(1).argmin(0)]
plt.figure(figsize=(7, 2.4))
plt.step(range(24), edges[0], where="mid", label="edge at 10", alpha=0.5)
plt.step(range(24), edges[1], where="mid", label="edge at 14", alpha=0.5)
plt.step(range(24), l2_best, where="mid", label="best for squared error", color="k")
plt.legend(fontsize=8), plt.title("the output a pixel loss rewards: neither edge"), plt.show()
print("best under squared error, pixels 9-15:", l2_best[9:16].tolist())  # 0.5 where the two disagree: a blur
assert torch.allclose(l2_best[10:14], torch.tensor(0.5))

# %% [markdown]
# Under L1 every value between 0 and 1 ties in the uncertain pixels (it picks one; neither edge is preferred),
# so L1 also has no reason to draw *an* edge. Only a loss that looks at the result as an image can say
# "that is not what an edge looks like".
#
# That loss is a **discriminator**: a small network trained at the same time to tell real images from decoded
# ones. Ours scores overlapping 18x18 patches (a PatchGAN, as in VQGAN and Stable Diffusion's autoencoder),
# one logit each, 8x8 per image. The decoder is rewarded when its patches pass for real, which a blurred patch
# never does. Both use **hinge losses** (Lim & Ye 2017; VQGAN):
#
# $$L_D = \tfrac12\,\mathbb E\big[\max(0,\,1 - D(x))\big] + \tfrac12\,\mathbb E\big[\max(0,\,1 + D(\hat x))\big], \qquad
#   L_{adv} = -\,\mathbb E\big[D(\hat x)\big]$$
#
# with x a real image and x-hat a decoded one. A real patch that already scores above 1, or a decoded one
# below -1, costs the discriminator nothing: it spends its effort on the patches it still gets wrong.
#
# ### Exercise 4.4: the discriminator's hinge loss
#
# Write `hinge_d_loss(real_logits, fake_logits)`: L_D above, averaged over every patch of the batch.

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
# How strongly should the decoder listen to the discriminator? The two losses have unrelated scales, so
# VQGAN sets the adversarial weight from their gradients at the decoder's last layer,
# lambda = 0.5 ||grad L1|| / ||grad L_adv||: the adversarial term pulls as hard as half the reconstruction
# term, whatever their sizes (`diffedu.adversarial.adaptive_weight`).
#
# We retrain **only the decoder** this way, the encoder frozen. The latents do not change, nor their scale
# factor, so every latent diffusion model trained on this VAE stays valid (lesson 05's, and the shipped ones).
# And we decode latents with Gaussian noise added (of a random std up to 0.3, in scaled units), about the size
# of a latent diffusion model's errors (lesson 05 measures them): a decoder that has only seen perfect latents
# turns those errors into mush; this one learns to draw a clean image anyway. With L1 alone that training made
# things worse (lesson 05): the blurry average is still what L1 rewards.
#
# A short run, with your hinge loss for the discriminator (`DecoderTrainer` in `diffedu.adversarial`; the
# discriminator learns alone for the first tenth of the steps):

# %%
import copy

from diffedu.adversarial import DecoderTrainer

decoder_recipe = profile.recipe("decoder")
stage = DecoderTrainer(copy.deepcopy(vae), lr=decoder_recipe.lr, warmup=decoder_recipe.steps // 10,
                       disc_loss=hinge_d_loss, device=device)
stage.fit(batches(images, decoder_recipe.batch_size, device=device), decoder_recipe.steps,
          log_every=max(1, decoder_recipe.steps // 20), callback=LiveLoss("decoder stage: L1 of noisy latents"))
untouched = all(torch.equal(a, b) for a, b in zip(stage.model.encoder.state_dict().values(),
                                                   vae.encoder.state_dict().values()))
print(f"{stage.step} steps in {stage.seconds:.0f} s; the encoder is untouched: {untouched}")

# %% [markdown]
# A few dozen steps only show the machinery. The shipped `vae-cifar10-gan` is `vae-cifar10`'s decoder after
# this stage ran for 8.5 minutes on a GPU, 31,762 steps (its card below; 50 minutes of a 2-core CPU made 4,616
# steps, and a decoder with KID 30 where this one has 19). Compare the two decoders on the same test
# images: PSNR, and **fine detail** (the energy of each image's Laplacian, relative to the real images': 1.0 is
# as much edge and texture as a photo), then on latents with noise of std 0.3, as a diffusion model makes them.

# %%
from diffedu.latent import decode_latents, encode_latents
from diffedu.metrics import fine_detail

if profile.pretrained:
    decoders = {"L1 decoder (vae-cifar10)": load_vae("vae-cifar10", device),
                "adversarial decoder (vae-cifar10-gan)": load_vae("vae-cifar10-gan", device)}
    display(Markdown(pretrained.card("vae-cifar10-gan")))
else:
    decoders = {"L1 decoder (yours)": vae, "after your decoder stage": stage.ema.model}
real_detail = fine_detail(originals)
latents = encode_latents(vae, originals)  # one encoder, so the same latents for both decoders
noisy = latents + 0.3 * torch.randn(latents.shape, generator=torch.Generator().manual_seed(0)).to(device)
rows = [originals[:8]]
for name, decoder in decoders.items():
    clean, blurred = decode_latents(decoder, latents), decode_latents(decoder, noisy)
    rows += [clean[:8], blurred[:8]]
    print(f"{name:40s} PSNR {psnr(clean, originals).mean():5.2f} dB, "
          f"fine detail {fine_detail(clean) / real_detail:.2f}; from noisy latents: "
          f"PSNR {psnr(blurred, originals).mean():5.2f} dB, detail {fine_detail(blurred) / real_detail:.2f}")
show_images(torch.cat(rows).cpu(), nrow=8, title="real; per decoder: from clean latents, from latents + noise 0.3")
plt.show()

# %% [markdown]
# ## Explore the latent space
#
# Pick two test images. Slide between their latents, and decode as you go; then take one channel and scale
# it or add noise to it, to see what it controls. Only the small decoder runs on each move.

# %%
latent_explorer(vae, originals[0].cpu(), originals[3].cpu())

# %% [markdown]
# ## Summary
#
# - The VAE turns a 32x32x3 image into an 8x8x4 latent, 12x fewer values, and back.
# - Its reconstruction error is a floor under any latent diffusion model built on it.
# - Scaled by the measured factor, the latents have unit variance, ready for the noise schedule.
# - A pixel loss rewards the blurry average; a patch discriminator rewards plausible detail. Retraining only
#   the decoder with it keeps the latent space, and so every model trained on it.
# - Lesson 05 trains the lesson 02 UNet on these latents.
