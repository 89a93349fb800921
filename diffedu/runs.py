"""Training runs on disk: `train`, the one place that knows how a run is assembled, resumed and saved, and
`retrain`, which trains the shipped models one after another and exports them for shipping.

    trainer = runs.train("smoke-ddpm", "runs/ddpm/model")          # from a notebook: one call
    trainer = runs.train(out="runs/ddpm/model", resume=True)        # continue it (Ctrl-C saves first)
    python -m diffedu train ddpm --steps 2000                       # the command line calls the same function
    python -m diffedu retrain --all --budget-minutes 9              # repeat until it says "all done"
    torchrun --standalone --nproc_per_node=4 -m diffedu train ...   # the same run on 4 GPUs (diffedu.distributed)

A run survives Ctrl-C and deadlines: each call trains what the last one left (every run resumes from its
checkpoint), so a long retrain can run in pieces that each fit a time limit.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from . import captions, checkpoint, data, distributed, env, pretrained
from .errors import CheckpointError, DataError, DiffeduError
from .latent import cached_latents, calibrate, vae_fingerprint
from .nets import count_parameters
from .pipelines import load_vae, real, whole
from .profiles import get_profile
from .recipes import LATENT, RECIPES, TUNED, UNLIMITED, Recipe, get_recipe
from .training import Trainer
from .vae import VAE

SHIPPED = (
    "vae-cifar10",
    "vae-cifar10-gan",
    "ldm-cifar10",
    "ldm-cifar10-cond",
    "ddpm-cifar10",
    "fm-cifar10",
    "ect-cifar10",
    "clip-cifar10",
    "sd-cifar10",
)  # each after what it needs
_ORDER = ("vae", "decoder", "latent", "ddpm", "flow", "consistency", "clip", "text")


def train(
    recipe: str | Recipe | None = None,
    out: str | Path | None = None,
    *,
    kind: str | None = None,
    profile: str | None = None,
    data_root: str | Path | data.ImageSet | None = None,
    vae: str | Path | None = None,
    steps: int | None = None,
    minutes: float | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    schedule: str | None = None,
    cond: bool = False,
    resume: bool = False,
    force: bool = False,
    seed: int = 0,
    save_every: int = 500,
    deadline: float | None = None,
    device=None,
    compile: str | None = "auto",
    channels_last: bool | None = None,
    again: str = "",
) -> Trainer:
    """Train a model by a recipe into the checkpoint `out`, or continue the run saved there (`resume`), and
    return its Trainer (the trained network is `trainer.model`, its EMA `trainer.ema.model`).

    `recipe`: a name or a Recipe; else, on `resume`, the saved run's; else `profile`'s recipe for `kind` (ddpm, vae,
    latent, decoder). `vae`: for a latent run, the VAE whose latents it learns (default: the recipe's, else
    runs/vae/model); for a decoder run, the VAE whose decoder it retrains (a consistency run: the flow model it
    tunes). `steps`, `minutes`, `batch_size`, `lr`, `schedule` override the recipe's (on `resume`, `steps` counts
    more steps; default: what is left); `cond` makes a ddpm or latent model class-conditional. `data_root`:
    CIFAR-10's folder, or images already loaded. `out` is never overwritten without `force`. Saved every
    `save_every` steps, at the end, on Ctrl-C and at `deadline` (a `time.monotonic()` value). `compile`: a
    torch.compile mode, "auto" (CUDA graphs on CUDA, none on a CPU) or None; `channels_last` (default: on CUDA).
    `again`: the command that continues the run."""
    steps, minutes, batch_size, lr, seed, save_every = _checked_numbers(
        steps, minutes, batch_size, lr, seed, save_every
    )
    overrides: dict[str, Any] = dict(steps=steps, batch_size=batch_size, lr=lr, schedule=schedule, minutes=minutes)
    out = out_name(recipe, out, kind)
    recipe, saved = plan(
        recipe, out, kind=kind, profile=profile, vae=vae, cond=cond, resume=resume, force=force, **overrides
    )
    # Held while it trains: a second run on the same `out` would replace this one's model with its own. (Under
    # torchrun process 0, the one that writes, holds it.)
    with env.held(out) if distributed.launched_main() else nullcontext():
        return _train(
            recipe,
            out,
            saved,
            data_root=data_root,
            vae=vae,
            steps=steps,
            minutes=minutes,
            lr=lr,
            seed=seed,
            save_every=save_every,
            deadline=deadline,
            device=device,
            again=again,
            speed=dict(compile=compile, channels_last=channels_last),
        )


def plan(
    recipe: str | Recipe | None,
    out: str,
    *,
    kind: str | None = None,
    profile: str | None = None,
    vae: str | Path | None = None,
    cond: bool = False,
    resume: bool = False,
    force: bool = False,
    processes: int | None = None,
    **overrides,
) -> tuple[Recipe, dict | None]:
    """Every check of a training run that needs no work, made before any: the recipe to train and the saved run's
    config (on `resume`). `processes`: the number of processes that will train it (default: this run's)."""
    asked = recipe if isinstance(recipe, Recipe) or recipe is None else get_recipe(recipe)
    _check_kind(asked, kind)  # before anything is built or written
    saved = _check_out(out, resume, force)
    recipe = _choose_recipe(asked, kind, profile, saved, cond, overrides)
    if vae is not None and recipe.kind not in (*LATENT, *TUNED):
        raise DiffeduError(
            f"--vae (vae=) names the VAE of a latent model, or the base of a decoder or consistency run; "
            f"a {recipe.kind} model has none: drop it"
        )
    if vae is not None and recipe.kind == "decoder" and not saved:  # it retrains a VAE's decoder
        kind = checkpoint.read_meta(pretrained.resolve(vae)).get("kind")
        if kind != "vae":
            raise DiffeduError(f"a decoder run retrains a VAE's decoder; {vae} holds a {kind} model: give a VAE")
    if vae is not None and recipe.kind == "consistency" and not saved:  # it would tune any UNet as a flow model
        objective = checkpoint.read_meta(pretrained.resolve(vae)).get("objective")
        if objective != "flow":
            raise DiffeduError(
                f"a consistency run tunes a flow-matching model (e.g. fm-cifar10); {vae} is "
                f"{'a ' + objective + ' model' if objective else 'not one'}: give a flow model's checkpoint"
            )
    distributed.check_split(recipe.batch_size, processes or distributed.WORLD)
    return recipe, saved


def _train(
    recipe: Recipe,
    out: str,
    saved: dict | None,
    *,
    data_root,
    vae,
    steps,
    minutes,
    lr,
    seed,
    save_every,
    deadline,
    device,
    again,
    speed: dict,
) -> Trainer:
    """train's work, once every check is made: build (or load) the run, and fit it."""
    device = distributed.setup(env.get_device(device))  # under torchrun: join the others, take this process's GPU
    distributed.rows(recipe.batch_size)  # (checked again: a script may have joined the processes itself)
    env.seed_everything(seed)  # the same seed on every process: their per-image draws are cut from the same ones
    base = None if recipe.kind == "text" else vae  # (a text run's --vae is its VAE; its base is the recipe's)
    model = checkpoint.build_model(saved, out) if saved else recipe.build(base) if recipe.kind in TUNED else None
    trainer = recipe.trainer(device, model, **_speed(device, **speed))
    trainer.meta["processes"] = max(distributed.WORLD, (saved or {}).get("processes", 1))  # the most that trained it
    cifar = data_root if isinstance(data_root, data.ImageSet) else data.load_cifar10(data_root)
    vae_model, vae_ref = _vae_for_latent(vae, recipe, saved, trainer.device) if recipe.kind in LATENT else (None, None)
    if saved:
        trainer.load(out)
        for group in trainer.optimizer.param_groups if lr else []:
            group["lr"] = lr  # the saved optimizer state carries the old rate
    if steps and not minutes:
        recipe = replace(recipe, minutes=None)  # `steps` N trains N steps, not the recipe's minutes
    if minutes and not steps:
        recipe = replace(recipe, steps=UNLIMITED)  # `minutes` M trains M minutes, not the recipe's steps
    more = steps or recipe.steps - trainer.step
    if more < 1 or (saved and not steps and recipe.finished(saved)):
        raise DiffeduError(
            f"{out} has already trained all of its recipe ({trainer.step} steps): pass --steps N (steps=N) to "
            "train N more (a timed recipe ends with a learning rate near 0: pass --lr too)"
        )
    length = (
        f"{recipe.minutes:g} minutes of training in all"
        if recipe.minutes
        else f"steps {trainer.step} -> {trainer.step + more}"
    )
    on = (
        f"{distributed.WORLD} processes ({trainer.device.type}), batch {recipe.batch_size // distributed.WORLD} each"
        if distributed.WORLD > 1
        else trainer.device
    )
    distributed.print_main(
        f"{recipe.kind} ({recipe.name}): {type(trainer.model).__name__} "
        f"{count_parameters(trainer.model) / 1e6:.2f}M parameters, {len(cifar.images[: recipe.n_data])} "
        f"training images, batch {recipe.batch_size}, {length}, on {on}"
    )
    fit(
        trainer,
        recipe,
        out,
        cifar,
        more,
        vae=vae_model,
        vae_ref=vae_ref,
        seed=seed,
        save_every=save_every,
        deadline=deadline,
        again=again,
    )
    recent = trainer.history[-50:]
    distributed.print_main(f"saved {checkpoint.paths(out)[0]}; final loss {sum(recent) / max(1, len(recent)):.4f}")
    return trainer


def out_name(recipe: str | Recipe | None, out: str | Path | None, kind: str | None) -> str:
    """Where the run is saved: `out`, else runs/<kind>/model. Not a folder (the checkpoint would land beside it)."""
    if out is not None and (not str(out).strip() or str(out).endswith(("/", "\\")) or Path(out).is_dir()):
        raise DiffeduError(f"out={str(out)!r} is not a checkpoint name: name the checkpoint, e.g. runs/ddpm/model")
    if out is not None:
        for file in checkpoint.paths(out):  # before anything asks the file system about a name it cannot hold
            env.check_name(file)
        return str(out)
    asked = recipe if isinstance(recipe, Recipe) or recipe is None else get_recipe(recipe)
    return str(Path("runs") / (asked.kind if asked else kind or "ddpm") / "model")


def _checked_numbers(steps, minutes, batch_size, lr, seed, save_every) -> tuple:
    """train's numbers, checked before any work: whole where they count, positive and finite where they scale."""
    steps, batch_size = (
        None if n is None else whole(n, name) for n, name in ((steps, "steps"), (batch_size, "batch_size"))
    )
    minutes, lr = (None if x is None else real(x, name) for x, name in ((minutes, "minutes"), (lr, "lr")))
    for x, name in ((minutes, "minutes"), (lr, "lr")):
        if x is not None and x <= 0:
            raise DiffeduError(f"{name} must be more than 0, got {x!r}")
    if whole(seed, "seed", 0) >= 2**32:
        raise DiffeduError(f"seed must be below 2^32 (NumPy's limit), got {seed!r}")
    return steps, minutes, batch_size, lr, int(seed), whole(save_every, "save_every", 0)


def _check_kind(recipe: Recipe | None, kind: str | None) -> None:
    if recipe and kind and kind != recipe.kind:
        raise DiffeduError(
            f"recipe {recipe.name} trains a {recipe.kind} model, not a {kind} one: "
            f"drop `{kind}`, or choose a {kind} recipe"
        )


def _check_out(out: str, resume: bool, force: bool) -> dict | None:
    """Never overwrite a model without being asked; fail before training if `out` cannot be written.
    Returns the saved run's config when resuming."""
    saved = None
    if resume:
        if not checkpoint.exists(out):
            raise CheckpointError(f"nothing to resume at {out}: train without --resume first")
        saved = checkpoint.read_meta(out)
        if "optimizer" not in saved or saved.get("recipe") not in RECIPES:
            raise CheckpointError(
                f"{out} was not saved by a training run this diffedu can resume (no optimizer state "
                "or recipe): train a new one with another --out"
            )
    elif checkpoint.exists(out) and not force:
        step = checkpoint.read_meta(out).get("step", "?")
        raise CheckpointError(
            f"{checkpoint.paths(out)[0]} already holds a model ({step} steps). Continue it with --resume, "
            "choose another --out, or replace it with --force"
        )
    weights, config = checkpoint.paths(out)  # (a settings.json of one's own is not a checkpoint's config)
    for file, ours in ((weights, lambda _: True), (config, env.json_result("kind", "config"))):
        note = env.check_replaceable(file, ours, force)
        if note:
            distributed.print_main(note)
    return saved


def _choose_recipe(
    asked: Recipe | None, kind: str | None, profile: str | None, saved: dict | None, cond: bool, overrides: dict
) -> Recipe:
    """The recipe to train: the one asked for, else the resumed run's, else the profile's for the kind, with the
    overrides given. Refused when it trains another kind than asked for, or than the run being resumed."""
    if asked:
        recipe = asked
    elif saved and not profile:
        recipe = get_recipe(saved["recipe"])
    else:
        recipe = get_profile(profile).recipe(kind or (get_recipe(saved["recipe"]).kind if saved else "ddpm"))
    _check_kind(recipe, kind)
    if cond:
        recipe = recipe.with_classes()
    if saved:
        if cond and not saved["config"].get("num_classes"):
            raise DiffeduError("the run you are resuming is not class-conditional, and a model keeps its conditioning")
        overrides["model"] = saved["config"]  # a resumed run keeps its own architecture
        if get_recipe(saved["recipe"]).kind != recipe.kind:
            raise DiffeduError(
                f"the run you are resuming trains a {get_recipe(saved['recipe']).kind} model, recipe "
                f"{recipe.name} a {recipe.kind} one: resume it without --recipe/--profile"
            )
        if overrides["schedule"] and saved.get("schedule") not in (None, overrides["schedule"]):
            raise DiffeduError(
                f"the run you are resuming learned the {saved['schedule']} schedule, and a model keeps its schedule"
            )
        overrides["schedule"] = saved.get("schedule", overrides["schedule"])
    return replace(recipe, **{k: v for k, v in overrides.items() if v is not None})


def _vae_for_latent(vae: str | Path | None, recipe: Recipe, saved: dict | None, device) -> tuple[VAE, str]:
    """The VAE a latent run learns, and its reference for the checkpoint; a resumed run keeps the one it began with."""
    name = saved["vae"] if saved else str(vae or recipe.vae or "runs/vae/model")
    if saved and vae and pretrained.reference(vae) != name:
        raise DiffeduError(
            f"this run learns the latents of {name}; resuming it with {vae} would mix two latent spaces. "
            "Resume without --vae, or train a new run with another --out"
        )
    model = load_vae(name, device)
    _check_vae(model, name, saved)
    return model, pretrained.reference(name)


def _speed(device, compile: str | None, channels_last: bool | None) -> dict:
    """The Trainer's speed options, where "auto" turns on on CUDA what pays there: CUDA graphs, NHWC."""
    cuda = device.type == "cuda"
    # CUDA graphs with DDP's gradient hooks (torchrun) are untested here: auto leaves them off there
    mode = ("reduce-overhead" if cuda and distributed.WORLD == 1 else None) if compile == "auto" else compile
    return {
        "compile": None if mode == "none" else mode,
        "channels_last": cuda if channels_last is None else channels_last,
    }


def fit(
    trainer: Trainer,
    recipe: Recipe,
    out: str | Path,
    cifar: data.ImageSet,
    steps: int,
    *,
    vae: VAE | None = None,
    vae_ref: str | None = None,
    seed: int = 0,
    save_every: int = 500,
    deadline: float | None = None,
    again: str = "",
) -> None:
    """Train `steps` more steps of `recipe` on CIFAR-10 (a latent recipe: on `vae`'s scaled latents, `vae_ref`
    naming it in the checkpoint), saving to `out` every `save_every` steps, at the end, on Ctrl-C and when
    `time.monotonic()` passes `deadline`; a recipe with `minutes` stops when its budget of training time is spent.
    A VAE that trained all its steps gets its latent scale factor measured (a decoder stage keeps its base's).
    `again`: the command that continues the run, for the Ctrl-C message."""
    images, labels = cifar.images[: recipe.n_data], cifar.labels[: recipe.n_data]
    train_set = images
    if recipe.captioned:  # each image's class, colour and brightness, its captions' words (a mirror's are the same)
        labels = torch.stack([labels, *captions.attributes(images)], 1)
    if recipe.kind in LATENT:  # learn the VAE's scaled latents, encoded once and cached
        assert vae is not None  # (a latent run is given its VAE)
        # the images, then their mirror images; under torchrun encoded by process 0, read by the others
        train_set, labels = distributed.main_first(lambda: cached_latents(vae, images)), torch.cat([labels, labels])
        trainer.meta |= {"vae": vae_ref, "vae_fingerprint": vae_fingerprint(vae)}
    if recipe.kind in ("ddpm", "flow", "latent"):
        trainer.watch(_watched_batches(cifar, train_set, vae))
    batches = data.batches(
        train_set,
        recipe.batch_size,
        labels=labels if recipe.conditional or recipe.captioned else None,
        flip=recipe.kind not in LATENT,
        device=trainer.device,
        seed=seed + trainer.step,
    )
    goal = trainer.step + steps
    try:
        trainer.fit(
            batches, steps, save_to=out, save_every=save_every, deadline=deadline, budget_seconds=recipe.budget_seconds
        )
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"interrupted: saved {trainer.step} steps to {checkpoint.paths(out)[0]}; "
            f"continue with: {again or f'python -m diffedu train --out {out} --resume'}"
        ) from None
    if recipe.kind == "vae" and trainer.step == goal:  # the scale factor belongs to the trained VAE: measured last
        assert isinstance(trainer.ema.model, VAE)  # (a vae recipe's model)
        scale = calibrate(trainer.ema.model, images, progress=distributed.is_main())
        distributed.print_main(f"latent scale factor {scale:.4f}")
        trainer.save(out)


