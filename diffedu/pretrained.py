"""Trained checkpoints that ship with the package, loaded by name.

A laptop cannot train a good CIFAR-10 model inside a lesson, so the lessons' cpu profile samples
from these. Each one is reproducible by one command from its recipe (diffedu.recipes):

    python -m diffedu train --recipe ddpm-cifar10
    python -m diffedu train --recipe vae-cifar10 --out runs/vae-cifar10
    python -m diffedu train --recipe ldm-cifar10 --vae runs/vae-cifar10

or all of them, resumably, exported for shipping: `python -m diffedu retrain --all` (diffedu.runs). Each
has a model card (`card(name)`) saying what it was trained on, how, and how long.
Sample one with `diffedu.pipelines.load_pipeline(name)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from . import checkpoint
from .errors import DiffeduError
from .text import CLIP

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


def available() -> list[str]:
    return sorted(p.name[: -len(".safetensors")] for p in CHECKPOINTS.glob("*.safetensors"))


def path(name: str) -> Path:
    if name not in available():
        raise DiffeduError(
            f"no shipped checkpoint named {name!r}; shipped: {', '.join(available()) or 'none'}. "
            "Recipes to train one: python -m diffedu train --recipe NAME (see diffedu.recipes)"
        )
    return CHECKPOINTS / name


def resolve(name_or_path: str | Path) -> Path:
    """A shipped checkpoint's path for its name; anything else is taken as a path."""
    if not isinstance(name_or_path, (str, Path)) or not str(name_or_path).strip():
        raise DiffeduError(
            f"which model? Give a shipped name ({', '.join(available())}) or a checkpoint's path, not {name_or_path!r}"
        )
    return path(str(name_or_path)) if str(name_or_path) in available() else Path(name_or_path)


def reference(name_or_path: str | Path) -> str:
    """How one checkpoint names another (a latent model its VAE): a shipped name stays a name, a path
    becomes absolute, so that the reference resolves from any folder."""
    return str(name_or_path) if str(name_or_path) in available() else str(Path(name_or_path).resolve())


def export(
    run: str | Path, out: str | Path, hardware: str, vae: str | None = None, text_encoder: str | None = None
) -> Path:
    """A training run as a shipped checkpoint: the EMA weights in float16 (half the size, the same samples to the
    eye) and the config trimmed to what a card cites: recipe, steps, seconds, processes, hardware, final loss.
    `vae`: for a latent model, the name its VAE ships under (its fingerprint still has to match); `text_encoder`:
    likewise for a text-to-image model's CLIP."""
    meta = checkpoint.read_meta(run)
    history = meta.get("history") or [float("nan")]
    names = ("schedule", "T", "objective", "recipe", "step", "seconds", "processes", "vae", "vae_fingerprint")
    kept = {k: meta[k] for k in (*names, "text_encoder", "text_fingerprint") if k in meta}
    if vae and "vae" in kept:
        kept["vae"] = vae
    if text_encoder and "text_encoder" in kept:
        kept["text_encoder"] = text_encoder
    return checkpoint.save_model(
        out,
        checkpoint.load_model(run),
        dtype=torch.float16,
        **kept,
        hardware=hardware,
        final_loss=sum(history[-50:]) / len(history[-50:]),
    )


def load_clip(name_or_path: str | Path) -> CLIP:
    """A trained CLIP by shipped name or path, frozen, refusing checkpoints of another kind."""
    file = resolve(name_or_path)
    kind = checkpoint.read_meta(file).get("kind")
    if kind != "clip":
        raise DiffeduError(f"{name_or_path} holds a {kind} model, not a text encoder: pass a CLIP (e.g. clip-cifar10)")
    clip = checkpoint.load_model(file)
    assert isinstance(clip, CLIP)  # (its kind was checked above)
    return clip.requires_grad_(False)


def load(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """A shipped model by name, in eval mode, weights as float32."""
    return checkpoint.load_model(path(name), device)


def card(name: str, history: bool = True) -> str:
    """The model card: data, recipe, steps, hardware, time, and measured quality; then how it was made and what was
    tried on the way (its sections from the first one after the table on), unless `history=False`, as the lessons
    show it."""
    text = (CHECKPOINTS / f"{path(name).name}.md").read_text()
    if history:
        return text
    return text.split("\n## ", 1)[0].rstrip() + f"\n\n(How it was made: the full card, `pretrained.card({name!r})`.)\n"


def guidance_curve(name: str) -> dict:
    """A class-conditional model's measured guidance curve (`python -m diffedu guidance`), shipped beside it."""
    return _measured_beside(name, "guidance", "guidance curve: it is not class-conditional")


def adherence_table(name: str) -> dict:
    """A text-to-image model's measured prompt adherence (`python -m diffedu adherence`, diffedu.adherence), shipped
    beside it: lesson 11 and its card print it."""
    return _measured_beside(name, "adherence", "adherence table: it is not a text-to-image model")


def _measured_beside(name: str, command: str, what: str) -> dict:
    """What `python -m diffedu <command>` measured of a shipped model, kept beside it as <name>.<command>.json."""
    file = CHECKPOINTS / f"{path(name).name}.{command}.json"
    if not file.exists():
        raise DiffeduError(f"{name} ships no {what}, or measure one with `python -m diffedu {command} --ckpt {name}`")
    return measurements(file)


def quality_table(against: str = "training") -> dict:
    """FID/KID of the shipped models at 500 samples, per sampler and step count, measured by
    `python -m diffedu quality --out diffedu/checkpoints/quality.json` (lessons 03 and 06 plot it), against the
    training images, or `against="held-out"` (see `scored_against`)."""
    return scored_against(measurements(CHECKPOINTS / "quality.json"), against)


REFERENCES = ("training", "held-out")  # what a quality table's scores can be against


def scored_against(table: dict, against: str) -> dict:
    """A quality table whose rows' scores (FID, KID, their standard errors and influences) are those against
    `against`: "training", all the training images (the table as it is), or "held-out", test images that no
    model trained on and the real-image yardstick does not use: a model that copied its training images would
    gain nothing there."""
    if against not in REFERENCES:
        raise DiffeduError(f"a quality table is scored against {' or '.join(map(repr, REFERENCES))}, not {against!r}")
    if against == "training":
        return table
    if "held_out_reference" not in table or any("held_out" not in row for row in table["rows"].values()):
        raise DiffeduError(
            f"this quality table (format {table.get('format')}) has no held-out scores: migrate it with "
            "python -m diffedu quality --out <its file>"
        )
    rows = {label: {**row, **row["held_out"]} for label, row in table["rows"].items()}
    return {**table, "reference": table["held_out_reference"], "rows": rows}


def measurements(file: Path) -> dict:
    """A shipped measurement's JSON, or an error that names the file and says how to get it back."""
    try:
        measured = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise DiffeduError(
            f"{file} could not be read ({error}): restore it (git checkout -- {file.name}) or measure it again"
        ) from None
    if not isinstance(measured, dict):
        raise DiffeduError(f"{file} holds no table: restore it (git checkout -- {file.name}) or measure it again")
    return measured
