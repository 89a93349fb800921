"""The autoencoder's adversarial loss (diffedu.adversarial) on cases with known answers, the decoder stage that
keeps the encoder, and training for a time budget."""

import math
import time

import pytest
import torch

from diffedu import checkpoint, data, runs
from diffedu.adversarial import DecoderTrainer, PatchDiscriminator, adaptive_weight, hinge_d_loss, hinge_g_loss
from diffedu.errors import DiffeduError
from diffedu.latent import vae_fingerprint
from diffedu.pipelines import load_vae
from diffedu.recipes import Recipe, get_recipe
from diffedu.training import budget_lr
from diffedu.vae import VAE, VAEConfig

SMALL = VAEConfig(channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, scale_factor=0.5)


def test_hinge_losses_match_their_closed_forms():
    ones = torch.ones(2, 1, 8, 8)
    assert hinge_d_loss(2 * ones, -2 * ones).item() == 0  # both beyond the margin: nothing to learn
    assert hinge_d_loss(0 * ones, 0 * ones).item() == 1  # undecided: 1/2 (1 + 1)
    assert hinge_d_loss(0.5 * ones, 3 * ones).item() == pytest.approx(0.5 * (0.5 + 4))
    real, fake = torch.tensor([3.0, -1.0]), torch.tensor([-3.0, 0.5])  # only the wrong sides of the margins count
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * ((0 + 2) / 2 + (0 + 1.5) / 2))
    assert hinge_g_loss(torch.tensor([1.0, -3.0])).item() == pytest.approx(1.0)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    w = torch.randn(3, 4, requires_grad=True)
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    reconstruction, adversarial = (a * w).sum(), (b * w).sum()  # gradients a and b
    weight = adaptive_weight(reconstruction, adversarial, w)
    assert weight.item() == pytest.approx((a.norm() / (b.norm() + 1e-4)).item(), rel=1e-5)
    assert not weight.requires_grad  # a weight, not a path for gradients
    assert adaptive_weight((a * w).sum(), (0 * w).sum(), w, max_weight=50.0).item() == 50.0  # a dead term: capped


def test_the_discriminator_scores_18x18_patches():
    disc = PatchDiscriminator()
    x = torch.randn(2, 3, 32, 32)
    assert disc(x).shape == (2, 1, 8, 8)
    changed = x.clone()
    changed[:, :, 0, 0] += 10  # one pixel in the top-left corner
    moved = (disc(changed) - disc(x)).abs()[0, 0] > 0
    # output (i, j) sees input rows 4i - 7 .. 4i + 10: the corner pixel reaches rows and columns 0-1 only
    assert moved[:2, :2].all() and not moved[2:].any() and not moved[:, 2:].any()


def small_vae():
    torch.manual_seed(0)
    return VAE(SMALL)


def images(n=4, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_decoder_stage_keeps_the_encoder_and_so_the_latent_space():
    vae = small_vae()
    encoder = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    before = vae_fingerprint(vae)
    trainer = DecoderTrainer(vae, lr=1e-3, warmup=1, device="cpu")
    disc = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    for seed in range(3):  # step 0 without the adversarial term, steps 1-2 with it
        loss = trainer.train_step(images(seed=seed))
        assert math.isfinite(loss.item())
    assert all(torch.equal(v, encoder[k]) for k, v in vae.encoder.state_dict().items())
    assert all(torch.equal(v, encoder[k]) for k, v in trainer.ema.model.encoder.state_dict().items())
    assert any(not torch.equal(v, decoder[k]) for k, v in vae.decoder.state_dict().items())
    assert any(not torch.equal(v, disc[k]) for k, v in trainer.discriminator.state_dict().items())
    assert vae_fingerprint(vae) == vae_fingerprint(trainer.ema.model) == before  # latent models stay valid
    other = small_vae()
    with torch.no_grad():
        other.encoder[0].weight.add_(1e-3)
    assert vae_fingerprint(other) != before  # a changed encoder is another latent space


def test_a_frozen_vae_from_an_ema_gets_its_decoder_trained():
    vae = small_vae().requires_grad_(False)  # as Trainer.ema.model comes
    before = [p.clone() for p in vae.decoder.parameters()]
    DecoderTrainer(vae, lr=1e-3, warmup=0, device="cpu").train_step(images())
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.decoder.parameters()))
    assert not any(p.requires_grad for p in vae.encoder.parameters())


def test_latent_noise_has_the_asked_size_in_scaled_units():
    trainer = DecoderTrainer(small_vae(), latent_noise=0.3, device="cpu")
    x = images(64)
    with torch.no_grad():
        mean = trainer.model.encode(x)[0]
    torch.manual_seed(0)
    noise = (trainer.noisy_latents(x) - mean) * SMALL.scale_factor  # in scaled units
    # std drawn uniformly in [0, 0.3] per image: E[std^2] = 0.3^2 / 3
    assert noise.pow(2).mean().item() == pytest.approx(0.09 / 3, rel=0.15)
    assert noise.flatten(1).std(dim=1).max().item() < 0.33