WATCHED = 256  # images in each fixed batch whose loss a run logs (Trainer.watch)


def _watched_batches(cifar: data.ImageSet, train_set: torch.Tensor, vae: VAE | None) -> dict[str, torch.Tensor]:
    """The fixed batches a diffusion run's loss is watched on: its first training images (or latents) and as many of
    CIFAR-10's test images, which it never trains on; none when the test images cannot be read beside the training
    ones (images given in memory, or a folder without test_batch)."""
    try:
        test = data.load_cifar10(cifar.source, train=False) if cifar.source else None
    except DataError:
        test = None
    if test is None or len(test) < 2:
        return {}
    n = min(WATCHED, len(test), len(train_set))
    images = test.images[:n]
    if vae is None:  # pixels
        return {"training": data.to_float(train_set[:n]), "held-out": data.to_float(images)}
    # latents, encoded once (by process 0 under torchrun)
    return {
        "training": train_set[:n],
        "held-out": distributed.main_first(lambda: cached_latents(vae, images, flips=False)),
    }


def _check_vae(vae: VAE, name: str, saved: dict | None) -> None:
    """A latent run learns one VAE's latent space: refuse a VAE that has changed since the run began, or one
    whose scale factor was never measured."""
    if saved and saved.get("vae_fingerprint") not in (None, vae_fingerprint(vae)):
        raise CheckpointError(
            f"the VAE at {name} has changed since this run started: it cannot be resumed on it. "
            "Train the latent model anew (another --out, or delete the run)"
        )
    if vae.config.scale_factor == 1.0:  # the default: calibrate() has never measured it
        raise CheckpointError(
            f"the latent scale factor of the VAE at {name} was never measured (its training did not "
            f"finish): finish it with `python -m diffedu train --out {name} --resume`"
        )


