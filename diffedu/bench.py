"""Pixel vs latent diffusion, DDPM vs DDIM, measured side by side on this machine.

    python -m diffedu bench --profile cpu          # prints markdown tables, writes data/bench/cpu.json

`run` measures, for the pixel UNet, the VAE and the latent UNet (the shipped checkpoints, or tiny
untrained nets in the smoke profile):
  - size: parameters, and FLOPs of one forward pass;
  - time to sample a batch with DDPM 1000, DDIM 100 and 50 (or the step counts asked for) and latent
    DDIM 50 (decoding included), after a warm-up, as the median of repeated runs, with the peak GPU memory;
  - training throughput, pixel vs latent (from cached latents, and with the encoder run per batch);
  - FID and KID of each sampler's images against real training images, beside real test images and
    their VAE reconstructions (what a perfect model would score at the same count).
The result is a JSON-ready dict whose rows are keyed by name (result["sampling"]["DDIM 100"]);
`diffedu.report` turns it into markdown tables beside the course's reference numbers.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint, data, env, measure, metrics, pretrained
from .errors import DiffeduError
from .latent import encode_latents
from .nets import UNet, UNetConfig, count_parameters
from .pipelines import Diffusion, LatentDiffusion, load_pipeline, load_vae
from .profiles import Profile
from .training import Trainer, eps_loss

FORMAT = 3  # of the result dict; results of another format are measured again, not read
CIFAR_TRAIN_IMAGES = 50_000  # "100 epochs" means 100 passes over this many images
YARDSTICKS = ("real test images", "VAE reconstructions of them")  # the reconstructions of the latent model's VAE
L1_DECODER = "vae-cifar10"  # the VAE before its decoder stage (diffedu.adversarial): the quality table keeps its rows
L1_RECONSTRUCTIONS = "L1-decoder reconstructions"


@dataclass(frozen=True)
class Method:
    """One way to make images: a row of the sampling and quality tables."""

    label: str
    space: str  # "pixel" or "latent"
    sampler: str  # "ddpm" or "ddim"
    steps: int
    spacing: str = "uniform"  # of DDIM's timesteps
    vae: str | None = None  # latent: decode with this VAE, not the one the latent model's checkpoint names


def methods(ddim_steps: tuple[int, ...] = (100, 50)) -> list[Method]:
    return [Method("DDPM 1000", "pixel", "ddpm", 1000), *(Method(f"DDIM {s}", "pixel", "ddim", s) for s in ddim_steps),
            Method("latent DDIM 50", "latent", "ddim", 50)]


@dataclass(frozen=True)
class BenchSettings:
    batch: int = 64  # images per timed sampling run (the course's tables time 64)
    repeats: int = 2  # timed runs of each DDIM sampler, after a warm-up (the median is reported)
    ddpm_repeats: int = 1  # timed runs of DDPM: its 1000 steps are most of a CPU bench's time
    samples: int = 64  # images per sampler scored by FID/KID: the timed runs' images, topped up if needed
    reference: int = 1000  # real training images the FID/KID reference features come from
    train_batch: int = 32
    train_steps: int = 5  # timed training steps, after 2 warm-up steps
    ddim_steps: tuple[int, ...] = (100, 50)  # the pixel DDIM rows
    fid: bool = True  # score FID/KID (False: sizes and timings only)


SETTINGS = {
    "smoke": BenchSettings(batch=4, repeats=1, samples=4, reference=16, train_batch=4, train_steps=2),
    # about 25 minutes on a 2-core VM: DDPM's 64 x 1000 UNet calls 13 of them, Inception (13 images/s) 7
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
    pixel: Diffusion
    latent: LatentDiffusion
    source: str

    def of(self, method: Method) -> Diffusion:
        return self.pixel if method.space == "pixel" else self.latent


def load_models(profile: Profile, device, pixel: str | None = None, latent: str | None = None,
                vae: str | None = None) -> Models:
    """Checkpoints by name or path when given, else tiny untrained nets in the smoke profile, else the shipped ones."""
    if profile.name == "smoke" and not (pixel or latent or vae):
        vae_net, schedule = profile.recipe("vae").build().to(device), profile.recipe("ddpm").noise_schedule()
        return Models(Diffusion(profile.recipe("ddpm").build().to(device), schedule),
                      LatentDiffusion(vae_net, profile.recipe("latent").build().to(device), schedule),
                      "untrained smoke-profile nets (timings only; their FID/KID mean nothing)")
    pixel, latent = pixel or "ddpm-cifar10", latent or "ldm-cifar10"
    models = Models(load_pipeline(pixel, device), load_pipeline(latent, device, vae), f"pixel {pixel}, latent {latent}")
    if isinstance(models.pixel, LatentDiffusion):
        raise DiffeduError(f"{pixel} is a latent model; the pixel row needs a pixel UNet (e.g. ddpm-cifar10)")
    if not isinstance(models.latent, LatentDiffusion):
        raise DiffeduError(f"{latent} is a pixel model; the latent row needs a latent UNet (e.g. ldm-cifar10)")
    return models


def model_sizes(models: Models, device) -> dict[str, dict]:
    """Parameters and GFLOPs per image of each network the samplers run."""
    vae, t = models.latent.vae, torch.zeros(1, dtype=torch.long, device=device)
    image = torch.zeros(1, vae.config.in_channels, vae.config.image_size, vae.config.image_size, device=device)
    nets = {
        "pixel UNet": (models.pixel.unet, (models.pixel.noise(1), t)),
        "latent UNet": (models.latent.unet, (models.latent.noise(1), t)),
        "VAE encoder": (vae.encoder, (image,)),
        "VAE decoder": (vae.decoder, (models.latent.noise(1),)),
    }
    return {name: {"params": count_parameters(net), "gflops": measure.forward_flops(net, *inputs) / 1e9}
            for name, (net, inputs) in nets.items()}


# ---- the measurements ------------------------------------------------------------

def draw(models: Models, method: Method, n: int, seed: int, progress: bool = False) -> torch.Tensor:
    """n images in [-1, 1]; the same seed gives the pixel samplers the same noise."""
    return models.of(method).sample(n, method.steps, sampler=method.sampler, spacing=method.spacing,
                                    generator=torch.Generator().manual_seed(seed), progress=progress)


def sample_images(pipe, n: int, steps: int | None = None, sampler: str = "ddim", spacing: str = "uniform",
                  batch_size: int = 100, seed: int = 0, eta: float = 0.0) -> torch.Tensor:
    """n images on the CPU, drawn `batch_size` at a time, batch k from the seed `seed + k * batch_size`: the
    protocol of every FID/KID the course ships, so that a row can be measured again and come out the same."""
    runs = range(0, n, batch_size)
    return torch.cat([pipe.sample(min(batch_size, n - start), steps, sampler=sampler, eta=eta, spacing=spacing, progress=False,
                                  generator=torch.Generator().manual_seed(seed + start)).float().cpu()
                      for start in tqdm(runs, desc="sampling", leave=False)])


def time_sampler(models: Models, method: Method, settings: BenchSettings, device, fast: bool) -> tuple[dict, torch.Tensor]:
    """Warm up, then timed runs of `batch` images (`ddpm_repeats` of DDPM, `repeats` of the others), then
    untimed runs up to `samples` images when FID is scored. Returns the timing row and the images (on the CPU)."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if fast else nullcontext()
    images = []

    def run():
        images.append(draw(models, method, settings.batch, seed=len(images), progress=True).float().cpu())

    with autocast, measure.PeakMemory(device) as memory:  # the warm-up counts: after it the allocator holds the memory
        draw(models, replace(method, sampler="ddim", steps=2), settings.batch, seed=-1)  # the same kernels, 2 steps
        times = measure.timed(run, settings.ddpm_repeats if method.sampler == "ddpm" else settings.repeats, device, warmup=False)
    with autocast:
        while settings.fid and sum(map(len, images)) < settings.samples:
            run()
    seconds = statistics.median(times)
    return {"steps": method.steps, "images": settings.batch, "runs": len(times), "seconds": seconds, "all_seconds": times,
            "ms_per_step": 1000 * seconds / method.steps, "peak_memory_mib": memory.mib}, torch.cat(images)[: settings.samples]


