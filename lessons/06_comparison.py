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
# **What you will do here**
#
# - Write FID and KID, the two standard measures of how close samples are to real images.
# - Measure FID's bias, and check that a score's standard error means what it says.
# - Time DDPM, DDIM and latent DDIM on your machine, and set the result beside a tutorial's reported numbers.
# - Read the shipped quality table: where each claim holds, and where it does not yet.
#
# **Time:** about 2 minutes of computing in the `cpu` profile.
#
# Lesson 00 made two claims. **DDIM is faster**: the same pixel model sampled in a few dozen steps instead of a
# thousand. **Latent diffusion is cheaper**: the UNet works on latents with twelve times fewer values, and one
# decoder call turns the result into an image.
#
# "Cheaper at comparable quality" needs a measure of quality. We use the two standard ones:
#
# - **FID** (Fréchet Inception Distance, Heusel et al. 2017): run real and generated images through the
#   Inception network, fit a Gaussian to each set of features, and measure the distance between the Gaussians.
# - **KID** (Kernel Inception Distance, Binkowski et al. 2018): an unbiased estimate of a kernel distance between
#   the same features.
#
# You write both. Then the bench, `diffedu.bench`, uses diffedu's: the same formulas, run on Inception features.

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

from diffedu import bench, check, env, metrics, pretrained, report
from diffedu.env import get_device
from diffedu.metrics import gaussian_fit
from diffedu.profiles import get_profile
from diffedu.viz import quality_plot, references_plot

profile, device = get_profile(), get_device()
print(profile.note, f"Device: {device}.")

# %% [markdown]
# ### Exercise 6.1: the Fréchet distance of two Gaussians
#
# $$d^2\big(\mathcal N(\mu_1, \Sigma_1), \mathcal N(\mu_2, \Sigma_2)\big) = \lVert\mu_1-\mu_2\rVert^2
# + \operatorname{Tr}\big(\Sigma_1+\Sigma_2-2(\Sigma_1\Sigma_2)^{1/2}\big)$$
#
# $(\Sigma_1\Sigma_2)^{1/2}$ is a *matrix* square root. $\Sigma_1\Sigma_2$ is not symmetric, but it has the same
# eigenvalues as the symmetric $A = \Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}$. So its trace is the sum of the square
# roots of $A$'s eigenvalues (`torch.linalg.eigh`; or `scipy.linalg.sqrtm` of the product, keeping the real
# part). Inputs are float64 tensors; return a Python float.


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
# KID compares two sets of features $x$ ($m$ of them) and $y$ ($n$) through the cubic kernel
# $k(a, b) = (a \cdot b / d + 1)^3$, with $d$ the feature dimension. The squared maximum mean discrepancy is
#
# $$\mathrm{MMD}^2 = \frac{1}{m(m-1)}\sum_{i\ne j} k(x_i, x_j) + \frac{1}{n(n-1)}\sum_{i\ne j} k(y_i, y_j)
# - \frac{2}{mn}\sum_{i,j} k(x_i, y_j)$$
#
# Leaving out the $i = j$ terms is what makes it unbiased: its expected value does not depend on $m$ and $n$.
# KID is this MMD² between the Inception features of the generated and the real images. Binkowski et al. average
# it over random subsets, to bound its cost on very large sets; at this course's counts diffedu takes the whole
# sets.


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
# Draw two sets of $n$ samples from the **same** Gaussian, ten times for each $n$: the true distance is zero. The
# FID estimated from them is not. A covariance estimated from few samples is noisy, and the noise adds distance,
# the more the fewer samples. The unbiased MMD² scatters around zero at every $n$, more widely when $n$ is
# small: on average it is right.

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
# With Inception's features instead of these, the bias is far larger. The shipped quality table scores 500 real
# test images as if they were samples, against two references: all the training images, and the other test images
# (held out):

# %%
quality = pretrained.quality_table()
for table in (quality, pretrained.quality_table("held-out")):
    real = table["rows"]["real test images"]
    print(
        f"real test images, {real['n']} of them against {table['reference']}: FID {real['fid']:.1f}, "
        f"KID x 1000 {1000 * real['kid']:.2f}"
    )

# %% [markdown]
# A model that samples like the data, without copying its training images, would score about those FIDs, far from
# zero, and a KID near zero. So compare FIDs only at equal counts and against one reference, and trust KID when
# samples are few.
#
# Why two references? A model that copied its training images would beat the real images against the training
# images, for it would match them exactly. Against held-out images copying gains nothing. Lesson 05 measured how
# far the latent UNet has begun to memorise, and every row is scored against both. The training images outnumber
# the held-out ones, which makes their FID the less biased of the two.

