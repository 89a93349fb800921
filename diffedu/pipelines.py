"""Pipelines: a trained noise predictor with everything it needs to make images, as one object.

    pipe = load_pipeline("ddpm-cifar10")        # or "ldm-cifar10", or a checkpoint path
    images = pipe.sample(16, steps=50)          # DDIM 50; sampler="ddpm" for all 1000 steps
    images = pipe.sample(x_T=noise, generator=0)  # from given noise (as many images as it holds), seeded

`Diffusion` samples 32x32x3 images directly. `LatentDiffusion` samples 8x8x4 latents and decodes
them with its VAE. Both have the same `sample` and `sample_trajectory`, and `load_pipeline` builds
either from a checkpoint, reading the noise schedule, the VAE and its scale factor from it.

Every argument is checked: a wrong one is a DiffeduError that names it and says what to do, and what would be
ignored (spacing for DDPM, eta for a flow model) is refused rather than silently dropped.
"""

from __future__ import annotations

import math
import numbers
import operator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checkpoint, env, pretrained
from .consistency import consistency_fn
from .data import CLASSES
from .errors import CheckpointError, DiffeduError
from .latent import decode_latents, encode_latents, vae_fingerprint
from .nets import CrossAttention, UNet
from .samplers import (
    CONSISTENCY,
    DEFAULT_STEPS,
    FLOW_SAMPLERS,
    Guided,
    PromptGuided,
    Scheduler,
    Trajectory,
    consistency_sample,
    consistency_times,
    flow_model_calls,
    flow_sample,
    make_scheduler,
    sample_trajectory,
)
from .schedules import Schedule
from .text import CLIP, text_fingerprint
from .vae import VAE

MAX_IMAGES = 50_000  # the most images one call makes, as the command line's: 600 MB of CIFAR-sized images in float32


def _is_whole(value) -> bool:
    """Whether value is an integer of any kind (Python's, numpy's, a one-element torch integer), not a bool."""
    try:
        operator.index(value)
    except TypeError:
        return False
    return not isinstance(value, bool)


def whole(value, what: str, minimum: int = 1, maximum: int | None = None) -> int:
    """value as an int (numpy's and torch's integers too), or an error that says what is wrong with it."""
    if not _is_whole(value):
        raise DiffeduError(f"{what} must be a whole number, got {value!r}")
    if operator.index(value) < minimum:
        raise DiffeduError(f"{what} must be at least {minimum}, got {value!r}")
    if maximum is not None and operator.index(value) > maximum:
        raise DiffeduError(f"{what} must be at most {maximum:,}, got {value!r}")
    return operator.index(value)


def real(value, what: str) -> float:
    """value as a finite float (numpy's and one-element tensors too), or an error that says what is wrong with it."""
    if isinstance(value, (str, bytes, bool)) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise DiffeduError(f"{what} must be a number, got {value!r}")
    if isinstance(value, torch.Tensor) and value.numel() != 1 or not math.isfinite(float(value)):
        raise DiffeduError(f"{what} must be one finite number, got {value!r}")
    return float(value)