def test_a_resumed_decoder_stage_continues_exactly(tmp_path):
    def run(split: bool) -> DecoderTrainer:
        torch.manual_seed(1)
        trainer = DecoderTrainer(small_vae(), lr=1e-3, warmup=1, device="cpu")
        for seed in range(2):
            trainer.train_step(images(seed=seed))
        if split:  # saved, then rebuilt from the checkpoint alone
            trainer.save(tmp_path / "run")
            trainer = DecoderTrainer(
                checkpoint.build_model(checkpoint.read_meta(tmp_path / "run")), lr=1e-3, warmup=1, device="cpu"
            ).load(tmp_path / "run")
        torch.manual_seed(2)
        trainer.train_step(images(seed=5))
        return trainer

    whole, resumed = run(False), run(True)
    assert resumed.step == whole.step == 3
    for a, b in [
        (whole.model, resumed.model),
        (whole.ema.model, resumed.ema.model),
        (whole.discriminator, resumed.discriminator),
    ]:
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(x, y, atol=1e-6), name


def test_budget_lr_is_a_cosine_over_the_fraction_used():
    assert budget_lr(0.1, 0.0) == pytest.approx(0.1)
    assert budget_lr(0.1, 0.5) == pytest.approx(0.05)
    assert budget_lr(0.1, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert budget_lr(0.1, 0.25) == pytest.approx(0.1 * (1 + math.sqrt(0.5)) / 2)


def test_a_time_budget_stops_training_and_a_resumed_run_counts_the_time_already_spent(tmp_path):
    trainer = DecoderTrainer(small_vae(), lr=1e-3, device="cpu")
    batches = iter(lambda: images(2), None)
    # the clock is read at each log: at every step, and the budget outlasts a fresh process's slow first step, so
    # that some steps train annealed
    trainer.fit(batches, 10**6, budget_seconds=2, save_to=tmp_path / "run", progress=False, log_every=1)
    meta = checkpoint.read_meta(tmp_path / "run")
    assert 1 <= meta["step"] < 10**6 and 2 <= meta["seconds"] < 10
    assert len(meta["history"]) == meta["step"]  # every step's loss logged, the last ones too
    assert trainer.optimizer.param_groups[0]["lr"] < 1e-3  # annealed on the way
    steps = trainer.step
    trainer.fit(batches, 10**6, budget_seconds=2, progress=False)  # the budget is spent: nothing more
    assert trainer.step == steps


def test_decoder_recipes_name_their_base_and_finish_by_steps_or_minutes():
    with pytest.raises(DiffeduError, match="names the VAE it starts from"):
        Recipe("x", "decoder", {}, steps=1, batch_size=1, lr=1e-3)
    with pytest.raises(DiffeduError, match="names the VAE it starts from"):
        Recipe("x", "vae", {}, steps=1, batch_size=1, lr=1e-3, base="vae-cifar10")
    timed = get_recipe("vae-cifar10-gan")
    assert timed.budget_seconds == 60 * timed.minutes and timed.base == "vae-cifar10"
    assert not timed.finished({"step": 5, "seconds": 60 * timed.minutes - 1})
    assert timed.finished({"step": 5, "seconds": 60 * timed.minutes})
    assert get_recipe("smoke-decoder").finished({"step": 4}) and not get_recipe("smoke-decoder").finished({"step": 3})
    with pytest.raises(DiffeduError, match="takes no classes"):
        get_recipe("smoke-decoder").with_classes()


def test_retrain_trains_a_decoder_stage_on_the_vae_retrained_beside_it(tiny_cifar, tmp_path):
    out = tmp_path / "runs"
    assert runs.retrain(["smoke-decoder", "smoke-vae"], out, data_root=str(tiny_cifar), device="cpu")
    vae, sharp = load_vae(out / "shipped" / "smoke-vae"), load_vae(out / "shipped" / "smoke-decoder")
    assert vae_fingerprint(vae) == vae_fingerprint(sharp)  # the same encoder and scale factor...
    assert any(
        not torch.equal(a, b) for a, b in zip(vae.decoder.state_dict().values(), sharp.decoder.state_dict().values())
    )
    meta = checkpoint.read_meta(out / "smoke-decoder")
    assert meta["step"] == 4 and meta["stage"] == "decoder" and meta["warmup"] == 0  # ...and a new decoder
    assert runs.retrain(["smoke-decoder", "smoke-vae"], out, data_root=str(tiny_cifar), device="cpu")  # done: no-op
    assert checkpoint.read_meta(out / "smoke-decoder")["step"] == 4


def test_a_timed_recipe_trains_for_its_minutes_through_runs_fit(tiny_cifar, tmp_path, monkeypatch):
    recipe = get_recipe("smoke-decoder")
    timed = Recipe("timed", "decoder", {}, steps=10**6, batch_size=4, lr=1e-3, base="smoke-vae", minutes=0.5 / 60)
    trainer = timed.trainer("cpu", small_vae())
    runs.fit(
        trainer, timed, tmp_path / "run", data.load_cifar10(tiny_cifar), timed.steps, deadline=time.monotonic() + 60
    )
    meta = checkpoint.read_meta(tmp_path / "run")
    assert timed.finished(meta) and meta["step"] < 10**6 and meta["config"]["scale_factor"] == SMALL.scale_factor
    assert recipe.kind == timed.kind == "decoder"
