"""Command line: train a model or sample from one, outside the notebooks.

    python -m diffedu train ddpm --profile cpu --steps 2000 --out runs/ddpm
    python -m diffedu sample --ckpt runs/ddpm/model --sampler ddim --steps 50 --out samples.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import checkpoint, data
from .nets import count_parameters
from .pretrained import RECIPES
from .profiles import PROFILES, get_profile, seed_everything
from .samplers import make_scheduler, sample
from .schedules import Schedule
from .training import ddpm_trainer


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m diffedu", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; sizes and defaults come from the profile")
    t.add_argument("model", nargs="?", default="ddpm", choices=["ddpm"], help="what to train (default: ddpm, the pixel UNet)")
    t.add_argument("--profile", choices=list(PROFILES), help="sizes of net, batch and run (default: $DIFFEDU_PROFILE, else gpu with CUDA, else cpu)")
    t.add_argument("--recipe", choices=list(RECIPES), help="train a shipped checkpoint's recipe instead of a profile (see diffedu.pretrained)")
    t.add_argument("--steps", type=int, help="training steps (default: the profile's)")
    t.add_argument("--batch-size", type=int, help="default: the profile's")
    t.add_argument("--lr", type=float, help="learning rate (default: the profile's)")
    t.add_argument("--schedule", default="linear", choices=["linear", "cosine"])
    t.add_argument("--data", help="folder holding cifar-10-batches-py (default: $DIFFEDU_DATA, else data/)")
    t.add_argument("--out", default="runs/ddpm/model", help="checkpoint path, without suffix (default: runs/ddpm/model)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    t.add_argument("--save-every", type=int, default=500, help="save every N steps (default: 500)")
    t.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    t.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("sample", help="draw images from a checkpoint into a PNG grid")
    s.add_argument("--ckpt", required=True, help="checkpoint path (.safetensors/.json pair, suffix optional)")
    s.add_argument("--n", type=int, help="number of images (default: the profile's)")
    s.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim"])
    s.add_argument("--steps", type=int, help="DDIM steps (default: 50; DDPM always uses all T)")
    s.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 like DDPM (default: 0)")
    s.add_argument("--spacing", default="uniform", choices=["uniform", "quadratic"])
    s.add_argument("--out", default="samples.png")
    s.add_argument("--profile", choices=list(PROFILES))
    s.add_argument("--device")
    s.add_argument("--seed", type=int, default=0)
    return p


def train(args) -> None:
    profile = RECIPES[args.recipe] if args.recipe else get_profile(args.profile)
    seed_everything(args.seed)
    images = data.load_cifar10(args.data).images[: profile.n_data]
    schedule = Schedule.by_name(args.schedule)
    trainer = ddpm_trainer(profile, schedule, args.device, args.lr)
    if args.resume:
        trainer.load(args.out)
    batch_size = args.batch_size or profile.batch_size
    steps = args.steps or profile.train_steps
    print(f"{args.model}: UNet {count_parameters(trainer.model) / 1e6:.2f}M parameters, {len(images)} images, "
          f"batch {batch_size}, steps {trainer.step} -> {trainer.step + steps}, on {trainer.device} ({profile.name})")
    batches = data.batches(images, batch_size, device=trainer.device, seed=args.seed + trainer.step)
    trainer.fit(batches, steps, save_to=args.out, save_every=args.save_every)
    print(f"saved {checkpoint.paths(args.out)[0]}; final loss {sum(trainer.history[-50:]) / len(trainer.history[-50:]):.4f}")


def sample_cmd(args) -> None:
    from PIL import Image

    from .viz import grid

    profile = get_profile(args.profile)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = checkpoint.load_model(args.ckpt, device)
    schedule = checkpoint.schedule_of(args.ckpt)
    scheduler = make_scheduler(args.sampler, schedule, args.steps, args.eta, args.spacing)
    cfg = model.config
    n = args.n or profile.n_samples
    generator = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=generator).to(device)
    images = sample(model, scheduler, x_T, generator=generator)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(images, nrow=8)).save(args.out)
    print(f"wrote {n} images ({args.sampler}, {len(scheduler.timesteps)} steps) to {args.out}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        {"train": train, "sample": sample_cmd}[args.command](args)
    except (FileNotFoundError, ValueError) as error:  # CheckpointError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
