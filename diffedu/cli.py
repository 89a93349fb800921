"""Command line: train a model or sample from one, outside the notebooks.

    python -m diffedu train ddpm --profile cpu --steps 2000 --out runs/ddpm/model
    python -m diffedu sample --ckpt runs/ddpm/model --sampler ddim --steps 50 --out samples.png
    python -m diffedu train vae --profile cpu                     # -> runs/vae/model
    python -m diffedu train latent --vae runs/vae/model           # -> runs/latent/model
    python -m diffedu sample --ckpt runs/latent/model --steps 50 --out latent.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

from . import checkpoint, data
from .nets import count_parameters
from . import pretrained
from .pretrained import RECIPES
from .profiles import PROFILES, get_profile, seed_everything
from .samplers import make_scheduler, sample
from .schedules import Schedule
from .latent import LatentDiffusion, cached_latents, calibrate
from .training import ddpm_trainer, vae_trainer
from .viz import grid


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m diffedu", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; sizes and defaults come from the profile")
    t.add_argument("model", nargs="?", default="ddpm", choices=["ddpm", "vae", "latent"],
                   help="ddpm: the pixel UNet (default); vae: the autoencoder; latent: a UNet on a VAE's latents (needs --vae)")
    t.add_argument("--profile", choices=list(PROFILES), help="sizes of net, batch and run (default: $DIFFEDU_PROFILE, else gpu with CUDA, else cpu)")
    t.add_argument("--recipe", choices=list(RECIPES), help="train a shipped checkpoint's recipe instead of a profile (see diffedu.pretrained)")
    t.add_argument("--steps", type=int, help="training steps (default: the profile's)")
    t.add_argument("--batch-size", type=int, help="default: the profile's")
    t.add_argument("--lr", type=float, help="learning rate (default: the profile's)")
    t.add_argument("--schedule", default="linear", choices=["linear", "cosine"])
    t.add_argument("--data", help="folder holding cifar-10-batches-py (default: $DIFFEDU_DATA, else data/)")
    t.add_argument("--vae", help="for `latent`: the VAE checkpoint whose latents to learn (default: runs/vae/model)")
    t.add_argument("--out", help="checkpoint path, without suffix (default: runs/<model>/model)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    t.add_argument("--save-every", type=int, default=500, help="save every N steps (default: 500)")
    t.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    t.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("sample", help="draw images from a checkpoint into a PNG grid")
    s.add_argument("--ckpt", required=True, help="checkpoint path (.safetensors/.json pair, suffix optional)")
    s.add_argument("--vae", help="for a latent model: its VAE checkpoint (default: the one it was trained with)")
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
    out = args.out or f"runs/{args.model}/model"
    images = data.load_cifar10(args.data).images[: profile.n_data]
    train_set = images
    if args.model == "vae":
        trainer = vae_trainer(profile, args.device, args.lr)
    else:
        # A resumed run keeps the schedule its model has been learning.
        schedule = checkpoint.schedule_of(out) if args.resume else Schedule.by_name(args.schedule)
        trainer = ddpm_trainer(profile, schedule, args.device, args.lr, latent=args.model == "latent")
    if args.model == "latent":  # learn the VAE's scaled latents, encoded once and cached
        vae_path = args.vae or "runs/vae/model"
        vae = checkpoint.load_model(vae_path, trainer.device)
        train_set = cached_latents(vae, images) * vae.config.scale_factor
        trainer.meta["vae"] = str(vae_path)  # so `sample` can decode
    if args.resume:
        trainer.load(out)
    batch_size = args.batch_size or profile.batch_size
    steps = args.steps or {"ddpm": profile.train_steps, "vae": profile.vae_steps, "latent": profile.latent_steps}[args.model]
    print(f"{args.model}: {type(trainer.model).__name__} {count_parameters(trainer.model) / 1e6:.2f}M parameters, "
          f"{len(train_set)} training examples, batch {batch_size}, steps {trainer.step} -> {trainer.step + steps}, "
          f"on {trainer.device} ({profile.name})")
    batches = data.batches(train_set, batch_size, flip=args.model != "latent", device=trainer.device, seed=args.seed + trainer.step)
    trainer.fit(batches, steps, save_to=out, save_every=args.save_every)
    if args.model == "vae":  # the latent scale factor belongs to the finished VAE, so it is measured last
        scale = calibrate(trainer.ema.model, images)
        trainer.model.config.scale_factor = scale
        trainer.save(out)
        print(f"latent scale factor {scale:.4f}")
    print(f"saved {checkpoint.paths(out)[0]}; final loss {sum(trainer.history[-50:]) / len(trainer.history[-50:]):.4f}")


def sample_cmd(args) -> None:
    profile = get_profile(args.profile)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = checkpoint.load_model(args.ckpt, device)
    schedule = checkpoint.schedule_of(args.ckpt)
    scheduler = make_scheduler(args.sampler, schedule, args.steps, args.eta, args.spacing)
    n = args.n or profile.n_samples
    generator = torch.Generator().manual_seed(args.seed)
    vae_path = args.vae or checkpoint.read_meta(args.ckpt).get("vae")
    if vae_path in pretrained.available():  # a shipped latent model names its shipped VAE
        vae_path = pretrained.path(vae_path)
    if vae_path:  # a latent model: sample latents, then decode them
        pipeline = LatentDiffusion(checkpoint.load_model(vae_path, device), model, schedule)
        images = pipeline.sample(n, args.steps, sampler=args.sampler, eta=args.eta, spacing=args.spacing, generator=generator)
    else:
        cfg = model.config
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