def retrain(
    names: list[str],
    runs: str | Path = "runs/retrain",
    export_to: str | Path | None = None,
    budget_minutes: float | None = None,
    data_root: str | None = None,
    device=None,
    **speed,
) -> bool:
    """Train each named recipe into `runs/<name>` (resuming what an earlier call left) and export each finished
    one, float16 weights and a draft card, into `export_to` (default `runs/shipped`). A latent model learns the
    exported VAE when that is retrained too, so the pair ships together. Stops, saved, once `budget_minutes`
    are spent. `speed`: `train`'s compile and channels_last. Returns whether every model is done."""
    runs = Path(runs)
    export_to = Path(export_to or runs / "shipped")
    recipes = sorted((get_recipe(name) for name in dict.fromkeys(names)), key=lambda r: _ORDER.index(r.kind))
    deadline = time.monotonic() + 60 * budget_minutes if budget_minutes else None
    for recipe in recipes:  # before any training: an export replaces only an earlier export of the same recipe
        shipped = export_to / recipe.name
        if checkpoint.exists(shipped) and checkpoint.read_meta(shipped).get("recipe") != recipe.name:
            raise CheckpointError(
                f"{checkpoint.paths(shipped)[0]} holds a model that is not an export of recipe "
                f"{recipe.name}: move it away, or export elsewhere (--export)"
            )
    cifar = data.load_cifar10(data_root)
    for recipe in recipes:
        out, shipped = runs / recipe.name, export_to / recipe.name
        if recipe.kind == "text":  # it starts from, and reads prompts with, the models exported beside it

            def beside(name: str | None) -> str | None:
                return str(export_to / name) if name in names else name

            recipe = replace(recipe, base=beside(recipe.base), text_encoder=beside(recipe.text_encoder))
        saved = checkpoint.read_meta(out) if checkpoint.exists(out) else None
        if saved and saved.get("recipe") != recipe.name:
            raise CheckpointError(
                f"{out} holds a run of recipe {saved.get('recipe')!r}, not {recipe.name}: move it away"
            )
        if not saved or not recipe.finished(saved):
            if deadline is not None and distributed.agree(0.0, time.monotonic() > deadline)[1]:  # process 0's clock
                return False
            trainer = train(
                recipe,
                out,
                vae=_vae_arg(recipe, recipes, names, export_to),
                data_root=cifar,
                resume=saved is not None,
                deadline=deadline,
                device=device,
                again="the same retrain command",
                **speed,
            )
            if not recipe.finished(checkpoint.read_meta(out)):
                distributed.print_main(f"{recipe.name}: out of time at step {trainer.step}, saved to {out}")
                return False
        meta = checkpoint.read_meta(out)
        exported = checkpoint.exists(shipped) and checkpoint.read_meta(shipped).get("seconds") == meta["seconds"]
        if not exported and distributed.is_main():
            export_to.mkdir(parents=True, exist_ok=True)
            card = _card_path(recipe, shipped)  # (read before the export replaces the draft it is compared with)
            pretrained.export(
                out,
                shipped,
                env.hardware(),
                vae=_vae_of(recipe, recipes) if recipe.kind in LATENT else None,
                text_encoder=get_recipe(recipe.name).text_encoder,
            )
            card.write_text(draft_card(recipe, checkpoint.read_meta(shipped)))
            print(
                f"{recipe.name}: exported to {checkpoint.paths(shipped)[0]} with a draft card"
                + (
                    f", {card}: {shipped}.md was edited since it was written, and is kept"
                    if card.name.endswith(".draft.md")
                    else ""
                )
            )
        distributed.barrier()  # the next recipe may learn this export
    return True


