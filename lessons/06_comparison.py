# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Pixel vs latent, DDPM vs DDIM: the comparison, measured
#
# The course made two claims in lesson 00. This lesson measures both on your machine, in one run, beside the
# numbers of the course's source material (one GPU, full CIFAR-10):
#
# 1. **DDIM is faster**: the same pixel model sampled in 100 or 50 steps instead of DDPM's 1000.
# 2. **Latent diffusion is cheaper**: the UNet works on 8x8x4 latents (256 values) instead of 32x32x3 pixels
#    (3,072), and one decoder call turns the result into an image.
#
# "Cheaper at comparable quality" needs a measure of quality. We use the two standard ones:
#
# - **FID** (Fréchet Inception Distance, Heusel et al. 2017): run real and generated images through the
#   Inception network, fit a Gaussian to each set of 2048 features, and measure the distance between them.
# - **KID** (Kernel Inception Distance, Binkowski et al. 2018): an unbiased estimate of a kernel distance
#   between the same features.
#
# You write both, then the bench uses diffedu's (the same formulas, run on Inception features).
#
# Everything below the exercises is `diffedu.bench`, which `python -m diffedu bench` runs outside the notebook too.

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
from IPython.display import Markdown, display

from diffedu import bench, check, env, metrics, pretrained, report
from diffedu.env import get_device
from diffedu.metrics import gaussian_fit
from diffedu.profiles import get_profile
from diffedu.viz import quality_plot

profile, device = get_profile(), get_device()
print(profile.note, f"Device: {device}.")

# %% [markdown]
# ### Exercise 6.1: the Fréchet distance of two Gaussians
#
# $$d^2\big(\mathcal N(\mu_1, \Sigma_1), \mathcal N(\mu_2, \Sigma_2)\big) = \lVert\mu_1-\mu_2\rVert^2
# + \operatorname{Tr}\big(\Sigma_1+\Sigma_2-2(\Sigma_1\Sigma_2)^{1/2}\big)$$
#
# (Sigma_1 Sigma_2)^(1/2) is a *matrix* square root. Sigma_1 Sigma_2 is not symmetric, but it has the same
# eigenvalues as the symmetric A = Sigma_1^(1/2) Sigma_2 Sigma_1^(1/2), so its trace is the sum of the square roots
# of A's eigenvalues (`torch.linalg.eigh`; or `scipy.linalg.sqrtm` of the product, keeping the real part).
# Inputs are float64 tensors; return a Python float.

# %% nbgrader={"grade": false, "grade_id": "frechet_distance", "locked": false, "schema_version": 3, "solution": true, "task": false}
def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """The squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    ### BEGIN SOLUTION
    values, vectors = torch.linalg.eigh(sigma1)
    root1 = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp_min(0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + sigma1.trace() + sigma2.trace() - 2 * cross)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_frechet_distance", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.frechet_distance(frechet_distance)

# %% [markdown]
# ### Exercise 6.2: KID's unbiased MMD²
#
# KID compares two sets of features x (m of them) and y (n) through the cubic kernel k(a, b) = (a·b / d + 1)³,
# d the feature dimension. The squared maximum mean discrepancy is
#
# $$\mathrm{MMD}^2 = \frac{1}{m(m-1)}\sum_{i\ne j} k(x_i, x_j) + \frac{1}{n(n-1)}\sum_{i\ne j} k(y_i, y_j)
# - \frac{2}{mn}\sum_{i,j} k(x_i, y_j)$$
#
# Leaving out the i = j terms is what makes it unbiased: its expected value does not depend on m and n.
# KID is this MMD² between the Inception features of the generated and the real images. (Binkowski et al. average
# it over random subsets of 1,000 to bound its cost at 50,000 images; at this course's counts diffedu takes the
# whole sets.)

# %% nbgrader={"grade": false, "grade_id": "mmd2_unbiased", "locked": false, "schema_version": 3, "solution": true, "task": false}
def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between feature sets x (m, d) and y (n, d) with the kernel (a.b / d + 1)^3."""
    ### BEGIN SOLUTION
    d, m, n = x.shape[1], len(x), len(y)
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_mmd2_unbiased", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.mmd2_unbiased(mmd2_unbiased)

