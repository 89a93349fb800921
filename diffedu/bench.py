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
`diffedu.report` turns it into markdown tables beside the course's reference numbers. The images are drawn and
scored by `diffedu.evaluation`'s protocols; this module times them.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import data, env, measure
from .errors import DiffeduError
from .evaluation import Method, sample_images, score_sets
from .latent import encode_latents
from .nets import UNet, UNetConfig, count_parameters
from .pipelines import Diffusion, LatentDiffusion, load_pipeline
from .profiles import Profile
from .training import Trainer, eps_loss
from .vae import VAE

FORMAT = 4  # of the result dict; results of another format are measured again, not read
CIFAR_TRAIN_IMAGES = 50_000  # "100 epochs" means 100 passes over this many images


def methods(ddim_steps: tuple[int, ...] = (100, 50), also: tuple[str, ...] = ()) -> list[Method]:
    """The bench's rows: DDPM 1000, pixel DDIM at each step count, latent DDIM 50, then the methods `also` names
    (labels such as "DPM-Solver++(2M) 10" or "Heun 5": any registered sampler)."""
    chosen = [
        Method.named(label) for label in ("DDPM 1000", *(f"DDIM {s}" for s in ddim_steps), "latent DDIM 50", *also)
    ]
    for method in chosen:
        if method.vae:  # the bench decodes with the profile's own VAE: the row would be timed under another label
            raise DiffeduError(
                f"the bench decodes with the profile's VAE, so it cannot time '{method.label}': measure it with "
                f"python -m diffedu quality --rows '{method.label}'"
            )
        if method.space == "flow":  # the bench times the profile's own pixel and latent models
            raise DiffeduError(
                f"the bench times the profile's pixel and latent models, not the flow model: measure "
                f"'{method.label}' with python -m diffedu quality --rows '{method.label}'"
            )
    return chosen


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
    also: tuple[str, ...] = ()  # more rows, by label (Method.named): other samplers
    fid: bool = True  # score FID/KID (False: sizes and timings only)


SETTINGS = {
    "smoke": BenchSettings(batch=4, repeats=1, samples=4, reference=16, train_batch=4, train_steps=2),
    # about 25 minutes on a 2-core VM: DDPM's 64 x 1000 UNet calls 13 of them, Inception (13 images/s) 7
    "cpu": BenchSettings(),
    "gpu": BenchSettings(repeats=5, ddpm_repeats=3, samples=5000, reference=50_000, train_batch=128, train_steps=50),
}
# What lesson 06 runs: a few minutes on a CPU. FID/KID of 16 images show the method, not the models.
QUICK = {
    "cpu": BenchSettings(batch=16, samples=16, reference=256, train_batch=16, train_steps=3),
    "gpu": BenchSettings(repeats=3, samples=1000, reference=10_000, train_batch=128, train_steps=20),
}


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


def load_models(
    profile: Profile, device, pixel: str | None = None, latent: str | None = None, vae: str | None = None
) -> Models:
    """Checkpoints by name or path when given, else tiny untrained nets in the smoke profile, else the shipped ones."""
    if profile.name == "smoke" and not (pixel or latent or vae):
        vae_net, schedule = profile.recipe("vae").build().to(device), profile.recipe("ddpm").noise_schedule()
        pixel_net, latent_net = profile.recipe("ddpm").build().to(device), profile.recipe("latent").build().to(device)
        assert isinstance(vae_net, VAE) and isinstance(pixel_net, UNet) and isinstance(latent_net, UNet)
        return Models(
            Diffusion(pixel_net, schedule),
            LatentDiffusion(vae_net, latent_net, schedule),
            "untrained smoke-profile nets (timings only; their FID/KID mean nothing)",
        )
    pixel, latent = pixel or "ddpm-cifar10", latent or "ldm-cifar10"
    pixel_pipe, latent_pipe = load_pipeline(pixel, device), load_pipeline(latent, device, vae)
    if isinstance(pixel_pipe, LatentDiffusion):
        raise DiffeduError(f"{pixel} is a latent model; the pixel row needs a pixel UNet (e.g. ddpm-cifar10)")
    if not isinstance(latent_pipe, LatentDiffusion):
        raise DiffeduError(f"{latent} is a pixel model; the latent row needs a latent UNet (e.g. ldm-cifar10)")
    return Models(pixel_pipe, latent_pipe, f"pixel {pixel}, latent {latent}")


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
    return {
        name: {"params": count_parameters(net), "gflops": measure.forward_flops(net, *inputs) / 1e9}
        for name, (net, inputs) in nets.items()
    }


