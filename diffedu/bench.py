"""Pixel vs latent diffusion, DDPM vs DDIM, measured side by side on this machine.

    python -m diffedu bench --profile cpu          # prints markdown tables, writes data/bench/cpu.json

`run` measures, for the pixel UNet, the VAE and the latent UNet (the shipped checkpoints, or tiny
untrained nets in the smoke profile):
  - size: parameters, and FLOPs of one forward pass (counted by torch.utils.flop_counter);
  - training throughput, pixel vs latent (from cached latents, and with the encoder run per batch);
  - time to sample a batch with DDPM 1000, DDIM 100, DDIM 50 and latent DDIM 50 (decoding included),
    after a warm-up, as the median of repeated runs, with the peak memory;
  - FID and KID of each sampler's images against real training images, beside real test images and
    their VAE reconstructions (what a perfect model would score at the same count);
  - the dimension table from 32x32 to 1024x1024.
`tables` turns the result into markdown, with the course's reference numbers as a column.
"""
from __future__ import annotations

import json
import platform
import statistics
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from . import checkpoint, data, metrics, pretrained
from .latent import LatentDiffusion, encode_latents
from .nets import UNet, UNetConfig, count_parameters
from .profiles import Profile
from .samplers import make_scheduler, sample
from .schedules import Schedule
from .training import Trainer, eps_loss
from .vae import VAE, VAEConfig

# The course's source material (CIFAR-10, one GPU, 100 epochs): what these measurements stand beside.
REFERENCE = {
    "train_hours_per_100_epochs": {"pixel": 4.0, "latent": 3.0},
    "sample_64_seconds": {"DDPM 1000": 11.10, "DDIM 100": 0.82, "latent DDIM 50": 1.41},
    "fid": {"DDPM 1000": "90.93", "DDIM 100": "88.91", "latent DDIM 50": "85-90"},
}
CIFAR_TRAIN_IMAGES = 50_000  # "100 epochs" means 100 passes over this many images

# (label, which model, sampler, steps)
METHODS = [("DDPM 1000", "pixel", "ddpm", 1000), ("DDIM 100", "pixel", "ddim", 100),
           ("DDIM 50", "pixel", "ddim", 50), ("latent DDIM 50", "latent", "ddim", 50)]


@dataclass(frozen=True)
class BenchSettings:
    batch: int = 64  # images per timed sampling run (the course's tables time 64)
    repeats: int = 2  # timed runs of each DDIM sampler, after a warm-up (the median is reported)
    ddpm_repeats: int = 1  # timed runs of DDPM: its 1000 steps are most of a CPU bench's time
    samples: int = 64  # images per sampler scored by FID/KID: the timed runs' images, topped up if needed
    reference: int = 1000  # real training images the FID/KID reference features come from
    train_batch: int = 32
    train_steps: int = 5  # timed training steps, after 2 warm-up steps


SETTINGS = {
    "smoke": BenchSettings(batch=4, repeats=1, samples=4, reference=16, train_batch=4, train_steps=2),
    # about 25 minutes on a 2-core VM: DDPM's 64 x 1000 UNet calls 13 of them, Inception (3 images/s) 7
    "cpu": BenchSettings(),
    "gpu": BenchSettings(repeats=5, ddpm_repeats=3, samples=5000, reference=50_000, train_batch=128, train_steps=50),
}
# What lesson 06 runs: a few minutes on a CPU. FID/KID of 16 images show the method, not the models.
QUICK = {"cpu": BenchSettings(batch=16, samples=16, reference=256, train_batch=16, train_steps=3),
         "gpu": BenchSettings(repeats=3, samples=1000, reference=10_000, train_batch=128, train_steps=20)}


def settings_for(profile: str, quick: bool = False, **overrides) -> BenchSettings:
    settings = (QUICK.get(profile) if quick else None) or SETTINGS[profile]
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


# ---- the models ------------------------------------------------------------------

