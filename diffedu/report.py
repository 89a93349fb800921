"""Measurements as markdown tables and sentences: a bench result (diffedu.bench) beside the course's reference
numbers, the shipped quality table and a guidance curve (diffedu.evaluation), and comparisons of two rows with a
verdict. Every measured number a learner reads comes from its home through here, never typed into text.

    python -m diffedu.report    # rewrites README.md's claims and docs/models.md's table from the shipped measurements
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from . import pretrained
from .bench import CIFAR_TRAIN_IMAGES
from .env import rewrite_block
from .errors import DiffeduError
from .metrics import standard_error
from .nets import count_parameters
from .viz import SPACES, quality_rows

# What the measurements stand beside: the course's source material, its numbers and where they come from ("source").
REFERENCE = json.loads((Path(__file__).parent / "reference_numbers.json").read_text())


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(header))) + "|",
    ]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def tables(result: dict) -> str:
    """All of the result, one table per measurement."""
    m = result["machine"]
    on = [k for k, v in result["options"].items() if v] or ["none"]
    parts = [
        f"Measured on {m['device']} ({m['name']}, {m['threads']} threads, torch {m['torch']}), profile "
        f"`{result['profile']}`, {result['models']}; options on: {', '.join(on)}; {result['seconds']:.0f} s in all.",
        sizes_table(result),
        sampling_table(result),
        training_table(result),
    ]
    if result["scores"]:
        parts.append(scores_table(result))
    parts.append(scaling_table(result))
    return "\n\n".join(parts)


def sizes_table(result: dict) -> str:
    return "**The networks** (GFLOPs of one forward pass for one image)\n\n" + table(
        ["network", "parameters", "GFLOPs"],
        [[name, f"{r['params'] / 1e6:.2f}M", f"{r['gflops']:.3f}"] for name, r in result["sizes"].items()],
    )


def sampling_table(result: dict) -> str:
    sampling, seconds_ref = result["sampling"], REFERENCE["sample_64_seconds"]
    ddpm, ddpm_ref = sampling["DDPM 1000"]["seconds"], seconds_ref["DDPM 1000"]

    def reference(name) -> str:
        return f"{seconds_ref[name]} s ({ddpm_ref / seconds_ref[name]:.1f}x)" if name in seconds_ref else ""

    return (
        f"**Sampling {result['settings']['batch']} images** (the median of the timed runs after a warm-up; latent: "
        "decoding included; the reference: 64 images on one GPU)\n\n"
        + table(
            [
                "sampler",
                "steps",
                "model calls",
                "runs",
                "seconds",
                "ms per step",
                "speed-up vs DDPM 1000",
                "GFLOPs per image",
                "peak memory",
                "reference",
            ],
            [
                [
                    name,
                    r["steps"],
                    r["model_calls"],
                    r["runs"],
                    f"{r['seconds']:.2f}",
                    f"{r['ms_per_step']:.1f}",
                    f"{ddpm / r['seconds']:.1f}x",
                    f"{r['gflops_per_image']:.3g}",
                    _memory(r["peak_memory_mib"]),
                    reference(name),
                ]
                for name, r in sampling.items()
            ],
        )
    )


def _memory(mib: float | None) -> str:
    return "not measured (CUDA only)" if mib is None else f"{mib:.0f} MiB"  # (measure.PeakMemory says why)


def training_table(result: dict) -> str:
    training, s = result["training"], result["settings"]
    pixel_rate, ref_hours = training["pixel"]["images_per_second"], REFERENCE["train_hours_per_100_epochs"]
    return (
        f"**Training throughput** (batch {s['train_batch']}, {s['train_steps']} timed steps; 100 epochs = "
        f"{100 * CIFAR_TRAIN_IMAGES:,} images)\n\n"
        + table(
            ["run", "images/s", "vs pixel", "hours per 100 epochs", "reference hours"],
            [
                [
                    name,
                    f"{r['images_per_second']:.1f}",
                    f"{r['images_per_second'] / pixel_rate:.2f}x",
                    f"{r['hours_per_100_epochs']:.2f}",
                    ref_hours["pixel" if name == "pixel" else "latent"],
                ]
                for name, r in training.items()
            ],
        )
    )


def fid_kid(r: dict) -> list[str]:
    """A row's FID and KID x 1000, each ± its standard error over the samples (diffedu.metrics)."""
    return [f"{r['fid']:.2f} ± {r['fid_se']:.2f}", f"{1000 * r['kid']:.2f} ± {1000 * r['kid_se']:.2f}"]


