"""The evaluation protocols: how the course's FID/KID numbers are made, so that each can be made again.

    python -m diffedu quality --rows "DDIM 50"       # the shipped quality table's protocol, one row
    python -m diffedu guidance --ckpt ldm-cifar10-cond

- `sample_images`: the one seeded way to draw many images from a pipeline, a batch at a time. Every FID/KID
  the course ships was scored on images drawn by it, so a row measured again comes out the same.
- `Method`: a way to make images, named by its label ("DDPM 1000", "DDIM 20 quadratic", "latent DDIM 50").
- The **quality table** (`quality_table`, shipped as `diffedu/checkpoints/quality.json`): FID/KID of the shipped
  models for every sampler and step count, and of the yardsticks (real test images, VAE reconstructions), at
  500 images against two references: all the training images, and the test images the yardstick does not use
  (held out: a model that copied its training images gains nothing there).
- The **guidance curve** (`guidance_curve`): a class-conditional model's FID/KID and class accuracy against w.
- The **denoising gap** (`denoising_gap`): how much better a model denoises its training data than data it never
  saw, timestep by timestep; where it is well above 1 the model has started to memorise its data.
Timing lives in `diffedu.bench`; the scores themselves in `diffedu.metrics`.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint, data, env, metrics, pretrained
from .errors import DiffeduError
from .pipelines import Diffusion, load_pipeline, load_vae
from .samplers import ALL_STEPS, CONSISTENCY, FLOW_SAMPLERS, SAMPLERS
from .vae import VAE
from .viz import MODELS  # the model each space's rows sample: "pixel" is ddpm-cifar10, ...

# Of the quality table: 4, each row scored against held-out test images too (its "held_out" scores); a table of
# format 3 (against the training images only) is migrated: its rows' images made again, and scored against both.
FORMAT = 4
GUIDANCE_FORMAT = 3  # of a guidance curve
YARDSTICKS = ("real test images", "VAE reconstructions of them")  # the reconstructions of the latent model's VAE
L1_DECODER = "vae-cifar10"  # the VAE before its decoder stage (diffedu.adversarial): the quality table keeps its rows
L1_RECONSTRUCTIONS = "L1-decoder reconstructions"


@dataclass(frozen=True)
class Method:
    """One way to make images: a row of the sampling and quality tables."""

    label: str
    space: str  # "pixel", "latent", "flow" or "consistency" (the models of MODELS)
    # a registered sampler's name (SAMPLERS: "ddpm", "ddim", "heun", "dpmpp2m"; flow: FLOW_SAMPLERS; CONSISTENCY)
    sampler: str
    steps: int
    spacing: str = "uniform"  # of the timesteps: "uniform", "quadratic" or "logsnr" (diffedu.samplers.ddim_timesteps)
    vae: str | None = None  # latent: decode with this VAE, not the one the latent model's checkpoint names

    @classmethod
    def named(cls, label: str) -> Method:
        """The method a label names: a sampler's title and its steps ("DDPM 1000", "DDIM 50", "Heun 10",
        "DPM-Solver++(2M) 10"), then optionally " quadratic" or " log-SNR" (the spacing), with "latent " before it for
        the latent model, and ", L1 decoder" after it to decode by the VAE before its decoder stage; or "flow " and a
        flow sampler's title for the flow-matching model ("flow Euler 10", "flow Heun 5"); or "consistency" and its
        model calls for the consistency model ("consistency 2")."""
        found = re.fullmatch(r"(latent |flow )?(\S+) (\d+)( quadratic| log-SNR)?(, L1 decoder)?", label)
        space = {None: "pixel", "latent ": "latent", "flow ": "flow"}[found[1] if found else None]
        if found and found[2] == CONSISTENCY and not found[1]:
            space = "consistency"
        titles = (
            {title: name for name, title in FLOW_SAMPLERS.items()}
            if space == "flow"
            else {CONSISTENCY: CONSISTENCY}
            if space == "consistency"
            else {scheduler.title: name for name, scheduler in SAMPLERS.items()}
        )
        if (
            not found
            or found[2] not in titles
            or (titles[found[2]] in ALL_STEPS and found[4])  # DDPM visits every step: nothing to space
            or (space in ("flow", "consistency") and (found[4] or found[5]))
            or (space == "pixel" and found[5])  # a pixel model has no decoder to swap
        ):
            raise DiffeduError(
                f"no sampling method {label!r}: name one like 'DDPM 1000', 'DDIM 50', 'DDIM 20 quadratic', "
                f"'DPM-Solver++(2M) 10 log-SNR', 'latent DDIM 50', 'Heun 10', 'flow Euler 10' or "
                f"'consistency 2' "
                f"(samplers: {', '.join(t.title for t in SAMPLERS.values())}; "
                f"flow: {', '.join(FLOW_SAMPLERS.values())})"
            )
        _, title, steps, spacing, l1 = found.groups()
        spacing = {None: "uniform", " quadratic": "quadratic", " log-SNR": "logsnr"}[spacing]
        return cls(label, space, titles[title], int(steps), spacing, L1_DECODER if l1 else None)


# ---- images, made by one protocol -------------------------------------------------


def sample_images(
    pipe: Diffusion,
    n: int,
    *,
    steps: int | None = None,
    sampler: str = "ddim",
    spacing: str = "uniform",
    eta: float = 0.0,
    classes: torch.Tensor | None = None,
    prompts: list[str] | None = None,
    guidance: float = 1.0,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """n images in [-1, 1] on the CPU, drawn `batch_size` at a time, batch k from the seed `seed + k * batch_size`:
    the protocol of every FID/KID the course ships. `classes`: one class per image, for a class-conditional
    pipeline, or `prompts`, one per image, for a text-to-image one, with classifier-free guidance of scale
    `guidance`. `progress`: a bar per sampling loop."""
    starts = range(0, n, batch_size)
    return torch.cat(
        [
            pipe.sample(
                min(batch_size, n - start),
                steps,
                sampler=sampler,
                eta=eta,
                spacing=spacing,
                progress=progress,
                classes=None if classes is None else classes[start : start + batch_size],
                **({} if prompts is None else {"prompt": prompts[start : start + batch_size]}),
                guidance=guidance,
                generator=torch.Generator().manual_seed(seed + start),
            )
            .float()
            .cpu()
            for start in tqdm(starts, desc="sampling", leave=False, disable=len(starts) == 1)
        ]
    )


def reconstruct_images(vae: VAE, images: torch.Tensor, device, batch_size: int = 100) -> torch.Tensor:
    """A VAE's reconstructions of uint8 images, as float images in [-1, 1] on the CPU."""
    return torch.cat(
        [vae.reconstruct(data.to_float(chunk.to(device))).float().cpu() for chunk in images.split(batch_size)]
    )


