"""Command line: train, sample, score and benchmark models, outside the notebooks.

    python -m diffedu train ddpm --profile cpu --steps 2000       # -> runs/ddpm/model
    python -m diffedu train --out runs/ddpm/model --resume        # continue it (Ctrl-C saves first)
    python -m diffedu sample --ckpt runs/ddpm/model --steps 50 --out samples.png
    python -m diffedu sample --ckpt sd-cifar10 --prompt "a photo of a red car"   # text to image (lesson 11)
    python -m diffedu train vae --profile cpu                     # -> runs/vae/model
    python -m diffedu train latent --vae runs/vae/model           # -> runs/latent/model
    python -m diffedu train --recipe ldm-cifar10                  # a shipped model's recipe
    python -m diffedu train --recipe ldm-cifar10 --processes 4    # the same on 4 GPUs (torchrun's launcher)
    python -m diffedu retrain --all --budget-minutes 9            # the shipped models, resumably (repeat until done)
    python -m diffedu fid --ckpt ddpm-cifar10 --steps 100 --samples 1000   # FID/KID of a model
    python -m diffedu bench --profile cpu                         # pixel vs latent, measured -> data/bench/cpu.json
    python -m diffedu quality --rows "DDIM 50" "latent DDIM 50"    # FID/KID per sampler at 500 images, resumable
    python -m diffedu adherence --ckpt sd-cifar10                 # does the image obey its prompt? (lesson 11)
    python -m diffedu student --out student                       # the lessons without the exercises' solutions
    python -m diffedu course --out course                         # an nbgrader course folder, lessons released

Bad input gets one `error:` line and exit code 2; Ctrl-C, SIGTERM and SIGHUP save a training run and exit with 130.
A file a command did not write is replaced only with --force.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from . import (
    adherence,
    bench,
    checkpoint,
    data,
    distributed,
    env,
    evaluation,
    metrics,
    pretrained,
    report,
    runs,
)
from .classroom import course_folder, student_edition
from .errors import CheckpointError, DiffeduError
from .pipelines import Consistency, Diffusion, FlowMatching, TextToImage, load_pipeline, load_vae
from .profiles import PROFILES, get_profile
from .recipes import KINDS, RECIPES, get_recipe
from .samplers import CONSISTENCY, FLOW_SAMPLERS, SAMPLERS, SPACINGS
from .viz import grid


def at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """argparse type: a whole number of at least `minimum` (so 0 and -4 fail here, not in a hang later), and at most
    `maximum` where more could not fit in memory."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {minimum}, got {text!r}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(
                f"must be at most {maximum:,} (the images are held in memory), got {text!r}"
            )
        return value

    return parse