def training_rates(models: Models, train_images: torch.Tensor, settings: BenchSettings, device) -> dict[str, dict]:
    """Images per second through a full training step (loss, backward, AdamW, EMA) of fresh nets
    shaped like the compared ones: on pixels, on cached latents, and on latents encoded per batch."""
    vae = models.latent.vae
    pool = train_images[: max(4 * settings.train_batch, 256)]
    latents = encode_latents(vae, data.to_float(pool)).cpu()
    loss = partial(eps_loss, schedule=models.pixel.schedule)
    encode_then_loss = lambda model, x: loss(model, encode_latents(vae, x).clone())  # noqa: E731 (clone: leave inference mode)
    runs = {  # name: (net shape, loss, data, flip)
        "pixel": (models.pixel.unet.config, loss, pool, True),
        "latent, cached latents": (models.latent.unet.config, loss, latents, False),
        "latent, encoder run per batch": (models.latent.unet.config, encode_then_loss, pool, True),
    }
    rows = {}
    for name, (config, loss_fn, source, flip) in runs.items():
        trainer = Trainer(UNet(UNetConfig(**config.to_dict())), loss_fn, device=device)
        trainer.model.train()
        batches = data.batches(source, settings.train_batch, flip=flip, device=trainer.device)
        for _ in range(2):  # warm-up
            trainer.train_step(next(batches))
        (seconds,) = measure.timed(lambda: [trainer.train_step(next(batches)) for _ in range(settings.train_steps)],
                                   repeats=1, device=device, warmup=False)
        rate = settings.train_batch * settings.train_steps / seconds
        rows[name] = {"batch": settings.train_batch, "steps": settings.train_steps, "images_per_second": rate,
                      "hours_per_100_epochs": 100 * CIFAR_TRAIN_IMAGES / rate / 3600}
    return rows