def score_sets(
    samples: dict[str, torch.Tensor], reference: torch.Tensor, test: torch.Tensor, vae: VAE, device
) -> dict[str, dict]:
    """FID and KID of each set of images against the reference images, with real test images and their
    VAE reconstructions as the yardsticks at the same count."""
    reference_features = metrics.Reference(metrics.cached_features(reference, device=device))  # read (or computed) once
    sets = {**samples, YARDSTICKS[0]: test, YARDSTICKS[1]: reconstruct_images(vae, test, device)}
    return {
        name: metrics.score(images, reference_features, device)
        for name, images in tqdm(sets.items(), desc="FID/KID", leave=False)
    }


# ---- the guidance curve -----------------------------------------------------------

GUIDANCE_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 7.5)


def guidance_curve(
    pipe: Diffusion,
    train: data.ImageSet,
    test: data.ImageSet,
    *,
    samples: int = 500,
    reference: int | None = None,
    scales=GUIDANCE_SCALES,
    steps: int = 50,
    batch_size: int = 100,
    device=None,
    seed: int = 0,
) -> dict:
    """Classifier-free guidance's trade-off, measured: for each scale w, `samples` images of a class-conditional
    pipeline (the classes in turn, the same noise at every w) scored by FID and KID against the first `reference`
    training images (diversity and realism), and by class accuracy: a linear probe on the same Inception
    features, fit on those training images, says whether a "horse" looks like a horse. Real test images are
    the yardstick on both counts."""
    device = env.get_device(device)
    reference = min(reference or len(train), len(train))
    train_features = metrics.cached_features(train.images[:reference], device=device)
    scored_against = metrics.Reference(train_features)
    probe = metrics.LinearProbe(train_features, train.labels[:reference])
    test_features = metrics.cached_features(test.images[:samples], device=device)
    classes = torch.arange(samples) % len(pipe.classes)
    rows = {}
    for w in tqdm(scales, desc="guidance scales"):
        images = sample_images(
            pipe, samples, steps=steps, classes=classes, guidance=w, batch_size=batch_size, seed=seed
        )
        features = metrics.inception_features(images, device=device)
        rows[str(w)] = {
            "guidance": w,
            **metrics.scores_of(features, scored_against),
            "accuracy": probe.accuracy(features, classes),
        }
    return {
        "format": GUIDANCE_FORMAT,
        "samples": samples,
        "steps": steps,
        "reference": f"{'all' if reference == len(train) else 'the first'} {reference} CIFAR-10 training images",
        "scales": rows,
        "real test images": {
            **metrics.scores_of(test_features, scored_against),
            "accuracy": probe.accuracy(test_features, test.labels[:samples]),
        },
        "probe_train_accuracy": probe.accuracy(train_features, train.labels[:reference]),
    }


