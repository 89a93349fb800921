# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10 · Consistency models: an image in one or two calls
#
# **What you will do here**
#
# - See why a one-step map from noise to image exists: it is the ODE's solution map.
# - Write the consistency function, with its boundary condition built in.
# - Write the consistency loss, and see why its target sits under a stop-gradient.
# - Tune the flow-matching model into a consistency model for a few minutes, and watch its one-step samples.
# - Write multistep consistency sampling, and compare 1, 2 and 4 calls with the other samplers.
#
# **Time:** about 2 minutes of computing in the `cpu` profile.
#
# Every sampler so far walks the ODE in steps, and below five calls they fall apart. **Consistency models** (Song
# et al. 2023) learn to jump to the end of the path in one call. We build one the cheap way, by **Easy Consistency
# Tuning** (ECT: Geng et al. 2024): start from a trained model and tune it.

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

from diffedu import check, pretrained, report
from diffedu.consistency import ect_r
from diffedu.data import batches, load_cifar10
from diffedu.env import get_device, seed_everything
from diffedu.oracles import GaussianVelocity
from diffedu.pipelines import Consistency, load_pipeline
from diffedu.profiles import get_profile
from diffedu.viz import LiveLoss, quality_plot, show_images

profile, device = get_profile(), get_device()
print(profile.note, f"Device: {device}.")

# %% [markdown]
# ## One jump to the end of the path
#
# Lesson 09's flow model carries noise $x_1$ at $t = 1$ to an image $x_0$ at $t = 0$ along its ODE. Each point
# $x_t$ of a path belongs to exactly one path, so it has exactly one end. Call that end $f(x_t, t)$: the ODE's
# **solution map**. A network that learned $f$ would make an image from noise in one call, $x_0 = f(x_1, 1)$.
#
# Euler's method with one step is not that map. It follows the velocity at the start. At pure noise that points
# at the average of all images, the same blur for every noise.

# %%
fm = load_pipeline("fm-cifar10", device)
noise = fm.noise(8, torch.Generator().manual_seed(0))
with torch.inference_mode():
    one = fm.sample(8, 1, x_T=noise, progress=False)
    many = fm.sample(8, 50, x_T=noise, progress=False)
show_images(
    torch.cat([one.cpu(), many.cpu()]),
    nrow=8,
    title="fm-cifar10 from the same noise: top, one Euler step; bottom, fifty",
)
plt.show()

# %% [markdown]
# ## The boundary condition
#
# Every path ends where it is at $t = 0$, so $f(x, 0) = x$. A consistency model builds this in, so that no
# network can break it:
#
# $$f(x_t, t) = c_\text{skip}(t)\, x_t + c_\text{out}(t)\, F_\theta(x_t, t),\qquad c_\text{skip}(0) = 1,\
# c_\text{out}(0) = 0.$$
#
# Song et al. took EDM's coefficients, written in EDM's noise level $\sigma$. Our flow model already has such a
# form. Its clean-image guess is $x_t - t\,v_\theta(x_t, t)$, since $x_t = x_0 + t\,(\varepsilon - x_0)$. That is
# $c_\text{skip} = 1$ and $c_\text{out} = -t$. ECT starts from its teacher's own form, so we start from this one:
# at the start of tuning, $f$ is fm-cifar10's denoiser.
#
# ### Exercise 10.1: the consistency function
#
# Write `consistency_fn(model, x_t, t)`: $x_t - t\,v$, with one $t$ per image (shape `(B,)`), so reshape it to
# scale whole images. The check also runs it on the exact consistency model of Gaussian data.


