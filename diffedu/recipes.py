"""Recipes: how to train one model, by name. A recipe knows its kind, its architecture and its run.

    kind     "ddpm"   a UNet on 32x32x3 pixels, DDPM's epsilon loss
             "flow"   the same UNet, flow matching's velocity loss (t in [0, 1], embedded as 1000 t)
             "vae"    the VAE 32x32x3 <-> 8x8x4, reconstruction + KL
             "latent" a UNet on a VAE's scaled 8x8x4 latents, DDPM's epsilon loss
             "decoder" a trained VAE's decoder retrained with L1 + an adversarial term, its encoder
                      frozen (diffedu.adversarial): the same latents, decoded sharper
             "consistency" a flow model tuned into a consistency model by ECT (diffedu.consistency): images
                      in one or two model calls
             "clip"   a small CLIP (diffedu.text): a text and an image encoder trained contrastively on the
                      captions of diffedu.captions
             "text"   a latent UNet given cross-attention to a frozen CLIP's token states and fine-tuned on
                      captioned latents: Stable Diffusion in miniature (lesson 11)

A recipe trains for `steps`, or, with `minutes`, for that much training time (the learning rate
annealed over the fraction of it used): a finished model on any machine.

The shipped models' recipes (`ddpm-cifar10`, `vae-cifar10`, `vae-cifar10-gan`, `ldm-cifar10`, ...) and each profile's
lesson-sized ones (`cpu-ddpm`, `smoke-vae`, ...) live in one table, so the lessons, the command
line (`python -m diffedu train --recipe NAME`) and the shipped checkpoints train the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

from torch import nn

from . import checkpoint, env, pretrained
from .adversarial import DecoderTrainer
from .consistency import ConsistencyTrainer, ct_loss
from .errors import DiffeduError
from .nets import UNet, UNetConfig, text_conditioned
from .schedules import Schedule
from .text import CLIP, CLIPConfig, clip_loss, text_fingerprint
from .training import Trainer, eps_loss, flow_loss, text_eps_loss
from .vae import VAE, VAEConfig, vae_loss

KINDS = {
    "ddpm": "the pixel UNet",
    "flow": "the pixel UNet trained by flow matching",
    "vae": "the autoencoder",
    "latent": "a UNet on a VAE's latents",
    "decoder": "a VAE's decoder retrained adversarially, its encoder kept",
    "consistency": "a flow model tuned into a consistency model",
    "clip": "a text encoder and an image encoder trained together, as CLIP is",
    "text": "a latent UNet fine-tuned to follow prompts through cross-attention",
}
TUNED = ("decoder", "consistency", "text")  # the kinds that start from a trained model (a recipe's `base`)
LATENT = ("latent", "text")  # the kinds that learn a VAE's latents


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str  # one of KINDS
    model: dict  # UNetConfig fields (ddpm, latent) or VAEConfig fields (vae)
    steps: int
    batch_size: int
    lr: float
    schedule: str = "linear"  # the noise schedule, T = 1000 (ddpm, latent)
    n_data: int | None = None  # train on the first n images only (None: all)
    vae: str | None = None  # latent: the shipped VAE whose latents it learns, if it is made for one
    label_dropout: float = 0.1  # a class-conditional model (model["num_classes"] > 0) learns "no label" this often
    base: str | None = (
        None  # decoder: the VAE whose encoder it keeps and whose decoder it starts from; consistency: the flow model
    )
    stage_steps: int = 0  # consistency: steps per stage of ECT's curriculum (sigma_t - sigma_r halves each stage)
    teacher: str | None = None  # consistency: distil from this flow model's ODE (None: consistency training)
    text_encoder: str | None = None  # text: the CLIP whose frozen text encoder reads the prompts
    minutes: float | None = None  # train for this much training time (steps: then only an upper bound)
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DiffeduError(f"recipe {self.name}: unknown kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        if (self.kind in TUNED) != bool(self.base):
            raise DiffeduError(
                f"recipe {self.name}: a decoder recipe names the VAE it starts from (base), a consistency "
                "recipe the flow model; no other names one"
            )
        if (self.kind == "consistency") != (self.stage_steps > 0):
            raise DiffeduError(f"recipe {self.name}: a consistency recipe, and no other, has stage_steps > 0")
        if (self.kind == "text") != bool(self.text_encoder):
            raise DiffeduError(f"recipe {self.name}: a text recipe, and no other, names its text_encoder")

    def build(self, base: str | None = None) -> nn.Module:
        """A fresh, untrained model of this recipe's architecture; a decoder or consistency recipe's: the model it
        starts from (its `base`, or `base` given here, a path or shipped name), loaded."""
        if self.kind == "text":  # the base UNet with cross-attention added, as wide as the text encoder's states
            assert self.base  # (a tuned recipe names its base: __post_init__)
            unet = checkpoint.load_model(pretrained.resolve(base or self.base))
            assert isinstance(unet, UNet)
            return text_conditioned(unet, self.clip().config.width)
        if self.kind in TUNED:
            assert self.base  # (a tuned recipe names its base: __post_init__)
            return checkpoint.load_model(pretrained.resolve(base or self.base))
        if self.kind == "clip":
            return CLIP(CLIPConfig(**self.model))
        return VAE(VAEConfig(**self.model)) if self.kind == "vae" else UNet(UNetConfig(**self.model))

    def clip(self) -> CLIP:
        """A text recipe's frozen CLIP."""
        assert self.text_encoder
        return pretrained.load_clip(self.text_encoder)

    def finished(self, meta: dict) -> bool:
        """Whether a run's checkpoint has trained all of this recipe: its steps, or its minutes."""
        return meta["step"] >= self.steps or (self.minutes is not None and meta.get("seconds", 0) >= 60 * self.minutes)

    @property
    def budget_seconds(self) -> float | None:
        return 60 * self.minutes if self.minutes else None

    def noise_schedule(self) -> Schedule:
        return Schedule.by_name(self.schedule)

    def trainer(self, device=None, model: nn.Module | None = None, loss_fn=None, **speed) -> Trainer:
        """A Trainer with this recipe's learning rate and loss (or `loss_fn(model, batch)`, e.g. one a learner
        wrote; a consistency recipe's: `loss_fn(f, x0, t, r)`, the loss of one pair of points, as `ct_loss`), for a
        fresh model (or the given one, e.g. rebuilt from a checkpoint to resume). A diffusion
        model's checkpoints record the noise schedule, because a sampler must use the one the model learned.
        `speed`: the Trainer's `compile` and `channels_last` options."""
        model = model or self.build()
        meta: dict[str, object] = {"recipe": self.name}
        if self.kind == "decoder":
            assert isinstance(model, VAE)  # a decoder recipe retrains a VAE's decoder
            # the discriminator learns alone for the first tenth of a run (200 steps of a timed one)
            return DecoderTrainer(
                model, lr=self.lr, warmup=200 if self.minutes else self.steps // 10, device=device, meta=meta, **speed
            )
        if self.kind == "consistency":  # float32, no labels: ECT's loss with its curriculum
            teacher = checkpoint.load_model(pretrained.resolve(self.teacher)) if self.teacher else None
            return ConsistencyTrainer(
                model,
                stage_steps=self.stage_steps,
                teacher=teacher,
                pair=loss_fn or ct_loss,
                lr=self.lr,
                device=device,
                meta={**meta, "objective": "consistency"},
                **speed,
            )
        if self.kind == "vae":
            return Trainer(model, loss_fn or vae_loss, lr=self.lr, device=device, meta=meta, **speed)
        if self.kind == "clip":
            return Trainer(model, loss_fn or clip_loss, lr=self.lr, device=device, meta=meta, **speed)
        if self.kind == "flow":  # no noise schedule: the path is the straight line, and the model's t is in [0, 1]
            loss_fn = loss_fn or partial(flow_loss, drop=self.label_dropout)
            return Trainer(model, loss_fn, lr=self.lr, device=device, meta={**meta, "objective": "flow"}, **speed)
        schedule = self.noise_schedule()
        meta |= {"schedule": schedule.name, "T": schedule.T}
        if self.kind == "text":  # prompts read by the frozen text encoder, dropped (the empty prompt) as labels are
            clip = self.clip().to(env.get_device(device))  # where the Trainer puts the model
            loss_fn = loss_fn or partial(text_eps_loss, schedule=schedule, clip=clip, drop=self.label_dropout)
            assert self.text_encoder  # (a text recipe names it: __post_init__)
            meta |= {
                "text_encoder": pretrained.reference(self.text_encoder),
                "text_fingerprint": text_fingerprint(clip),
            }
        loss_fn = loss_fn or partial(eps_loss, schedule=schedule, drop=self.label_dropout)
        return Trainer(model, loss_fn, lr=self.lr, device=device, meta=meta, **speed)

    @property
    def conditional(self) -> bool:
        """Whether the model takes class labels (and trains on (images, labels) batches)."""
        return self.kind in ("ddpm", "flow", "latent") and self.model.get("num_classes", 0) > 0

    @property
    def captioned(self) -> bool:
        """Whether it trains on (images, attributes) batches, each image's class, colour and brightness, from which
        its captions are written as it trains."""
        return self.kind in ("clip", "text")

    def with_classes(self, num_classes: int = 10) -> Recipe:
        """The same recipe for a class-conditional model (CIFAR-10: 10 classes)."""
        if self.kind not in ("ddpm", "flow", "latent"):
            raise DiffeduError(f"a {self.kind} model takes no classes: --cond is for ddpm, flow and latent models")
        return replace(self, model={**self.model, "num_classes": num_classes})