SE_NOTE = "± the standard error: the spread of a score over draws of as many images"


def scores_table(result: dict) -> str:
    q = result["scores"]
    return (
        f"**FID and KID** against {q['reference']} (TF-Inception; lower is better; {SE_NOTE}). FID depends on "
        "the count: compare rows of equal n only.\n\n"
        + table(
            ["images", "n", "FID", "KID x 1000", "reference FID"],
            [[name, r["n"], *fid_kid(r), REFERENCE["fid"].get(name, "")] for name, r in q["rows"].items()],
        )
    )


def scaling_table(result: dict) -> str:
    return "**What the diffusion model denoises per image** (4 latent channels)\n\n" + table(
        ["image", "pixel values", "f = 4 latent", "ratio", "f = 8 latent", "ratio"],
        [
            [
                f"{r['side']}x{r['side']}x3",
                f"{r['pixel']:,}",
                f"{r['f4']:,}",
                f"{r['f4_ratio']:.0f}x",
                f"{r['f8']:,}",
                f"{r['f8_ratio']:.0f}x",
            ]
            for r in result["scaling"]
        ],
    )


def guidance_table(curve: dict) -> str:
    """A guidance curve (diffedu.evaluation.guidance_curve) as a table: w, FID, KID and class accuracy."""
    real = curve["real test images"]
    rows = [
        [f"w = {r['guidance']:g}", r["n"], *fid_kid(r), f"{100 * r['accuracy']:.1f}%"] for r in curve["scales"].values()
    ]
    rows.append(["real test images", real["n"], *fid_kid(real), f"{100 * real['accuracy']:.1f}%"])
    return (
        f"**Classifier-free guidance** ({curve['samples']} samples per scale, DDIM {curve['steps']} steps, "
        f"the classes in turn; FID/KID against {curve['reference']}, {SE_NOTE}; class accuracy by a linear probe "
        f"on the same Inception features, {100 * curve['probe_train_accuracy']:.1f}% on the images it was fit on)\n\n"
        + table(["images", "n", "FID", "KID x 1000", "class accuracy"], rows)
    )


def quality_table(
    curves: dict,
    samplers: tuple[str, ...] | None = None,
    spacings: tuple[str, ...] | None = None,
    spaces: tuple[str, ...] = SPACES,
) -> str:
    """The quality table (diffedu.evaluation.quality_table; the shipped one: diffedu.pretrained.quality_table()) as
    markdown; which rows: as diffedu.viz.quality_rows."""
    kept = quality_rows(curves, samplers, spacings, spaces)
    rows = [
        [
            label,
            r.get("steps", ""),
            r.get("model_calls", r.get("steps", "")),
            *fid_kid(r),
            f"{1000 * r['seconds_per_image']:.0f}" if r.get("space") else "",
            r["date"] if r.get("space") else "",
        ]  # a sampler's row, not a yardstick
        for label, r in kept.items()
    ]
    machines = {(m["name"], m["device"], m["threads"], m["torch"]) for m in (r["machine"] for r in kept.values())}
    where = (
        "{1} ({0}, {2} threads, torch {3})".format(*machines.pop())
        if len(machines) == 1
        else "the machine each row of the JSON names"
    )
    days = {r["date"] for r in kept.values() if r.get("space")}
    # a shared machine's speed drifts from day to day, so times compare surely only within one day
    drift = "; times measured on different days compare loosely" if len(days) > 1 else ""
    return (
        f"**FID / KID at {curves['samples']} images** against {curves['reference']} ({SE_NOTE}); sampling "
        f"time per image measured on {where}, batches of 100{drift}\n\n"
        + table(["images", "steps", "model calls", "FID", "KID x 1000", "ms / image", "measured"], rows)
    )


# ---- comparisons, in words -------------------------------------------------------------

LEVEL = 2.0  # the course's rule: a difference within this many standard errors is no difference ("level")
METRICS = (("fid", "FID", 1), ("kid", "KID x 1000", 1000))  # (key, name, scale as shown)


