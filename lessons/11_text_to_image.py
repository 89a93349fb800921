# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11 · Stable Diffusion in miniature: prompts in, images out
#
# **What you will do here**
#
# - Write captions for CIFAR-10 from the pixels, by fixed rules, and turn their words into tokens.
# - Write CLIP's contrastive loss, and test the text encoder it trained.
# - Write cross-attention, and put it into the latent UNet of lesson 05.
# - Fine-tune that UNet to follow prompts for a moment, then type prompts to the shipped one.
# - Measure how well the images obey their prompts, with judges that never saw the prompts.
#
# **Time:** about 1 minute of computing in the `cpu` profile.
#
# Stable Diffusion is four parts: a VAE, a UNet on its latents, a fast sampler, and text conditioning from CLIP.
# The course has built the first three. This lesson builds the fourth, from nothing but CIFAR-10.

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
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from diffedu import adherence, captions, check, pretrained, report
from diffedu.data import batches, load_cifar10
from diffedu.env import get_device, seed_everything
from diffedu.errors import DiffeduError
from diffedu.latent import cached_latents
from diffedu.nets import CrossAttention, count_parameters, text_conditioned, train_only_cross_attention
from diffedu.pipelines import load_pipeline, load_vae
from diffedu.profiles import get_profile
from diffedu.text import Tokenizer, class_prompts, colour_retrieval, zero_shot
from diffedu.training import text_eps_loss
from diffedu.viz import LiveLoss
from diffedu.widgets import prompt_widget

profile, device = get_profile(), get_device()
print(profile.note, f"Device: {device}.")

# %% [markdown]
# ## Four parts, one formula
#
# | part | what it does | where the course built it |
# | --- | --- | --- |
# | VAE | squeezes a 32x32x3 image into an 8x8x4 latent and back | lesson 04 |
# | latent UNet | predicts the noise in a noisy latent | lessons 02 and 05 |
# | DDIM | samples in 50 steps instead of 1,000 | lesson 03 |
# | text conditioning | tells the UNet what to draw, from the prompt's CLIP embeddings | this lesson |
#
# Lesson 07 stood a class label in for the prompt. A label says "car". A prompt can say "a dark photo of a red
# car". To learn that, the model needs images with captions.
#
# ## Captions the images earn
#
# CIFAR-10 has labels, not captions. So we write captions from the pixels, with rules a person would agree with:
#
# - **The class**, from the label ("automobile" becomes "car").
# - **The main colour**, from the central 16x16 pixels. Each pixel votes for a colour word by its hue, if it is
#   saturated and not too dark, or for "white". A word wins only if a third of the pixels vote for it.
#   Otherwise the caption names no colour.
# - **The brightness**, "dark" or "bright" by the picture's mean luma, and nothing in between.
#
# The rules live in `diffedu.captions`. Here they are at work:

# %%
train, test = load_cifar10(train=True), load_cifar10(train=False)
colour, brightness = captions.attributes(train.images)
fig, axes = plt.subplots(2, 6, figsize=(9.5, 4.2))
for ax, i in zip(axes.flat, range(12)):
    y = int(train.labels[i])
    ax.imshow(train.images[i].permute(1, 2, 0).numpy())
    ax.set_title(captions.caption(y, int(colour[i]), int(brightness[i])).replace(" of ", "\nof "), fontsize=8)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# A rule is blunt: it reads the sky around a grey plane as "blue" when the plane is small. Still, it is the same
# rule every time, and that is what we need. The same rules will later judge the model's images.
#
# CIFAR-10's colours are far from uniform. Each row below is a class; each cell is the share of its training
# images the rules give that word. Read every "is the car red?" figure later against its row here.