# %% [markdown]
# ## An error bar that means what it says
#
# A score from $n$ samples is itself random: draw another $n$ samples from the same model and it moves. How much
# is its **standard error**, and it can be estimated from the samples at hand, as for a mean.
#
# Give sample $i$ a little more weight, and the score moves by its *influence*. To first order, a score is its
# expected value plus the mean of its samples' influences, so its standard error is
# $\mathrm{std}(\text{influence})/\sqrt n$. For KID the
# influence of sample $i$ is $2(a_i - b_i)$: $a_i$ is its mean kernel with the other samples, and $b_i$ with the
# reference images. FID's has a closed form too (`diffedu.metrics.fid_and_influence`). The reference images are
# the same for every model scored, so only the samples' randomness counts.
#
# Does it keep its promise? Take one "model" (a Gaussian, shifted and stretched) and many independent sets of
# samples. Compare the true spread of their scores with the standard error that each set claims of itself.

# %%
generator = torch.Generator().manual_seed(0)
reference = metrics.Reference(torch.randn(2000, 64, generator=generator, dtype=torch.float64))
rows = [
    metrics.scores_of(1.2 * torch.randn(100, 64, generator=generator, dtype=torch.float64) + 0.1, reference)
    for _ in range(200)
]
for name, scale in (("FID", 1), ("KID x 1000", 1000)):
    key = name.split()[0].lower()
    values, claimed = (scale * torch.tensor([row[k] for row in rows]) for k in (key, f"{key}_se"))
    print(
        f"{name:>10}: mean {values.mean():6.2f}, true spread over 200 sets {values.std():.2f}, "
        f"standard error claimed by one set {claimed.mean():.2f} (from {claimed.min():.2f} to {claimed.max():.2f}): "
        f"{claimed.mean() / values.std():.2f}x the spread"
    )

# %% [markdown]
# The claimed error is not below the true spread: it errs on the large side, as the jackknife's does, and most for
# FID at small counts like these. The tests hold it there in many settings, and `benchmarks/standard_errors.py`
# checks it at the course's own counts, where it comes close. Every FID and KID below, in the shipped tables and
# on the model cards, carries this ±.
#
# Comparing two rows, one more thing helps. Two samplers of one model started from the same noise err together:
# image $i$ of one and image $i$ of the other come from the same $x_T$. So their difference is known far better
# than either score. Its standard error comes from the paired images' influences,
# $\mathrm{std}(\text{influence}_i - \text{influence}'_i)/\sqrt n$ (`metrics.difference`). For rows from different
# noise, it comes to about $\sqrt{\mathrm{se}_1^2 + \mathrm{se}_2^2}$. The shipped table keeps every image's
# influence, so any two rows can be compared:

# %%
a, b = "DDIM 20", "DDIM 100"
print(
    f"{a}: FID ± {quality['rows'][a]['fid_se']:.2f}; {b}: FID ± {quality['rows'][b]['fid_se']:.2f}; "
    f"their paired difference: ± {report.paired(quality, a, b)['fid_se']:.2f}"
)

# %% [markdown]
# ## One run of the bench
#
# The full bench (`python -m diffedu bench`) takes a long time on a CPU, most of it DDPM's thousand steps and the
# Inception network. Here we run its short version, or load the full run's JSON if you have run it in this
# profile: `python -m diffedu bench --profile cpu` writes `data/bench/cpu.json`.

# %%
result = None if profile.name == "smoke" else bench.saved_result(profile.name)
if result:
    print(
        f"Loaded {bench.results_path(profile.name)}: the full bench, run on {result['date']}. "
        "Delete the file to measure afresh here."
    )
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
# All of it, as the bench prints it. The reference columns are a tutorial's reported numbers for a run on one
# GPU, 100 epochs of the full CIFAR-10 (`diffedu/reference_numbers.json`). Its code and the number of samples
# behind its FIDs are not known, and FID falls as the count grows, so its FIDs and ours compare only loosely.

# %%
display(Markdown(report.tables(result)))

