"""Command line: train, sample, score and benchmark models, outside the notebooks.

    python -m diffedu train ddpm --profile cpu --steps 2000 --out runs/ddpm/model
    python -m diffedu sample --ckpt runs/ddpm/model --sampler ddim --steps 50 --out samples.png
    python -m diffedu train vae --profile cpu                     # -> runs/vae/model
    python -m diffedu train latent --vae runs/vae/model           # -> runs/latent/model
    python -m diffedu sample --ckpt runs/latent/model --steps 50 --out latent.png
    python -m diffedu fid --ckpt ddpm-cifar10 --steps 100 --samples 1000   # FID/KID of a model
    python -m diffedu bench --profile cpu                         # pixel vs latent, measured -> data/bench/cpu.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from . import bench, checkpoint, data, metrics, pretrained
from .nets import count_parameters
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

    f = sub.add_parser("fid", help="FID/KID of a model's samples, a VAE's reconstructions, or real test images")
    f.add_argument("--ckpt", help="checkpoint path or shipped name (ddpm-cifar10, ldm-cifar10, vae-cifar10); "
                                  "none: score real test images, the yardstick at this count")
    f.add_argument("--vae", help="for a latent model: its VAE (default: the one it was trained with)")
    f.add_argument("--samples", type=int, default=1000, help="images to score (default: 1000)")
    f.add_argument("--reference", type=int, help="first N training images as the reference (default: all)")
    f.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim"])
    f.add_argument("--steps", type=int, help="DDIM steps (default: 50)")
    f.add_argument("--eta", type=float, default=0.0)
    f.add_argument("--batch", type=int, default=100, help="images per sampling run (default: 100)")
    f.add_argument("--data", help="folder holding cifar-10-batches-py (default: $DIFFEDU_DATA, else data/)")
    f.add_argument("--device")
    f.add_argument("--seed", type=int, default=0)

    b = sub.add_parser("bench", help="measure pixel vs latent diffusion and DDPM vs DDIM: time, memory, FID/KID")
    b.add_argument("--profile", choices=list(PROFILES), help="sizes the run (default: $DIFFEDU_PROFILE, else gpu with CUDA, else cpu)")
    b.add_argument("--quick", action="store_true", help="the short version lesson 06 runs (cpu: 16 images, minutes)")
    b.add_argument("--samples", type=int, help="images per sampler for FID/KID (default: the profile's)")
    b.add_argument("--reference", type=int, help="real training images for the FID/KID reference (default: the profile's)")
    b.add_argument("--batch", type=int, help="images per timed sampling run (default: 64)")
    b.add_argument("--repeats", type=int, help="timed sampling runs per sampler (the median is reported)")
    b.add_argument("--pixel", help="pixel UNet checkpoint (default: the shipped ddpm-cifar10)")
    b.add_argument("--latent", help="latent UNet checkpoint (default: the shipped ldm-cifar10)")
    b.add_argument("--vae", help="the latent model's VAE (default: the one its checkpoint names)")
    b.add_argument("--data", help="folder holding cifar-10-batches-py (default: $DIFFEDU_DATA, else data/)")
    b.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    b.add_argument("--compile", action="store_true", help="torch.compile the UNets first")
    b.add_argument("--out", help="JSON file to write (default: data/bench/<profile>.json, where lesson 06 looks)")
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


def sampler_from(ckpt: str, vae: str | None, sampler: str, steps: int | None, eta: float, spacing: str, device):
    """draw(n, generator) -> n images in [-1, 1] from a checkpoint (a path or a shipped name). A latent
    model samples latents and decodes them with its VAE (the one it names, unless `vae` is given)."""
    ckpt = pretrained.resolve(ckpt)
    model, schedule = checkpoint.load_model(ckpt, device), checkpoint.schedule_of(ckpt)
    vae = vae or checkpoint.read_meta(ckpt).get("vae")
    if vae:
        pipeline = LatentDiffusion(checkpoint.load_model(pretrained.resolve(vae), device), model, schedule)
        return lambda n, g: pipeline.sample(n, steps, sampler=sampler, eta=eta, spacing=spacing, generator=g)
    scheduler, cfg = make_scheduler(sampler, schedule, steps, eta, spacing), model.config
    return lambda n, g: sample(model, scheduler, torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g).to(device), generator=g)


def device_of(args) -> torch.device:
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def sample_cmd(args) -> None:
    n = args.n or get_profile(args.profile).n_samples
    draw = sampler_from(args.ckpt, args.vae, args.sampler, args.steps, args.eta, args.spacing, device_of(args))
    images = draw(n, torch.Generator().manual_seed(args.seed))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(images, nrow=8)).save(args.out)
    steps = 1000 if args.sampler == "ddpm" else args.steps or 50
    print(f"wrote {n} images ({args.sampler}, {steps} steps) to {args.out}")


def fid_cmd(args) -> None:
    device = device_of(args)
    train, test = data.load_cifar10(args.data), data.load_cifar10(args.data, train=False)
    reference = train.images[: args.reference]
    if args.ckpt is None:
        images, what = test.images[: args.samples], "real test images"
    elif checkpoint.read_meta(pretrained.resolve(args.ckpt)).get("kind") == "vae":
        vae = checkpoint.load_model(pretrained.resolve(args.ckpt), device)
        images = torch.cat([vae.reconstruct(data.to_float(chunk.to(device))).cpu() for chunk in test.images[: args.samples].split(256)])
        what = f"{args.ckpt}'s reconstructions of test images"
    else:
        draw = sampler_from(args.ckpt, args.vae, args.sampler, args.steps, args.eta, "uniform", device)
        runs = range(0, args.samples, args.batch)
        images = torch.cat([draw(min(args.batch, args.samples - start), torch.Generator().manual_seed(args.seed + start)).float().cpu()
                            for start in tqdm(runs, desc="sampling")])
        what = f"{args.ckpt}, {args.sampler} {1000 if args.sampler == 'ddpm' else args.steps or 50} steps"
    row = metrics.score(images, metrics.cached_features(reference, device=device), device)
    print(f"{what}: {row['n']} images, FID {row['fid']:.2f}, KID x 1000 {1000 * row['kid']:.2f} ± {1000 * row['kid_std']:.2f} "
          f"against the first {len(reference)} training images of {train.source} (TF-Inception)")


def bench_cmd(args) -> None:
    profile = get_profile(args.profile)
    settings = bench.settings_for(profile.name, args.quick, samples=args.samples, reference=args.reference,
                                  batch=args.batch, repeats=args.repeats)
    result = bench.run(profile, settings, args.device, args.compile, args.pixel, args.latent, args.vae, args.data)
    print(bench.tables(result))
    out = bench.save(result, args.out or bench.results_path(profile.name, args.quick))
    print(f"\nwrote {out}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        {"train": train, "sample": sample_cmd, "fid": fid_cmd, "bench": bench_cmd}[args.command](args)
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as error:  # CheckpointError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
