"""Bad input gets a clear error that says what to do: from the command line one `error:` line and exit
code 2, from the API a DiffeduError (a ValueError). Nothing hangs, nothing is silently wrong."""

import pickle

import numpy as np
import pytest
import torch
from conftest import write_batch

from diffedu import checkpoint, cli, data, env, pretrained, runs
from diffedu.errors import CheckpointError, DataError, DiffeduError
from diffedu.nets import UNet, UNetConfig
from diffedu.oracles import GaussianDenoiser
from diffedu.pipelines import load_pipeline
from diffedu.samplers import DDIMScheduler, DDPMScheduler, make_scheduler, sample_trajectory
from diffedu.schedules import Schedule
from diffedu.vae import VAE, VAEConfig
from diffedu.widgets import noising_widget, trajectory_widget


def fails(argv, capsys) -> str:
    """Run the command line; it must fail with exit code 2 and say why on stderr, without a traceback."""
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse's own checks
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "Traceback" not in err, err
    return err


# ---- numbers on the command line ---------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--batch-size", "-4"],  # used to hang forever
        ["train", "--batch-size", "0"],
        ["train", "--steps", "0"],
        ["train", "--steps", "many"],
        ["train", "--lr", "-1"],
        ["sample", "--ckpt", "ddpm-cifar10", "--samples", "0"],
        ["sample", "--ckpt", "ddpm-cifar10", "--steps", "0"],
        ["fid", "--samples", "0"],
        ["fid", "--batch-size", "0"],
        ["bench", "--repeats", "0"],
    ],
)
def test_zero_negative_and_non_numbers_are_refused(argv, capsys):
    err = fails(argv, capsys)
    assert "must be a whole number of at least" in err or "must be a positive number" in err


def test_a_step_count_beyond_the_schedule_or_a_bad_eta_is_one_line(tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert "between 1 and T=1000" in fails(
        ["sample", "--ckpt", "ddpm-cifar10", "--steps", "5000", "--out", out], capsys
    )
    assert "eta must be in [0, 1]" in fails(["sample", "--ckpt", "ddpm-cifar10", "--eta", "2", "--out", out], capsys)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["sample", "--ckpt", "ddpm-cifar10", "--out", "samples.txt"],
            "is not an image file name",
        ),  # failed after sampling
        (["sample", "--ckpt", "ddpm-cifar10", "--out", "."], "is a folder: name the image in it"),
        (["sample", "--ckpt", "ddpm-cifar10", "--eta", "nan"], "must be a finite number"),
        (["sample", "--ckpt", "ldm-cifar10-cond", "--class", "horse", "--guidance", "inf"], "must be a finite number"),
        (
            ["guidance", "--ckpt", "ldm-cifar10-cond", "--scales", "1", "nan"],
            "must be a finite number",
        ),  # failed after minutes
    ],
)
def test_what_would_fail_after_the_work_is_refused_before_it(argv, message, capsys):
    assert message in fails(argv, capsys)


def test_a_bench_step_count_beyond_the_schedule_fails_before_any_timing(tmp_path, capsys, monkeypatch):
    from diffedu import bench

    monkeypatch.setattr(bench, "time_sampler", lambda *a: pytest.fail("timing began"))
    err = fails(["bench", "--profile", "smoke", "--ddim-steps", "5000", "--out", str(tmp_path / "b.json")], capsys)
    assert "between 1 and T=" in err


def test_profile_and_recipe_together_are_refused(capsys):
    assert "not allowed with argument" in fails(["train", "--profile", "cpu", "--recipe", "ddpm-cifar10"], capsys)


@pytest.mark.parametrize("device, message", [("banana", "unknown device 'banana'"), ("cuda", "no CUDA GPU")])
def test_a_device_that_is_not_there_is_one_line(device, message, tmp_path, capsys):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert message in fails(
        ["sample", "--ckpt", "ddpm-cifar10", "--device", device, "--out", str(tmp_path / "x.png")], capsys
    )
    with pytest.raises(DiffeduError, match=message):
        env.get_device(device)


# ---- data files --------------------------------------------------------------------


def cifar_with(tmp_path, **replace):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    write_batch(folder, "data_batch_1", 6, **replace)
    return tmp_path