def verdict(difference: float, se: float) -> str:
    """'better', 'worse' or 'level' for a difference of scores where lower is better (FID, KID), by the course's
    rule: within LEVEL standard errors of zero it is level."""
    return "level" if abs(difference) <= LEVEL * se else "better" if difference < 0 else "worse"


def paired(table: dict, a: str, b: str) -> dict:
    """Row `a` minus row `b` of a quality table, FID and KID, each with the standard error of the difference from
    the two rows' per-image influences (diffedu.metrics.difference, without the features). Rows drawn from the same
    noise (two samplers of one model) err together, so their difference is known far better than either score;
    for other rows the pairing is arbitrary and this comes to about sqrt(se_a^2 + se_b^2)."""
    rows = []
    for label in (a, b):
        row = table["rows"].get(label)
        if row is None:
            raise DiffeduError(f"no row {label!r} in the quality table; rows: {', '.join(table['rows'])}")
        if "influence" not in row:
            raise DiffeduError(
                f"the row {label!r} keeps no per-image influences, which a paired difference needs: "
                f"measure it again, python -m diffedu quality --rows '{label}'"
            )
        rows.append(row)
    difference = {}
    for key, _, _ in METRICS:
        influences = [torch.tensor(row["influence"][key], dtype=torch.float64) for row in rows]
        if len(influences[0]) != len(influences[1]):
            raise DiffeduError(f"{a!r} and {b!r} were scored on different counts: no paired difference")
        difference[key] = rows[0][key] - rows[1][key]
        difference[f"{key}_se"] = standard_error(influences[0] - influences[1])
    return difference


def in_words(difference: dict) -> str:
    """A paired difference as a reader says it: 'level on FID, worse on KID'."""
    said = [(verdict(difference[key], difference[f"{key}_se"]), name.split()[0]) for key, name, _ in METRICS]
    if said[0][0] == said[1][0]:
        return f"{said[0][0]} on both"
    return ", ".join(f"{word} on {name}" for word, name in said)


def _signed(difference: dict, key: str, scale: float) -> str:
    return f"{scale * difference[key]:+.1f} ± {scale * difference[f'{key}_se']:.1f}"


def compare(quality: dict, *pairs: tuple[str, str]) -> str:
    """Pairs of quality-table rows as a markdown table: both rows' FID and KID against the table's reference, their
    paired difference with its standard error, and the verdict by the course's rule (LEVEL); then, where the table
    has held-out scores beside, the verdict against them, and a sentence on where the two references disagree."""
    rows, lines = quality["rows"], []
    held_out = _held_out(quality)
    for a, b in pairs:
        d, cells = paired(quality, a, b), [f"{a} vs {b}"]
        for key, _, scale in METRICS:
            cells += [f"{scale * rows[a][key]:.1f} vs {scale * rows[b][key]:.1f}", _signed(d, key, scale)]
        lines.append(cells + [in_words(d)] + ([in_words(paired(held_out, a, b))] if held_out else []))
    header = ["first vs second", "FID", "difference", "KID x 1000", "difference", "the first is"]
    return (
        f"**Paired comparisons** ({quality['samples']} images each, from the same noise where one model made both; "
        f"scores against {quality['reference']}; lower is better; within {LEVEL:g} standard errors is level)\n\n"
        + table(header + (["against held-out images"] if held_out else []), lines)
        + (f"\n\n{references_agree(quality, *pairs)}" if held_out else "")
    )


def _held_out(quality: dict) -> dict | None:
    """The table scored against its held-out images, if it has them (a format-4 table does) and is not that already."""
    has = quality.get("held_out_reference") not in (None, quality["reference"])
    return pretrained.scored_against(quality, "held-out") if has else None


def references_agree(quality: dict, *pairs: tuple[str, str]) -> str:
    """Whether held-out test images give each pair the verdict the training images give, in a sentence."""
    held_out = pretrained.scored_against(quality, "held-out")
    changed = [
        f"{a} vs {b} is {after} (against the training images: {before})"
        for a, b in pairs
        if (before := in_words(paired(quality, a, b))) != (after := in_words(paired(held_out, a, b)))
    ]
    against = "Against held-out test images"
    if not changed:
        return f"{against} every verdict is the same."
    return f"{against} {len(changed)} of {len(pairs)} verdicts change: {'; '.join(changed)}."