# %%
rates = adherence.base_rates(train.images, train.labels)
fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), gridspec_kw={"width_ratios": [len(captions.COLOURS), 2]})
for ax, (name, words) in zip(axes, (("colour", captions.COLOURS), ("brightness", captions.BRIGHTNESS))):
    ax.imshow(100 * rates[name], cmap="Blues", vmin=0, vmax=40)
    for row in range(10):
        for col in range(len(words)):
            ax.text(col, row, f"{100 * rates[name][row, col]:.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(words)), words, rotation=45), ax.set_yticks(range(10), captions.CLASS_WORDS)
    ax.set_title(f"% of each class's images with each {name} word")
plt.tight_layout()
plt.show()

# %% [markdown]
# Training sees each image with a fresh caption every time. The template is random: "a photo of ...", "a picture
# of ...", or the object alone. Each attribute is kept half the time, so that short prompts are learned too.
#
# A few class-colour pairs never appear together. In their captions the colour word is always dropped. Can the
# model still draw "a blue car" if it has seen blue things and cars, but never the two words together?

# %%
print("held out:", ", ".join(f"{c} {k}" for k, c in captions.HELD_OUT))
held = [next(i for i in range(len(train)) if captions.held_out(int(train.labels[i]), int(colour[i])))] * 4
print(
    f"the rules call image {held[0]} '{captions.caption(int(train.labels[held[0]]), int(colour[held[0]]))}'; "
    "training never says so:",
    captions.random_captions(
        train.labels[held], colour[held], brightness[held], torch.Generator().manual_seed(0), keep=1.0
    ),
)

# %% [markdown]
# ## A tokenizer
#
# A network reads numbers, not words. A **tokenizer** gives each word of the vocabulary an index, adds an end
# token, and pads every caption to the same length with a padding token.

# %%
tokenizer = Tokenizer(captions.vocabulary(), context=16)
ids, mask = tokenizer(["a dark photo of a red car", "a frog"])
print(f"{len(tokenizer)} tokens: {tokenizer.words}")
print(ids)
print("which tokens are real:", mask.int())
print("round trip:", [tokenizer.decode(row) for row in ids])
assert tokenizer.decode(ids[0]) == "a dark photo of a red car"

# %% [markdown]
# A word outside the vocabulary is an error that names the nearest words it knows, never a silent drop:

# %%
try:
    tokenizer(["a photo of a crimson car"])
except DiffeduError as error:
    print(error)

# %% [markdown]
# Stable Diffusion's CLIP uses a **byte-pair encoding** (BPE) instead. It starts from single bytes and merges the
# most frequent pairs again and again, until it has 49,408 tokens. Any text can then be written, a rare word as
# several pieces. Each token needs an embedding vector, as wide as the text encoder. Compare that table with
# this lesson's whole model:

# %%
clip = pretrained.load_clip("clip-cifar10").to(device)
ours = count_parameters(clip.text) + count_parameters(pretrained.load("ldm-cifar10-cond"))
for width, whose in ((768, "CLIP's"), (clip.config.width, "our")):
    table_size = 49_408 * width
    print(
        f"49,408 tokens at {whose} width {width}: {table_size / 1e6:.1f}M numbers, {table_size / ours:.1f} times "
        f"our text encoder and UNet together ({ours / 1e6:.1f}M parameters)"
    )

# %% [markdown]
# Our captions use a few dozen words, so a word per token is enough.
#
# ## Teaching a text encoder what words look like
#
# CLIP (Radford et al. 2021) trains two encoders together: one for images, one for text. Each maps its input to
# a vector. In a batch of image-caption pairs, the loss asks each image's vector to point the same way as its own
# caption's, and away from the other captions':
#
# 1. Normalise both sets of vectors, so that a dot product is a cosine similarity.
# 2. Multiply the similarities by a learned scale, one over a **temperature**: a small temperature makes the
#    softmax sharp.
# 3. Cross-entropy from images to captions (each row of the logits), and from captions to images (each column).
#    Average the two.
#
# One twist. Our captions repeat: a batch can hold "a car" three times. Each of the three is as right for each
# of those car images as its own. `same[i, j]` is true when captions i and j are the same words, and each row's
# target is shared among its true entries, `same / same.sum(1)`. (Our text encoder gives identical captions
# identical vectors, so here this changes no number: question 1 asks why. It matters wherever two right captions
# can land apart.)
#
# ### Exercise 11.1: the contrastive loss
#
# Write `contrastive_loss(image_emb, text_emb, scale, same)`. `F.cross_entropy` takes a target of probabilities
# as well as class indices. `same` is symmetric, so the captions' targets are the images' targets transposed.


# %% nbgrader={"grade": false, "grade_id": "contrastive_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: float, same: torch.Tensor) -> torch.Tensor:
    """CLIP's loss: cosine similarities times scale, cross-entropy both ways (averaged), identical captions sharing
    the target."""
    ### BEGIN SOLUTION
    logits = scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    targets = same.float() / same.float().sum(1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T)) / 2
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_contrastive_loss", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.contrastive_loss(contrastive_loss)