def quality(samples: dict[str, torch.Tensor], reference: torch.Tensor, test: torch.Tensor, vae, device) -> dict[str, dict]:
    """FID and KID of each set of images against the reference images, with real test images and their
    VAE reconstructions as the yardsticks at the same count."""
    reference_features = metrics.Reference(metrics.cached_features(reference, device=device))  # read (or computed) once
    reconstructions = reconstruct_images(vae, test, device)
    sets = {**samples, YARDSTICKS[0]: test, YARDSTICKS[1]: reconstructions}
    return {name: metrics.score(images, reference_features, device) for name, images in tqdm(sets.items(), desc="FID/KID", leave=False)}


def reconstruct_images(vae, images: torch.Tensor, device, batch_size: int = 100) -> torch.Tensor:
    """A VAE's reconstructions of uint8 images, as float images in [-1, 1] on the CPU."""
    return torch.cat([vae.reconstruct(data.to_float(chunk.to(device))).float().cpu() for chunk in images.split(batch_size)])


def scaling_table(sides=(32, 64, 128, 256, 512, 1024)) -> list[dict]:
    """Values a diffusion model denoises per image: pixels (x3) vs latents of 4 channels at f = 4 and 8."""
    return [{"side": s, "pixel": 3 * s * s, "f4": 4 * (s // 4) ** 2, "f8": 4 * (s // 8) ** 2,
             "f4_ratio": 3 * s * s / (4 * (s // 4) ** 2), "f8_ratio": 3 * s * s / (4 * (s // 8) ** 2)} for s in sides]


GUIDANCE_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 7.5)


def guidance_curve(pipe, train, test, samples: int = 500, reference: int | None = None, scales=GUIDANCE_SCALES,
                   steps: int = 50, batch_size: int = 100, device=None, seed: int = 0) -> dict:
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
        images = torch.cat([pipe.sample(len(chunk), steps, classes=chunk, guidance=w, progress=False,
                                        generator=torch.Generator().manual_seed(seed + start)).float().cpu()
                            for start, chunk in zip(range(0, samples, batch_size), classes.split(batch_size))])
        features = metrics.inception_features(images, device=device)
        rows[str(w)] = {"guidance": w, **metrics.scores_of(features, scored_against), "accuracy": probe.accuracy(features, classes)}
    return {"format": FORMAT, "samples": samples, "steps": steps,
            "reference": f"{'all' if reference == len(train) else 'the first'} {reference} CIFAR-10 training images",
            "scales": rows,
            "real test images": {**metrics.scores_of(test_features, scored_against),
                                 "accuracy": probe.accuracy(test_features, test.labels[:samples])},
            "probe_train_accuracy": probe.accuracy(train_features, train.labels[:reference])}


# ---- the shipped quality curves -------------------------------------------------

def quality_methods() -> list[Method]:
    """The rows of the shipped quality table: every sampler the lessons compare, DDIM at both spacings."""
    return [Method("DDPM 1000", "pixel", "ddpm", 1000),
            *(Method(f"DDIM {s}", "pixel", "ddim", s) for s in (100, 50, 20, 10)),
            *(Method(f"DDIM {s} quadratic", "pixel", "ddim", s, "quadratic") for s in (100, 50, 20, 10)),
            *(Method(f"latent DDIM {s}", "latent", "ddim", s) for s in (50, 20, 10)),
            Method("latent DDIM 50, L1 decoder", "latent", "ddim", 50, vae=L1_DECODER)]


def quality_row_images(label: str, test_images: torch.Tensor, device, batch_size: int = 100,
                       pipes: dict | None = None) -> tuple[torch.Tensor, dict]:
    """The images of one row of the quality table, as many as `test_images`, made by its protocol (seeded: the
    same images every time), and what the row records of how they were made. `pipes` keeps loaded models."""
    pipes = {} if pipes is None else pipes
    if label == YARDSTICKS[0]:
        return test_images, {}
    if label in (YARDSTICKS[1], L1_RECONSTRUCTIONS):
        name = L1_DECODER if label == L1_RECONSTRUCTIONS else checkpoint.read_meta(pretrained.path("ldm-cifar10"))["vae"]
        return reconstruct_images(load_vae(name, device), test_images, device), {"model": name}
    method = {m.label: m for m in quality_methods()}[label]
    name = "ddpm-cifar10" if method.space == "pixel" else "ldm-cifar10"
    if (name, method.vae) not in pipes:
        pipes[name, method.vae] = load_pipeline(name, device, vae=method.vae)
    images = sample_images(pipes[name, method.vae], len(test_images), method.steps, method.sampler, method.spacing, batch_size)
    return images, {"model": name, **asdict(method)}


def quality_curves(out: str | Path, samples: int = 500, labels: list[str] | None = None, device=None,
                   data_root: str | None = None, batch_size: int = 100) -> dict:
    """FID and KID of the shipped models' samples (ddpm-cifar10, ldm-cifar10) for each sampler, of the
    reconstructions of ldm-cifar10's VAE and of vae-cifar10 (the L1 decoder it replaced), and of real test
    images, all at `samples` images against all the training images, with
    the seconds per image each sampler took here. Resumable: rows already in `out` at the same count and
    reference are kept, and each new row is written as soon as it is measured."""
    device = env.get_device(device)
    train, test = data.load_cifar10(data_root), data.load_cifar10(data_root, train=False)
    reference = f"all {len(train)} CIFAR-10 training images"  # (the source's path would name this machine's folders)
    every = [*YARDSTICKS, L1_RECONSTRUCTIONS, *(m.label for m in quality_methods())]
    labels = labels or every
    unknown = [label for label in labels if label not in every]
    if unknown:
        raise DiffeduError(f"no quality row {unknown[0]!r}; rows: {', '.join(every)}")
    table = {"format": FORMAT, "samples": samples, "reference": reference, "rows": {}}
    if Path(out).exists():
        try:
            saved = json.loads(Path(out).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DiffeduError(f"{out} is not a quality table ({error}): choose another --out, or delete it") from error
        if not isinstance(saved, dict) or "rows" not in saved:
            raise DiffeduError(f"{out} is not a quality table: choose another --out, or delete it")
        if (saved.get("format"), saved.get("samples"), saved.get("reference")) == (FORMAT, samples, reference):
            table = saved  # else (another format or count) it is measured again
    reference_features = metrics.Reference(metrics.cached_features(train.images, device=device))
    pipes = {}
    for label in tqdm([label for label in labels if label not in table["rows"]], desc="quality rows"):
        start = time.perf_counter()
        images, row = quality_row_images(label, test.images[:samples], device, batch_size, pipes)
        row["seconds_per_image"] = (time.perf_counter() - start) / samples
        table["rows"][label] = {**row, **metrics.score(images, reference_features, device), "machine": machine(device),
                                "date": time.strftime("%Y-%m-%d")}
        table["rows"] = {label: table["rows"][label] for label in every if label in table["rows"]}  # the table's order
        save(table, out)
    return table


# ---- the whole run ---------------------------------------------------------------

def run(profile: Profile, settings: BenchSettings | None = None, device: str | torch.device | None = None,
        compile: bool = False, pixel: str | None = None, latent: str | None = None, vae: str | None = None,
        data_root: str | None = None) -> dict:
    """Everything the module docstring lists, as one JSON-ready dict."""
    settings, device = settings or settings_for(profile.name), env.get_device(device)
    fast = device.type == "cuda"  # bf16 autocast pays off on a GPU, not on a CPU
    began = time.perf_counter()
    models = load_models(profile, device, pixel, latent, vae)
    for method in methods(settings.ddim_steps):  # an impossible step count fails now, not after minutes of timing
        (models.pixel if method.space == "pixel" else models.latent).scheduler(method.sampler, method.steps)
    sizes = model_sizes(models, device)  # counted before torch.compile, which FlopCounterMode cannot see into
    for net in (models.pixel.unet, models.latent.unet, *([models.latent.vae] if fast else [])):
        net.to(memory_format=torch.channels_last)  # as load_pipeline does: faster on a CPU too (README)
    if compile:
        models.pixel.unet, models.latent.unet = torch.compile(models.pixel.unet), torch.compile(models.latent.unet)
    train, test = data.load_cifar10(data_root), data.load_cifar10(data_root, train=False)
    settings = replace(settings, reference=min(settings.reference, len(train)))

    rows = methods(settings.ddim_steps)
    bar = tqdm(total=len(rows) + 1 + settings.fid, desc="bench")
    sampling, samples = {}, {}
    for method in rows:
        bar.set_description(f"bench: sampling {method.label}")
        sampling[method.label], samples[method.label] = time_sampler(models, method, settings, device, fast)
        sampling[method.label]["gflops_per_image"] = method.steps * sizes[f"{method.space} UNet"]["gflops"] + (
            sizes["VAE decoder"]["gflops"] if method.space == "latent" else 0)  # steps x UNet, plus one decoder call
        bar.update()
    bar.set_description("bench: training throughput")
    training = training_rates(models, train.images, settings, device)
    bar.update()
    scores = None
    if settings.fid:
        bar.set_description("bench: FID and KID")
        scores = quality(samples, train.images[: settings.reference], test.images[: settings.samples], models.latent.vae, device)
        bar.update()
    bar.close()
    return {
        "format": FORMAT, "profile": profile.name, "settings": asdict(settings), "models": models.source, "machine": machine(device),
        "options": {"inference_mode": True, "bf16_autocast": fast, "channels_last": True, "torch_compile": compile},
        "sizes": sizes, "sampling": sampling, "training": training,
        "quality": scores and {"reference": f"the first {settings.reference} CIFAR-10 training images",
                               "scores": scores},
        "scaling": scaling_table(),
        "seconds": time.perf_counter() - began, "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def machine(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": str(device), "name": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def results_path(profile: str, quick: bool = False) -> Path:
    """Where `python -m diffedu bench` writes its JSON and lesson 06 looks for it: bench/ in the diffedu
    home, the same folder from wherever either runs."""
    return env.home() / "bench" / f"{profile}{'-quick' if quick else ''}.json"


def save(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path


def load(path: str | Path) -> dict:
    result = json.loads(Path(path).read_text())
    if result.get("format") != FORMAT:
        raise DiffeduError(f"{path} was written by another version of diffedu's bench: run `python -m diffedu bench` again")
    return result


def saved_result(profile: str) -> dict | None:
    """The full bench's result for this profile, if `python -m diffedu bench` has written a current one
    with every default row and FID/KID (what lesson 06 shows)."""
    path = results_path(profile)
    try:
        result = load(path) if path.exists() else None
    except (DiffeduError, json.JSONDecodeError):
        return None
    complete = result and result.get("quality") and list(result["sampling"]) == [m.label for m in methods()]
    return result if complete else None