@pytest.mark.parametrize(
    "replace, message",
    [
        (
            {"data": np.random.rand(6, 3072)},
            "'data' must be uint8 of shape \\(N, 3072\\).*float64",
        ),  # pixels in [0, 1]: used to load all black
        ({"data": np.zeros((6, 3072), np.int16)}, "'data' must be uint8.*int16"),
        (
            {"data": np.zeros((6, 32, 32, 3), np.uint8)},
            "'data' must be uint8 of shape \\(N, 3072\\).*\\(6, 32, 32, 3\\)",
        ),  # HWC
        ({"labels": [0, 1, 2]}, "'labels' must be a list of 6 whole numbers in 0..9.*got list of 3"),
        ({"labels": [0, 1, 2, 3, 4, 10]}, "'labels' must be a list of 6 whole numbers in 0..9"),
        ({"labels": ["cat"] * 6}, "'labels' must be a list of 6 whole numbers"),
        ({"labels": [[0, 1], [2]] * 3}, "'labels' must be a list of 6 whole numbers"),  # ragged: used to trace back
        ({"labels": [10**100] * 6}, "'labels' must be a list of 6 whole numbers"),
        ({"labels": [1.5] * 6}, "'labels' must be a list of 6 whole numbers"),
        ({"labels": 3}, "'labels' must be a list of 6 whole numbers.*got int"),
    ],
)
def test_malformed_batch_files_are_refused_by_name(replace, message, tmp_path):
    root = cifar_with(tmp_path, **replace)
    with pytest.raises(DataError, match=f"data_batch_1: {message}"):
        data.load_cifar10(root)


def test_a_batch_written_with_a_newer_pickle_protocol_is_read(tmp_path):
    batch = write_batch(cifar_with(tmp_path) / "cifar-10-batches-py", "data_batch_1", 6)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=5))
    assert data.load_cifar10(tmp_path).labels.tolist() == batch["labels"]


def test_a_missing_test_batch_does_not_block_training(tmp_path, monkeypatch):
    monkeypatch.delenv("DIFFEDU_DATA", raising=False)
    root = cifar_with(tmp_path)
    assert len(data.load_cifar10(root)) == 6
    with pytest.raises(FileNotFoundError, match="test_batch"):
        data.load_cifar10(root, train=False)


def test_a_damaged_batch_file_is_named(tmp_path):
    root = cifar_with(tmp_path)
    path = root / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="data_batch_1 could not be read"):
        data.load_cifar10(root)


# ---- models of the wrong kind or shape ---------------------------------------------