# ---- the measurements ------------------------------------------------------------


def time_sampler(
    models: Models, method: Method, settings: BenchSettings, device, fast: bool
) -> tuple[dict, torch.Tensor]:
    """Warm up, then timed runs of `batch` images (`ddpm_repeats` of DDPM, `repeats` of the others), then
    untimed runs up to `samples` images when FID is scored. Returns the timing row and the images (on the CPU)."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if fast else nullcontext()
    images: list[torch.Tensor] = []

    def draw(sampler: str, steps: int, seed: int) -> torch.Tensor:
        return sample_images(
            models.of(method),
            settings.batch,
            steps=steps,
            sampler=sampler,
            spacing=method.spacing,
            batch_size=settings.batch,
            seed=seed,
            progress=True,
        )

    def run() -> None:
        images.append(draw(method.sampler, method.steps, seed=len(images)))

    with autocast, measure.PeakMemory(device) as memory:  # the warm-up counts: after it the allocator holds the memory
        draw("ddim", 2, seed=-1)  # the same kernels, 2 steps
        times = measure.timed(
            run, settings.ddpm_repeats if method.sampler == "ddpm" else settings.repeats, device, warmup=False
        )
    with autocast:
        while settings.fid and sum(map(len, images)) < settings.samples:
            run()
    seconds = statistics.median(times)
    calls = models.of(method).scheduler(method.sampler, method.steps).model_calls()
    return {
        "steps": method.steps,
        "model_calls": calls,
        "images": settings.batch,
        "runs": len(times),
        "seconds": seconds,
        "all_seconds": times,
        "ms_per_step": 1000 * seconds / method.steps,
        "peak_memory_mib": memory.mib,
    }, torch.cat(images)[: settings.samples]


def training_rates(models: Models, train_images: torch.Tensor, settings: BenchSettings, device) -> dict[str, dict]:
    """Images per second through a full training step (loss, backward, AdamW, EMA) of fresh nets
    shaped like the compared ones: on pixels, on cached latents, and on latents encoded per batch."""
    vae = models.latent.vae
    pool = train_images[: max(4 * settings.train_batch, 256)]
    latents = encode_latents(vae, data.to_float(pool)).cpu()
    loss = partial(eps_loss, schedule=models.pixel.schedule)
    encode_then_loss = lambda model, x: loss(model, encode_latents(vae, x).clone())  # noqa: E731 (clone: leave inference mode)
    # name: (net shape, loss, data, flip)
    runs: dict[str, tuple[UNetConfig, Callable[..., torch.Tensor], torch.Tensor, bool]] = {
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
        (seconds,) = measure.timed(  # (it calls the lambda at once: this row's trainer and batches)
            lambda: [trainer.train_step(next(batches)) for _ in range(settings.train_steps)],  # noqa: B023
            repeats=1,
            device=device,
            warmup=False,
        )
        rate = settings.train_batch * settings.train_steps / seconds
        rows[name] = {
            "batch": settings.train_batch,
            "steps": settings.train_steps,
            "images_per_second": rate,
            "hours_per_100_epochs": 100 * CIFAR_TRAIN_IMAGES / rate / 3600,
        }
    return rows


def scaling_table(sides=(32, 64, 128, 256, 512, 1024)) -> list[dict]:
    """Values a diffusion model denoises per image: pixels (x3) vs latents of 4 channels at f = 4 and 8."""
    return [
        {
            "side": s,
            "pixel": 3 * s * s,
            "f4": 4 * (s // 4) ** 2,
            "f8": 4 * (s // 8) ** 2,
            "f4_ratio": 3 * s * s / (4 * (s // 4) ** 2),
            "f8_ratio": 3 * s * s / (4 * (s // 8) ** 2),
        }
        for s in sides
    ]


# ---- the whole run ---------------------------------------------------------------


def run(
    profile: Profile,
    *,
    settings: BenchSettings | None = None,
    device: str | torch.device | None = None,
    compile: bool = False,
    pixel: str | None = None,
    latent: str | None = None,
    vae: str | None = None,
    data_root: str | None = None,
) -> dict:
    """Everything the module docstring lists, as one JSON-ready dict."""
    settings, device = settings or settings_for(profile.name), env.get_device(device)
    fast = device.type == "cuda"  # bf16 autocast pays off on a GPU, not on a CPU
    began = time.perf_counter()
    models = load_models(profile, device, pixel, latent, vae)
    for method in methods(
        settings.ddim_steps, settings.also
    ):  # an impossible step count fails now, not after minutes of timing
        (models.pixel if method.space == "pixel" else models.latent).scheduler(method.sampler, method.steps)
    sizes = model_sizes(models, device)  # counted before torch.compile, which FlopCounterMode cannot see into
    for net in (models.pixel.unet, models.latent.unet, *([models.latent.vae] if fast else [])):
        net.to(
            memory_format=torch.channels_last
        )  # as load_pipeline does: faster on a CPU too (benchmarks/sampling_cpu.py)
    if compile:
        # torch.compile's module is not a UNet, but answers as the UNet does (its config too)
        models.pixel.unet, models.latent.unet = torch.compile(models.pixel.unet), torch.compile(models.latent.unet)  # type: ignore[assignment]
    train, test = data.load_cifar10(data_root), data.load_cifar10(data_root, train=False)
    settings = replace(settings, reference=min(settings.reference, len(train)))

    rows = methods(settings.ddim_steps, settings.also)
    bar = tqdm(total=len(rows) + 1 + settings.fid, desc="bench")
    sampling, samples = {}, {}
    for method in rows:
        bar.set_description(f"bench: sampling {method.label}")
        sampling[method.label], samples[method.label] = time_sampler(models, method, settings, device, fast)
        sampling[method.label]["gflops_per_image"] = sampling[method.label]["model_calls"] * sizes[
            f"{method.space} UNet"
        ]["gflops"] + (
            sizes["VAE decoder"]["gflops"] if method.space == "latent" else 0
        )  # model calls x UNet, plus one decoder call
        bar.update()
    bar.set_description("bench: training throughput")
    training = training_rates(models, train.images, settings, device)
    bar.update()
    scores: dict | None = None
    if settings.fid:
        bar.set_description("bench: FID and KID")
        scores = score_sets(
            samples, train.images[: settings.reference], test.images[: settings.samples], models.latent.vae, device
        )
        bar.update()
    bar.close()
    return {
        "format": FORMAT,
        "profile": profile.name,
        "settings": asdict(settings),
        "models": models.source,
        "machine": env.machine(device),
        "options": {"inference_mode": True, "bf16_autocast": fast, "channels_last": True, "torch_compile": compile},
        "sizes": sizes,
        "sampling": sampling,
        "training": training,
        "scores": scores and {"reference": f"the first {settings.reference} CIFAR-10 training images", "rows": scores},
        "scaling": scaling_table(),
        "seconds": time.perf_counter() - began,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def results_path(profile: str, quick: bool = False) -> Path:
    """Where `python -m diffedu bench` writes its JSON and lesson 06 looks for it: bench/ in the diffedu
    home, the same folder from wherever either runs."""
    return env.home() / "bench" / f"{profile}{'-quick' if quick else ''}.json"


def load(path: str | Path) -> dict:
    result = json.loads(Path(path).read_text())
    if result.get("format") != FORMAT:
        raise DiffeduError(
            f"{path} was written by another version of diffedu's bench: run `python -m diffedu bench` again"
        )
    return result


def saved_result(profile: str) -> dict | None:
    """The full bench's result for this profile, if `python -m diffedu bench` has written a current one
    with every default row and FID/KID (what lesson 06 shows)."""
    path = results_path(profile)
    try:
        result = load(path) if path.exists() else None
    except (ValueError, RecursionError):  # (DiffeduError and json's errors are ValueErrors)
        return None
    complete = result and result.get("scores") and list(result["sampling"]) == [m.label for m in methods()]
    return result if complete else None