# %% [markdown]
# ## Why KID goes beside FID: the bias, measured with your functions
#
# Draw two sets of n samples from the **same** 64-dimensional Gaussian, ten times for each n: the true distance
# is 0. The FID estimated from them is not: a covariance estimated from few samples is noisy, and the noise adds
# distance, the more the fewer samples. The unbiased MMD² scatters around 0 at every n (more widely when n is
# small): on average it is right.

# %%
generator = torch.Generator().manual_seed(0)
print(f"{'n':>5} | {'FID, mean ± std of 10':>21} | {'MMD^2 x 1000, mean ± std of 10':>30}")
for n in (100, 300, 1000, 3000):
    fids, mmds = [], []
    for _ in range(10):
        a, b = (torch.randn(n, 64, generator=generator, dtype=torch.float64) for _ in range(2))
        fids.append(frechet_distance(*gaussian_fit(a), *gaussian_fit(b)))
        mmds.append(1000 * mmd2_unbiased(a, b))
    fids, mmds = torch.tensor(fids), torch.tensor(mmds)
    print(f"{n:>5} | {fids.mean():>12.2f} ± {fids.std():<6.2f} | {mmds.mean():>21.2f} ± {mmds.std():<6.2f}")

# %% [markdown]
# With 2048 Inception features instead of 64, the bias is far larger: real CIFAR-10 test images, which a perfect
# generator would match, score FID 57.8 at 500 images (against the 5,170 training images of the sample) and 172.8
# at 64 (against 1,000), with KID x 1000 of 0.1 and -0.5. So compare FIDs only at equal counts, and trust KID when
# samples are few.

# %% [markdown]
# ## An error bar that means what it says
#
# A score from n samples is itself random: draw another n samples from the same model and it moves. How much
# is its **standard error**, and it can be estimated from the n samples at hand, as for a mean. Give sample i a
# little more weight and the score moves by its *influence*; a score is, to first order, the mean of its
# samples' influences, so its standard error is std(influence) / sqrt(n). For KID the influence of sample i is
# 2 (a_i - b_i), a_i its mean kernel with the other samples and b_i with the reference images; FID's has a
# closed form too (`diffedu.metrics.fid_and_influence`). The reference images are the same for every model
# scored, so only the samples' randomness counts; the difference between two rows has a standard error of
# about sqrt(se_1² + se_2²).
#
# Does it keep its promise? One "model" (a Gaussian, shifted and stretched), 200 independent sets of 100
# samples: the true spread of their scores, beside the standard error that each set claims of itself.

# %%
generator = torch.Generator().manual_seed(0)
reference = metrics.Reference(torch.randn(2000, 64, generator=generator, dtype=torch.float64))
rows = [metrics.scores_of(1.2 * torch.randn(100, 64, generator=generator, dtype=torch.float64) + 0.1, reference)
        for _ in range(200)]
for name, scale in (("FID", 1), ("KID x 1000", 1000)):
    key = name.split()[0].lower()
    values, claimed = (scale * torch.tensor([row[k] for row in rows]) for k in (key, f"{key}_se"))
    print(f"{name:>10}: mean {values.mean():6.2f}, true spread over 200 sets {values.std():.2f}, "
          f"standard error claimed by one set {claimed.mean():.2f} (from {claimed.min():.2f} to {claimed.max():.2f})")

# %% [markdown]
# The claim errs on the large side, as the jackknife's does: here by about 1.5x for FID and 1.1x for KID, and
# 1.0-1.5x, never below, in every setting the tests try. Where it matters, at the course's own counts (500 samples
# of 2,048 features with Inception's covariance, against 5,170), it was 1.02x for FID and 1.03x for KID; a
# bootstrap over the samples, the other usual recipe, overstated FID's spread 2.8x there
# (`benchmarks/standard_errors.py`). Every FID and KID below, in the shipped tables and on the model cards,
# carries this ± .
#
# Comparing two rows, one more thing helps. Two samplers of one model started from the same noise (image i of
# DDIM 20 and image i of DDIM 100 come from the same x_T) err together, so their difference is known far better
# than either score: its standard error is std(influence_i - influence'_i) / sqrt(n), from the paired images
# (`metrics.difference`). For the shipped pixel model at 500 images each score is ±1.3 in FID, while DDIM 20
# against DDIM 100 is known to ±0.8, and DDIM 100 quadratic against uniform to ±0.3.

