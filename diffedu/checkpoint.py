"""Checkpoints: tensors in a .safetensors file, everything else in a .json beside it.

safetensors holds only tensors, so loading one can never run code (unlike
torch.load on a pickle). A checkpoint named `runs/ddpm/model` is the pair
`runs/ddpm/model.safetensors` + `runs/ddpm/model.json`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .nets import UNet, UNetConfig
from .schedules import Schedule
from .vae import VAE, VAEConfig

FORMAT = "diffedu-checkpoint-1"
KINDS = {"unet": (UNet, UNetConfig), "vae": (VAE, VAEConfig)}  # the "kind" in a checkpoint's JSON -> (model class, config class)


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or made for another model."""


def paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write the pair atomically enough for a lesson: tensors first, then the JSON."""
    weights, config = paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(weights))
    config.write_text(json.dumps({"format": FORMAT, **meta}, indent=2))
    return weights.with_suffix("")


def read_meta(path: str | Path) -> dict:
    """The JSON half of a checkpoint, checked to be one of ours."""
    weights, config = paths(path)
    for file in (weights, config):
        if not file.is_file():
            raise CheckpointError(
                f"no checkpoint file {file}. A checkpoint is a .safetensors + .json pair: "
                "train one with `python -m diffedu train` and pass the path it prints."
            )
    try:
        meta = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config} is not valid JSON ({error}); the file is damaged: re-create the checkpoint") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{config} is not a diffedu checkpoint config (no \"format\": \"{FORMAT}\")")
    return meta


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and the metadata, or a CheckpointError that says what is wrong."""
    meta = read_meta(path)
    weights = paths(path)[0]
    try:
        tensors = load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(
            f"{weights} could not be read as safetensors ({error}); it is truncated or not a checkpoint: "
            "delete it and re-create or re-download it"
        ) from error
    return tensors, meta


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """load_state_dict with an error that says which names or shapes disagree."""
    own = model.state_dict()
    missing = sorted(own.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - own.keys())
    wrong = [f"{k}: {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}" for k in own.keys() & tensors.keys()
             if tensors[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{source} does not fit this {type(model).__name__}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong)} of the wrong shape (e.g. {wrong[:3]}). Build the model from the checkpoint's own config."
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})
    return model


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix.`, with the prefix taken off."""
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def save_model(path: str | Path, model: nn.Module, dtype: torch.dtype | None = None, **meta) -> Path:
    """Weights and config of a model, for sampling only (no optimizer state)."""
    tensors = {f"model.{k}": (v.to(dtype) if dtype and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    return save(path, tensors, {"kind": model_kind(model), "config": model.config.to_dict(), **meta})


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model from the config and load its weights: the EMA weights
    of a training checkpoint when it has them, else the plain ones. Eval mode."""
    tensors, meta = load(path)
    model = build_model(meta, source=str(path))
    weights = with_prefix(tensors, "ema") or with_prefix(tensors, "model")
    return load_weights(model, weights, source=str(path)).to(device).eval()


def model_kind(model: nn.Module) -> str:
    for kind, (cls, _) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise CheckpointError(f"no checkpoint kind for {type(model).__name__}")


def build_model(meta: dict, source: str = "checkpoint") -> nn.Module:
    if meta.get("kind") not in KINDS:
        raise CheckpointError(f"{source} holds a {meta.get('kind')!r} model; this diffedu knows {sorted(KINDS)}")
    cls, config_cls = KINDS[meta["kind"]]
    try:
        return cls(config_cls(**meta["config"]))
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{source} has a config this diffedu cannot build ({error})") from error


def schedule_of(path: str | Path) -> Schedule:
    """The noise schedule a checkpoint's model learned (samplers must use the same one)."""
    meta = read_meta(path)
    return Schedule.by_name(meta.get("schedule", "linear"), meta.get("T", 1000))
