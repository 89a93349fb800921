"""Measurements as markdown tables: a bench result (diffedu.bench) beside the course's reference numbers, the
shipped quality table and a guidance curve (diffedu.evaluation)."""
from __future__ import annotations

import json
from pathlib import Path

from .bench import CIFAR_TRAIN_IMAGES
from .viz import SPACES, quality_rows

# What the measurements stand beside: the course's source material, its numbers and where they come from ("source").
REFERENCE = json.loads((Path(__file__).parent / "reference_numbers.json").read_text())


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(header))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def tables(result: dict) -> str:
    """All of the result, one table per measurement."""
    m = result["machine"]
    on = [k for k, v in result["options"].items() if v] or ["none"]
    parts = [f"Measured on {m['device']} ({m['name']}, {m['threads']} threads, torch {m['torch']}), profile "
             f"`{result['profile']}`, {result['models']}; options on: {', '.join(on)}; {result['seconds']:.0f} s in all.",
             sizes_table(result), sampling_table(result), training_table(result)]
    if result["scores"]:
        parts.append(scores_table(result))
    parts.append(scaling_table(result))
    return "\n\n".join(parts)


def sizes_table(result: dict) -> str:
    return "**The networks** (GFLOPs of one forward pass for one image)\n\n" + table(
        ["network", "parameters", "GFLOPs"],
        [[name, f"{r['params'] / 1e6:.2f}M", f"{r['gflops']:.3f}"] for name, r in result["sizes"].items()])


def sampling_table(result: dict) -> str:
    sampling, seconds_ref = result["sampling"], REFERENCE["sample_64_seconds"]
    ddpm, ddpm_ref = sampling["DDPM 1000"]["seconds"], seconds_ref["DDPM 1000"]

    def reference(name) -> str:
        return f"{seconds_ref[name]} s ({ddpm_ref / seconds_ref[name]:.1f}x)" if name in seconds_ref else ""

    return (f"**Sampling {result['settings']['batch']} images** (the median of the timed runs after a warm-up; latent: "
            "decoding included; the reference: 64 images on one GPU)\n\n" + table(
                ["sampler", "steps", "model calls", "runs", "seconds", "ms per step", "speed-up vs DDPM 1000", "GFLOPs per image",
                 "peak memory", "reference"],
                [[name, r["steps"], r["model_calls"], r["runs"], f"{r['seconds']:.2f}", f"{r['ms_per_step']:.1f}", f"{ddpm / r['seconds']:.1f}x",
                  f"{r['gflops_per_image']:.3g}", _memory(r["peak_memory_mib"]), reference(name)] for name, r in sampling.items()]))


def _memory(mib: float | None) -> str:
    return "not measured (CUDA only)" if mib is None else f"{mib:.0f} MiB"  # (measure.PeakMemory says why)


def training_table(result: dict) -> str:
    training, s = result["training"], result["settings"]
    pixel_rate, ref_hours = training["pixel"]["images_per_second"], REFERENCE["train_hours_per_100_epochs"]
    return (f"**Training throughput** (batch {s['train_batch']}, {s['train_steps']} timed steps; 100 epochs = "
            f"{100 * CIFAR_TRAIN_IMAGES:,} images)\n\n" + table(
                ["run", "images/s", "vs pixel", "hours per 100 epochs", "reference hours"],
                [[name, f"{r['images_per_second']:.1f}", f"{r['images_per_second'] / pixel_rate:.2f}x",
                  f"{r['hours_per_100_epochs']:.2f}", ref_hours["pixel" if name == "pixel" else "latent"]] for name, r in training.items()]))


def fid_kid(r: dict) -> list[str]:
    """A row's FID and KID x 1000, each ± its standard error over the samples (diffedu.metrics)."""
    return [f"{r['fid']:.2f} ± {r['fid_se']:.2f}", f"{1000 * r['kid']:.2f} ± {1000 * r['kid_se']:.2f}"]


SE_NOTE = "± the standard error: the spread of a score over draws of as many images"


def scores_table(result: dict) -> str:
    q = result["scores"]
    return (f"**FID and KID** against {q['reference']} (TF-Inception; lower is better; {SE_NOTE}). FID depends on "
            "the count: compare rows of equal n only.\n\n" + table(
                ["images", "n", "FID", "KID x 1000", "reference FID"],
                [[name, r["n"], *fid_kid(r), REFERENCE["fid"].get(name, "")] for name, r in q["rows"].items()]))


def scaling_table(result: dict) -> str:
    return "**What the diffusion model denoises per image** (4 latent channels)\n\n" + table(
        ["image", "pixel values", "f = 4 latent", "ratio", "f = 8 latent", "ratio"],
        [[f"{r['side']}x{r['side']}x3", f"{r['pixel']:,}", f"{r['f4']:,}", f"{r['f4_ratio']:.0f}x", f"{r['f8']:,}",
          f"{r['f8_ratio']:.0f}x"] for r in result["scaling"]])


def guidance_table(curve: dict) -> str:
    """A guidance curve (diffedu.evaluation.guidance_curve) as a table: w, FID, KID and class accuracy."""
    real = curve["real test images"]
    rows = [[f"w = {r['guidance']:g}", r["n"], *fid_kid(r), f"{100 * r['accuracy']:.1f}%"] for r in curve["scales"].values()]
    rows.append(["real test images", real["n"], *fid_kid(real), f"{100 * real['accuracy']:.1f}%"])
    return (f"**Classifier-free guidance** ({curve['samples']} samples per scale, DDIM {curve['steps']} steps, the classes in "
            f"turn; FID/KID against {curve['reference']}, {SE_NOTE}; class accuracy by a linear probe on the same Inception "
            f"features, {100 * curve['probe_train_accuracy']:.1f}% on the images it was fit on)\n\n"
            + table(["images", "n", "FID", "KID x 1000", "class accuracy"], rows))


def quality_table(curves: dict, samplers: tuple[str, ...] | None = None, spacings: tuple[str, ...] | None = None,
                  spaces: tuple[str, ...] = SPACES) -> str:
    """The quality table (diffedu.evaluation.quality_table; the shipped one: diffedu.pretrained.quality_table()) as
    markdown; which rows: as diffedu.viz.quality_rows."""
    kept = quality_rows(curves, samplers, spacings, spaces)
    rows = [[label, r.get("steps", ""), r.get("model_calls", r.get("steps", "")), *fid_kid(r),
             f"{1000 * r['seconds_per_image']:.0f}" if r.get("space") else ""]  # a sampler's row, not a yardstick
            for label, r in kept.items()]
    machines = {(m["name"], m["device"], m["threads"], m["torch"]) for m in (r["machine"] for r in kept.values())}
    where = ("{1} ({0}, {2} threads, torch {3})".format(*machines.pop()) if len(machines) == 1
             else "the machine each row of the JSON names")
    return (f"**FID / KID at {curves['samples']} images** against {curves['reference']} ({SE_NOTE}); sampling "
            f"time per image measured on {where}, batches of 100\n\n" + table(["images", "steps", "model calls", "FID", "KID x 1000", "ms / image"], rows))
