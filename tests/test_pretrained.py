import shutil

import pytest
import torch

from diffedu import checkpoint, pretrained
from diffedu.checkpoint import CheckpointError
from diffedu.samplers import ddim_sample


def test_ddpm_cifar10_is_shipped_with_a_card_and_a_recipe():
    assert "ddpm-cifar10" in pretrained.available()
    card = pretrained.card("ddpm-cifar10")
    for fact in ("data", "recipe", "hardware", "FID"):
        assert fact in card
    meta = checkpoint.read_meta(pretrained.path("ddpm-cifar10"))
    recipe = pretrained.RECIPES["ddpm-cifar10"]
    assert meta["profile"] == "ddpm-cifar10" and meta["step"] == recipe.train_steps
    assert {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["config"].items() if k in recipe.unet} == recipe.unet


def test_shipped_model_samples_images_in_range():
    model = pretrained.load("ddpm-cifar10")
    schedule = checkpoint.schedule_of(pretrained.path("ddpm-cifar10"))
    x = ddim_sample(model, schedule, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), steps=5, progress=False)
    assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1 and x.std() > 0.1


def test_unknown_name_lists_what_is_shipped():
    with pytest.raises(ValueError, match="shipped: .*ddpm-cifar10"):
        pretrained.load("ddpm-imagenet")


def test_a_damaged_copy_is_a_clear_error(tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(pretrained.path("ddpm-cifar10").with_suffix(suffix), tmp_path / f"copy{suffix}")
    weights = tmp_path / "copy.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load_model(tmp_path / "copy")