def test_sampling_a_vae_or_decoding_with_a_unet_says_what_fits(tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert "is a VAE, not a diffusion model" in fails(["sample", "--ckpt", "vae-cifar10", "--out", out], capsys)
    err = fails(["sample", "--ckpt", "ldm-cifar10", "--vae", "ddpm-cifar10", "--out", out], capsys)
    assert "ddpm-cifar10 holds a unet model, not a VAE" in err


def test_a_vae_of_the_wrong_shape_is_refused(tmp_path):
    other = checkpoint.save_model(tmp_path / "vae8", VAE(VAEConfig(channels=8, latent_channels=8)))
    with pytest.raises(DiffeduError, match="the UNet takes 4x8x8 inputs but the VAE's latents are 8x8x8"):
        load_pipeline("ldm-cifar10", "cpu", vae=other)
    with pytest.raises(DiffeduError, match="ddpm-cifar10 is a pixel model: it makes images without a VAE"):
        load_pipeline("ddpm-cifar10", "cpu", vae=other)


def test_a_vae_whose_training_did_not_finish_is_refused_for_latents(tiny_cifar, tmp_path, capsys):
    vae = checkpoint.save_model(tmp_path / "vae", VAE(VAEConfig(channels=8)))  # its scale factor was never measured
    argv = [
        "train",
        "latent",
        "--profile",
        "smoke",
        "--data",
        str(tiny_cifar),
        "--vae",
        str(vae),
        "--out",
        str(tmp_path / "l"),
    ]
    err = fails(argv, capsys)
    assert "scale factor of the VAE" in err and "never measured" in err and "--resume" in err


SMALL = UNetConfig(in_channels=3, image_size=32, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"channels": 4096}, "does not fit this UNet.*wrong shape"),  # used to abort with std::bad_alloc
        ({"channels": -8}, "channels must be a positive whole number, got -8"),
        ({"channel_mult": []}, "channel_mult must be a non-empty tuple"),
        ({"dropout": 2}, "dropout must be in"),
        ({"image_size": 33}, "cannot be halved"),
        ({"colour": "blue"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_a_config_is_checked_before_a_model_is_built(change, message, tmp_path):
    path = checkpoint.save_model(tmp_path / "m", UNet(SMALL))
    tensors, meta = checkpoint.load(path)
    checkpoint.save(path, tensors, {**meta, "config": {**meta["config"], **change}})
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load_model(path)


@pytest.mark.parametrize("T", ["abc", -5, 0, 2.5, 10**12])
def test_a_schedule_in_a_config_is_checked(T, tmp_path, capsys):
    path = checkpoint.save_model(tmp_path / "m", UNet(SMALL), schedule="linear", T=T)
    with pytest.raises(
        CheckpointError, match="T, the number of diffusion steps, must be a whole number from 1 to 100,000"
    ):
        checkpoint.schedule_of(path)
    assert "must be a whole number from 1 to 100,000" in fails(
        ["sample", "--ckpt", str(path), "--out", str(tmp_path / "x.png")], capsys
    )


# ---- schedules, samplers and widgets -----------------------------------------------


def test_timesteps_outside_the_schedule_are_errors_not_wrap_arounds():
    schedule, x = Schedule.linear(), torch.zeros(2, 1, 4, 4)
    for t in (-1, 1000):
        with pytest.raises(DiffeduError, match="timesteps must be in 0..999"):
            schedule.q_sample(x, torch.tensor([t, 0]))
        with pytest.raises(DiffeduError, match="not one of this scheduler's 1000 timesteps"):
            DDPMScheduler(schedule).step(x, t, x)
    ddim = DDIMScheduler(schedule).set_timesteps(10)
    with pytest.raises(
        DiffeduError, match="t = 500 is not one of this scheduler's 10 timesteps \\(999, 888, 777, ..., 111, 0\\)"
    ):
        ddim.step(x, 500, x)
    with pytest.raises(DiffeduError, match="whole numbers"):
        schedule.q_sample(x, torch.tensor([0.5, 1.0]))


def test_an_empty_schedule_is_refused():
    with pytest.raises(DiffeduError, match="non-empty"):
        Schedule(torch.tensor([]))


def test_widgets_with_nothing_to_show_say_so():
    schedule = Schedule.linear()
    with pytest.raises(DiffeduError, match="2 frames"):
        noising_widget(torch.zeros(2, 3, 32, 32), schedule, frames=0)
    with pytest.raises(DiffeduError, match="at least 1 image"):
        noising_widget(torch.zeros(0, 3, 32, 32), schedule)
    traj = sample_trajectory(
        GaussianDenoiser(schedule, 0, 1),
        make_scheduler("ddim", schedule, 4),
        torch.zeros(2, 3, 32, 32),
        frames=2,
        progress=False,
    )
    with pytest.raises(DiffeduError, match="at least 1, got 0"):
        trajectory_widget(traj, n=0)
    with pytest.raises(DiffeduError, match="frames must be 0"):
        sample_trajectory(
            GaussianDenoiser(schedule, 0, 1), make_scheduler("ddim", schedule, 4), torch.zeros(2, 3, 32, 32), frames=-1
        )


def test_unknown_names_list_the_known_ones(capsys):
    with pytest.raises(DiffeduError, match="shipped: .*ddpm-cifar10"):
        pretrained.path("ddpm-imagenet")
    assert "invalid choice" in fails(["train", "--recipe", "nope"], capsys)
    assert "invalid choice" in fails(["train", "--profile", "fast"], capsys)


# ---- the command line's last line of defence ----------------------------------------


def test_a_genuine_bug_keeps_its_traceback(monkeypatch):
    def bug(args):
        raise RuntimeError("a bug in diffedu")

    monkeypatch.setitem(cli.COMMANDS, "sample", bug)
    with pytest.raises(RuntimeError, match="a bug in diffedu"):
        cli.main(["sample", "--ckpt", "ddpm-cifar10"])


def test_expected_failures_are_one_error_line(monkeypatch, capsys):
    for error in (
        PermissionError(13, "Permission denied", "/root/x"),
        DataError("a bad file"),
        FloatingPointError("loss became nan"),
    ):

        def fail(args, error=error):
            raise error

        monkeypatch.setitem(cli.COMMANDS, "sample", fail)
        assert str(error) in fails(["sample", "--ckpt", "ddpm-cifar10"], capsys)


# ---- options that would be ignored, or cannot hold ----------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--ckpt", "ddpm-cifar10", "--seed", "-1"], "from 0 to 2^64 - 1"),  # sampling seeds torch alone
        (["sample", "--ckpt", "ddpm-cifar10", "--seed", str(2**64)], "from 0 to 2^64 - 1"),
        (["train", "--out", ""], "got an empty string"),  # used to train into the default folder
        (["train", "--data", " "], "got an empty string"),
        (["train", "--out", "."], "is a folder: name the checkpoint in it"),  # used to write beside it
        (["sample", "--ckpt", ""], "which model?"),
        (["sample", "--ckpt", "ddpm-cifar10", "--vae", "vae-cifar10"], "is a pixel model"),  # --vae was ignored
        (["sample", "--ckpt", "ddpm-cifar10", "--sampler", "ddpm", "--eta", "1"], "eta is DDIM's knob"),  # ignored
        (["sample", "--ckpt", "ddpm-cifar10", "--guidance", "3"], "give one too"),  # ignored
        (
            ["sample", "--ckpt", "ldm-cifar10-cond", "--class", "10"],
            "class 10 is not one of the 10 classes",
        ),  # "no label"
        (["sample", "--ckpt", "ddpm-cifar10", "--samples", "1000000000"], "must be at most 50,000"),  # out of memory
        (["fid", "--samples", "60000"], "must be at most 50,000"),
        (
            ["guidance", "--ckpt", "ldm-cifar10-cond", "--out", "."],
            "is a folder: name the file in it",
        ),  # failed after minutes
        (["bench", "--out", "/"], "is a folder: name the file in it"),
        (["train", "--out", "newrun/"], "is a folder"),  # used to write newrun.safetensors beside the folder
        (["train", "--out", "x" * 5000], "cannot be used as a path"),  # used to raise inside the argument parser
        (["train", "ddpm", "--vae", "vae-cifar10"], "a ddpm model has none"),  # the README promised this refusal
        (["sample", "--ckpt", "ddpm-cifar10", "--out", "grid.xbm"], "is not an image file name"),  # not RGB: after
        (["sample", "--ckpt", "ldm-cifar10-cond", "--class", "\u00b9"], "unknown class"),  # "¹".isdigit(), but no int
        (["fid", "--samples", "1"], "at least 2"),
        (["fid", "--reference", "1"], "at least 2"),  # refused after sampling
        (["quality", "--samples", "1"], "at least 2"),
        (["guidance", "--ckpt", "ldm-cifar10-cond", "--samples", "1"], "least 2"),
        (["bench", "--samples", "1"], "at least 2"),
        (["bench", "--reference", "1"], "at least 2"),  # after the timing
        (["train", "--processes", "3", "--profile", "smoke"], "does not split evenly over 3"),  # before they start
    ],
)
def test_ignored_or_impossible_options_are_refused_before_the_work(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("diffedu.samplers.sample_trajectory", lambda *a, **k: pytest.fail("sampling began"))
    assert message in fails(argv, capsys)


def test_fid_with_a_home_it_cannot_write_fails_before_sampling(capsys, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(env.HOME_ENV, str(tmp_path / "file" / "home"))  # a folder inside a file: never writable
    monkeypatch.setattr("diffedu.evaluation.sample_images", lambda *a, **k: pytest.fail("sampling began"))
    assert "cannot write" in fails(["fid", "--ckpt", "ddpm-cifar10", "--samples", "2"], capsys)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(steps=True), "steps must be a whole number"),
        (dict(steps=2.5), "steps must be a whole number"),
        (dict(lr=-1e-3), "lr must be more than 0"),
        (dict(lr=float("nan")), "lr must be one finite number"),
        (dict(minutes=-1), "minutes must be more than 0"),  # used to save a model of 0 steps
        (dict(seed=2**64), "seed must be below 2"),
        (dict(save_every=-1), "save_every must be at least 0"),
        (dict(out=""), "is not a checkpoint name"),
        (dict(out="newrun/"), "is not a checkpoint name"),
        (dict(kind="ddpm", vae="vae-cifar10"), "a ddpm model has none"),
    ],
)
def test_runs_train_checks_its_arguments_before_any_work(arguments, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DiffeduError, match=message):
        runs.train("smoke-ddpm" if "kind" not in arguments else None, **{"out": "m", "data_root": "none", **arguments})
    assert list(tmp_path.iterdir()) == []