def _vae_arg(recipe: Recipe, recipes: list[Recipe], names: list[str], export_to: Path) -> str | None:
    """The VAE a latent or text recipe learns, or the model a decoder or consistency recipe starts from: the one
    exported beside it when that is retrained too."""
    name = _vae_of(recipe, recipes) if recipe.kind in LATENT else recipe.base if recipe.kind in TUNED else None
    return str(export_to / name) if name in names else name


def _vae_of(recipe: Recipe, recipes: list[Recipe]) -> str:
    """The VAE a latent recipe learns: the one it names, else the one VAE retrained beside it."""
    if recipe.vae:
        return recipe.vae
    vaes = [r.name for r in recipes if r.kind == "vae"]
    if len(vaes) != 1:
        raise DiffeduError(f"{recipe.name} names no VAE: retrain it together with exactly one VAE recipe")
    return vaes[0]


def _card_path(recipe: Recipe, shipped: Path) -> Path:
    """Where an export's draft card goes: <name>.md, unless a card there is not the draft of the export it stands
    beside (someone edited it): then <name>.draft.md beside it."""
    card = Path(f"{shipped}.md")
    if not card.exists():
        return card
    ours = checkpoint.exists(shipped) and card.read_text() == draft_card(recipe, checkpoint.read_meta(shipped))
    return card if ours else card.with_name(f"{shipped.name}.draft.md")