positive = at_least(1)
image_count = at_least(1, 50_000)  # 50,000 CIFAR-sized images: 600 MB as float32, the standard FID count
scored_count = at_least(2, 50_000)  # FID and KID compare spreads: one image has none


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """argparse type: any real number, but not nan or inf (which would fail only after the work)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def seed(text: str, bits: int = 32) -> int:
    """argparse type: a random seed every generator accepts (NumPy's too), 0 to 2^32 - 1."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**bits:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 2^{bits} - 1, got {text!r}")
    return value


def torch_seed(text: str) -> int:
    """argparse type: a seed for torch's generator alone (sampling), 0 to 2^64 - 1."""
    return seed(text, 64)


def path_text(text: str) -> str:
    """argparse type: a path, not an empty string (which would quietly mean the default or this folder), and one
    this system can name (not too long)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a file or folder, got an empty string")
    try:
        Path(text).exists()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot be used as a path ({error.strerror}): {text[:60]!r}...") from None
    return text


def _not_a_folder(text: str, what: str, example: str) -> str:
    if Path(path_text(text)).is_dir() or text.endswith(("/", "\\")):  # (newrun/ would be written beside the folder)
        raise argparse.ArgumentTypeError(f"{text!r} is a folder: name the {what} in it, e.g. {Path(text) / example}")
    return text


def checkpoint_out(text: str) -> str:
    """argparse type: where a checkpoint goes, a file name without suffix (runs/ddpm/model), not a folder."""
    return _not_a_folder(text, "checkpoint", "model")


def file_out(text: str) -> str:
    """argparse type: a file to write results to, not a folder (found after the work, that would lose it)."""
    return _not_a_folder(text, "file", "result.json")


def image_out(text: str) -> str:
    """argparse type: a file name PIL can write an RGB image to, checked before any sampling."""
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=image_format(_not_a_folder(text, "image", "samples.png")))
    except (KeyError, ValueError, OSError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an image file name PIL can write: end it in .png (or .jpg, .webp)"
        ) from None
    return text


def image_format(path: str) -> str | None:
    """PIL's name of the image format a file name asks for (None: none); PIL may know a format it cannot write."""
    return Image.registered_extensions().get(Path(path).suffix.lower())


def method_label(text: str) -> str:
    """argparse type: a sampling method's label (diffedu.evaluation.Method.named), checked before any work."""
    try:
        evaluation.Method.named(text)
    except DiffeduError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m diffedu", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    data_help = "folder holding cifar-10-batches-py (default: $DIFFEDU_DATA, else the diffedu home, data/)"
    device_help = "cpu or cuda (default: cuda when available)"

    t = sub.add_parser(
        "train",
        help="train a model by a recipe: the profile's for its kind, or a named one",
        epilog="On several GPUs: torchrun --standalone --nproc_per_node=N -m diffedu train ... (the recipe's "
        "batch is split over the N processes; docs/models.md: More than one GPU)",
    )
    t.add_argument(
        "kind",
        nargs="?",
        choices=list(KINDS),
        help="ddpm: the pixel UNet (default); flow: the pixel UNet trained by flow matching; vae: the "
        "autoencoder; latent: a UNet on a VAE's latents; decoder: a trained VAE's decoder retrained "
        "adversarially (its encoder kept); consistency: a flow model tuned into a consistency model",
    )
    which = t.add_mutually_exclusive_group()
    which.add_argument(
        "--profile",
        choices=list(PROFILES),
        help="train the profile's recipe for the kind (default: $DIFFEDU_PROFILE, else gpu with CUDA, else cpu)",
    )
    which.add_argument(
        "--recipe", choices=list(RECIPES), help="train a named recipe, e.g. a shipped model's (see diffedu.recipes)"
    )
    t.add_argument(
        "--steps", type=positive, help="training steps (default: the recipe's; with --resume, what is left of them)"
    )
    t.add_argument(
        "--minutes",
        type=positive_float,
        help="train for this many minutes of training time in all, the learning "
        "rate annealed over them, then stop (default: the recipe's, for a timed recipe such as vae-cifar10-gan)",
    )
    t.add_argument(
        "--batch-size", type=positive, help="the global batch, split over torchrun's processes (default: the recipe's)"
    )
    t.add_argument("--lr", type=positive_float, help="learning rate (default: the recipe's)")
    t.add_argument("--schedule", choices=["linear", "cosine"], help="noise schedule (default: the recipe's, linear)")
    t.add_argument(
        "--cond",
        action="store_true",
        help="class-conditional (ddpm, flow, latent): learn CIFAR-10's labels, each "
        "dropped to 'no label' 10%% of the time, for classifier-free guidance",
    )
    t.add_argument("--data", type=path_text, help=data_help)
    t.add_argument(
        "--vae",
        help="for latent: the VAE whose latents to learn (default: the recipe's, else runs/vae/model); "
        "for decoder: the VAE whose decoder to retrain (default: the recipe's base)",
    )
    t.add_argument("--out", type=checkpoint_out, help="checkpoint path, without suffix (default: runs/<kind>/model)")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the training saved at --out")
    again.add_argument("--force", action="store_true", help="replace a model already saved at --out")
    t.add_argument(
        "--save-every", type=at_least(0), default=500, help="save every N steps, 0: only at the end (default: 500)"
    )
    t.add_argument("--device", help=device_help)
    t.add_argument("--seed", type=seed, default=0)
    add_speed_options(t)

    r = sub.add_parser(
        "retrain", help="train the shipped models by their recipes, resumably, and export them for shipping"
    )
    r.add_argument("names", nargs="*", metavar="NAME", help=f"recipes to retrain, among {', '.join(runs.SHIPPED)}")
    r.add_argument("--all", action="store_true", help="all of them, each latent model after its VAE")
    r.add_argument(
        "--budget-minutes",
        type=positive_float,
        help="stop (everything saved) after this long; the same command continues (default: no limit)",
    )
    r.add_argument(
        "--runs", type=path_text, default="runs/retrain", help="where the training runs live (default: runs/retrain)"
    )
    r.add_argument(
        "--export",
        type=path_text,
        help="where the shippable float16 checkpoints and draft cards go (default: <runs>/shipped)",
    )
    r.add_argument("--data", type=path_text, help=data_help)
    r.add_argument("--device", help=device_help)
    add_speed_options(r)

    s = sub.add_parser("sample", help="draw images from a checkpoint into a PNG grid")
    s.add_argument("--ckpt", required=True, help="checkpoint path (suffix optional) or shipped name")
    s.add_argument("--vae", help="for a latent model: its VAE (default: the one it was trained with)")
    s.add_argument("--samples", type=image_count, default=16, help="number of images (default: 16)")
    s.add_argument(
        "--sampler",
        choices=[*SAMPLERS, *FLOW_SAMPLERS, CONSISTENCY],
        help="ddpm, ddim, heun (2 model calls a "
        "step) or dpmpp2m, DPM-Solver++(2M) (default: ddim); a flow-matching model: euler (default) or heun; a "
        "consistency model (ect-cifar10): consistency, one call a step (default: 1 step)",
    )
    s.add_argument(
        "--steps", type=positive, help="sampling steps (default: 50, a consistency model 1; DDPM always uses all T)"
    )
    s.add_argument(
        "--eta", type=finite_float, default=0.0, help="DDIM noise: 0 deterministic, 1 like DDPM (default: 0)"
    )
    s.add_argument(
        "--spacing",
        default="uniform",
        choices=list(SPACINGS),
        help="of the timesteps: uniform, quadratic "
        "(more near t = 0) or logsnr (evenly in log signal-to-noise ratio, DPM-Solver's choice; default: uniform)",
    )
    s.add_argument(
        "--class", dest="class_", metavar="CLASS", help="for a class-conditional model: a class name (horse) or index"
    )
    s.add_argument(
        "--prompt",
        help="for a text-to-image model (sd-cifar10): what to draw, in its words, e.g. 'a photo of a red car'",
    )
    s.add_argument(
        "--guidance",
        type=finite_float,
        help="with --class or --prompt: the guidance scale w (0 unconditional, 1 conditional, more: stronger; "
        "default 3)",
    )
    s.add_argument("--out", type=image_out, default="samples.png", help="the image grid to write (.png, .jpg, ...)")
    s.add_argument("--force", action="store_true", help="replace a file at --out that this command did not write")
    s.add_argument("--device", help=device_help)
    s.add_argument("--seed", type=torch_seed, default=0)

    f = sub.add_parser("fid", help="FID/KID of a model's samples, a VAE's reconstructions, or real test images")
    f.add_argument(
        "--ckpt",
        help="checkpoint path or shipped name (ddpm-cifar10, ldm-cifar10, vae-cifar10); "
        "none: score real test images, the yardstick at this count",
    )
    f.add_argument("--vae", help="for a latent model: its VAE (default: the one it was trained with)")
    f.add_argument("--samples", type=scored_count, default=1000, help="images to score (default: 1000)")
    f.add_argument("--reference", type=scored_count, help="first N training images as the reference (default: all)")
    f.add_argument(
        "--sampler",
        choices=[*SAMPLERS, *FLOW_SAMPLERS, CONSISTENCY],
        help="ddpm, ddim, heun or dpmpp2m "
        "(default: ddim); a flow-matching model: euler (default) or heun; a consistency model: consistency",
    )
    f.add_argument("--steps", type=positive, help="sampling steps (default: 50)")
    f.add_argument("--eta", type=finite_float, default=0.0)
    f.add_argument("--batch-size", type=positive, default=100, help="images per sampling run (default: 100)")
    f.add_argument("--data", type=path_text, help=data_help)
    f.add_argument("--device", help=device_help)
    f.add_argument("--seed", type=seed, default=0)

    g = sub.add_parser(
        "guidance", help="a class-conditional model's guidance curve: FID/KID and class accuracy against w"
    )
    g.add_argument("--ckpt", required=True, help="a class-conditional checkpoint (e.g. ldm-cifar10-cond)")
    g.add_argument("--samples", type=scored_count, default=500, help="images per guidance scale (default: 500)")
    g.add_argument(
        "--reference", type=scored_count, help="first N training images for FID/KID and the probe (default: all)"
    )
    g.add_argument(
        "--scales", type=finite_float, nargs="+", default=list(evaluation.GUIDANCE_SCALES), help="guidance scales w"
    )
    g.add_argument("--steps", type=positive, default=50, help="DDIM steps (default: 50)")
    g.add_argument("--batch-size", type=positive, default=100)
    g.add_argument("--data", type=path_text, help=data_help)
    g.add_argument("--device", help=device_help)
    g.add_argument("--out", type=file_out, help="JSON file to write (default: data/bench/guidance-<name>.json)")
    g.add_argument("--force", action="store_true", help="replace a file at --out that is not a guidance curve")

    a = sub.add_parser(
        "adherence", help="a text-to-image model's prompt adherence: class, colour and brightness against w (lesson 11)"
    )
    a.add_argument("--ckpt", required=True, help="a text-to-image checkpoint (e.g. sd-cifar10)")
    a.add_argument(
        "--baseline",
        default="ldm-cifar10-cond",
        help="a class-conditional model sampled from the same noise, "
        "scored alike (default: ldm-cifar10-cond; 'none' for none)",
    )
    a.add_argument("--samples", type=scored_count, default=500, help="class-only prompts' images per w (default: 500)")
    a.add_argument("--scales", type=finite_float, nargs="+", default=list(adherence.SCALES), help="guidance scales w")
    a.add_argument("--steps", type=positive, default=50, help="DDIM steps (default: 50)")
    a.add_argument("--data", type=path_text, help=data_help)
    a.add_argument("--device", help=device_help)
    a.add_argument("--out", type=file_out, help="JSON file to write (default: data/bench/adherence-<name>.json)")
    a.add_argument("--force", action="store_true", help="replace a file at --out that is not an adherence table")

    z = sub.add_parser("zeroshot", help="a text encoder's zero-shot classification and colour retrieval (lesson 11)")
    z.add_argument("--ckpt", required=True, help="a CLIP checkpoint (e.g. clip-cifar10)")
    z.add_argument("--data", type=path_text, help=data_help)

    q = sub.add_parser("quality", help="the shipped models' FID/KID for every sampler and step count, resumably")
    q.add_argument("--samples", type=scored_count, default=500, help="images per row (default: 500)")
    q.add_argument(
        "--rows",
        nargs="+",
        metavar="ROW",
        help='rows to measure, e.g. "DDIM 50" "latent DDIM 20" (default: all; rows already in --out are kept)',
    )
    q.add_argument(
        "--out",
        type=file_out,
        help="JSON file (default: data/bench/quality.json; diffedu/checkpoints/quality.json ships)",
    )
    q.add_argument("--force", action="store_true", help="replace a file at --out that is not a quality table")
    q.add_argument("--batch-size", type=positive, default=100)
    q.add_argument("--data", type=path_text, help=data_help)
    q.add_argument("--device", help=device_help)

    x = sub.add_parser(
        "export", help="a trained model as a shippable checkpoint: EMA weights in float16, a trimmed config"
    )
    x.add_argument("--ckpt", type=path_text, required=True, help="the training run's checkpoint")
    x.add_argument(
        "--out", type=checkpoint_out, required=True, help="where to write it (diffedu/checkpoints/<name> ships it)"
    )
    x.add_argument(
        "--hardware", required=True, help='what it was trained on, for the card (e.g. "2-core CPU, torch 2.14.1")'
    )
    x.add_argument("--force", action="store_true", help="replace a checkpoint already at --out")

    e = sub.add_parser("student", help="write the student edition of the lessons: exercises' solutions taken out")
    e.add_argument(
        "--lessons", type=path_text, default="lessons", help="the course's lessons folder (default: lessons)"
    )
    e.add_argument("--out", type=path_text, default="student", help="where to write it (default: student)")

    c = sub.add_parser(
        "course", help="set up an nbgrader course folder: its configuration, each lesson an assignment, released"
    )
    c.add_argument(
        "--lessons", type=path_text, default="lessons", help="the course's lessons folder (default: lessons)"
    )
    c.add_argument("--out", type=path_text, default="course", help="the course folder (default: course)")
    c.add_argument(
        "--force",
        action="store_true",
        help="replace what the course did not write there: an nbgrader configuration, edited sources and releases",
    )

    b = sub.add_parser("bench", help="measure pixel vs latent diffusion and DDPM vs DDIM: time, memory, FID/KID")
    b.add_argument(
        "--profile",
        choices=list(PROFILES),
        help="sizes the run (default: $DIFFEDU_PROFILE, else gpu with CUDA, else cpu)",
    )
    b.add_argument("--quick", action="store_true", help="the short version lesson 06 runs (cpu: 16 images, minutes)")
    b.add_argument("--samples", type=scored_count, help="images per sampler for FID/KID (default: the profile's)")
    b.add_argument(
        "--reference", type=scored_count, help="real training images for the FID/KID reference (default: the profile's)"
    )
    b.add_argument("--batch-size", type=positive, help="images per timed sampling run (default: 64)")
    b.add_argument("--repeats", type=positive, help="timed sampling runs per sampler (the median is reported)")
    b.add_argument(
        "--ddim-steps", type=positive, nargs="+", help="the pixel DDIM step counts to time (default: 100 50)"
    )
    b.add_argument(
        "--also",
        type=method_label,
        nargs="+",
        metavar="ROW",
        help="more samplers to time and score, by label: "
        '"DPM-Solver++(2M) 10", "Heun 5", "latent Heun 10" (default: none)',
    )
    b.add_argument("--no-fid", action="store_true", help="skip FID/KID: sizes and timings only")
    b.add_argument("--pixel", help="pixel UNet checkpoint (default: the shipped ddpm-cifar10)")
    b.add_argument("--latent", help="latent UNet checkpoint (default: the shipped ldm-cifar10)")
    b.add_argument("--vae", help="the latent model's VAE (default: the one its checkpoint names)")
    b.add_argument("--data", type=path_text, help=data_help)
    b.add_argument("--device", help=device_help)
    b.add_argument("--compile", action="store_true", help="torch.compile the UNets first")
    b.add_argument(
        "--out", type=file_out, help="JSON file to write (default: data/bench/<profile>.json, where lesson 06 looks)"
    )
    b.add_argument("--force", action="store_true", help="replace a file at --out that is not a benchmark result")
    return p


def add_speed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--processes",
        type=positive,
        default=1,
        help="train on N processes, one per GPU (or CPU workers), "
        "started through torchrun's launcher; the batch is split over them (default: 1)",
    )
    p.add_argument(
        "--compile",
        default="auto",
        choices=["auto", "none", "default", "reduce-overhead", "max-autotune"],
        help="torch.compile the training step in this mode (auto: reduce-overhead, i.e. CUDA graphs, on CUDA; "
        "none on a CPU)",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        help="NHWC memory order for the convolutions (default: on CUDA only)",
    )