def _unet(**fields) -> dict:
    """UNetConfig fields for 32x32x3 pixels, no dropout unless given."""
    return {"dropout": 0.0, **fields}


def _latent_unet(**fields) -> dict:
    """UNetConfig fields for 8x8x4 latents."""
    return _unet(in_channels=4, image_size=8, **fields)


UNLIMITED = 10**9  # the steps of a timed recipe: its minutes end it
SMOKE_DATA = 256  # the smoke profile trains on this many images: only to show that the code runs
_RECIPES = [
    # The shipped models (diffedu.pretrained), trained on a GPU. The pixel net is the cpu profile's:
    # small enough that 1000 sampling steps stay bearable on a laptop.
    Recipe(
        "ddpm-cifar10",
        "ddpm",
        _unet(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.1),
        steps=9000,
        batch_size=256,
        lr=4e-4,
        note="pixel DDPM for CIFAR-10 32x32, linear schedule, T = 1000",
    ),
    # ddpm-cifar10's UNet, steps, batch and learning rate, trained by flow matching: the same training compute
    Recipe(
        "fm-cifar10",
        "flow",
        _unet(
            channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.1, time_scale=1000.0
        ),
        steps=9000,
        batch_size=256,
        lr=4e-4,
        note="pixel flow matching (rectified flow) for CIFAR-10 32x32, t uniform",
    ),
    Recipe(
        "vae-cifar10",
        "vae",
        dict(channels=64, channel_mult=(1, 2, 2), num_res_blocks=1),
        steps=3000,
        batch_size=256,
        lr=4e-4,
        note="VAE 32x32x3 <-> 8x8x4 for CIFAR-10, L1 + 1e-4 KL",
    ),
    # Trained for a time budget: 7.5 minutes of an H200 shared with three other trainings (11,469 steps). Against
    # the 6,000 steps of 256 it replaced: KID -7.4 +- 2.0; batch 256 for the same 7.5 minutes (16,538 steps) -3.6
    # +- 1.9, batch 2048 for 3 minutes alone (5,709 steps, as many latents as this) -2.0 +- 1.8. Longer does not
    # clearly help on 10,340 latents: alone for 3.5 minutes (13,971 steps) KID -2.8 +- 1.8 against this one, for 8
    # (31,211 steps) +0.9 +- 1.9, its samples nearer the training images (the card says more).
    Recipe(
        "ldm-cifar10",
        "latent",
        _latent_unet(channels=64, channel_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,), dropout=0.1),
        steps=UNLIMITED,
        batch_size=1024,
        lr=8e-4,
        vae="vae-cifar10-gan",
        minutes=7.5,
        note="latent DDPM on vae-cifar10's scaled latents, linear schedule, T = 1000",
    ),
    # The class-conditional latent model of lesson 07: ldm-cifar10's UNet with a class embedding, by ldm-cifar10's
    # earlier recipe (at batch 128 it trains in 52 minutes on a 2-core CPU, 4 points of class accuracy below this
    # one at w = 3; 7.5 minutes of batch 256 on a shared H200, 9,041 steps, scored the same).
    Recipe(
        "ldm-cifar10-cond",
        "latent",
        _latent_unet(
            channels=64, channel_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,), dropout=0.1, num_classes=10
        ),
        steps=6000,
        batch_size=256,
        lr=4e-4,
        vae="vae-cifar10-gan",
        label_dropout=0.1,
        note="class-conditional latent DDPM on vae-cifar10's scaled latents, labels dropped 10% of the time",
    ),
    # vae-cifar10's decoder retrained with the adversarial loss on noisy latents, its encoder kept, so that every
    # latent model trained on vae-cifar10 decodes through it unchanged. Trained for a time budget: 8.5 minutes of
    # a GPU (an H200 shared with two other trainings: 31,762 steps); 50 minutes of a 2-core CPU at batch 32 (4,616
    # steps) made the decoder it replaced, KID 30 instead of 19.
    Recipe(
        "vae-cifar10-gan",
        "decoder",
        dict(channels=64, channel_mult=(1, 2, 2), num_res_blocks=1),
        steps=UNLIMITED,
        batch_size=64,
        lr=2e-4,
        base="vae-cifar10",
        minutes=8.5,
        note="vae-cifar10's decoder retrained with L1 + an adaptively weighted patch-discriminator (hinge) loss "
        "on latents with noise of std up to 0.3 added; encoder and scale factor unchanged",
    ),
    # fm-cifar10 tuned into a consistency model by ECT (diffedu.consistency, lesson 10), timed to fit an hour of a
    # 2-core CPU: float32, batch 64, ECT's weighting 1 / (sigma_t - sigma_r), the curriculum's gap halved every 300
    # steps.
    Recipe(
        "ect-cifar10",
        "consistency",
        {},
        steps=UNLIMITED,
        batch_size=64,
        lr=1e-4,
        base="fm-cifar10",
        minutes=50,
        stage_steps=300,
        note="fm-cifar10 tuned into a consistency model by Easy Consistency Tuning (ECT): images "
        "in 1, 2 or 4 model calls",
    ),
    # The same, by consistency distillation: x_r one Euler step of fm-cifar10's ODE from x_t (not shipped: to compare)
    Recipe(
        "cd-cifar10",
        "consistency",
        {},
        steps=UNLIMITED,
        batch_size=64,
        lr=1e-4,
        base="fm-cifar10",
        minutes=50,
        stage_steps=300,
        teacher="fm-cifar10",
        note="fm-cifar10 distilled into a consistency model (ECT's recipe, the target one Euler step of its own ODE)",
    ),
    # Stable Diffusion in miniature (lesson 11): a small CLIP trained on the captions diffedu.captions writes, then
    # ldm-cifar10-cond given cross-attention to its frozen text encoder's token states and fine-tuned on captioned
    # latents, each caption replaced by the empty prompt 10% of the time. Both timed for a 2-core CPU.
    Recipe(
        "clip-cifar10",
        "clip",
        {},
        steps=UNLIMITED,
        batch_size=128,
        lr=1e-3,
        minutes=12,
        note="a small CLIP (a 3-layer text transformer of width 128, a 4-level residual image encoder) trained "
        "contrastively on CIFAR-10 images and the captions written from them",
    ),
    Recipe(
        "sd-cifar10",
        "text",
        {},
        steps=UNLIMITED,
        batch_size=128,
        lr=3e-4,
        vae="vae-cifar10-gan",
        base="ldm-cifar10-cond",
        text_encoder="clip-cifar10",
        minutes=50,
        note="ldm-cifar10-cond with cross-attention to clip-cifar10's frozen text encoder after every block, "
        "fine-tuned on captioned latents (captions dropped 10% of the time): prompts in, images out",
    ),
    # Lesson-sized ones, one of each kind per profile (diffedu.profiles).
    Recipe(
        "smoke-ddpm",
        "ddpm",
        _unet(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=()),
        steps=8,
        batch_size=8,
        lr=1e-3,
        n_data=SMOKE_DATA,
    ),
    Recipe(
        "smoke-flow",
        "flow",
        _unet(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), time_scale=1000.0),
        steps=8,
        batch_size=8,
        lr=1e-3,
        n_data=SMOKE_DATA,
    ),
    Recipe("smoke-vae", "vae", dict(channels=8), steps=8, batch_size=8, lr=1e-3, n_data=SMOKE_DATA),
    Recipe(
        "smoke-latent",
        "latent",
        _latent_unet(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=()),
        steps=8,
        batch_size=8,
        lr=1e-3,
        n_data=SMOKE_DATA,
    ),
    Recipe("smoke-decoder", "decoder", {}, steps=4, batch_size=8, lr=1e-3, n_data=SMOKE_DATA, base="smoke-vae"),
    Recipe(
        "smoke-consistency",
        "consistency",
        {},
        steps=4,
        batch_size=8,
        lr=1e-4,
        n_data=SMOKE_DATA,
        base="fm-cifar10",
        stage_steps=1,
    ),
    Recipe(
        "smoke-clip",
        "clip",
        dict(width=16, layers=1, heads=2, image_channels=8, embed=16),
        steps=4,
        batch_size=8,
        lr=1e-3,
        n_data=SMOKE_DATA,
    ),
    Recipe(
        "smoke-text",
        "text",
        {},
        steps=4,
        batch_size=8,
        lr=1e-3,
        n_data=SMOKE_DATA,
        vae="vae-cifar10-gan",
        base="ldm-cifar10-cond",
        text_encoder="clip-cifar10",
    ),
    Recipe("cpu-clip", "clip", {}, steps=150, batch_size=64, lr=1e-3),
    Recipe(
        "cpu-text",
        "text",
        {},
        steps=60,
        batch_size=64,
        lr=1e-3,
        vae="vae-cifar10-gan",
        base="ldm-cifar10-cond",
        text_encoder="clip-cifar10",
    ),
    Recipe(
        "cpu-ddpm",
        "ddpm",
        _unet(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,)),
        steps=150,
        batch_size=16,
        lr=1e-3,
    ),
    Recipe("cpu-vae", "vae", dict(channels=32), steps=400, batch_size=16, lr=1e-3),
    Recipe(
        "cpu-latent",
        "latent",
        _latent_unet(channels=64, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)),
        steps=400,
        batch_size=16,
        lr=1e-3,
    ),
    Recipe("cpu-decoder", "decoder", {}, steps=60, batch_size=16, lr=2e-4, base="vae-cifar10"),
    Recipe("cpu-consistency", "consistency", {}, steps=150, batch_size=32, lr=2e-4, base="fm-cifar10", stage_steps=25),
    Recipe(
        "gpu-ddpm",
        "ddpm",
        _unet(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1),
        steps=4000,
        batch_size=128,
        lr=2e-4,
    ),
    Recipe("gpu-vae", "vae", dict(channels=64, num_res_blocks=2), steps=4000, batch_size=128, lr=2e-4),
    Recipe("gpu-decoder", "decoder", {}, steps=2000, batch_size=64, lr=2e-4, base="gpu-vae"),
    Recipe(
        "gpu-consistency", "consistency", {}, steps=2000, batch_size=128, lr=1e-4, base="fm-cifar10", stage_steps=250
    ),
    Recipe("gpu-clip", "clip", {}, steps=3000, batch_size=256, lr=1e-3),
    Recipe(
        "gpu-text",
        "text",
        {},
        steps=3000,
        batch_size=128,
        lr=3e-4,
        vae="vae-cifar10-gan",
        base="ldm-cifar10-cond",
        text_encoder="clip-cifar10",
    ),
    Recipe(
        "gpu-latent",
        "latent",
        _latent_unet(channels=128, channel_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,), dropout=0.1),
        steps=4000,
        batch_size=128,
        lr=2e-4,
    ),
]
RECIPES = {recipe.name: recipe for recipe in _RECIPES}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise DiffeduError(f"no recipe named {name!r}; recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