@dataclass
class Models:
    pixel: UNet
    schedule: Schedule  # the pixel model's
    latent: LatentDiffusion
    source: str


def load_models(profile: Profile, device, pixel: str | None = None, latent: str | None = None,
                vae: str | None = None) -> Models:
    """Checkpoints by path when given, else tiny untrained nets in the smoke profile, else the shipped ones."""
    if profile.name == "smoke" and not (pixel or latent):
        vae_net = VAE(VAEConfig(**profile.vae)).to(device)
        pipe = LatentDiffusion(vae_net, UNet(UNetConfig(**profile.latent_unet)).to(device), Schedule.linear())
        return Models(UNet(UNetConfig(**profile.unet)).to(device).eval(), Schedule.linear(), pipe,
                      "untrained smoke-profile nets (timings only; their FID/KID mean nothing)")
    pixel_path = pretrained.resolve(pixel or "ddpm-cifar10")
    latent_path = pretrained.resolve(latent or "ldm-cifar10")
    vae_path = pretrained.resolve(vae or checkpoint.read_meta(latent_path).get("vae"))
    if not vae_path:
        raise ValueError(f"{latent_path} names no VAE: pass the one it was trained on (--vae)")
    pipe = LatentDiffusion(checkpoint.load_model(vae_path, device), checkpoint.load_model(latent_path, device),
                           checkpoint.schedule_of(latent_path))
    return Models(checkpoint.load_model(pixel_path, device), checkpoint.schedule_of(pixel_path), pipe,
                  f"pixel {Path(pixel_path).name}, latent {Path(latent_path).name} on VAE {Path(vae_path).name}")


def forward_flops(module: torch.nn.Module, *inputs) -> int:
    """FLOPs of one call (a multiply-add counts 2), counted operator by operator."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(*inputs)
    return counter.get_total_flops()


def model_sizes(models: Models, device) -> list[dict]:
    """Parameters and GFLOPs per image of each network the samplers run."""
    vae = models.latent.vae
    cfg_p, cfg_l, cfg_v = models.pixel.config, models.latent.unet.config, vae.config
    t = torch.zeros(1, dtype=torch.long, device=device)
    nets = [
        ("pixel UNet", models.pixel, (torch.zeros(1, cfg_p.in_channels, cfg_p.image_size, cfg_p.image_size, device=device), t)),
        ("latent UNet", models.latent.unet, (torch.zeros(1, cfg_l.in_channels, cfg_l.image_size, cfg_l.image_size, device=device), t)),
        ("VAE encoder", vae.encoder, (torch.zeros(1, cfg_v.in_channels, cfg_v.image_size, cfg_v.image_size, device=device),)),
        ("VAE decoder", vae.decoder, (torch.zeros(1, cfg_v.latent_channels, cfg_v.latent_size, cfg_v.latent_size, device=device),)),
    ]
    return [{"model": name, "params": count_parameters(net), "gflops": forward_flops(net, *inputs) / 1e9}
            for name, net, inputs in nets]


# ---- timing and memory -----------------------------------------------------------

def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class PeakMemory:
    """Peak memory above the level at the start, in MiB, while the block runs: the CUDA allocator's
    statistics on a GPU; on a CPU, the process's resident memory, sampled every 10 ms."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.mib = 0.0

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            import psutil

            process, self.stop = psutil.Process(), threading.Event()
            self.base = self.peak = process.memory_info().rss

            def watch():
                while not self.stop.wait(0.01):
                    self.peak = max(self.peak, process.memory_info().rss)

            self.watcher = threading.Thread(target=watch, daemon=True)
            self.watcher.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.stop.set()
            self.watcher.join()
        self.mib = max(0, self.peak - self.base) / 2**20