# ---- train -----------------------------------------------------------------------


def train(args) -> int | None:
    if args.processes > 1:
        out = runs.out_name(args.recipe, args.out, args.kind)
        runs.plan(
            args.recipe,
            out,
            kind=args.kind,
            profile=args.profile,
            vae=args.vae,
            cond=args.cond,
            resume=args.resume,
            force=args.force,
            processes=args.processes,
            steps=args.steps,
            minutes=args.minutes,
            batch_size=args.batch_size,
            lr=args.lr,
            schedule=args.schedule,
        )
        return launch(args)
    runs.train(
        args.recipe,
        args.out,
        kind=args.kind,
        profile=args.profile,
        data_root=args.data,
        vae=args.vae,
        steps=args.steps,
        minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        cond=args.cond,
        resume=args.resume,
        force=args.force,
        seed=args.seed,
        save_every=args.save_every,
        device=args.device,
        compile=args.compile,
        channels_last=args.channels_last,
    )
    return None


def retrain_cmd(args) -> int | None:
    if bool(args.all) == bool(args.names):
        raise DiffeduError(f"name the models to retrain, or pass --all ({', '.join(runs.SHIPPED)}), not both")
    names = list(runs.SHIPPED) if args.all else args.names
    for name in names:
        distributed.check_split(get_recipe(name).batch_size, args.processes)
    out = Path(args.export or Path(args.runs) / "shipped")
    if out.resolve() == Path(args.runs).resolve():  # the exports would be taken for runs, and never be written
        raise DiffeduError(f"--export {out} is the --runs folder: export into another folder (default <runs>/shipped)")
    for folder in (Path(args.runs), out):  # before any training
        env.check_writable(folder / names[0])
    if args.processes > 1:
        return launch(args)
    start = time.monotonic()
    done = runs.retrain(
        names,
        args.runs,
        out,
        args.budget_minutes,
        args.data,
        args.device,
        compile=args.compile,
        channels_last=args.channels_last,
    )
    minutes = (time.monotonic() - start) / 60
    distributed.print_main(
        f"all done in this call's {minutes:.1f} minutes: {', '.join(names)} exported to {out}/. "
        "Measure each (python -m diffedu fid ...), copy them into diffedu/checkpoints/ and merge the draft cards"
        if done
        else f"out of time after {minutes:.1f} minutes, everything saved: run the same command again to continue"
    )
    return None