# ---- the quality table ------------------------------------------------------------

QUALITY_METHODS = (
    "DDPM 1000",
    "DDPM-large 1000",
    *(f"DDIM {s}" for s in (250, 100, 50, 20, 10, 5)),
    *(f"DDIM {s} quadratic" for s in (100, 50, 20, 10)),
    *(f"DPM-Solver++(2M) {s}" for s in (50, 20, 10, 5)),
    *(f"Heun {s}" for s in (25, 10, 5, 3)),
    *(f"DDIM {s} log-SNR" for s in (20, 10)),
    *(f"DPM-Solver++(2M) {s} log-SNR" for s in (20, 10, 5)),
    *(f"Heun {s} log-SNR" for s in (10, 5)),
    *(f"latent DDIM {s}" for s in (50, 20, 10)),
    "latent DDIM 50, L1 decoder",
    *(f"flow Euler {s}" for s in (50, 20, 10, 5)),
    *(f"flow Heun {s}" for s in (25, 10, 5, 3)),
    # one to four calls (lesson 10): the consistency model, and the others' samplers at as few
    *(f"consistency {s}" for s in (1, 2, 4)),
    "DDIM 2",
    "DDIM 1",
    "DPM-Solver++(2M) 4",
    "DPM-Solver++(2M) 3",
    "DPM-Solver++(2M) 2",
    "flow Euler 2",
    "flow Euler 1",
)
QUALITY_ROWS = (*YARDSTICKS, L1_RECONSTRUCTIONS, *QUALITY_METHODS)  # in the table's order


GAP_TIMESTEPS = (10, 50, 100, 200, 400, 700, 999)


@torch.no_grad()
def denoising_gap(
    pipe: Diffusion, seen: torch.Tensor, unseen: torch.Tensor, timesteps=GAP_TIMESTEPS, batch_size: int = 256
) -> list[dict[str, float]]:
    """DDPM's simple loss on data the model trained on (`seen`: images in [-1, 1], or a latent model's scaled
    latents) and on as much it never saw (`unseen`), at each timestep: the same noise for the i-th of both, so that
    only the data differ. Each row holds the two mean losses and the held-out loss over the training loss, with its
    standard error over the data (the delta method; the two sets are independent draws). A model that learns from
    its data denoises both alike (ratio 1); one that memorises it denoises its own better (ratio above 1)."""
    if pipe.schedule is None:
        raise DiffeduError("denoising_gap measures a noise-predicting (DDPM) model; a flow model has no schedule")
    if seen.shape != unseen.shape or len(seen) < 2:
        raise DiffeduError(f"give as many training as held-out samples, at least 2: got {len(seen)} and {len(unseen)}")
    if not all(isinstance(t, int) and 0 <= t < pipe.schedule.T for t in timesteps):
        raise DiffeduError(f"timesteps must be whole numbers from 0 to {pipe.schedule.T - 1}, got {timesteps!r}")
    rows = []
    for t in timesteps:
        noise = torch.randn(seen.shape, generator=torch.Generator().manual_seed(t))
        a, b = (_losses(pipe, x, t, noise, batch_size) for x in (seen, unseen))
        ratio = b.mean() / a.mean()
        se = ratio * (a.var() / (len(a) * a.mean() ** 2) + b.var() / (len(b) * b.mean() ** 2)).sqrt()
        rows.append(
            {"t": t, "training": a.mean().item(), "held-out": b.mean().item(), "ratio": ratio.item(), "se": se.item()}
        )
    return rows