def rankings_agree(quality: dict) -> str:
    """Whether the two references rank the quality table's rows alike, in a sentence: the pairs of rows one reference
    calls better and the other worse, each beyond LEVEL standard errors (named, up to three), per score."""
    held_out, labels = pretrained.scored_against(quality, "held-out"), list(quality["rows"])
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]]
    differences = {(a, b): (paired(quality, a, b), paired(held_out, a, b)) for a, b in pairs}  # once, for both scores
    said = []
    for key, name, _ in METRICS:
        flipped = []
        for (a, b), both in differences.items():
            if {verdict(d[key], d[f"{key}_se"]) for d in both} == {"better", "worse"}:
                flipped.append(f"{a} vs {b}")
        shown = "; ".join(flipped[:3]) + ("; ..." if len(flipped) > 3 else "")
        said.append(f"{len(flipped)} on {name.split()[0]}" + (f" ({shown})" if flipped else ""))
    return (
        f"Of the {len(pairs):,} pairs of rows, the held-out images rank the other way round, beyond {LEVEL:g} "
        f"standard errors each way: {' and '.join(said)}."
    )


def verdicts(quality: dict, groups: dict[str, list[tuple[str, str]]]) -> str:
    """The paired comparisons of every group (`compare`), then what each group's say (`tally`)."""
    return f"{compare(quality, *(pair for pairs in groups.values() for pair in pairs))}\n\n{tally(quality, groups)}"


def tally(quality: dict, groups: dict[str, list[tuple[str, str]]]) -> str:
    """What groups of paired comparisons say, one sentence a group, written from their verdicts: {"At five calls,
    the flow model": [(a, b), (c, d)]} -> "At five calls, the flow model is better on FID in both pairs, and level
    on KID in 1 of 2 pairs and worse in 1." For sentences that conclude from a comparison, so that they follow the
    table."""
    said = []
    for subject, pairs in groups.items():
        found = [
            {name.split()[0]: verdict(d[key], d[f"{key}_se"]) for key, name, _ in METRICS}
            for d in (paired(quality, a, b) for a, b in pairs)
        ]
        by_metric = {name: _counted([v[name] for v in found]) for name in found[0]}
        if len(set(by_metric.values())) == 1:  # the same count on both metrics
            clause = _on("on both", next(iter(by_metric.values())))
        else:
            clause = ", and ".join(_on(f"on {name}", counted) for name, counted in by_metric.items())
        said.append(f"{subject} is {clause}.")
    return " ".join(said)


def _counted(verdicts: list[str]) -> tuple[tuple[str, int], ...]:
    order = ("better", "level", "worse")
    return tuple((word, verdicts.count(word)) for word in order if word in verdicts)


def _on(metric: str, counted: tuple[tuple[str, int], ...]) -> str:
    """'better on FID in both pairs', 'better on FID in 2 of 3 pairs and level in 1'."""
    total = sum(n for _, n in counted)
    (first, n), rest = counted[0], counted[1:]
    if not rest:
        return f"{first} {metric}" + {1: "", 2: " in both pairs"}.get(total, f" in all {total} pairs")
    return f"{first} {metric} in {n} of {total} pairs" + "".join(
        f"{' and' if i == len(rest) - 1 else ','} {word} in {m}" for i, (word, m) in enumerate(rest)
    )


