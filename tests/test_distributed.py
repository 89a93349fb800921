"""Training under torchrun: N processes train as one does (diffedu.distributed).

The cheap tests pretend to be process r of 2 (distributed.RANK, WORLD); the others start torchrun for real,
2 processes talking over gloo on the CPU, as on a class's GPUs with NCCL.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from diffedu import checkpoint, cli, data, distributed
from diffedu.errors import DiffeduError
from diffedu.nets import Dropout
from diffedu.training import drop_labels

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "diffedu"]


DIFFEDU = [sys.executable, "-m", "diffedu"]


def as_process(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(distributed, "RANK", rank)
    monkeypatch.setattr(distributed, "WORLD", world)


# 1. Each process's per-image draws are its rows of what one process draws for the whole batch.
def per_image_draws(x: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [
        distributed.randn_like(x),
        distributed.rand_like(x),
        distributed.rand(len(x), 1, 1, 1),
        distributed.randint(1000, len(x)),
        drop_labels(labels, 10, 0.5),
        Dropout(0.5).train()(x + 1),
    ]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_each_process_draws_its_rows_of_one_process_draw(monkeypatch, layout):
    x, labels = torch.zeros(6, 3, 4, 4).contiguous(memory_format=layout), torch.arange(6)
    whole = per_image_draws(x, labels)
    for rank in range(2):
        as_process(monkeypatch, rank, 2)
        mine = slice(3 * rank, 3 * rank + 3)
        for part, one in zip(per_image_draws(x[mine], labels[mine]), whole):
            assert torch.equal(part, one[mine])
    assert not torch.equal(whole[0][:3], whole[0][3:])  # the processes' rows differ: not one draw repeated


def test_each_process_gets_its_rows_of_every_batch(monkeypatch):
    images, labels = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8), torch.arange(20)

    def first():
        return [next(stream) for stream in [data.batches(images, 6, labels=labels, seed=3)] for _ in range(5)]

    whole = first()  # 5 batches: across an epoch's end (3 per epoch), with their flips
    parts = []
    for rank in range(2):
        as_process(monkeypatch, rank, 2)
        parts.append(first())
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *parts):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_a_batch_that_does_not_split_is_refused(monkeypatch):
    as_process(monkeypatch, 0, 2)
    with pytest.raises(DiffeduError, match="a batch of 7 does not split evenly over 2 processes"):
        data.batches(torch.zeros(10, 4, 8, 8), 7)


# 2. The real thing: torchrun with 2 processes against one process, on every kind of training.
RELATIVE = {"weights": 1e-3, "optimizer": 1e-4}  # float rounding, amplified by Adam; one noise draw wrong: ~1e-2


def relative_differences(a: str, b: str) -> dict[str, float]:
    """||a - b|| / ||a|| over each part of two checkpoints (model, ema, optim, ...)."""
    (x, _), (y, _) = checkpoint.load(a), checkpoint.load(b)
    assert x.keys() == y.keys()
    sums: dict[str, list[float]] = {}
    for key in x:
        if x[key].is_floating_point():
            part = sums.setdefault(key.split(".")[0], [0.0, 0.0])
            part[0] += (x[key].double() - y[key].double()).square().sum().item()
            part[1] += x[key].double().square().sum().item()
    return {part: (d / s) ** 0.5 for part, (d, s) in sums.items()}


def test_two_processes_train_as_one_and_resume_on_one(tiny_cifar, tmp_path):
    names = ["smoke-vae", "smoke-decoder", "smoke-latent", "smoke-ddpm"]  # every trainer: VAE, decoder stage, UNets
    args = ["retrain", *names, "--data", str(tiny_cifar), "--device", "cpu", "--runs"]
    two = subprocess.run([*TORCHRUN, *args, str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-4000:]
    assert two.stdout.count("smoke-ddpm: exported") == 1  # printed by process 0 only
    assert cli.main([*args, str(tmp_path / "one")]) == 0
    for name in names:
        one_run, two_run = checkpoint.read_meta(tmp_path / "one" / name), checkpoint.read_meta(tmp_path / "two" / name)
        assert one_run["step"] == two_run["step"] and two_run["processes"] == 2
        assert torch.allclose(torch.tensor(one_run["history"]), torch.tensor(two_run["history"]), rtol=1e-5)
        for part, difference in relative_differences(tmp_path / "one" / name, tmp_path / "two" / name).items():
            assert difference < RELATIVE["optimizer" if "optim" in part else "weights"], (name, part, difference)
        assert "on 2 processes (torchrun)" in (tmp_path / "two" / "shipped" / f"{name}.md").read_text()
    # a run started on 2 processes resumes on 1, and goes on as the run that never left one process
    for runs in ("one", "two"):
        assert (
            cli.main(
                [
                    "train",
                    "--out",
                    str(tmp_path / runs / "smoke-ddpm"),
                    "--resume",
                    "--steps",
                    "3",
                    "--data",
                    str(tiny_cifar),
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
    assert checkpoint.read_meta(tmp_path / "two" / "smoke-ddpm")["step"] == 11
    assert max(relative_differences(tmp_path / "one" / "smoke-ddpm", tmp_path / "two" / "smoke-ddpm").values()) < 1e-3


# 3. Ctrl-C and a killed process.
def start_training(tiny_cifar, out, request, *extra, launcher=TORCHRUN) -> tuple[subprocess.Popen, list[str]]:
    """torchrun training smoke-ddpm for ever, in its own process group as from a terminal; and what it prints."""
    command = [
        *launcher,
        "train",
        "--recipe",
        "smoke-ddpm",
        "--data",
        str(tiny_cifar),
        "--out",
        str(out),
        "--steps",
        "1000000",
        "--device",
        "cpu",
        *extra,
    ]
    child = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # as from a terminal
    request.addfinalizer(lambda: child.poll() is None and os.killpg(child.pid, signal.SIGKILL))
    said: list[str] = []
    threading.Thread(target=lambda: said.extend(iter(lambda: child.stderr.read(1), "")), daemon=True).start()
    return child, said


def wait_for(condition, what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.2)


def test_ctrl_c_stops_every_process_at_one_step_saves_and_resumes_on_one(tiny_cifar, tmp_path, request):
    out = tmp_path / "model"  # started by --processes 2: torchrun's launcher, inside diffedu
    child, said = start_training(tiny_cifar, out, request, "--save-every", "0", "--processes", "2", launcher=DIFFEDU)
    wait_for(lambda: re.search(r" [1-9]\d*/1000000", "".join(said)), "a finished step")
    os.killpg(child.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the launcher and both processes
    child.wait(timeout=90)
    assert child.returncode == 130 and "Traceback" not in "".join(said), "".join(said)[-3000:]  # as on one process
    meta = checkpoint.read_meta(out)
    assert meta["step"] > 0 and len(meta["history"]) == meta["step"], "".join(said)[-3000:]
    assert "".join(said).count(f"interrupted: saved {meta['step']} steps") == 1  # said once, by process 0
    assert (
        cli.main(["train", "--data", str(tiny_cifar), "--out", str(out), "--resume", "--steps", "2", "--device", "cpu"])
        == 0
    )
    assert checkpoint.read_meta(out)["step"] == meta["step"] + 2


def test_a_killed_process_leaves_the_last_checkpoint_and_resuming_goes_on(tiny_cifar, tmp_path, request):
    out = tmp_path / "model"
    child, said = start_training(tiny_cifar, out, request, "--save-every", "2")
    wait_for(lambda: checkpoint.exists(out), "the first checkpoint")
    workers = [int(pid) for pid in Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()]
    writer = next(pid for pid in workers if b"\0RANK=0\0" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes())
    os.kill(writer, signal.SIGKILL)  # process 0, the one that writes: perhaps halfway through a save
    child.wait(timeout=120)
    assert child.returncode != 0
    meta = checkpoint.read_meta(out)
    assert meta["step"] >= 2 and meta["step"] % 2 == 0 and len(meta["history"]) == meta["step"]
    assert (
        cli.main(["train", "--data", str(tiny_cifar), "--out", str(out), "--resume", "--steps", "2", "--device", "cpu"])
        == 0
    )
    assert checkpoint.read_meta(out)["step"] == meta["step"] + 2


# 4. What a user sees is what one process shows: one `error:` line, exit code 2.
@pytest.mark.parametrize("launcher, extra", [(TORCHRUN, ["--device", "cuda"]), (DIFFEDU, ["--processes", "2"])])
def test_a_refusal_on_every_process_is_said_once(launcher, extra, tmp_path):
    command = [
        *launcher,
        "train",
        "--profile",
        "smoke",
        "--data",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path / "m"),
        "--device",
        "cpu",
        *extra,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    )
    assert len(re.findall(r"^error: ", done.stderr, re.MULTILINE)) == 1, done.stderr[-3000:]
    if launcher == DIFFEDU:  # (torchrun itself adds its ChildFailedError traceback)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]


def test_ctrl_c_before_set_up_is_said_by_process_0_alone(monkeypatch, capsys, tmp_path):
    """Under plain torchrun, Ctrl-C during start-up (before the processes join) used to be said by each process."""

    def stopped(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "sample", stopped)
    for rank, said in (("1", ""), ("0", "\ninterrupted\n")):
        monkeypatch.setenv("RANK", rank)
        assert cli.main(["sample", "--ckpt", "ddpm-cifar10", "--out", str(tmp_path / "x.png")]) == 130
        assert capsys.readouterr().err == said
    # and while `python -m diffedu` is still importing torch
    child = subprocess.Popen(
        [sys.executable, "-m", "diffedu", "--help"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RANK": "1"},
        start_new_session=True,
    )
    time.sleep(1.0)
    os.killpg(child.pid, signal.SIGINT)
    assert "interrupted" not in child.communicate(timeout=60)[1]
