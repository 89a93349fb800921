"""Nothing lost: trained work survives overwrites, odd names, Ctrl-C, crashes and moves between folders.

Each test reproduces one way the command line or the API used to lose a model, and holds the fix to it.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from diffedu import checkpoint, cli, distributed, env, evaluation
from diffedu.nets import UNet, UNetConfig
from diffedu.schedules import Schedule
from diffedu.training import Trainer, eps_loss

SMOKE = ["--profile", "smoke"]


def train(tiny_cifar, out, *extra) -> int:
    return cli.main(["train", *SMOKE, "--data", str(tiny_cifar), "--out", str(out), "--steps", "2", *extra])


def weights_of(path) -> bytes:
    return checkpoint.paths(path)[0].read_bytes()


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".partial", ".probe"))]


# 1. An existing model is never replaced without being asked.
def test_train_refuses_to_overwrite_a_model(tiny_cifar, tmp_path, capsys):
    out = tmp_path / "run" / "model"
    assert train(tiny_cifar, out, "--steps", "3") == 0
    before = weights_of(out)
    assert train(tiny_cifar, out) == 2
    err = capsys.readouterr().err
    assert "already holds a model (3 steps)" in err and "--resume" in err and "--force" in err
    assert weights_of(out) == before
    assert train(tiny_cifar, out, "--resume") == 0 and checkpoint.read_meta(out)["step"] == 5
    assert train(tiny_cifar, out, "--force") == 0 and checkpoint.read_meta(out)["step"] == 2


# 2. A recipe of another kind is refused before anything is built or written.
@pytest.mark.parametrize("kind, recipe", [("latent", "ddpm-cifar10"), ("vae", "ddpm-cifar10"), ("ddpm", "vae-cifar10")])
def test_a_recipe_of_another_kind_is_refused_first(kind, recipe, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", kind, "--recipe", recipe, "--data", str(tmp_path / "none")]) == 2
    assert f"not a {kind} one" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, no checkpoint


def test_a_recipe_knows_its_kind(tiny_cifar, tmp_path):
    """`train --recipe vae-cifar10` with no kind used to build a UNet, train 0 steps and overwrite runs/ddpm/model."""
    out = tmp_path / "vae"
    assert (
        cli.main(
            [
                "train",
                "--recipe",
                "vae-cifar10",
                "--steps",
                "1",
                "--batch-size",
                "4",
                "--data",
                str(tiny_cifar),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    meta = checkpoint.read_meta(out)
    assert meta["kind"] == "vae" and meta["recipe"] == "vae-cifar10" and meta["step"] == 1
    assert meta["config"]["scale_factor"] != 1.0  # measured when the VAE finished


# 3. A dot in a name is part of the name.
def test_a_dot_in_the_name_does_not_reach_another_model(tmp_path):
    model = UNet(
        UNetConfig(in_channels=1, image_size=8, channels=8, channel_mult=(1,), num_res_blocks=1, attn_resolutions=())
    )
    checkpoint.save_model(tmp_path / "model", model, step=1)
    checkpoint.save_model(tmp_path / "model.v2", model, step=2)
    checkpoint.save_model(tmp_path / "lr0.001", model, step=3)
    assert checkpoint.read_meta(tmp_path / "model")["step"] == 1
    assert checkpoint.read_meta(tmp_path / "model.v2")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lr0.001.json",
        "lr0.001.safetensors",
        "model.json",
        "model.safetensors",
        "model.v2.json",
        "model.v2.safetensors",
    ]
    assert checkpoint.paths(tmp_path / "model.v2.safetensors") == checkpoint.paths(tmp_path / "model.v2")


# 4. Ctrl-C saves every finished step, and the loss history survives resuming.
def batches_then(n, stop):
    """Batches for a tiny UNet; the (n+1)-th request raises `stop` (KeyboardInterrupt: a Ctrl-C)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        yield torch.randn(4, 1, 8, 8, generator=g)
    raise stop


