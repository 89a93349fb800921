"""Training runs on disk: a recipe trained into a checkpoint that survives Ctrl-C and deadlines, and
`retrain`, which trains the shipped models one after another and exports them for shipping.

    python -m diffedu retrain --all --budget-minutes 9     # repeat until it says "all done"

Each call trains what the last one left (every run resumes from its checkpoint), so a long retrain can
run in pieces that each fit a time limit.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from . import checkpoint, data, pretrained
from .errors import CheckpointError, DiffeduError
from .latent import cached_latents, calibrate, vae_fingerprint
from .nets import count_parameters
from .pipelines import load_vae
from .recipes import Recipe, get_recipe
from .training import Trainer
from .vae import VAE

SHIPPED = ("vae-cifar10", "vae-cifar10-gan", "ldm-cifar10", "ldm-cifar10-cond", "ddpm-cifar10")  # each after what it needs
_ORDER = ("vae", "decoder", "latent", "ddpm")


def fit(trainer: Trainer, recipe: Recipe, out: str | Path, cifar: data.ImageSet, steps: int, *, vae: VAE | None = None,
        vae_ref: str | None = None, seed: int = 0, save_every: int = 500, deadline: float | None = None,
        again: str = "") -> None:
    """Train `steps` more steps of `recipe` on CIFAR-10 (a latent recipe: on `vae`'s scaled latents, `vae_ref`
    naming it in the checkpoint), saving to `out` every `save_every` steps, at the end, on Ctrl-C and when
    `time.monotonic()` passes `deadline`; a recipe with `minutes` stops when its budget of training time is spent.
    A VAE that trained all its steps gets its latent scale factor measured (a decoder stage keeps its base's).
    `again`: the command that continues the run, for the Ctrl-C message."""
    images, labels = cifar.images[: recipe.n_data], cifar.labels[: recipe.n_data]
    train_set = images
    if recipe.kind == "latent":  # learn the VAE's scaled latents, encoded once and cached
        train_set, labels = cached_latents(vae, images), labels.repeat(2)  # the images, then their mirror images
        trainer.meta |= {"vae": vae_ref, "vae_fingerprint": vae_fingerprint(vae)}
    batches = data.batches(train_set, recipe.batch_size, labels=labels if recipe.conditional else None,
                           flip=recipe.kind != "latent", device=trainer.device, seed=seed + trainer.step)
    goal = trainer.step + steps
    try:
        trainer.fit(batches, steps, save_to=out, save_every=save_every, deadline=deadline, budget_seconds=recipe.budget_seconds)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted: saved {trainer.step} steps to {checkpoint.paths(out)[0]}; "
                                f"continue with: {again or f'python -m diffedu train --out {out} --resume'}") from None
    if recipe.kind == "vae" and trainer.step == goal:  # the scale factor belongs to the trained VAE: measured last
        print(f"latent scale factor {calibrate(trainer.ema.model, images):.4f}")
        trainer.save(out)


def check_vae(vae: VAE, name: str, saved: dict | None) -> None:
    """A latent run learns one VAE's latent space: refuse a VAE that has changed since the run began, or one
    whose scale factor was never measured."""
    if saved and saved.get("vae_fingerprint") not in (None, vae_fingerprint(vae)):
        raise CheckpointError(f"the VAE at {name} has changed since this run started: it cannot be resumed on it. "
                              "Train the latent model anew (another --out, or delete the run)")
    if vae.config.scale_factor == 1.0:  # the default: calibrate() has never measured it
        raise CheckpointError(f"the latent scale factor of the VAE at {name} was never measured (its training did not "
                              f"finish): finish it with `python -m diffedu train --out {name} --resume`")


def hardware() -> str:
    """What this machine trains on, in words, for a model card."""
    where = (torch.cuda.get_device_name() if torch.cuda.is_available()
             else f"{os.cpu_count()}-core CPU ({platform.machine()})")
    return f"{where}, PyTorch {torch.__version__.split('+')[0]}"


def retrain(names: list[str], runs: str | Path = "runs/retrain", export_to: str | Path | None = None,
            budget_minutes: float | None = None, data_root: str | None = None, device=None, **speed) -> bool:
    """Train each named recipe into `runs/<name>` (resuming what an earlier call left) and export each finished
    one, float16 weights and a draft card, into `export_to` (default `runs/shipped`). A latent model learns the
    exported VAE when that is retrained too, so the pair ships together. Stops, saved, once `budget_minutes`
    are spent. `speed`: the Trainer's compile and channels_last. Returns whether every model is done."""
    runs = Path(runs)
    export_to = Path(export_to or runs / "shipped")
    recipes = sorted((get_recipe(name) for name in dict.fromkeys(names)), key=lambda r: _ORDER.index(r.kind))
    deadline = time.monotonic() + 60 * budget_minutes if budget_minutes else None
    for recipe in recipes:  # before any training: an export replaces only an earlier export of the same recipe
        shipped = export_to / recipe.name
        if checkpoint.exists(shipped) and checkpoint.read_meta(shipped).get("recipe") != recipe.name:
            raise CheckpointError(f"{checkpoint.paths(shipped)[0]} holds a model that is not an export of recipe "
                                  f"{recipe.name}: move it away, or export elsewhere (--export)")
    cifar = data.load_cifar10(data_root)
    for recipe in recipes:
        out, shipped = runs / recipe.name, export_to / recipe.name
        saved = checkpoint.read_meta(out) if checkpoint.exists(out) else None
        if saved and saved.get("recipe") != recipe.name:
            raise CheckpointError(f"{out} holds a run of recipe {saved.get('recipe')!r}, not {recipe.name}: move it away")
        if not saved or not recipe.finished(saved):
            if deadline is not None and time.monotonic() > deadline:
                return False
            base = _base_of(recipe, names, export_to)
            trainer = recipe.trainer(device, checkpoint.build_model(saved, str(out)) if saved else recipe.build(base), **speed)
            if saved:
                trainer.load(out)
            vae = vae_ref = None
            if recipe.kind == "latent":
                vae_name = _vae_of(recipe, recipes)
                vae_ref = pretrained.reference(export_to / vae_name if vae_name in names else vae_name)
                vae = load_vae(vae_ref, trainer.device)
                check_vae(vae, vae_ref, saved)
            print(f"{recipe.name}: {count_parameters(trainer.model) / 1e6:.2f}M parameters, batch {recipe.batch_size}, "
                  + (f"{recipe.minutes:g} minutes of training in all" if recipe.minutes else f"steps {trainer.step} -> {recipe.steps}")
                  + f" on {trainer.device}")
            fit(trainer, recipe, out, cifar, recipe.steps - trainer.step, vae=vae, vae_ref=vae_ref, deadline=deadline,
                again="the same retrain command")
            if not recipe.finished(checkpoint.read_meta(out)):
                print(f"{recipe.name}: out of time at step {trainer.step}, saved to {out}")
                return False
        meta = checkpoint.read_meta(out)
        if not checkpoint.exists(shipped) or checkpoint.read_meta(shipped).get("seconds") != meta["seconds"]:
            export_to.mkdir(parents=True, exist_ok=True)
            pretrained.export(out, shipped, hardware(), vae=_vae_of(recipe, recipes) if recipe.kind == "latent" else None)
            Path(f"{shipped}.md").write_text(draft_card(recipe, checkpoint.read_meta(shipped)))
            print(f"{recipe.name}: exported to {checkpoint.paths(shipped)[0]} with a draft card")
    return True


def _base_of(recipe: Recipe, names: list[str], export_to: Path) -> str | None:
    """The VAE a decoder recipe starts from: the one exported beside it when that is retrained too."""
    if recipe.kind != "decoder":
        return None
    return str(export_to / recipe.base) if recipe.base in names else recipe.base


def _vae_of(recipe: Recipe, recipes: list[Recipe]) -> str:
    """The VAE a latent recipe learns: the one it names, else the one VAE retrained beside it."""
    if recipe.vae:
        return recipe.vae
    vaes = [r.name for r in recipes if r.kind == "vae"]
    if len(vaes) != 1:
        raise DiffeduError(f"{recipe.name} names no VAE: retrain it together with exactly one VAE recipe")
    return vaes[0]


def draft_card(recipe: Recipe, meta: dict) -> str:
    """A model card with what training measured; its FID / KID row says how to measure them."""
    model = checkpoint.build_model(meta)
    steps_per_s = meta["step"] / meta["seconds"] if meta.get("seconds") else float("nan")
    fid = ("`python -m diffedu fid --ckpt {0} --samples 500`" if recipe.kind in ("vae", "decoder")
           else "`python -m diffedu fid --ckpt {0} --samples 500 --steps 100`").format(recipe.name)
    rows = {
        "architecture": f"`{type(model).__module__}.{type(model).__name__}` {meta['config']}; "
                        f"{count_parameters(model) / 1e6:.2f}M parameters",
        "recipe": f"`{recipe.name}` in `diffedu/recipes.py`: batch {recipe.batch_size}, "
                  + (f"{recipe.minutes:g} minutes of training ({meta['step']:,} steps), lr annealed over them from {recipe.lr:g}, "
                     if recipe.minutes else f"{recipe.steps:,} steps, AdamW lr {recipe.lr:g}, ")
                  + (f"decoder only, on `{recipe.base}`'s frozen encoder, " if recipe.kind == "decoder" else "")
                  + "gradient clipping at 1.0, EMA 0.999 (the weights shipped are the EMA's)"
                  + (f", on the latents of `{meta['vae']}`" if meta.get("vae") else ""),
        "reproduce": f"`python -m diffedu retrain {recipe.name}`",
        "hardware, time": f"{meta.get('hardware')}: {meta['seconds']:.0f} s of training ({steps_per_s:.1f} steps/s)",
        "final loss": f"{meta.get('final_loss', float('nan')):.4f} (mean of the last 50 steps)",
        "stored as": "float16 safetensors",
        "FID / KID": f"not measured yet: {fid} on a machine with the data",
    }
    table = "\n".join(f"| {key} | {value} |" for key, value in rows.items())
    return f"# {recipe.name}\n\n{recipe.note}\n\n| | |\n| --- | --- |\n{table}\n"

