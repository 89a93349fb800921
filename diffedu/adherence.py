"""Prompt adherence, measured (lesson 11): does the image show what its prompt asks for?

Never judged by the text encoder that conditions the model: a model is always good at pleasing its own judge.
- The class: lesson 07's independent probe, a linear classifier on TF-Inception features fit on the training
  images. Its accuracy on real test images (and on the VAE's reconstructions of them) is the ceiling; the empty
  prompt's samples (w = 0) the floor.
- Colour and brightness: the fixed rules that wrote the captions (diffedu.captions), applied to the samples; each
  read against its base rate, the share of the training images of that class the rule gives that word.
- All of them: the share of samples that meet every attribute their prompt asks for.

    table = adherence_table(load_pipeline("sd-cifar10"), train, test)   # python -m diffedu adherence
    print(report.adherence_table(table))                                 # as a markdown table

The table ships beside the model (`sd-cifar10.adherence.json`), and the lesson and the card print it from there.
"""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from . import captions, data, env, metrics
from .captions import BRIGHTNESS, CLASS_WORDS, COLOURS, HELD_OUT, NONE
from .evaluation import reconstruct_images, sample_images
from .pipelines import Diffusion, TextToImage
from .text import CLIP, class_prompts, colour_retrieval, zero_shot

FORMAT = 1
SCALES = (0.0, 1.0, 3.0, 5.0)
# Colour prompts: class-colour pairs named together in training, each common enough in its class to be learned,
# and the held-out ones (captions.HELD_OUT), never named together in training
SEEN = (("car", "red"), ("truck", "red"), ("airplane", "blue"), ("ship", "white"), ("cat", "white"), ("frog", "brown"))
PER_PAIR = 20  # colour prompts' images per pair
PER_BRIGHTNESS = 5  # "a dark photo of a ..." and "a bright photo of a ...": images per class and word


def share(hits: torch.Tensor) -> dict:
    """An accuracy with its standard error (binomial) and count."""
    n, p = len(hits), hits.float().mean().item() if len(hits) else math.nan
    return {"accuracy": p, "se": math.sqrt(p * (1 - p) / n) if n else math.nan, "n": n}