def headline(quality: dict) -> str:
    """The course's two claims, as the shipped quality table measures them, in words: the README's opening and
    lesson 00's (whose next cell shows the paired differences behind the words)."""
    rows = quality["rows"]
    latent, pixel, ddim, ddpm = (rows[label] for label in ("latent DDIM 50", "DDIM 50", "DDIM 20", "DDPM 1000"))
    return (
        f"- **Latent diffusion is cheaper.** At {latent['steps']} steps each, latent DDIM makes an image "
        f"{pixel['seconds_per_image'] / latent['seconds_per_image']:.1f}x faster than pixel DDIM on a "
        f"{pixel['machine']['threads']}-thread CPU. In quality it is "
        f"{in_words(paired(quality, 'latent DDIM 50', 'DDIM 50'))} against the pixel model.\n"
        f"- **DDIM is faster.** From the same trained model, DDIM in {ddim['steps']} steps makes "
        f"{ddpm['model_calls'] // ddim['model_calls']}x fewer model calls than DDPM's {ddpm['steps']}, and is "
        f"{in_words(paired(quality, 'DDIM 20', 'DDPM 1000'))}.\n\n"
        f"Measured by FID and KID (lesson 03 introduces them) on {quality['samples']} images per sampler, against "
        f"the training images. A difference within {LEVEL:g} standard errors counts as level. "
        + references_agree(quality, ("latent DDIM 50", "DDIM 50"), ("DDIM 20", "DDPM 1000"))
    )


SHIPPED = {  # each shipped model: what it is, and the quality-table row that scores it
    "ddpm-cifar10": ("the pixel UNet of lesson 02", "DDIM 50"),
    "fm-cifar10": ("the same UNet and recipe, trained by flow matching (lesson 09)", "flow Euler 50"),
    "ect-cifar10": ("fm-cifar10 tuned into a consistency model (lesson 10)", "consistency 2"),
    "vae-cifar10": ("the VAE of lesson 04, with its L1 decoder", "L1-decoder reconstructions"),
    "vae-cifar10-gan": (
        "the same encoder, its decoder retrained adversarially (lesson 04)",
        "VAE reconstructions of them",
    ),
    "ldm-cifar10": ("the latent UNet of lesson 05, decoded by vae-cifar10-gan", "latent DDIM 50"),
}
GUIDED = ("ldm-cifar10-cond", 3.0)  # the class-conditional model (lesson 07), scored on its guidance curve at this w
TEXT = ("sd-cifar10", 3.0)  # the text-to-image model (lesson 11), scored on its adherence table's class-only prompts


def models_table(quality: dict, curve: dict) -> str:
    """The shipped models, each with the scores of its row in the quality table (the guided model's at its guidance
    scale): docs/models.md's table. Their standard errors are in the table and on the cards."""
    rows = [
        [
            f"`{name}`",
            what,
            label,
            f"{quality['rows'][label]['fid']:.1f}",
            f"{1000 * quality['rows'][label]['kid']:.1f}",
        ]
        for name, (what, label) in SHIPPED.items()
    ]
    name, w = GUIDED
    guided = curve["scales"][str(w)]
    rows.append(
        [
            f"`{name}`",
            f"the latent UNet, class-conditional (lesson 07): class accuracy {100 * guided['accuracy']:.0f}%",
            f"latent DDIM {curve['steps']}, w = {w:g}",
            f"{guided['fid']:.1f}",
            f"{1000 * guided['kid']:.1f}",
        ]
    )
    prompted = pretrained.adherence_table(TEXT[0])["scales"][str(TEXT[1])]
    rows.append(
        [
            f"`{TEXT[0]}`",
            f"ldm-cifar10-cond fine-tuned to follow prompts (lesson 11): class accuracy "
            f"{100 * prompted['class-only prompts']['class']['accuracy']:.0f}% on 'a photo of a {{class}}'",
            f"latent DDIM 50, w = {TEXT[1]:g}",
            f"{prompted['class-only prompts']['fid']:.1f}",
            f"{1000 * prompted['class-only prompts']['kid']:.1f}",
        ]
    )
    return (
        f"{quality['samples']} images per row against {quality['reference']}; lower is better. The quality table "
        "scores each row against held-out test images too (below).\n\n"
        + table(["model", "what", "scored on", "FID", "KID x 1000"], rows)
    )


def _percent(cell: dict) -> str:
    return f"{100 * cell['accuracy']:.1f}% ± {100 * cell['se']:.1f}"


ADHERENCE_SETS = ("class-only prompts", "colour, seen pairs", "colour, held-out pairs", "brightness")