def draft_card(recipe: Recipe, meta: dict) -> str:
    """A model card with what training measured; its FID / KID row says how to measure them."""
    model = checkpoint.build_model(meta)
    steps_per_s = meta["step"] / meta["seconds"] if meta.get("seconds") else float("nan")
    fid = {"vae": "", "decoder": "", "consistency": " --steps 2"}.get(recipe.kind, " --steps 100")
    fid = f"`python -m diffedu fid --ckpt {recipe.name} --samples 500{fid}`"
    rows = {
        "architecture": f"`{type(model).__module__}.{type(model).__name__}` {meta['config']}; "
        f"{count_parameters(model) / 1e6:.2f}M parameters",
        "recipe": f"`{recipe.name}` in `diffedu/recipes.py`: batch {recipe.batch_size}, "
        + (
            f"{recipe.minutes:g} minutes of training ({meta['step']:,} steps), "
            f"lr annealed over them from {recipe.lr:g}, "
            if recipe.minutes
            else f"{recipe.steps:,} steps, AdamW lr {recipe.lr:g}, "
        )
        + (f"decoder only, on `{recipe.base}`'s frozen encoder, " if recipe.kind == "decoder" else "")
        + (
            f"from `{recipe.base}`, ECT's curriculum halving every {recipe.stage_steps} steps, float32, "
            if recipe.kind == "consistency"
            else ""
        )
        + (
            f"from `{recipe.base}` with cross-attention added, prompts read by `{recipe.text_encoder}` (frozen), "
            f"captions dropped {recipe.label_dropout:.0%} of the time, "
            if recipe.kind == "text"
            else ""
        )
        + "gradient clipping at 1.0, EMA 0.999 (the weights shipped are the EMA's)"
        + (f", on the latents of `{meta['vae']}`" if meta.get("vae") else ""),
        "reproduce": f"`python -m diffedu retrain {recipe.name}`",
        "hardware, time": f"{meta.get('hardware')}: {meta['seconds']:.0f} s of training ({steps_per_s:.1f} steps/s)"
        + (f", on {meta['processes']} processes (torchrun)" if meta.get("processes", 1) > 1 else ""),
        "final loss": f"{meta.get('final_loss', float('nan')):.4f} (mean of the last 50 steps)",
        "stored as": "float16 safetensors",
        "FID / KID": f"not measured yet: {fid} on a machine with the data",
        **(
            {"FID / KID": "none (it makes no images); zero-shot: `python -m diffedu zeroshot --ckpt PATH`"}
            if recipe.kind == "clip"
            else {"adherence": f"`python -m diffedu adherence --ckpt {recipe.name}`"}
            if recipe.kind == "text"
            else {}
        ),
    }
    table = "\n".join(f"| {key} | {value} |" for key, value in rows.items())
    return f"# {recipe.name}\n\n{recipe.note}\n\n| | |\n| --- | --- |\n{table}\n"