# %% [markdown]
# ## One run of the bench
#
# The full bench (`python -m diffedu bench`) scores 64 images per sampler on a CPU, which takes about 25
# minutes on 2 cores, most of it DDPM's 1000 steps and the Inception network (about 13 images per second there).
# Here we run its short version, or load the full run's JSON if you have run it in this profile:
# `python -m diffedu bench --profile cpu` writes `data/bench/cpu.json`.

# %%
result = None if profile.name == "smoke" else bench.saved_result(profile.name)
if result:
    print(f"Loaded {bench.results_path(profile.name)}: the full bench, run on {result['date']}. "
          "Delete the file to measure afresh here.")
else:
    settings = bench.settings_for(profile.name, quick=True)
    print(f"Running the short bench: {settings}")
    result = bench.run(profile, settings=settings, device=device)
    env.write_json(result, bench.results_path(profile.name, quick=True))
sampling, training, scores = result["sampling"], result["training"], result["scores"]["rows"]
assert list(sampling) == ["DDPM 1000", "DDIM 100", "DDIM 50", "latent DDIM 50"]

# %% [markdown]
# ## The tables
#
# All of it, as the bench prints it. The reference columns are the course's source material, as the course's
# design records it (`diffedu.report.REFERENCE`, read from `diffedu/reference_numbers.json`): 64 images sampled on one GPU, and its models trained for 100
# epochs on the full 50,000 CIFAR-10 images. How many samples its FIDs were computed from is not recorded, and
# FID falls as the sample count grows, so its FIDs and ours (16 to 500 samples) compare only loosely.

# %%
display(Markdown(report.tables(result)))

# %% [markdown]
# ## Sampling time
#
# The count of model calls sets the cost. DDIM 100 makes a tenth of DDPM's calls, DDIM 50 a twentieth. Latent
# DDIM 50 makes as many calls as DDIM 50, each on 12x fewer values, plus one decoder call at the end. The
# model work per image (GFLOPs) is counted exactly, independent of the machine; the seconds are what your
# machine made of it.

# %%
names = list(sampling)
seconds = [r["seconds"] for r in sampling.values()]
gflops = [r["gflops_per_image"] for r in sampling.values()]
ddpm_work = sampling["DDPM 1000"]["gflops_per_image"]  # 1000 UNet calls against 100 and 50
assert abs(ddpm_work / sampling["DDIM 100"]["gflops_per_image"] - 10) < 1e-9
assert abs(ddpm_work / sampling["DDIM 50"]["gflops_per_image"] - 20) < 1e-9

fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
bars = axes[0].barh(names, seconds, color=["C3", "C0", "C0", "C2"])
axes[0].bar_label(bars, [f"{s:.2f} s ({sampling['DDPM 1000']['seconds'] / s:.0f}x)" for s in seconds], padding=3)
axes[0].set(xscale="log", xlabel=f"seconds for {sampling['DDPM 1000']['images']} images (log scale)",
            title="time to sample", xlim=(min(seconds) / 2, 10 * max(seconds)))
axes[0].invert_yaxis()
bars = axes[1].barh(names, gflops, color=["C3", "C0", "C0", "C2"])
axes[1].bar_label(bars, [f"{g:.3g}" for g in gflops], padding=3)
axes[1].set(xscale="log", xlabel="GFLOPs of model work per image (log scale)", title="work per image",
            xlim=(min(gflops) / 2, 5 * max(gflops)))
axes[1].invert_yaxis()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Quality in this run: KID, not FID
#
# Two yardsticks sit beside the samplers, scored against the same reference at the same count:
#
# - **real test images**: what a perfect generator would score;
# - **VAE reconstructions** of those images: the floor under latent diffusion. The latent model can at best
#   produce what the decoder can draw, so it cannot beat its own autoencoder.
#
# The short bench scores only a few images per row (16 on a CPU). At that count FID says nothing: its bias (the
# section above) is larger than every difference between the rows, and even real images score far from 0. KID
# is unbiased, so its mean is right at any count, but with so few images its error bar is wide. So we plot KID
# with its error bar here, and turn to the shipped table, 500 images per row, for FID.

# %%
n_scored = next(iter(scores.values()))["n"]
fig, ax = plt.subplots(figsize=(7, 3))
names = list(scores)
ax.errorbar([1000 * scores[name]["kid"] for name in names], range(len(names)), fmt="o",
            xerr=[1000 * scores[name]["kid_se"] for name in names], capsize=3)
