import re
import shutil

import pytest
import torch

from diffedu import checkpoint, pretrained
from diffedu.checkpoint import CheckpointError
from diffedu.data import to_float
from diffedu.errors import DiffeduError
from diffedu.metrics import psnr
from diffedu.pipelines import Consistency, Diffusion, FlowMatching, LatentDiffusion, load_pipeline
from diffedu.recipes import get_recipe
from diffedu.samplers import DDIMScheduler, sample

SHIPPED = [
    "ddpm-cifar10",
    "fm-cifar10",
    "ect-cifar10",
    "ldm-cifar10",
    "ldm-cifar10-cond",
    "vae-cifar10",
    "vae-cifar10-gan",
]


@pytest.mark.parametrize("name", SHIPPED)
def test_each_checkpoint_ships_with_a_card_and_its_recipe(name):
    assert name in pretrained.available()
    card = pretrained.card(name)
    for fact in ("data", "recipe", "reproduce", "hardware"):
        assert fact in card
    assert "python -m diffedu fid" in card or "python -m diffedu guidance" in card, (
        "the card says how its scores were measured"
    )
    assert re.search(
        r"FID [0-9.]+ ± [0-9.]+, KID x 1000 [0-9.]+ ± [0-9.]+|\| w = 3 \| [0-9.]+ ± [0-9.]+ \| [0-9.]+ ± [0-9.]+", card
    ), "the card gives its measured FID and KID, each with its standard error"
    meta = checkpoint.read_meta(pretrained.path(name))
    recipe = get_recipe(name)
    assert meta["recipe"] == name and recipe.finished(meta)  # all its steps, or all its minutes
    assert {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["config"].items() if k in recipe.model
    } == recipe.model
    assert meta["kind"] == ("vae" if recipe.kind in ("vae", "decoder") else "unet") and meta.get("vae") == recipe.vae
    assert meta.get("objective") == {"flow": "flow", "consistency": "consistency"}.get(recipe.kind)  # loads as one


@pytest.mark.parametrize(
    "name, rows",
    [
        ("ddpm-cifar10", ["DDIM 100"]),
        ("fm-cifar10", ["flow Euler 10", "flow Heun 5"]),
        ("vae-cifar10", ["L1-decoder reconstructions"]),
        ("vae-cifar10-gan", ["VAE reconstructions of them"]),
        ("ldm-cifar10", ["latent DDIM 50", "latent DDIM 50, L1 decoder"]),
        ("ect-cifar10", ["consistency 1", "consistency 2", "consistency 4"]),
    ],
)
def test_each_card_cites_the_shipped_quality_table(name, rows):
    table, card = pretrained.quality_table()["rows"], pretrained.card(name)
    for row in [table[label] for label in [*rows, "real test images"]]:
        assert (
            f"FID {row['fid']:.2f} ± {row['fid_se']:.2f}, KID x 1000 {1000 * row['kid']:.2f} ± "
            f"{1000 * row['kid_se']:.2f}"
        ) in card


def test_the_latent_models_decode_with_the_adversarial_decoder_on_the_encoder_they_learned():
    from diffedu.latent import vae_fingerprint
    from diffedu.pipelines import load_vae

    l1, sharp = load_vae("vae-cifar10"), load_vae("vae-cifar10-gan")
    assert all(torch.equal(a, b) for a, b in zip(l1.encoder.state_dict().values(), sharp.encoder.state_dict().values()))
    assert l1.config == sharp.config  # the scale factor too
    for name in ("ldm-cifar10", "ldm-cifar10-cond"):
        meta = checkpoint.read_meta(pretrained.path(name))
        assert meta["vae"] == "vae-cifar10-gan" and meta["vae_fingerprint"] == vae_fingerprint(l1) == vae_fingerprint(
            sharp
        )


TEXT = ["clip-cifar10", "sd-cifar10"]  # Stable Diffusion in miniature (lesson 11): no FID of their own in the table


@pytest.mark.parametrize("name", TEXT)
def test_the_text_models_ship_with_a_card_and_their_recipe(name):
    card, meta, recipe = pretrained.card(name), checkpoint.read_meta(pretrained.path(name)), get_recipe(name)
    for fact in ("data", "recipe", "reproduce", "hardware"):
        assert fact in card
    assert meta["recipe"] == name and recipe.finished(meta) and meta["kind"] == ("clip" if name == TEXT[0] else "unet")
    if name == "sd-cifar10":  # it names what it reads and decodes with, and they are the shipped ones
        from diffedu.text import text_fingerprint

        clip = pretrained.load_clip(meta["text_encoder"])
        assert meta["text_encoder"] == recipe.text_encoder and meta["text_fingerprint"] == text_fingerprint(clip)
        assert meta["vae"] == recipe.vae and "python -m diffedu adherence" in card
        assert pretrained.adherence_table(name)["format"] == 1


