"""The Trainer's speed options (foreach EMA, compile, channels-last, no per-step sync, deadlines) train the
same model as the plain loop, and `retrain` trains, resumes and exports the shipped recipes' pipeline."""

import copy
import time
from functools import partial

import pytest
import torch

from diffedu import checkpoint, data, runs
from diffedu.errors import CheckpointError, DiffeduError
from diffedu.evaluation import denoising_gap
from diffedu.latent import vae_fingerprint
from diffedu.nets import UNet, UNetConfig
from diffedu.pipelines import load_pipeline, load_vae
from diffedu.recipes import get_recipe
from diffedu.schedules import Schedule
from diffedu.training import EMA, Trainer, eps_loss

CONFIG = UNetConfig(
    in_channels=3, image_size=8, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0
)  # dropout draws its masks in memory order: another mask in NHWC


def batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randn(n, 3, 8, 8, generator=g)


def unet():
    """A tiny UNet whose output layer is not zero (as initialised), so that every weight gets a gradient."""
    torch.manual_seed(0)
    net = UNet(CONFIG)
    torch.nn.init.normal_(net.head[-1].weight, std=0.1)
    return net


def trainer(**options):
    return Trainer(unet(), partial(eps_loss, schedule=Schedule.linear()), lr=1e-3, device="cpu", **options)


