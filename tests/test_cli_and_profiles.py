import pytest
import torch

from diffedu import checkpoint, cli
from diffedu.profiles import PROFILES, get_profile


def test_profiles_by_name_and_environment(monkeypatch):
    monkeypatch.setenv("DIFFEDU_PROFILE", "smoke")
    assert get_profile().name == "smoke" and get_profile("cpu").name == "cpu"
    monkeypatch.delenv("DIFFEDU_PROFILE")
    assert get_profile().name == ("gpu" if torch.cuda.is_available() else "cpu")


def test_unknown_profile_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("DIFFEDU_PROFILE", "fast")
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        get_profile()


def test_profiles_grow_from_smoke_to_gpu():
    for kind in ("ddpm", "vae", "latent"):
        sizes = [
            PROFILES[n].recipe(kind).model["channels"] * PROFILES[n].recipe(kind).steps for n in ("smoke", "cpu", "gpu")
        ]
        assert sizes == sorted(sizes)


def test_a_lesson_saves_its_model_in_the_home_and_prints_no_full_path(tmp_path, monkeypatch):
    """Not in runs/ beside the notebook, wherever it was opened from; and shown without this machine's folders."""
    from pathlib import Path

    from diffedu import env

    monkeypatch.setenv(env.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    run = get_profile("smoke").lesson_run("02_ddpm")
    assert run == tmp_path / "home" / "runs" / "02_ddpm_smoke" / "model"
    assert env.shown(Path.home() / "course" / "x") == "~/course/x" and env.shown("ddpm-cifar10") == "ddpm-cifar10"
    assert env.shown(Path(env.__file__).resolve().parent.parent / "data" / "runs") == "data/runs"


def test_cli_trains_resumes_and_samples(cifar_root, tmp_path, capsys):
    out = tmp_path / "run" / "model"
    assert cli.main(["train", "--profile", "smoke", "--steps", "4", "--data", str(cifar_root), "--out", str(out)]) == 0
    assert (
        cli.main(
            ["train", "--profile", "smoke", "--steps", "2", "--data", str(cifar_root), "--out", str(out), "--resume"]
        )
        == 0
    )
    assert checkpoint.read_meta(out)["step"] == 6
    png = tmp_path / "grid.png"
    assert (
        cli.main(
            ["sample", "--ckpt", str(out), "--sampler", "ddim", "--steps", "5", "--samples", "3", "--out", str(png)]
        )
        == 0
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "wrote 3 images (DDIM 5 steps, 5 model calls)" in capsys.readouterr().out
    assert (
        cli.main(
            ["sample", "--ckpt", str(out), "--sampler", "heun", "--steps", "4", "--samples", "2", "--out", str(png)]
        )
        == 0
    )
    assert "wrote 2 images (Heun 4 steps, 7 model calls)" in capsys.readouterr().out


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    assert cli.main(["sample", "--ckpt", str(tmp_path / "none")]) == 2
    assert "error: no checkpoint file" in capsys.readouterr().err
    assert cli.main(["train", "--profile", "smoke", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "was not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sample", "--ckpt", "x", "--sampler", "rk4"])


def test_cli_samples_the_flow_model_with_its_own_solvers(tmp_path, capsys):
    png = tmp_path / "grid.png"
    assert cli.main(["sample", "--ckpt", "fm-cifar10", "--steps", "2", "--samples", "2", "--out", str(png)]) == 0
    assert "wrote 2 images (flow Euler 2 steps, 2 model calls)" in capsys.readouterr().out
    assert (
        cli.main(
            ["sample", "--ckpt", "fm-cifar10", "--sampler", "heun", "--steps", "2", "--samples", "2", "--out", str(png)]
        )
        == 0
    )
    assert "(flow Heun 2 steps, 3 model calls)" in capsys.readouterr().out
    assert cli.main(["sample", "--ckpt", "fm-cifar10", "--sampler", "ddim", "--out", str(png)]) == 2
    assert "a flow-matching model takes no 'ddim' sampler" in capsys.readouterr().err


def test_cli_trains_a_vae_then_a_latent_model_and_samples_images(cifar_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIFFEDU_HOME", str(tmp_path / "data"))  # where the latent cache goes
    common = ["--profile", "smoke", "--steps", "3", "--data", str(cifar_root)]
    vae, latent = tmp_path / "vae" / "model", tmp_path / "latent" / "model"
    assert cli.main(["train", "vae", *common, "--out", str(vae)]) == 0
    assert checkpoint.read_meta(vae)["config"]["scale_factor"] != 1.0  # measured on the data after training
    assert cli.main(["train", "latent", *common, "--vae", str(vae), "--out", str(latent)]) == 0
    assert checkpoint.read_meta(latent)["vae"] == str(vae.resolve())  # absolute: it resolves from any folder
    # the training images' latents, and the held-out test images' its loss is watched on
    assert len(list((tmp_path / "data" / "latents").glob("*.safetensors"))) == 2
    png = tmp_path / "latent.png"
    assert cli.main(["sample", "--ckpt", str(latent), "--steps", "4", "--samples", "2", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and "wrote 2 images" in capsys.readouterr().out


def test_cli_latent_without_a_vae_says_how_to_make_one(cifar_root, tmp_path, capsys):
    args = ["train", "latent", "--profile", "smoke", "--data", str(cifar_root), "--vae", str(tmp_path / "none")]
    assert cli.main(args) == 2
    assert "python -m diffedu train" in capsys.readouterr().err


def test_cli_fid_scores_real_images_reconstructions_and_samples(cifar_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIFFEDU_HOME", str(tmp_path))  # the reference features are cached here
    common = ["--samples", "3", "--reference", "6", "--data", str(cifar_root), "--device", "cpu"]
    assert cli.main(["fid", *common]) == 0
    assert cli.main(["fid", "--ckpt", "vae-cifar10", *common]) == 0
    assert cli.main(["fid", "--ckpt", "ldm-cifar10", "--steps", "2", "--batch-size", "2", *common]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("real test images: 3 images, FID ")
    assert lines[1].startswith("vae-cifar10's reconstructions of test images: 3 images, FID ")
    assert lines[2].startswith("ldm-cifar10, DDIM 2 steps, 2 model calls: 3 images, FID ")
    assert all("against the first 6 training images" in line for line in lines)
    assert len(list((tmp_path / "fid").glob("*.safetensors"))) == 1  # one reference set, computed once


def test_every_recipe_knows_its_kind_and_builds_its_model():
    from diffedu.nets import UNet
    from diffedu.recipes import RECIPES
    from diffedu.text import CLIP
    from diffedu.vae import VAE

    diffusion = ("ddpm", "latent", "text")
    for recipe in RECIPES.values():
        model = (
            recipe.build("vae-cifar10") if recipe.kind == "decoder" else recipe.build()
        )  # a decoder starts from a VAE
        kind = CLIP if recipe.kind == "clip" else UNet if recipe.kind in (*diffusion, "flow", "consistency") else VAE
        assert isinstance(model, kind), recipe.name
        if recipe.kind in ("latent", "text"):
            assert (model.config.in_channels, model.config.image_size) == (4, 8)
        if recipe.kind == "text":  # it reads the token states of the text encoder it names
            assert model.config.context_dim == recipe.clip().config.width and not model.config.num_classes
        trainer = recipe.trainer("cpu", model)
        assert trainer.meta["recipe"] == recipe.name and ("schedule" in trainer.meta) == (recipe.kind in diffusion)
        objective = {"flow": "flow", "consistency": "consistency"}.get(recipe.kind)
        assert trainer.meta.get("objective") == objective  # a flow or consistency model has no schedule
        if isinstance(
            model, UNet
        ):  # a flow model's t is in [0, 1], embedded as 1000 t (a consistency model's: tuned from one)
            assert (model.config.time_scale == 1000) == (recipe.kind in ("flow", "consistency"))
    kinds = ("ddpm", "vae", "latent", "decoder", "consistency", "clip", "text")
    for profile in PROFILES.values():  # a profile names one lesson-sized recipe per kind, and sizes nothing else
        assert [profile.recipe(k).name for k in kinds] == [f"{profile.name}-{k}" for k in kinds]
    assert {"ddpm-cifar10", "vae-cifar10", "ldm-cifar10"} <= set(RECIPES)


def test_the_commands_share_their_flag_names():
    commands = next(a for a in cli.parser()._actions if a.dest == "command").choices
    dests = {name: {a.dest for a in command._actions} for name, command in commands.items()}
    assert {"samples", "batch_size"} <= dests["fid"] and {"samples", "batch_size"} <= dests["bench"]
    assert "samples" in dests["sample"] and "batch_size" in dests["train"]
    for name, names in dests.items():
        assert not names & {"n", "batch"}, f"{name}: the flags are --samples and --batch-size"