# %% [markdown]
# The shipped `clip-cifar10` was trained with this loss: a 3-layer transformer reads the caption, a small
# residual network reads the image. Its card says how, on what machine, and for how long.

# %%
display(Markdown(pretrained.card("clip-cifar10", history=False)))

# %% [markdown]
# Nothing in its loss mentions classes. Yet it can classify. Embed the prompt "a photo of a {class}" for each
# class, and give each test image the class whose prompt lies nearest. This is CLIP's **zero-shot**
# classifier. Here it is on the held-out test images, measured now:

# %%
prompts = class_prompts()
with torch.inference_mode():
    picked = zero_shot(clip, test.images, prompts)
accuracy = (picked == test.labels).float()
print(f"zero-shot accuracy on {len(test)} test images: {accuracy.mean():.1%} (chance: 10%)")
per_class = torch.stack([accuracy[test.labels == y].mean() for y in range(10)])
plt.figure(figsize=(7, 2.6))
plt.bar(captions.CLASS_WORDS, 100 * per_class)
plt.axhline(10, color="k", ls=":", label="chance")
plt.ylabel("% right"), plt.title("zero-shot, by class: 'a photo of a {class}'"), plt.legend()
plt.show()

# %% [markdown]
# Colours too. For each test image the rules gave a colour, ask which of "a {colour} {its class}" lies nearest:

# %%
named, picked = colour_retrieval(clip, test.images, test.labels)
right = picked == captions.attributes(test.images[named])[0]
print(
    f"colour picked right for {right.float().mean():.1%} of {len(named)} test images "
    f"(chance: {1 / len(captions.COLOURS):.0%})"
)

# %% [markdown]
# Like Stable Diffusion's CLIP, ours is now **frozen**. The UNet learns to read its text encoder. What it reads
# is not the one caption vector the loss compared: it is the **token states**, one vector per token, each having
# read the words up to it.
#
# ## Cross-attention: where words enter the UNet
#
# Self-attention (lesson 02) lets every pixel of a feature map look at every other pixel. **Cross-attention**
# lets every pixel look at the words:
#
# $$\operatorname{CrossAttention}(x, c) = \operatorname{softmax}\!\left(\frac{(x W_Q)(c W_K)^\top}{\sqrt d}
# \right) c W_V.$$
#
# The **queries** come from the image's positions $x$: "what do I need here?". The **keys** and **values** come
# from the token states $c$: "what each word offers". $d$ is the queries' width. Padding tokens carry nothing, so
# their scores are set to $-\infty$ before the softmax, and they get no weight.
#
# ### Exercise 11.2: cross-attention
#
# Write `cross_attention(x, context, mask, w_q, w_k, w_v)` for one head. `x` is `(batch, positions, channels)`,
# `context` is `(batch, tokens, the text's width)`, and `mask` is `(batch, tokens)`, true for real tokens. $d$ is
# the width of the queries, `w_q.shape[1]`. The check compares yours with PyTorch's `scaled_dot_product_attention`.