def test_foreach_ema_equals_the_per_tensor_loop_exactly():
    torch.manual_seed(0)
    model = UNet(CONFIG)
    ema, reference = EMA(model), copy.deepcopy(model)
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model, step)
        decay = min(0.999, (1 + step) / (10 + step))
        for r, raw in zip(reference.state_dict().values(), model.state_dict().values()):
            r.lerp_(raw, 1 - decay)
    for a, b in zip(ema.model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


def deterministic_loss(model, x0):
    """The epsilon loss with t and the noise fixed by x0: the same numbers whatever the memory order
    (randn_like would fill an NHWC tensor in another order)."""
    t = torch.arange(len(x0)) * 200 + 50
    noise = torch.cos(3 * x0)
    return torch.nn.functional.mse_loss(model(Schedule.linear().q_sample(x0, t, noise), t), noise)


def test_channels_last_trains_the_same_model():
    plain = Trainer(unet(), deterministic_loss, lr=1e-3, device="cpu")
    nhwc = Trainer(unet(), deterministic_loss, lr=1e-3, device="cpu", channels_last=True)
    convs = [m.weight for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert_same_step(plain, nhwc)


def assert_same_step(a: Trainer, b: Trainer) -> None:
    """One step of each on the same batch: the same loss and the same gradients. (Not the weights after many
    steps: Adam moves a weight by about lr whatever the size of its gradient, so rounding in a near-zero
    gradient's sign grows into differences of lr.)"""
    batch = next(batches())
    torch.manual_seed(1)
    loss_a = a.train_step(batch)
    torch.manual_seed(1)
    loss_b = b.train_step(batch)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert p.grad.abs().max() > 0, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_compiled_step_trains_the_same_model(monkeypatch):
    # Inductor draws its own random numbers unless told to fall back to eager's; with them, the same steps.
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    plain, compiled = trainer(), trainer(compile="default")
    assert_same_step(plain, compiled)
    compiled.fit(batches(), 3, progress=False)
    assert compiled.step == 4 and len(compiled.history) == 3
    assert list(compiled.model.state_dict()) == list(plain.model.state_dict())  # checkpoints keep their names


def test_a_diverging_loss_is_caught_before_anything_is_saved(tmp_path):
    """The loss is read back once per log, not per step; a NaN in the window still stops training before a save."""
    calls = iter(range(1000))
    run = Trainer(
        UNet(CONFIG),
        lambda model, batch: (
            model(batch, torch.zeros(len(batch), dtype=torch.long)).mean() * (float("nan") if next(calls) == 6 else 1.0)
        ),
        device="cpu",
    )
    with pytest.raises(FloatingPointError, match="loss became nan at step 7"):
        run.fit(batches(), 20, save_to=tmp_path / "run", save_every=5, log_every=4, progress=False)
    meta = checkpoint.read_meta(tmp_path / "run")
    assert meta["step"] == 5  # the save at step 5; none after the NaN


def test_a_loss_that_blows_up_without_becoming_nan_is_caught_too(tmp_path):
    """A huge learning rate can send the loss to 1e27, finite (--lr 1e12 on a shipped recipe did): a loss over
    1000x the untrained model's stops training before a save all the same."""
    calls = iter(range(1000))
    run = Trainer(
        unet(),
        lambda model, batch: eps_loss(model, batch, Schedule.linear()) * (1e6 if next(calls) >= 6 else 1.0),
        device="cpu",
    )
    with pytest.raises(FloatingPointError, match=r"loss became \S+ at step 7, over 1000x the first step's"):
        run.fit(batches(), 20, save_to=tmp_path / "run", save_every=5, log_every=4, progress=False)
    assert checkpoint.read_meta(tmp_path / "run")["step"] == 5  # the save at step 5; none after


def test_a_deadline_stops_training_at_the_next_log_and_saves(tmp_path):
    # seen at a log, where every process of a torchrun run can agree on it
    run = trainer().fit(
        batches(), 1000, save_to=tmp_path / "run", deadline=time.monotonic(), log_every=3, progress=False
    )
    meta = checkpoint.read_meta(tmp_path / "run")
    assert run.step == meta["step"] == 3 and len(meta["history"]) == 3


def test_images_per_second_counts_examples():
    assert trainer().images_per_second(batches(n=4), steps=2, warmup=1) > 0


def test_retrain_resumes_trains_in_order_and_exports(tiny_cifar, tmp_path):
    names = ["smoke-ddpm", "smoke-latent", "smoke-vae"]  # any order: the VAE trains first
    out, shipped = tmp_path / "runs", tmp_path / "runs" / "shipped"
    # An earlier call that stopped after one of the VAE's 8 steps:
    recipe = get_recipe("smoke-vae")
    images = data.load_cifar10(tiny_cifar).images[: recipe.n_data]
    recipe.trainer("cpu").fit(data.batches(images, recipe.batch_size), 1, save_to=out / "smoke-vae", progress=False)
    stopped = checkpoint.read_meta(out / "smoke-vae")
    assert stopped["step"] == 1 and stopped["config"]["scale_factor"] == 1.0  # unfinished: no scale factor measured

    assert runs.retrain(names, out, data_root=str(tiny_cifar), device="cpu")
    vae_meta = checkpoint.read_meta(out / "smoke-vae")
    assert vae_meta["step"] == 8 and len(vae_meta["history"]) == 8  # resumed, not restarted
    assert vae_meta["config"]["scale_factor"] != 1.0  # finished: measured
    for name in names:
        meta = checkpoint.read_meta(shipped / name)
        assert meta["step"] == 8 and meta["hardware"] and (shipped / f"{name}.md").read_text().startswith(f"# {name}")
    latent = checkpoint.read_meta(shipped / "smoke-latent")
    assert latent["vae"] == "smoke-vae"  # the name it ships beside
    assert latent["vae_fingerprint"] == vae_fingerprint(load_vae(shipped / "smoke-vae"))  # learned the exported VAE
    images = load_pipeline(shipped / "smoke-latent", "cpu", vae=shipped / "smoke-vae").sample(2, 2)
    assert images.shape == (2, 3, 32, 32)

    stamps = {p.name: p.stat().st_mtime_ns for p in shipped.iterdir()}
    assert runs.retrain(names, out, data_root=str(tiny_cifar), device="cpu")  # all done: nothing trains or changes
    assert {p.name: p.stat().st_mtime_ns for p in shipped.iterdir()} == stamps


def test_retrain_never_exports_over_a_model_it_did_not_export(tiny_cifar, tmp_path, capsys):
    from diffedu.cli import main

    shipped = tmp_path / "runs" / "shipped"
    checkpoint.save_model(shipped / "smoke-vae", get_recipe("smoke-ddpm").build(), recipe="smoke-ddpm")
    other = checkpoint.paths(shipped / "smoke-vae")[0]
    before = other.read_bytes()
    args = ["retrain", "smoke-vae", "--runs", str(tmp_path / "runs"), "--data", str(tiny_cifar), "--device", "cpu"]
    assert main(args) == 2 and "not an export of recipe smoke-vae" in capsys.readouterr().err
    assert other.read_bytes() == before and not checkpoint.exists(tmp_path / "runs" / "smoke-vae")  # nothing trained


def test_retrain_command(tiny_cifar, tmp_path, capsys):
    from diffedu.cli import main

    assert main(["retrain"]) == 2 and "name the models to retrain, or pass --all" in capsys.readouterr().err
    assert main(["retrain", "--all", "vae-cifar10"]) == 2
    assert main(["retrain", "no-such-recipe"]) == 2 and "no recipe named 'no-such-recipe'" in capsys.readouterr().err
    args = ["retrain", "smoke-vae", "--runs", str(tmp_path / "runs"), "--data", str(tiny_cifar), "--device", "cpu"]
    assert main(args) == 0
    assert "all done" in capsys.readouterr().out
    assert checkpoint.read_meta(tmp_path / "runs" / "shipped" / "smoke-vae")["step"] == 8


def test_a_notebook_trains_any_recipe_in_one_call_and_resumes_it(tiny_cifar, tmp_path):
    ddpm = runs.train("smoke-ddpm", tmp_path / "ddpm", data_root=tiny_cifar, device="cpu")
    assert (
        ddpm.step == get_recipe("smoke-ddpm").steps
        and checkpoint.read_meta(tmp_path / "ddpm")["recipe"] == "smoke-ddpm"
    )
    assert runs.train(out=tmp_path / "ddpm", resume=True, steps=2, data_root=tiny_cifar).step == ddpm.step + 2
    with pytest.raises(DiffeduError, match="already trained all of its recipe"):
        runs.train(out=tmp_path / "ddpm", resume=True, data_root=tiny_cifar)  # nothing left: say how to go on
    vae = runs.train("smoke-vae", tmp_path / "vae", data_root=tiny_cifar)
    assert vae.ema.model.config.scale_factor != 1.0  # a finished VAE has its scale factor measured, and saved with it
    assert load_vae(tmp_path / "vae").config.scale_factor == vae.ema.model.config.scale_factor
    latent = runs.train("smoke-latent", tmp_path / "latent", vae=tmp_path / "vae", data_root=tiny_cifar)
    assert checkpoint.read_meta(tmp_path / "latent")["vae_fingerprint"] == vae_fingerprint(load_vae(tmp_path / "vae"))
    assert load_pipeline(tmp_path / "latent", "cpu").sample(2, 2, progress=False).shape == (2, 3, 32, 32)
    assert latent.step == get_recipe("smoke-latent").steps
    with pytest.raises(CheckpointError, match="already holds a model"):
        runs.train("smoke-ddpm", tmp_path / "ddpm", data_root=tiny_cifar)  # nothing replaced without force


def test_minutes_train_for_the_time_not_the_recipes_steps(tiny_cifar, tmp_path):
    timed = runs.train("smoke-ddpm", tmp_path / "timed", minutes=0.05, data_root=tiny_cifar, device="cpu")
    assert timed.step > get_recipe("smoke-ddpm").steps and timed.seconds >= 3  # 3 s of steps, not the recipe's 8


def test_the_train_command_is_one_call_of_runs_train(monkeypatch, tmp_path):
    from diffedu import cli

    calls = []
    monkeypatch.setattr(runs, "train", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert (
        cli.main(["train", "vae", "--profile", "smoke", "--steps", "3", "--out", str(tmp_path / "v"), "--seed", "4"])
        == 0
    )
    ((args, kwargs),) = calls
    assert args == (None, str(tmp_path / "v")) and kwargs["kind"] == "vae" and kwargs["profile"] == "smoke"
    assert (kwargs["steps"], kwargs["seed"], kwargs["compile"]) == (3, 4, "auto")


# Overfitting, measured: the EMA model's loss on fixed training and held-out batches, logged as training goes.
def test_watched_losses_use_the_same_draws_for_every_batch_and_leave_the_random_state_alone(tmp_path):
    t = trainer()
    x = next(batches(8, seed=1))
    t.watch({"training": x, "held-out": x.clone(), "other": next(batches(8, seed=2))}, every=3)
    state = torch.get_rng_state()
    first = t.watched_losses()
    assert torch.equal(torch.get_rng_state(), state)  # the training's own draws go on as if nothing was asked
    assert first["training"] == first["held-out"] != first["other"]  # same batch, same t and noise: the same loss
    assert t.watched_losses() == first  # and again at the same weights: dropout off, draws seeded
    t.fit(batches(), 7, progress=False, save_to=tmp_path / "run")
    assert [w["step"] for w in t.watched] == [0, 3, 6, 7]  # the start, every 3 steps, the end
    assert t.watched[0] == {"step": 0, **first} and t.watched[-1]["training"] != first["training"]
    assert checkpoint.read_meta(tmp_path / "run")["watched"] == t.watched  # kept in the checkpoint's history
    assert trainer().load(tmp_path / "run").watched == t.watched


@pytest.mark.parametrize("recipe", ["smoke-ddpm", "smoke-latent"])
def test_a_run_watches_its_loss_on_training_and_held_out_images(recipe, tiny_cifar, tmp_path):
    vae = None
    if recipe == "smoke-latent":
        runs.train("smoke-vae", tmp_path / "vae", data_root=tiny_cifar)
        vae = str(tmp_path / "vae")
    runs.train(recipe, tmp_path / "run", data_root=tiny_cifar, vae=vae)
    watched = checkpoint.read_meta(tmp_path / "run")["watched"]
    assert watched[0]["step"] == 0 and watched[-1]["step"] == checkpoint.read_meta(tmp_path / "run")["step"]
    assert all(set(w) == {"step", "training", "held-out"} for w in watched)
    # (at step 0 the UNet answers 0 whatever it is shown, as initialised: the same loss on both batches)
    assert watched[0]["training"] == watched[0]["held-out"] and watched[-1]["training"] != watched[-1]["held-out"]
    if recipe == "smoke-ddpm":
        assert runs.train(recipe, tmp_path / "mem", data_root=data.load_cifar10(tiny_cifar), steps=1).watched
        images = data.load_cifar10(tiny_cifar)
        images.source = ""  # images from memory, whose test images are nowhere: not watched, and no error
        assert runs.train(recipe, tmp_path / "bare", data_root=images, steps=1).watched == []


class AnalyticDenoiser:
    """A pipeline whose `unet` is the best noise prediction, in closed form, for one of two data distributions:
    Gaussian N(0, s^2 I) data (`s`), or the uniform distribution over the points `memorised` (the posterior mean of
    x0 given x_t is a softmax-weighted mean of those points: a model that has memorised its training set)."""

    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self, s: float = 0.5, memorised: torch.Tensor | None = None) -> None:
        self.schedule, self.s, self.memorised = Schedule.linear(), s, memorised

    def unet(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.schedule.alpha_bar[t[0]].float()
        if self.memorised is None:
            x0 = ab.sqrt() * self.s**2 * x_t / (ab * self.s**2 + 1 - ab)
        else:
            points = self.memorised.flatten(1)
            logits = -(torch.cdist(x_t.flatten(1).double(), ab.sqrt() * points.double()) ** 2) / (2 * (1 - ab))
            x0 = (logits.softmax(1) @ points.double()).float().view_as(x_t)
        return self.schedule.predict_eps(x_t, t, x0)


def test_denoising_gap_is_one_for_a_model_that_learned_the_distribution_and_large_for_one_that_memorised():
    g = torch.Generator().manual_seed(0)
    seen, unseen = (0.5 * torch.randn(400, 3, 4, 4, generator=g) for _ in range(2))
    for row in denoising_gap(AnalyticDenoiser(0.5), seen, unseen, timesteps=(10, 100, 500, 999)):
        assert abs(row["ratio"] - 1) < 4 * row["se"] + 1e-3, row  # only the data differ, drawn alike
        assert 0 < row["se"] < 0.1
    memoriser = denoising_gap(AnalyticDenoiser(memorised=seen), seen, unseen, timesteps=(10, 100, 999))
    assert memoriser[0]["training"] < 1e-3 < 0.5 < memoriser[0]["held-out"]  # its own points, denoised exactly
    assert memoriser[1]["ratio"] > 10 * memoriser[1]["se"] + 1  # a gap far beyond its error bar
    assert abs(memoriser[2]["ratio"] - 1) < 0.05  # at pure noise there is nothing to recognise
    same = denoising_gap(AnalyticDenoiser(memorised=seen), seen, seen.clone(), timesteps=(100,))[0]
    assert same["ratio"] == 1 and same["training"] == same["held-out"]  # the same noise for the i-th of both
    with pytest.raises(DiffeduError, match="as many"):
        denoising_gap(AnalyticDenoiser(), seen, unseen[:10])
    with pytest.raises(DiffeduError, match="timesteps"):
        denoising_gap(AnalyticDenoiser(), seen, unseen, timesteps=(1000,))