ax.set_yticks(range(len(names)), names)
ax.invert_yaxis()
ax.axvline(0, color="k", lw=0.5)
ax.set(xlabel="KID x 1000 (lower is better), ± its standard error",
       title=f"KID of this run's {n_scored} images per row")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Quality against time: the shipped table, 500 images per row
#
# `python -m diffedu quality` measured FID and KID of the shipped models with every sampler, 500 images each
# against all 5,170 training images, and the seconds each image took to sample on the machine it names. Each
# point is a sampler at a step count; left is faster, down is better.

# %%
table = pretrained.quality_table()
# lesson 08 adds other samplers, and the flow-matching model
shown = dict(spaces=("pixel", "latent"), samplers=("ddpm", "ddim"), spacings=("uniform", "quadratic"))
quality_plot(table, "seconds", **shown)
plt.show()
display(Markdown(report.quality_table(table, **shown)))

# %% [markdown]
# Two levers, read off the table:
#
# - **Steps.** Pixel DDIM 20 (35 ms per image) scores what DDIM 50 and 100 score (FID 105-106, KID x 1000 32-34;
#   against DDIM 100 from the same noise, FID +0.7 ± 0.8 and KID -2.1 ± 0.9, `benchmarks/paired_differences.py`),
#   at a fifth of DDIM 100's time and a fiftieth of DDPM 1000's (1,794 ms). DDPM 1000 has the best FID (99.3)
#   and the worst pixel KID (42.1): against DDIM 20, FID -6.9 ± 1.9 and KID +10.3 ± 2.4, so the metrics truly
#   disagree there. Below 20 steps quality goes: DDIM 10 scores FID 115.6, +9.3 ± 1.1 over DDIM 20.
# - **Values per step.** Latent DDIM takes 8, 13 and 30 ms per image at 10, 20 and 50 steps: latent DDIM 50 is
#   3.2x cheaper than pixel DDIM 50 (95 ms) and 60x cheaper than DDPM 1000. (The latent rows were timed on a day
#   when the machine ran 2.1x slower, measured with pixel DDIM 50 beside them, and are scaled by that ratio.)
# - **Close on FID, not yet on KID.** With the adversarial decoder (lesson 04) the latent rows score FID 107-117
#   and KID x 1000 46-61 (DDIM 50 to 10), against the pixel model's 105 and 33 (latent DDIM 50 against pixel
#   DDIM 50: FID +2.2 ± 2.0, a tie, and KID +12.9 ± 2.4), and above their own VAE's reconstructions (80.9 and
#   19.2). The grey cross is the same latent UNet decoded by the L1 decoder it replaced (FID 134.8, KID 93.2; its
#   reconstructions 102.8 and 53.4): the decoder stage and longer training closed two thirds of the KID gap to
#   the pixel model, and no sampler setting closes the rest; the last section says what might.

# %% [markdown]
# ## Training throughput
#
# A training step of each UNet on a fresh copy (loss, backward, optimizer, EMA), in images per second. The
# latent model is timed twice: from latents encoded once and cached (what `diffedu` does), and with the VAE's
# encoder run on every batch (what a naive pipeline would do). The encoder works at full 32x32 resolution, so
# the cache is what makes latent training cheap.

# %%
fig, ax = plt.subplots(figsize=(7, 2.8))
rates = [r["images_per_second"] for r in training.values()]
bars = ax.barh(list(training), rates, color=["C3", "C2", "C1"])
ax.bar_label(bars, [f"{r['images_per_second']:.0f}/s, {r['hours_per_100_epochs']:.1f} h per 100 epochs"
                   for r in training.values()], padding=3)
ax.set(xlabel="training images per second", title="training throughput", xlim=(0, 1.6 * max(rates)))
ax.invert_yaxis()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The same arithmetic at larger sizes
#
# At CIFAR's 32x32 the saving is 12x in values. At Stable Diffusion's sizes, with f = 8, it is 48x, and
# self-attention, whose cost grows with the square of the positions, saves 64² = 4,096x in positions squared.

# %% tags=["nbval-check-output"]
scaling = result["scaling"]
for r in scaling:
    print(f"{r['side']:>4}x{r['side']:<4}: {r['pixel']:>9,} pixel values -> {r['f4']:>7,} (f=4, {r['f4_ratio']:.0f}x) "
          f"or {r['f8']:>6,} (f=8, {r['f8_ratio']:.0f}x)")