def test_the_python_api_says_what_is_wrong_and_takes_numpy_and_torch_integers():
    pipe, cond = load_pipeline("ddpm-cifar10", "cpu"), load_pipeline("ldm-cifar10-cond", "cpu")
    for call, message in [
        (lambda: load_pipeline(""), "which model?"),
        (lambda: load_pipeline(None), "which model?"),
        (lambda: pipe.sample(2.5), "the number of images must be a whole number, got 2.5"),
        (lambda: pipe.sample(2, steps=2.0), "steps must be a whole number"),
        (lambda: pipe.sample(2, guidance="3"), "guidance must be a number"),
        (lambda: pipe.sample(2, guidance=3), "give classes too"),
        (lambda: pipe.sample(2, sampler="ddpm", eta=0.5), "eta is DDIM's knob"),
        (lambda: cond.sample(2, classes=10), "class 10 is not one of the 10 classes"),
        (lambda: cond.sample(2, classes=-1), "a class index must be at least 0"),
        (lambda: cond.sample(2, classes=2.5), "classes must be a class name or index"),
        (lambda: cond.sample(2, classes=[1, 2, 3]), "one per image, not 3"),
    ]:
        with pytest.raises(DiffeduError, match=message):
            call()
    assert pipe.sample(np.int64(1), steps=torch.tensor(2), progress=False).shape == (1, 3, 32, 32)
    for classes in (np.array([1, 2]), torch.tensor([1, 2]), np.int64(3), torch.tensor(3), ["cat", 2]):
        assert cond.sample(2, steps=2, classes=classes, guidance=np.float32(2), progress=False).shape == (2, 3, 32, 32)