def adherence_table(measured: dict) -> str:
    """A text-to-image model's adherence table (diffedu.adherence) in markdown: a row per guidance scale and prompt
    set, each attribute asked for as a share of the images with its standard error, beside its base rate."""
    lines = []
    for row in measured["scales"].values():
        for name in ADHERENCE_SETS:
            cell = row[name]
            asked = [
                f"{_percent(cell[a])} ({100 * cell[a]['base_rate']:.0f}%)" if a in cell else "" for a in ATTRIBUTES
            ]
            lines.append([f"{row['guidance']:g}", name, _percent(cell["class"]), *asked, _percent(cell["all"])])
    lines += [["", name, _percent(cell), "", "", ""] for name, cell in measured["ceiling"].items()]
    header = ["w", "prompts", "class", "colour (base rate)", "brightness (base rate)", "all asked for"]
    return table(header, lines)


ATTRIBUTES = ("colour", "brightness")


def accuracy_verdict(a: dict, b: dict) -> str:
    """'above', 'below' or 'level with': accuracy a against accuracy b of independent sets, by the course's rule
    (within LEVEL standard errors of the difference is level)."""
    difference, se = a["accuracy"] - b["accuracy"], math.hypot(a["se"], b["se"])
    return "level with" if abs(difference) <= LEVEL * se else "above" if difference > 0 else "below"


def adherence_in_words(measured: dict, w: float = 3.0) -> str:
    """What an adherence table says at guidance w, in sentences that follow from its numbers: class accuracy against
    the class-conditional baseline's, FID/KID paired with it, each attribute against its base rate, held-out pairs
    against seen ones."""
    row = measured["scales"][str(float(w))]
    ours, seen, unseen = row["class-only prompts"], row["colour, seen pairs"], row["colour, held-out pairs"]
    said = [f"At w = {w:g}, class accuracy on class-only prompts is {_percent(ours['class'])}"]
    if "baseline" in row:
        said[0] += (
            f", {accuracy_verdict(ours['class'], row['baseline']['class'])} the class-conditional model's "
            f"({_percent(row['baseline']['class'])}); against its images from the same noise these are "
            f"{in_words(row['paired'])} (FID {_signed(row['paired'], 'fid', 1)}, KID x 1000 "
            f"{_signed(row['paired'], 'kid', 1000)})"
        )
    for what, cell in (
        ("a colour, on seen pairs", seen["colour"]),
        ("a colour, on held-out pairs", unseen["colour"]),
        ("dark or bright", row["brightness"]["brightness"]),
    ):
        said.append(
            f"Asked for {what}, {_percent(cell)} of the images have it: {cell['lift']:.1f} times the "
            f"{100 * cell['base_rate']:.0f}% of training images of those classes"
        )
    said.append(
        f"Held-out pairs are {accuracy_verdict(unseen['colour'], seen['colour'])} seen ones on colour, and "
        f"{accuracy_verdict(unseen['all'], seen['all'])} them on class and colour together "
        f"({_percent(unseen['all'])} against {_percent(seen['all'])})"
    )
    timed = measured.get("seconds_per_image")
    if timed:
        said.append(
            f"An image at w = 3 takes {timed['text']:.3f} s, {timed['text'] / timed['baseline']:.2f} times the "
            f"class-conditional model's {timed['baseline']:.3f} s ({timed['device']})"
        )
    return ". ".join(said) + "."


# Stable Diffusion v1's parts, from its paper (Rombach et al. 2022) and CompVis' code: lessons 07 and 11 set the
# course's beside them
STABLE_DIFFUSION = {
    "autoencoder": "VAE, f = 8, L1 + LPIPS perceptual + patch-GAN losses, KL weight 1e-6; scale factor 0.18215",
    "noise schedule": "scaled-linear betas (linear in sqrt(beta)) from 0.00085 to 0.012, T = 1000",
    "denoiser": "UNet, 860M parameters, attention at several latent resolutions",
    "conditioning": "cross-attention to the CLIP text encoder's embeddings of the prompt",
    "text encoder": "CLIP ViT-L/14's text transformer (12 layers, width 768, 123M parameters), trained "
    "contrastively on 400M image-text pairs by OpenAI, frozen; byte-pair tokens, 49,408 of them, 77 per prompt",
    '"no label"': "the empty prompt's embedding, captions dropped 10% of the time",
    "guidance": "classifier-free, default w = 7.5",
    "sampler": "DDIM in CompVis' script (PLMS with --plms), PNDM in diffusers' pipeline; Euler, DPM-Solver++",
    "data": "LAION-2B-en first, then LAION's aesthetic subsets: hundreds of millions of captioned images",
}