def tiny_trainer():
    torch.manual_seed(0)
    net = UNet(
        UNetConfig(in_channels=1, image_size=8, channels=8, channel_mult=(1,), num_res_blocks=1, attn_resolutions=())
    )
    return Trainer(net, partial(eps_loss, schedule=Schedule.linear()), device="cpu", meta={"schedule": "linear"})


def test_ctrl_c_in_fit_saves_every_finished_step(tmp_path):
    trainer = tiny_trainer()
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(
            batches_then(7, KeyboardInterrupt), 100, save_to=tmp_path / "run", save_every=5, log_every=3, progress=False
        )
    meta = checkpoint.read_meta(tmp_path / "run")
    assert meta["step"] == 7 and len(meta["history"]) == 7 and meta["seconds"] > 0
    resumed = tiny_trainer().load(tmp_path / "run")
    resumed.fit(
        batches_then(4, KeyboardInterrupt), 4, save_to=tmp_path / "run", save_every=3, log_every=10, progress=False
    )
    meta = checkpoint.read_meta(tmp_path / "run")
    assert meta["step"] == 11 and meta["history"] == resumed.history and len(resumed.history) == 11


def test_a_periodic_save_holds_the_whole_history(tmp_path):
    """A crash (not Ctrl-C) saves nothing: what is on disk is the periodic save at step 5, with 5 losses."""
    with pytest.raises(RuntimeError):
        tiny_trainer().fit(
            batches_then(7, RuntimeError("a crash")),
            100,
            save_to=tmp_path / "run",
            save_every=5,
            log_every=4,
            progress=False,
        )
    meta = checkpoint.read_meta(tmp_path / "run")
    assert meta["step"] == 5 and len(meta["history"]) == 5


