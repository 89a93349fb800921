"""Checkpoints: tensors in a .safetensors file, a JSON config beside it.

safetensors holds only tensors and a header of strings, so loading one can never run code (unlike
torch.load on a pickle). A checkpoint named `runs/ddpm/model` is the pair `runs/ddpm/model.safetensors`
+ `runs/ddpm/model.json`; a dot in the name is part of the name (`runs/lr0.001` is `runs/lr0.001.*`).

Saving is atomic: the config is written into the safetensors header too, and the file is written
under a temporary name and renamed over the old one, so a crash or a kill at any moment leaves either
the old checkpoint or the new one, never weights of one save with the config of another. The header
is the authority; the JSON is a copy for people and tools. (Checkpoints without a header config, like
the shipped ones, are read from the JSON.)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from . import env
from .errors import CheckpointError, DiffeduError
from .nets import UNet, UNetConfig
from .schedules import Schedule
from .text import CLIP, CLIPConfig
from .vae import VAE, VAEConfig

FORMAT = "diffedu-checkpoint-1"
HEADER_KEY = "diffedu"  # the config's key in the safetensors header
KINDS = {
    "unet": (UNet, UNetConfig),
    "vae": (VAE, VAEConfig),
    "clip": (CLIP, CLIPConfig),
}  # the "kind" in a checkpoint's config -> (model class, config class)
_TRAIN = "train one with `python -m diffedu train` and pass the path it prints"


def paths(path: str | Path) -> tuple[Path, Path]:
    """The weights and the JSON of a checkpoint, named with or without either suffix."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def exists(path: str | Path) -> bool:
    return paths(path)[0].is_file()


def check_writable(path: str | Path) -> None:
    """Fail now, not after an hour of training, when a checkpoint cannot be written at `path`."""
    env.check_writable(paths(path)[0])


def _save_tensors(tensors: dict[str, torch.Tensor], file: Path, text: str) -> None:
    try:
        save_file(tensors, str(file), metadata={HEADER_KEY: text})
    except SafetensorError as error:  # how safetensors reports a full disk or a vanished folder
        raise OSError(f"could not write {file} ({error}): free some disk space, or save elsewhere") from error


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write the checkpoint atomically (see the module's docstring); returns its path without suffix."""
    weights, config = paths(path)
    text = json.dumps({"format": FORMAT, **meta}, indent=2)  # before anything is written: a bad value fails here
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    env.write_whole(weights, lambda file: _save_tensors(tensors, file, text))
    env.write_whole(config, lambda file: file.write_text(text))
    return weights.with_name(weights.name[: -len(".safetensors")])


def _header(weights: Path) -> tuple[dict[str, str], dict[str, tuple]]:
    """The safetensors header: its metadata strings and each tensor's shape (no tensor is read)."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            # (f is safetensors' file handle, not a dict: it has keys() but cannot be iterated)
            return f.metadata() or {}, {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(
            f"{weights} could not be read as safetensors ({error}); it is truncated or not a checkpoint: "
            "delete it and re-create or re-download it"
        ) from error


def read_meta(path: str | Path) -> dict:
    """The checkpoint's config: from the safetensors header, else (older checkpoints) the JSON beside it."""
    weights, config = paths(path)
    if not weights.is_file():
        raise CheckpointError(f"no checkpoint file {weights}. A checkpoint is a .safetensors + .json pair: {_TRAIN}.")
    text, source = _header(weights)[0].get(HEADER_KEY), weights
    if text is None:
        if not config.is_file():
            raise CheckpointError(f"no checkpoint file {config}, and {weights} holds no config: {_TRAIN}.")
        try:
            text, source = config.read_text(), config
        except UnicodeDecodeError as error:
            raise CheckpointError(
                f"{config} is not text ({error}); the file is damaged: re-create the checkpoint"
            ) from error
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as error:  # not JSON; a number too long for int(); nesting too deep for json
        raise CheckpointError(
            f"{source} holds no valid JSON config ({error}); the file is damaged or not a "
            "checkpoint: re-create the checkpoint"
        ) from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f'{source} is not a diffedu checkpoint config (no "format": "{FORMAT}")')
    return meta


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and the config, or a CheckpointError that says what is wrong."""
    meta = read_meta(path)
    weights = paths(path)[0]
    try:
        tensors = load_file(str(weights))
    except Exception as error:
        raise CheckpointError(
            f"{weights} could not be read as safetensors ({error}); it is truncated or not a checkpoint: "
            "delete it and re-create or re-download it"
        ) from error
    return tensors, meta


def check_fits(model: nn.Module, shapes: dict[str, tuple], source: str = "checkpoint") -> None:
    """An error that names the weights whose names or shapes disagree with the model's."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(own.keys() - shapes.keys()), sorted(shapes.keys() - own.keys())
    wrong = [f"{k}: {shapes[k]} vs {own[k]}" for k in sorted(own.keys() & shapes.keys()) if tuple(shapes[k]) != own[k]]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{source} does not fit this {type(model).__name__}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong)} of the wrong shape (e.g. {wrong[:3]}). Build the model from the checkpoint's own config."
        )


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """load_state_dict with an error that says which names or shapes disagree."""
    check_fits(model, {k: tuple(v.shape) for k, v in tensors.items()}, source)
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})
    return model