# %% [markdown]
# ## Sampling time
#
# The count of model calls sets the cost. DDIM makes a small fraction of DDPM's calls. Latent DDIM makes as many
# calls as pixel DDIM, each on far fewer values, plus one decoder call at the end. The model work per image
# (GFLOPs) is counted exactly, whatever the machine. The seconds are what your machine made of it.

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
axes[0].set(
    xscale="log",
    xlabel=f"seconds for {sampling['DDPM 1000']['images']} images (log scale)",
    title="time to sample",
    xlim=(min(seconds) / 2, 10 * max(seconds)),
)
axes[0].invert_yaxis()
bars = axes[1].barh(names, gflops, color=["C3", "C0", "C0", "C2"])
axes[1].bar_label(bars, [f"{g:.3g}" for g in gflops], padding=3)
axes[1].set(
    xscale="log",
    xlabel="GFLOPs of model work per image (log scale)",
    title="work per image",
    xlim=(min(gflops) / 2, 5 * max(gflops)),
)
axes[1].invert_yaxis()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Quality in this run: KID, not FID
#
# Two yardsticks sit beside the samplers, scored against the same reference at the same count:
#
# - **Real test images**: what a model would score that samples like the data without copying its training images.
# - **VAE reconstructions** of those images: the floor under latent diffusion. The latent model can at best
#   produce what the decoder can draw.
#
# The short bench scores only a few images per row. At that count FID says little. A bias shared by every row
# would cancel in their differences, but this is worse: with fewer images than Inception's 2,048 features, the
# fitted covariance is rank-deficient, and the distance mostly measures what so few images cannot estimate. KID
# is unbiased, so its mean is right at any count, but its error bar is wide.
# So we plot KID with its error bar here, and turn to the shipped table for FID.

# %%
n_scored = next(iter(scores.values()))["n"]
fig, ax = plt.subplots(figsize=(7, 3))
names = list(scores)
ax.errorbar(
    [1000 * scores[name]["kid"] for name in names],
    range(len(names)),
    fmt="o",
    xerr=[1000 * scores[name]["kid_se"] for name in names],
    capsize=3,
)
ax.set_yticks(range(len(names)), names)
ax.invert_yaxis()
ax.axvline(0, color="k", lw=0.5)
ax.set(
    xlabel="KID x 1000 (lower is better), ± its standard error", title=f"KID of this run's {n_scored} images per row"
)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Quality against time: the shipped table
#
# `python -m diffedu quality` measured FID and KID of the shipped models with every sampler, on hundreds of images
# each, and the seconds each image took to sample on the machine it names. Each point is a sampler at a step
# count: left is faster, down is better.

# %%
table = pretrained.quality_table()
# lesson 08 adds other samplers, and the flow-matching model
shown = dict(spaces=("pixel", "latent"), samplers=("ddpm", "ddim"), spacings=("uniform", "quadratic"))
quality_plot(table, "seconds", **shown)
plt.show()
display(Markdown(report.quality_table(table, **shown)))

# %% [markdown]
# Two levers show in the plot. **Steps** move a point left along its line, and **values per step** move the
# whole latent line left of the pixel one. The pairs below say what each lever costs in quality, with the time
# per image of each row.

# %%
display(
    Markdown(
        report.compare(
            table,
            ("DDIM 20", "DDIM 100"),
            ("DDIM 20", "DDPM 1000"),
            ("latent DDIM 50", "DDIM 50"),
            ("latent DDIM 50", "latent DDIM 50, L1 decoder"),
        )
    )
)
for a, b in (("DDIM 20", "DDPM 1000"), ("latent DDIM 50", "DDIM 50")):
    ratio = table["rows"][b]["seconds_per_image"] / table["rows"][a]["seconds_per_image"]
    print(
        f"{a} takes {1000 * table['rows'][a]['seconds_per_image']:.0f} ms per image, {b} "
        f"{1000 * table['rows'][b]['seconds_per_image']:.0f} ms: {ratio:.1f}x less time"
    )

# %% [markdown]
# ## Does the reference change the ranking?
#
# Every row again, once against each reference: across, the training images; up, the held-out ones. Where the points
# keep their order along both axes, the two references rank the rows alike.

# %%
references_plot(table, pretrained.quality_table("held-out"))
plt.show()
display(Markdown(report.rankings_agree(table)))

# %% [markdown]
# ## Training throughput
#
# A training step of each UNet on a fresh copy (loss, backward, optimizer, EMA), in images per second. The latent
# model is timed twice: from latents encoded once and cached, as `diffedu` does, and with the VAE's encoder run
# on every batch, as a naive pipeline would. The encoder works at full resolution, so the cache is what makes
# latent training cheap.

# %%
fig, ax = plt.subplots(figsize=(7, 2.8))
rates = [r["images_per_second"] for r in training.values()]
bars = ax.barh(list(training), rates, color=["C3", "C2", "C1"])
ax.bar_label(
    bars,
    [f"{r['images_per_second']:.0f}/s, {r['hours_per_100_epochs']:.1f} h per 100 epochs" for r in training.values()],
    padding=3,
)
ax.set(xlabel="training images per second", title="training throughput", xlim=(0, 1.6 * max(rates)))
ax.invert_yaxis()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The same arithmetic at larger sizes
#
# At CIFAR's size the saving is twelve times in values. At Stable Diffusion's sizes, with $f = 8$, it is larger,
# and self-attention, whose cost grows with the square of the positions, saves $f^4$ times.