def seeded(generator) -> torch.Generator | None:
    """The generator to draw from: None (torch's global one), a torch.Generator, or a seed for a new one."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if not _is_whole(generator) or not 0 <= operator.index(generator) < 2**64:
        raise DiffeduError(
            f"generator must be a torch.Generator or a seed (a whole number from 0 to 2**64 - 1), got {generator!r}"
        )
    return torch.Generator().manual_seed(operator.index(generator))


def finite(images: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
    """The sampled images, unless a value is NaN or infinite: then an error, so that none is returned, saved or
    scored."""
    if torch.isfinite(images).all():
        return images
    if guidance not in (0.0, 1.0):  # a guided mix: the scale multiplies the difference of two predictions
        raise DiffeduError(
            f"guidance {guidance:g} made the images non-finite (NaN or inf): use a scale between 0 and ~10"
        )
    raise DiffeduError(
        "sampling made the images non-finite (NaN or inf): the model's predictions were, or grew past "
        "the float range. Check its weights (did its training diverge?) and x_T (noise, about -5 to 5)"
    )


class Diffusion:
    """A noise predictor and the schedule it learned: diffusion on 32x32x3 pixels, where what the UNet denoises is
    the image (`LatentDiffusion` adds a VAE). `clip_x0`: clip predicted images to [-1, 1]."""

    clip_x0 = True
    default_sampler = "ddim"

    def __init__(self, unet: UNet, schedule: Schedule) -> None:
        if unet.config.T != schedule.T:  # the model's t would stand for other noise levels than the sampler's
            raise DiffeduError(
                f"this UNet learned T={unet.config.T} diffusion steps, but the schedule has "
                f"T={schedule.T}: pass the schedule it learned (T={unet.config.T}), or train a UNet "
                f"of UNetConfig(T={schedule.T}) on this one"
            )
        self.unet, self.schedule = unet.eval(), schedule

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def noise(self, n: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
        """x_T: n draws of N(0, I) in the shape the UNet denoises (drawn on the CPU, so a seed
        gives the same noise on every device)."""
        n = whole(n, "the number of images", maximum=MAX_IMAGES)  # checked before allocating: 10**12 is 12 TB
        cfg = self.unet.config
        shape = (n, cfg.in_channels, cfg.image_size, cfg.image_size)
        return torch.randn(shape, generator=seeded(generator)).to(self.device)

    def start(self, n: int | None, x_T, generator: torch.Generator | None) -> torch.Tensor:
        """Where sampling starts: fresh noise for n images (None: 16), or x_T, checked, as the model's dtype on its
        device. With x_T, n may be left out (x_T says how many), but if given it must agree."""
        if x_T is None:
            return self.noise(16 if n is None else n, generator)
        cfg = self.unet.config
        shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if isinstance(x_T, np.ndarray) and x_T.dtype.kind == "f":
            x_T = torch.from_numpy(np.ascontiguousarray(x_T))  # (torch takes no negative strides, as of x[:, ::-1])
        if not isinstance(x_T, torch.Tensor) or not x_T.is_floating_point() or x_T.shape[1:] != shape:
            got = f"{x_T.dtype} of shape {tuple(x_T.shape)}" if isinstance(x_T, torch.Tensor) else type(x_T).__name__
            raise DiffeduError(
                f"x_T must be a float tensor (or numpy array) of shape (n, {str(shape)[1:-1]}): the "
                f"noise of n images, as pipe.noise(n) draws it; got {got}"
            )
        if not len(x_T):
            raise DiffeduError("x_T holds no images: give the noise of at least one")
        if n is not None and whole(n, "the number of images") != len(x_T):
            raise DiffeduError(
                f"n={n} images asked for, but x_T holds {len(x_T)}: leave n out (x_T says how many), "
                "or give x_T for n images"
            )
        x_T = x_T.to(self.device, self.dtype)
        if not torch.isfinite(x_T).all():  # checked after the conversion, which can overflow (1e300 in float32)
            raise DiffeduError(
                f"x_T holds NaN or infinite values (as {self.dtype}): it would make NaN images. "
                "Start from noise, e.g. pipe.noise(n)"
            )
        return x_T

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """What the UNet denoises -> images in [-1, 1]."""
        return x

    def scheduler(
        self, sampler: str = "ddim", steps: int | None = None, eta: float = 0.0, spacing: str = "uniform"
    ) -> Scheduler:
        """A sampler by name (diffedu.samplers.SAMPLERS): 'ddim', 'heun' or 'dpmpp2m' in `steps` steps (None: 50),
        or 'ddpm' (always all T)."""
        steps = None if steps is None else whole(steps, "steps")
        return make_scheduler(sampler, self.schedule, steps, real(eta, "eta"), spacing, clip_x0=self.clip_x0)

    def model_calls(self, sampler: str = "ddim", steps: int | None = None, spacing: str = "uniform") -> int:
        """What one run of a sampler costs, in model calls (NFE)."""
        return self.scheduler(sampler, steps, spacing=spacing).model_calls()

    @property
    def classes(self) -> list[str]:
        """The class names a class-conditional model can be asked for (CIFAR-10's); [] when it takes none."""
        return list(CLASSES[: self.unet.config.num_classes])

    def labels(self, classes, n: int) -> torch.Tensor:
        """Class indices for n images from a name or index for all, or one per image (a list, array or tensor)."""
        names = self.classes
        if not names:
            raise DiffeduError("this model is not class-conditional: sample it without classes")
        if getattr(classes, "ndim", None) == 0:  # a 0-d array or tensor: the one number it holds
            classes = classes.item()
        if isinstance(classes, str) or _is_whole(classes):
            classes = [classes] * n
        try:
            classes = classes.tolist() if isinstance(classes, torch.Tensor) else list(classes)
        except TypeError:
            raise DiffeduError(f"classes must be a class name or index, or one per image, got {classes!r}") from None
        if len(classes) != n:
            raise DiffeduError(f"give one class for all {n} images or one per image, not {len(classes)}")
        indices = []
        for c in classes:
            if isinstance(c, str) and c not in names:
                raise DiffeduError(f"unknown class {c!r}; the classes are {', '.join(names)}")
            index = names.index(c) if isinstance(c, str) else whole(c, "a class index", 0)
            if index >= len(names):  # len(names) is the "no label" index; guidance=0 is how to ask for it
                raise DiffeduError(
                    f"class {index} is not one of the {len(names)} classes (0-{len(names) - 1}: "
                    f"{', '.join(names)}); for unconditional samples use guidance=0"
                )
            indices.append(index)
        return self.unet.labels(torch.tensor(indices, device=self.device), n, self.device)

    def guided(self, x_T: torch.Tensor, classes, guidance: float, prompt=None) -> nn.Module:
        """The model the sampler calls: the UNet, or for the given `classes` its classifier-free guided mix."""
        if prompt is not None:
            raise DiffeduError(
                "this model has no text conditioning: it takes no prompt. Prompts are for a text-to-image model "
                "(load_pipeline('sd-cifar10')); a class-conditional one takes classes='horse'"
            )
        guidance = real(guidance, "guidance")
        if classes is None and guidance != 1.0:
            raise DiffeduError(
                "guidance weighs the model's prediction for the classes you ask for: give classes too "
                "(e.g. classes='horse'), or leave guidance out"
            )
        return self.unet if classes is None else Guided(self.unet, self.labels(classes, len(x_T)), guidance)

    def sample_trajectory(
        self,
        n: int | None = None,
        steps: int | None = None,
        sampler: str = "ddim",
        eta: float = 0.0,
        spacing: str = "uniform",
        frames: int = 20,
        x_T=None,
        generator: torch.Generator | int | None = None,
        progress: bool = True,
        classes=None,
        guidance: float = 1.0,
        prompt=None,
    ) -> Trajectory:
        """Sample from x_T (a tensor or numpy array; default: fresh noise for n images, 16 if n is left out),
        keeping `frames` snapshots of x_t and the predicted x_0 (at most one a step); `images` are the decoded
        results. `generator`: a torch.Generator or an int seed. A class-conditional model samples the given
        `classes` (names or indices) with classifier-free guidance of scale `guidance`, or, without
        classes, unconditionally. Non-finite images are an error, never a result."""
        scheduler, frames = self.scheduler(sampler, steps, eta, spacing), whole(frames, "frames", 0)
        generator = seeded(generator)  # once: the noise and the sampler's draws come from one generator
        x_T = self.start(n, x_T, generator)
        model = self.guided(x_T, classes, guidance, prompt)
        trajectory = sample_trajectory(model, scheduler, x_T, frames, generator, progress)
        trajectory.images = finite(self.decode(trajectory.images), real(guidance, "guidance"))
        return trajectory

    def sample(self, n: int | None = None, steps: int | None = None, **kwargs) -> torch.Tensor:
        """n images in [-1, 1] (n left out: 16, or as many as x_T holds); the same options as sample_trajectory."""
        return self.sample_trajectory(n, steps, frames=0, **kwargs).images


class FlowMatching(Diffusion):
    """A flow-matching model (recipe kind "flow", lesson 09): its UNet predicts the velocity v = eps - x_0 of the
    straight path x_t = (1 - t) x_0 + t eps, t in [0, 1], and sampling solves dx/dt = v from the noise at t = 1
    to an image at t = 0 (`samplers.flow_sample`: sampler 'euler' or 'heun', on evenly spaced t). It has no
    noise schedule; guidance mixes velocities as `Diffusion` mixes noise predictions."""

    default_sampler = "euler"

    def __init__(self, unet: UNet) -> None:
        self.unet, self.schedule = unet.eval(), None  # type: ignore[assignment]  # a flow model has no noise schedule

    def scheduler(self, sampler: str = "euler", *args, **kwargs) -> Scheduler:
        raise DiffeduError(
            f"a flow-matching model has no noise schedule for the {sampler!r} sampler: sample it with "
            f"{' or '.join(map(repr, FLOW_SAMPLERS))}"
        )

    def model_calls(self, sampler: str = "euler", steps: int | None = None, spacing: str = "uniform") -> int:
        return flow_model_calls(sampler, self.steps(steps))

    @staticmethod
    def steps(steps: int | None) -> int:
        """The Euler or Heun steps a run takes: `steps`, checked, or by default DEFAULT_STEPS."""
        return DEFAULT_STEPS if steps is None else whole(steps, "steps")

    def sample_trajectory(
        self,
        n: int | None = None,
        steps: int | None = None,
        sampler: str = "euler",
        eta: float = 0.0,
        spacing: str = "uniform",
        frames: int = 0,
        x_T=None,
        generator: torch.Generator | int | None = None,
        progress: bool = True,
        classes=None,
        guidance: float = 1.0,
        prompt=None,
    ) -> Trajectory:
        """n images (from `x_T`, default fresh noise, as `Diffusion`'s) in `steps` steps (None: 50, at most 1,000)
        of 'euler' or 'heun'. No snapshots are kept (`frames` must be 0), and `eta` and `spacing` are the
        noise-schedule samplers' knobs: refused, not ignored."""
        refused = {
            f"{sampler!r} sampler": sampler not in tuple(FLOW_SAMPLERS),
            "eta": real(eta, "eta") != 0,
            f"{spacing!r} spacing": spacing != "uniform",
            "snapshots (frames)": bool(frames),
        }
        wrong = [what for what, refuse in refused.items() if refuse]
        if wrong:
            raise DiffeduError(
                f"a flow-matching model takes no {wrong[0]}: sample it with sampler "
                f"{' or '.join(map(repr, FLOW_SAMPLERS))} on evenly spaced t"
            )
        x_T = self.start(n, x_T, seeded(generator))
        run = flow_sample(self.guided(x_T, classes, guidance, prompt), x_T, self.steps(steps), sampler, progress)
        run.images = finite(run.images, real(guidance, "guidance")).clamp(-1, 1)  # in [-1, 1], as every pipeline's
        return run


class Consistency(FlowMatching):
    """A consistency model (recipe kind "consistency", lesson 10): a flow model's UNet tuned so that its denoiser
    f(x_t, t) = x_t - t v(x_t, t) jumps from any x_t to the end of its path. Sampled by multistep consistency
    sampling (`samplers.consistency_sample`, sampler 'consistency'), one model call a step, 1 by default."""

    default_sampler = CONSISTENCY

    def model_calls(self, sampler: str = CONSISTENCY, steps: int | None = None, spacing: str = "uniform") -> int:
        return len(consistency_times(self.steps(steps)))  # one call at each time

    @staticmethod
    def steps(steps: int | None) -> int:
        return 1 if steps is None else whole(steps, "steps")

    def sample_trajectory(
        self,
        n: int | None = None,
        steps: int | None = None,
        sampler: str = CONSISTENCY,
        eta: float = 0.0,
        spacing: str = "uniform",
        frames: int = 0,
        x_T=None,
        generator: torch.Generator | int | None = None,
        progress: bool = True,
        classes=None,
        guidance: float = 1.0,
        prompt=None,
    ) -> Trajectory:
        """n images (from `x_T`, default fresh noise, as `Diffusion`'s) in `steps` model calls (None: 1, at most
        1,000). The other samplers' knobs (eta, spacing, snapshots, classes) are refused."""
        refused = {
            f"{sampler!r} sampler": sampler != CONSISTENCY,
            "eta": real(eta, "eta") != 0,
            f"{spacing!r} spacing": spacing != "uniform",
            "snapshots (frames)": bool(frames),
            "classes": classes is not None or guidance != 1.0,
            "prompt": prompt is not None,
        }
        wrong = [what for what, refuse in refused.items() if refuse]
        if wrong:
            raise DiffeduError(
                f"a consistency model takes no {wrong[0]}: sample it with sampler {CONSISTENCY!r} in 1 to a few steps"
            )
        generator = seeded(generator)
        x_T = self.start(n, x_T, generator)
        run = consistency_sample(
            lambda x, t: consistency_fn(self.unet, x, t), x_T, self.steps(steps), generator, progress
        )
        run.images = finite(run.images).clamp(-1, 1)
        return run


class LatentDiffusion(Diffusion):
    """VAE + latent UNet + noise schedule: sample scaled latents, then decode them. Latents are not
    bounded like pixels, so predicted latents are not clipped."""

    clip_x0 = False

    def __init__(self, vae: VAE, unet: UNet, schedule: Schedule) -> None:
        if (unet.config.in_channels, unet.config.image_size) != (vae.config.latent_channels, vae.config.latent_size):
            raise DiffeduError(
                f"the UNet takes {unet.config.in_channels}x{unet.config.image_size}x{unet.config.image_size} "
                f"inputs but the VAE's latents are "
                f"{vae.config.latent_channels}x{vae.config.latent_size}x{vae.config.latent_size}"
            )
        super().__init__(unet, schedule)
        self.vae = vae.eval()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents."""
        return encode_latents(self.vae, images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.vae, latents)


class TextToImage(LatentDiffusion):
    """Stable Diffusion in miniature (lesson 11): a text-conditioned latent UNet, the frozen CLIP whose text encoder
    reads its prompts, a VAE and a noise schedule.

        pipe = load_pipeline("sd-cifar10")
        images = pipe.sample(8, prompt="a red car", guidance=3, steps=50)

    A prompt is one string for every image or one per image; the empty prompt (or none) is the unconditional model,
    which classifier-free guidance mixes with the prompted one."""

    def __init__(self, vae: VAE, unet: UNet, schedule: Schedule, clip: CLIP) -> None:
        if unet.config.context_dim != clip.config.width:
            raise DiffeduError(
                f"the UNet attends to token states of width {unet.config.context_dim}, but this text encoder's are "
                f"{clip.config.width} wide: pass the text encoder it was trained with"
            )
        super().__init__(vae, unet, schedule)
        self.clip, self._said_empty = clip.eval(), False

    @property
    def words(self) -> list[str]:
        """The words its prompts may use."""
        return list(self.clip.tokenizer.words[2:])

    def prompts(self, prompt, n: int) -> list[str]:
        """n prompts from one for all or one per image, each checked by the tokenizer (unknown words, length)."""
        texts = [prompt] * n if isinstance(prompt, str) else prompt
        if not isinstance(texts, (list, tuple)) or not all(isinstance(text, str) for text in texts):
            raise DiffeduError(f"prompt must be a string, or a list of one string per image, got {prompt!r}")
        if len(texts) != n:
            raise DiffeduError(f"give one prompt for all {n} images or one per image, not {len(texts)}")
        for text in dict.fromkeys(texts):
            self.clip.tokenizer.split(text)  # an unknown word or too long a prompt: one clear error, before sampling
        return list(texts)

    def guided(self, x_T: torch.Tensor, classes, guidance: float, prompt=None) -> nn.Module:
        """The UNet guided towards the prompts (classifier-free guidance of scale `guidance` against the empty
        prompt)."""
        if classes is not None:
            raise DiffeduError(
                "this model reads prompts, not classes: ask for prompt='a photo of a horse', without classes"
            )
        guidance = real(guidance, "guidance")
        texts = self.prompts("" if prompt is None else prompt, len(x_T))
        if not any(text.strip() for text in texts):
            if guidance != 1.0:
                raise DiffeduError("guidance weighs the prompt's prediction: give a prompt too, or leave guidance out")
            if not self._said_empty:
                print("the empty prompt: these are the model's unconditional samples")
                self._said_empty = True
        with torch.inference_mode():
            prompts, empty = self.clip.encode_prompts(texts), self.clip.encode_prompts([""] * len(texts))
        return PromptGuided(self.unet, prompts, empty, guidance)

    def attention_maps(
        self, prompt: str, n: int = 4, guidance: float = 3.0, steps: int = 50, generator=None, progress: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """n images for one prompt, and where each of its words was looked at: the cross-attention weights of its
        tokens, averaged over the heads, the layers (each brought to the latent's size) and the steps. Returns the
        images, the maps (n, words, latent size, latent size), each word's summing to 1 over the positions, and the
        words."""
        words = self.clip.tokenizer.split(prompt)
        if real(guidance, "guidance") == 0:  # only the empty prompt is run: no word of this one is looked at
            raise DiffeduError("at w = 0 the model ignores the prompt, so no word is looked at: set w above 0")
        layers = [m for m in self.unet.modules() if isinstance(m, CrossAttention)]
        for layer in layers:
            layer.maps = []
        try:
            images = self.sample(n, steps, prompt=prompt, guidance=guidance, generator=generator, progress=progress)
            size = self.unet.config.image_size
            total = torch.zeros(n, len(words), size, size)
            for layer in layers:
                for weights in layer.maps or []:  # (batch, heads, h*w, tokens): the prompted half comes first
                    side = math.isqrt(weights.shape[2])
                    w = weights[:n].float().mean(1)[..., : len(words)].transpose(1, 2).reshape(n, -1, side, side)
                    total += torch.nn.functional.interpolate(w.cpu(), size=size, mode="nearest")
        finally:
            for layer in layers:
                layer.maps = None
        return images, total / total.flatten(2).sum(-1).clamp_min(1e-12)[..., None, None], words


def load_pipeline(
    name_or_path: str | Path, device: str | torch.device | int | None = None, vae: str | Path | None = None
) -> Diffusion:
    """A shipped model's name or a checkpoint's path -> a pipeline ready to sample, on `device`
    (default: CUDA when there is a GPU; an int N: cuda:N). A latent model decodes with the VAE its checkpoint
    names, unless `vae` names another one."""
    device = env.get_device(device)
    path = pretrained.resolve(name_or_path)
    meta = checkpoint.read_meta(path)
    if meta.get("kind") == "unet" and vae and meta.get("config", {}).get("in_channels") == 3:
        raise DiffeduError(
            f"{name_or_path} is a pixel model: it makes images without a VAE, so there is none to "
            "replace. Leave the VAE out"
        )
    if meta.get("kind") == "clip":
        raise CheckpointError(
            f"{name_or_path} is a text encoder (a CLIP), not a diffusion model: sample a text-to-image model "
            "(e.g. sd-cifar10), which reads its prompts with it"
        )
    if meta.get("kind") == "vae":
        raise CheckpointError(
            f"{name_or_path} is a VAE, not a diffusion model: sample a UNet checkpoint "
            f"(e.g. ddpm-cifar10 or ldm-cifar10), or score its reconstructions with "
            f"`python -m diffedu fid --ckpt {name_or_path}`"
        )
    # Channels-last (NHWC) weights: the pixel UNet's step on 16 images takes 29 ms instead of 38 on a 2-core CPU
    # (202 instead of 289 on 100; benchmarks/sampling_cpu.py), and tensor cores want it on a GPU. (Only for the
    # UNets loaded here: a module someone passes to a pipeline keeps its layout.)
    unet = checkpoint.load_model(path, device).to(memory_format=torch.channels_last)
    assert isinstance(unet, UNet)  # a checkpoint holds a UNet or a VAE, and a VAE was refused above
    if meta.get("objective") in ("flow", "consistency"):
        return (Consistency if meta["objective"] == "consistency" else FlowMatching)(unet)
    schedule = checkpoint.schedule_of(path)
    vae_ref = vae or meta.get("vae")
    if vae_ref is None:
        if unet.config.in_channels != 3:
            raise CheckpointError(
                f"{name_or_path} is a latent model whose checkpoint names no VAE: pass the VAE it was trained on"
            )
        return Diffusion(unet, schedule)
    vae_model = load_vae(vae_ref, device)
    if not vae and meta.get("vae_fingerprint") not in (None, vae_fingerprint(vae_model)):
        raise CheckpointError(
            f"the VAE at {vae_ref} has changed since {name_or_path} was trained on its latents: "
            "decoding with it would give garbage. Retrain the latent model, or pass the original VAE"
        )
    if not unet.config.context_dim:
        return LatentDiffusion(vae_model, unet, schedule)
    if not isinstance(meta.get("text_encoder"), str):
        raise CheckpointError(f"{name_or_path} is text-conditioned but names no text encoder: the file is damaged")
    clip = pretrained.load_clip(meta["text_encoder"]).to(device)
    if meta.get("text_fingerprint") not in (None, text_fingerprint(clip)):
        raise CheckpointError(
            f"the text encoder {meta['text_encoder']} has changed since {name_or_path} learned to read it: "
            "retrain the text-to-image model on it, or pass the original"
        )
    return TextToImage(vae_model, unet, schedule, clip)


def load_vae(name_or_path: str | Path, device: str | torch.device | int | None = None) -> VAE:
    """A VAE by shipped name or path, refusing checkpoints of another kind."""
    path = pretrained.resolve(name_or_path)
    kind = checkpoint.read_meta(path).get("kind")
    if kind != "vae":
        raise CheckpointError(
            f"{name_or_path} holds a {kind} model, not a VAE: pass a VAE checkpoint (e.g. vae-cifar10)"
        )
    vae = checkpoint.load_model(path, env.get_device(device))
    assert isinstance(vae, VAE)  # (its kind was checked above)
    return vae