def test_weights_that_are_nan_are_refused_not_sampled_black(tmp_path):
    unet = UNet(SMALL)
    with torch.no_grad():
        next(unet.parameters()).fill_(float("nan"))
    checkpoint.save_model(tmp_path / "broken", unet)
    with pytest.raises(CheckpointError, match="holds NaN or infinite weights .* its training diverged"):
        load_pipeline(tmp_path / "broken", "cpu")


def test_a_full_disk_is_one_error_line_and_the_old_checkpoint_survives(tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    unet = UNet(SMALL)
    checkpoint.save_model(tmp_path / "model", unet)
    before = (tmp_path / "model.safetensors").read_bytes()

    def full(*args, **kwargs):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(OSError, match="No space left on device.*free some disk space"):
        checkpoint.save_model(tmp_path / "model", unet)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_a_quality_out_that_is_not_a_quality_table_is_refused_not_overwritten(tiny_cifar, tmp_path, capsys):
    notes = tmp_path / "notes.json"
    for text in ("my notes, not JSON", '{"a": "dict, but not a table"}'):
        notes.write_text(text)
        assert "diffedu did not write" in fails(["quality", "--out", str(notes), "--data", str(tiny_cifar)], capsys)
        assert notes.read_text() == text


# ---- options that would be accepted and then ignored -----------------------------------------------------------


@pytest.mark.parametrize(
    "argv, said",
    [
        (["bench", "--also", "DDIM 5, L1 decoder"], "no sampling method"),  # a pixel row has no decoder to swap
        (["bench", "--also", "latent DDIM 5, L1 decoder"], "decodes with the profile's VAE"),
        (["guidance", "--ckpt", "ldm-cifar10-cond", "--scales", "1", "1"], "different guidance scales"),
        (["retrain", "ddpm-cifar10", "--runs", "R", "--export", "R"], "is the --runs folder"),
        (["train", "consistency", "--vae", "ddpm-cifar10"], "tunes a flow-matching model"),
        (["train", "consistency", "--cond"], "a consistency model takes no classes"),
        (["train", "clip", "--cond"], "a clip model takes no classes"),
    ],
)
def test_an_option_that_would_be_ignored_is_refused_before_any_work(argv, said, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert said in fails(argv, capsys)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing trained, timed or written