# %% nbgrader={"grade": false, "grade_id": "cross_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def cross_attention(
    x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v: queries from the image, keys and values from the text, padding masked."""
    ### BEGIN SOLUTION
    q, k, v = x @ w_q, context @ w_k, context @ w_v
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    return scores.softmax(-1) @ v
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_cross_attention", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check.cross_attention(cross_attention)

# %% [markdown]
# `diffedu.nets.CrossAttention` is the same with several heads, a GroupNorm before it, and a residual around it:
# $x + \operatorname{out}(\operatorname{CrossAttention}(x, c))$. We add one after every block of lesson 07's
# class-conditional UNet, at both of its resolutions, 8x8 and 4x4. The output projection starts at zero. So the
# new UNet first predicts exactly what its base predicted without a label, whatever the prompt. Fine-tuning
# starts from the model it was given.

# %%
base = pretrained.load("ldm-cifar10-cond", device)
unet = text_conditioned(base, clip.config.width).eval()
where = [name for name, module in unet.named_modules() if isinstance(module, CrossAttention)]
print(f"{len(where)} cross-attention layers: {', '.join(where)}")
print(f"parameters: {count_parameters(base) / 1e6:.2f}M -> {count_parameters(unet) / 1e6:.2f}M")
x, t = torch.randn(4, 4, 8, 8, device=device), torch.tensor([10, 200, 500, 900], device=device)
with torch.inference_mode():
    context, context_mask = clip.encode_prompts(["a red car", "a frog", "a dark photo of a ship", ""])
    gap = (unet(x, t, context=context, mask=context_mask) - base(x, t, None)).abs().max().item()
print(f"largest difference from the base's unconditional prediction: {gap:.1e}")
assert gap < 1e-4

# %% [markdown]
# ## Fine-tuning, live
#
# Training is lesson 07's, with captions where the labels were. Each latent gets a fresh caption, read by the
# frozen text encoder. One caption in ten is replaced by the **empty prompt**, so that the model also learns to
# draw without one. The empty prompt plays the part of lesson 07's "no label", and guidance mixes the two
# predictions as before.
#
# For this short run we train only the new cross-attention layers. The rest of the UNet keeps what it knew, so
# the model can only get better at denoising as it learns to read the prompt. Watch the loss for a moment:

# %%
recipe = profile.recipe("text")
print(recipe)
seed_everything(0)
trainer = recipe.trainer(device)
trained = train_only_cross_attention(trainer.model)
print(f"training {trained / 1e6:.2f}M of its {count_parameters(trainer.model) / 1e6:.2f}M parameters")
vae = load_vae(recipe.vae, device)
images = train.images[: recipe.n_data]
words = torch.stack([train.labels[: len(images)], *captions.attributes(images)], 1)
latents, words = cached_latents(vae, images), torch.cat([words, words])  # the images, then their mirror images


def fixed_loss(model) -> float:
    """The loss on the first 256 latents with fixed captions, timesteps and noise: only the model changes."""
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        return text_eps_loss(model, (latents[:256].to(device), words[:256]), recipe.noise_schedule(), clip).item()


before = fixed_loss(trainer.ema.model)
trainer.fit(
    batches(latents, recipe.batch_size, labels=words, flip=False, device=device),
    recipe.steps,
    log_every=max(1, recipe.steps // 20),
    callback=LiveLoss("denoising loss, with prompts"),
)
after = fixed_loss(trainer.ema.model)
print(f"{trainer.step} steps in {trainer.seconds:.0f} s; loss on a fixed batch: {before:.4f} -> {after:.4f}")
assert after < before or profile.name == "smoke"  # (the smoke profile's few steps prove nothing)

# %% [markdown]
# A few dozen steps move the loss only a little: most of it is noise no prompt can predict. The shipped
# `sd-cifar10` is the same fine-tuning of every weight, run for much longer:

# %%
display(Markdown(pretrained.card("sd-cifar10", history=False)))

# %% [markdown]
# ## Your prompts
#
# Type a prompt and press Enter. Use the words of the tokenizer above. The guidance slider is lesson 07's $w$:
# 0 ignores the prompt, 1 follows it without guidance, more pushes further. Under the images, each row shows
# where one word was looked at. It is the word's cross-attention weight at each latent position, averaged over
# heads, layers and steps: brighter where the image read it more.

# %%
sd = load_pipeline("sd-cifar10", device)
steps = 50 if profile.pretrained else 5
prompt_widget(sd, "a photo of a red car", n=4, steps=steps, guidance=3.0)

# %% [markdown]
# The same with your own code: `sd.sample(8, prompt="a bright picture of a white ship", guidance=3)`. A prompt
# may also be a list, one per image.

# %%
with torch.inference_mode():
    grid = sd.sample(
        8,
        steps,
        prompt=[captions.caption(y, template=2) for y in range(8)],
        guidance=3.0,
        generator=0,
        progress=False,
    )
fig, axes = plt.subplots(1, 8, figsize=(9.5, 1.8))
for ax, image, y in zip(axes, grid.cpu(), range(8)):
    ax.imshow(((image.permute(1, 2, 0) + 1) / 2).clamp(0, 1))
    ax.set_title(captions.caption(y, template=2), fontsize=9), ax.axis("off")
plt.show()

# %% [markdown]
# ## Does the image obey the prompt?
#
# Never ask the text encoder that conditions the model: a model is always good at pleasing its own judge. We
# use judges that never saw a prompt:
#
# - **The class**: lesson 07's linear probe on Inception features, fit on the training images. Real test images
#   are its ceiling. The empty prompt's images, at $w = 0$, are its floor.
# - **Colour and brightness**: the very rules that wrote the captions. Read each against its **base rate**, the
#   share of that class's training images with that word.
# - **All together**: the share of images that meet every attribute their prompt asks for.
#
# The table was measured on the shipped models by `python -m diffedu adherence`. The card says on how many
# images: each prompt set in DDIM 50 steps, from the same noise at every $w$. ± is one standard error.

# %%
table = pretrained.adherence_table("sd-cifar10")
display(Markdown(report.adherence_table(table)))
adherence.plot(table)
plt.show()

# %% [markdown]
# ## Words never seen together
#
# The held-out pairs were never named together in training. Here each is asked for, from the same noise as a
# pair the model did see, "a photo of a red car":

# %%
pairs = [(captions.CLASS_WORDS.index(c), captions.COLOURS.index(k)) for c, k in (("car", "red"), *captions.HELD_OUT)]
rows = []
with torch.inference_mode():
    for y, k in pairs:
        rows.append(sd.sample(4, steps, prompt=captions.caption(y, k), guidance=3.0, generator=1, progress=False))
fig, axes = plt.subplots(len(pairs), 4, figsize=(5.2, 1.4 * len(pairs)))
for row, images, (y, k) in zip(axes, rows, pairs):
    for ax, image in zip(row, images.cpu()):
        ax.imshow(((image.permute(1, 2, 0) + 1) / 2).clamp(0, 1)), ax.set_xticks([]), ax.set_yticks([])
    row[0].set_ylabel(f"{captions.COLOURS[k]} {captions.CLASS_WORDS[y]}", rotation=0, ha="right", va="center")
plt.show()

# %% [markdown]
# What the table says at the scale the samples above used, in sentences written from it:

# %%
display(Markdown(report.adherence_in_words(table, 3.0)))

# %% [markdown]
# ## From here to Stable Diffusion
#
# Lesson 07's map of the course's parts against Stable Diffusion's, now with a text encoder and cross-attention
# on the course's side too. The course's side is read from the models themselves.

# %%
display(Markdown(report.stable_diffusion_parts(sd)))

# %% [markdown]
# ## Recap
#
# - Captions can be written from images by fixed rules. The same rules then judge whether an image obeys.
# - A tokenizer turns words into indices. BPE covers any text; a word list covers ours with a far smaller table.
# - CLIP's loss pulls each image towards its caption and away from the others, both ways, at a temperature.
# - Cross-attention takes queries from the image and keys and values from the words. Zero-initialised, it can
#   be added to a trained UNet without changing it.
# - Guidance with the empty prompt is lesson 07's guidance with "no label".
#
# ## Questions to think about
#
# 1. Our text encoder gives identical captions identical vectors. Why does sharing their target then change no
#    number of the loss?
#
#    <details><summary>Answer</summary>
#
#    Two identical captions make two identical columns of logits, so the softmax gives both the same probability
#    $p$. The one-hot target costs $-\log p$; the shared one costs $-\tfrac12 \log p - \tfrac12 \log p$, the
#    same. From the captions' side their two rows are identical too, and their losses add up to the same sum. The
#    shared target is still the right one: it stays right when two right captions embed apart, as a paraphrase
#    would, or a text encoder with dropout.
#
#    </details>
#
# 2. Why judge colour with the caption rules and not with the CLIP that conditions the model?
#
#    <details><summary>Answer</summary>
#
#    The UNet was trained to move its images wherever that CLIP's text encoder points. Asking that CLIP would
#    reward images that fool it. The rules know nothing of the model.
#
#    </details>
#
# 3. With a causal text encoder, the state of "a" in "a red car" has not read "car" yet. Which token states would
#    you expect the UNet to attend to most?
#
#    <details><summary>Answer</summary>
#
#    The content words, "red" and "car", and the end token, which has read the whole prompt. The word maps in
#    the widget show where each one went.
#
#    </details>