# %% nbgrader={"grade": false, "grade_id": "consistency_fn", "locked": false, "schema_version": 3, "solution": true, "task": false}
def consistency_fn(model, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The end of x_t's path, from a velocity model: x_t - t v(x_t, t), one t per image."""
    ### BEGIN SOLUTION
    return x_t - t.view(-1, 1, 1, 1).to(x_t.dtype) * model(x_t, t)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_consistency_fn", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.consistency_fn(consistency_fn)

# %% [markdown]
# ## Two points, one answer
#
# Take one image $x_0$ and one noise $\varepsilon$, and two times $r < t$. The points $x_t$ and $x_r$ lie on one
# line, and as $r$ nears $t$ they lie on one path. So $f$ must give them one answer. Our loss asks for that:
#
# $$\mathcal L = \frac{\lVert f(x_t, t) - \operatorname{stopgrad} f(x_r, r)\rVert^2}{\sigma_t - \sigma_r},
# \qquad \sigma = \frac{t}{1-t}.$$
#
# It is ECT's weighting with a squared distance. ECT itself divides a plain, unsquared distance (pseudo-Huber with
# $c = 0$) by the same gap, which its paper writes $t - r$ in EDM's noise levels.
#
# The answer at $r$ is nearer the data, so it is the easier one. The stop-gradient makes the model move its
# harder answer towards its easier one, never the reverse. Without it, the cheapest way to agree is for both
# answers to drift together, and the model can collapse. The target is the online network itself, not an
# averaged copy (Song and Dhariwal 2023). The gap between the two answers shrinks in step with
# $\sigma_t - \sigma_r$, so dividing by it keeps the gradient's size steady as the points come closer. $\sigma$
# is EDM's noise level, lesson 09's other clock for the same path.
#
# ### Exercise 10.2: the consistency loss
#
# Write `ct_loss(f, x0, t, r)`. Draw one noise, place $x_t$ and $x_r$ on its line, take the target without
# gradients (`torch.no_grad()`), and return the mean over images of each image's mean squared gap, divided by
# its $\sigma_t - \sigma_r$. Here `f(x, t)` is the consistency function, and `t`, `r` hold one time per image.


# %% nbgrader={"grade": false, "grade_id": "ct_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def ct_loss(f, x0: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """|| f(x_t, t) - stopgrad f(x_r, r) ||^2 / (sigma_t - sigma_r), one noise for both points."""
    ### BEGIN SOLUTION
    noise = torch.randn_like(x0)
    tt, rr = t.view(-1, 1, 1, 1).to(x0.dtype), r.view(-1, 1, 1, 1).to(x0.dtype)
    x_t, x_r = (1 - tt) * x0 + tt * noise, (1 - rr) * x0 + rr * noise
    with torch.no_grad():
        target = f(x_r, r)
    gap = ((f(x_t, t) - target) ** 2).flatten(1).mean(1)
    return (gap / (t / (1 - t) - r / (1 - r))).mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_ct_loss", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.ct_loss(ct_loss)

# %% [markdown]
# ## The curriculum of r
#
# How far apart should the two points be? Far apart, the target is easy to trust but says little about the path.
# Close together, it is exact but the signal is weak. We start with $r = 0$, where the target is the clean
# image itself: that is plain diffusion training, which the model already knows. (ECT's own first stage already
# has $r > 0$; this stage is the course's.) Then the gap halves, stage after stage. Here is its mapping from $t$ to $r$, in $\sigma$, for the stages after the first, where $r$ is
# still $0$:

# %%
sigma = torch.logspace(-2, 2, 200, dtype=torch.float64)
for stage in range(1, 7):
    r = ect_r(sigma, stage)
    plt.loglog(sigma, r / (1 - r), label=f"stage {stage}")
plt.loglog(sigma, sigma, "k:", label="r = t")
plt.xlabel("sigma_t"), plt.ylabel("sigma_r"), plt.legend(fontsize=8), plt.title("ECT's r for each t, stage by stage")
plt.show()

# %% [markdown]
# Before tuning, test the loss where you know the answer. For Gaussian data the exact consistency function is
# the flow's solution map. Nudge a map by $a\,t\,x$ and ask the loss which way $a$ should move: its gradient at
# $a = 0$. On the exact map the pull fades as the stages bring $r$ towards $t$: it is already consistent. On the
# one-step Euler jump, close but not constant along the paths, the pull stays.

# %%
velocity = GaussianVelocity(mean=0.2, std=0.3)
x0 = 0.2 + 0.3 * torch.randn(200_000, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
t = torch.full((len(x0),), 0.7, dtype=torch.float64)
maps = {
    "exact map": lambda x, s: velocity.flow(x, s, 0.0),
    "one Euler jump": lambda x, s: consistency_fn(velocity, x, s),
}
for stage in (2, 6, 10):
    pulls = []
    for f in maps.values():
        a = torch.zeros((), dtype=torch.float64, requires_grad=True)
        torch.manual_seed(2)  # the same noise for both maps
        loss = ct_loss(lambda x, s: f(x, s) + a * s.view(-1, 1, 1, 1) * x, x0, t, ect_r(t / (1 - t), stage))
        pulls.append(torch.autograd.grad(loss, a)[0].item())
    print(f"stage {stage:>2}: " + ", ".join(f"pull on the {name} {pull:+.1e}" for name, pull in zip(maps, pulls)))
assert abs(pulls[0]) < abs(pulls[1]) / 10  # by the last stage, the exact map is all but left alone

# %% [markdown]
# ## Tuning the flow model
#
# Now the real thing, briefly. `ConsistencyTrainer` draws $t$ for each image as ECT does, takes $r$ from the
# stage its step count has reached, and calls **your** `ct_loss` on the model's consistency function. Both calls
# of $f$ get the same dropout masks, so the two answers differ only by where they were asked. It trains in
# float32: half precision without loss scaling gave NaNs here.

# %%
recipe = profile.recipe("consistency")
print(recipe)
seed_everything(0)
trainer = recipe.trainer(device, loss_fn=ct_loss)
images = load_cifar10(train=True).images[: recipe.n_data]
with torch.inference_mode():
    start = fm.sample(8, 1, x_T=noise, progress=False)
trainer.fit(
    batches(images, recipe.batch_size, device=device),
    recipe.steps,
    log_every=max(1, recipe.steps // 30),
    callback=LiveLoss("consistency loss"),
)
print(f"{trainer.step} steps in {trainer.seconds:.0f} s, ending at curriculum stage {trainer.stage}")
assert all(loss == loss for loss in trainer.history)  # no NaN

# %% [markdown]
# Its one-step samples, from the same noise, before and after:

# %%
tuned = Consistency(trainer.model.eval())
with torch.inference_mode():
    after = tuned.sample(8, 1, x_T=noise, progress=False)
show_images(
    torch.cat([start.cpu(), after.cpu()]),
    nrow=8,
    title=f"one call each: top, fm-cifar10; bottom, after {trainer.step} steps of ECT",
)
plt.show()

# %% [markdown]
# A short run turns one grey blur, the same for every noise, into a different image for each noise, with colour
# and texture but no objects yet. The shipped `ect-cifar10` is the same tuning, run for longer; its card says
# where and how long.

# %%
display(Markdown(pretrained.card("ect-cifar10", history=False)))

# %% [markdown]
# ## More calls, better images
#
# One jump has to guess every detail at once. **Multistep consistency sampling** fixes what the first guess got
# wrong: put the image back on a line at a smaller $t$ with fresh noise, $x_t = (1 - t)\,x_0 + t\,z$, and jump
# again. Each step costs one call.
#
# ### Exercise 10.3: multistep consistency sampling
#
# Write `consistency_sample(f, x1, times, generator)`: jump from the noise at `times[0]`, then for each later
# time re-noise and jump again. Draw the fresh noise with `torch.randn(x0.shape, generator=generator,
# dtype=x0.dtype, device=x0.device)`, and give `f` one $t$ per image.


# %% nbgrader={"grade": false, "grade_id": "consistency_sample", "locked": false, "schema_version": 3, "solution": true, "task": false}
def consistency_sample(f, x1: torch.Tensor, times: list[float], generator: torch.Generator) -> torch.Tensor:
    """Multistep consistency sampling: x0 = f(x1, times[0]); then re-noise to each later t and jump again."""
    ### BEGIN SOLUTION
    x0 = f(x1, torch.full((len(x1),), times[0], dtype=x1.dtype))
    for t in times[1:]:
        x_t = (1 - t) * x0 + t * torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x0 = f(x_t, torch.full((len(x1),), t, dtype=x1.dtype))
    return x0
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_consistency_sample", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.consistency_sample(consistency_sample)

# %% [markdown]
# Your sampler on `ect-cifar10`, at 1, 2 and 4 calls, beside the other models' samplers at the same calls, all
# from the same noise. Multistep sampling re-noises at times spaced as flow Euler's grid: $1, \tfrac12$ for two
# calls.

# %%
ect, ddpm = load_pipeline("ect-cifar10", device), load_pipeline("ddpm-cifar10", device)
f = lambda x, t: consistency_fn(ect.unet, x, t)  # noqa: E731
rows, titles = [], []
with torch.inference_mode():
    for calls in (1, 2, 4):
        times = [1 - i / calls for i in range(calls)]
        rows.append(consistency_sample(f, noise, times, torch.Generator(device).manual_seed(0)).clamp(-1, 1))
        titles.append(f"ECT {calls}")
    for sampler, calls in (("ddim", 2), ("dpmpp2m", 3)):
        rows.append(ddpm.sample(8, calls, sampler=sampler, x_T=noise, progress=False))
        titles.append(f"{ddpm.scheduler(sampler, calls).title} {calls}")
    rows.append(fm.sample(8, 2, x_T=noise, progress=False))
    titles.append("flow Euler 2")
show_images(torch.cat([row.cpu() for row in rows]), nrow=8, title="rows, top to bottom: " + ", ".join(titles))
plt.show()

# %% [markdown]
# ## What one and two calls buy
#
# The quality table scores every sampler by the same protocol. Here FID and KID against model calls, with the
# consistency model beside the samplers of lessons 03, 08 and 09:

# %%
quality = pretrained.quality_table()
shown = dict(
    spaces=("pixel", "flow", "consistency"), samplers=("ddim", "dpmpp2m", "euler", "consistency"), spacings=("uniform",)
)
quality_plot(quality, "calls", **shown)
plt.show()

# %% [markdown]
# At equal calls, from the same noise. (DPM-Solver++(2M) in two steps is DDIM's two steps exactly: it has no
# earlier call to extrapolate from, and its last step is first-order.)

# %%
display(
    Markdown(
        report.verdicts(
            quality,
            {
                "At one, two and four calls, the consistency model against the other models' samplers": [
                    ("consistency 1", "flow Euler 1"),
                    ("consistency 1", "DDIM 1"),
                    ("consistency 2", "flow Euler 2"),
                    ("consistency 2", "DDIM 2"),
                    ("consistency 4", "DPM-Solver++(2M) 4"),
                ],
            },
        )
    )
)

# %% [markdown]
# And against the best the course had at more calls:

# %%
display(
    Markdown(
        report.verdicts(
            quality,
            {
                "The consistency model in two calls, against the flow model's Heun in five,": [
                    ("consistency 2", "flow Heun 3")
                ],
                "In one call, against DDIM in five, it": [("consistency 1", "DDIM 5")],
                "In two and in four calls, against DDIM in ten, it": [
                    ("consistency 2", "DDIM 10"),
                    ("consistency 4", "DDIM 10"),
                ],
            },
        )
    )
)

# %% [markdown]
# Where the last rows are worse, a few calls still leave a gap to many, which an hour of tuning on a laptop did not
# close. The card says how the model was tuned.
#
# ## Recap
#
# - A consistency model learns the ODE's solution map: one call from noise to image.
# - The boundary condition $f(x, 0) = x$ is built into the parametrisation; the flow model's own form has it.
# - Its loss asks two points of one line for one answer, the easier one under a stop-gradient, and a curriculum
#   brings the two points together.
# - Multistep sampling re-noises and jumps again: each extra call fixes some of what one jump got wrong.
#
# ## Questions to think about
#
# 1. What would go wrong if the boundary condition were only learned, not built in?
#
#    <details><summary>Answer</summary>
#
#    The loss only asks neighbouring points to agree. Without $f(x, 0) = x$ pinned, every point can agree on the
#    same wrong answer, for example a constant image, and the loss is zero.
#
#    </details>
#
# 2. Why does the curriculum start at $r = 0$ when tuning a trained diffusion model?
#
#    <details><summary>Answer</summary>
#
#    At $r = 0$ the target is the clean image, so the loss is the denoising loss the model was trained on. Tuning
#    starts where the model already is, and the stages move it gently towards consistency.
#
#    </details>