def draw(models: Models, method: tuple, n: int, seed: int, progress: bool = False) -> torch.Tensor:
    """n images in [-1, 1] from one of METHODS; the same seed gives the pixel samplers the same noise."""
    _, space, sampler, steps = method
    generator = torch.Generator().manual_seed(seed)
    if space == "latent":
        return models.latent.sample(n, steps, sampler=sampler, generator=generator, progress=progress)
    cfg = models.pixel.config
    x_T = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=generator).to(next(models.pixel.parameters()).device)
    scheduler = make_scheduler(sampler, models.schedule, steps if sampler == "ddim" else None)
    return sample(models.pixel, scheduler, x_T, generator=generator, progress=progress)


def time_sampler(models: Models, method: tuple, settings: BenchSettings, device, fast: bool) -> tuple[dict, torch.Tensor]:
    """Warm up, then timed runs of `batch` images (`ddpm_repeats` of DDPM, `repeats` of the others), then
    untimed runs up to `samples` images. Returns the timing row and the images (on the CPU)."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if fast else nullcontext()
    times, images = [], []
    with autocast, PeakMemory(device) as memory:  # the warm-up counts: after it the allocator holds the memory
        draw(models, (*method[:2], "ddim", 2), settings.batch, seed=-1)  # warm-up: the same kernels, 2 steps
        for run in range(settings.ddpm_repeats if method[2] == "ddpm" else settings.repeats):
            synchronize(device)
            start = time.perf_counter()
            images.append(draw(models, method, settings.batch, seed=run, progress=True).float().cpu())
            synchronize(device)
            times.append(time.perf_counter() - start)
    with autocast:
        while sum(map(len, images)) < settings.samples:
            images.append(draw(models, method, settings.batch, seed=len(images), progress=True).float().cpu())
    seconds = statistics.median(times)
    label, _, _, steps = method
    return {"method": label, "steps": steps, "images": settings.batch, "runs": len(times), "seconds": seconds,
            "all_seconds": times, "ms_per_step": 1000 * seconds / steps, "peak_memory_mib": memory.mib}, torch.cat(images)[: settings.samples]


def training_rates(models: Models, train_images: torch.Tensor, settings: BenchSettings, device) -> list[dict]:
    """Images per second through a full training step (loss, backward, AdamW, EMA) of fresh nets
    shaped like the compared ones: on pixels, on cached latents, and on latents encoded per batch."""
    vae, schedule = models.latent.vae, Schedule.linear()
    pool = train_images[: max(4 * settings.train_batch, 256)]
    latents = encode_latents(vae, data.to_float(pool)).cpu()
    loss = partial(eps_loss, schedule=schedule)
    encode_then_loss = lambda model, x: loss(model, encode_latents(vae, x).clone())  # noqa: E731 (clone: leave inference mode)
    runs = [  # (name, net shape, loss, data, flip)
        ("pixel", models.pixel.config, loss, pool, True),
        ("latent, cached latents", models.latent.unet.config, loss, latents, False),
        ("latent, encoder run per batch", models.latent.unet.config, encode_then_loss, pool, True),
    ]
    rows = []
    for name, config, loss_fn, source, flip in runs:
        trainer = Trainer(UNet(UNetConfig(**config.to_dict())), loss_fn, device=device)
        trainer.model.train()
        batches = data.batches(source, settings.train_batch, flip=flip, device=trainer.device)
        for _ in range(2):  # warm-up
            trainer.train_step(next(batches))
        synchronize(device)
        start = time.perf_counter()
        for _ in range(settings.train_steps):
            trainer.train_step(next(batches))
        synchronize(device)
        rate = settings.train_batch * settings.train_steps / (time.perf_counter() - start)
        rows.append({"run": name, "batch": settings.train_batch, "steps": settings.train_steps, "images_per_second": rate,
                     "hours_per_100_epochs": 100 * CIFAR_TRAIN_IMAGES / rate / 3600})
    return rows


# ---- quality and scale -----------------------------------------------------------

def quality(samples: dict[str, torch.Tensor], reference: torch.Tensor, test: torch.Tensor, vae: VAE,
            device, cache: str | Path | None = None) -> list[dict]:
    """FID and KID of each set of images against the reference images, with real test images and their
    VAE reconstructions as the yardsticks at the same count."""
    reference_features = metrics.cached_features(reference, cache, device=device)  # read (or computed) once
    reconstructions = torch.cat([vae.reconstruct(data.to_float(chunk.to(device))).float().cpu() for chunk in test.split(64)])
    sets = {**samples, "real test images": test, "VAE reconstructions of them": reconstructions}
    return [{"images": name, **metrics.score(images, reference_features, device)}
            for name, images in tqdm(sets.items(), desc="FID/KID", leave=False)]


def scaling_table(sides=(32, 64, 128, 256, 512, 1024)) -> list[dict]:
    """Values a diffusion model denoises per image: pixels (x3) vs latents of 4 channels at f = 4 and 8."""
    return [{"side": s, "pixel": 3 * s * s, "f4": 4 * (s // 4) ** 2, "f8": 4 * (s // 8) ** 2,
             "f4_ratio": 3 * s * s / (4 * (s // 4) ** 2), "f8_ratio": 3 * s * s / (4 * (s // 8) ** 2)} for s in sides]


# ---- the whole run ---------------------------------------------------------------

def run(profile: Profile, settings: BenchSettings | None = None, device: str | torch.device | None = None,
        compile: bool = False, pixel: str | None = None, latent: str | None = None, vae: str | None = None,
        data_root: str | None = None, cache: str | Path | None = None) -> dict:
    """Everything the module docstring lists, as one JSON-ready dict."""
    settings = settings or settings_for(profile.name)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fast = device.type == "cuda"  # bf16 autocast and channels-last pay off on a GPU, not on a CPU
    began = time.perf_counter()
    models = load_models(profile, device, pixel, latent, vae)
    sizes = model_sizes(models, device)  # counted before torch.compile, which FlopCounterMode cannot see into
    if fast:
        for net in (models.pixel, models.latent.unet, models.latent.vae):
            net.to(memory_format=torch.channels_last)
    if compile:
        models.pixel, models.latent.unet = torch.compile(models.pixel), torch.compile(models.latent.unet)
    train, test = data.load_cifar10(data_root), data.load_cifar10(data_root, train=False)
    if settings.reference > len(train):
        settings = replace(settings, reference=len(train))

    bar = tqdm(total=len(METHODS) + 2, desc="bench")
    sampling, samples = [], {}
    for method in METHODS:
        bar.set_description(f"bench: sampling {method[0]}")
        row, samples[method[0]] = time_sampler(models, method, settings, device, fast)
        sampling.append(row)
        bar.update()
    bar.set_description("bench: training throughput")
    training = training_rates(models, train.images, settings, device)
    bar.update()
    bar.set_description("bench: FID and KID")
    scores = quality(samples, train.images[: settings.reference], test.images[: settings.samples],
                     models.latent.vae, device, cache)
    bar.update()
    bar.close()
    flops = {row["model"]: row["gflops"] for row in sizes}
    for row in sampling:  # model FLOPs per image: steps x UNet, plus one decoder call for latents
        latent = row["method"].startswith("latent")
        row["gflops_per_image"] = row["steps"] * flops["latent UNet" if latent else "pixel UNet"] + (flops["VAE decoder"] if latent else 0)
    return {
        "profile": profile.name, "settings": asdict(settings), "models": models.source,
        "machine": machine(device),
        "options": {"inference_mode": True, "bf16_autocast": fast, "channels_last": fast, "torch_compile": compile},
        "sizes": sizes, "sampling": sampling, "training": training,
        "quality": {"reference": f"the first {settings.reference} CIFAR-10 training images of {train.source}",
                    "rows": scores},
        "scaling": scaling_table(), "course_reference": REFERENCE,
        "seconds": time.perf_counter() - began, "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def machine(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": str(device), "name": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def results_path(profile: str, quick: bool = False) -> Path:
    """Where `python -m diffedu bench` writes its JSON and lesson 06 looks for it: data/bench, the same
    folder from wherever either runs."""
    return data.DEFAULT_ROOT / "bench" / f"{profile}{'-quick' if quick else ''}.json"


def save(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


# ---- markdown --------------------------------------------------------------------

def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(header))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def tables(result: dict) -> str:
    """The result as markdown tables, the course's reference numbers beside the measured ones."""
    ref, m, s = result["course_reference"], result["machine"], result["settings"]
    on = [k for k, v in result["options"].items() if v] or ["none"]
    parts = [f"Measured on {m['device']} ({m['name']}, {m['threads']} threads, torch {m['torch']}), profile "
             f"`{result['profile']}`, {result['models']}; options on: {', '.join(on)}; {result['seconds']:.0f} s in all."]

    parts.append("**The networks** (GFLOPs of one forward pass for one image)\n\n" + _table(
        ["network", "parameters", "GFLOPs"],
        [[r["model"], f"{r['params'] / 1e6:.2f}M", f"{r['gflops']:.3f}"] for r in result["sizes"]]))

    sampling, seconds_ref = result["sampling"], ref["sample_64_seconds"]
    ddpm, ddpm_ref = sampling[0]["seconds"], seconds_ref["DDPM 1000"]
    reference = lambda method: f"{seconds_ref[method]} s ({ddpm_ref / seconds_ref[method]:.1f}x)" if method in seconds_ref else ""  # noqa: E731
    parts.append(f"**Sampling {s['batch']} images** (the median of the timed runs after a warm-up; latent: decoding included; the reference: 64 images on one GPU)\n\n" + _table(
        ["sampler", "steps", "runs", "seconds", "ms per step", "speed-up vs DDPM 1000", "GFLOPs per image", "peak memory", "reference"],
        [[r["method"], r["steps"], r["runs"], f"{r['seconds']:.2f}", f"{r['ms_per_step']:.1f}", f"{ddpm / r['seconds']:.1f}x",
          f"{r['gflops_per_image']:.3g}", f"{r['peak_memory_mib']:.0f} MiB", reference(r["method"])] for r in sampling]))

    training = result["training"]
    pixel_rate = training[0]["images_per_second"]
    ref_hours = ref["train_hours_per_100_epochs"]
    parts.append(f"**Training throughput** (batch {s['train_batch']}, {s['train_steps']} timed steps; 100 epochs = "
                 f"{100 * CIFAR_TRAIN_IMAGES:,} images)\n\n" + _table(
        ["run", "images/s", "vs pixel", "hours per 100 epochs", "reference hours"],
        [[r["run"], f"{r['images_per_second']:.1f}", f"{r['images_per_second'] / pixel_rate:.2f}x",
          f"{r['hours_per_100_epochs']:.2f}", ref_hours["pixel" if r["run"] == "pixel" else "latent"]] for r in training]))

    q = result["quality"]
    parts.append(f"**FID and KID** against {q['reference']} (TF-Inception; lower is better; KID x 1000 as mean ± std "
                 "over subsets). FID depends on the count: compare rows of equal n only.\n\n" + _table(
        ["images", "n", "FID", "KID x 1000", "reference FID"],
        [[r["images"], r["n"], f"{r['fid']:.2f}", f"{1000 * r['kid']:.2f} ± {1000 * r['kid_std']:.2f}",
          ref["fid"].get(r["images"], "")] for r in q["rows"]]))

    parts.append("**What the diffusion model denoises per image** (4 latent channels)\n\n" + _table(
        ["image", "pixel values", "f = 4 latent", "ratio", "f = 8 latent", "ratio"],
        [[f"{r['side']}x{r['side']}x3", f"{r['pixel']:,}", f"{r['f4']:,}", f"{r['f4_ratio']:.0f}x", f"{r['f8']:,}",
          f"{r['f8_ratio']:.0f}x"] for r in result["scaling"]]))
    return "\n\n".join(parts)
