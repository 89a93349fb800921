import json
from functools import partial

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffedu import checkpoint
from diffedu.checkpoint import CheckpointError
from diffedu.nets import UNet, UNetConfig
from diffedu.schedules import Schedule
from diffedu.training import Trainer, eps_loss

CONFIG = UNetConfig(
    in_channels=1, image_size=8, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0
)


def make_trainer(seed=0):
    torch.manual_seed(seed)
    return Trainer(
        UNet(CONFIG), partial(eps_loss, schedule=Schedule.linear()), lr=1e-3, device="cpu", meta={"schedule": "linear"}
    )


def stream(seed):
    g = torch.Generator().manual_seed(seed)
    return iter(lambda: torch.randn(4, 1, 8, 8, generator=g), None)


def data_after(n, seed=0):
    """The batch stream with its first n batches already taken."""
    data = stream(seed)
    for _ in range(n):
        next(data)
    return data


def test_resumed_training_continues_exactly(tmp_path):
    """3 steps, save, 3 more; or load that save into a fresh trainer and take
    the same 3 steps: the same weights, EMA and history, to the bit."""
    torch.manual_seed(1)
    original = make_trainer().fit(data_after(0), 3, save_to=tmp_path / "run", progress=False)
    torch.manual_seed(5)  # the loss draws t and the noise from the global generator
    original.fit(data_after(3), 3, progress=False)

    resumed = make_trainer(seed=99).load(tmp_path / "run")  # another init: all must come from the file
    assert resumed.step == 3
    torch.manual_seed(5)
    resumed.fit(data_after(3), 3, progress=False)

    assert resumed.step == original.step == 6 and resumed.history == original.history
    for a, b in zip(resumed.model.state_dict().values(), original.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(resumed.ema.model.state_dict().values(), original.ema.model.state_dict().values()):
        assert torch.equal(a, b)


def test_model_round_trip_and_ema_weights_are_the_ones_loaded(tmp_path):
    trainer = make_trainer().fit(stream(0), 5, progress=False)
    path = trainer.save(tmp_path / "ckpt")
    model = checkpoint.load_model(path)
    for a, b in zip(model.state_dict().values(), trainer.ema.model.state_dict().values()):
        assert torch.equal(a, b)
    assert not model.training and checkpoint.read_meta(path)["schedule"] == "linear"
    half = checkpoint.save_model(tmp_path / "half", model, dtype=torch.float16)
    assert torch.allclose(checkpoint.load_model(half).stem.weight, model.stem.weight, atol=1e-3)


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(CheckpointError, match="python -m diffedu train"):
        checkpoint.load_model(tmp_path / "nothing")


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = checkpoint.save_model(tmp_path / "m", UNet(CONFIG))
    weights = path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        checkpoint.load_model(path)


def test_foreign_files_are_clear_errors(tmp_path):
    weights = checkpoint.paths(checkpoint.save_model(tmp_path / "m", UNet(CONFIG)))[0]
    tensors = load_file(str(weights))
    save_file(tensors, str(weights), metadata={checkpoint.HEADER_KEY: "{not json"})
    with pytest.raises(CheckpointError, match="no valid JSON"):
        checkpoint.load_model(weights)
    save_file(tensors, str(weights), metadata={checkpoint.HEADER_KEY: '{"kind": "unet"}'})
    with pytest.raises(CheckpointError, match="not a diffedu checkpoint"):
        checkpoint.load_model(weights)
    (tmp_path / "x.safetensors").write_bytes(b"PK\x03\x04 a zip, say a pickled torch file")
    (tmp_path / "x.json").write_text(f'{{"format": "{checkpoint.FORMAT}", "kind": "unet", "config": {{}}}}')
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        checkpoint.load_model(tmp_path / "x")


def test_checkpoints_without_a_header_config_are_read_from_their_json(tmp_path):
    """The shipped checkpoints (and those of older diffedu) keep their config only in the JSON."""
    model = UNet(CONFIG)
    save_file({f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "old.safetensors"))
    (tmp_path / "old.json").write_text(
        json.dumps({"format": checkpoint.FORMAT, "kind": "unet", "config": CONFIG.to_dict()})
    )
    assert torch.equal(checkpoint.load_model(tmp_path / "old").stem.weight, model.stem.weight)
    (tmp_path / "old.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="old.json holds no valid JSON"):
        checkpoint.load_model(tmp_path / "old")
    (tmp_path / "old.json").unlink()
    with pytest.raises(CheckpointError, match="holds no config"):
        checkpoint.load_model(tmp_path / "old")


def test_mismatched_checkpoint_names_the_disagreement(tmp_path):
    path = checkpoint.save_model(tmp_path / "m", UNet(CONFIG))
    bigger = UNet(UNetConfig(**{**CONFIG.to_dict(), "channels": 16}))
    with pytest.raises(CheckpointError, match="wrong shape"):
        checkpoint.load_weights(bigger, checkpoint.with_prefix(checkpoint.load(path)[0], "model"), str(path))
    tensors, meta = checkpoint.load(path)
    checkpoint.save(path, tensors, {**meta, "kind": "transformer"})
    with pytest.raises(CheckpointError, match="knows"):
        checkpoint.load_model(path)