def test_the_text_encoders_card_states_what_it_measures_on_the_test_images():
    from diffedu.adherence import text_encoder_scores
    from diffedu.data import load_cifar10

    test = load_cifar10(train=False)
    scores = text_encoder_scores(pretrained.load_clip("clip-cifar10"), test.images, test.labels)
    stated = re.search(
        r"zero-shot classification.*?([\d.]+)% ±.*?colour retrieval.*?([\d.]+)% ±", pretrained.card("clip-cifar10")
    )
    assert stated, "the card states its zero-shot and colour accuracies"
    for name, value in zip(("zero-shot", "colour"), stated.groups()):  # within a test image or so of the card's
        assert abs(100 * scores[name]["accuracy"] - float(value)) < 0.2, name


def test_shipped_checkpoints_fit_the_size_budget():
    total = sum(pretrained.path(n).with_suffix(".safetensors").stat().st_size for n in SHIPPED + TEXT)
    assert total < 40 * 2**20


@pytest.mark.parametrize(
    "name, kind",
    [
        ("ddpm-cifar10", Diffusion),
        ("ldm-cifar10", LatentDiffusion),
        ("fm-cifar10", FlowMatching),
        ("ect-cifar10", Consistency),
    ],
)
def test_shipped_pipelines_sample_images_in_range(name, kind):
    pipe = load_pipeline(name, "cpu")
    assert type(pipe) is kind and (pipe.schedule is None or pipe.schedule.name == "linear" and pipe.schedule.T == 1000)
    x = pipe.sample(2, steps=5, generator=torch.Generator().manual_seed(0), progress=False)
    assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1 and x.std() > 0.1


def test_a_pipeline_samples_what_the_sampling_loop_gives():
    pipe = load_pipeline("ddpm-cifar10", "cpu")
    x_T = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scheduler = DDIMScheduler(checkpoint.schedule_of(pretrained.path("ddpm-cifar10"))).set_timesteps(3)
    by_hand = sample(pipe.unet, scheduler, x_T, progress=False)
    assert torch.equal(pipe.sample(2, steps=3, generator=torch.Generator().manual_seed(0), progress=False), by_hand)


def test_shipped_vae_reconstructs_real_images(cifar_root):
    from diffedu.data import load_cifar10

    vae = pretrained.load("vae-cifar10")
    x = to_float(load_cifar10(cifar_root, train=False).images[:64])
    assert psnr(vae.reconstruct(x), x).mean() > 24  # the card says 27.1 dB on all 1,017


def test_the_conditional_model_ships_its_guidance_curve():
    curve = pretrained.guidance_curve("ldm-cifar10-cond")
    rows = curve["scales"]
    assert [r["guidance"] for r in rows.values()] == [0.0, 1.0, 3.0, 5.0] and curve["samples"] == 500
    assert rows["3.0"]["accuracy"] > 2 * rows["0.0"]["accuracy"]  # guidance makes the classes recognisable
    card = pretrained.card("ldm-cifar10-cond")  # the card cites the shipped curve, with its standard errors
    assert f"{rows['3.0']['fid']:.2f} ± {rows['3.0']['fid_se']:.2f}" in card
    assert f"{1000 * rows['3.0']['kid']:.2f} ± {1000 * rows['3.0']['kid_se']:.2f}" in card
    with pytest.raises(DiffeduError, match="ships no guidance curve"):
        pretrained.guidance_curve("ldm-cifar10")


def test_unknown_name_lists_what_is_shipped():
    with pytest.raises(DiffeduError, match="shipped: .*ddpm-cifar10"):
        pretrained.load("ddpm-imagenet")


def test_a_damaged_copy_is_a_clear_error(tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(pretrained.path("ddpm-cifar10").with_suffix(suffix), tmp_path / f"copy{suffix}")
    weights = tmp_path / "copy.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load_model(tmp_path / "copy")


def test_export_makes_a_half_size_checkpoint_that_samples_the_same(tmp_path, capsys):
    from safetensors.torch import load_file

    from diffedu import cli
    from diffedu.recipes import get_recipe

    trainer = get_recipe("smoke-ddpm").trainer("cpu")
    trainer.history = [0.5] * 60
    trainer.save(tmp_path / "run")
    out = tmp_path / "shipped"
    assert cli.main(["export", "--ckpt", str(tmp_path / "run"), "--out", str(out), "--hardware", "a test"]) == 0
    meta = checkpoint.read_meta(out)
    assert meta["recipe"] == "smoke-ddpm" and meta["hardware"] == "a test" and meta["final_loss"] == 0.5
    assert "optimizer" not in meta and "history" not in meta
    assert all(
        v.dtype == torch.float16 for v in load_file(str(checkpoint.paths(out)[0])).values() if v.is_floating_point()
    )
    exported, original = checkpoint.load_model(out), trainer.ema.model
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(exported(x, torch.tensor([5, 500])), original(x, torch.tensor([5, 500])), atol=1e-2)
    assert cli.main(["export", "--ckpt", str(tmp_path / "run"), "--out", str(out), "--hardware", "a test"]) == 2
    assert "--force" in capsys.readouterr().err