def stable_diffusion_parts(pipe) -> str:
    """Lesson 11's map: each part of a text-to-image pipeline (diffedu.pipelines.TextToImage), read from the models
    themselves, beside Stable Diffusion v1's."""
    clip, vae, schedule = pipe.clip.config, pipe.vae.config, pipe.schedule
    ours = {
        "autoencoder": f"VAE, f = 4, L1 + KL, then the decoder retrained with a patch-GAN loss; scale factor "
        f"{vae.scale_factor:.4f}, measured",
        "noise schedule": f"linear betas from {schedule.betas[0]:.4f} to {schedule.betas[-1]:.2f}, T = {schedule.T}",
        "denoiser": f"UNet, {count_parameters(pipe.unet) / 1e6:.1f}M parameters, self-attention at 4x4",
        "conditioning": "cross-attention to the text encoder's token states after every block, at 8x8 and 4x4",
        "text encoder": f"a causal transformer ({clip.layers} layers, width {clip.width}, "
        f"{count_parameters(pipe.clip.text) / 1e6:.1f}M parameters), trained contrastively with a small image "
        f"encoder on CIFAR-10's captions, frozen; a word per token, {len(clip.words)} words, {clip.context} per prompt",
        '"no label"': "the empty prompt's token states, captions dropped 10% of the time",
        "guidance": "classifier-free, w = 3 in the samples above",
        "sampler": "DDPM, DDIM",
        "data": "CIFAR-10 images with captions written from their pixels",
    }
    return table(["part", "this course", "Stable Diffusion v1"], [[k, ours[k], STABLE_DIFFUSION[k]] for k in ours])


ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {  # the generated parts of the course's pages: (file, start marker, end marker, what fills it)
    "claims": (
        ROOT / "README.md",
        "<!-- claims: python -m diffedu.report writes them -->",
        "<!-- end of claims -->",
        lambda: headline(pretrained.quality_table()),
    ),
    "models": (
        ROOT / "docs" / "models.md",
        "<!-- models: python -m diffedu.report writes them -->",
        "<!-- end of models -->",
        lambda: models_table(pretrained.quality_table(), pretrained.guidance_curve(GUIDED[0])),
    ),
    "adherence": (
        pretrained.CHECKPOINTS / f"{TEXT[0]}.md",
        "<!-- adherence: python -m diffedu.report writes it -->",
        "<!-- end of adherence -->",
        lambda: (
            adherence_table(pretrained.adherence_table(TEXT[0]))
            + "\n\n"
            + adherence_in_words(pretrained.adherence_table(TEXT[0]), TEXT[1])
        ),
    ),
}


SOURCES = {  # the shipped measurements each generated part is made from
    "claims": ("quality.json",),
    "models": ("quality.json", f"{GUIDED[0]}.guidance.json", f"{TEXT[0]}.adherence.json"),
    "adherence": (f"{TEXT[0]}.adherence.json",),
}


def rewrite_pages() -> list[Path]:
    """Every generated part of the pages made anew from the shipped measurements (all of them made before any page
    is written, so that a damaged table leaves every page as it was); the pages that changed."""
    made = {}
    for name, (path, _, _, make) in BLOCKS.items():
        try:
            made[name] = make()
        except DiffeduError:  # (a table that cannot be read says so itself)
            raise
        except (KeyError, IndexError, TypeError, ValueError) as error:  # a table that lacks a row, a list, a number
            raise DiffeduError(
                f"{', '.join(SOURCES[name])} in diffedu/checkpoints, behind {path.name}'s {name}, lack {error}: "
                "measure again, or restore them (git checkout -- diffedu/checkpoints); no page was changed"
            ) from None
    return [path for name, (path, start, end, _) in BLOCKS.items() if rewrite_block(path, start, end, made[name])]


def main() -> int | str:
    try:
        changed = rewrite_pages()
    except DiffeduError as error:
        return f"error: {error}"
    print(
        "\n".join(f"rewrote {path.relative_to(ROOT)}'s measured numbers" for path in changed)
        or "the pages' numbers agree with the shipped measurements"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