def launch(args) -> int:
    """This command again on `args.processes` processes, started by torch's launcher (torchrun's), after the checks
    that need no work were made here. What the user sees is what one process shows: its output, and on failure
    one `error:` line (process 0's) and exit code 2 (130 when stopped), not the launcher's traceback."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    env.get_device(args.device)  # (each process takes its own GPU of these)
    argv = [*(sys.argv[1:] if args.argv is None else args.argv), "--processes=1"]  # (the last one given counts)
    # the processes share the cores: each computes on its own share (torchrun's default would be one thread each)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.processes)))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=args.processes,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        run_id=f"diffedu-{os.getpid()}",
        max_restarts=0,
    )
    for name in [name for name in logging.root.manager.loggerDict if name.startswith("torch.distributed")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the launcher's log lines repeat what was said
    try:
        elastic_launch(config, sys.executable)("-m", "diffedu", *argv)
    except ChildFailedError as failed:
        codes = sorted(failure.exitcode for failure in failed.failures.values())
        if codes[-1] in (2, 130):  # the processes said why themselves (process 0's one line)
            return codes[-1]
        rank, failure = min(failed.failures.items())
        how = (
            f"was killed by signal {failure.signal_name()}"
            if failure.exitcode < 0
            else f"failed (exit code {failure.exitcode})"
        )
        print(
            f"error: process {rank} of {args.processes} {how}; what was saved is kept: continue with --resume",
            file=sys.stderr,
        )
        return 2
    except SignalException:  # Ctrl-C or SIGTERM: the launcher passed it on, and the processes saved
        return 130
    return 0


# ---- sample, fid, bench ----------------------------------------------------------


def sample_cmd(args) -> None:
    with env.held(args.out, "sample"):  # a second sample onto the same --out is refused, not mixed with this one
        _sample(args)


def _sample(args) -> None:
    if args.guidance is not None and args.class_ is None and not args.prompt:
        raise DiffeduError(
            "--guidance weighs the model's prediction for --class or --prompt: give one too (e.g. --class horse)"
        )
    if args.class_ is not None and args.prompt is not None:
        raise DiffeduError("give --class or --prompt, not both: a model is conditioned on one or the other")
    note = env.check_replaceable(args.out, ours_image, args.force)  # before the sampling, which can take minutes
    pipe = load_pipeline(args.ckpt, args.device, args.vae)
    classes = class_arg(args.class_)
    guidance = 3.0 if args.guidance is None else args.guidance
    sampler = args.sampler or pipe.default_sampler
    if args.prompt is not None:  # checked (the model reads prompts, knows the words) before any sampling
        pipe.guided(pipe.noise(1), None, guidance if args.prompt.strip() else 1.0, args.prompt)
    conditioned = classes is not None or bool(args.prompt and args.prompt.strip())
    images = pipe.sample(
        args.samples,
        args.steps,
        sampler=sampler,
        eta=args.eta,
        spacing=args.spacing,
        generator=torch.Generator().manual_seed(args.seed),
        classes=classes,
        guidance=guidance if conditioned else 1.0,
        prompt=args.prompt,
    )
    exif = Image.Exif()
    exif[SOFTWARE] = MADE_BY  # how a later run knows the file is its own to replace
    image = Image.fromarray(grid(images, nrow=8))
    env.write_whole(args.out, lambda partial: image.save(partial, format=image_format(args.out), exif=exif))
    which = f", class {args.class_}, guidance {guidance:g}" if args.class_ else ""
    which = f", prompt {args.prompt!r}, guidance {guidance:g}" if conditioned and args.prompt else which
    print(
        f"wrote {args.samples} images ({describe(pipe, sampler, args.steps, args.eta, args.spacing)}{which}) "
        f"to {args.out}" + (f"; {note}" if note else "")
    )


SOFTWARE, MADE_BY = 0x0131, "diffedu"  # the EXIF tag naming the program that wrote an image


def ours_image(path: Path) -> bool:
    """Whether the image at `path` is one `sample` wrote (a picture of one's own is not replaced)."""
    try:
        with Image.open(path) as image:
            return image.getexif().get(SOFTWARE) == MADE_BY
    except (OSError, ValueError, SyntaxError):  # not an image PIL can read
        return False


def class_arg(text: str | None) -> str | int | None:
    """--class: an index when it reads as one, else a class name (checked by the pipeline)."""
    try:
        return int(text) if text is not None else None
    except ValueError:
        return text


def describe(pipe: Diffusion, sampler: str, steps: int | None, eta: float = 0.0, spacing: str = "uniform") -> str:
    """A sampler run in words: its name, steps and model calls (NFE, what it costs)."""
    if isinstance(pipe, Consistency):
        return f"multistep consistency sampling, {pipe.model_calls(sampler, steps)} model calls"
    if isinstance(pipe, FlowMatching):
        return (
            f"flow {FLOW_SAMPLERS[sampler]} {pipe.steps(steps)} steps, {pipe.model_calls(sampler, steps)} model calls"
        )
    scheduler = pipe.scheduler(sampler, steps, eta, spacing)
    return f"{scheduler.title} {len(scheduler.timesteps)} steps, {scheduler.model_calls()} model calls"


def fid_cmd(args) -> None:
    device = env.get_device(args.device)
    env.check_writable(env.home() / "fid" / "features")  # where the scores' features are kept: fail before sampling
    train, test = data.load_cifar10(args.data), data.load_cifar10(args.data, train=False)
    reference = train.images[: args.reference]
    if args.ckpt is None:
        images, what = test.images[: args.samples], "real test images"
    elif checkpoint.read_meta(pretrained.resolve(args.ckpt)).get("kind") == "vae":
        vae = load_vae(args.ckpt, device)
        images = evaluation.reconstruct_images(vae, test.images[: args.samples], device)
        what = f"{args.ckpt}'s reconstructions of test images"
    else:
        pipe = load_pipeline(args.ckpt, device, args.vae)
        sampler = args.sampler or pipe.default_sampler
        images = evaluation.sample_images(
            pipe,
            args.samples,
            steps=args.steps,
            sampler=sampler,
            eta=args.eta,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        what = f"{args.ckpt}, {describe(pipe, sampler, args.steps, args.eta)}"
    row = metrics.score(images, metrics.cached_features(reference, device=device), device)
    fid, kid = report.fid_kid(row)
    print(
        f"{what}: {row['n']} images, FID {fid}, KID x 1000 {kid} against the first {len(reference)} training images "
        f"of {train.source} (TF-Inception; ± the standard error over the images)"
    )


def bench_cmd(args) -> None:
    profile = get_profile(args.profile)
    out = args.out or bench.results_path(profile.name, args.quick)
    note = env.check_replaceable(out, env.json_result("profile", "settings"), args.force)
    settings = bench.settings_for(
        profile.name,
        args.quick,
        samples=args.samples,
        reference=args.reference,
        batch=args.batch_size,
        repeats=args.repeats,
        ddim_steps=tuple(args.ddim_steps) if args.ddim_steps else None,
        also=tuple(args.also) if args.also else None,
        fid=False if args.no_fid else None,
    )
    result = bench.run(
        profile,
        settings=settings,
        device=args.device,
        compile=args.compile,
        pixel=args.pixel,
        latent=args.latent,
        vae=args.vae,
        data_root=args.data,
    )
    print(report.tables(result))
    print(f"\nwrote {env.write_json(result, out)}" + (f"; {note}" if note else ""))


def different_scales(scales: list[float]) -> None:
    """--scales: each guidance scale once (a repeat would be measured once, and said as asked), none below 0."""
    if len(set(scales)) != len(scales) or min(scales) < 0:
        raise DiffeduError(f"--scales must be different guidance scales of 0 or more, got {scales}")


def guidance_cmd(args) -> None:
    out = Path(args.out or env.home() / "bench" / f"guidance-{Path(args.ckpt).name}.json")
    note = env.check_replaceable(out, env.json_result("scales"), args.force)
    env.check_writable(env.home() / "fid" / "features")
    different_scales(args.scales)
    pipe = load_pipeline(args.ckpt, args.device)
    if not pipe.classes:
        raise DiffeduError(f"{args.ckpt} is not class-conditional: there is no guidance to measure")
    train, test = data.load_cifar10(args.data), data.load_cifar10(args.data, train=False)
    curve = evaluation.guidance_curve(
        pipe,
        train,
        test,
        samples=args.samples,
        reference=args.reference,
        scales=args.scales,
        steps=args.steps,
        batch_size=args.batch_size,
        device=args.device,
    )
    curve["vae"] = checkpoint.read_meta(pretrained.resolve(args.ckpt)).get("vae")  # what decoded the samples
    print(report.guidance_table(curve))
    print(f"\nwrote {env.write_json(curve, out)}" + (f"; {note}" if note else ""))


def adherence_cmd(args) -> None:
    out = Path(args.out or env.home() / "bench" / f"adherence-{Path(args.ckpt).name}.json")
    note = env.check_replaceable(out, env.json_result("scales", "ceiling"), args.force)
    env.check_writable(env.home() / "fid" / "features")
    different_scales(args.scales)
    pipe = load_pipeline(args.ckpt, args.device)
    if not isinstance(pipe, TextToImage):
        raise DiffeduError(f"{args.ckpt} is not a text-to-image model: it takes no prompts to adhere to")
    baseline = None if args.baseline == "none" else load_pipeline(args.baseline, args.device)
    if baseline is not None and not baseline.classes:
        raise DiffeduError(f"--baseline {args.baseline} is not class-conditional: give one that is, or 'none'")
    train, test = data.load_cifar10(args.data), data.load_cifar10(args.data, train=False)
    table = adherence.adherence_table(
        pipe,
        train,
        test,
        baseline=baseline,
        scales=args.scales,
        samples=args.samples,
        steps=args.steps,
        device=args.device,
    )
    table["baseline_model"] = None if baseline is None else args.baseline
    print(report.adherence_table(table))
    print(f"\nwrote {env.write_json(table, out)}" + (f"; {note}" if note else ""))


def zeroshot_cmd(args) -> None:
    test = data.load_cifar10(args.data, train=False)
    scores = adherence.text_encoder_scores(pretrained.load_clip(args.ckpt), test.images, test.labels)
    for name in ("zero-shot", "colour"):
        cell = scores[name]
        print(f"{name}: {100 * cell['accuracy']:.1f}% ± {100 * cell['se']:.1f} of {cell['n']} test images")


def quality_cmd(args) -> None:
    out = Path(args.out or env.home() / "bench" / "quality.json")
    note = env.check_replaceable(out, env.json_result("rows", "reference"), args.force)
    if note:
        print(note)
    table = evaluation.quality_table(
        out, samples=args.samples, labels=args.rows, device=args.device, data_root=args.data, batch_size=args.batch_size
    )
    for against in pretrained.REFERENCES:
        print(report.quality_table(pretrained.scored_against(table, against)), end="\n\n")
    if table.get("format_3_rows"):
        print(f"{len(table['format_3_rows'])} rows of the format-3 table wait to be migrated: run this again")
    print(f"wrote {out}")


def export_cmd(args) -> None:
    if checkpoint.exists(args.out) and not args.force:
        raise CheckpointError(f"{checkpoint.paths(args.out)[0]} already exists: replace it with --force")
    note = env.check_replaceable(checkpoint.paths(args.out)[1], env.json_result("kind", "config"), args.force)
    out = pretrained.export(args.ckpt, args.out, args.hardware)
    print(
        f"wrote {checkpoint.paths(out)[0]} ({checkpoint.paths(out)[0].stat().st_size / 2**20:.1f} MiB, float16)"
        + (f"; {note}" if note else "")
    )


def student_cmd(args) -> None:
    written, kept = student_edition(args.lessons, args.out)
    print(
        f"wrote the student edition of {len(written)} lessons to {args.out}/ (.py and .ipynb pairs, solutions replaced "
        "by stubs that raise NotImplementedError)"
    )
    if kept:
        print(
            f"kept {len(kept)} as they were, changed since they were written (someone's work): "
            f"{', '.join(p.stem for p in kept)}; to get a fresh copy of one, move its .py and .ipynb away and run "
            "this again"
        )


def course_cmd(args) -> None:
    assignments, kept = course_folder(args.lessons, args.out, force=args.force)
    print(
        f"course folder {args.out}/: nbgrader_config.py, and {len(assignments)} assignments, one per lesson with "
        f"exercises ({', '.join(assignments)}), released to {args.out}/release/"
    )
    if kept:
        print(f"kept as they were, changed since they were written: {', '.join(kept)}; replace them with --force")
    print(
        f"Hand out release/<lesson>/, put what each student hands back in submitted/<student>/<lesson>/, then grade "
        f"from {args.out}/: nbgrader autograde <lesson> (with this environment's nbgrader, e.g. .venv/bin/nbgrader)"
    )


COMMANDS = {
    "train": train,
    "retrain": retrain_cmd,
    "sample": sample_cmd,
    "fid": fid_cmd,
    "bench": bench_cmd,
    "guidance": guidance_cmd,
    "adherence": adherence_cmd,
    "zeroshot": zeroshot_cmd,
    "quality": quality_cmd,
    "export": export_cmd,
    "student": student_cmd,
    "course": course_cmd,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = argv
    # A scheduler's stop, `timeout` and a closed terminal end a run as Ctrl-C does: saved first (Trainer.fit)
    handlers = {signum: signal.getsignal(signum) for signum in distributed.STOP_SIGNALS[1:]}
    for signum, handler in handlers.items():
        if handler is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
            signal.signal(signum, signal.default_int_handler)
    try:
        return COMMANDS[args.command](args) or 0
    except KeyboardInterrupt as interrupt:
        if distributed.launched_main():  # once, not once per process (known from torchrun's RANK, before set-up too)
            print(f"\n{str(interrupt) or 'interrupted'}", file=sys.stderr)
        return 130
    # Expected failures (bad input, files, a missing package, a diverging loss) are one line, said once under
    # torchrun (by process 0: each process meets the same); anything else is a bug and keeps its traceback.
    except (DiffeduError, OSError, ModuleNotFoundError, FloatingPointError) as error:
        if distributed.launched_main():
            print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        for signum, handler in handlers.items():
            if signal.getsignal(signum) is signal.default_int_handler:
                signal.signal(signum, handler)