def _losses(pipe: Diffusion, x0: torch.Tensor, t: int, noise: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Each sample's squared error in predicting its noise at step t (as `training.eps_loss` scores a batch)."""
    out = []
    for x, eps in zip(x0.split(batch_size), noise.split(batch_size)):
        x, eps = x.to(pipe.device, pipe.dtype), eps.to(pipe.device, pipe.dtype)
        ts = torch.full((len(x),), t, device=pipe.device)
        out.append((pipe.unet(pipe.schedule.q_sample(x, ts, eps), ts) - eps).float().pow(2).flatten(1).mean(1).cpu())
    return torch.cat(out)


def quality_row_images(
    label: str, test_images: torch.Tensor, device, *, batch_size: int = 100, pipes: dict | None = None
) -> tuple[torch.Tensor, dict]:
    """The images of one row of the quality table, as many as `test_images`, made by its protocol (seeded: the
    same images every time), and what the row records of how they were made. `pipes` keeps loaded models."""
    pipes = {} if pipes is None else pipes
    if label == YARDSTICKS[0]:
        return test_images, {}
    if label in (YARDSTICKS[1], L1_RECONSTRUCTIONS):
        name = (
            L1_DECODER if label == L1_RECONSTRUCTIONS else checkpoint.read_meta(pretrained.path("ldm-cifar10"))["vae"]
        )
        return reconstruct_images(load_vae(name, device), test_images, device), {"model": name}
    method = Method.named(label)
    name = MODELS[method.space]
    if (name, method.vae) not in pipes:
        pipes[name, method.vae] = load_pipeline(name, device, vae=method.vae)
    pipe = pipes[name, method.vae]
    images = sample_images(
        pipe,
        len(test_images),
        steps=method.steps,
        sampler=method.sampler,
        spacing=method.spacing,
        batch_size=batch_size,
    )
    return images, {
        "model": name,
        **asdict(method),
        "model_calls": pipe.model_calls(method.sampler, method.steps, method.spacing),
    }


def quality_table(
    out: str | Path,
    *,
    samples: int = 500,
    labels: list[str] | None = None,
    device=None,
    data_root: str | None = None,
    batch_size: int = 100,
) -> dict:
    """FID and KID of the shipped models' samples (ddpm-cifar10, ldm-cifar10, fm-cifar10) for each sampler, of the
    reconstructions of ldm-cifar10's VAE and of vae-cifar10 (the L1 decoder it replaced), and of the first `samples`
    real test images, all at `samples` images against all the training images and against the other test images
    (held out), with the seconds per image each sampler took here. Each row keeps its images' influences on each
    score, so that any two rows can be compared by their paired difference (diffedu.report.paired). Resumable: rows
    already in `out` are kept, and each new row is written as soon as it is measured; a table measured at another
    count or on other data is refused before any work, and one of format 3 is migrated row by row."""
    device = env.get_device(device)
    train, test = data.load_cifar10(data_root), data.load_cifar10(data_root, train=False)
    if len(test) < samples + 2:
        raise DiffeduError(
            f"the quality table needs more test images than --samples {samples}: the first {samples} are the "
            f"real-image yardstick, the rest the held-out reference; this data has {len(test)}: ask for fewer samples"
        )
    labels = labels or list(QUALITY_ROWS)
    unknown = [label for label in labels if label not in QUALITY_ROWS]
    if unknown:
        raise DiffeduError(f"no quality row {unknown[0]!r}; rows: {', '.join(QUALITY_ROWS)}")
    table = _resumed(out, _protocol(samples, len(train), len(test)))
    references = [
        metrics.Reference(metrics.cached_features(images, device=device))
        for images in (train.images, test.images[samples:])
    ]
    pipes: dict[tuple[str, str | None], Diffusion] = {}  # by (model, VAE): loaded once
    earlier = table.get("format_3_rows", {})  # a format-3 table's rows, until each is migrated
    for label in tqdm([label for label in labels if label not in table["rows"]], desc="quality rows"):
        start = time.perf_counter()
        images, row = quality_row_images(label, test.images[:samples], device, batch_size=batch_size, pipes=pipes)
        row["seconds_per_image"] = (time.perf_counter() - start) / samples
        scored = {
            **row,
            **scores_against(metrics.inception_features(images, device=device), *references),
            "machine": env.machine(device),
            "date": time.strftime("%Y-%m-%d"),
        }
        table["rows"][label] = migrated(label, earlier.pop(label), scored) if label in earlier else scored
        table["rows"] = {
            label: table["rows"][label] for label in QUALITY_ROWS if label in table["rows"]
        }  # the table's order
        if not earlier:
            table.pop("format_3_rows", None)
        env.write_json(table, out)
    return table


def _protocol(samples: int, train: int, test: int) -> dict:
    """What a quality table's rows are measured by: the count, and the two references (named by their size, not the
    source's path, which would name this machine's folders)."""
    return {
        "format": FORMAT,
        "samples": samples,
        "reference": f"all {train} CIFAR-10 training images",
        "held_out_reference": f"the {test - samples} CIFAR-10 test images after the first {samples}",
    }


def scores_against(features: torch.Tensor, training: metrics.Reference, held_out: metrics.Reference) -> dict:
    """A quality row's scores: against the training images, and under "held_out" against the held-out ones, each
    with every image's influence (diffedu.report.paired compares rows by them)."""
    return {
        **metrics.scores_of(features, training, influence=True),
        "held_out": metrics.scores_of(features, held_out, influence=True),
    }


def migrated(label: str, earlier: dict, scored: dict) -> dict:
    """A format-3 row with the held-out scores of its images made again. Only if they are the same images: their
    scores against the training images must come out as the row's (to 1e-4 of themselves), or the row is measured
    anew by another command."""
    if not math.isclose(scored["fid"], earlier["fid"], rel_tol=1e-4):
        raise DiffeduError(
            f"{label!r} made again scores FID {scored['fid']:.4f} against the training images, where its row says "
            f"{earlier['fid']:.4f}: these are not the images it measured (another model, sampler or library). "
            "Measure the whole table afresh into another --out"
        )
    return {
        **earlier,
        "held_out": scored["held_out"],
        "migrated": f"{scored['date']}: its images made again by the same protocol, and scored against the "
        "held-out images too",
    }


def _resumed(out: str | Path, protocol: dict) -> dict:
    """The table to measure into: the one at `out` if it has the same protocol (its rows are kept: hours of
    measurement, which one table cannot mix), a format-3 one made ready to migrate, or a new one."""
    table: dict = {**protocol, "rows": {}}
    saved = _saved_table(out)
    if not saved or not (saved["rows"] or saved.get("format_3_rows")):
        return table
    if saved.get("format") == 3 and all(saved.get(key) == protocol[key] for key in ("samples", "reference")):
        return {**table, "format_3_rows": saved["rows"]}  # measured in full: its rows migrate one by one
    if {key: saved.get(key) for key in protocol} != protocol:
        raise DiffeduError(
            f"{out} holds {len(saved['rows'])} rows measured at {saved.get('samples')} images against "
            f"{saved.get('reference')} (format {saved.get('format')}), not at {protocol['samples']} against "
            f"{protocol['reference']} (format {FORMAT}): measure them with --samples {saved.get('samples')} and "
            "the same data, or write this table elsewhere (--out)"
        )
    return saved


def _saved_table(out: str | Path) -> dict | None:
    """The quality table already at `out`, if any; anything else there is refused, not overwritten."""
    if not Path(out).exists():
        return None
    try:
        saved = json.loads(Path(out).read_text())
    except (ValueError, RecursionError) as error:  # not JSON, not text, or nested past json's depth
        raise DiffeduError(f"{out} is not a quality table ({error}): choose another --out, or delete it") from error
    if not isinstance(saved, dict) or "rows" not in saved:
        raise DiffeduError(f"{out} is not a quality table: choose another --out, or delete it")
    return saved