# %% tags=["nbval-check-output"]
scaling = result["scaling"]
for r in scaling:
    print(
        f"{r['side']:>4}x{r['side']:<4}: {r['pixel']:>9,} pixel values -> {r['f4']:>7,} (f=4, {r['f4_ratio']:.0f}x) "
        f"or {r['f8']:>6,} (f=8, {r['f8_ratio']:.0f}x)"
    )

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
# ## What this run says
#
# The ratios from this run, beside the tutorial's:

# %%
ddpm, ddim100, ddim50, latent50 = (
    sampling[name]["seconds"] for name in ("DDPM 1000", "DDIM 100", "DDIM 50", "latent DDIM 50")
)
pixel_rate, cached_rate, encoded_rate = (
    training[name]["images_per_second"] for name in ("pixel", "latent, cached latents", "latent, encoder run per batch")
)
sizes = result["sizes"]
reference, hours = report.REFERENCE["sample_64_seconds"], report.REFERENCE["train_hours_per_100_epochs"]
print(
    f"DDIM 100 samples {ddpm / ddim100:.1f}x faster than DDPM 1000 "
    f"(reference: {reference['DDPM 1000'] / reference['DDIM 100']:.1f}x), DDIM 50 {ddpm / ddim50:.1f}x."
)
print(
    f"Latent DDIM 50 samples {ddpm / latent50:.1f}x faster than DDPM 1000 "
    f"(reference: {reference['DDPM 1000'] / reference['latent DDIM 50']:.1f}x) "
    f"and {ddim50 / latent50:.1f}x faster than pixel DDIM 50, with a UNet of "
    f"{sizes['latent UNet']['params'] / sizes['pixel UNet']['params']:.1f}x the parameters."
)
print(
    f"Latent training from cached latents runs at {cached_rate / pixel_rate:.2f}x the pixel rate "
    f"(reference: {hours['pixel'] / hours['latent']:.1f}x); with the encoder run per batch at "
    f"{encoded_rate / pixel_rate:.2f}x."
)
for name, q in scores.items():
    fid, kid = report.fid_kid(q)
    print(f"{name:>28}: FID {fid:>15}   KID x 1000 {kid:>14}   ({q['n']} images)")
if profile.name == "smoke":
    print("\nThe smoke profile's nets are untrained: these numbers only show that the code runs.")

# %% [markdown]
# ## What it means, and where latent diffusion loses
#
# - **Steps are the first lever.** DDIM's cost falls in proportion to its steps, and the pairs above say what that
#   costs in quality: the same trained model, an ODE path instead of a thousand random steps.
# - **Values per step are the second.** The latent UNet runs on far fewer values, so even a wider latent UNet
#   takes less time per step, and the two levers multiply.
# - **Where latent diffusion loses, here.** The latent model is cheaper per image, and the pairs above say how
#   its quality compares. Where its samples score above its decoder's floor (lesson 05), the latent UNet's own
#   error is what is left to win. Lesson 05 measured whether it has begun to memorise its small latent data set;
#   its card says what has been tried.
# - **Small images are latent diffusion's worst case.** At CIFAR's size the pixel UNet is already cheap, and the
#   encoder and decoder are fixed costs that the saving must pay for. At high resolution the saving is far
#   larger, above all in attention: that is where latent diffusion wins outright, and why Stable Diffusion uses
#   it.
# - **How far from the papers.** The shipped models are small and trained for minutes on a sample of CIFAR-10.
#   The DDPM paper's model has 35.7M parameters, trained for 800k steps on all the images, and reaches FID 3.17
#   with fifty thousand samples. FID at a few hundred samples cannot be set beside that number. The gaps between
#   rows of equal count are what this lesson measures.
#
# ## Recap
#
# - FID compares Gaussians fitted to features and is biased at small counts; KID is unbiased.
# - Every score has a standard error, and rows from the same noise have a much smaller paired one.
# - Fewer steps and fewer values per step are two levers on cost, and they multiply.
#
# ## Questions to think about
#
# 1. Why does FID come out above zero even for real images?
#
#    <details><summary>Answer</summary>
#
#    Its covariances are estimated from finite sets. The estimation noise adds distance, and it does not average
#    out: it is a bias, larger when the sets are small.
#
#    </details>
#
# 2. The latent model needs one decoder call per image. When could that cost outweigh its saving?
#
#    <details><summary>Answer</summary>
#
#    With very few sampling steps: the UNet's saving is paid per step, the decoder's cost once per image. At a
#    handful of steps on tiny images, the decoder's share grows.
#
#    </details>
#
# Next, lesson 07 adds the last piece of Stable Diffusion: conditioning, and guidance.