def test_ctrl_c_while_python_imports_the_command_is_one_line():
    """The first seconds of `python -m diffedu` import torch; Ctrl-C there used to print a long traceback."""
    interrupt_the_import = textwrap.dedent("""
        import runpy, sys
        class Interrupt:  # Ctrl-C arriving while diffedu.cli (and torch under it) is imported
            def find_spec(self, name, path=None, target=None):
                if name == "diffedu.cli":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
        sys.argv = ["diffedu", "--help"]
        runpy.run_module("diffedu", run_name="__main__")
    """)
    done = subprocess.run(
        [sys.executable, "-c", interrupt_the_import],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 130 and done.stderr.strip() == "interrupted", done.stderr


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGHUP"])  # Ctrl-C, a scheduler's stop, a closed terminal
def test_a_stop_during_the_command_saves_and_says_how_to_resume(stop, tiny_cifar, tmp_path, request):
    out = tmp_path / "run" / "model"
    command = [
        sys.executable,
        "-m",
        "diffedu",
        "train",
        *SMOKE,
        "--data",
        str(tiny_cifar),
        "--out",
        str(out),
        "--steps",
        "1000000",
        "--save-every",
        "0",
        "--device",
        "cpu",
    ]
    # as from a terminal: the stop signals at their defaults (a shell's background job inherits SIGINT ignored, a
    # job under nohup SIGHUP, and a run honours what it was told to ignore)
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: [signal.signal(signum, signal.SIG_DFL) for signum in distributed.STOP_SIGNALS],
    )
    request.addfinalizer(child.kill)  # never leave a training running, whatever fails below
    assert "steps 0 -> 1000000" in child.stdout.readline()  # printed just before training starts
    said = []  # the progress bar, read as it comes: wait for a finished step, however busy the machine
    reader = threading.Thread(target=lambda: said.extend(iter(lambda: child.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not re.search(r" [1-9]\d*/1000000", "".join(said)) and time.monotonic() < deadline:
        time.sleep(0.2)
    child.send_signal(getattr(signal, stop))
    child.wait(timeout=60)
    reader.join(timeout=30)  # it has read everything up to the end
    err = "".join(said)
    assert child.returncode == 130, err
    meta = checkpoint.read_meta(out)
    assert meta["step"] > 0 and len(meta["history"]) == meta["step"]
    assert f"interrupted: saved {meta['step']} steps" in err and "--resume" in err
    assert leftovers(tmp_path) == []
    assert cli.main(["train", "--data", str(tiny_cifar), "--out", str(out), "--resume", "--steps", "2"]) == 0
    assert checkpoint.read_meta(out)["step"] == meta["step"] + 2


# 5. The weights and their config are saved atomically: a kill at any moment leaves a matching pair.
SAVER = textwrap.dedent("""
    import sys, torch
    from diffedu import checkpoint
    path = sys.argv[1]
    for step in range(1, 10_000):  # each save: every tensor holds the step number, and so does the config
        checkpoint.save(path, {f"w{i}": torch.full((512, 1024), float(step)) for i in range(8)}, {"step": step})
        print(step, flush=True)
""")


def test_a_checkpoint_killed_while_saving_is_the_old_or_the_new_one_never_a_mix(tmp_path):
    path, rng = tmp_path / "ckpt", random.Random(0)
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    steps = []
    for _ in range(6):
        child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
        child.stdout.readline()  # one save done: the kill falls somewhere in the saves after it
        time.sleep(rng.uniform(0.0, 0.5))
        child.kill()
        child.wait()
        meta = checkpoint.read_meta(path)
        tensors = load_file(str(checkpoint.paths(path)[0]))
        assert all(torch.all(t == meta["step"]) for t in tensors.values()), "weights of one save, config of another"
        steps.append(meta["step"])
    assert len(set(steps)) > 1  # the kills fell at different moments
    checkpoint.save(path, {"w": torch.zeros(1)}, {"step": 0})  # the next save clears what a kill left behind
    assert leftovers(tmp_path) == []


def test_an_interrupted_save_leaves_no_partial_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        Path(args[1]).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path / "m", {"w": torch.zeros(1)}, {})
    assert list(tmp_path.iterdir()) == []


# 6. An output that cannot be written is found before training, not after.
def test_an_unwritable_out_is_refused_before_training(tiny_cifar, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    assert train(tiny_cifar, tmp_path / "a_file" / "model") == 2
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused_before_training(tiny_cifar, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert train(tiny_cifar, locked / "model") == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


# 7. A latent run keeps the VAE it learned, by a reference that resolves from anywhere.
def test_a_latent_run_keeps_its_vae(tiny_cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFEDU_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    common = [*SMOKE, "--data", str(tiny_cifar), "--steps", "2"]
    assert cli.main(["train", "vae", *common, "--out", "vaes/a"]) == 0
    assert cli.main(["train", "vae", *common, "--out", "vaes/b", "--seed", "1"]) == 0
    assert cli.main(["train", "latent", *common, "--vae", "vaes/a", "--out", "latent"]) == 0  # a relative path
    assert checkpoint.read_meta("latent")["vae"] == str((tmp_path / "vaes" / "a").resolve())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # sampling from another folder finds the VAE
    assert cli.main(["sample", "--ckpt", str(tmp_path / "latent"), "--steps", "2", "--samples", "2"]) == 0
    monkeypatch.chdir(tmp_path)

    assert cli.main(["train", "latent", *common, "--out", "latent", "--resume", "--vae", "vaes/b"]) == 2
    assert "would mix two latent spaces" in capsys.readouterr().err
    assert cli.main(["train", "latent", *common, "--out", "latent", "--resume"]) == 0  # keeps vaes/a, without --vae
    assert checkpoint.read_meta("latent")["step"] == 4

    assert cli.main(["train", "vae", *common, "--out", "vaes/a", "--force", "--seed", "2"]) == 0  # replace the VAE
    capsys.readouterr()
    assert cli.main(["sample", "--ckpt", "latent", "--steps", "2", "--samples", "2"]) == 2
    assert "has changed since" in capsys.readouterr().err
    assert cli.main(["train", "latent", *common, "--out", "latent", "--resume"]) == 2
    assert "has changed since" in capsys.readouterr().err


# 7. What a tool writes over: only what it recognisably wrote itself, anything else only with --force.
def sample(out, *extra) -> list[str]:
    return [
        "sample",
        "--ckpt",
        "ddpm-cifar10",
        "--samples",
        "1",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


def test_sample_replaces_its_own_images_and_nobody_elses(tmp_path, capsys):
    photo, ours = tmp_path / "photo.png", tmp_path / "samples.png"
    Image.new("RGB", (4, 4), "red").save(photo)
    assert cli.main(sample(photo)) == 2 and "diffedu did not write" in capsys.readouterr().err
    assert Image.open(photo).getpixel((0, 0)) == (255, 0, 0)
    assert cli.main(sample(ours)) == 0 and cli.main(sample(ours)) == 0  # its own: replaced without asking
    assert cli.main(sample(photo, "--force")) == 0
    assert "replaced" in capsys.readouterr().out and Image.open(photo).size != (4, 4)


def test_sample_never_writes_through_a_link_into_another_folder(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere" / "photo.png"
    elsewhere.parent.mkdir()
    Image.new("RGB", (4, 4), "red").save(elsewhere)
    link = tmp_path / "link.png"
    link.symlink_to(elsewhere)
    assert cli.main(sample(link)) == 2 and "is a link to" in capsys.readouterr().err
    assert cli.main(sample(link, "--force")) == 0
    assert not link.is_symlink() and Image.open(elsewhere).size == (4, 4)  # the link was replaced, not its target


@pytest.mark.parametrize(
    "command",
    [
        ["guidance", "--ckpt", "ldm-cifar10-cond"],
        ["bench", "--profile", "smoke", "--quick"],
        ["quality"],
    ],
)
def test_a_result_file_replaces_only_a_result_of_its_own(command, tiny_cifar, tmp_path, capsys):
    notebook = tmp_path / "lesson.ipynb"
    notebook.write_text('{"cells": [], "nbformat": 4}')
    assert cli.main([*command, "--data", str(tiny_cifar), "--out", str(notebook)]) == 2
    assert "diffedu did not write" in capsys.readouterr().err and notebook.read_text().startswith('{"cells"')


@pytest.mark.parametrize("name", ["settings.json", "runs/x"])
def test_train_never_replaces_a_json_that_is_not_a_checkpoints_config(name, tiny_cifar, tmp_path, capsys):
    settings = checkpoint.paths(tmp_path / name)[1]
    settings.parent.mkdir(exist_ok=True)
    settings.write_text('{"theme": "dark"}')
    assert train(tiny_cifar, tmp_path / name) == 2 and "diffedu did not write" in capsys.readouterr().err
    assert settings.read_text() == '{"theme": "dark"}' and not checkpoint.exists(tmp_path / name)
    assert train(tiny_cifar, tmp_path / name, "--force") == 0 and "replaced" in capsys.readouterr().out


def test_retrain_keeps_a_card_someone_edited(tiny_cifar, tmp_path, capsys):
    retrain = ["retrain", "smoke-ddpm", "--data", str(tiny_cifar), "--device", "cpu", "--runs", str(tmp_path)]
    more = ["train", "--out", str(tmp_path / "smoke-ddpm"), "--resume", "--steps", "1", "--data", str(tiny_cifar)]
    card = tmp_path / "shipped" / "smoke-ddpm.md"
    assert cli.main(retrain) == 0
    first = card.read_text()
    assert cli.main(more) == 0 and cli.main(retrain) == 0  # its own draft: updated (the training time in it)
    assert card.read_text() != first and not card.with_name("smoke-ddpm.draft.md").exists()
    edited = card.read_text() + "\nMeasured by hand: FID 300.\n"
    card.write_text(edited)
    assert cli.main(more) == 0 and cli.main(retrain) == 0
    assert card.read_text() == edited and card.with_name("smoke-ddpm.draft.md").read_text() not in (edited, first)
    assert "is kept" in capsys.readouterr().out


def test_a_quality_table_is_never_measured_over_at_another_count(tiny_cifar, tmp_path, capsys, monkeypatch):
    table = tmp_path / "quality.json"
    rows = {"real test images": {"fid": 1.0, "kid": 0.001}}
    text = json.dumps(
        {"format": evaluation.FORMAT, "samples": 4, "reference": "all 40 CIFAR-10 training images", "rows": rows}
    )
    table.write_text(text)
    monkeypatch.setattr(evaluation, "quality_row_images", lambda *a, **k: pytest.fail("measured before refusing"))
    argv = ["quality", "--out", str(table), "--data", str(tiny_cifar), "--rows", "real test images", "DDIM 50"]
    assert cli.main([*argv, "--samples", "6"]) == 2
    assert "holds 1 rows measured at 4 images" in capsys.readouterr().err and table.read_text() == text


# 8. One run per output: a second run on the same --out is refused while the first trains.
def test_a_second_run_on_the_same_out_is_refused_at_once(tiny_cifar, tmp_path, capsys):
    out = tmp_path / "model"
    with env.held(out):  # a run training into out (flock, as another process would hold it)
        assert train(tiny_cifar, out, "--force") == 2
    assert f"(process {os.getpid()} on" in capsys.readouterr().err and not checkpoint.exists(out)
    Path(f"{out}.lock").write_text("12345 on a crashed machine")  # a lock file left behind holds nothing
    assert train(tiny_cifar, out) == 0 and not Path(f"{out}.lock").exists()


# 8b. A run's lock never touches a file it did not make: `--out poetry` beside one's poetry.lock, or a lock that is a
# link to a file elsewhere.
def test_a_runs_lock_leaves_other_files_alone(tiny_cifar, tmp_path, capsys):
    mine = tmp_path / "poetry.lock"
    mine.write_text("[[package]]\nname = 'numpy'\n")
    assert train(tiny_cifar, tmp_path / "poetry") == 2
    assert "poetry.lock is not a lock of diffedu's" in capsys.readouterr().err
    assert mine.read_text() == "[[package]]\nname = 'numpy'\n" and not checkpoint.exists(tmp_path / "poetry")
    elsewhere = tmp_path / "notes.txt"
    elsewhere.write_text("my notes")
    (tmp_path / "m.lock").symlink_to(elsewhere)
    assert train(tiny_cifar, tmp_path / "m") == 2
    assert "m.lock is a link" in capsys.readouterr().err
    assert elsewhere.read_text() == "my notes" and (tmp_path / "m.lock").is_symlink()


# 8c. Two writers of one file: each writes its own temporary file, and a second `sample` onto the same --out is
# refused while the first holds it.
def test_two_writers_never_share_a_temporary_file_and_a_second_sample_is_refused(tmp_path, capsys):
    target, seen = tmp_path / "grid.png", []
    for _ in range(2):
        env.write_whole(target, lambda partial: (seen.append(partial.name), partial.write_bytes(b"x")))
    assert len(set(seen)) == 2 and target.read_bytes() == b"x" and not leftovers(tmp_path)
    with env.held(target, "sample"):  # a first `sample` writing grid.png
        assert (
            cli.main(["sample", "--ckpt", "ddpm-cifar10", "--steps", "1", "--samples", "1", "--out", str(target)]) == 2
        )
    assert "another sample (process" in capsys.readouterr().err and target.read_bytes() == b"x"


# 8d. No false refusals: a long --out whose checkpoint names fit, a seed only torch draws from, and files the class
# can read (safetensors writes 0600; what the tools write gets the mode the user's umask gives).
def test_a_long_name_a_large_seed_and_readable_files_are_fine(tiny_cifar, tmp_path, capsys):
    out = tmp_path / ("m" * 235)  # its .safetensors is 247 characters long: it fits
    assert train(tiny_cifar, out) == 0 and checkpoint.exists(out)
    mask = os.umask(0)
    os.umask(mask)
    for file in checkpoint.paths(out):
        assert file.stat().st_mode & 0o777 == 0o666 & ~mask, file.name
    assert train(tiny_cifar, tmp_path / ("m" * 250)) == 2  # its .safetensors would be 262 characters long
    assert "longer than this folder allows" in capsys.readouterr().err
    grid = tmp_path / "grid.png"
    argv = ["sample", "--ckpt", "ddpm-cifar10", "--steps", "1", "--samples", "1", "--seed", str(2**32), "--out"]
    assert cli.main([*argv, str(grid)]) == 0 and grid.stat().st_mode & 0o777 == 0o666 & ~mask