# %%
sides = [r["side"] for r in scaling]
fig, ax = plt.subplots(figsize=(6, 3.5))
for key, label in (("pixel", "pixels"), ("f4", "latent, f = 4"), ("f8", "latent, f = 8")):
    ax.plot(sides, [r[key] for r in scaling], "o-", label=label)
ax.set(xscale="log", yscale="log", xlabel="image side", ylabel="values per image", title="what the UNet denoises")
ax.set_xticks(sides, [str(s) for s in sides])
ax.legend()
plt.show()

# %% [markdown]
# ## What the numbers say
#
# The ratios from this run, in words:

# %%
ddpm, ddim100, ddim50, latent50 = (sampling[name]["seconds"]
                                   for name in ("DDPM 1000", "DDIM 100", "DDIM 50", "latent DDIM 50"))
pixel_rate, cached_rate, encoded_rate = (training[name]["images_per_second"] for name in
                                         ("pixel", "latent, cached latents", "latent, encoder run per batch"))
sizes = result["sizes"]
print(f"DDIM 100 samples {ddpm / ddim100:.1f}x faster than DDPM 1000 (reference: 13.5x), DDIM 50 {ddpm / ddim50:.1f}x.")
print(f"Latent DDIM 50 samples {ddpm / latent50:.1f}x faster than DDPM 1000 (reference: 7.9x) "
      f"and {ddim50 / latent50:.1f}x faster than pixel DDIM 50, with a UNet of "
      f"{sizes['latent UNet']['params'] / sizes['pixel UNet']['params']:.1f}x the parameters.")
print(f"Latent training from cached latents runs at {cached_rate / pixel_rate:.2f}x the pixel rate "
      f"(reference: 1.3x); with the encoder run per batch at {encoded_rate / pixel_rate:.2f}x.")
for name, q in scores.items():
    fid, kid = report.fid_kid(q)
    print(f"{name:>28}: FID {fid:>15}   KID x 1000 {kid:>14}   ({q['n']} images)")
if profile.name == "smoke":
    print("\nThe smoke profile's nets are untrained: these numbers only show that the code runs.")

# %% [markdown]
# ## What it means, and where latent diffusion loses
#
# - **Steps are the first lever.** DDIM's cost falls in proportion to its steps, and its quality at 50-100
#   steps stays close to DDPM's 1000: the same trained model, an ODE path instead of 1000 random steps.
# - **Values per step are the second.** The latent UNet runs on 12x fewer values, so even a wider latent UNet
#   takes less time per step, and both levers multiply.
# - **Where latent diffusion loses, here.** With the shipped models the latent path is 3.2x cheaper per image at
#   50 steps, level on FID (+2.2 ± 2.0) and still clearly worse on KID: 46.0 against 33.1, a difference of
#   12.9 ± 2.4. Lessons 04 and 05 measured why. The L1 decoder blurred (its reconstructions kept 42% of real
#   images' fine detail, KID 53.4, already worse than the pixel model) and never learned to forgive the latent
#   UNet's errors, about as large as noise of std 0.3 on real latents, which took it to KID 102. The adversarial
#   decoder, trained on such noisy latents, lowered the floor to KID 19 and the samples to 53, with 0.6 dB less
#   PSNR. What is left is the latent UNet's error, decoded: training it on 4x more latents (7.5 minutes of a GPU
#   instead of 6,000 steps of 256) took the samples from 53 to 46, but longer still did not clearly help: 3.5 and
#   8 minutes of a GPU alone (13,971 and 31,211 steps) scored 43.2 and 46.9 (from the same noise: -2.8 ± 1.8 and
#   +0.9 ± 1.9), the longer one with smoother samples nearer the training images. The UNet has begun to fit its
#   5,170 images: more data or regularisation is the next lever. Ours are small models trained in minutes.
# - **Small images are latent diffusion's worst case.** At 32x32 the pixel UNet is already cheap, and the
#   encoder (at full resolution, once per training image) and decoder (once per sample) are fixed costs that
#   a 12x saving must pay for. At 512x512 the saving is 48x in values and far more in attention: that is where
#   latent diffusion wins outright, and why Stable Diffusion uses it.
# - **How far from the papers.** The shipped models are small (1-4M parameters) and trained for minutes on a
#   5,170-image sample; the DDPM paper's model has 35.7M parameters, trained for 800k steps on all 50,000
#   images, and reaches FID 3.17 with 50,000 samples. FID at a few hundred samples, as here, cannot be set
#   beside that number; the gaps between rows of equal count are what this lesson measures.