def text_encoder_scores(clip: CLIP, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """A text encoder's tests on held-out images (`python -m diffedu zeroshot`): zero-shot classification by 'a photo
    of a {class}', and colour retrieval; each an accuracy with its binomial standard error and count."""
    right = zero_shot(clip, images, class_prompts()) == labels
    named, picked = colour_retrieval(clip, images, labels)
    matched = picked == captions.attributes(images[named])[0]
    return {"zero-shot": share(right), "colour": share(matched), "colour chance": 1 / len(COLOURS)}


def base_rates(images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """(classes, words): the share of each class's training images that the rules call each colour and brightness."""
    colour, brightness = captions.attributes(images)
    rates = {}
    for name, found, words in (("colour", colour, COLOURS), ("brightness", brightness, BRIGHTNESS)):
        rates[name] = torch.stack(
            [torch.stack([(found[labels == y] == k).float().mean() for k in range(len(words))]) for y in range(10)]
        )
    return rates


def prompt_sets() -> dict[str, tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The prompts measured at every scale, by set: (prompts, class, colour, brightness asked for, NONE where not)."""
    sets = {}
    for name, pairs in (("colour, seen pairs", SEEN), ("colour, held-out pairs", HELD_OUT)):
        asked = [(CLASS_WORDS.index(c), COLOURS.index(k)) for c, k in pairs for _ in range(PER_PAIR)]
        sets[name] = (
            [captions.caption(y, k) for y, k in asked],
            torch.tensor([y for y, _ in asked]),
            torch.tensor([k for _, k in asked]),
            torch.full((len(asked),), NONE),
        )
    asked = [(y, b) for y in range(10) for b in range(len(BRIGHTNESS)) for _ in range(PER_BRIGHTNESS)]
    sets["brightness"] = (
        [captions.caption(y, brightness=b) for y, b in asked],
        torch.tensor([y for y, _ in asked]),
        torch.full((len(asked),), NONE),
        torch.tensor([b for _, b in asked]),
    )
    return sets


def judge(
    images: torch.Tensor, probe: metrics.LinearProbe, labels, colour, brightness, rates: dict, device
) -> tuple[dict, torch.Tensor]:
    """The adherence of a set of samples to what their prompts asked: class, colour and brightness (where asked),
    each with its base rate and lift, and all together. Returns the row and the samples' Inception features."""
    features = metrics.inception_features(images, device=device)
    right = {"class": probe.predict(features).cpu() == labels}
    row = {"class": share(right["class"])}
    found = dict(zip(("colour", "brightness"), captions.attributes(images)))
    for name, asked in (("colour", colour), ("brightness", brightness)):
        if (asked != NONE).any():
            right[name] = found[name] == asked
            base = rates[name][labels, asked.clamp_min(0)].mean().item()
            row[name] = {**share(right[name]), "base_rate": base, "lift": share(right[name])["accuracy"] / base}
    row["all"] = share(torch.stack(list(right.values())).all(0))
    return row, features


def adherence_table(
    pipe: TextToImage,
    train: data.ImageSet,
    test: data.ImageSet,
    *,
    baseline: Diffusion | None = None,
    scales=SCALES,
    baseline_scales=(3.0,),
    samples: int = 500,
    steps: int = 50,
    batch_size: int = 100,
    device=None,
    seed: int = 0,
) -> dict:
    """At each guidance scale: `samples` images for the class-only prompts 'a photo of a {class}' (the classes in
    turn, scored by class accuracy and by FID/KID against the training images), then the colour and brightness
    prompts (`prompt_sets`), all in `steps` DDIM steps from the same seeded noise at every scale. With `baseline`,
    a class-conditional pipeline (ldm-cifar10-cond): at each of `baseline_scales`, its samples of the same classes
    from the same noise, scored alike, and the paired differences; and the time per image of both at w = 3."""
    device = env.get_device(device)
    train_features = metrics.cached_features(train.images, device=device)
    reference, probe = metrics.Reference(train_features), metrics.LinearProbe(train_features, train.labels)
    rates = base_rates(train.images, train.labels)
    classes = torch.arange(samples) % 10
    class_prompts = [captions.caption(int(y)) for y in classes]
    none = torch.full((samples,), NONE)
    rows: dict[str, dict] = {}
    for w in tqdm(scales, desc="guidance scales"):
        draw = dict(steps=steps, guidance=w, batch_size=batch_size, seed=seed)
        images = sample_images(pipe, samples, prompts=class_prompts, **draw)
        row, features = judge(images, probe, classes, none, none, rates, device)
        row = {"guidance": w, "class-only prompts": {**row, **metrics.scores_of(features, reference)}}
        if baseline is not None and w in baseline_scales:
            theirs = sample_images(baseline, samples, classes=classes, **draw)
            their_row, their_features = judge(theirs, probe, classes, none, none, rates, device)
            row["baseline"] = {**their_row, **metrics.scores_of(their_features, reference)}
            row["paired"] = metrics.difference(features, their_features, reference)
        for name, (prompts, labels, colour, brightness) in prompt_sets().items():
            images = sample_images(pipe, len(prompts), prompts=prompts, **draw)
            row[name] = judge(images, probe, labels, colour, brightness, rates, device)[0]
        rows[str(w)] = row
    test_features = metrics.cached_features(test.images, device=device)
    reconstructions = reconstruct_images(pipe.vae, test.images, device)
    return {
        "format": FORMAT,
        "steps": steps,
        "samples": samples,
        "scales": rows,
        "ceiling": {
            "real test images": share(probe.predict(test_features).cpu() == test.labels),
            "VAE reconstructions": share(
                probe.predict(metrics.inception_features(reconstructions, device=device)).cpu() == test.labels
            ),
        },
        "seconds_per_image": seconds_per_image(pipe, baseline, steps, device) if baseline is not None else None,
        "reference": f"all {len(train)} CIFAR-10 training images",
    }


def seconds_per_image(pipe: TextToImage, baseline: Diffusion, steps: int, device, n: int = 100) -> dict:
    """Each model's time to make one image at w = 3 (both predictions in one batched call), `n` at a time."""
    times = {}
    for name, model, asked in (("text", pipe, {"prompt": "a photo of a car"}), ("baseline", baseline, {"classes": 1})):
        model.sample(4, 2, guidance=3.0, progress=False, **asked)  # warm-up
        start = time.perf_counter()
        model.sample(n, steps, guidance=3.0, progress=False, generator=0, **asked)
        times[name] = (time.perf_counter() - start) / n
    return {**times, "device": env.hardware()}


def plot(table: dict, ax=None):
    """Class, colour and brightness accuracy against the guidance scale, each with two standard errors, and the
    base rates (dotted) and the class ceiling (dashed) they are read against."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6.5, 3.8))[1]
    rows = list(table["scales"].values())
    w = [row["guidance"] for row in rows]
    for (name, attribute), colour in zip(
        (
            ("class-only prompts", "class"),
            ("colour, seen pairs", "colour"),
            ("colour, held-out pairs", "colour"),
            ("brightness", "brightness"),
        ),
        ("C0", "C1", "C3", "C2"),
    ):
        cells = [row[name][attribute] for row in rows]
        label = f"{attribute}" + (f" ({name.split(', ')[1]})" if ", " in name else "")
        ax.errorbar(
            w,
            [100 * c["accuracy"] for c in cells],
            [200 * c["se"] for c in cells],
            color=colour,
            marker="o",
            capsize=3,
            label=label,
        )
        if "base_rate" in cells[0]:
            ax.axhline(100 * cells[0]["base_rate"], color=colour, ls=":", lw=1)
    ax.axhline(
        100 * table["ceiling"]["real test images"]["accuracy"],
        color="C0",
        ls="--",
        lw=1,
        label="class: real test images",
    )
    ax.set_xlabel("guidance scale w"), ax.set_ylabel("% of images that obey"), ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper left"), ax.set_title("prompt adherence (dotted: base rates)")
    return ax