def with_prefix(tensors: dict, prefix: str) -> dict:
    """The entries under `prefix.`, with the prefix taken off."""
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def save_model(path: str | Path, model: nn.Module, dtype: torch.dtype | None = None, **meta) -> Path:
    """Weights and config of a model, for sampling only (no optimizer state)."""
    tensors = {
        f"model.{k}": (v.to(dtype) if dtype and v.is_floating_point() else v) for k, v in model.state_dict().items()
    }
    # config: a plain attribute (a UNet's or a VAE's), not the Tensor | Module of torch's stubs
    return save(path, tensors, {"kind": model_kind(model), "config": model.config.to_dict(), **meta})  # type: ignore[union-attr, operator]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model from the config and load its weights: the EMA weights of a training
    checkpoint when it has them, else the plain ones. Eval mode.

    The config is checked against the weights' shapes (read from the header) on a skeleton model
    that holds no memory, before the real model is built: a config that asks for a huge or
    nonsensical model fails with a message, not an out-of-memory abort."""
    meta = read_meta(path)
    shapes = _header(paths(path)[0])[1]
    prefix = "ema" if with_prefix(shapes, "ema") else "model"
    with torch.device("meta"):
        check_fits(build_model(meta, str(path)), with_prefix(shapes, prefix), str(path))
    model = build_model(meta, str(path))
    tensors = with_prefix(load(path)[0], prefix)
    broken = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:  # it would sample black images without a word
        raise CheckpointError(
            f"{path} holds NaN or infinite weights ({broken[0]}, and {len(broken) - 1} more): its training "
            "diverged. Retrain it (a lower --lr), or load an earlier checkpoint"
        )
    return load_weights(model, tensors, str(path)).to(device).eval()


def model_kind(model: nn.Module) -> str:
    for kind, (cls, _) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise CheckpointError(f"no checkpoint kind for {type(model).__name__}")


def build_model(meta: dict, source: str = "checkpoint") -> nn.Module:
    """A fresh model of the checkpoint's kind and config (its weights are not loaded)."""
    if not isinstance(meta.get("kind"), str) or meta["kind"] not in KINDS:  # a list or dict cannot even be looked up
        raise CheckpointError(f"{source} holds a {meta.get('kind')!r} model; this diffedu knows {sorted(KINDS)}")
    cls, config_cls = KINDS[meta["kind"]]
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{source} has no model config")
    config = meta["config"]
    if meta["kind"] == "unet" and "T" in meta and "T" not in config:  # saved before the UNet's config recorded it
        config = {**config, "T": meta["T"]}
    try:
        return cls(config_cls(**config))
    except (TypeError, RuntimeError, DiffeduError) as error:  # RuntimeError: torch, at sizes too large to count
        raise CheckpointError(f"{source} has a config this diffedu cannot build ({error})") from error


def schedule_of(path: str | Path) -> Schedule:
    """The noise schedule a checkpoint's model learned (samplers must use the same one)."""
    meta = read_meta(path)
    name = meta.get("schedule", "linear")
    if not isinstance(name, str):  # a list or a dict: by_name's look-up would be a TypeError
        raise CheckpointError(
            f"{path}: unknown schedule {name!r}, not a name; the file is damaged: re-create the checkpoint"
        )
    try:
        return Schedule.by_name(name, meta.get("T", 1000))
    except DiffeduError as error:
        raise CheckpointError(f"{path}: {error}") from error
